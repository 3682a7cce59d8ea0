import base64
import json
import uuid
from collections.abc import AsyncIterator
from typing import Any

import httpx2
import pytest

from adapters.kiiex.simulator import CANCELED, WORKING, KiiexSimulator, api_signature
from adapters.simulation import ManualClock
from adapters.simulation.faults import Fault

NOT_AUTHORIZED = {"result": False, "errormsg": "Not Authorized", "errorcode": 20, "detail": None}


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock()


@pytest.fixture
def sim(clock: ManualClock) -> KiiexSimulator:
    return KiiexSimulator(clock=clock)


@pytest.fixture
async def client(sim: KiiexSimulator) -> AsyncIterator[httpx2.AsyncClient]:
    transport = httpx2.ASGITransport(app=sim.app)
    async with httpx2.AsyncClient(transport=transport, base_url="http://sim") as client:
        yield client


async def login(client: httpx2.AsyncClient) -> str:
    reply = await client.post(
        "/ap/AuthenticateUser", json={"UserName": "operator", "Password": "operator-pass"}
    )
    token = reply.json()["SessionToken"]
    assert isinstance(token, str)
    return token


async def call(client: httpx2.AsyncClient, token: str, function: str, body: object) -> Any:
    reply = await client.post(f"/ap/{function}", json=body, headers={"aptoken": token})
    assert reply.status_code == 200
    return reply.json()


async def test_password_login_opens_a_session(
    sim: KiiexSimulator, client: httpx2.AsyncClient
) -> None:
    reply = await client.post(
        "/ap/AuthenticateUser", json={"UserName": "operator", "Password": "operator-pass"}
    )
    body = reply.json()
    assert body["Authenticated"] is True
    assert body["errormsg"] is None
    assert body["User"] == {"UserId": 1, "UserName": "operator", "AccountId": 7, "OMSId": 1}
    assert sim.login_count == 1
    assert await call(client, body["SessionToken"], "GetUserReportTickets", {"UserId": 1}) == []


async def test_api_key_login_checks_the_signature(client: httpx2.AsyncClient) -> None:
    good = {
        "APIKey": "sim-api-key",
        "UserId": "1",
        "Nonce": "42",
        "Signature": api_signature("sim-api-secret", "42", "1", "sim-api-key"),
    }
    assert (await client.post("/ap/AuthenticateUser", json=good)).json()["User"]["UserId"] == 1
    for bad in ({**good, "Signature": "0" * 64}, {**good, "UserId": 1}, {**good, "UserId": "2"}):
        assert not (await client.post("/ap/AuthenticateUser", json=bad)).json()["Authenticated"]


async def test_bad_password_is_refused_with_http_200(
    sim: KiiexSimulator, client: httpx2.AsyncClient
) -> None:
    reply = await client.post(
        "/ap/AuthenticateUser", json={"UserName": "operator", "Password": "x"}
    )
    assert reply.status_code == 200
    assert reply.json() == {"Authenticated": False, "errormsg": "Invalid username or password"}
    assert sim.login_count == 0


async def test_session_expires_on_the_injected_clock(
    clock: ManualClock, client: httpx2.AsyncClient
) -> None:
    token = await login(client)
    clock.advance(3599.9)
    assert await call(client, token, "GetUserReportTickets", {"UserId": 1}) == []
    clock.advance(0.1)
    assert await call(client, token, "GetUserReportTickets", {"UserId": 1}) == NOT_AUTHORIZED


async def test_expire_sessions_and_missing_token(
    sim: KiiexSimulator, client: httpx2.AsyncClient
) -> None:
    token = await login(client)
    sim.expire_sessions()
    assert await call(client, token, "CancelQuote", {}) == NOT_AUTHORIZED
    reply = await client.post("/ap/CancelQuote", json={})
    assert reply.json() == NOT_AUTHORIZED


async def test_http401_style_sends_the_same_body_with_401() -> None:
    sim = KiiexSimulator(unauthorized_style="http401")
    transport = httpx2.ASGITransport(app=sim.app)
    async with httpx2.AsyncClient(transport=transport, base_url="http://sim") as client:
        reply = await client.post("/ap/CancelUserReport", json={}, headers={"aptoken": "nope"})
    assert reply.status_code == 401
    assert reply.json() == NOT_AUTHORIZED


@pytest.mark.parametrize("body", [{}, {"UserReportId": "not-a-guid"}, {"UserReportId": 5}])
async def test_cancel_report_rejects_non_guids(client: httpx2.AsyncClient, body: object) -> None:
    reply = await call(client, await login(client), "CancelUserReport", body)
    assert (reply["result"], reply["errorcode"], reply["errormsg"]) == (
        False,
        100,
        "Invalid Request",
    )


async def test_cancel_unknown_report_is_not_found(client: httpx2.AsyncClient) -> None:
    body = {"UserReportId": str(uuid.uuid4())}
    reply = await call(client, await login(client), "CancelUserReport", body)
    assert (reply["errorcode"], reply["errormsg"]) == (104, "Resource Not Found")


@pytest.mark.parametrize("status", ["Completed", "Aborted", "SysRetired"])
async def test_cancel_finished_report_fails(
    sim: KiiexSimulator, client: httpx2.AsyncClient, status: str
) -> None:
    report_id = sim.add_report(status=status)
    reply = await call(client, await login(client), "CancelUserReport", {"UserReportId": report_id})
    assert (reply["result"], reply["errorcode"], reply["errormsg"]) == (
        False,
        101,
        "Operation Failed",
    )
    assert sim.report_status(report_id) == status


async def test_cancel_report_settles_lazily_and_is_idempotent(clock: ManualClock) -> None:
    sim = KiiexSimulator(clock=clock, cancel_settle_seconds=5.0)
    transport = httpx2.ASGITransport(app=sim.app)
    report_id = sim.add_report()
    body = {"UserReportId": report_id.upper()}
    async with httpx2.AsyncClient(transport=transport, base_url="http://sim") as client:
        token = await login(client)
        ack = {"result": True, "errormsg": None, "errorcode": 0, "detail": None}
        assert await call(client, token, "CancelUserReport", body) == ack
        assert sim.report_status(report_id) == "UserCancelPending"
        clock.advance(5.0)
        assert sim.report_status(report_id) == "UserCancelled"
        assert await call(client, token, "CancelUserReport", body) == ack


async def test_tickets_carry_the_guid_bytes_as_base64(
    sim: KiiexSimulator, client: httpx2.AsyncClient
) -> None:
    report_id = sim.add_report("0B6C1D2E-3F40-4152-8364-758697A8B9CA", status="InProgress")
    token = await login(client)
    [ticket] = await call(client, token, "GetUserReportTickets", {"UserId": 1})
    assert base64.b64decode(ticket["RequestId"]) == uuid.UUID(report_id).bytes
    assert report_id == "0b6c1d2e-3f40-4152-8364-758697a8b9ca"
    assert ticket["RequestStatus"] == "InProgress"
    assert (ticket["reportFlavor"], ticket["ReportFrequency"]) == ("TradeActivity", "Daily")
    assert ticket["accountIds"] == [7]
    assert await call(client, token, "GetUserReportTickets", {"UserId": 2}) == []


async def test_cancel_quote_cancels_both_legs_and_empties_open_quotes(
    sim: KiiexSimulator, client: httpx2.AsyncClient
) -> None:
    bid, ask = sim.add_quote_pair(instrument_id=3)
    token = await login(client)
    open_request = {"OMSId": 1, "AccountId": 7, "InstrumentId": 3}
    before = await call(client, token, "GetOpenQuotes", open_request)
    assert (before["bid"]["orderId"], before["bid"]["side"]) == (bid, 0)
    assert (before["ask"]["orderId"], before["ask"]["orderState"]) == (ask, WORKING)

    reply = await call(
        client, token, "CancelQuote", {"omsId": 1, "bidQuoteId": bid, "askQuoteId": ask}
    )
    assert reply["BidResult"]["errorcode"] == reply["AskResult"]["errorcode"] == 0
    assert sim.quote_state(bid) == sim.quote_state(ask) == CANCELED
    assert await call(client, token, "GetOpenQuotes", open_request) == {"bid": {}, "ask": {}}


@pytest.mark.parametrize(
    "scope",
    [
        {"accountId": 8},
        {"instrumentId": 4},
    ],
)
async def test_cancel_quote_outside_scope_is_not_found(
    sim: KiiexSimulator, client: httpx2.AsyncClient, scope: dict[str, int]
) -> None:
    bid, ask = sim.add_quote_pair(instrument_id=3)
    body = {"omsId": 1, "bidQuoteId": bid, "askQuoteId": ask, **scope}
    reply = await call(client, await login(client), "CancelQuote", body)
    assert reply["BidResult"]["errorcode"] == reply["AskResult"]["errorcode"] == 104
    assert sim.quote_state(bid) == WORKING


async def test_cancel_quote_legs_are_judged_separately(
    sim: KiiexSimulator, client: httpx2.AsyncClient
) -> None:
    bid, ask = sim.add_quote_pair()
    body = {"omsId": 1, "bidQuoteId": ask, "askQuoteId": ask}
    reply = await call(client, await login(client), "CancelQuote", body)
    assert (reply["BidResult"]["errorcode"], reply["AskResult"]["errorcode"]) == (104, 0)
    assert (sim.quote_state(bid), sim.quote_state(ask)) == (WORKING, CANCELED)


@pytest.mark.parametrize(
    "body", [{"bidQuoteId": 1, "askQuoteId": 2}, {"omsId": 1, "bidQuoteId": "1", "askQuoteId": 2}]
)
async def test_cancel_quote_invalid_request_is_one_top_level_envelope(
    client: httpx2.AsyncClient, body: dict[str, object]
) -> None:
    reply = await call(client, await login(client), "CancelQuote", body)
    assert (reply["result"], reply["errorcode"], reply["errormsg"]) == (
        False,
        100,
        "Invalid Request",
    )
    assert "BidResult" not in reply


async def test_cancel_quote_on_another_oms_is_refused_as_a_whole(
    sim: KiiexSimulator, client: httpx2.AsyncClient
) -> None:
    bid, ask = sim.add_quote_pair()
    body = {"omsId": 2, "bidQuoteId": bid, "askQuoteId": ask}
    reply = await call(client, await login(client), "CancelQuote", body)
    assert (reply["errorcode"], "AskResult" in reply) == (100, False)
    assert sim.quote_state(bid) == WORKING


async def test_quote_results_as_strings() -> None:
    sim = KiiexSimulator(quote_results_as_strings=True)
    bid, ask = sim.add_quote_pair()
    transport = httpx2.ASGITransport(app=sim.app)
    async with httpx2.AsyncClient(transport=transport, base_url="http://sim") as client:
        body = {"omsId": 1, "bidQuoteId": bid, "askQuoteId": ask + 100}
        reply = await call(client, await login(client), "CancelQuote", body)
    assert json.loads(reply["BidResult"])["result"] is True
    assert json.loads(reply["AskResult"])["errorcode"] == 104


async def test_business_fault_skips_login_and_counts_calls(
    sim: KiiexSimulator, client: httpx2.AsyncClient
) -> None:
    sim.faults.inject(Fault("rate_limited", seconds=7), times=2)
    token = await login(client)
    for _ in range(2):
        reply = await client.post("/ap/GetOpenQuotes", json={}, headers={"aptoken": token})
        assert (reply.status_code, reply.text) == (429, "TOO MANY REQUESTS")
        assert reply.headers["Retry-After"] == "7"
    assert len(sim.faults) == 0
    assert sim.calls == {"AuthenticateUser": 1, "GetOpenQuotes": 2}


async def test_auth_fault_hits_login_only(sim: KiiexSimulator, client: httpx2.AsyncClient) -> None:
    sim.faults.inject(Fault("http_status", status=503, auth=True))
    credentials = {"UserName": "operator", "Password": "operator-pass"}
    reply = await client.post("/ap/AuthenticateUser", json=credentials)
    assert (reply.status_code, reply.text) == (503, "Service Unavailable")
    assert await login(client)


@pytest.mark.parametrize(
    ("fault", "status", "text"),
    [
        (Fault("garbage"), 200, "<html>upstream exploded</html>"),
        (Fault("empty"), 200, ""),
        (Fault("http_status", status=502, payload={"oops": 1}), 502, '{"oops":1}'),
        (
            Fault("json", payload={"result": False, "errorcode": 999}),
            200,
            '{"result":false,"errorcode":999}',
        ),
    ],
)
async def test_fault_responses(
    sim: KiiexSimulator, client: httpx2.AsyncClient, fault: Fault, status: int, text: str
) -> None:
    token = await login(client)
    sim.faults.inject(fault)
    reply = await client.post("/ap/CancelQuote", json={}, headers={"aptoken": token})
    assert (reply.status_code, reply.text) == (status, text)


async def test_delay_fault_waits_then_answers(
    sim: KiiexSimulator, client: httpx2.AsyncClient
) -> None:
    slept: list[float] = []

    async def fake_sleep(seconds: float) -> None:
        slept.append(seconds)

    sim.faults.sleep = fake_sleep
    sim.faults.inject(Fault("delay", seconds=2.5))
    assert await call(client, await login(client), "GetUserReportTickets", {"UserId": 1}) == []
    assert slept == [2.5]


async def test_unknown_function_is_a_plain_404(client: httpx2.AsyncClient) -> None:
    assert (await client.post("/ap/NoSuchCall", json={})).status_code == 404
