"""Upstreams that misbehave in ways a parser does not expect: slow drips, bad compression,
odd logins, huge or deeply nested bodies. Each still ends as an envelope, in bounded time."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from typing import Any

import httpx2
import pytest
from google.protobuf import json_format

from adapters.kiiex import KiiexAdapter, KiiexUserReport
from cancellation.v1 import gateway_pb2
from gateway.model import CancelResult, Outcome, Reason
from gateway.rpc.envelope import response_to_proto
from gateway.upstream import ConfirmState
from tests.conftest import kiiex_connection, make_config

REPORT = KiiexUserReport("8e3a7f52-1c9d-4b6e-a0f4-2d5b9c7e1a30")
ACCEPTED = {"result": True, "errormsg": None, "errorcode": 0, "detail": None}
Handler = Callable[[httpx2.Request], Any]


def _kiiex(handler: Handler, **options: Any) -> KiiexAdapter:
    config = make_config({"k": kiiex_connection(**options)})
    return KiiexAdapter(config.connections["k"], httpx2.MockTransport(handler))


def _login_then(answer: Handler, login: dict[str, Any] | None = None) -> Handler:
    async def handle(request: httpx2.Request) -> httpx2.Response:
        if request.url.path.endswith("/AuthenticateUser"):
            return httpx2.Response(200, json=login or {"Authenticated": True, "SessionToken": "t"})
        result = answer(request)
        return await result if asyncio.iscoroutine(result) else result  # type: ignore[no-any-return]

    return handle


async def test_a_slow_drip_is_cut_at_the_whole_call_timeout() -> None:
    async def drip(request: httpx2.Request) -> httpx2.Response:
        await asyncio.sleep(30)  # never reached in full: the adapter's budget ends first
        return httpx2.Response(200, json=ACCEPTED)

    adapter = _kiiex(_login_then(drip))
    started = asyncio.get_running_loop().time()
    (leg,) = (await adapter.cancel(REPORT, timeout=0.2)).legs
    assert (leg.reason, leg.retryable, leg.upstream_code) == (Reason.TIMEOUT, True, "timeout")
    assert asyncio.get_running_loop().time() - started < 5.0
    await adapter.aclose()


async def test_concurrent_calls_share_one_failed_login() -> None:
    logins = 0

    async def refuse_slowly(request: httpx2.Request) -> httpx2.Response:
        nonlocal logins
        logins += 1
        await asyncio.sleep(0.05)
        return httpx2.Response(200, json={"Authenticated": False, "errormsg": "Locked"})

    adapter = _kiiex(refuse_slowly)
    replies = await asyncio.gather(*(adapter.cancel(REPORT, timeout=5.0) for _ in range(8)))
    assert logins == 1
    assert {reply.legs[0].reason for reply in replies} == {Reason.UNAUTHORIZED}
    await adapter.aclose()


@pytest.mark.parametrize(
    ("login", "reason", "retryable"),
    [
        (httpx2.Response(503, text="down"), Reason.UPSTREAM_ERROR, True),
        (httpx2.Response(429, text="TOO MANY REQUESTS"), Reason.RATE_LIMITED, True),
        (
            httpx2.Response(200, json={"result": False, "errorcode": 102}),
            Reason.UPSTREAM_ERROR,
            True,
        ),
        (httpx2.Response(401, json={}), Reason.UNAUTHORIZED, False),
        (httpx2.Response(200, json={"Authenticated": False}), Reason.UNAUTHORIZED, False),
    ],
)
async def test_login_trouble_is_told_apart_from_refused_credentials(
    login: httpx2.Response, reason: Reason, retryable: bool
) -> None:
    adapter = _kiiex(lambda request: login)
    (leg,) = (await adapter.cancel(REPORT, timeout=5.0)).legs
    assert (leg.reason, leg.retryable) == (reason, retryable)
    await adapter.aclose()


async def test_an_unsendable_session_token_never_reaches_the_envelope() -> None:
    token = "sess-TOPSECRET-42\n"
    login = {"Authenticated": True, "SessionToken": token}
    adapter = _kiiex(_login_then(lambda request: httpx2.Response(200, json=ACCEPTED), login))
    reply = await adapter.cancel(REPORT, timeout=5.0)
    assert reply.legs[0].reason is Reason.BAD_UPSTREAM_RESPONSE
    assert "TOPSECRET" not in repr(reply)
    await adapter.aclose()


async def test_bad_compression_is_an_unreadable_answer_not_a_crash() -> None:
    def bad_gzip(request: httpx2.Request) -> httpx2.Response:
        return httpx2.Response(200, content=b"not gzip", headers={"content-encoding": "gzip"})

    adapter = _kiiex(_login_then(bad_gzip))
    (leg,) = (await adapter.cancel(REPORT, timeout=5.0)).legs
    (check,) = await adapter.confirm(REPORT, timeout=5.0)
    assert (leg.outcome, leg.reason) == (Outcome.FAILED, Reason.BAD_UPSTREAM_RESPONSE)
    assert check.state is ConfirmState.PENDING
    await adapter.aclose()


@pytest.mark.parametrize(
    "body",
    [
        {"result": True, "errorcode": 0, "detail": "x" * 5_000_000},
        {"result": True, "errorcode": 0, "detail": list(range(1_000_000))},
        {"result": True, "errorcode": 0, "detail": json.loads("[" * 900 + "]" * 900)},
        {"result": True, "errorcode": 0, "errormsg": "\ud800", "detail": 10**400},
    ],
    ids=["long-text", "long-list", "deep", "surrogate-and-huge-int"],
)
async def test_any_body_fits_a_response_a_client_can_parse(body: dict[str, Any]) -> None:
    text = json.dumps(body).encode()
    adapter = _kiiex(_login_then(lambda request: httpx2.Response(200, content=text)))
    reply = await adapter.cancel(REPORT, timeout=5.0)
    await adapter.aclose()
    result = CancelResult(
        Outcome.ACCEPTED, Reason.UNSPECIFIED, False, "", "kiiex", "CancelUserReport",
        legs=reply.legs, upstream_response=reply.body,
    )  # fmt: skip
    wire = response_to_proto(result).SerializeToString()
    assert len(wire) < 256 * 1024
    assert gateway_pb2.CancelJobResponse.FromString(wire).outcome == gateway_pb2.OUTCOME_ACCEPTED


async def test_numbers_json_cannot_write_stay_text_and_the_envelope_writes_as_json() -> None:
    # Python's parser takes NaN and Infinity, and 1e400 as infinity; none can be written as
    # JSON again (proto3 JSON refuses non-finite numbers: grpcurl, `cancelgw cancel --json`).
    text = b'{"result": false, "errorcode": 104, "errormsg": "x", "detail": NaN, "big": 1e400,'
    text += b' "neg": -Infinity, "fine": 1.5}'
    adapter = _kiiex(_login_then(lambda request: httpx2.Response(200, content=text)))
    reply = await adapter.cancel(REPORT, timeout=5.0)
    await adapter.aclose()
    assert isinstance(reply.body, dict)
    assert (reply.body["detail"], reply.body["big"], reply.body["neg"]) == (
        "NaN", "1e400", "-Infinity"
    )  # fmt: skip
    assert reply.body["fine"] == 1.5
    result = CancelResult(
        Outcome.FAILED, Reason.NOT_FOUND, False, "", "kiiex", "CancelUserReport",
        legs=reply.legs, upstream_response=reply.body,
    )  # fmt: skip
    written = json_format.MessageToJson(response_to_proto(result))
    assert json.loads(written)["upstreamResponse"]["big"] == "1e400"
