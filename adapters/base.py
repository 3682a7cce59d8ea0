"""What every adapter shares: the protocol the core calls, code-table rows common to all
upstreams, and the HTTP plumbing that turns transport failures into table keys.

Adapters speak HTTP and return `gateway.model` objects; they never see gRPC or protobuf.

Observation: `send` reports every HTTP exchange (operation, status class, seconds) to the
`UpstreamObserver` the router binds around each adapter call with `observing(...)`; logins
report through `token_refreshed`. A context variable carries the observer so adapters need
no metrics plumbing; outside a bound call (unit tests, scripts) nothing is reported.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import enum
import logging
import time
from collections.abc import Awaitable, Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any, ClassVar, Protocol

import httpx

from gateway.config import ConnectionSettings, OptionsParser
from gateway.jobs import Job
from gateway.model import JsonValue, LegResult, Outcome, Reason, UpstreamReply, Verdict

CodeTable = Mapping[str, Verdict]
"""Upstream signal (errorcode, `HTTP 404`, reason code, ...) -> normalized verdict."""

UNREACHABLE = "unreachable"
TIMEOUT = "timeout"
UNREADABLE = "unreadable"

COMMON_CODES: CodeTable = {
    UNREACHABLE: Verdict(
        Outcome.FAILED, Reason.UPSTREAM_UNAVAILABLE, True, "connection refused, reset or lost"
    ),
    TIMEOUT: Verdict(Outcome.FAILED, Reason.TIMEOUT, True, "no answer within the time budget"),
    UNREADABLE: Verdict(
        Outcome.FAILED, Reason.BAD_UPSTREAM_RESPONSE, False, "a body of no documented shape"
    ),
}

_SECRET_KEYS = frozenset(
    k.lower()
    for k in (
        "SessionToken", "Token", "access_token", "refresh_token", "Password", "Signature",
        "APIKey", "client_secret", "aptoken", "Authorization", "twoFAToken",
    )
)  # fmt: skip
_MAX_TEXT = 2048
# Deeper or longer than this is not worth showing a caller, and protobuf parsers refuse
# messages nested past 100 levels: cut before that.
_MAX_DEPTH = 16
_MAX_ITEMS = 100
log = logging.getLogger(__name__)


class UpstreamFailure(Exception):
    """A call that produced no usable answer; `code` is a key of the adapter's table."""

    def __init__(self, code: str, message: str, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.retry_after = retry_after


class AuthRefused(Exception):
    """The upstream refused the gateway's credentials; the message is the upstream's own."""


class ConfirmState(enum.Enum):
    CONFIRMED = "confirmed"
    PENDING = "pending"
    REFUTED = "refuted"


@dataclass(frozen=True)
class LegCheck:
    """What an upstream's read API says about one leg after a cancel was acknowledged."""

    leg: str
    state: ConfirmState
    detail: str = ""


class Adapter(Protocol):
    """One connection to one upstream. The core calls these; one call = one attempt."""

    upstream: ClassVar[str]
    jobs: ClassVar[tuple[type, ...]]

    async def cancel(self, job: Job, timeout: float) -> UpstreamReply: ...

    async def confirm(self, job: Job, timeout: float) -> tuple[LegCheck, ...]: ...

    async def aclose(self) -> None: ...


@dataclass(frozen=True)
class Upstream:
    """What the registry needs to know of one upstream; each adapter module defines one."""

    name: str
    parse_options: OptionsParser
    connect: Callable[[ConnectionSettings, httpx.AsyncBaseTransport | None], Adapter]
    jobs: tuple[type, ...]
    codes: CodeTable


def verdict_for(table: CodeTable, code: str, fallback: str) -> Verdict:
    return table.get(code) or table[fallback]


def failed_reply(
    table: CodeTable,
    legs: tuple[str, ...],
    key: str,
    message: str,
    body: JsonValue = None,
    shown_code: str = "",
    retry_after: float | None = None,
) -> UpstreamReply:
    """The same failure on every leg: transport trouble or an answer that covers the whole call.

    `key` picks the table row; `shown_code` is what the caller sees when it says more
    (`HTTP 503` for the `HTTP 5xx` row).
    """
    verdict = table[key]
    code = shown_code or key
    legs_results = tuple(LegResult.from_verdict(leg, verdict, code, message) for leg in legs)
    return UpstreamReply(legs_results, body, retry_after)


async def answer_within(
    table: CodeTable,
    legs: tuple[str, ...],
    refused_key: str,
    timeout: float,
    call: Awaitable[UpstreamReply],
) -> UpstreamReply:
    """Runs one adapter call to a reply, whatever happens on the way.

    `timeout` bounds the whole call, logins and re-logins included: httpx's own timeouts
    bound each network step, and a server dripping bytes would otherwise hold a call for
    as long as it likes.
    """
    try:
        async with asyncio.timeout(timeout):
            return await call
    except TimeoutError:
        return failed_reply(table, legs, TIMEOUT, f"no complete answer within {timeout:.2f}s")
    except UpstreamFailure as failure:
        return failed_reply(
            table, legs, failure.code, failure.message, retry_after=failure.retry_after
        )
    except AuthRefused as refused:
        return failed_reply(table, legs, refused_key, str(refused))
    except Exception:  # an answer no branch foresaw: log it, and still answer an envelope
        log.exception("could not read an upstream answer")
        return failed_reply(table, legs, UNREADABLE, "the upstream's answer could not be read")


def http_client(
    connection: ConnectionSettings, base_url: str, transport: httpx.AsyncBaseTransport | None
) -> httpx.AsyncClient:
    """One shared client per connection, its pool kept small on purpose (see README, Resilience)."""
    limits = httpx.Limits(
        max_connections=connection.pool_size, max_keepalive_connections=connection.pool_size
    )
    return httpx.AsyncClient(
        base_url=base_url, limits=limits, timeout=connection.timeout, transport=transport
    )


class UpstreamObserver(Protocol):
    """Told about one connection's upstream traffic (`gateway.metrics.ConnectionMetrics`)."""

    def http_call(self, operation: str, status_class: str, seconds: float) -> None: ...

    def token_refreshed(self, result: str) -> None: ...


class _Unobserved:
    def http_call(self, operation: str, status_class: str, seconds: float) -> None:
        pass

    def token_refreshed(self, result: str) -> None:
        pass


_UNOBSERVED = _Unobserved()
_observer: contextvars.ContextVar[UpstreamObserver] = contextvars.ContextVar(
    "upstream_observer", default=_UNOBSERVED
)

OPERATION = "cancelgw.operation"
"""Request extension naming the upstream operation for metrics, e.g.
`client.build_request(..., extensions={OPERATION: "DeleteReportRun"})`. Without it the
operation is the HTTP method: never a path, which may hold an id, so the label stays bounded."""


@contextlib.contextmanager
def observing(observer: UpstreamObserver) -> Iterator[None]:
    """Reports the HTTP calls and logins made inside the block to `observer`."""
    token = _observer.set(observer)
    try:
        yield
    finally:
        _observer.reset(token)


def token_refreshed(result: str) -> None:
    """For adapters' login code: `ok`, `refused` (credentials refused) or `error`."""
    _observer.get().token_refreshed(result)


def operation_of(request: httpx.Request) -> str:
    tagged = request.extensions.get(OPERATION)
    return tagged if isinstance(tagged, str) and tagged else request.method


async def send(client: httpx.AsyncClient, request: httpx.Request, timeout: float) -> httpx.Response:
    """Sends one request, raising UpstreamFailure for everything that is not an HTTP answer."""
    request.extensions["timeout"] = httpx.Timeout(timeout).as_dict()
    started, status_class = time.monotonic(), "error"
    try:
        response = await client.send(request)
        status_class = f"{response.status_code // 100}xx"
        return response
    except httpx.TimeoutException as error:
        raise UpstreamFailure(TIMEOUT, f"{type(error).__name__} after {timeout:.2f}s") from error
    except httpx.ConnectError as error:
        raise UpstreamFailure(UNREACHABLE, f"ConnectError: {error}") from error
    # Other errors' texts may quote what was sent, headers and tokens included: name the kind.
    except httpx.TransportError as error:
        raise UpstreamFailure(UNREACHABLE, type(error).__name__) from error
    except httpx.HTTPError as error:  # an answer that cannot be decoded (bad gzip, ...)
        raise UpstreamFailure(UNREADABLE, type(error).__name__) from error
    finally:
        _observer.get().http_call(operation_of(request), status_class, time.monotonic() - started)


def json_body(response: httpx.Response) -> JsonValue:
    """The parsed body, or UpstreamFailure(UNREADABLE) when it is not JSON."""
    try:
        body: JsonValue = response.json()
    except (ValueError, RecursionError) as error:  # not JSON, bad UTF-8, nested past reason
        raise UpstreamFailure(
            UNREADABLE, f"HTTP {response.status_code}: body is not JSON"
        ) from error
    return body


def redacted(value: Any, depth: int = 0) -> JsonValue:
    """A copy of an upstream body that is safe to return and log: secrets replaced, and cut
    to a size a caller can use (depth, items and text bounded)."""
    if depth >= _MAX_DEPTH and isinstance(value, dict | list):
        return "[truncated: nested too deep]"
    if isinstance(value, dict):
        return {
            str(k): "[redacted]" if str(k).lower() in _SECRET_KEYS else redacted(v, depth + 1)
            for k, v in list(value.items())[:_MAX_ITEMS]
        }
    if isinstance(value, list):
        return [redacted(v, depth + 1) for v in value[:_MAX_ITEMS]]
    if isinstance(value, str) and len(value) > _MAX_TEXT:
        return value[:_MAX_TEXT] + "…"
    return value  # type: ignore[no-any-return]


def raw_text(response: httpx.Response) -> JsonValue:
    """A non-JSON body, kept short, for `upstream_response`."""
    return {"status": response.status_code, "text": response.text[:_MAX_TEXT]}


def retry_after(response: httpx.Response) -> float | None:
    """`Retry-After` in seconds; the HTTP-date form is rare for APIs and is ignored."""
    value = response.headers.get("retry-after", "")
    try:
        seconds = float(value)
    except ValueError:
        return None
    return seconds if seconds >= 0 else None


def status_key(table: CodeTable, status: int) -> str:
    """The table's row for an HTTP status: `HTTP 404` when listed, else `HTTP 5xx` for server
    errors, else `HTTP other` (every adapter table has both class rows)."""
    listed = f"HTTP {status}"
    if listed in table:
        return listed
    return "HTTP 5xx" if status >= 500 else "HTTP other"
