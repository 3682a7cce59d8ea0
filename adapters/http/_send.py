"""`send`: one request out, every transport failure turned into a table key (and what it
says of the connection: unreachable, or misconfigured), the exchange reported (metrics, a
client span with the `traceparent` it injects), and what became of a cancel's request
(`Exchange`: NOT_SENT, NO_ANSWER, ANSWERED) marked on the way."""

from __future__ import annotations

import ssl
import time

import aiohttp
import httpx2
from opentelemetry.trace import SpanKind

from adapters.http._codes import MISCONFIGURED, TIMEOUT, UNREACHABLE, UNREADABLE
from adapters.http._delivery import Exchange, finished, starting
from adapters.http._engine import OPERATION, UnreadableBody
from adapters.http._guard import UpstreamFailure
from gateway import tracing
from gateway.model import Delivery
from gateway.secrets import SECRETS
from gateway.upstream import observer


def _classified(error: httpx2.TransportError, connect: float) -> tuple[str, bool, str]:
    """(table key, whether the request can have been delivered, what to say) of a
    transport failure.

    aiohttp's own exception says which phase failed (httpx-aiohttp maps a reset after the
    request went out to ConnectTimeout, which would read as "never sent"): it decides when
    there is one; httpx2's class otherwise. Nothing said here quotes what was sent.
    """
    cause = error.__cause__
    refusal = _client_certificate_refused(error)
    if refusal:  # TLS 1.3 tells it after the handshake: the request was never taken in
        return MISCONFIGURED, False, f"the upstream refused the client certificate ({refusal})"
    if isinstance(cause, aiohttp.ClientConnectorCertificateError):
        where = f"{cause.host}:{cause.port}"
        return (
            MISCONFIGURED,
            False,
            f"certificate verification failed for {where}: {_verify(cause)}",
        )
    if isinstance(cause, aiohttp.ClientHttpProxyError):
        return _proxy_refused(cause)
    if isinstance(cause, aiohttp.ClientProxyConnectionError):
        return UNREACHABLE, False, f"the proxy cannot be reached: {cause.os_error}"
    if isinstance(cause, aiohttp.ClientConnectorSSLError):
        where = f"{cause.host}:{cause.port}"
        return MISCONFIGURED, False, f"TLS handshake with {where} failed: {cause.os_error}"
    if isinstance(cause, aiohttp.ClientConnectorError):  # DNS, refused, unreachable
        return UNREACHABLE, False, f"cannot connect to {cause.host}:{cause.port}: {cause.os_error}"
    if isinstance(cause, aiohttp.ConnectionTimeoutError):  # dropped SYNs, a stalled handshake
        return UNREACHABLE, False, f"no connection within {connect:.2f}s"
    if isinstance(cause, aiohttp.ServerTimeoutError):
        return TIMEOUT, True, f"{type(cause).__name__}: no answer in time"
    if isinstance(cause, aiohttp.ClientError):  # reset, disconnected, a body cut short
        return UNREACHABLE, True, type(cause).__name__
    if isinstance(error, httpx2.ConnectError | httpx2.ConnectTimeout | httpx2.PoolTimeout):
        return UNREACHABLE, False, f"{type(error).__name__}: no connection"
    code = TIMEOUT if isinstance(error, httpx2.TimeoutException) else UNREACHABLE
    return code, True, type(error).__name__


# The TLS alerts by which a server refuses the client's certificate (or its lack of one);
# any other alert (bad_record_mac, protocol_version, ...) says nothing of it.
_CERTIFICATE_ALERTS = (
    "CERTIFICATE_REQUIRED", "BAD_CERTIFICATE", "UNKNOWN_CA", "CERTIFICATE_UNKNOWN",
    "CERTIFICATE_EXPIRED", "CERTIFICATE_REVOKED", "UNSUPPORTED_CERTIFICATE", "ACCESS_DENIED",
)  # fmt: skip


def _client_certificate_refused(error: BaseException) -> str:
    """The TLS alert by which a server refused the client's certificate, if that is what
    ended the exchange ("" otherwise). A server that refuses it never reads the request."""
    seen: BaseException | None = error
    for _ in range(8):  # a short chain: the error, aiohttp's, the ssl module's
        if seen is None:
            return ""
        reason = str(getattr(seen, "reason", "") or "").upper()  # aiohttp's SSL errors have none
        if isinstance(seen, ssl.SSLError) and "ALERT" in reason:
            return reason if any(alert in reason for alert in _CERTIFICATE_ALERTS) else ""
        seen = seen.__cause__ or seen.__context__
    return ""


def _verify(cause: aiohttp.ClientConnectorCertificateError) -> str:
    failure = cause.certificate_error
    return str(getattr(failure, "verify_message", "") or failure)


def _proxy_refused(cause: aiohttp.ClientHttpProxyError) -> tuple[str, bool, str]:
    """The proxy answered the CONNECT with an error: wrong credentials (407, or 401 / 403
    as some proxies answer them) are the config's; anything else, the path's."""
    said = f"the proxy answered the CONNECT with HTTP {cause.status}"
    if cause.status in (401, 403, 407):
        return MISCONFIGURED, False, f"{said}: check the proxy and its credentials"
    return UNREACHABLE, False, said


def operation_of(request: httpx2.Request) -> str:
    tagged = request.extensions.get(OPERATION)
    return tagged if isinstance(tagged, str) and tagged else request.method


async def send(
    client: httpx2.AsyncClient,
    request: httpx2.Request,
    timeout: float,
    exchange: Exchange | None = None,
) -> httpx2.Response:
    """Sends one request, raising UpstreamFailure for everything that is not a usable HTTP
    answer (a redirect is the config's: credentials are never sent on to another host);
    marks `exchange` (see `Exchange`) when the request is the call's cancel."""
    connect = min(timeout, client.timeout.connect or timeout)
    request.extensions["timeout"] = {
        "connect": connect, "pool": connect, "read": timeout, "write": timeout
    }  # fmt: skip
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
    starting(exchange)
    try:
        response = await client.send(request)
        tracing.note(lambda: {"http.response.status_code": response.status_code}, prefix="")
        status_class = f"{response.status_code // 100}xx"
        if exchange is not None:
            exchange.delivery = Delivery.ANSWERED
        finished()
    except httpx2.TransportError as error:
        finished()
        code, may_have_left, said = _classified(error, client.timeout.connect or timeout)
        tracing.note(lambda: {"failure": code})
        if exchange is not None and not may_have_left:
            exchange.delivery = Delivery.NOT_SENT
        raise UpstreamFailure(code, said) from error
    except UnreadableBody as error:
        finished()
        raise UpstreamFailure(UNREADABLE, str(error)) from error
    except httpx2.HTTPError as error:  # an answer that cannot be decoded (bad gzip, ...)
        finished()
        raise UpstreamFailure(UNREADABLE, type(error).__name__) from error
    finally:
        observer().http_call(operation, status_class, time.monotonic() - started)
    if 300 <= response.status_code < 400 and response.status_code != 304:
        await response.aclose()
        raise UpstreamFailure(MISCONFIGURED, _redirected(response))
    return response


def _redirected(response: httpx2.Response) -> str:
    """A redirect, its Location shown with every known secret scrubbed: the upstream moved,
    or `base_url` names the wrong place."""
    location = SECRETS.scrub(response.headers.get("location", ""))[:256]
    return f"HTTP {response.status_code}: redirected to {location!r}: check base_url"


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
