"""`send`: one request out, every transport failure turned into a table key, the exchange
reported (metrics, a client span with the `traceparent` it injects), and what became of a
cancel's request (`Exchange`: NOT_SENT, NO_ANSWER, ANSWERED) marked on the way."""

from __future__ import annotations

import time

import aiohttp
import httpx2
from opentelemetry.trace import SpanKind

from adapters.http._codes import TIMEOUT, UNREACHABLE, UNREADABLE
from adapters.http._engine import OPERATION, UnreadableBody
from adapters.http._guard import UpstreamFailure
from gateway import tracing
from gateway.model import Delivery
from gateway.upstream import observer


def _classified(error: httpx2.TransportError) -> tuple[str, bool]:
    """(table key, whether the request can have left) of a transport failure.

    aiohttp's own exception says which phase failed (httpx-aiohttp maps a reset after the
    request went out to ConnectTimeout, which would read as "never sent"): it decides when
    there is one; httpx2's class otherwise.
    """
    cause = error.__cause__
    if isinstance(cause, aiohttp.ClientConnectorError):
        return UNREACHABLE, False  # no connection: nothing left
    if isinstance(cause, aiohttp.ConnectionTimeoutError):
        return TIMEOUT, False  # connecting, or waiting for a pooled connection
    if isinstance(cause, aiohttp.ServerTimeoutError):
        return TIMEOUT, True  # reading the answer
    if isinstance(cause, aiohttp.ClientError):
        return UNREACHABLE, True  # reset, disconnected, a body cut short
    if isinstance(error, httpx2.ConnectError):
        return UNREACHABLE, False
    if isinstance(error, httpx2.ConnectTimeout | httpx2.PoolTimeout):
        return TIMEOUT, False
    return (TIMEOUT if isinstance(error, httpx2.TimeoutException) else UNREACHABLE), True


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


def operation_of(request: httpx2.Request) -> str:
    tagged = request.extensions.get(OPERATION)
    return tagged if isinstance(tagged, str) and tagged else request.method


async def send(
    client: httpx2.AsyncClient,
    request: httpx2.Request,
    timeout: float,
    exchange: Exchange | None = None,
) -> httpx2.Response:
    """Sends one request, raising UpstreamFailure for everything that is not an HTTP answer;
    marks `exchange` (see `Exchange`) when the request is the call's cancel."""
    request.extensions["timeout"] = httpx2.Timeout(timeout).as_dict()
    if exchange is not None:
        exchange.delivery = Delivery.NO_ANSWER
    operation = operation_of(request)
    with tracing.span(
        f"{request.method} {operation}",
        kind=SpanKind.CLIENT,
        attributes=lambda: _client_span(request, operation),
    ):
        tracing.inject(request.headers)  # this span's context goes to the upstream
        return await _sent(client, request, timeout, exchange, operation)


async def _sent(
    client: httpx2.AsyncClient,
    request: httpx2.Request,
    timeout: float,
    exchange: Exchange | None,
    operation: str,
) -> httpx2.Response:
    started, status_class = time.monotonic(), "error"
    try:
        response = await client.send(request)
        tracing.note(lambda: {"http.response.status_code": response.status_code}, prefix="")
        status_class = f"{response.status_code // 100}xx"
        if exchange is not None:
            exchange.delivery = Delivery.ANSWERED
        return response
    except httpx2.TransportError as error:
        code, may_have_left = _classified(error)
        tracing.note(lambda: {"failure": code})
        if exchange is not None and not may_have_left:
            exchange.delivery = Delivery.NOT_SENT
        raise UpstreamFailure(code, _described(error, code, may_have_left, timeout)) from error
    except UnreadableBody as error:
        raise UpstreamFailure(UNREADABLE, str(error)) from error
    except httpx2.HTTPError as error:  # an answer that cannot be decoded (bad gzip, ...)
        raise UpstreamFailure(UNREADABLE, type(error).__name__) from error
    finally:
        observer().http_call(operation, status_class, time.monotonic() - started)


def _client_span(request: httpx2.Request, operation: str) -> dict[str, str | int]:
    """An HTTP client span's attributes (OpenTelemetry's names); no path: it may hold an id
    or a token."""
    url = request.url
    return {
        "http.request.method": request.method,
        "server.address": url.host,
        "server.port": url.port or (443 if url.scheme == "https" else 80),
        "cancelgw.operation": operation,
    }


def _described(error: Exception, code: str, may_have_left: bool, timeout: float) -> str:
    kind = type(error.__cause__ or error).__name__
    if code == TIMEOUT:
        return f"{kind} after {timeout:.2f}s"
    if not may_have_left:  # about connecting only: host, port, certificate
        return f"ConnectError: {error}"
    return kind  # its text may quote what was sent, headers and tokens included
