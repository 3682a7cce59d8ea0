"""The KIIEX adapter against the simulator in-process: every code-table row, login forms,
session expiry and re-login, confirmation reads."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

import httpx2
import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from adapters.kiiex import CODES, KiiexAdapter, KiiexQuote, KiiexUserReport
from adapters.kiiex.simulator import KiiexSimulator
from adapters.simulation import ManualClock
from adapters.simulation.faults import Fault
from gateway.model import Outcome, Reason, UpstreamReply
from gateway.upstream import ConfirmState
from tests.conftest import kiiex_connection, make_config


def _adapter(transport: httpx2.AsyncBaseTransport, **options: Any) -> KiiexAdapter:
    env = {"KIIEX_USERNAME": "operator", "KIIEX_PASSWORD": "operator-pass", "KEY": "sim-api-key",
           "SECRET": "sim-api-secret"}  # fmt: skip
    config = make_config({"k": kiiex_connection(**options)}, env)
    return KiiexAdapter(config.connections["k"], transport)


@pytest.fixture
async def adapter(kiiex_sim: KiiexSimulator) -> AsyncIterator[KiiexAdapter]:
    adapter = _adapter(httpx2.ASGITransport(app=kiiex_sim.app))
    yield adapter
    await adapter.aclose()


def _envelope(code: int, message: str | None) -> dict[str, Any]:
    return {"result": code == 0, "errormsg": message, "errorcode": code, "detail": None}


ROWS: dict[str, Fault] = {
    "0": Fault("json", payload=_envelope(0, None)),
    "100": Fault("json", payload=_envelope(100, "Invalid Request")),
    "101": Fault("json", payload=_envelope(101, "Operation Failed")),
    "102": Fault("json", payload=_envelope(102, "Server Error")),
    "104": Fault("json", payload=_envelope(104, "Resource Not Found")),
    "106": Fault("json", payload=_envelope(106, "Operation Not Supported")),
    "other": Fault("json", payload=_envelope(103, "Something Else")),
    "HTTP 400": Fault("http_status", status=400),
    "HTTP 429": Fault("http_status", status=429, payload={"message": "slow down"}),
    "TOO MANY REQUESTS": Fault("rate_limited", seconds=3),
    "HTTP 5xx": Fault("http_status", status=503),
    "HTTP other": Fault("http_status", status=418),
    "unreadable": Fault("garbage"),
}

# Rows that stand for a class of signals show the caller the exact one.
SHOWN_CODES = {
    "other": "103",
    "HTTP 5xx": "HTTP 503",
    "HTTP other": "HTTP 418",
    "TOO MANY REQUESTS": "HTTP 429",
}


async def _cancel(adapter: KiiexAdapter, sim: KiiexSimulator) -> UpstreamReply:
    return await adapter.cancel(KiiexUserReport(sim.add_report()), timeout=5.0)


@pytest.mark.parametrize("code", sorted(ROWS))
async def test_each_code_row_normalizes_as_its_table_says(
    adapter: KiiexAdapter, kiiex_sim: KiiexSimulator, code: str
) -> None:
    kiiex_sim.faults.inject(ROWS[code])
    reply = await _cancel(adapter, kiiex_sim)
    (leg,) = reply.legs
    verdict = CODES[code]
    assert (leg.leg, leg.outcome, leg.reason, leg.retryable) == (
        "report",
        verdict.outcome,
        verdict.reason,
        verdict.retryable,
    )
    assert leg.upstream_code == SHOWN_CODES.get(code, code)


def test_every_table_row_has_a_test() -> None:
    # unreachable, timeout, misconfigured: test_normalizer_properties.py, for every adapter.
    tested = {*ROWS, "20", "HTTP 401", "unreachable", "timeout", "misconfigured"}
    assert tested == set(CODES)


async def test_rate_limit_keeps_retry_after(
    adapter: KiiexAdapter, kiiex_sim: KiiexSimulator
) -> None:
    kiiex_sim.faults.inject(Fault("rate_limited", seconds=3))
    reply = await _cancel(adapter, kiiex_sim)
    assert reply.retry_after == 3.0


async def test_real_report_is_accepted_then_cancelled(
    adapter: KiiexAdapter, kiiex_sim: KiiexSimulator
) -> None:
    report = kiiex_sim.add_report()
    reply = await adapter.cancel(KiiexUserReport(report), timeout=5.0)
    assert reply.legs[0].outcome is Outcome.ACCEPTED
    assert kiiex_sim.report_status(report) == "UserCancelled"
    (check,) = await adapter.confirm(KiiexUserReport(report), timeout=5.0)
    assert check.state is ConfirmState.CONFIRMED


async def test_pending_cancel_is_not_yet_confirmed(clock: ManualClock) -> None:
    sim = KiiexSimulator(clock=clock, cancel_settle_seconds=30)
    adapter = _adapter(httpx2.ASGITransport(app=sim.app))
    report = sim.add_report()
    await adapter.cancel(KiiexUserReport(report), timeout=5.0)
    (pending,) = await adapter.confirm(KiiexUserReport(report), timeout=5.0)
    clock.advance(31)
    (settled,) = await adapter.confirm(KiiexUserReport(report), timeout=5.0)
    assert (pending.state, settled.state) == (ConfirmState.PENDING, ConfirmState.CONFIRMED)
    await adapter.aclose()


async def test_finished_report_refutes_confirmation(
    adapter: KiiexAdapter, kiiex_sim: KiiexSimulator
) -> None:
    report = kiiex_sim.add_report(status="Completed")
    (check,) = await adapter.confirm(KiiexUserReport(report), timeout=5.0)
    assert check.state is ConfirmState.REFUTED
    assert "Completed" in check.detail


async def test_one_login_serves_many_calls(
    adapter: KiiexAdapter, kiiex_sim: KiiexSimulator
) -> None:
    for _ in range(3):
        await _cancel(adapter, kiiex_sim)
    assert kiiex_sim.login_count == 1


@pytest.mark.parametrize("style", ["errorcode", "http401"])
async def test_expired_session_logs_in_again_once(clock: ManualClock, style: Any) -> None:
    sim = KiiexSimulator(clock=clock, session_ttl=60, unauthorized_style=style)
    adapter = _adapter(httpx2.ASGITransport(app=sim.app))
    await _cancel(adapter, sim)
    clock.advance(61)
    reply = await _cancel(adapter, sim)
    assert reply.legs[0].outcome is Outcome.ACCEPTED
    assert sim.login_count == 2
    await adapter.aclose()


@pytest.mark.parametrize(
    ("fault", "code"),
    [
        (Fault("json", payload=_envelope(20, "Not Authorized")), "20"),
        (Fault("http_status", status=401), "HTTP 401"),
    ],
)
async def test_still_unauthorized_after_relogin_is_unauthorized(
    adapter: KiiexAdapter, kiiex_sim: KiiexSimulator, fault: Fault, code: str
) -> None:
    kiiex_sim.faults.inject(fault, times=2)
    reply = await _cancel(adapter, kiiex_sim)
    assert (reply.legs[0].reason, reply.legs[0].upstream_code) == (Reason.UNAUTHORIZED, code)
    assert kiiex_sim.login_count == 2


async def test_wrong_password_is_unauthorized_with_kiiex_message(kiiex_sim: KiiexSimulator) -> None:
    kiiex_sim.users["operator"] = "changed"
    adapter = _adapter(httpx2.ASGITransport(app=kiiex_sim.app))
    reply = await _cancel(adapter, kiiex_sim)
    assert reply.legs[0].reason is Reason.UNAUTHORIZED
    assert "Invalid username or password" in reply.legs[0].upstream_message
    await adapter.aclose()


async def test_api_key_login_and_custom_token_header(clock: ManualClock) -> None:
    sim = KiiexSimulator(clock=clock, token_header="Authorization", path_prefix="/AP")
    adapter = _adapter(
        httpx2.ASGITransport(app=sim.app),
        token_header="Authorization",
        path_prefix="/AP",
        api_key_env="KEY",
        api_secret_env="SECRET",
        user_id=1,
        username_env=None,
        password_env=None,
    )
    reply = await _cancel(adapter, sim)
    assert reply.legs[0].outcome is Outcome.ACCEPTED
    await adapter.aclose()


async def test_secrets_never_reach_the_reply_body(
    adapter: KiiexAdapter, kiiex_sim: KiiexSimulator
) -> None:
    kiiex_sim.faults.inject(Fault("json", payload={**_envelope(0, None), "SessionToken": "s3cr3t"}))
    reply = await _cancel(adapter, kiiex_sim)
    assert "s3cr3t" not in repr(reply.body)


async def _cancel_quote(adapter: KiiexAdapter, bid: int, ask: int, **ids: int) -> UpstreamReply:
    return await adapter.cancel(
        KiiexQuote(oms_id=1, bid_quote_id=bid, ask_quote_id=ask, **ids), timeout=5.0
    )


@pytest.mark.parametrize("as_strings", [False, True])
async def test_quote_legs_each_normalize_through_the_table(
    clock: ManualClock, as_strings: bool
) -> None:
    sim = KiiexSimulator(clock=clock, quote_results_as_strings=as_strings)
    adapter = _adapter(httpx2.ASGITransport(app=sim.app))
    bid, ask = sim.add_quote_pair(instrument_id=5)
    both = await _cancel_quote(adapter, bid, ask)
    bid2, _ = sim.add_quote_pair(instrument_id=6)
    one = await _cancel_quote(adapter, bid2, 999_999)
    assert [(leg.leg, leg.outcome) for leg in both.legs] == [
        ("bid", Outcome.ACCEPTED), ("ask", Outcome.ACCEPTED)
    ]  # fmt: skip
    assert [(leg.leg, leg.reason, leg.upstream_code) for leg in one.legs] == [
        ("bid", Reason.UNSPECIFIED, "0"), ("ask", Reason.NOT_FOUND, "104")
    ]  # fmt: skip
    assert (sim.quote_state(bid), sim.quote_state(ask)) == (3, 3)
    await adapter.aclose()


async def test_quote_payload_sends_account_and_instrument_only_when_set() -> None:
    bodies: list[dict[str, Any]] = []

    def answer(request: httpx2.Request) -> httpx2.Response:
        if request.url.path.endswith("/AuthenticateUser"):
            return httpx2.Response(200, json={"Authenticated": True, "SessionToken": "t"})
        bodies.append(json.loads(request.content))
        leg = _envelope(0, None)
        return httpx2.Response(200, json={"BidResult": leg, "AskResult": leg})

    adapter = _adapter(httpx2.MockTransport(answer))
    await _cancel_quote(adapter, 11, 12)
    await _cancel_quote(adapter, 11, 12, account_id=7, instrument_id=3)
    assert bodies == [
        {"omsId": 1, "bidQuoteId": 11, "askQuoteId": 12},
        {"omsId": 1, "bidQuoteId": 11, "askQuoteId": 12, "accountId": 7, "instrumentId": 3},
    ]


async def test_quote_confirmation_reads_open_quotes(
    adapter: KiiexAdapter, kiiex_sim: KiiexSimulator
) -> None:
    bid, ask = kiiex_sim.add_quote_pair(instrument_id=5)
    job = KiiexQuote(oms_id=1, bid_quote_id=bid, ask_quote_id=ask, instrument_id=5)
    before = await adapter.confirm(job, timeout=5.0)
    await adapter.cancel(job, timeout=5.0)
    after = await adapter.confirm(job, timeout=5.0)
    assert [check.state for check in before] == [ConfirmState.ACTIVE, ConfirmState.ACTIVE]
    assert [check.state for check in after] == [ConfirmState.CONFIRMED, ConfirmState.CONFIRMED]


async def test_quote_without_instrument_cannot_be_confirmed(
    adapter: KiiexAdapter, kiiex_sim: KiiexSimulator
) -> None:
    bid, ask = kiiex_sim.add_quote_pair()
    checks = await adapter.confirm(
        KiiexQuote(oms_id=1, bid_quote_id=bid, ask_quote_id=ask), timeout=5.0
    )
    assert all(check.state is ConfirmState.PENDING for check in checks)
    assert "instrument" in checks[0].detail


async def test_a_request_level_envelope_on_cancel_quote_maps_as_the_table_says(
    adapter: KiiexAdapter, kiiex_sim: KiiexSimulator
) -> None:
    bid, ask = kiiex_sim.add_quote_pair()
    reply = await adapter.cancel(
        KiiexQuote(oms_id=2, bid_quote_id=bid, ask_quote_id=ask), timeout=5.0
    )
    assert [(leg.leg, leg.outcome, leg.reason, leg.upstream_code) for leg in reply.legs] == [
        ("bid", Outcome.FAILED, Reason.INVALID_REQUEST, "100"),
        ("ask", Outcome.FAILED, Reason.INVALID_REQUEST, "100"),
    ]


def _answering(envelope: dict[str, Any], status: int) -> tuple[httpx2.MockTransport, list[str]]:
    """Logs in, then answers every call with `envelope`; records the functions called."""
    called: list[str] = []

    def answer(request: httpx2.Request) -> httpx2.Response:
        function = request.url.path.rsplit("/", 1)[-1]
        called.append(function)
        if function == "AuthenticateUser":
            return httpx2.Response(200, json={"Authenticated": True, "SessionToken": "t"})
        return httpx2.Response(status, json=envelope)

    return httpx2.MockTransport(answer), called


DOCUMENTED = sorted(code for code in CODES if code.isdigit())


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    code=st.sampled_from(DOCUMENTED),
    message=st.none() | st.text(max_size=20),
    detail=st.none() | st.text(max_size=20),
    status=st.sampled_from([200, 400, 500, 503]),
)
async def test_a_top_level_envelope_maps_the_same_on_both_cancel_calls(
    code: str, message: str | None, detail: str | None, status: int
) -> None:
    assume(status == 200 or code != "0")  # an error status with a success body: status rules
    envelope = {"result": code == "0", "errormsg": message, "errorcode": int(code)}
    envelope["detail"] = detail
    seen = []
    for job in (KiiexUserReport(REPORT_ID), KiiexQuote(oms_id=1, bid_quote_id=1, ask_quote_id=2)):
        transport, called = _answering(envelope, status)
        adapter = _adapter(transport)
        reply = await adapter.cancel(job, timeout=5.0)
        await adapter.aclose()
        seen.append({(g.outcome, g.reason, g.retryable, g.upstream_code) for g in reply.legs})
        # errorcode 20 is answered with exactly one fresh login and one repeat, on both calls
        assert called.count("AuthenticateUser") == (2 if code == "20" else 1)
    report, quote = seen
    assert report == quote
    verdict = CODES[code]
    assert report == {(verdict.outcome, verdict.reason, verdict.retryable, code)}


REPORT_ID = "8e3a7f52-1c9d-4b6e-a0f4-2d5b9c7e1a30"


@pytest.mark.parametrize("status", [500, 503])
async def test_an_undocumented_errorcode_on_a_server_error_is_the_status(status: int) -> None:
    transport, _ = _answering({"result": False, "errorcode": 777, "errormsg": "?"}, status)
    adapter = _adapter(transport)
    (leg,) = (await adapter.cancel(KiiexUserReport(REPORT_ID), timeout=5.0)).legs
    await adapter.aclose()
    assert (leg.reason, leg.retryable, leg.upstream_code) == (
        Reason.UPSTREAM_ERROR, True, f"HTTP {status}"
    )  # fmt: skip


async def test_an_undocumented_errorcode_on_http_200_is_other() -> None:
    transport, _ = _answering({"result": False, "errorcode": 777, "errormsg": "?"}, 200)
    adapter = _adapter(transport)
    (leg,) = (await adapter.cancel(KiiexUserReport(REPORT_ID), timeout=5.0)).legs
    await adapter.aclose()
    assert (leg.reason, leg.retryable, leg.upstream_code) == (Reason.UPSTREAM_ERROR, False, "777")


async def test_a_quote_whose_one_leg_landed_is_not_sent_again_after_a_refused_leg() -> None:
    """Errorcode 20 beside a 0: the bid was canceled; a new login and a resend of the whole
    quote would cancel it twice (and a resend that failed to connect would say NOT_SENT of a
    leg that landed)."""
    sent: list[str] = []

    def answer(request: httpx2.Request) -> httpx2.Response:
        sent.append(request.url.path)
        if request.url.path.endswith("/AuthenticateUser"):
            return httpx2.Response(200, json={"Authenticated": True, "SessionToken": "t"})
        legs = {"BidResult": _envelope(0, None), "AskResult": _envelope(20, "Not Authorized")}
        return httpx2.Response(200, json=legs)

    adapter = _adapter(httpx2.MockTransport(answer))
    reply = await adapter.cancel(KiiexQuote(oms_id=1, bid_quote_id=1, ask_quote_id=2), timeout=1.0)
    await adapter.aclose()
    assert sent == ["/ap/AuthenticateUser", "/ap/CancelQuote"]  # once, no re-login
    assert [(leg.leg, leg.outcome) for leg in reply.legs] == [
        ("bid", Outcome.ACCEPTED), ("ask", Outcome.FAILED)
    ]  # fmt: skip
