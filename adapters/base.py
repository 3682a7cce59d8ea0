"""What every adapter shares: the protocol the core calls, code-table rows common to all
upstreams, and the HTTP plumbing that turns transport failures into table keys.

Adapters speak HTTP and return `gateway.model` objects; they never see gRPC or protobuf.

Observation: `send` reports every HTTP exchange (operation, status class, seconds) to the
`UpstreamObserver` the router binds around each adapter call with `observing(...)`; logins
report through `token_refreshed`. A context variable carries the observer so adapters need
no metrics plumbing; outside a bound call (unit tests, scripts) nothing is reported.
"""

from __future__ import annotations

import contextlib
import contextvars
import enum
import json
import time
from collections.abc import Callable, Iterator, Mapping
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


class UpstreamFailure(Exception):
    """A call that produced no usable HTTP answer; `code` is a COMMON_CODES key."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


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
) -> UpstreamReply:
    """The same failure on every leg: transport trouble or an answer that covers the whole call.

    `key` picks the table row; `shown_code` is what the caller sees when it says more
    (`HTTP 503` for the `HTTP 5xx` row).
    """
    verdict = table[key]
    code = shown_code or key
    return UpstreamReply(
        tuple(LegResult.from_verdict(leg, verdict, code, message) for leg in legs), body
    )


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
    except httpx.TransportError as error:
        raise UpstreamFailure(UNREACHABLE, f"{type(error).__name__}: {error}") from error
    finally:
        _observer.get().http_call(operation_of(request), status_class, time.monotonic() - started)


def json_body(response: httpx.Response) -> JsonValue:
    """The parsed body, or UpstreamFailure(UNREADABLE) when it is not JSON."""
    try:
        body: JsonValue = response.json()
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise UpstreamFailure(
            UNREADABLE, f"HTTP {response.status_code}: body is not JSON"
        ) from error
    return body


def redacted(value: Any) -> JsonValue:
    """A copy of an upstream body that is safe to return and log: secrets replaced."""
    if isinstance(value, dict):
        return {
            str(k): "[redacted]" if str(k).lower() in _SECRET_KEYS else redacted(v)
            for k, v in value.items()
        }
    if isinstance(value, list):
        return [redacted(v) for v in value]
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
