"""Callers can say why and can rehearse, over real gRPC to a gateway whose connections reach
the simulators over loopback HTTP and whose keys live on a real redis-server: a
cancellation_reason lands in the log line and the stored record (a keyed retry with another
reason replays the first call), a validate_only call sends nothing for any job kind, and a
validate_only call is refused exactly as the real one would be."""

from __future__ import annotations

import hashlib
import json
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any

import grpc
import httpx2
import pytest
import redis.asyncio as aioredis

from adapters.kiiex.simulator import KiiexSimulator
from adapters.simulation.loopback import LoopbackServer
from adapters.zuora.simulator import ZuoraSimulator
from cancellation.v1 import gateway_pb2 as pb
from cancellation.v1 import gateway_pb2_grpc
from gateway.app.serve import GatewayServer
from gateway.idempotency import record_key
from tests.conftest import KIIEX_ENV, kiiex_connection, make_config, zuora_connection
from tests.grpc_helpers import report_request, rich_error
from tests.redis_server import RedisServer

TOKEN, REPORTS_ONLY, SLOW = "ops-token", "reports-token", "slow-token"
Stub = gateway_pb2_grpc.CancellationGatewayStub


def _bearer(token: str) -> tuple[tuple[str, str], ...]:
    return (("authorization", f"Bearer {token}"),)


def _digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


@dataclass
class Rig:
    stub: Stub
    server: GatewayServer
    kiiex: KiiexSimulator
    zuora: ZuoraSimulator
    redis: aioredis.Redis

    def upstream_calls(self) -> int:
        """Every request either simulator saw, logins included."""
        return sum(self.kiiex.calls.values()) + sum(self.zuora.calls.values())


@pytest.fixture
async def rig(start_gateway: Callable[..., Any], redis_server: RedisServer) -> AsyncIterator[Rig]:
    kiiex, zuora = KiiexSimulator(), ZuoraSimulator()
    callers = [
        {"name": "ops", "token_sha256": _digest(TOKEN),
         "jobs": ["kiiex_user_report", "kiiex_quote", "zuora_report_run"],
         "rate_per_second": 1000, "burst": 1000},
        {"name": "reports", "token_sha256": _digest(REPORTS_ONLY), "jobs": ["kiiex_user_report"]},
        {"name": "slow", "token_sha256": _digest(SLOW), "jobs": ["kiiex_user_report"],
         "rate_per_second": 0.001, "burst": 1},
    ]  # fmt: skip
    async with LoopbackServer(kiiex.app) as k, LoopbackServer(zuora.app) as z:
        config = make_config(
            {"kiiex-main": kiiex_connection(k.url), "zuora-main": zuora_connection(z.url)},
            environ={**KIIEX_ENV, "CANCELGW_REDIS_URL": redis_server.url},
            server={"allow_unauthenticated": False},
            idempotency={"store": "redis"},
            callers=callers,
        )
        stub, server = await start_gateway(config)
        client = aioredis.Redis.from_url(redis_server.url, decode_responses=True)
        yield Rig(stub, server, kiiex, zuora, client)
        await client.aclose()


def _cancel_lines(logs: str) -> list[dict[str, Any]]:
    lines = [json.loads(line) for line in logs.splitlines() if line.strip()]
    return [line for line in lines if line.get("message") == "cancel_job"]


async def test_a_reason_is_logged_and_kept_and_a_retry_with_another_replays_the_first(
    rig: Rig, captured_logs: Any
) -> None:
    report = rig.kiiex.add_report()
    first = report_request(report, "key-1", cancellation_reason="  ticket OPS-1234: runaway  ")
    answered = await rig.stub.CancelJob(first, metadata=_bearer(TOKEN), timeout=10)
    assert answered.outcome == pb.OUTCOME_ACCEPTED

    stored = await rig.redis.hget(f"cancelgw:idempotency:{record_key('ops', 'key-1')}", "reason")
    assert stored == "ticket OPS-1234: runaway"  # trimmed
    again = report_request(report, "key-1", cancellation_reason="someone else's reason")
    replayed = await rig.stub.CancelJob(again, metadata=_bearer(TOKEN), timeout=10)
    assert (replayed.replayed, replayed.outcome) == (True, pb.OUTCOME_ACCEPTED)
    assert rig.kiiex.calls["CancelUserReport"] == 1
    assert await rig.redis.hget(
        f"cancelgw:idempotency:{record_key('ops', 'key-1')}", "reason"
    ) == "ticket OPS-1234: runaway"  # fmt: skip

    lines = _cancel_lines(captured_logs.getvalue())
    assert [line["cancellation_reason"] for line in lines] == [
        "ticket OPS-1234: runaway",
        "someone else's reason",
    ]
    metrics = rig.server.metrics.registry
    assert not any(
        "runaway" in str(sample) for family in metrics.collect() for sample in family.samples
    )


@pytest.mark.parametrize(
    ("reason", "says"),
    [("x" * 513, "at most 512 characters"), ("two\nlines", "printable"), ("nul\x00", "printable")],
)
async def test_a_reason_too_long_or_unprintable_names_the_field(
    rig: Rig, reason: str, says: str
) -> None:
    request = report_request("8e3a7f52-1c9d-4b6e-a0f4-2d5b9c7e1a30", cancellation_reason=reason)
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await rig.stub.CancelJob(request, metadata=_bearer(TOKEN), timeout=10)
    error = rich_error(raised.value)
    assert (error.code, error.bad_fields) == (
        grpc.StatusCode.INVALID_ARGUMENT,
        ["cancellation_reason"],
    )
    assert says in error.message
    assert rig.upstream_calls() == 0


def _jobs(rig: Rig) -> dict[str, pb.CancelJobRequest]:
    bid, ask = rig.kiiex.add_quote_pair(instrument_id=9)
    return {
        "CancelUserReport": report_request(rig.kiiex.add_report()),
        "CancelQuote": pb.CancelJobRequest(
            kiiex_quote=pb.KiiexQuote(oms_id=1, bid_quote_id=bid, ask_quote_id=ask)
        ),
        "DeleteReportRun": pb.CancelJobRequest(
            zuora_report_run=pb.ZuoraReportRun(report_run_id=rig.zuora.add_run())
        ),
    }


async def test_a_validate_only_call_sends_nothing_for_every_job_kind(rig: Rig) -> None:
    for operation, request in _jobs(rig).items():
        request.validate_only = True
        request.idempotency_key = f"rehearsal-{operation}"
        response = await rig.stub.CancelJob(request, metadata=_bearer(TOKEN), timeout=10)
        assert response.outcome == pb.OUTCOME_VALIDATED
        assert (response.operation, response.attempts, response.legs) == (operation, 0, [])
        assert response.upstream in ("kiiex", "zuora")
        assert response.message.startswith(f"would cancel {response.upstream} {operation}")
        assert "through connection" in response.message
    assert rig.upstream_calls() == 0  # no cancel, no read, no login
    assert await rig.redis.keys("cancelgw:idempotency:*") == []  # no record
    jobs = rig.server.metrics.registry.get_sample_value(
        "cancelgw_jobs_total",
        {"upstream": "zuora", "operation": "DeleteReportRun", "outcome": "validated",
         "reason": "unspecified"},
    )  # fmt: skip
    assert jobs == 1
    for route in rig.server.router.routes.values():
        assert route.bulkhead.limit == route.settings.max_in_flight
        assert route.breaker.consecutive_failures == 0


async def _refused(
    rig: Rig, request: pb.CancelJobRequest, token: str | None
) -> tuple[grpc.StatusCode, str, list[str]]:
    metadata = _bearer(token) if token else ()
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await rig.stub.CancelJob(request, metadata=metadata, timeout=10)
    error = rich_error(raised.value)
    return error.code, error.info.reason, error.bad_fields


Build = Callable[[], pb.CancelJobRequest]
REFUSALS: dict[str, tuple[Build, str | None]] = {
    "no credentials": (lambda: report_request("8e3a7f52-1c9d-4b6e-a0f4-2d5b9c7e1a30"), None),
    "not permitted": (
        lambda: pb.CancelJobRequest(zuora_report_run=pb.ZuoraReportRun(report_run_id="0" * 32)),
        REPORTS_ONLY,
    ),
    "invalid argument": (lambda: report_request("not-a-guid"), TOKEN),
    "unknown connection": (
        lambda: report_request("8e3a7f52-1c9d-4b6e-a0f4-2d5b9c7e1a30", connection="nowhere"),
        TOKEN,
    ),
}


@pytest.mark.parametrize("name", sorted(REFUSALS))
async def test_a_validate_only_call_is_refused_as_the_real_one(rig: Rig, name: str) -> None:
    build, token = REFUSALS[name]
    rehearsal = build()
    rehearsal.validate_only = True
    assert await _refused(rig, rehearsal, token) == await _refused(rig, build(), token)
    assert rig.upstream_calls() == 0


async def test_a_validate_only_call_spends_the_callers_rate_as_a_real_one(rig: Rig) -> None:
    rehearsal = report_request(rig.kiiex.add_report(), validate_only=True)
    first = await rig.stub.CancelJob(rehearsal, metadata=_bearer(SLOW), timeout=10)
    assert first.outcome == pb.OUTCOME_VALIDATED
    limited = await _refused(rig, rehearsal, SLOW)
    assert limited[:2] == (grpc.StatusCode.RESOURCE_EXHAUSTED, "CALLER_RATE_LIMITED")


async def test_a_draining_gateway_refuses_a_validate_only_call_too(rig: Rig) -> None:
    rig.server.drain.begin()
    rehearsal = report_request(rig.kiiex.add_report(), validate_only=True)
    code, reason, _ = await _refused(rig, rehearsal, TOKEN)
    assert (code, reason) == (grpc.StatusCode.UNAVAILABLE, "SHUTTING_DOWN")


async def test_upstream_response_json_keeps_integers_as_sent(rig: Rig) -> None:
    bid, ask = rig.kiiex.add_quote_pair(instrument_id=9)
    quote = pb.CancelJobRequest(
        kiiex_quote=pb.KiiexQuote(oms_id=1, bid_quote_id=bid, ask_quote_id=ask)
    )
    response = await rig.stub.CancelJob(quote, metadata=_bearer(TOKEN), timeout=10)
    body = json.loads(response.upstream_response_json)
    assert body == json.loads(json.dumps(body))  # valid JSON, round trip
    envelope = (
        body["BidResult"] if isinstance(body["BidResult"], dict) else json.loads(body["BidResult"])
    )
    assert envelope["errorcode"] == 0
    assert isinstance(envelope["errorcode"], int)  # the Struct says 0.0
    assert '"errorcode":0' in response.upstream_response_json.replace(" ", "")


async def test_an_integer_past_a_doubles_precision_survives_in_the_json_text(
    start_gateway: Callable[..., Any],
) -> None:
    """An id of 2^53 + 1 becomes 2^53 in the Struct; the JSON text keeps it exact."""
    big = 2**53 + 1

    def kiiex(request: httpx2.Request) -> httpx2.Response:
        if request.url.path.endswith("/AuthenticateUser"):
            return httpx2.Response(200, json={"Authenticated": True, "SessionToken": "t0k"})
        body = {"result": True, "errormsg": None, "errorcode": 0, "detail": None, "Id": big}
        return httpx2.Response(200, json=body)

    config = make_config({"kiiex-main": kiiex_connection()})
    stub, _ = await start_gateway(config, {"kiiex-main": httpx2.MockTransport(kiiex)})
    response = await stub.CancelJob(report_request("8e3a7f52-1c9d-4b6e-a0f4-2d5b9c7e1a30"))
    assert response.outcome == pb.OUTCOME_ACCEPTED
    assert response.upstream_response["Id"] != big  # a double cannot hold it
    assert json.loads(response.upstream_response_json)["Id"] == big
    assert f'"Id": {big}' in response.upstream_response_json or f'"Id":{big}' in (
        response.upstream_response_json
    )
