"""The truth when the network fails, over real gRPC and real sockets on loopback: a request
that cannot have left is NOT_SENT, a connect that fails or never completes is FAILED /
UPSTREAM_UNAVAILABLE and retried, and what only the config can mend is
CONNECTION_MISCONFIGURED, never retried and never counted by the breaker. One test per row
of docs/NETWORKS.md's failure table (the proxy rows: test_egress_proxy.py)."""

from __future__ import annotations

import asyncio
import contextlib
import socket
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from starlette.types import Receive, Scope, Send

from adapters.kiiex.simulator import KiiexSimulator
from adapters.simulation.loopback import LoopbackServer
from adapters.zuora.simulator import ZuoraSimulator
from cancellation.v1 import gateway_pb2 as pb
from gateway.app.serve import GatewayServer
from gateway.resilience import CircuitState
from tests.conftest import kiiex_connection, make_config, zuora_connection
from tests.grpc_helpers import report_request

GUID = "8e3a7f52-1c9d-4b6e-a0f4-2d5b9c7e1a30"
CONNECT = 0.3
# Fast, bounded attempts: a connect that does not complete gives up after CONNECT.
TIMING = {
    "timeout_seconds": 2,
    "connect_timeout_seconds": CONNECT,
    "retry": {"max_attempts": 3, "backoff_initial_seconds": 0.01, "backoff_max_seconds": 0.02},
}
Start = Callable[..., Awaitable[tuple[Any, GatewayServer]]]


def _deliveries(response: pb.CancelJobResponse) -> list[int]:
    return [attempt.delivery for attempt in response.attempt_history]


def _assert_unreachable_not_sent(response: pb.CancelJobResponse, attempts: int = 3) -> None:
    assert (response.outcome, response.reason) == (
        pb.OUTCOME_FAILED,
        pb.REASON_UPSTREAM_UNAVAILABLE,
    )
    assert response.retryable
    assert _deliveries(response) == [pb.DELIVERY_NOT_SENT] * attempts


def _assert_misconfigured(response: pb.CancelJobResponse, says: str) -> None:
    assert (response.outcome, response.reason) == (
        pb.OUTCOME_FAILED, pb.REASON_CONNECTION_MISCONFIGURED
    )  # fmt: skip
    assert not response.retryable
    assert _deliveries(response) == [pb.DELIVERY_NOT_SENT]  # one attempt: never retried
    assert says in response.message, response.message


@contextlib.contextmanager
def _dropping_syns(port: int = 0) -> Iterator[int]:
    """A listening socket whose accept queue is full and never drained: the kernel drops
    every further SYN, as a firewall that drops does."""
    listener = socket.socket()
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    listener.bind(("127.0.0.1", port))
    listener.listen(0)
    bound = listener.getsockname()[1]
    fillers = []
    for _ in range(8):  # more than a backlog of 0 holds
        filler = socket.socket()
        filler.setblocking(False)
        with contextlib.suppress(BlockingIOError):
            filler.connect(("127.0.0.1", bound))
        fillers.append(filler)
    try:
        yield bound
    finally:
        for filler in fillers:
            filler.close()
        listener.close()


async def test_a_refused_port_is_unreachable_not_sent_and_retried(
    start_gateway: Start, refused_url: str
) -> None:
    stub, _ = await start_gateway(make_config({"k": kiiex_connection(refused_url, **TIMING)}))
    response = await stub.CancelJob(report_request(GUID), timeout=10)
    _assert_unreachable_not_sent(response)
    assert "cannot connect to 127.0.0.1" in response.message


async def test_dropped_syns_on_a_fresh_gateway_are_unreachable_within_the_connect_bound(
    start_gateway: Start,
) -> None:
    with _dropping_syns() as port:
        config = make_config({"k": kiiex_connection(f"http://127.0.0.1:{port}", **TIMING)})
        stub, _ = await start_gateway(config)
        started = time.monotonic()
        response = await stub.CancelJob(report_request(GUID), timeout=10)
        elapsed = time.monotonic() - started
    _assert_unreachable_not_sent(response)
    assert f"no connection within {CONNECT:.2f}s" in response.message
    assert elapsed < 3 * CONNECT + 1.0  # three connect bounds and two short backoffs


class _Forwarder:
    """A loopback TCP forwarder to an upstream that can start dropping SYNs, as a path
    through a firewall does when a rule changes."""

    def __init__(self, target: int) -> None:
        self._target = target
        self._writers: list[asyncio.StreamWriter] = []
        self._server: asyncio.Server | None = None
        self.port = 0

    async def __aenter__(self) -> _Forwarder:
        self._server = await asyncio.start_server(self._pipe, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self._close()

    async def _pipe(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self._target)
        self._writers += [writer, up_writer]

        async def copy(source: asyncio.StreamReader, sink: asyncio.StreamWriter) -> None:
            with contextlib.suppress(ConnectionError):
                while data := await source.read(65536):
                    sink.write(data)
                    await sink.drain()
            sink.close()

        await asyncio.gather(copy(reader, up_writer), copy(up_reader, writer))

    async def _close(self) -> None:
        if self._server is not None:
            self._server.close()
            self._server = None
        for writer in self._writers:
            writer.close()
        self._writers.clear()

    async def start_dropping(self) -> contextlib.AbstractContextManager[int]:
        """Closes the open connections (so a new call needs a new one) and answers no SYN
        on the same port from now on."""
        await self._close()
        await _no_connection_left(self.port)
        return _dropping_syns(self.port)


async def _no_connection_left(port: int) -> None:
    """Polls, within a bound, until no socket of this host is connected to `port` or
    waiting to close (CLOSE_WAIT lasts until the holder closes it)."""
    deadline = time.monotonic() + 5
    while _sockets_to(port):
        assert time.monotonic() < deadline, "the gateway kept its connections open"
        await asyncio.sleep(0.01)  # the gateway runs in this loop: let it see the FIN


def _sockets_to(port: int) -> int:
    live = {"01", "08"}  # ESTABLISHED, CLOSE_WAIT
    count = 0
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        fields = line.split()
        remote_port = int(fields[2].split(":")[1], 16)
        if remote_port == port and fields[3] in live:
            count += 1
    return count


async def test_dropped_syns_after_a_successful_call_are_not_sent(
    start_gateway: Start, kiiex_sim: KiiexSimulator, kiiex_http: LoopbackServer
) -> None:
    """The session is cached and a pooled connection was used: then the path drops SYNs.
    Every attempt needs a new connection that never completes: nothing was sent."""
    upstream_port = int(kiiex_http.url.rsplit(":", 1)[1])
    async with _Forwarder(upstream_port) as forwarder:
        url = f"http://127.0.0.1:{forwarder.port}"
        stub, _ = await start_gateway(make_config({"k": kiiex_connection(url, **TIMING)}))
        first = await stub.CancelJob(report_request(kiiex_sim.add_report()), timeout=10)
        assert first.outcome == pb.OUTCOME_ACCEPTED
        with await forwarder.start_dropping():
            report = kiiex_sim.add_report()
            response = await stub.CancelJob(report_request(report), timeout=10)
    _assert_unreachable_not_sent(response)
    assert kiiex_sim.calls["AuthenticateUser"] == 1  # the session was reused
    assert kiiex_sim.report_status(report) == "Scheduled"


@pytest.fixture
def no_dns(monkeypatch: pytest.MonkeyPatch) -> None:
    """Name resolution that fails for every name, in-process: no query leaves the host."""

    async def unknown(self: object, host: str, port: int = 0, family: int = 0) -> Any:
        raise OSError(socket.EAI_NONAME, f"Name or service not known: {host}")

    for resolver in (aiohttp.ThreadedResolver, aiohttp.AsyncResolver):
        monkeypatch.setattr(resolver, "resolve", unknown)


@pytest.mark.usefixtures("no_dns")
async def test_a_name_that_does_not_resolve_is_unreachable_not_sent(
    start_gateway: Start,
) -> None:
    config = make_config({"k": kiiex_connection("https://kiiex.upstream.invalid", **TIMING)})
    stub, _ = await start_gateway(config)
    response = await stub.CancelJob(report_request(GUID), timeout=10)
    _assert_unreachable_not_sent(response)
    assert "kiiex.upstream.invalid" in response.message


async def test_tls_to_a_plain_http_port_is_misconfigured_and_leaves_the_breaker_closed(
    start_gateway: Start, kiiex_http: LoopbackServer
) -> None:
    url = kiiex_http.url.replace("http://", "https://")
    stub, server = await start_gateway(make_config({"k": kiiex_connection(url, **TIMING)}))
    for _ in range(20):
        response = await stub.CancelJob(report_request(GUID), timeout=10)
        _assert_misconfigured(response, "TLS handshake with 127.0.0.1")
    assert server.router.routes["k"].breaker.state is CircuitState.CLOSED


async def test_a_login_404_is_misconfigured_never_the_jobs_not_found(
    start_gateway: Start, kiiex_http: LoopbackServer
) -> None:
    connection = kiiex_connection(kiiex_http.url, path_prefix="/nowhere", **TIMING)
    stub, _ = await start_gateway(make_config({"k": connection}))
    response = await stub.CancelJob(report_request(GUID), timeout=10)
    _assert_misconfigured(response, "AuthenticateUser answered HTTP 404: check base_url")


async def test_the_jobs_own_404_stays_not_found(start_gateway: Start) -> None:
    zuora = ZuoraSimulator()
    async with LoopbackServer(zuora.app) as upstream:
        stub, _ = await start_gateway(make_config({"z": zuora_connection(upstream.url, **TIMING)}))
        run = pb.ZuoraReportRun(report_run_id="0123456789abcdef0123456789abcdef")
        response = await stub.CancelJob(pb.CancelJobRequest(zuora_report_run=run), timeout=10)
    assert (response.outcome, response.reason) == (pb.OUTCOME_FAILED, pb.REASON_NOT_FOUND)
    assert _deliveries(response) == [pb.DELIVERY_ANSWERED]


@contextlib.asynccontextmanager
async def _redirecting(location: str) -> AsyncIterator[str]:
    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        while (await receive()).get("more_body"):
            pass
        headers = [(b"location", location.encode()), (b"content-length", b"0")]
        await send({"type": "http.response.start", "status": 302, "headers": headers})
        await send({"type": "http.response.body", "body": b""})

    async with LoopbackServer(app) as server:
        yield server.url


async def test_a_redirect_is_misconfigured_with_its_location_shown_and_scrubbed(
    start_gateway: Start,
) -> None:
    password = "operator-pass"  # the configured secret (KIIEX_ENV)
    async with _redirecting(f"https://moved.example/ap?pw={password}") as url:
        stub, _ = await start_gateway(make_config({"k": kiiex_connection(url, **TIMING)}))
        response = await stub.CancelJob(report_request(GUID), timeout=10)
    _assert_misconfigured(response, "HTTP 302: redirected to 'https://moved.example/ap?pw=")
    assert password not in response.message


async def test_an_open_circuit_names_the_failure_that_opened_it(
    start_gateway: Start, refused_url: str
) -> None:
    timing = {**TIMING, "retry": {"max_attempts": 1}, "breaker": {"failure_threshold": 2}}
    stub, _ = await start_gateway(make_config({"k": kiiex_connection(refused_url, **timing)}))
    for _ in range(2):
        await stub.CancelJob(report_request(GUID), timeout=10)
    response = await stub.CancelJob(report_request(GUID), timeout=10)
    assert response.message.startswith("circuit open for connection k")
    assert "the last: UPSTREAM_UNAVAILABLE: cannot connect to 127.0.0.1" in response.message
