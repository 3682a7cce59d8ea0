"""HTTP plumbing the adapters share: one client per connection, one `send` that turns every
transport failure into a table key and reports the exchange, and body helpers that keep
what reaches a caller bounded and free of secrets."""

from __future__ import annotations

import time
from typing import Any

import httpx

from adapters.codes import TIMEOUT, UNREACHABLE, UNREADABLE
from adapters.guard import UpstreamFailure
from gateway.config import ConnectionSettings
from gateway.model import Delivery, JsonValue
from gateway.upstream import observer

OPERATION = "cancelgw.operation"
"""Request extension naming the upstream operation for metrics, e.g.
`client.build_request(..., extensions={OPERATION: "DeleteReportRun"})`. Without it the
operation is the HTTP method: never a path, which may hold an id, so the label stays bounded."""

_SECRET_KEYS = frozenset(
    k.lower()
    for k in (
        "SessionToken", "Token", "access_token", "refresh_token", "Password", "Signature",
        "APIKey", "client_secret", "aptoken", "Authorization", "twoFAToken",
        "apiAccessKeyId", "apiSecretAccessKey",
    )
)  # fmt: skip
_MAX_TEXT = 2048
# Deeper or longer than this is not worth showing a caller, and protobuf parsers refuse
# messages nested past 100 levels: cut before that.
_MAX_DEPTH = 16
_MAX_ITEMS = 100


# The connection failed before any byte of the request left: nothing can have landed.
_NOT_SENT = (httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout)


class Exchange:
    """What became of the request of one call that changes the upstream's state (a cancel).

    `send(..., exchange=...)` marks it: NO_ANSWER while it may be on its way, ANSWERED once
    an HTTP answer came back, NOT_SENT when the connection failed before the request left.
    When the call fails, the adapter's guard reads `delivery` to say whether it can have
    landed; an answer the adapter cannot read is its to mark (`unreadable`).
    """

    def __init__(self) -> None:
        self.delivery = Delivery.NOT_SENT

    def unreadable(self) -> None:
        self.delivery = Delivery.NO_ANSWER


def http_client(
    connection: ConnectionSettings, base_url: str, transport: httpx.AsyncBaseTransport | None
) -> httpx.AsyncClient:
    """The client for a connection's cancels and reads. It may open as many connections as
    the bulkhead lets calls in (`max_in_flight`), so an attempt holding a slot never waits
    for a connection; it keeps `pool_size` of them open between calls."""
    limits = httpx.Limits(
        max_connections=connection.max_in_flight, max_keepalive_connections=connection.pool_size
    )
    return httpx.AsyncClient(
        base_url=base_url, limits=limits, timeout=connection.timeout, transport=transport
    )


def login_client(
    connection: ConnectionSettings, base_url: str, transport: httpx.AsyncBaseTransport | None
) -> httpx.AsyncClient:
    """A client of its own for logins and token fetches, so they never queue behind cancels
    (one login serves every call of the connection, so one connection is enough)."""
    limits = httpx.Limits(max_connections=1, max_keepalive_connections=1)
    return httpx.AsyncClient(
        base_url=base_url, limits=limits, timeout=connection.timeout, transport=transport
    )


def operation_of(request: httpx.Request) -> str:
    tagged = request.extensions.get(OPERATION)
    return tagged if isinstance(tagged, str) and tagged else request.method


async def send(
    client: httpx.AsyncClient,
    request: httpx.Request,
    timeout: float,
    exchange: Exchange | None = None,
) -> httpx.Response:
    """Sends one request, raising UpstreamFailure for everything that is not an HTTP answer;
    marks `exchange` (see `Exchange`) when the request is the call's cancel."""
    request.extensions["timeout"] = httpx.Timeout(timeout).as_dict()
    started, status_class = time.monotonic(), "error"
    if exchange is not None:
        exchange.delivery = Delivery.NO_ANSWER
    try:
        response = await client.send(request)
        status_class = f"{response.status_code // 100}xx"
        if exchange is not None:
            exchange.delivery = Delivery.ANSWERED
        return response
    except _NOT_SENT as error:
        if exchange is not None:
            exchange.delivery = Delivery.NOT_SENT
        if isinstance(error, httpx.TimeoutException):
            raise UpstreamFailure(
                TIMEOUT, f"{type(error).__name__} after {timeout:.2f}s"
            ) from error
        raise UpstreamFailure(UNREACHABLE, f"ConnectError: {error}") from error
    except httpx.TimeoutException as error:
        raise UpstreamFailure(TIMEOUT, f"{type(error).__name__} after {timeout:.2f}s") from error
    # Other errors' texts may quote what was sent, headers and tokens included: name the kind.
    except httpx.TransportError as error:
        raise UpstreamFailure(UNREACHABLE, type(error).__name__) from error
    except httpx.HTTPError as error:  # an answer that cannot be decoded (bad gzip, ...)
        raise UpstreamFailure(UNREADABLE, type(error).__name__) from error
    finally:
        observer().http_call(operation_of(request), status_class, time.monotonic() - started)


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
