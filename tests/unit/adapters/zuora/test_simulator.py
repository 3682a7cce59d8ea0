import re
from collections.abc import AsyncIterator

import httpx2
import pytest

from adapters.simulation import ManualClock
from adapters.simulation.faults import Fault
from adapters.zuora.simulator import ZuoraSimulator

CREDENTIALS = {
    "client_id": "sim-client",
    "client_secret": "sim-secret",
    "grant_type": "client_credentials",
}
NOT_FOUND = {"success": False, "reasons": [{"code": 50000040, "message": "Report run not found"}]}
FINISHED = {
    "success": False,
    "reasons": [{"code": 50000030, "message": "The report run has already finished"}],
}
AUTH_ERROR = {"success": False, "reasons": [{"code": 90000011, "message": "Authentication error"}]}


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock()


@pytest.fixture
def sim(clock: ManualClock) -> ZuoraSimulator:
    return ZuoraSimulator(clock=clock)


@pytest.fixture
async def client(sim: ZuoraSimulator) -> AsyncIterator[httpx2.AsyncClient]:
    """A client already holding a bearer token."""
    transport = httpx2.ASGITransport(app=sim.app)
    async with httpx2.AsyncClient(transport=transport, base_url="http://sim") as client:
        token = (await client.post("/oauth/token", data=CREDENTIALS)).json()["access_token"]
        client.headers["Authorization"] = f"Bearer {token}"
        yield client


def run_url(run_id: str) -> str:
    return f"/api/rest/v1/reportruns/{run_id}"


async def test_token_response_shape(sim: ZuoraSimulator, client: httpx2.AsyncClient) -> None:
    body = (await client.post("/oauth/token", data=CREDENTIALS)).json()
    assert body["token_type"] == "bearer"
    assert body["expires_in"] == 3600
    assert body["scope"] == "entity.1a2b"
    assert body["access_token"]
    assert body["jti"]
    assert sim.token_count == 2


@pytest.mark.parametrize(
    "override", [{"client_secret": "wrong"}, {"grant_type": "password"}, {"client_id": "x"}]
)
async def test_bad_client_credentials_are_401(
    client: httpx2.AsyncClient, override: dict[str, str]
) -> None:
    reply = await client.post("/oauth/token", data={**CREDENTIALS, **override})
    assert reply.status_code == 401
    assert reply.json()["reasons"] == [{"code": 90000011, "message": "Invalid client credentials"}]


async def test_missing_and_expired_tokens_are_401(
    sim: ZuoraSimulator, clock: ManualClock, client: httpx2.AsyncClient
) -> None:
    run_id = sim.add_run()
    assert (await client.get(run_url(run_id))).status_code == 200
    unauthenticated = await client.get(run_url(run_id), headers={"Authorization": ""})
    assert (unauthenticated.status_code, unauthenticated.json()) == (401, AUTH_ERROR)
    clock.advance(3600)
    assert (await client.get(run_url(run_id))).status_code == 401


async def test_expire_tokens(sim: ZuoraSimulator, client: httpx2.AsyncClient) -> None:
    sim.expire_tokens()
    assert (await client.delete(run_url(sim.add_run()))).status_code == 401


@pytest.mark.parametrize("status", ["STARTED", "QUERYDATA", "PROCESSINGDATA"])
async def test_cancel_in_progress_run_then_again(
    sim: ZuoraSimulator, client: httpx2.AsyncClient, status: str
) -> None:
    run_id = sim.add_run(status)
    first = await client.delete(run_url(run_id))
    assert first.json() == {"success": True, "response": "The report run has been canceled"}
    assert sim.run_status(run_id) == "CANCELLED"
    again = await client.delete(run_url(run_id))
    assert again.json() == {"success": True, "response": "The report run was canceled"}
    assert sim.calls["delete_reportrun"] == 2


@pytest.mark.parametrize("status", ["COMPLETED", "ERROR", "INVALID"])
async def test_cancel_finished_run_is_400(
    sim: ZuoraSimulator, client: httpx2.AsyncClient, status: str
) -> None:
    run_id = sim.add_run(status)
    reply = await client.delete(run_url(run_id))
    assert (reply.status_code, reply.json()) == (400, FINISHED)
    assert sim.run_status(run_id) == status


async def test_unknown_run_is_404(client: httpx2.AsyncClient) -> None:
    for reply in (await client.delete(run_url("0" * 32)), await client.get(run_url("0" * 32))):
        assert (reply.status_code, reply.json()) == (404, NOT_FOUND)


async def test_legacy_mode_sends_errors_with_http_200() -> None:
    sim = ZuoraSimulator(errors_as_http_200=True)
    transport = httpx2.ASGITransport(app=sim.app)
    async with httpx2.AsyncClient(transport=transport, base_url="http://sim") as client:
        assert (await client.delete(run_url("0" * 32))).status_code == 401
        token = (await client.post("/oauth/token", data=CREDENTIALS)).json()["access_token"]
        client.headers["Authorization"] = f"Bearer {token}"
        missing = await client.delete(run_url("0" * 32))
        finished = await client.delete(run_url(sim.add_run("COMPLETED")))
    assert (missing.status_code, missing.json()) == (200, NOT_FOUND)
    assert (finished.status_code, finished.json()) == (200, FINISHED)


async def test_run_a_report_then_read_it(client: httpx2.AsyncClient) -> None:
    created = await client.post("/api/rest/v1/reports/abc/reportrun", params={"viewType": "Detail"})
    run_id = created.json()["response"]["reportRunId"]
    assert re.fullmatch("[0-9a-f]{32}", run_id)
    run = (await client.get(run_url(run_id))).json()["response"]
    assert (run["id"], run["status"], run["reportId"]) == (run_id, "STARTED", "abc")
    assert run["reportType"] == "Detail"
    assert isinstance(run["startedOn"], int)


async def test_rate_limit_fault_carries_retry_after(
    sim: ZuoraSimulator, client: httpx2.AsyncClient
) -> None:
    sim.faults.inject(Fault("rate_limited", seconds=3))
    assert (await client.post("/oauth/token", data=CREDENTIALS)).status_code == 200
    reply = await client.delete(run_url(sim.add_run()))
    assert (reply.status_code, reply.headers["Retry-After"]) == (429, "3")
    assert reply.json() == {
        "success": False,
        "reasons": [{"code": 50000070, "message": "Too many requests"}],
    }


async def test_garbage_fault(sim: ZuoraSimulator, client: httpx2.AsyncClient) -> None:
    sim.faults.inject(Fault("garbage"))
    reply = await client.get(run_url(sim.add_run()))
    assert reply.status_code == 200
    assert reply.headers["content-type"].startswith("text/html")
    assert reply.text == "<html>upstream exploded</html>"


async def test_auth_fault_hits_the_token_endpoint(
    sim: ZuoraSimulator, client: httpx2.AsyncClient
) -> None:
    sim.faults.inject(Fault("rate_limited", auth=True))
    run_id = sim.add_run()
    assert (await client.get(run_url(run_id))).status_code == 200
    assert (await client.post("/oauth/token", data=CREDENTIALS)).status_code == 429
