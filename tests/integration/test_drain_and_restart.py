"""Rollouts and crashes, with real processes: `cancelgw serve` against a KIIEX simulator on
loopback, real signals, a real redis-server shared by the gateways.

- SIGTERM with 200+ calls in flight or queued: no call is CANCELLED by the transport; every
  call gets an envelope or the gateway's own UNAVAILABLE; the process exits 0.
- SIGKILL mid-call, another gateway on the same Redis, the caller's retry with the same key:
  a truthful answer, and no second upstream cancel.
- Two gateways sharing Redis: one upstream cancel for one key.
"""

from __future__ import annotations

import asyncio
import json
import signal
import time
from pathlib import Path
from typing import Any

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from adapters.kiiex.simulator import KiiexSimulator
from adapters.simulation.loopback import LoopbackServer
from cancellation.v1 import gateway_pb2 as pb
from cancellation.v1 import gateway_pb2_grpc
from gateway.rpc.servicer import SERVICE_NAME
from tests.conftest import kiiex_connection, make_config
from tests.grpc_helpers import report_request, rich_error
from tests.processes import (
    BOUND,
    KIIEX_ENV,
    Served,
    kiiex_gateway_config,
    outcome,
    serve,
    until,
)
from tests.redis_server import RedisServer


async def test_sigterm_with_calls_in_flight_and_queued_cancels_none(
    tmp_path: Path, kiiex_http: LoopbackServer, kiiex_sim: KiiexSimulator
) -> None:
    kiiex_sim.cancel_settle_seconds = 3600.0  # confirmation would wait for ever: a drain cuts it
    # The answers are held from the 32nd cancel until after the signal: attempts far longer
    # than that, so none times out into a (rightly) UNKNOWN envelope on a loaded machine.
    config = kiiex_gateway_config(kiiex_http.url, grace=30, timeout_seconds=20)
    served = await serve(tmp_path, config, KIIEX_ENV)
    reports = [kiiex_sim.add_report() for _ in range(240)]
    release = kiiex_sim.faults.hold(times=len(reports))
    async with grpc.aio.insecure_channel(served.target) as channel:
        stub = gateway_pb2_grpc.CancellationGatewayStub(channel)
        health = health_pb2_grpc.HealthStub(channel)
        calls = [  # one in six waits for confirmation
            asyncio.ensure_future(
                outcome(stub, report_request(r, wait_for_confirmation=i % 6 == 0))
            )
            for i, r in enumerate(reports)
        ]
        await until(lambda: kiiex_sim.calls["CancelUserReport"] >= 32, "32 cancels in flight")
        signalled = time.monotonic()
        served.process.send_signal(signal.SIGTERM)
        check = health_pb2.HealthCheckRequest(service="")
        not_serving = health_pb2.HealthCheckResponse.NOT_SERVING
        for _ in range(BOUND):
            if (await health.Check(check, timeout=5)).status == not_serving:
                break
            await asyncio.sleep(0.005)
        effect = time.monotonic() - signalled
        late = await outcome(stub, report_request(kiiex_sim.add_report()))
        release.set()
        outcomes = await asyncio.gather(*calls)
    assert await asyncio.wait_for(served.process.wait(), 30) == 0
    print(f"\ndrain: SIGTERM took effect (health NOT_SERVING seen) after {effect * 1000:.0f} ms")

    errors = [o for o in outcomes if isinstance(o, grpc.aio.AioRpcError)]
    envelopes = [o for o in outcomes if not isinstance(o, grpc.aio.AioRpcError)]
    assert [e.code() for e in errors if e.code() is not grpc.StatusCode.UNAVAILABLE] == []
    assert {rich_error(e).info.reason for e in errors} <= {"SHUTTING_DOWN"}
    assert len(envelopes) >= 32, "the calls in flight finished with envelopes"
    assert all(e.outcome in (pb.OUTCOME_ACCEPTED, pb.OUTCOME_CANCELED) for e in envelopes)
    assert isinstance(late, grpc.aio.AioRpcError)
    assert (late.code(), rich_error(late).info.reason) == (
        grpc.StatusCode.UNAVAILABLE, "SHUTTING_DOWN"
    )  # fmt: skip
    confirming = [e for e in envelopes if e.reason == pb.REASON_NOT_CONFIRMED]
    assert all("shutting down" in e.legs[0].detail for e in confirming)
    refused = [json.loads(line) for line in served.log_lines() if '"SHUTTING_DOWN"' in line]
    assert len(refused) == len(errors) + 1, "every refusal is logged"
    print(f"drain: {len(envelopes)} envelopes, {len(errors)} UNAVAILABLE, 0 CANCELLED")


async def test_sigkill_mid_call_then_a_retry_elsewhere_is_truthful_and_sends_no_second_cancel(
    tmp_path: Path,
    kiiex_http: LoopbackServer,
    kiiex_sim: KiiexSimulator,
    redis_server: RedisServer,
) -> None:
    env = {**KIIEX_ENV, "CANCELGW_REDIS_URL": redis_server.url}
    config = kiiex_gateway_config(kiiex_http.url, redis=True, timeout_seconds=1)
    first = await serve(tmp_path, config, env)
    report = kiiex_sim.add_report()
    release = kiiex_sim.faults.hold("late")  # the cancel lands; its answer is held
    async with grpc.aio.insecure_channel(first.target) as channel:
        stub = gateway_pb2_grpc.CancellationGatewayStub(channel)
        call = asyncio.ensure_future(outcome(stub, report_request(report, "crash-key")))
        await until(lambda: kiiex_sim.calls["CancelUserReport"] == 1, "the cancel reached KIIEX")
        first.process.kill()
        lost = await call
        release.set()
    assert isinstance(lost, grpc.aio.AioRpcError)
    assert await first.process.wait() == -signal.SIGKILL

    second = await serve(tmp_path, config, env)
    async with grpc.aio.insecure_channel(second.target) as channel:
        stub = gateway_pb2_grpc.CancellationGatewayStub(channel)
        retried = await stub.CancelJob(report_request(report, "crash-key"), timeout=30)
    second.process.terminate()
    await second.process.wait()
    assert kiiex_sim.calls["CancelUserReport"] == 1, "at most the one original upstream cancel"
    assert retried.outcome == pb.OUTCOME_CANCELED  # read first: the report is canceled
    assert [a.delivery for a in retried.attempt_history] == [pb.DELIVERY_NO_ANSWER]
    assert retried.attempt_history[0].request_id != retried.request_id  # the dead call's


async def test_two_gateways_sharing_redis_cancel_a_key_once(
    tmp_path: Path,
    kiiex_http: LoopbackServer,
    kiiex_sim: KiiexSimulator,
    redis_server: RedisServer,
) -> None:
    env = {**KIIEX_ENV, "CANCELGW_REDIS_URL": redis_server.url}
    config = kiiex_gateway_config(kiiex_http.url, redis=True)
    gateways: list[Served] = [await serve(tmp_path, config, env) for _ in range(2)]
    report = kiiex_sim.add_report()
    release = kiiex_sim.faults.hold()
    channels = [grpc.aio.insecure_channel(g.target) for g in gateways]
    stubs = [gateway_pb2_grpc.CancellationGatewayStub(c) for c in channels]
    first = asyncio.ensure_future(stubs[0].CancelJob(report_request(report, "shared"), timeout=30))
    await until(lambda: kiiex_sim.calls["CancelUserReport"] == 1, "the first cancel arrived")
    scripts = redis_server.calls("evalsha")
    second = asyncio.ensure_future(stubs[1].CancelJob(report_request(report, "shared"), timeout=30))
    # The second gateway has claimed the key and found it busy, more than once: it waits.
    await until(lambda: redis_server.calls("evalsha") >= scripts + 3, "the second claimed")
    assert kiiex_sim.calls["CancelUserReport"] == 1
    release.set()
    answers = await asyncio.gather(first, second)
    for channel in channels:
        await channel.close()
    for gateway in gateways:
        gateway.process.terminate()
        await gateway.process.wait()
    assert kiiex_sim.calls["CancelUserReport"] == 1
    assert [a.replayed for a in answers] == [False, True]


SECONDS = 10  # a bound for what a drain test awaits, far beyond what it should take


async def test_a_drain_answers_queued_calls_at_once_and_closes_health_watches(
    start_gateway: Any, kiiex_sim: KiiexSimulator, kiiex_http: LoopbackServer
) -> None:
    """One slot, held by a call whose answer the upstream keeps back: the call queued behind
    it gets SHUTTING_DOWN as soon as the drain begins, and an open health Watch gets
    NOT_SERVING and ends, both while the held call is still in flight (neither waits for a
    slot to free, nor holds the shutdown)."""
    connection = kiiex_connection(kiiex_http.url, max_in_flight=1, pool_size=1, timeout_seconds=20)
    config = make_config({"k": connection}, server={"shutdown_grace_seconds": 30})
    stub, server = await start_gateway(config)
    release = kiiex_sim.faults.hold()
    held = asyncio.ensure_future(stub.CancelJob(report_request(kiiex_sim.add_report())))
    await until(lambda: kiiex_sim.calls["CancelUserReport"] >= 1, "the first cancel in flight")
    queued = asyncio.ensure_future(stub.CancelJob(report_request(kiiex_sim.add_report())))
    await until(lambda: server.drain._in_flight >= 2, "the second call queued for the slot")
    channel = grpc.aio.insecure_channel(f"127.0.0.1:{server.port}")
    watch = health_pb2_grpc.HealthStub(channel).Watch(
        health_pb2.HealthCheckRequest(service=SERVICE_NAME)
    )
    assert (await watch.read()).status == health_pb2.HealthCheckResponse.SERVING
    stopping = asyncio.ensure_future(server.stop())
    try:
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await asyncio.wait_for(queued, SECONDS)
        assert rich_error(refused.value).info.reason == "SHUTTING_DOWN"
        statuses = []
        while (response := await asyncio.wait_for(watch.read(), SECONDS)) is not grpc.aio.EOF:
            statuses.append(response.status)
        assert statuses[-1] == health_pb2.HealthCheckResponse.NOT_SERVING  # then it ended
        assert not held.done(), "both came before the held call's answer"
    finally:
        release.set()
    assert (await asyncio.wait_for(held, SECONDS)).outcome == pb.OUTCOME_ACCEPTED
    await asyncio.wait_for(stopping, SECONDS)
    await channel.close()
