"""Property: whatever an upstream answers (any JSON or bytes, any status, any headers), or
when it does not answer at all, the adapter returns a well-formed reply and never raises."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import replace
from typing import Any

import httpx2
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from adapters.kiiex import KiiexAdapter, KiiexQuote, KiiexUserReport
from adapters.zuora import ZuoraAdapter, ZuoraReportRun
from cancellation.v1 import gateway_pb2
from gateway.jobs import Job
from gateway.model import CancelResult, Outcome, Reason, UpstreamReply
from gateway.rpc.envelope import response_to_proto
from gateway.upstream import Adapter
from tests.conftest import kiiex_connection, make_config, zuora_connection

# Lone surrogates included: upstreams send them (as \ud800 escapes) and protobuf refuses them.
any_text = st.text(st.characters(exclude_categories=()), max_size=20)
json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False, allow_infinity=False)
    | any_text,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(any_text, inner, max_size=4),
    max_leaves=30,
)
# Bodies shaped like the real ones are likelier to reach deep branches than random JSON.
envelope_like = st.fixed_dictionaries(
    {},
    optional={
        "result": st.booleans() | st.none(),
        "errorcode": st.integers(-5, 200) | st.text(max_size=4),
        "errormsg": any_text | st.none(),
        "success": st.booleans() | st.none(),
        "response": st.text(max_size=40) | json_values,
        "reasons": st.lists(
            st.fixed_dictionaries({}, optional={"code": st.integers() | st.text(max_size=9),
                                                "message": st.text(max_size=10)}),
            max_size=2,
        ),
    },
)  # fmt: skip
bodies = st.one_of(
    json_values.map(lambda v: ("json", v)),
    envelope_like.map(lambda v: ("json", v)),
    st.fixed_dictionaries(
        {"BidResult": envelope_like | st.text(max_size=30), "AskResult": json_values}
    ).map(lambda v: ("json", v)),
    st.binary(max_size=60).map(lambda v: ("bytes", v)),
)
headers = st.dictionaries(
    st.sampled_from(["retry-after", "content-type", "content-encoding", "x-other"]),
    st.sampled_from(["gzip", "deflate", "identity", "3", "-1", "nan"])
    | st.text(st.characters(min_codepoint=32, max_codepoint=126), max_size=12),
    max_size=4,
)
answers = st.tuples(st.integers(200, 599), bodies, headers)


def _transport(answer: tuple[int, tuple[str, Any], dict[str, str]]) -> httpx2.MockTransport:
    status, (kind, body), extra = answer

    def respond(request: httpx2.Request) -> httpx2.Response:
        path = request.url.path
        if path.endswith("/AuthenticateUser"):
            return httpx2.Response(200, json={"Authenticated": True, "SessionToken": "t"})
        if path == "/oauth/token":
            return httpx2.Response(200, json={"access_token": "t", "expires_in": 3600})
        if kind == "json":
            return httpx2.Response(status, json=body, headers=extra)
        return httpx2.Response(status, content=body, headers=extra)

    return httpx2.MockTransport(respond)


def _run(
    make: Callable[[httpx2.AsyncBaseTransport], Adapter], job: Job, answer: Any
) -> UpstreamReply:
    async def call() -> UpstreamReply:
        adapter = make(_transport(answer))
        try:
            return await adapter.cancel(job, timeout=1.0)
        finally:
            await adapter.aclose()

    return asyncio.run(call())


def _assert_well_formed(reply: UpstreamReply, legs: list[str]) -> None:
    assert [leg.leg for leg in reply.legs] == legs
    for leg in reply.legs:
        assert isinstance(leg.outcome, Outcome)
        assert isinstance(leg.reason, Reason)
        assert isinstance(leg.upstream_code, str)
        assert leg.upstream_code
    assert reply.retry_after is None or reply.retry_after >= 0
    # ... and it reaches the caller: the envelope serializes and a client parses it back.
    result = CancelResult(Outcome.FAILED, Reason.UNSPECIFIED, False, "", "up", "op", reply.legs)
    wire = response_to_proto(replace(result, upstream_response=reply.body)).SerializeToString()
    assert len(gateway_pb2.CancelJobResponse.FromString(wire).legs) == len(legs)


def _kiiex(transport: httpx2.AsyncBaseTransport) -> Adapter:
    return KiiexAdapter(make_config({"k": kiiex_connection()}).connections["k"], transport)


def _zuora(transport: httpx2.AsyncBaseTransport) -> Adapter:
    return ZuoraAdapter(make_config({"z": zuora_connection()}).connections["z"], transport)


PROPERTY = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@PROPERTY
@given(answers)
def test_kiiex_user_report_any_answer_is_an_envelope(answer: Any) -> None:
    reply = _run(_kiiex, KiiexUserReport("8e3a7f52-1c9d-4b6e-a0f4-2d5b9c7e1a30"), answer)
    _assert_well_formed(reply, ["report"])


@PROPERTY
@given(answers)
def test_kiiex_quote_any_answer_is_an_envelope(answer: Any) -> None:
    reply = _run(_kiiex, KiiexQuote(oms_id=1, bid_quote_id=1, ask_quote_id=2), answer)
    _assert_well_formed(reply, ["bid", "ask"])


@PROPERTY
@given(answers)
def test_zuora_any_answer_is_an_envelope(answer: Any) -> None:
    reply = _run(_zuora, ZuoraReportRun("ff808081529f4e3401529fd61f080074"), answer)
    _assert_well_formed(reply, ["report_run"])


ADAPTERS = [
    (_kiiex, KiiexUserReport("8e3a7f52-1c9d-4b6e-a0f4-2d5b9c7e1a30")),
    (_kiiex, KiiexQuote(oms_id=1, bid_quote_id=1, ask_quote_id=2)),
    (_zuora, ZuoraReportRun("ff808081529f4e3401529fd61f080074")),
]


@pytest.mark.parametrize(("make", "job"), ADAPTERS)
@pytest.mark.parametrize(
    ("error", "code", "reason"),
    [
        (httpx2.ConnectError("refused"), "unreachable", Reason.UPSTREAM_UNAVAILABLE),
        (httpx2.RemoteProtocolError("reset"), "unreachable", Reason.UPSTREAM_UNAVAILABLE),
        (httpx2.ReadTimeout("slow"), "timeout", Reason.TIMEOUT),
        # No connection in time (the pool's wait covers connecting): nothing was sent.
        (httpx2.PoolTimeout("pool"), "unreachable", Reason.UPSTREAM_UNAVAILABLE),
    ],
)
async def test_no_answer_is_a_retryable_failure_on_every_leg(
    make: Callable[[httpx2.AsyncBaseTransport], Adapter],
    job: Job,
    error: Exception,
    code: str,
    reason: Reason,
) -> None:
    def fail(request: httpx2.Request) -> httpx2.Response:
        raise error

    adapter = make(httpx2.MockTransport(fail))
    reply = await adapter.cancel(job, timeout=1.0)
    await adapter.aclose()
    assert reply.legs
    assert {(leg.outcome, leg.reason, leg.retryable, leg.upstream_code) for leg in reply.legs} == {
        (Outcome.FAILED, reason, True, code)
    }


@pytest.mark.parametrize(("make", "job"), ADAPTERS)
async def test_a_redirect_is_the_connections_misconfiguration_location_shown(
    make: Callable[[httpx2.AsyncBaseTransport], Adapter], job: Job
) -> None:
    def moved(request: httpx2.Request) -> httpx2.Response:
        return httpx2.Response(302, headers={"location": "https://elsewhere.example/api"})

    adapter = make(httpx2.MockTransport(moved))
    reply = await adapter.cancel(job, timeout=1.0)
    await adapter.aclose()
    assert {(leg.reason, leg.retryable, leg.upstream_code) for leg in reply.legs} == {
        (Reason.CONNECTION_MISCONFIGURED, False, "misconfigured")
    }
    assert all("https://elsewhere.example/api" in leg.upstream_message for leg in reply.legs)
