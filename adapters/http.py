"""HTTP plumbing the adapters share: one client per connection, one `send` that turns every
transport failure into a table key and reports the exchange, and body helpers that keep
what reaches a caller bounded and free of secrets.

The engine: httpx2 (the maintained fork of httpx, same API) over aiohttp's connection pool
(httpx-aiohttp's transport): measured against httpx 0.28, httpx2 alone and aiohttp alone,
it kept the httpx API at close to aiohttp's cost per call (README, Performance). Tests
inject httpx2 transports (ASGI, mock) in its place.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import aiohttp
import httpx2
from httpx_aiohttp.httpx2 import AiohttpTransport
from opentelemetry.trace import SpanKind

from adapters.codes import TIMEOUT, UNREACHABLE, UNREADABLE
from adapters.guard import UpstreamFailure
from gateway import tracing
from gateway.config import ConnectionSettings
from gateway.model import Delivery, JsonValue
from gateway.secrets import SECRETS
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


class _OnceTransport(AiohttpTransport):
    """httpx-aiohttp's transport, on a session that never repeats a request by itself.

    aiohttp quietly sends an idempotent request (DELETE, GET) again when a reused connection
    turns out to be closed; the repeat of a cancel whose first copy landed would then answer
    "already canceled" with no trace of the first. The gateway decides about repeats (and
    shows each one), so the session's private switch is turned off; if aiohttp drops it,
    this fails at the first request rather than repeat cancels unseen.
    """

    def get_client(self) -> aiohttp.ClientSession:
        session = super().get_client()
        if not hasattr(session, "_retry_connection"):
            raise RuntimeError("aiohttp no longer lets its hidden request retries be turned off")
        session._retry_connection = False
        return session


MAX_RESPONSE_BYTES = 4 * 1024 * 1024
"""The most of one upstream answer the gateway reads. Answers are small JSON; the largest
are read-API listings (a user's report tickets). A longer one is refused, not buffered: a
faulty or hostile upstream cannot make the gateway hold more than this per request."""


class UnreadableBody(httpx2.DecodingError):
    """An answer the gateway will not read: longer than MAX_RESPONSE_BYTES, or in a
    content-encoding it did not ask for. Its message is the gateway's own words."""


class _Bounded(httpx2.AsyncBaseTransport):
    """Any transport, its answers bounded: the gateway asks for `identity` encoding, so the
    bytes counted are the bytes kept (a compressed answer could expand a thousandfold
    inside the decoder, past any count taken after it)."""

    def __init__(self, inner: httpx2.AsyncBaseTransport, limit: int) -> None:
        self._inner, self._limit = inner, limit

    async def handle_async_request(self, request: httpx2.Request) -> httpx2.Response:
        response = await self._inner.handle_async_request(request)
        refusal = self._refusal(response.headers)
        if refusal is not None:
            await response.aclose()
            raise UnreadableBody(refusal, request=request)
        response.stream = _Limited(response.stream, self._limit, request)
        return response

    def _refusal(self, headers: httpx2.Headers) -> str | None:
        encoding = headers.get("content-encoding", "identity").strip().lower()
        if encoding not in ("", "identity"):
            return f"answered in content-encoding {encoding[:32]!r}, which was not asked for"
        declared = headers.get("content-length", "")
        if declared.isdigit() and int(declared) > self._limit:
            return f"an answer of {int(declared)} bytes, more than the {self._limit} read"
        return None

    async def aclose(self) -> None:
        await self._inner.aclose()


class _Limited(httpx2.AsyncByteStream):
    def __init__(self, inner: Any, limit: int, request: httpx2.Request) -> None:
        self._inner, self._limit, self._request = inner, limit, request

    async def __aiter__(self) -> AsyncIterator[bytes]:
        seen = 0
        async for chunk in self._inner:
            seen += len(chunk)
            if seen > self._limit:  # no or a false Content-Length: stop reading here
                raise UnreadableBody(
                    f"an answer longer than the {self._limit} bytes read", request=self._request
                )
            yield chunk

    async def aclose(self) -> None:
        await self._inner.aclose()


def engine_client(
    *,
    limit: int,
    keep: int,
    base_url: str = "",
    timeout: float = 5.0,
    transport: httpx2.AsyncBaseTransport | None = None,
) -> httpx2.AsyncClient:
    """An httpx2 client on the engine: at most `limit` connections, `keep` of them kept
    for reuse (aiohttp keeps its idle connections until they expire instead); every answer
    bounded (`MAX_RESPONSE_BYTES`, identity encoding)."""
    limits = httpx2.Limits(max_connections=limit, max_keepalive_connections=keep)
    return httpx2.AsyncClient(
        base_url=base_url,
        limits=limits,
        timeout=timeout,
        headers={"accept-encoding": "identity"},
        transport=_Bounded(transport or _OnceTransport(limits=limits), MAX_RESPONSE_BYTES),
        follow_redirects=False,  # credentials are never sent on to another host
    )


def http_client(
    connection: ConnectionSettings, base_url: str, transport: httpx2.AsyncBaseTransport | None
) -> httpx2.AsyncClient:
    """The client for a connection's cancels and reads. It may open as many connections as
    the bulkhead lets calls in (`max_in_flight`), so an attempt holding a slot never waits
    for a connection."""
    return engine_client(
        limit=connection.max_in_flight,
        keep=connection.pool_size,
        base_url=base_url,
        timeout=connection.timeout,
        transport=transport,
    )


def login_client(
    connection: ConnectionSettings, base_url: str, transport: httpx2.AsyncBaseTransport | None
) -> httpx2.AsyncClient:
    """A client of its own for logins and token fetches, so they never queue behind cancels
    (one login serves every call of the connection, so one connection is enough)."""
    return engine_client(
        limit=1, keep=1, base_url=base_url, timeout=connection.timeout, transport=transport
    )


class Requests:
    """Builds one client's cancels and reads with less work per call than `build_request`,
    which parses and joins the URL twice and merges the default headers and cookies every
    time (a quarter of the gateway's own CPU per CancelJob, profiled). The URL of a fixed
    path is joined once; no cookies are kept or sent: the upstreams authenticate with a
    header, and a cookie an upstream sets is not the gateway's to replay."""

    def __init__(self, client: httpx2.AsyncClient) -> None:
        self._base = str(client.base_url).rstrip("/")
        self._headers = list(client.headers.multi_items())
        self._urls: dict[str, httpx2.URL] = {}  # fixed paths only: bounded by the adapter

    def json(
        self, path: str, payload: JsonValue, *, headers: dict[str, str], operation: str
    ) -> httpx2.Request:
        """POST `payload` as JSON to a fixed `path` (the same few paths on every call)."""
        url = self._urls.get(path)
        if url is None:
            url = self._urls[path] = httpx2.URL(self._base + path)
        content = json.dumps(payload, ensure_ascii=False, separators=(",", ":"), allow_nan=False)
        return httpx2.Request(
            "POST",
            url,
            headers=[*self._headers, ("content-type", "application/json"), *headers.items()],
            content=content.encode(),
            extensions={OPERATION: operation},
        )

    def bare(
        self, method: str, path: str, *, headers: dict[str, str], operation: str
    ) -> httpx2.Request:
        """A request without a body to a `path` that may hold an id (not kept)."""
        return httpx2.Request(
            method,
            httpx2.URL(self._base + path),
            headers=[*self._headers, *headers.items()],
            extensions={OPERATION: operation},
        )


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


def _number(text: str) -> float | str:
    """A JSON number as a float, or as its text when no float holds it (`1e400`)."""
    value = float(text)
    return value if math.isfinite(value) else text


def json_body(response: httpx2.Response) -> JsonValue:
    """The parsed body, or UpstreamFailure(UNREADABLE) when it is not JSON. `NaN` and
    `Infinity` (which Python's parser takes, and JSON has not) and numbers too large for a
    float stay text: a non-finite number could not be written out again as JSON (grpcurl's
    and `--json`'s view of the envelope)."""
    try:
        body: JsonValue = response.json(parse_constant=str, parse_float=_number)
    except (ValueError, RecursionError) as error:  # not JSON, bad UTF-8, nested past reason
        raise UpstreamFailure(
            UNREADABLE, f"HTTP {response.status_code}: body is not JSON"
        ) from error
    return body


@dataclass(frozen=True)
class Decoded:
    """An HTTP answer with its JSON body decoded once, for every reader that needs it."""

    response: httpx2.Response
    body: JsonValue = None
    failure: UpstreamFailure | None = None
    """Set when the body is not JSON; `json()` raises it."""

    @classmethod
    def of(cls, response: httpx2.Response) -> Decoded:
        try:
            return cls(response, json_body(response))
        except UpstreamFailure as failure:
            return cls(response, failure=failure)

    def json(self) -> JsonValue:
        """The body, or UpstreamFailure(UNREADABLE) when it is not JSON."""
        if self.failure is not None:
            raise self.failure
        return self.body


def redacted(value: Any, depth: int = 0) -> JsonValue:
    """A copy of an upstream body that is safe to return and log: secrets replaced, and cut
    to a size a caller can use (depth, items and text bounded)."""
    if depth >= _MAX_DEPTH and isinstance(value, dict | list):
        return "[truncated: nested too deep]"
    if isinstance(value, dict):
        return {
            SECRETS.scrub(str(k)): (
                "[redacted]" if str(k).lower() in _SECRET_KEYS else redacted(v, depth + 1)
            )
            for k, v in list(value.items())[:_MAX_ITEMS]
        }
    if isinstance(value, list):
        return [redacted(v, depth + 1) for v in value[:_MAX_ITEMS]]
    if isinstance(value, str):  # scrubbed whole, then cut: never half a secret
        text = SECRETS.scrub(value)
        return text[:_MAX_TEXT] + "…" if len(text) > _MAX_TEXT else text
    return value  # type: ignore[no-any-return]


def raw_text(response: httpx2.Response) -> JsonValue:
    """A non-JSON body, kept short, for `upstream_response`."""
    return {"status": response.status_code, "text": SECRETS.scrub(response.text)[:_MAX_TEXT]}


def retry_after(response: httpx2.Response) -> float | None:
    """`Retry-After` in seconds; the HTTP-date form is rare for APIs and is ignored."""
    value = response.headers.get("retry-after", "")
    try:
        seconds = float(value)
    except ValueError:
        return None
    return seconds if seconds >= 0 else None
