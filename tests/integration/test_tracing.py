"""Traces over real gRPC and real loopback HTTP: the caller's `traceparent` reaches the
upstream simulators and the log line, spans come out per call, attempt, login, read and
HTTP request, and an OTLP/HTTP collector on loopback receives them when configured."""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import AsyncIterator, Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from threading import Thread
from typing import Any

import grpc
import pytest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode

from adapters.kiiex.simulator import KiiexSimulator
from adapters.simulation.loopback import LoopbackServer
from adapters.zuora.simulator import ZuoraSimulator
from cancellation.v1 import gateway_pb2, gateway_pb2_grpc
from gateway.app.serve import TRACES_FLUSH_SECONDS, GatewayServer
from gateway.config import Config, ConfigError
from gateway.tracing import Tracing
from tests.conftest import kiiex_connection, make_config, zuora_connection
from tests.grpc_helpers import report_request

pb = gateway_pb2
TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"
CALLER_SPAN = "00f067aa0ba902b7"
TRACEPARENT = f"00-{TRACE_ID}-{CALLER_SPAN}-01"
W3C = re.compile(r"^00-([0-9a-f]{32})-([0-9a-f]{16})-[0-9a-f]{2}$")


class Gateway:
    """A started gateway, its stub, and the spans it finished (when traced)."""

    def __init__(self, server: GatewayServer, spans: InMemorySpanExporter | None) -> None:
        self.server, self.exporter = server, spans
        self.channel = grpc.aio.insecure_channel(f"127.0.0.1:{server.port}")
        self.stub = gateway_pb2_grpc.CancellationGatewayStub(self.channel)

    def spans(self) -> list[ReadableSpan]:
        assert self.exporter is not None
        return list(self.exporter.get_finished_spans())

    def named(self, name: str) -> list[ReadableSpan]:
        return [s for s in self.spans() if s.name == name]


Start = Callable[..., Any]


@pytest.fixture
async def start() -> AsyncIterator[Start]:
    started: list[Gateway] = []

    async def start(config: Config, *, traced: bool = True) -> Gateway:
        exporter = InMemorySpanExporter() if traced else None
        tracing = Tracing(
            config.tracing, processor=SimpleSpanProcessor(exporter) if exporter else None
        )
        server = GatewayServer(config, tracing=tracing)
        await server.start()
        gateway = Gateway(server, exporter)
        started.append(gateway)
        return gateway

    yield start
    for gateway in started:
        await gateway.channel.close()
        await gateway.server.stop(grace=0.5)


def _heard(traceparents: Any, name: str) -> list[tuple[str, str]]:
    """(trace id, parent span id) of each `name` request the simulator received."""
    found = []
    for heard_name, header in traceparents:
        if heard_name == name:
            match = W3C.match(header)
            assert match is not None, header
            found.append((match.group(1), match.group(2)))
    return found


def _hex(span_id: int) -> str:
    return f"{span_id:016x}"


async def test_the_callers_trace_reaches_the_upstream_through_each_span(
    start: Start, kiiex_http: LoopbackServer, kiiex_sim: KiiexSimulator, captured_logs: Any
) -> None:
    gateway = await start(make_config({"kiiex-main": kiiex_connection(kiiex_http.url)}))
    report = kiiex_sim.add_report()
    response = await gateway.stub.CancelJob(
        report_request(report, wait_for_confirmation=True), metadata=(("traceparent", TRACEPARENT),)
    )
    assert response.outcome == pb.OUTCOME_CANCELED
    (server,) = gateway.named("cancellation.v1.CancellationGateway/CancelJob")
    assert server.kind is SpanKind.SERVER
    assert (f"{server.context.trace_id:032x}", _hex(server.parent.span_id)) == (
        TRACE_ID,
        CALLER_SPAN,
    )
    assert server.attributes["rpc.grpc.status_code"] == 0
    assert server.attributes["cancelgw.outcome"] == "canceled"
    (attempt,) = gateway.named("CancelUserReport attempt 1")
    (login,) = gateway.named("login")
    reads = gateway.named("reading CancelUserReport")
    assert reads, [s.name for s in gateway.spans()]
    assert attempt.parent.span_id == server.context.span_id
    assert login.parent.span_id == attempt.context.span_id  # the attempt that needed it
    assert all(r.parent.span_id == server.context.span_id for r in reads)
    http = {s.context.span_id: s for s in gateway.spans() if s.kind is SpanKind.CLIENT}
    # Every request the simulator got carries the caller's trace and the id of the gateway's
    # HTTP span that sent it: one hop per span, none missing.
    for name, parent in (
        ("AuthenticateUser", login),
        ("CancelUserReport", attempt),
        ("GetUserReportTickets", None),
    ):
        heard = _heard(kiiex_sim.traceparents, name)
        assert heard, name
        for trace_id, span_id in heard:
            sender = http[int(span_id, 16)]
            assert (trace_id, sender.attributes["cancelgw.operation"]) == (TRACE_ID, name)
            assert sender.attributes["http.response.status_code"] == 200
            if parent is not None:
                assert sender.parent.span_id == parent.context.span_id
    line = next(json.loads(x) for x in captured_logs.getvalue().splitlines() if "cancel_job" in x)
    assert (line["message"], line["trace_id"]) == ("cancel_job", TRACE_ID)
    assert line["span_id"] == _hex(server.context.span_id)


async def test_without_a_traceparent_the_gateway_starts_the_trace(
    start: Start, kiiex_http: LoopbackServer, kiiex_sim: KiiexSimulator
) -> None:
    gateway = await start(make_config({"kiiex-main": kiiex_connection(kiiex_http.url)}))
    garbage = (("traceparent", "00-not-a-trace-01"), ("tracestate", "x" * 600))
    await gateway.stub.CancelJob(report_request(kiiex_sim.add_report()), metadata=garbage)
    (server,) = gateway.named("cancellation.v1.CancellationGateway/CancelJob")
    assert server.parent is None  # a root: the garbage was not taken for a parent
    (trace_id, _), *_ = _heard(kiiex_sim.traceparents, "CancelUserReport")
    assert trace_id == f"{server.context.trace_id:032x}"


async def test_tracing_off_still_passes_the_callers_context_on(
    start: Start, kiiex_http: LoopbackServer, kiiex_sim: KiiexSimulator, captured_logs: Any
) -> None:
    gateway = await start(
        make_config({"kiiex-main": kiiex_connection(kiiex_http.url)}), traced=False
    )
    await gateway.stub.CancelJob(
        report_request(kiiex_sim.add_report()), metadata=(("traceparent", TRACEPARENT),)
    )
    # Nothing recorded, nothing invented: the upstream sees the caller's own span as parent.
    assert _heard(kiiex_sim.traceparents, "CancelUserReport") == [(TRACE_ID, CALLER_SPAN)]
    line = next(json.loads(x) for x in captured_logs.getvalue().splitlines() if "cancel_job" in x)
    assert line["trace_id"] == TRACE_ID
    untraced = await gateway.stub.CancelJob(report_request(kiiex_sim.add_report()))
    assert untraced.outcome == pb.OUTCOME_ACCEPTED
    assert kiiex_sim.traceparents[-1] == ("CancelUserReport", "")


async def test_failures_mark_spans_by_kind_never_by_text(
    start: Start, kiiex_http: LoopbackServer, kiiex_sim: KiiexSimulator, refused_url: str
) -> None:
    connections = {
        "kiiex-main": kiiex_connection(kiiex_http.url),
        "kiiex-down": kiiex_connection(refused_url, default=False),
    }
    gateway = await start(make_config(connections))
    with pytest.raises(grpc.aio.AioRpcError) as invalid:
        await gateway.stub.CancelJob(report_request("nope"))
    assert invalid.value.code() is grpc.StatusCode.INVALID_ARGUMENT
    down = await gateway.stub.CancelJob(
        report_request(kiiex_sim.add_report(), connection="kiiex-down")
    )
    assert down.outcome == pb.OUTCOME_FAILED
    servers = gateway.named("cancellation.v1.CancellationGateway/CancelJob")
    refused = next(s for s in servers if s.attributes["rpc.grpc.status_code"] == 3)
    assert refused.status.status_code is StatusCode.UNSET  # the caller's fault, not ours
    sent = [s for s in gateway.spans() if s.kind is SpanKind.CLIENT and s.status.is_ok is False]
    assert sent
    for span in sent:
        assert span.attributes["error.type"] == "UpstreamFailure"
        assert span.attributes["cancelgw.failure"] == "unreachable"
        assert not span.events  # no exception text in a trace


async def test_zuora_token_and_cancel_carry_the_trace(
    start: Start, zuora_sim_http: tuple[ZuoraSimulator, LoopbackServer]
) -> None:
    simulator, http = zuora_sim_http
    config = make_config({"zuora-main": zuora_connection(http.url)})
    gateway = await start(config)
    run = simulator.add_run()
    request = pb.CancelJobRequest(zuora_report_run=pb.ZuoraReportRun(report_run_id=run))
    await gateway.stub.CancelJob(request, metadata=(("traceparent", TRACEPARENT),))
    names = {name for name, _ in simulator.traceparents}
    assert {"create_token"} < names
    assert {trace for name in names for trace, _ in _heard(simulator.traceparents, name)} == {
        TRACE_ID
    }


@pytest.fixture
async def zuora_sim_http() -> AsyncIterator[tuple[ZuoraSimulator, LoopbackServer]]:
    simulator = ZuoraSimulator()
    async with LoopbackServer(simulator.app) as server:
        yield simulator, server


class _Collector(BaseHTTPRequestHandler):
    """An OTLP/HTTP traces receiver: keeps each decoded export request."""

    received: list[ExportTraceServiceRequest]

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers["content-length"]))
        if self.path == "/v1/traces" and self.headers["content-type"] == "application/x-protobuf":
            self.received.append(ExportTraceServiceRequest.FromString(body))
        self.send_response(200)
        self.send_header("content-type", "application/x-protobuf")
        self.send_header("content-length", "0")
        self.end_headers()

    def log_message(self, format: str, *args: Any) -> None:
        pass


@pytest.fixture
def collector() -> Iterator[tuple[str, list[ExportTraceServiceRequest]]]:
    received: list[ExportTraceServiceRequest] = []
    handler = type("Collector", (_Collector,), {"received": received})
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_port}/v1/traces", received
    httpd.shutdown()
    httpd.server_close()


async def test_otlp_exports_the_calls_spans_to_the_collector(
    kiiex_http: LoopbackServer,
    kiiex_sim: KiiexSimulator,
    collector: tuple[str, list[ExportTraceServiceRequest]],
) -> None:
    endpoint, received = collector
    tracing = {"exporter": "otlp", "endpoint": endpoint, "service_name": "cgw-test"}
    config = make_config({"kiiex-main": kiiex_connection(kiiex_http.url)}, tracing=tracing)
    server = GatewayServer(config)
    await server.start()
    async with grpc.aio.insecure_channel(f"127.0.0.1:{server.port}") as channel:
        stub = gateway_pb2_grpc.CancellationGatewayStub(channel)
        await stub.CancelJob(
            report_request(kiiex_sim.add_report()), metadata=(("traceparent", TRACEPARENT),)
        )
    await server.stop(grace=0.5)  # exports what is left before it returns
    spans = [
        (resource.resource, span)
        for request in received
        for resource in request.resource_spans
        for scope in resource.scope_spans
        for span in scope.spans
    ]
    assert {span.trace_id.hex() for _, span in spans} == {TRACE_ID}
    assert "cancellation.v1.CancellationGateway/CancelJob" in {span.name for _, span in spans}
    service_names = {
        a.value.string_value for r, _ in spans for a in r.attributes if a.key == "service.name"
    }
    assert service_names == {"cgw-test"}


@pytest.mark.parametrize(
    ("tracing", "message"),
    [
        ({"exporter": "otlp"}, "tracing.endpoint: is required"),
        ({"exporter": "otlp", "endpoint": "collector:4318"}, "tracing.endpoint: must be an http"),
        ({"exporter": "jaeger"}, "tracing.exporter: must be one of"),
        ({"endpoint": "http://c:4318/v1/traces"}, "tracing.endpoint: only used with"),
        ({"sample_ratio": 1.5}, "tracing.sample_ratio: must be <= 1"),
        ({"exporter": "console", "colour": True}, "tracing.colour"),
    ],
)
def test_tracing_settings_name_the_key(tracing: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError, match=re.escape(message)):
        make_config({"kiiex-main": kiiex_connection()}, tracing=tracing)


def test_console_and_off_are_accepted() -> None:
    assert make_config({"kiiex-main": kiiex_connection()}).tracing.exporter == "off"
    config = make_config({"kiiex-main": kiiex_connection()}, tracing={"exporter": "console"})
    assert (config.tracing.exporter, config.tracing.sample_ratio) == ("console", 1.0)


async def test_an_unreachable_collector_never_holds_up_a_call(
    kiiex_http: LoopbackServer, kiiex_sim: KiiexSimulator, refused_url: str
) -> None:
    tracing = {"exporter": "otlp", "endpoint": f"{refused_url}/v1/traces"}
    config = make_config({"kiiex-main": kiiex_connection(kiiex_http.url)}, tracing=tracing)
    server = GatewayServer(config)
    await server.start()
    async with grpc.aio.insecure_channel(f"127.0.0.1:{server.port}") as channel:
        stub = gateway_pb2_grpc.CancellationGatewayStub(channel)
        calls = [
            stub.CancelJob(report_request(kiiex_sim.add_report()), timeout=5) for _ in range(5)
        ]
        answers = await asyncio.gather(*calls)
    assert {a.outcome for a in answers} == {pb.OUTCOME_ACCEPTED}
    await server.stop(grace=0.5)


async def test_a_collector_that_never_answers_cannot_hold_up_the_stop(
    kiiex_http: LoopbackServer, kiiex_sim: KiiexSimulator
) -> None:
    async def silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.read()  # takes the export request, never answers it

    hole = await asyncio.start_server(silent, "127.0.0.1", 0)
    endpoint = f"http://127.0.0.1:{hole.sockets[0].getsockname()[1]}/v1/traces"
    tracing = {"exporter": "otlp", "endpoint": endpoint}
    config = make_config({"kiiex-main": kiiex_connection(kiiex_http.url)}, tracing=tracing)
    server = GatewayServer(config)
    await server.start()
    async with grpc.aio.insecure_channel(f"127.0.0.1:{server.port}") as channel:
        stub = gateway_pb2_grpc.CancellationGatewayStub(channel)
        await asyncio.gather(
            *(stub.CancelJob(report_request(kiiex_sim.add_report())) for _ in range(50))
        )
    loop = asyncio.get_running_loop()
    started = loop.time()
    await server.stop(grace=0.5)
    # The SDK alone would wait for the collector up to 30 s; the gateway gives it
    # TRACES_FLUSH_SECONDS and goes (a generous bound: this is about a hang, not speed).
    assert loop.time() - started < TRACES_FLUSH_SECONDS + 3
    hole.close()
