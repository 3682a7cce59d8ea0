"""Quotes and Zuora runs end to end, on the embedded default (`cancelgw sandbox`): real gRPC
into the gateway, real loopback HTTP out to both simulators. One sandbox serves the whole
module (starting and draining one costs most of a second); each test seeds its own jobs and
compares counters before and after."""

from __future__ import annotations

from collections.abc import AsyncIterator

import grpc
import pytest
import pytest_asyncio

from cancellation.v1 import gateway_pb2 as pb
from cancellation.v1 import gateway_pb2_grpc
from gateway.app.sandbox import Sandbox, sandbox
from tests.grpc_helpers import rich_error

Stub = gateway_pb2_grpc.CancellationGatewayStub
pytestmark = pytest.mark.asyncio(loop_scope="module")


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def box() -> AsyncIterator[Sandbox]:
    async with sandbox() as running:
        yield running


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def stub(box: Sandbox) -> AsyncIterator[Stub]:
    async with grpc.aio.insecure_channel(box.target) as channel:
        yield gateway_pb2_grpc.CancellationGatewayStub(channel)


def _quote(bid: int, ask: int, **fields: int) -> pb.CancelJobRequest:
    quote = pb.KiiexQuote(oms_id=1, bid_quote_id=bid, ask_quote_id=ask, **fields)
    return pb.CancelJobRequest(kiiex_quote=quote)


def _run(run_id: str) -> pb.CancelJobRequest:
    return pb.CancelJobRequest(zuora_report_run=pb.ZuoraReportRun(report_run_id=run_id))


def _legs(response: pb.CancelJobResponse) -> list[tuple[str, int, int]]:
    return [(leg.leg, leg.outcome, leg.reason) for leg in response.legs]


async def test_quote_with_both_legs_open_is_accepted_with_two_legs(
    stub: Stub, box: Sandbox
) -> None:
    bid, ask = box.simulators["kiiex"].add_quote_pair(instrument_id=9)
    response = await stub.CancelJob(_quote(bid, ask))
    assert (response.outcome, response.operation) == (pb.OUTCOME_ACCEPTED, "CancelQuote")
    assert _legs(response) == [
        ("bid", pb.OUTCOME_ACCEPTED, pb.REASON_UNSPECIFIED),
        ("ask", pb.OUTCOME_ACCEPTED, pb.REASON_UNSPECIFIED),
    ]


async def test_quote_with_one_leg_unknown_is_partial(stub: Stub, box: Sandbox) -> None:
    bid, _ = box.simulators["kiiex"].add_quote_pair(instrument_id=9)
    response = await stub.CancelJob(_quote(bid, 424242))
    assert (response.outcome, response.reason, response.retryable) == (
        pb.OUTCOME_PARTIAL, pb.REASON_NOT_FOUND, False
    )  # fmt: skip
    assert _legs(response) == [
        ("bid", pb.OUTCOME_ACCEPTED, pb.REASON_UNSPECIFIED),
        ("ask", pb.OUTCOME_FAILED, pb.REASON_NOT_FOUND),
    ]


async def test_quote_confirmation_sees_both_legs_gone(stub: Stub, box: Sandbox) -> None:
    bid, ask = box.simulators["kiiex"].add_quote_pair(instrument_id=4)
    request = _quote(bid, ask, instrument_id=4)
    request.wait_for_confirmation = True
    response = await stub.CancelJob(request)
    assert response.outcome == pb.OUTCOME_CANCELED
    assert [leg.outcome for leg in response.legs] == [pb.OUTCOME_CANCELED] * 2


async def test_invalid_quote_names_every_bad_field(stub: Stub, box: Sandbox) -> None:
    calls = sum(box.simulators["kiiex"].calls.values())
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await stub.CancelJob(_quote(0, -3, account_id=0))
    assert rich_error(raised.value).bad_fields == [
        "kiiex_quote.account_id",
        "kiiex_quote.bid_quote_id",
        "kiiex_quote.ask_quote_id",
    ]
    assert sum(box.simulators["kiiex"].calls.values()) == calls


async def test_zuora_running_run_is_canceled_then_already_canceled(
    stub: Stub, box: Sandbox
) -> None:
    run = box.simulators["zuora"].add_run("STARTED")
    first = await stub.CancelJob(_run(run))
    again = await stub.CancelJob(_run(run))
    assert (first.outcome, first.upstream, first.operation) == (
        pb.OUTCOME_CANCELED, "zuora", "DeleteReportRun"
    )  # fmt: skip
    assert again.outcome == pb.OUTCOME_ALREADY_CANCELED
    assert box.simulators["zuora"].run_status(run) == "CANCELLED"


async def test_zuora_unknown_run_is_not_found(stub: Stub) -> None:
    response = await stub.CancelJob(_run("0123456789abcdef0123456789abcdef"))
    assert (response.outcome, response.reason) == (pb.OUTCOME_FAILED, pb.REASON_NOT_FOUND)
    assert response.legs[0].upstream_code == "50000040"


async def test_zuora_token_expiry_mid_run_is_refreshed_once(stub: Stub, box: Sandbox) -> None:
    await stub.CancelJob(_run(box.simulators["zuora"].add_run()))  # holds a token from here on
    tokens = box.simulators["zuora"].token_count
    for _ in range(3):
        await stub.CancelJob(_run(box.simulators["zuora"].add_run()))
    box.simulators["zuora"].expire_tokens()
    response = await stub.CancelJob(_run(box.simulators["zuora"].add_run()))
    assert response.outcome == pb.OUTCOME_CANCELED
    assert box.simulators["zuora"].token_count == tokens + 1  # one refresh, not one login per call


@pytest.mark.parametrize("run_id", ["../../oauth/token", "FF808081529F4E3401529FD61F080074", ""])
async def test_zuora_bad_run_id_never_reaches_the_upstream(
    stub: Stub, box: Sandbox, run_id: str
) -> None:
    calls = sum(box.simulators["zuora"].calls.values())
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await stub.CancelJob(_run(run_id))
    error = rich_error(raised.value)
    assert (error.code, error.bad_fields) == (
        grpc.StatusCode.INVALID_ARGUMENT, ["zuora_report_run.report_run_id"]
    )  # fmt: skip
    assert sum(box.simulators["zuora"].calls.values()) == calls
