"""CancelJob end to end: real gRPC client, real gateway, real loopback HTTP, KIIEX simulator."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from adapters.kiiex.simulator import KiiexSimulator
from adapters.simulation.faults import Fault
from adapters.simulation.loopback import LoopbackServer
from cancellation.v1 import gateway_pb2, gateway_pb2_grpc
from gateway import NAME
from gateway.app.serve import GatewayServer
from tests.conftest import kiiex_connection, make_config
from tests.grpc_helpers import report_request, rich_error

Stub = gateway_pb2_grpc.CancellationGatewayStub
pb = gateway_pb2


@pytest.fixture
async def gateway(
    start_gateway: Callable[..., Any], kiiex_http: LoopbackServer
) -> tuple[Stub, GatewayServer]:
    config = make_config({"kiiex-main": kiiex_connection(kiiex_http.url, timeout_seconds=1.0)})
    started: tuple[Stub, GatewayServer] = await start_gateway(config)
    return started


async def test_existing_report_is_accepted(
    gateway: tuple[Stub, GatewayServer], kiiex_sim: KiiexSimulator
) -> None:
    stub, _ = gateway
    report = kiiex_sim.add_report()
    call = stub.CancelJob(report_request(report), metadata=(("x-request-id", "req-42"),))
    response = await call
    assert (response.outcome, response.reason) == (pb.OUTCOME_ACCEPTED, pb.REASON_UNSPECIFIED)
    assert (response.upstream, response.operation, response.attempts) == (
        "kiiex",
        "CancelUserReport",
        1,
    )
    assert [(leg.leg, leg.outcome, leg.upstream_code) for leg in response.legs] == [
        ("report", pb.OUTCOME_ACCEPTED, "0")
    ]
    assert response.request_id == "req-42"
    assert ("x-request-id", "req-42") in tuple(await call.initial_metadata())
    assert response.upstream_response["result"] is True
    assert kiiex_sim.report_status(report) == "UserCancelled"


async def test_unknown_report_is_an_ok_envelope_saying_not_found(
    gateway: tuple[Stub, GatewayServer],
) -> None:
    stub, _ = gateway
    response = await stub.CancelJob(report_request("00000000-0000-4000-8000-000000000000"))
    assert (response.outcome, response.reason, response.retryable) == (
        pb.OUTCOME_FAILED,
        pb.REASON_NOT_FOUND,
        False,
    )
    assert response.legs[0].upstream_message == "Resource Not Found"


async def test_confirmation_turns_receipt_into_canceled(
    gateway: tuple[Stub, GatewayServer], kiiex_sim: KiiexSimulator
) -> None:
    stub, _ = gateway
    response = await stub.CancelJob(
        report_request(kiiex_sim.add_report(), wait_for_confirmation=True)
    )
    assert response.outcome == pb.OUTCOME_CANCELED
    assert response.legs[0].detail == "RequestStatus UserCancelled"


async def test_unconfirmed_cancel_stays_accepted_with_not_confirmed(
    start_gateway: Callable[..., Any], kiiex_sim: KiiexSimulator, kiiex_http: LoopbackServer
) -> None:
    kiiex_sim.cancel_settle_seconds = 3600  # the manual clock never gets there
    config = make_config(
        {
            "k": kiiex_connection(
                kiiex_http.url, confirm_timeout_seconds=0.1, confirm_interval_seconds=0.02
            )
        }
    )
    stub, _ = await start_gateway(config)
    response = await stub.CancelJob(
        report_request(kiiex_sim.add_report(), wait_for_confirmation=True)
    )
    assert (response.outcome, response.reason) == (pb.OUTCOME_ACCEPTED, pb.REASON_NOT_CONFIRMED)
    assert "UserCancelPending" in response.legs[0].detail


async def test_malformed_guid_is_invalid_argument_and_upstream_is_never_called(
    gateway: tuple[Stub, GatewayServer], kiiex_sim: KiiexSimulator
) -> None:
    stub, _ = gateway
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await stub.CancelJob(report_request("not-a-guid"))
    error = rich_error(raised.value)
    assert error.code is grpc.StatusCode.INVALID_ARGUMENT
    assert error.bad_fields == ["kiiex_user_report.user_report_id"]
    assert (error.info.reason, error.info.domain) == ("INVALID_ARGUMENT", NAME)
    assert "not-a-guid" in error.message
    assert not kiiex_sim.calls
    assert kiiex_sim.login_count == 0


async def test_empty_request_is_invalid_argument_naming_the_job(
    gateway: tuple[Stub, GatewayServer],
) -> None:
    stub, _ = gateway
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await stub.CancelJob(pb.CancelJobRequest())
    error = rich_error(raised.value)
    assert (error.code, error.bad_fields) == (grpc.StatusCode.INVALID_ARGUMENT, ["job"])


async def test_unknown_connection_is_failed_precondition(
    gateway: tuple[Stub, GatewayServer],
) -> None:
    stub, _ = gateway
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await stub.CancelJob(
            report_request("8e3a7f52-1c9d-4b6e-a0f4-2d5b9c7e1a30", connection="nope")
        )
    error = rich_error(raised.value)
    assert (error.code, error.info.reason) == (
        grpc.StatusCode.FAILED_PRECONDITION,
        "UNKNOWN_CONNECTION",
    )
    assert "kiiex-main" not in error.message  # other connections are not named to callers


@pytest.mark.parametrize("connection", ["", "kiiex-main"])
async def test_job_without_a_connection_of_its_upstream_is_failed_precondition(
    gateway: tuple[Stub, GatewayServer], connection: str
) -> None:
    stub, _ = gateway
    run = pb.ZuoraReportRun(report_run_id="ff808081529f4e3401529fd61f080074")
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await stub.CancelJob(pb.CancelJobRequest(zuora_report_run=run, connection=connection))
    error = rich_error(raised.value)
    assert (error.code, error.info.reason) == (
        grpc.StatusCode.FAILED_PRECONDITION,
        "UNKNOWN_CONNECTION",
    )
    assert "zuora" in error.message


async def test_unreachable_upstream_is_failed_unavailable_and_retryable(
    start_gateway: Callable[..., Any], refused_url: str
) -> None:
    config = make_config({"k": kiiex_connection(refused_url)})
    stub, _ = await start_gateway(config)
    response = await stub.CancelJob(report_request("8e3a7f52-1c9d-4b6e-a0f4-2d5b9c7e1a30"))
    assert (response.outcome, response.reason, response.retryable) == (
        pb.OUTCOME_FAILED,
        pb.REASON_UPSTREAM_UNAVAILABLE,
        True,
    )
    assert response.attempts == 3  # the configured max_attempts, all spent


async def test_a_garbage_200_is_a_bad_answer_that_may_have_landed(
    gateway: tuple[Stub, GatewayServer], kiiex_sim: KiiexSimulator
) -> None:
    stub, _ = gateway
    kiiex_sim.faults.inject(Fault("garbage"))
    response = await stub.CancelJob(report_request(kiiex_sim.add_report()))
    # A 200 that cannot be read does not say the cancel was not applied: UNKNOWN, not FAILED.
    assert (response.outcome, response.reason, response.attempts, response.retryable) == (
        pb.OUTCOME_UNKNOWN,
        pb.REASON_BAD_UPSTREAM_RESPONSE,
        1,
        False,
    )
    assert [a.delivery for a in response.attempt_history] == [pb.DELIVERY_NO_ANSWER]
    assert "wait_for_confirmation" in response.message
    assert "upstream exploded" in response.upstream_response["text"]


async def test_slow_upstream_times_out_then_the_retry_succeeds(
    gateway: tuple[Stub, GatewayServer], kiiex_sim: KiiexSimulator
) -> None:
    stub, _ = gateway
    kiiex_sim.faults.inject(Fault("delay", seconds=2.0))
    response = await stub.CancelJob(report_request(kiiex_sim.add_report()))
    assert (response.outcome, response.attempts) == (pb.OUTCOME_ACCEPTED, 2)


async def test_caller_deadline_is_deadline_exceeded(
    gateway: tuple[Stub, GatewayServer], kiiex_sim: KiiexSimulator
) -> None:
    stub, _ = gateway
    kiiex_sim.faults.inject(Fault("delay", seconds=2.0), times=3)
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await stub.CancelJob(report_request(kiiex_sim.add_report()), timeout=1.5)
    # The gateway answers before gRPC cuts the call off, so the status carries its details.
    error = rich_error(raised.value)
    assert (error.code, error.info.reason) == (
        grpc.StatusCode.DEADLINE_EXCEEDED,
        "DEADLINE_EXCEEDED",
    )


@pytest.mark.parametrize(
    ("field", "value"), [("connection", "c" * 20_000), ("idempotency_key", "k" * 20_000)]
)
async def test_oversized_request_fields_are_invalid_argument(
    gateway: tuple[Stub, GatewayServer], field: str, value: str
) -> None:
    stub, _ = gateway
    request = report_request("8e3a7f52-1c9d-4b6e-a0f4-2d5b9c7e1a30", **{field: value})
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await stub.CancelJob(request)
    error = rich_error(raised.value)
    assert (error.code, error.bad_fields) == (grpc.StatusCode.INVALID_ARGUMENT, [field])
    assert len(error.message) < 200


async def test_expired_session_is_renewed_transparently(
    gateway: tuple[Stub, GatewayServer], kiiex_sim: KiiexSimulator
) -> None:
    stub, _ = gateway
    await stub.CancelJob(report_request(kiiex_sim.add_report()))
    kiiex_sim.expire_sessions()
    response = await stub.CancelJob(report_request(kiiex_sim.add_report()))
    assert response.outcome == pb.OUTCOME_ACCEPTED
    assert kiiex_sim.login_count == 2


async def test_health_reports_serving(gateway: tuple[Stub, GatewayServer]) -> None:
    _, server = gateway
    async with grpc.aio.insecure_channel(f"127.0.0.1:{server.port}") as channel:
        health = health_pb2_grpc.HealthStub(channel)
        for service in ("", "cancellation.v1.CancellationGateway"):
            reply = await health.Check(health_pb2.HealthCheckRequest(service=service))
            assert reply.status == health_pb2.HealthCheckResponse.SERVING


async def test_stop_lets_the_in_flight_call_finish(
    gateway: tuple[Stub, GatewayServer], kiiex_sim: KiiexSimulator
) -> None:
    stub, server = gateway
    release = kiiex_sim.faults.hold()  # the upstream answers when the test says so
    call = asyncio.ensure_future(stub.CancelJob(report_request(kiiex_sim.add_report())))
    for _ in range(500):  # bounded poll: until the upstream holds the request
        if kiiex_sim.calls["CancelUserReport"]:
            break
        await asyncio.sleep(0.01)
    stopping = asyncio.ensure_future(server.stop(grace=5.0))
    for _ in range(10):  # let stop() get going: it must wait for the call, not cut it
        await asyncio.sleep(0)
    assert not call.done()
    release.set()
    response = await call
    await stopping
    assert response.outcome == pb.OUTCOME_ACCEPTED


async def test_an_attempt_never_waits_for_an_http_connection(
    start_gateway: Callable[..., Any], kiiex_http: LoopbackServer, kiiex_sim: KiiexSimulator
) -> None:
    """pool_size is what stays open; a call holding one of max_in_flight slots gets a
    connection at once, so a slow neighbour cannot use up its attempt's timeout."""
    connection = kiiex_connection(kiiex_http.url, timeout_seconds=0.5, pool_size=1, max_in_flight=2)
    stub, _ = await start_gateway(make_config({"k": connection}))
    await stub.CancelJob(report_request(kiiex_sim.add_report()))  # logged in, one connection kept
    release = kiiex_sim.faults.hold()
    slow = asyncio.ensure_future(stub.CancelJob(report_request(kiiex_sim.add_report())))
    for _ in range(200):
        if kiiex_sim.calls["CancelUserReport"] == 2:
            break
        await asyncio.sleep(0.01)
    quick = await stub.CancelJob(report_request(kiiex_sim.add_report()))
    release.set()
    await slow
    assert (quick.outcome, quick.attempts) == (pb.OUTCOME_ACCEPTED, 1)
    assert [a.delivery for a in quick.attempt_history] == [pb.DELIVERY_ANSWERED]
