"""The Zuora adapter against the simulator in-process: every code-table row, OAuth token
reuse and refresh, the legacy zconnect credentials, data-center presets, and the exact
request it sends."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import httpx2
import pytest

from adapters.simulation import ManualClock
from adapters.simulation.faults import Fault
from adapters.zuora import CODES, DATA_CENTERS, ZuoraAdapter, ZuoraReportRun
from adapters.zuora.options import _HOSTS
from adapters.zuora.simulator import ZuoraSimulator
from gateway.config import ConfigError
from gateway.model import Outcome, Reason, UpstreamReply
from tests.conftest import make_config, zuora_connection


def _adapter(transport: httpx2.AsyncBaseTransport, **options: Any) -> ZuoraAdapter:
    config = make_config({"z": zuora_connection(**options)})
    return ZuoraAdapter(config.connections["z"], transport)


@pytest.fixture
def zuora_sim(clock: ManualClock) -> ZuoraSimulator:
    return ZuoraSimulator(clock=clock)


@pytest.fixture
async def adapter(zuora_sim: ZuoraSimulator) -> AsyncIterator[ZuoraAdapter]:
    adapter = _adapter(httpx2.ASGITransport(app=zuora_sim.app))
    yield adapter
    await adapter.aclose()


def _failure(code: int) -> dict[str, Any]:
    return {"success": False, "reasons": [{"code": code, "message": f"reason {code}"}]}


CATEGORY_ROWS = {key for key in CODES if key.startswith("category ") and key[-2:].isdigit()}
ROWS: dict[str, tuple[Fault, str]] = {
    "success: other text": (Fault("json", payload={"success": True, "response": "ok"}), "200"),
    "HTTP 400": (Fault("http_status", status=400), "HTTP 400"),
    "HTTP 403": (Fault("http_status", status=403), "HTTP 403"),
    "HTTP 404": (Fault("http_status", status=404, payload={"message": "nope"}), "HTTP 404"),
    "HTTP 429": (Fault("http_status", status=429), "HTTP 429"),
    "HTTP 5xx": (Fault("http_status", status=502), "HTTP 502"),
    "HTTP other": (Fault("http_status", status=418), "HTTP 418"),
    "unreadable": (Fault("garbage"), "HTTP 200"),
    "category other": (Fault("json", payload=_failure(50000077)), "50000077"),
    **{
        key: (
            Fault("json", payload=_failure(50000000 + int(key[-2:]))),
            str(50000000 + int(key[-2:])),
        )
        for key in CATEGORY_ROWS
    },
}


async def _cancel(adapter: ZuoraAdapter, run_id: str) -> UpstreamReply:
    return await adapter.cancel(ZuoraReportRun(run_id), timeout=5.0)


@pytest.mark.parametrize("key", sorted(ROWS))
async def test_each_code_row_normalizes_as_its_table_says(
    adapter: ZuoraAdapter, zuora_sim: ZuoraSimulator, key: str
) -> None:
    fault, shown = ROWS[key]
    zuora_sim.faults.inject(fault)
    (leg,) = (await _cancel(adapter, zuora_sim.add_run())).legs
    verdict = CODES[key]
    assert (leg.leg, leg.outcome, leg.reason, leg.retryable, leg.upstream_code) == (
        "report_run", verdict.outcome, verdict.reason, verdict.retryable, shown
    )  # fmt: skip


def test_every_table_row_has_a_test() -> None:
    # unreachable, timeout, misconfigured: test_normalizer_properties.py, for every adapter.
    tested = {
        *ROWS,
        "has been canceled",
        "was canceled",
        "HTTP 401",
        "unreachable",
        "timeout",
        "misconfigured",
    }
    assert tested == set(CODES)


async def test_running_run_is_canceled_then_already_canceled(
    adapter: ZuoraAdapter, zuora_sim: ZuoraSimulator
) -> None:
    run = zuora_sim.add_run("QUERYDATA")
    first, again = await _cancel(adapter, run), await _cancel(adapter, run)
    assert first.legs[0].outcome is Outcome.CANCELED
    assert again.legs[0].outcome is Outcome.ALREADY_CANCELED
    assert zuora_sim.run_status(run) == "CANCELLED"
    assert first.body == {"success": True, "response": "The report run has been canceled"}


@pytest.mark.parametrize("legacy", [False, True])
async def test_unknown_and_finished_runs_by_reason_code(clock: ManualClock, legacy: bool) -> None:
    sim = ZuoraSimulator(clock=clock, errors_as_http_200=legacy)
    adapter = _adapter(httpx2.ASGITransport(app=sim.app))
    missing = await _cancel(adapter, "0" * 32)
    finished = await _cancel(adapter, sim.add_run("COMPLETED"))
    assert missing.legs[0].reason is Reason.NOT_FOUND
    assert finished.legs[0].reason is Reason.OPERATION_FAILED
    await adapter.aclose()


async def test_rate_limit_keeps_retry_after(
    adapter: ZuoraAdapter, zuora_sim: ZuoraSimulator
) -> None:
    zuora_sim.faults.inject(Fault("rate_limited", seconds=7))
    reply = await _cancel(adapter, zuora_sim.add_run())
    assert (reply.legs[0].reason, reply.legs[0].retryable, reply.retry_after) == (
        Reason.RATE_LIMITED, True, 7.0
    )  # fmt: skip


async def test_one_token_serves_many_calls(
    adapter: ZuoraAdapter, zuora_sim: ZuoraSimulator
) -> None:
    for _ in range(3):
        await _cancel(adapter, zuora_sim.add_run())
    assert zuora_sim.token_count == 1


async def test_revoked_token_is_refreshed_once_transparently(
    adapter: ZuoraAdapter, zuora_sim: ZuoraSimulator
) -> None:
    await _cancel(adapter, zuora_sim.add_run())
    zuora_sim.expire_tokens()
    reply = await _cancel(adapter, zuora_sim.add_run())
    assert reply.legs[0].outcome is Outcome.CANCELED
    assert zuora_sim.token_count == 2


async def test_token_near_expiry_is_refreshed_before_use(clock: ManualClock) -> None:
    sim = ZuoraSimulator(clock=clock, token_ttl=30)  # shorter than the 60 s refresh margin
    adapter = _adapter(httpx2.ASGITransport(app=sim.app))
    for _ in range(2):
        await _cancel(adapter, sim.add_run())
    assert sim.token_count == 2
    assert sim.calls["delete_reportrun"] == 2  # never a wasted 401 round trip
    await adapter.aclose()


async def test_still_401_after_refresh_is_unauthorized(
    adapter: ZuoraAdapter, zuora_sim: ZuoraSimulator
) -> None:
    zuora_sim.faults.inject(Fault("http_status", status=401), times=2)
    (leg,) = (await _cancel(adapter, zuora_sim.add_run())).legs
    assert (leg.reason, leg.upstream_code) == (Reason.UNAUTHORIZED, "HTTP 401")
    assert zuora_sim.token_count == 2


async def test_refused_client_credentials_are_unauthorized(zuora_sim: ZuoraSimulator) -> None:
    zuora_sim.client_secret = "rotated"
    adapter = _adapter(httpx2.ASGITransport(app=zuora_sim.app))
    (leg,) = (await _cancel(adapter, zuora_sim.add_run())).legs
    assert (leg.reason, leg.retryable) == (Reason.UNAUTHORIZED, False)
    assert "Invalid client credentials" in leg.upstream_message
    await adapter.aclose()


async def test_request_shape_path_auth_and_entity_header() -> None:
    seen: list[httpx2.Request] = []

    def answer(request: httpx2.Request) -> httpx2.Response:
        seen.append(request)
        if request.url.path == "/oauth/token":
            return httpx2.Response(200, json={"access_token": "tok", "expires_in": 3600})
        return httpx2.Response(200, json={"success": True, "response": "has been canceled"})

    adapter = _adapter(httpx2.MockTransport(answer), entity_ids="ent-1")
    await _cancel(adapter, "ff808081529f4e3401529fd61f080074")
    token, delete = seen
    assert (
        token.content
        == b"client_id=sim-client&client_secret=sim-secret&grant_type=client_credentials"
    )
    assert (delete.method, delete.url.path) == (
        "DELETE", "/api/rest/v1/reportruns/ff808081529f4e3401529fd61f080074"
    )  # fmt: skip
    assert delete.headers["authorization"] == "Bearer tok"
    assert delete.headers["zuora-entity-ids"] == "ent-1"
    assert "authorization" not in token.headers


def test_data_center_preset_sets_the_rest_host() -> None:
    config = make_config({"z": zuora_connection(base_url=None, data_center="eu-sandbox")})
    assert config.connections["z"].options.base_url == DATA_CENTERS["eu-sandbox"][0]


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"base_url": None, "data_center": "mars"}, "connections.z.data_center: must be one of"),
        ({"data_center": "us-sandbox"}, "exactly one of"),
        ({"base_url": None}, "exactly one of"),
        ({"api_prefix": "api"}, "connections.z.api_prefix"),
    ],
)
def test_bad_zuora_options_name_the_key(overrides: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        make_config({"z": zuora_connection(**overrides)})


@pytest.mark.parametrize(
    ("status", "code", "shown"),
    [
        (503, 50000077, "50000077"),
        (500, 12345678, "12345678"),
        (502, "x", "HTTP 502"),  # no code at all: the status is what is shown
        (503, True, "HTTP 503"),
        (503, -50000040, "HTTP 503"),
        (503, "ERR40", "HTTP 503"),
    ],
)
async def test_an_undocumented_category_says_no_more_than_the_status(
    adapter: ZuoraAdapter, zuora_sim: ZuoraSimulator, status: int, code: object, shown: str
) -> None:
    body = {"success": False, "reasons": [{"code": code, "message": "odd"}]}
    zuora_sim.faults.inject(Fault("http_status", status=status, payload=body))
    (leg,) = (await _cancel(adapter, zuora_sim.add_run())).legs
    assert (leg.outcome, leg.reason, leg.retryable) == (Outcome.FAILED, Reason.UPSTREAM_ERROR, True)
    assert leg.upstream_code == shown


async def test_a_documented_category_wins_over_the_status(
    adapter: ZuoraAdapter, zuora_sim: ZuoraSimulator
) -> None:
    zuora_sim.faults.inject(Fault("http_status", status=503, payload=_failure(50000040)))
    (leg,) = (await _cancel(adapter, zuora_sim.add_run())).legs
    assert (leg.reason, leg.retryable) == (Reason.NOT_FOUND, False)


LEGACY = {
    "client_id_env": None,
    "client_secret_env": None,
    "api_access_key_id_env": "ZUORA_USER",
    "api_secret_access_key_env": "ZUORA_PASSWORD",
}


async def test_legacy_credentials_go_in_headers_and_need_no_token(
    zuora_sim: ZuoraSimulator,
) -> None:
    adapter = _adapter(httpx2.ASGITransport(app=zuora_sim.app), **LEGACY, entity_name="Europe")
    run = zuora_sim.add_run()
    (leg,) = (await _cancel(adapter, run)).legs
    await adapter.aclose()
    assert (leg.outcome, zuora_sim.run_status(run)) == (Outcome.CANCELED, "CANCELLED")
    assert zuora_sim.auth_seen == {"legacy": 1}
    assert (zuora_sim.token_count, zuora_sim.calls["create_token"]) == (0, 0)
    assert zuora_sim.entity_headers == {"entityname": "Europe"}


async def test_legacy_request_carries_no_bearer_and_no_secret_elsewhere() -> None:
    seen: list[httpx2.Request] = []

    def answer(request: httpx2.Request) -> httpx2.Response:
        seen.append(request)
        return httpx2.Response(200, json={"success": True, "response": "has been canceled"})

    adapter = _adapter(httpx2.MockTransport(answer), **LEGACY, entity_id="ent-9")
    await _cancel(adapter, "ff808081529f4e3401529fd61f080074")
    (delete,) = seen
    assert delete.headers["apiaccesskeyid"] == "sim-user"
    assert delete.headers["apisecretaccesskey"] == "sim-password"
    assert delete.headers["entityid"] == "ent-9"
    assert "authorization" not in delete.headers
    assert "sim-password" not in str(delete.url)


async def test_refused_legacy_credentials_are_unauthorized_without_a_refresh(
    zuora_sim: ZuoraSimulator,
) -> None:
    zuora_sim.legacy_users = {"sim-user": "rotated"}
    adapter = _adapter(httpx2.ASGITransport(app=zuora_sim.app), **LEGACY)
    (leg,) = (await _cancel(adapter, zuora_sim.add_run())).legs
    await adapter.aclose()
    assert (leg.reason, leg.upstream_code) == (Reason.UNAUTHORIZED, "90000011")  # category 11
    assert zuora_sim.calls["delete_reportrun"] == 1


@pytest.mark.parametrize("center", sorted(_HOSTS))
def test_every_data_center_has_a_rest_and_a_zconnect_preset(center: str) -> None:
    rest = make_config({"z": zuora_connection(base_url=None, data_center=center)})
    legacy = make_config(
        {"z": zuora_connection(base_url=None, data_center=f"{center}-zconnect", **LEGACY)}
    )
    assert rest.connections["z"].options.base_url == f"https://{_HOSTS[center][0]}"
    assert legacy.connections["z"].options.base_url == f"https://{_HOSTS[center][1]}"
    assert "zconnect" in legacy.connections["z"].options.base_url


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"base_url": None, "data_center": "us-sandbox-zconnect"}, "this host takes api_access"),
        ({"base_url": None, "data_center": "us-sandbox", **LEGACY}, "this host takes client_id"),
        ({"api_access_key_id_env": "ZUORA_USER"}, "give either client_id_env"),
        ({**LEGACY, "entity_id": "a", "entity_name": "b"}, "entity_id or entity_name, not both"),
        ({**LEGACY, "api_secret_access_key_env": "UNSET"}, "UNSET is not set"),
        ({**LEGACY, "entity_name": "Amérique du Nord"}, "entity_name: must be printable ASCII"),
        ({**LEGACY, "entity_id": "a\nb"}, "entity_id: must be printable ASCII"),
        ({**LEGACY, "entity_ids": "e1"}, "connections.z.entity_ids: only with OAuth credentials"),
        ({"entity_ids": "é"}, "entity_ids: must be printable ASCII"),
        ({**LEGACY, "api_access_key_id_env": "NON_ASCII"}, "api_access_key_id_env: must be"),
        ({**LEGACY, "entity_ids": ""}, "connections.z.entity_ids: only with OAuth"),
        ({"api_secret_access_key_env": "ZUORA_PASSWORD"}, "only with zconnect credentials"),
        ({"entity_id": "a"}, "connections.z.entity_id: only with zconnect"),
        ({**LEGACY, "token_refresh_margin_seconds": 5}, "token_refresh_margin_seconds: only"),
        ({"data_center": ""}, "give exactly one of data_center, base_url"),
        ({"base_url": None, "data_center": "mars"}, "data_center: must be one of"),
    ],
)
def test_credential_families_are_checked_against_the_host(
    overrides: dict[str, Any], message: str
) -> None:
    with pytest.raises(ConfigError, match=message):
        make_config({"z": zuora_connection(**overrides)})
