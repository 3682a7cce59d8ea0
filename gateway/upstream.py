"""The interface the core calls and every adapter implements.

Like httpx's transport base class, this is the point of cut-off: the core (router, pipeline,
outcomes) speaks only what is defined here and in `gateway.model` / `gateway.jobs`, and
adapter modules import this module, never the other way round. An adapter module exports one
`Upstream` record; the composition root registers it (`gateway.registry`).

Observation goes the same way: the pipeline binds an `UpstreamObserver` around each adapter
call with `observing(...)`, and the adapter reports its HTTP exchanges and logins to
`observer()`. Outside a bound call (unit tests, scripts) reports go nowhere.
"""

from __future__ import annotations

import contextlib
import contextvars
import enum
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any, Protocol

from gateway.connection import ConnectionSettings
from gateway.jobs import JobKind
from gateway.model import UpstreamReply, Verdict
from gateway.schema import Section

CodeTable = Mapping[str, Verdict]
"""Upstream signal (errorcode, `HTTP 404`, reason category, ...) -> normalized verdict."""


class ConfirmState(enum.Enum):
    """What a read API shows of one leg."""

    CONFIRMED = "confirmed"
    """Canceled, or gone where that is what a cancel leaves."""
    PENDING = "pending"
    """A cancel has reached the upstream and is not finished; or the read could not tell."""
    ACTIVE = "active"
    """Still scheduled or running, with no sign of a cancel."""
    REFUTED = "refuted"
    """Ended some other way (completed, failed): it will not be canceled."""


@dataclass(frozen=True)
class LegCheck:
    """What an upstream's read API says about one leg after a cancel was acknowledged."""

    leg: str
    state: ConfirmState
    detail: str = ""


@dataclass(frozen=True)
class Preflight:
    """What logging in, as a call would, showed (touching no job): `cancelgw check --connect`."""

    ok: bool
    detail: str


class Adapter(Protocol):
    """One connection to one upstream. One `cancel` is one attempt; the core retries."""

    async def cancel(self, job: JobKind, *, timeout: float) -> UpstreamReply:
        """Always a reply: every failure is mapped through the adapter's code table, and
        `delivery` says whether the cancel request can have landed (NO_ANSWER when it was
        sent and no answer that says what happened came back)."""
        ...

    async def confirm(self, job: JobKind, *, timeout: float) -> tuple[LegCheck, ...]:
        """What the read API says now; a read that fails leaves the legs PENDING. Reads
        change nothing upstream, so the core may abandon one at any point."""
        ...

    async def preflight(self, *, timeout: float) -> Preflight:
        """Logs in as a call would (or says why none is needed), touching no job."""
        ...

    async def aclose(self) -> None: ...


Connector = Callable[[ConnectionSettings, Any], Adapter]
"""Builds a connection's adapter; the second argument is a transport tests may inject
(adapter-specific, None in production)."""


@dataclass(frozen=True, kw_only=True)
class Upstream:
    """Everything the composition root needs to know of one upstream."""

    name: str
    jobs: tuple[type[JobKind], ...]
    codes: CodeTable
    options: type[Section]
    """The connection keys only this upstream reads; a connection's `options` is one."""
    connect: Connector
    secret_fields: frozenset[str] = frozenset()
    """Body fields whose values are credentials: redacted from what the gateway passes on
    (listed in docs/SECURITY.md)."""
    sandbox: str = ""
    """`module:attribute` of the simulator's `adapters.simulation.SandboxUpstream`, loaded only by
    `cancelgw sandbox`, so production never imports a simulator."""


class UpstreamObserver(Protocol):
    """Told about one connection's upstream traffic (`gateway.metrics.ConnectionMetrics`)."""

    def http_call(self, operation: str, status_class: str, seconds: float) -> None: ...

    def token_refreshed(self, result: str) -> None: ...


class _Unobserved:
    def http_call(self, operation: str, status_class: str, seconds: float) -> None:
        pass

    def token_refreshed(self, result: str) -> None:
        pass


_UNOBSERVED = _Unobserved()  # stateless, so one shared default is safe
_observer: contextvars.ContextVar[UpstreamObserver] = contextvars.ContextVar(
    "upstream_observer",
    default=_UNOBSERVED,
)


@contextlib.contextmanager
def observing(observer: UpstreamObserver) -> Iterator[None]:
    """Reports the HTTP calls and logins made inside the block to `observer`."""
    token = _observer.set(observer)
    try:
        yield
    finally:
        _observer.reset(token)


def observer() -> UpstreamObserver:
    """Where an adapter reports what it does right now."""
    return _observer.get()
