"""Idempotency keys and truthful retries through the real gateway: real gRPC in, real loopback
HTTP out to the KIIEX simulator, and both idempotency stores (memory, and a real
redis-server on loopback)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import grpc
import pytest

from adapters.kiiex.simulator import KiiexSimulator
from adapters.simulation.faults import Fault
from adapters.simulation.loopback import LoopbackServer
from cancellation.v1 import gateway_pb2 as pb
from cancellation.v1 import gateway_pb2_grpc
from gateway.app.serve import GatewayServer
from tests.conftest import KIIEX_ENV, kiiex_connection, make_config
from tests.grpc_helpers import report_request, rich_error
from tests.redis_server import RedisServer

Stub = gateway_pb2_grpc.CancellationGatewayStub
Start = Callable[..., Any]
BOUND = 200  # turns of the event loop a test waits for a request to arrive, at most


def _idempotency(
    kind: str, request: pytest.FixtureRequest
) -> tuple[dict[str, Any], dict[str, str]]:
    if kind == "memory":
        return {"store": "memory"}, KIIEX_ENV
    redis: RedisServer = request.getfixturevalue("redis_server")
    return {"store": "redis"}, {**KIIEX_ENV, "CANCELGW_REDIS_URL": redis.url}


@pytest.fixture(params=["memory", "redis"])
async def keyed(
    request: pytest.FixtureRequest, start_gateway: Start, kiiex_http: LoopbackServer
) -> tuple[Stub, GatewayServer]:
    """A gateway with an idempotency store: each test runs on memory and on Redis."""
    idempotency, environ = _idempotency(request.param, request)
    connection = kiiex_connection(kiiex_http.url, timeout_seconds=0.5)
    config = make_config({"k": connection}, environ, idempotency=idempotency)
    started: tuple[Stub, GatewayServer] = await start_gateway(config)
    return started


def _quote(bid: int, ask: int, key: str = "", **fields: Any) -> pb.CancelJobRequest:
    quote = pb.KiiexQuote(oms_id=1, bid_quote_id=bid, ask_quote_id=ask, instrument_id=1)
    return pb.CancelJobRequest(kiiex_quote=quote, idempotency_key=key, **fields)


async def _arrived(sim: KiiexSimulator, function: str, count: int) -> None:
    for _ in range(BOUND):
        if sim.calls[function] >= count:
            return
        await asyncio.sleep(0.01)
    raise AssertionError(f"{function} was called {sim.calls[function]} times, not {count}")


async def test_the_same_key_twice_replays_without_calling_the_upstream(
    keyed: tuple[Stub, GatewayServer], kiiex_sim: KiiexSimulator
) -> None:
    stub, server = keyed
    report = kiiex_sim.add_report()
    first = await stub.CancelJob(report_request(report, "key-1"))
    again = await stub.CancelJob(report_request(report, "key-1"))
    assert kiiex_sim.calls["CancelUserReport"] == 1
    assert (first.replayed, again.replayed) == (False, True)
    assert again.request_id != first.request_id  # each call's own x-request-id
    again.replayed, again.request_id = False, first.request_id
    assert again == first
    replays = server.metrics.registry.get_sample_value(
        "cancelgw_idempotent_replays_total", {"upstream": "kiiex"}
    )
    assert replays == 1


@pytest.mark.parametrize(
    "other",
    [
        report_request("00000000-0000-4000-8000-000000000001", "key-2"),
        report_request("00000000-0000-4000-8000-000000000000", "key-2", wait_for_confirmation=True),
        report_request("00000000-0000-4000-8000-000000000000", "key-2", connection="k"),
    ],
    ids=["another job", "another wait_for_confirmation", "same connection, named"],
)
async def test_a_key_reused_for_another_request_is_refused(
    keyed: tuple[Stub, GatewayServer], kiiex_sim: KiiexSimulator, other: pb.CancelJobRequest
) -> None:
    stub, _ = keyed
    await stub.CancelJob(report_request("00000000-0000-4000-8000-000000000000", "key-2"))
    calls = kiiex_sim.calls["CancelUserReport"]
    if other.connection == "k":  # the default connection by name is the same request
        assert (await stub.CancelJob(other)).replayed
        return
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await stub.CancelJob(other)
    error = rich_error(raised.value)
    assert (error.code, error.info.reason) == (
        grpc.StatusCode.INVALID_ARGUMENT, "IDEMPOTENCY_KEY_REUSED"
    )  # fmt: skip
    assert kiiex_sim.calls["CancelUserReport"] == calls


async def test_concurrent_duplicates_make_exactly_one_upstream_cancel(
    keyed: tuple[Stub, GatewayServer], kiiex_sim: KiiexSimulator
) -> None:
    stub, _ = keyed
    report = kiiex_sim.add_report()
    release = kiiex_sim.faults.hold()
    calls = [asyncio.ensure_future(stub.CancelJob(report_request(report, "dup"))) for _ in range(8)]
    await _arrived(kiiex_sim, "CancelUserReport", 1)
    release.set()
    answers = await asyncio.gather(*calls)
    assert kiiex_sim.calls["CancelUserReport"] == 1
    assert sorted(a.replayed for a in answers) == [False] + [True] * 7
    assert {a.outcome for a in answers} == {pb.OUTCOME_ACCEPTED}


async def test_a_duplicate_still_running_at_its_deadline_is_aborted(
    keyed: tuple[Stub, GatewayServer], kiiex_sim: KiiexSimulator
) -> None:
    stub, _ = keyed
    report = kiiex_sim.add_report()
    release = kiiex_sim.faults.hold()
    first = asyncio.ensure_future(stub.CancelJob(report_request(report, "slow")))
    await _arrived(kiiex_sim, "CancelUserReport", 1)
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await stub.CancelJob(report_request(report, "slow"), timeout=0.5)
    release.set()
    await first
    error = rich_error(raised.value)
    assert (error.code, error.info.reason) == (
        grpc.StatusCode.ABORTED, "IDEMPOTENCY_KEY_IN_PROGRESS"
    )  # fmt: skip
    assert kiiex_sim.calls["CancelUserReport"] == 1


async def test_an_answer_that_nothing_landed_frees_the_key(
    keyed: tuple[Stub, GatewayServer], kiiex_sim: KiiexSimulator
) -> None:
    stub, _ = keyed
    report = kiiex_sim.add_report()
    kiiex_sim.faults.inject(Fault("http_status", status=503, auth=True), times=3)
    failed = await stub.CancelJob(
        report_request(report, "retry-me")
    )  # the login failed: never sent
    assert (failed.outcome, failed.retryable) == (pb.OUTCOME_FAILED, True)
    assert {a.delivery for a in failed.attempt_history} == {pb.DELIVERY_NOT_SENT}
    again = await stub.CancelJob(report_request(report, "retry-me"))
    assert (again.outcome, again.replayed) == (pb.OUTCOME_ACCEPTED, False)
    assert kiiex_sim.calls["CancelUserReport"] == 1


async def test_a_lost_answer_then_not_found_is_unknown_not_failed(
    keyed: tuple[Stub, GatewayServer], kiiex_sim: KiiexSimulator
) -> None:
    stub, _ = keyed
    bid, ask = kiiex_sim.add_quote_pair(instrument_id=1)
    release = kiiex_sim.faults.hold("late")  # applied upstream, the answer held past the timeout
    response = await stub.CancelJob(_quote(bid, ask))
    release.set()
    assert kiiex_sim.quote_state(bid) == 3, "the first attempt did cancel the quote"
    assert response.outcome == pb.OUTCOME_UNKNOWN
    assert (response.reason, response.retryable) == (pb.REASON_NOT_FOUND, False)
    assert [a.delivery for a in response.attempt_history] == [
        pb.DELIVERY_NO_ANSWER, pb.DELIVERY_ANSWERED
    ]  # fmt: skip
    assert [leg.upstream_code for leg in response.attempt_history[1].legs] == ["104", "104"]
    assert "wait_for_confirmation" in response.message
    assert "did not cancel" not in response.message


async def test_a_lost_answer_is_resolved_by_confirmation(
    keyed: tuple[Stub, GatewayServer], kiiex_sim: KiiexSimulator
) -> None:
    stub, _ = keyed
    bid, ask = kiiex_sim.add_quote_pair(instrument_id=1)
    release = kiiex_sim.faults.hold("late")
    response = await stub.CancelJob(_quote(bid, ask, wait_for_confirmation=True))
    release.set()
    assert (response.outcome, response.retryable) == (pb.OUTCOME_CANCELED, False)
    assert kiiex_sim.calls["GetOpenQuotes"] >= 1


async def test_a_key_whose_lost_attempt_landed_is_not_cancelled_again(
    start_gateway: Start, kiiex_http: LoopbackServer, kiiex_sim: KiiexSimulator
) -> None:
    """attempt 1: applied, answer lost; attempt 2: 503 -> FAILED, retryable, record kept
    open. The retry with the key reads first: the report is canceled, so no second cancel."""
    connection = kiiex_connection(kiiex_http.url, timeout_seconds=0.5, retry={"max_attempts": 2})
    stub, _ = await start_gateway(make_config({"k": connection}, idempotency={"store": "memory"}))
    report = kiiex_sim.add_report()
    release = kiiex_sim.faults.hold("late")
    kiiex_sim.faults.inject(Fault("http_status", status=503))
    first = await stub.CancelJob(report_request(report, "open"))
    release.set()
    assert (first.outcome, first.retryable) == (pb.OUTCOME_FAILED, True)
    assert "may have applied it" in first.message
    again = await stub.CancelJob(report_request(report, "open"))
    assert kiiex_sim.calls["CancelUserReport"] == 2, "no third cancel"
    assert (again.outcome, again.replayed) == (pb.OUTCOME_CANCELED, False)
    assert len(again.attempt_history) == 2  # both earlier attempts, shown to the caller
    assert again.attempts == 0


async def test_a_key_whose_lost_attempt_did_not_land_is_sent_again(
    start_gateway: Start, kiiex_http: LoopbackServer, kiiex_sim: KiiexSimulator
) -> None:
    connection = kiiex_connection(kiiex_http.url, timeout_seconds=0.5, retry={"max_attempts": 2})
    stub, _ = await start_gateway(make_config({"k": connection}, idempotency={"store": "memory"}))
    report = kiiex_sim.add_report()
    release = kiiex_sim.faults.hold("delay")  # held before it is handled: nothing lands
    kiiex_sim.faults.inject(Fault("http_status", status=503))
    first = await stub.CancelJob(report_request(report, "not-landed"))
    assert first.retryable
    release.set()
    await _arrived(kiiex_sim, "CancelUserReport", 2)
    again = await stub.CancelJob(report_request(report, "not-landed"))
    assert kiiex_sim.calls["GetUserReportTickets"] >= 1  # read first: still Scheduled
    assert (again.outcome, again.attempts) == (pb.OUTCOME_ACCEPTED, 1)


async def test_retry_after_longer_than_the_backoff_is_passed_on(
    keyed: tuple[Stub, GatewayServer], kiiex_sim: KiiexSimulator
) -> None:
    stub, _ = keyed
    kiiex_sim.faults.inject(Fault("rate_limited", seconds=30))
    response = await stub.CancelJob(report_request(kiiex_sim.add_report()))
    assert (response.reason, response.attempts) == (pb.REASON_RATE_LIMITED, 1)
    assert response.HasField("retry_after")
    assert response.retry_after.ToTimedelta().total_seconds() == 30


async def test_a_stopped_redis_refuses_keyed_calls_and_serves_the_others(
    start_gateway: Start,
    kiiex_http: LoopbackServer,
    kiiex_sim: KiiexSimulator,
    redis_server: RedisServer,
) -> None:
    environ = {**KIIEX_ENV, "CANCELGW_REDIS_URL": redis_server.url}
    config = make_config(
        {"k": kiiex_connection(kiiex_http.url)}, environ, idempotency={"store": "redis"}
    )
    stub, _ = await start_gateway(config)
    redis_server.stop()
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await stub.CancelJob(report_request(kiiex_sim.add_report(), "k-1"))
    error = rich_error(raised.value)
    assert (error.code, error.info.reason) == (
        grpc.StatusCode.UNAVAILABLE, "IDEMPOTENCY_STORE_UNAVAILABLE"
    )  # fmt: skip
    assert kiiex_sim.calls["CancelUserReport"] == 0, "never run without the guard asked for"
    served = await stub.CancelJob(report_request(kiiex_sim.add_report()))
    assert served.outcome == pb.OUTCOME_ACCEPTED
