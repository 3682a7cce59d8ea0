"""Whether a cancel can have landed: each adapter says NOT_SENT, NO_ANSWER or ANSWERED for
every way a call ends, and the read APIs say what they see."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import httpx2
import pytest

from adapters.kiiex import KiiexAdapter, KiiexQuote, KiiexUserReport
from adapters.zuora import ZuoraAdapter, ZuoraReportRun
from gateway.jobs import JobKind
from gateway.model import Delivery, Outcome, Reason
from gateway.upstream import Adapter, ConfirmState
from tests.conftest import kiiex_connection, make_config, zuora_connection

REPORT = KiiexUserReport("8e3a7f52-1c9d-4b6e-a0f4-2d5b9c7e1a30")
RUN = ZuoraReportRun("ff808081529f4e3401529fd61f080074")
LOGIN_PATHS = ("/ap/AuthenticateUser", "/oauth/token")
Answer = Callable[[httpx2.Request], Any]


def _login(request: httpx2.Request) -> httpx2.Response:
    if request.url.path == "/oauth/token":
        return httpx2.Response(200, json={"access_token": "t", "expires_in": 3600})
    return httpx2.Response(200, json={"Authenticated": True, "SessionToken": "t"})


def _adapters(cancel: Answer, login: Answer = _login) -> list[tuple[Adapter, JobKind]]:
    async def answer(request: httpx2.Request) -> httpx2.Response:
        handler = login if request.url.path in LOGIN_PATHS else cancel
        result = handler(request)
        return await result if asyncio.iscoroutine(result) else result  # type: ignore[no-any-return]

    transport = httpx2.MockTransport(answer)
    config = make_config({"k": kiiex_connection(), "z": zuora_connection()})
    return [
        (KiiexAdapter(config.connections["k"], transport), REPORT),
        (ZuoraAdapter(config.connections["z"], transport), RUN),
    ]


def _raising(error: type[httpx2.TransportError]) -> Answer:
    def answer(request: httpx2.Request) -> httpx2.Response:
        raise error("boom", request=request)

    return answer


async def _hang(request: httpx2.Request) -> httpx2.Response:
    await asyncio.Event().wait()
    raise AssertionError("unreachable")


@pytest.mark.parametrize(
    ("cancel", "delivery"),
    [
        (_raising(httpx2.ConnectError), Delivery.NOT_SENT),
        (_raising(httpx2.ConnectTimeout), Delivery.NOT_SENT),
        (_raising(httpx2.PoolTimeout), Delivery.NOT_SENT),
        (_raising(httpx2.ReadTimeout), Delivery.NO_ANSWER),
        (_raising(httpx2.ReadError), Delivery.NO_ANSWER),
        (_raising(httpx2.RemoteProtocolError), Delivery.NO_ANSWER),
        (_raising(httpx2.WriteError), Delivery.NO_ANSWER),
        (_hang, Delivery.NO_ANSWER),  # the whole-call budget ran out while it was on its way
        (lambda r: httpx2.Response(200, text="<html>oops</html>"), Delivery.NO_ANSWER),
        (lambda r: httpx2.Response(503, text="Service Unavailable"), Delivery.ANSWERED),
        (lambda r: httpx2.Response(404, text="Not Found"), Delivery.ANSWERED),
    ],
    ids=["connect", "connect-timeout", "pool", "read-timeout", "read", "protocol", "write",
         "hang", "garbage-200", "503", "404"],
)  # fmt: skip
async def test_delivery_of_the_cancel(cancel: Answer, delivery: Delivery) -> None:
    for adapter, job in _adapters(cancel):
        reply = await adapter.cancel(job, timeout=0.3)
        await adapter.aclose()
        assert reply.delivery is delivery, type(adapter).__name__
        assert all(leg.outcome is Outcome.FAILED for leg in reply.legs)


@pytest.mark.parametrize(
    "login",
    [_raising(httpx2.ConnectError), _raising(httpx2.ReadTimeout), _hang,
     lambda r: httpx2.Response(503, text="down")],
    ids=["connect", "read-timeout", "hang", "503"],
)  # fmt: skip
async def test_a_failed_login_means_the_cancel_was_never_sent(login: Answer) -> None:
    sent: list[httpx2.Request] = []

    def cancel(request: httpx2.Request) -> httpx2.Response:
        sent.append(request)
        return httpx2.Response(200, json={})

    for adapter, job in _adapters(cancel, login):
        reply = await adapter.cancel(job, timeout=0.3)
        await adapter.aclose()
        assert reply.delivery is Delivery.NOT_SENT, type(adapter).__name__
    assert sent == []


async def test_zuora_success_with_an_unknown_text_may_have_landed() -> None:
    answer = lambda r: httpx2.Response(200, json={"success": True, "response": "done?"})  # noqa: E731
    adapter, job = _adapters(answer)[1]
    reply = await adapter.cancel(job, timeout=1.0)
    await adapter.aclose()
    assert (reply.legs[0].reason, reply.delivery) == (
        Reason.BAD_UPSTREAM_RESPONSE, Delivery.NO_ANSWER
    )  # fmt: skip


@pytest.mark.parametrize(
    ("status", "body", "state"),
    [
        (200, {"success": True, "response": {"id": RUN.report_run_id, "status": "CANCELLED"}},
         ConfirmState.CONFIRMED),
        (200, {"success": True, "response": {"status": "CANCELED"}}, ConfirmState.CONFIRMED),
        (200, {"success": True, "response": {"status": "PROCESSINGDATA"}}, ConfirmState.ACTIVE),
        (200, {"success": True, "response": {"status": "COMPLETED"}}, ConfirmState.REFUTED),
        (200, {"success": True, "response": {"status": "SOMETHING"}}, ConfirmState.PENDING),
        (404, {"success": False, "reasons": [{"code": 50000040, "message": "no"}]},
         ConfirmState.REFUTED),
        (200, {"success": False, "reasons": [{"code": 50000040, "message": "no"}]},
         ConfirmState.REFUTED),
        (500, {"oops": 1}, ConfirmState.PENDING),
        (200, ["not", "an", "object"], ConfirmState.PENDING),
    ],
)  # fmt: skip
async def test_zuora_reads_the_run_to_confirm(
    status: int, body: object, state: ConfirmState
) -> None:
    seen: list[httpx2.Request] = []

    def read(request: httpx2.Request) -> httpx2.Response:
        seen.append(request)
        return httpx2.Response(status, json=body)

    adapter, job = _adapters(read)[1]
    (check,) = await adapter.confirm(job, timeout=1.0)
    await adapter.aclose()
    assert check.state is state
    assert (seen[0].method, seen[0].url.path) == (
        "GET", f"/api/rest/v1/reportruns/{RUN.report_run_id}"
    )  # fmt: skip


def _quote_answer(status: int, bid: object, ask: object, **headers: str) -> Answer:
    return lambda r: httpx2.Response(
        status, json={"BidResult": bid, "AskResult": ask}, headers=headers
    )


def _generic(code: int) -> dict[str, object]:
    return {"result": code == 0, "errorcode": code, "errormsg": None, "detail": None}


QUOTE = KiiexQuote(oms_id=1, bid_quote_id=1, ask_quote_id=2)


async def test_kiiex_429_is_rate_limited_whatever_the_body_and_keeps_retry_after() -> None:
    answer = _quote_answer(429, _generic(102), _generic(102), **{"Retry-After": "30"})
    adapter, _ = _adapters(answer)[0]
    reply = await adapter.cancel(QUOTE, timeout=1.0)
    await adapter.aclose()
    assert {leg.reason for leg in reply.legs} == {Reason.RATE_LIMITED}
    assert reply.retry_after == 30


async def test_kiiex_documented_codes_on_a_503_keep_its_retry_after() -> None:
    answer = _quote_answer(503, _generic(102), _generic(102), **{"Retry-After": "7"})
    adapter, _ = _adapters(answer)[0]
    reply = await adapter.cancel(QUOTE, timeout=1.0)
    await adapter.aclose()
    assert [leg.upstream_code for leg in reply.legs] == ["102", "102"]
    assert reply.retry_after == 7


async def test_kiiex_a_leg_saying_0_on_an_error_status_keeps_its_word() -> None:
    adapter, _ = _adapters(_quote_answer(500, _generic(104), _generic(0)))[0]
    reply = await adapter.cancel(QUOTE, timeout=1.0)
    await adapter.aclose()
    assert [(leg.outcome, leg.reason) for leg in reply.legs] == [
        (Outcome.FAILED, Reason.NOT_FOUND), (Outcome.ACCEPTED, Reason.UNSPECIFIED)
    ]  # fmt: skip


@pytest.mark.parametrize(
    "body",
    [
        {"result": False, "errorcode": 20, "errormsg": "Not Authorized", "detail": None},
        {"result": False, "errorcode": 102, "errormsg": "Server Error", "detail": None},
        {"bid": {}},
        [],
    ],
)
async def test_kiiex_an_open_quotes_answer_without_both_sides_confirms_nothing(
    body: object,
) -> None:
    """A generic error envelope from GetOpenQuotes (found by the chaos run) once read as
    "no quote is open any more": CANCELED for a quote nobody had canceled."""
    adapter, _ = _adapters(lambda r: httpx2.Response(200, json=body))[0]
    quote = KiiexQuote(oms_id=1, bid_quote_id=1, ask_quote_id=2, instrument_id=1, account_id=7)
    checks = await adapter.confirm(quote, timeout=1.0)
    await adapter.aclose()
    assert {check.state for check in checks} == {ConfirmState.PENDING}
