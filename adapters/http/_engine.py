"""The HTTP engine: httpx2 (the maintained fork of httpx, same API) over aiohttp's connection
pool (httpx-aiohttp's transport). Measured against httpx 0.28, httpx2 alone and aiohttp alone,
it kept the httpx API at close to aiohttp's cost per call (docs/PERFORMANCE.md). Tests inject
httpx2 transports (ASGI, mock) in its place.

One client per connection for cancels and reads, one for its logins; every answer bounded
(`MAX_RESPONSE_BYTES`, identity encoding); no hidden repeats of a request.
"""

from __future__ import annotations

import json
import ssl
import warnings
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import httpx2
from httpx_aiohttp.httpx2 import AiohttpTransport

from adapters.http._delivery import connected, trace_config
from gateway.connection import ConnectionSettings
from gateway.egress import Egress
from gateway.model import JsonValue

OPERATION = "cancelgw.operation"
"""Request extension naming the upstream operation for metrics, e.g.
`client.build_request(..., extensions={OPERATION: "DeleteReportRun"})`. Without it the
operation is the HTTP method: never a path, which may hold an id, so the label stays bounded."""


class EngineTransport(AiohttpTransport):
    """httpx-aiohttp's transport, on a session of the gateway's own making:

    - it never repeats a request by itself: aiohttp quietly sends an idempotent request
      (DELETE, GET) again when a reused connection turns out to be closed, and the repeat
      of a cancel whose first copy landed would answer "already canceled" with no trace of
      the first. The gateway decides about repeats (and shows each one), so the session's
      private switch is turned off; if aiohttp drops it, this fails at the first request
      rather than repeat cancels unseen;
    - it tells when a request has a connection (`_delivery.trace_config`), so a connect
      that never completed is reported NOT_SENT.
    """

    def __init__(self, *, egress: Egress | None = None, **options: Any) -> None:
        super().__init__(**options)
        self._egress = egress or Egress()

    def get_client(self) -> aiohttp.ClientSession:
        limit = self.limits.max_connections or 0
        connector = aiohttp.TCPConnector(
            limit=limit, keepalive_timeout=self.limits.keepalive_expiry, ssl=self.ssl_context
        )
        egress = self._egress
        user, _, password = egress.credentials.partition(":")
        with warnings.catch_warnings():
            # The session's proxy_auth is deprecated for aiohttp 4 in favour of per-request
            # proxy headers, which httpx-aiohttp's transport does not pass on; the session's
            # own default headers would reach the upstream too, through the tunnel.
            warnings.simplefilter("ignore", DeprecationWarning)
            session = aiohttp.ClientSession(
                connector=connector,
                trace_configs=[trace_config()],
                proxy=egress.proxy or None,
                proxy_auth=aiohttp.BasicAuth(user, password) if egress.credentials else None,
            )
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
        # Another transport (a test's) cannot say when a connection exists: its request
        # counts as possibly delivered from the start.
        self._reports_connections = isinstance(inner, EngineTransport)

    async def handle_async_request(self, request: httpx2.Request) -> httpx2.Response:
        if not self._reports_connections:
            connected()
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
    connect_timeout: float | None = None,
    trust: ssl.SSLContext | None = None,
    egress: Egress | None = None,
    transport: httpx2.AsyncBaseTransport | None = None,
) -> httpx2.AsyncClient:
    """An httpx2 client on the engine: at most `limit` connections, `keep` of them kept
    for reuse (aiohttp keeps its idle connections until they expire instead); every answer
    bounded (`MAX_RESPONSE_BYTES`, identity encoding); getting a connection (TCP, a proxy's
    CONNECT, TLS) bounded apart, by `connect_timeout`; TLS verified against `trust` (the
    default roots when None); out through `egress` (direct when None)."""
    limits = httpx2.Limits(max_connections=limit, max_keepalive_connections=keep)
    verify = trust if trust is not None else True
    engine = EngineTransport(limits=limits, verify=verify, egress=egress)
    return httpx2.AsyncClient(
        base_url=base_url,
        limits=limits,
        timeout=httpx2.Timeout(timeout, connect=connect_timeout or timeout),
        headers={"accept-encoding": "identity"},
        transport=_Bounded(transport or engine, MAX_RESPONSE_BYTES),
        follow_redirects=False,  # credentials are never sent on to another host
    )


def http_client(
    connection: ConnectionSettings, base_url: str, transport: httpx2.AsyncBaseTransport | None
) -> httpx2.AsyncClient:
    """The client for a connection's cancels and reads. It may open as many connections as
    the bulkhead lets calls in (`max_in_flight`), so an attempt holding a slot never waits
    for a connection."""
    return _connection_client(
        connection, base_url, transport, limit=connection.max_in_flight, keep=connection.pool_size
    )


def login_client(
    connection: ConnectionSettings, base_url: str, transport: httpx2.AsyncBaseTransport | None
) -> httpx2.AsyncClient:
    """A client of its own for logins and token fetches, so they never queue behind cancels
    (one login serves every call of the connection, so one connection is enough)."""
    return _connection_client(connection, base_url, transport, limit=1, keep=1)


def _connection_client(
    connection: ConnectionSettings,
    base_url: str,
    transport: httpx2.AsyncBaseTransport | None,
    *,
    limit: int,
    keep: int,
) -> httpx2.AsyncClient:
    return engine_client(
        limit=limit,
        keep=keep,
        base_url=base_url,
        timeout=connection.timeout,
        connect_timeout=connection.connect_timeout,
        trust=connection.tls_context(),
        egress=connection.egress,
        transport=transport,
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
