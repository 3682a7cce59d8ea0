"""Observability end to end: real gRPC calls into a real gateway, then a real HTTP scrape of
its /metrics, checked series by series; the JSON log line; promtool on the live exposition;
and the dashboard's and alerts' queries against what the gateway exports."""

from __future__ import annotations

import asyncio
import io
import json
import socket
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import httpx2
import pytest
import trustme
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc
from prometheus_client.parser import text_string_to_metric_families
from starlette.types import ASGIApp, Receive, Scope, Send

from adapters.installed import REGISTRY
from adapters.kiiex.simulator import KiiexSimulator
from adapters.simulation.faults import Fault
from cancellation.v1 import gateway_pb2, gateway_pb2_grpc
from gateway.app.serve import GatewayServer
from gateway.config import Config, parse_config
from tests.conftest import KIIEX_ENV, kiiex_connection
from tests.deploy.tools import (
    SYNTHETIC_METRICS,
    alert_expressions,
    dashboard_expressions,
    metric_names,
    promtool,
)
from tests.grpc_helpers import report_request, rich_error
from tests.processes import until

pb = gateway_pb2
Stub = gateway_pb2_grpc.CancellationGatewayStub
Series = tuple[str, frozenset[tuple[str, str]]]
MISSING_REPORT = "00000000-0000-4000-8000-000000000000"
GATEWAY = "cancellation.v1.CancellationGateway"


def series(name: str, **labels: str) -> Series:
    return name, frozenset(labels.items())


def observed_config(connections: Mapping[str, dict[str, Any]]) -> Config:
    """A config with the metrics endpoint on a free loopback port."""
    data = {
        "server": {
            "listen": "127.0.0.1:0",
            "metrics_listen": "127.0.0.1:0",
            "allow_unauthenticated": True,
        },
        "connections": dict(connections),
    }
    return parse_config(data, KIIEX_ENV, REGISTRY.option_schemas)


async def scrape_text(server: GatewayServer) -> str:
    assert server.metrics_port, "the metrics endpoint is not serving"
    async with httpx2.AsyncClient() as client:
        response = await client.get(f"http://127.0.0.1:{server.metrics_port}/metrics")
    response.raise_for_status()
    return response.text


async def scrape(server: GatewayServer) -> dict[Series, float]:
    """Every sample of a real scrape, by name and labels."""
    return {
        series(sample.name, **sample.labels): sample.value
        for family in text_string_to_metric_families(await scrape_text(server))
        for sample in family.samples
    }


def moved(before: dict[Series, float], after: dict[Series, float]) -> dict[Series, float]:
    """What changed between two scrapes; sums and buckets left out (their values vary)."""
    return {
        key: after[key] - before.get(key, 0.0)
        for key in after
        if after[key] != before.get(key, 0.0) and not key[0].endswith(("_sum", "_bucket"))
    }


class HeaderRecorder:
    """ASGI middleware noting every value of one request header the simulator receives."""

    def __init__(self, app: ASGIApp, header: str) -> None:
        self._app = app
        self._header = header.encode()
        self.values: list[str] = []

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        for name, value in scope.get("headers", ()):
            if name == self._header:
                self.values.append(value.decode())
        await self._app(scope, receive, send)


@dataclass
class Observed:
    stub: Stub
    server: GatewayServer
    sim: KiiexSimulator
    tokens: HeaderRecorder


@pytest.fixture
async def observed(
    start_gateway: Callable[..., Any], kiiex_sim: KiiexSimulator, tmp_path: Path
) -> Observed:
    tokens = HeaderRecorder(kiiex_sim.app, kiiex_sim.token_header)
    # A client certificate too, so that its expiry is among the series exported.
    issued = trustme.CA().issue_cert("gateway.example")
    cert, key = tmp_path / "client.crt", tmp_path / "client.key"
    issued.cert_chain_pems[0].write_to_path(str(cert))
    issued.private_key_pem.write_to_path(str(key))
    identity = {"client_cert_file": str(cert), "client_key_file": str(key)}
    config = observed_config({"kiiex-main": kiiex_connection(**identity)})
    transport = httpx2.ASGITransport(app=tokens)
    stub, server = await start_gateway(config, {"kiiex-main": transport})
    return Observed(stub, server, kiiex_sim, tokens)


async def _until(check: Callable[[], Any], what: str) -> None:
    """Bounded poll for something another task or thread finishes."""
    for _ in range(500):
        if await check():
            return
        await asyncio.sleep(0.01)
    raise AssertionError(f"timed out waiting for {what}")


async def test_series_exist_at_zero_before_any_call(observed: Observed) -> None:
    samples = await scrape(observed.server)
    for job in REGISTRY.upstreams["kiiex"].jobs:  # every kind the registry lists, not a copy
        upstream, operation = job.upstream, job.operation
        labels = {"upstream": upstream, "operation": operation}
        for outcome, reason in (("accepted", "unspecified"), ("failed", "not_found")):
            key = series("cancelgw_jobs_total", **labels, outcome=outcome, reason=reason)
            assert samples[key] == 0
        assert samples[series("cancelgw_job_duration_seconds_count", **labels)] == 0
        retries = series("cancelgw_retries_total", connection="kiiex-main", operation=operation)
        assert samples[retries] == 0
    conn = {"connection": "kiiex-main"}
    assert samples[series("cancelgw_circuit_state", **conn)] == 0
    assert samples[series("cancelgw_upstream_in_flight", **conn)] == 0
    assert samples[series("cancelgw_upstream_in_flight_limit", **conn)] == 32
    assert samples[series("cancelgw_token_refreshes_total", **conn, result="refused")] == 0
    assert samples[series("cancelgw_idempotent_replays_total", upstream="kiiex")] == 0
    assert samples[series("cancelgw_confirmations_total", upstream="kiiex", result="refuted")] == 0
    status = {"operation": "CancelUserReport", "status_class": "5xx"}
    assert samples[series("cancelgw_upstream_requests_total", **conn, **status)] == 0
    grpc_labels = {"grpc_type": "unary", "grpc_service": GATEWAY, "grpc_method": "CancelJob"}
    assert samples[series("grpc_server_handled_total", **grpc_labels, grpc_code="OK")] == 0
    assert samples[series("grpc_server_started_total", **grpc_labels)] == 0


async def test_one_not_found_call_moves_exactly_its_series_by_one(observed: Observed) -> None:
    await observed.stub.CancelJob(
        report_request(observed.sim.add_report())
    )  # logs in: a warm gateway
    before = await scrape(observed.server)
    response = await observed.stub.CancelJob(report_request(MISSING_REPORT))
    assert (response.outcome, response.reason) == (pb.OUTCOME_FAILED, pb.REASON_NOT_FOUND)
    grpc_labels = {"grpc_type": "unary", "grpc_service": GATEWAY, "grpc_method": "CancelJob"}
    job = {"upstream": "kiiex", "operation": "CancelUserReport"}
    call = {"connection": "kiiex-main", "operation": "CancelUserReport"}
    assert moved(before, await scrape(observed.server)) == {
        series("grpc_server_started_total", **grpc_labels): 1,
        series("grpc_server_handled_total", **grpc_labels, grpc_code="OK"): 1,
        series("grpc_server_handling_seconds_count", **grpc_labels): 1,
        series("cancelgw_jobs_total", **job, outcome="failed", reason="not_found"): 1,
        series("cancelgw_job_duration_seconds_count", **job): 1,
        series("cancelgw_upstream_requests_total", **call, status_class="2xx"): 1,
        series("cancelgw_upstream_request_duration_seconds_count", **call): 1,
        series("cancelgw_caller_calls_total", caller="anonymous"): 1,
    }


async def test_gateway_side_errors_count_by_grpc_code_and_not_as_jobs(observed: Observed) -> None:
    before = await scrape(observed.server)
    for request in (
        report_request("not-a-guid"),
        report_request(MISSING_REPORT, connection="nope"),
    ):
        with pytest.raises(grpc.aio.AioRpcError):
            await observed.stub.CancelJob(request)
    changes = moved(before, await scrape(observed.server))
    grpc_labels = {"grpc_type": "unary", "grpc_service": GATEWAY, "grpc_method": "CancelJob"}
    for code in ("InvalidArgument", "FailedPrecondition"):
        assert changes.pop(series("grpc_server_handled_total", **grpc_labels, grpc_code=code)) == 1
    assert changes == {
        series("grpc_server_started_total", **grpc_labels): 2,
        series("grpc_server_handling_seconds_count", **grpc_labels): 2,
        series("cancelgw_caller_calls_total", caller="anonymous"): 2,  # admitted, then refused
    }


async def test_health_checks_and_reflection_are_counted_as_rpcs(observed: Observed) -> None:
    before = await scrape(observed.server)
    async with grpc.aio.insecure_channel(f"127.0.0.1:{observed.server.port}") as channel:
        health = health_pb2_grpc.HealthStub(channel)
        await health.Check(health_pb2.HealthCheckRequest(service=""))
        watch = health.Watch(health_pb2.HealthCheckRequest(service=""))
        assert (await watch.read()).status == health_pb2.HealthCheckResponse.SERVING
        watch.cancel()
        reflection = reflection_pb2_grpc.ServerReflectionStub(channel)
        request = reflection_pb2.ServerReflectionRequest(list_services="")
        async for _ in reflection.ServerReflectionInfo(iter([request])):
            pass
    check = {"grpc_service": "grpc.health.v1.Health", "grpc_method": "Check"}
    watched = {"grpc_service": "grpc.health.v1.Health", "grpc_method": "Watch"}
    info = {"grpc_service": "grpc.reflection.v1alpha.ServerReflection"}
    expected = {
        series("grpc_server_handled_total", grpc_type="unary", **check, grpc_code="OK"),
        series(
            "grpc_server_handled_total", grpc_type="server_stream", **watched, grpc_code="Canceled"
        ),
        series(
            "grpc_server_handled_total",
            grpc_type="bidi_stream",
            **info,
            grpc_method="ServerReflectionInfo",
            grpc_code="OK",
        ),
    }

    async def all_handled() -> bool:
        changes = moved(before, await scrape(observed.server))
        return all(changes.get(key) == 1 for key in expected)

    await _until(all_handled, "the health and reflection calls to be counted")


async def test_retry_counts_the_5xx_and_the_retry(observed: Observed) -> None:
    await observed.stub.CancelJob(report_request(observed.sim.add_report()))
    before = await scrape(observed.server)
    observed.sim.faults.inject(Fault("http_status", status=503))
    response = await observed.stub.CancelJob(report_request(observed.sim.add_report()))
    assert (response.outcome, response.attempts) == (pb.OUTCOME_ACCEPTED, 2)
    changes = moved(before, await scrape(observed.server))
    call = {"connection": "kiiex-main", "operation": "CancelUserReport"}
    assert changes[series("cancelgw_retries_total", **call)] == 1
    assert changes[series("cancelgw_upstream_requests_total", **call, status_class="5xx")] == 1
    assert changes[series("cancelgw_upstream_requests_total", **call, status_class="2xx")] == 1


async def test_confirmation_result_is_counted(observed: Observed) -> None:
    before = await scrape(observed.server)
    request = report_request(observed.sim.add_report(), wait_for_confirmation=True)
    assert (await observed.stub.CancelJob(request)).outcome == pb.OUTCOME_CANCELED
    changes = moved(before, await scrape(observed.server))
    assert (
        changes[series("cancelgw_confirmations_total", upstream="kiiex", result="confirmed")] == 1
    )
    job = {"upstream": "kiiex", "operation": "CancelUserReport"}
    assert changes[series("cancelgw_jobs_total", **job, outcome="canceled", reason="unspecified")]


async def test_in_flight_shows_a_slow_call_while_it_runs(observed: Observed) -> None:
    await observed.stub.CancelJob(report_request(observed.sim.add_report()))
    release = observed.sim.faults.hold()
    call = asyncio.ensure_future(observed.stub.CancelJob(report_request(observed.sim.add_report())))
    gauge = series("cancelgw_upstream_in_flight", connection="kiiex-main")

    async def in_flight() -> bool:
        return (await scrape(observed.server))[gauge] == 1

    await _until(in_flight, "the slow call to show in flight")
    release.set()
    await call
    assert (await scrape(observed.server))[gauge] == 0


async def test_breaker_opens_then_answers_without_calling_the_upstream(
    start_gateway: Callable[..., Any], refused_url: str
) -> None:
    connection = kiiex_connection(
        refused_url,
        retry={"max_attempts": 1},
        breaker={"failure_threshold": 2, "reset_seconds": 60},
    )
    stub, server = await start_gateway(observed_config({"k": connection}))
    for _ in range(2):
        response = await stub.CancelJob(report_request(MISSING_REPORT))
        assert (response.reason, response.attempts) == (pb.REASON_UPSTREAM_UNAVAILABLE, 1)
    refused = await stub.CancelJob(report_request(MISSING_REPORT))
    assert (refused.outcome, refused.reason, refused.retryable, refused.attempts) == (
        pb.OUTCOME_FAILED,
        pb.REASON_UPSTREAM_UNAVAILABLE,
        True,
        0,
    )
    assert "circuit open for connection k" in refused.message
    samples = await scrape(server)
    assert samples[series("cancelgw_circuit_state", connection="k")] == 2
    login = {"connection": "k", "operation": "AuthenticateUser", "status_class": "error"}
    assert samples[series("cancelgw_upstream_requests_total", **login)] == 2  # not 3
    job = {"upstream": "kiiex", "operation": "CancelUserReport"}
    failed = series("cancelgw_jobs_total", **job, outcome="failed", reason="upstream_unavailable")
    assert samples[failed] == 3


async def test_one_json_line_per_cancel_job_with_the_request_id(
    observed: Observed, captured_logs: io.StringIO
) -> None:
    call = observed.stub.CancelJob(
        report_request(MISSING_REPORT), metadata=(("x-request-id", "rq-7"),)
    )
    response = await call
    assert response.request_id == "rq-7"
    assert ("x-request-id", "rq-7") in tuple(await call.initial_metadata())
    with pytest.raises(grpc.aio.AioRpcError):
        await observed.stub.CancelJob(report_request("not-a-guid"))

    def jobs_logged() -> list[dict[str, Any]]:
        lines = [json.loads(line) for line in captured_logs.getvalue().splitlines()]
        return [line for line in lines if line["message"] == "cancel_job"]

    # An abort reaches the caller before the handler's line is written: wait for it.
    await until(lambda: len(jobs_logged()) == 2, "both calls logged")
    jobs = jobs_logged()
    found, invalid = jobs
    assert found["caller"] == "anonymous"  # a configured name: the peer is logged apart
    assert found["peer"].startswith("ipv4:127.0.0.1:")
    assert found["job_ids"] == {"user_report_id": MISSING_REPORT}
    assert {k: found[k] for k in ("request_id", "job", "connection", "grpc_code")} == {
        "request_id": "rq-7",
        "job": "kiiex_user_report",
        "connection": "kiiex-main",
        "grpc_code": "OK",
    }
    assert (found["outcome"], found["reason"], found["attempts"]) == ("failed", "not_found", 1)
    assert found["latency_ms"] >= found["upstream_latency_ms"] > 0
    assert (invalid["grpc_code"], invalid["error_reason"]) == (
        "INVALID_ARGUMENT",
        "INVALID_ARGUMENT",
    )
    assert len(invalid["request_id"]) == 32  # generated: none was sent


class BrokenTransport(httpx2.AsyncBaseTransport):
    """Fails the way a bug does: with an exception no layer expects."""

    async def handle_async_request(self, request: httpx2.Request) -> httpx2.Response:
        raise RuntimeError("bug in the transport")


async def test_an_unforeseen_adapter_failure_is_an_envelope_with_a_logged_traceback(
    start_gateway: Callable[..., Any], captured_logs: io.StringIO
) -> None:
    config = observed_config({"k": kiiex_connection()})
    stub, _ = await start_gateway(config, {"k": BrokenTransport()})
    response = await stub.CancelJob(report_request(MISSING_REPORT))
    assert (response.outcome, response.reason) == (
        pb.OUTCOME_FAILED,
        pb.REASON_BAD_UPSTREAM_RESPONSE,
    )
    assert "bug in the transport" not in response.message  # internals stay in the log
    lines = [json.loads(line) for line in captured_logs.getvalue().splitlines()]
    (error,) = [line for line in lines if line["level"] == "error"]
    assert "RuntimeError: bug in the transport" in error["exception"]


async def test_a_bug_is_unknown_counted_and_logged_with_its_traceback(
    start_gateway: Callable[..., Any],
    captured_logs: io.StringIO,
    kiiex_sim: KiiexSimulator,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    def broken(*args: object, **kwargs: object) -> object:
        raise RuntimeError("bug in the core")

    monkeypatch.setattr("gateway.pipeline.envelope", broken)
    config = observed_config({"k": kiiex_connection()})
    stub, server = await start_gateway(config, {"k": httpx2.ASGITransport(app=kiiex_sim.app)})
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await stub.CancelJob(report_request(MISSING_REPORT))
    assert raised.value.code() is grpc.StatusCode.UNKNOWN
    grpc_labels = {"grpc_type": "unary", "grpc_service": GATEWAY, "grpc_method": "CancelJob"}
    handled = series("grpc_server_handled_total", **grpc_labels, grpc_code="Unknown")
    assert (await scrape(server))[handled] == 1
    lines = [json.loads(line) for line in captured_logs.getvalue().splitlines()]
    (line,) = [line for line in lines if line["message"] == "cancel_job"]
    assert (line["level"], line["grpc_code"]) == ("error", "UNKNOWN")
    assert "RuntimeError: bug in the core" in line["exception"]


async def test_no_secret_reaches_the_logs(observed: Observed, captured_logs: io.StringIO) -> None:
    observed.sim.expire_sessions()
    await observed.stub.CancelJob(
        report_request(observed.sim.add_report(), wait_for_confirmation=True)
    )
    observed.sim.expire_sessions()  # a re-login mid-way: a second token
    await observed.stub.CancelJob(report_request(MISSING_REPORT))
    logged = captured_logs.getvalue()
    assert "cancel_job" in logged
    tokens = set(observed.tokens.values)
    assert len(tokens) >= 2
    for secret in (KIIEX_ENV["KIIEX_PASSWORD"], *tokens):
        assert secret not in logged


async def test_promtool_accepts_the_live_exposition(observed: Observed) -> None:
    await observed.stub.CancelJob(
        report_request(observed.sim.add_report(), wait_for_confirmation=True)
    )
    await observed.stub.CancelJob(report_request(MISSING_REPORT))
    result = promtool("check", "metrics", stdin=await scrape_text(observed.server))
    assert result.returncode == 0, result.stdout + result.stderr


async def test_every_metric_the_dashboard_and_alerts_query_is_exported(observed: Observed) -> None:
    exported = {name for name, _ in await scrape(observed.server)}
    queried = set().union(*map(metric_names, alert_expressions() + dashboard_expressions()))
    assert queried - SYNTHETIC_METRICS <= exported, sorted(queried - SYNTHETIC_METRICS - exported)
    assert {"cancelgw_jobs_total", "cancelgw_circuit_state", "grpc_server_handled_total"} <= queried


async def test_metrics_endpoint_stops_with_the_gateway(start_gateway: Callable[..., Any]) -> None:
    _, server = await start_gateway(observed_config({"k": kiiex_connection()}))
    port = server.metrics_port
    await server.stop(grace=0)
    with pytest.raises(httpx2.ConnectError):
        async with httpx2.AsyncClient() as client:
            await client.get(f"http://127.0.0.1:{port}/metrics")


async def test_metrics_endpoint_can_be_turned_off(
    start_gateway: Callable[..., Any],
) -> None:
    server_table = {"listen": "127.0.0.1:0", "metrics_listen": "", "allow_unauthenticated": True}
    data = {"server": server_table, "connections": {"k": kiiex_connection()}}
    _, server = await start_gateway(parse_config(data, KIIEX_ENV, REGISTRY.option_schemas))
    assert server.metrics_port is None


async def test_a_taken_metrics_port_fails_the_start_naming_it() -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        address = f"127.0.0.1:{taken.getsockname()[1]}"
        data = {
            "server": {"listen": "127.0.0.1:0", "metrics_listen": address,
                       "allow_unauthenticated": True},
            "connections": {"k": kiiex_connection()},
        }  # fmt: skip
        server = GatewayServer(parse_config(data, KIIEX_ENV, REGISTRY.option_schemas))
        with pytest.raises(RuntimeError, match=f"cannot serve metrics on {address}"):
            await server.start()
        await server.stop(grace=0)


async def test_undecodable_request_bytes_are_answered_counted_and_warned_once(
    observed: Observed, caplog: pytest.LogCaptureFixture
) -> None:
    before = await scrape(observed.server)
    port = observed.server.port
    async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
        raw = channel.unary_unary(f"/{GATEWAY}/CancelJob")  # bytes in, bytes out
        errors = []
        for garbage in (b"\xff\xff\xff\xff", b"\x0a\x05\x0a\x03abc\xff", b"\x80" * 20):
            with pytest.raises(grpc.aio.AioRpcError) as raised:
                await raw(garbage)
            errors.append(rich_error(raised.value))
    assert {(e.code, e.info.reason) for e in errors} == {
        (grpc.StatusCode.INVALID_ARGUMENT, "UNDECODABLE_REQUEST")
    }
    handled = series("grpc_server_handled_total", grpc_type="unary", grpc_service=GATEWAY,
                     grpc_method="CancelJob", grpc_code="InvalidArgument")  # fmt: skip
    assert moved(before, await scrape(observed.server))[handled] == 3
    warnings = [r for r in caplog.records if "no CancelJobRequest" in r.getMessage()]
    assert len(warnings) == 1, "one rate-limited warning, not one per call"
    assert not any(r.exc_info for r in caplog.records), "no traceback"
