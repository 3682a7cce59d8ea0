"""Who is calling, and what they may do: identity from a bearer token (configured only as
its SHA-256) or a client certificate's subject, per-caller permissions by job kind and
connection, and a token bucket per caller.

Knows no gRPC: the interceptor hands in what the transport saw (the `authorization` value,
the certificate's names); the servicer asks `admit` before it looks up a connection.
"""

from __future__ import annotations

import contextvars
import hashlib
import hmac
import re
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Annotated

from msgspec import Meta

from gateway.errors import CallerNotPermitted, CallerRateLimited, Unauthenticated
from gateway.resilience import Clock
from gateway.schema import Section, about, invalid, settle

ANONYMOUS = "anonymous"
"""The caller of a gateway that allows unauthenticated calls, when none is presented."""

_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")
_SHA256 = re.compile(r"[0-9a-f]{64}")


class CallerSettings(Section, frozen=True):
    """One `[[callers]]` entry: who may call, how they prove it, what they may cancel."""

    name: Annotated[
        str, about("the caller's name in logs, metrics and errors (letters, digits, . _ -)")
    ]
    jobs: Annotated[
        frozenset[str], about("the job kinds it may cancel (the `job` oneof member names)")
    ]
    token_sha256: Annotated[
        str, about("SHA-256 (64 lower-case hex) of its bearer token; never the token")
    ] = ""
    cert_subject: Annotated[str, about("the CN or a SAN of its client certificate (with mTLS)")] = (
        ""
    )
    connections: Annotated[
        frozenset[str], about("connections it may use; empty: every connection of its jobs")
    ] = frozenset()
    rate_per_second: Annotated[
        float, Meta(gt=0, le=10**6), about("its token bucket's rate (per gateway process)")
    ] = 20.0
    burst: Annotated[
        int,
        Meta(ge=1, le=2**31 - 1),
        about("its token bucket's size", default="2 x `rate_per_second`"),
    ] = 0

    def __post_init__(self) -> None:
        if not _NAME.fullmatch(self.name):
            raise invalid("name", "letters, digits, '.', '_', '-'; at most 64")
        if self.name == ANONYMOUS:
            raise invalid("name", "'anonymous' is the name of no-one in particular")
        if self.token_sha256 and not _SHA256.fullmatch(self.token_sha256):
            raise invalid(
                "token_sha256",
                "the SHA-256 of the token, as 64 lower-case hex characters (never the token "
                "itself)",
            )
        subject = self.cert_subject
        if subject and (":" in subject.partition("@")[0] or not subject.isprintable()):
            raise invalid(
                "cert_subject",
                "the name itself (a DNS name, or an e-mail address), no type prefix, "
                f"got {subject!r}",
            )
        if not self.token_sha256 and not subject:
            raise invalid("token_sha256", "give token_sha256 or cert_subject")
        if not self.jobs:
            raise invalid("jobs", "list the job kinds the caller may cancel")
        if self.burst == 0:  # not given
            settle(self, "burst", max(1, round(2 * self.rate_per_second)))


class TokenBucket:
    """`rate` tokens a second, at most `burst` saved up; each call takes one."""

    def __init__(self, rate: float, burst: int, clock: Clock = time.monotonic) -> None:
        self._rate, self._burst, self._clock = rate, float(burst), clock
        self._tokens, self._at = float(burst), clock()

    def take(self) -> float:
        """0 when a token was taken, else the seconds until one will be there."""
        now = self._clock()
        elapsed = max(0.0, now - self._at)  # a clock that stepped back refills nothing
        self._tokens = min(self._burst, self._tokens + elapsed * self._rate)
        self._at = now
        if self._tokens >= 1.0:
            self._tokens -= 1.0
            return 0.0
        return (1.0 - self._tokens) / self._rate


@dataclass
class Caller:
    name: str
    jobs: frozenset[str] | None  # None: every job kind (the anonymous caller)
    connections: frozenset[str]  # empty: every connection of its jobs
    bucket: TokenBucket | None = field(default=None, repr=False)

    def may(self, job: str, connection: str) -> bool:
        job_ok = self.jobs is None or job in self.jobs
        return job_ok and (not self.connections or connection in self.connections)


_current: contextvars.ContextVar[Caller | None] = contextvars.ContextVar("caller", default=None)


def current_caller() -> Caller | None:
    """The caller the authentication interceptor identified for this RPC."""
    return _current.get()


def bind_caller(caller: Caller) -> contextvars.Token[Caller | None]:
    return _current.set(caller)


def unbind_caller(token: contextvars.Token[Caller | None]) -> None:
    _current.reset(token)


class Callers:
    def __init__(
        self,
        settings: Sequence[CallerSettings],
        *,
        allow_unauthenticated: bool,
        clock: Clock = time.monotonic,
    ) -> None:
        self._by_digest = {s.token_sha256: s for s in settings if s.token_sha256}
        self._by_subject = {s.cert_subject: s for s in settings if s.cert_subject}
        self._callers = {
            s.name: Caller(
                s.name, s.jobs, s.connections, TokenBucket(s.rate_per_second, s.burst, clock)
            )
            for s in settings
        }
        self._anonymous = Caller(ANONYMOUS, None, frozenset()) if allow_unauthenticated else None

    @property
    def names(self) -> list[str]:
        """Every name a caller can have here (for the metric series)."""
        return [*self._callers, *([ANONYMOUS] if self._anonymous else [])]

    def identify(self, *, authorization: Sequence[str], cert_names: Sequence[str]) -> Caller:
        """The caller a bearer token names (when one is sent), else the one a client
        certificate names (its SANs; its CN only when it has none); anonymous only where
        allowed and nothing was sent. A certificate naming two callers names none."""
        if authorization:
            return self._callers[self._by_token(authorization).name]
        named = {self._by_subject[n].name for n in cert_names if n in self._by_subject}
        if len(named) == 1:
            return self._callers[named.pop()]
        if named:
            raise Unauthenticated("the client certificate names more than one caller")
        if cert_names:
            raise Unauthenticated("the client certificate names no configured caller")
        if self._anonymous is not None:
            return self._anonymous
        raise Unauthenticated(
            "no credentials: send `authorization: Bearer <token>` or a client certificate"
        )

    def anonymous(self) -> Caller:
        """The caller of a call the interceptor did not see; only where anonymous is allowed."""
        if self._anonymous is None:
            raise Unauthenticated("no caller was identified for this call")
        return self._anonymous

    def _by_token(self, authorization: Sequence[str]) -> CallerSettings:
        if len(authorization) != 1:
            raise Unauthenticated("send exactly one authorization value")
        scheme, _, token = authorization[0].partition(" ")
        token = token.strip()
        if scheme.lower() != "bearer" or not token or not token.isascii():
            raise Unauthenticated("authorization must be `Bearer <token>`")
        digest = hashlib.sha256(token.encode()).hexdigest()
        # Every digest is compared, each in constant time: no early exit tells which was near.
        found = [s for d, s in self._by_digest.items() if hmac.compare_digest(d, digest)]
        if not found:
            raise Unauthenticated("the bearer token is no configured caller's")
        return found[0]

    @staticmethod
    def admit(caller: Caller, job: str, connection: str) -> None:
        """Raises unless `caller` may cancel `job` on `connection` now."""
        if not caller.may(job, connection):
            raise CallerNotPermitted(
                f"caller {caller.name} may not cancel {job} on connection {connection or '(none)'}",
                {"caller": caller.name, "job": job, "connection": connection},
            )
        wait = caller.bucket.take() if caller.bucket is not None else 0.0
        if wait:
            raise CallerRateLimited(
                f"caller {caller.name} is over its rate; retry in {wait:.2f}s", wait
            )
