"""The metric definitions: bounded labels, series created up front, one registry per
gateway, and the `[server]` keys of the metrics endpoint."""

from __future__ import annotations

from typing import Any

import pytest

from adapters.installed import REGISTRY
from gateway.config import ConfigError, parse_config
from gateway.metrics import Metrics, label, possible_results
from gateway.model import CancelResult, Outcome, Reason
from gateway.rpc.interceptors import GRPC_CODE_NAMES, grpc_type
from tests.conftest import KIIEX_ENV, kiiex_connection


def _value(metrics: Metrics, name: str, **labels: str) -> float | None:
    return metrics.registry.get_sample_value(name, labels)


def test_labels_are_lower_case_enum_names() -> None:
    assert (label(Outcome.ALREADY_CANCELED), label(Reason.NOT_FOUND)) == (
        "already_canceled",
        "not_found",
    )


def test_possible_results_cover_what_the_router_can_answer() -> None:
    results = possible_results(REGISTRY.upstreams["kiiex"].codes.values())
    assert {
        (Outcome.ACCEPTED, Reason.UNSPECIFIED),
        (Outcome.ACCEPTED, Reason.NOT_CONFIRMED),  # confirmation window ran out
        (Outcome.CANCELED, Reason.UNSPECIFIED),  # confirmation succeeded
        (Outcome.FAILED, Reason.NOT_FOUND),
        (Outcome.FAILED, Reason.UPSTREAM_UNAVAILABLE),  # also: circuit open
        (Outcome.FAILED, Reason.BAD_UPSTREAM_RESPONSE),
        (Outcome.PARTIAL, Reason.UPSTREAM_ERROR),
    } <= results
    assert (Outcome.FAILED, Reason.UNSPECIFIED) not in results
    assert (Outcome.FAILED, Reason.NOT_CONFIRMED) not in results


def test_job_series_exist_at_zero_and_count_one_result() -> None:
    metrics = Metrics()
    metrics.prepare_job("kiiex", "CancelUserReport", [(Outcome.FAILED, Reason.NOT_FOUND)])
    job = {"upstream": "kiiex", "operation": "CancelUserReport"}
    found = {**job, "outcome": "failed", "reason": "not_found"}
    assert _value(metrics, "cancelgw_jobs_total", **found) == 0
    assert _value(metrics, "cancelgw_idempotent_replays_total", upstream="kiiex") == 0
    result = CancelResult(Outcome.FAILED, Reason.NOT_FOUND, False, "", "kiiex", "CancelUserReport")
    metrics.job_finished(result, 0.2)
    assert _value(metrics, "cancelgw_jobs_total", **found) == 1
    assert _value(metrics, "cancelgw_job_duration_seconds_count", **job) == 1
    assert _value(metrics, "cancelgw_job_duration_seconds_sum", **job) == pytest.approx(0.2)


def test_connection_series_exist_at_zero() -> None:
    metrics = Metrics()
    metrics.connection("k", ["CancelQuote"], in_flight_limit=4, circuit_state=lambda: 2)
    conn = {"connection": "k"}
    assert _value(metrics, "cancelgw_circuit_state", **conn) == 2
    assert _value(metrics, "cancelgw_upstream_in_flight_limit", **conn) == 4
    assert _value(metrics, "cancelgw_token_refreshes_total", **conn, result="error") == 0
    call = {**conn, "operation": "CancelQuote"}
    assert _value(metrics, "cancelgw_upstream_requests_total", **call, status_class="error") == 0
    assert _value(metrics, "cancelgw_retries_total", **call) == 0


def test_in_flight_goes_back_down_even_when_the_call_fails() -> None:
    metrics = Metrics()
    connection = metrics.connection("k", [], in_flight_limit=1, circuit_state=lambda: 0)
    seen: list[float | None] = []

    def failing_call() -> None:
        with connection.in_flight():
            seen.append(_value(metrics, "cancelgw_upstream_in_flight", connection="k"))
            raise RuntimeError("upstream call failed")

    with pytest.raises(RuntimeError):
        failing_call()
    assert seen == [1]
    assert _value(metrics, "cancelgw_upstream_in_flight", connection="k") == 0


def test_each_gateway_counts_in_its_own_registry() -> None:
    first, second = Metrics(), Metrics()
    result = CancelResult(Outcome.ACCEPTED, Reason.UNSPECIFIED, False, "", "kiiex", "X")
    first.job_finished(result, 0.1)
    labels = {"upstream": "kiiex", "operation": "X", "outcome": "accepted"}
    assert _value(first, "cancelgw_jobs_total", **labels, reason="unspecified") == 1
    assert _value(second, "cancelgw_jobs_total", **labels, reason="unspecified") is None


def test_grpc_labels_are_the_ones_go_grpc_prometheus_writes() -> None:
    assert len(GRPC_CODE_NAMES) == 17
    assert {GRPC_CODE_NAMES[code] for code in GRPC_CODE_NAMES if code.name == "OK"} == {"OK"}
    assert "NotFound" in GRPC_CODE_NAMES.values()
    assert "Canceled" in GRPC_CODE_NAMES.values()  # Go's spelling, one L
    kinds = [grpc_type(c, s) for c in (False, True) for s in (False, True)]
    assert kinds == ["unary", "server_stream", "client_stream", "bidi_stream"]


def _server(**server: Any) -> Any:
    data = {
        "server": {"allow_unauthenticated": True, **server},
        "connections": {"k": kiiex_connection()},
    }
    return parse_config(data, KIIEX_ENV, REGISTRY.option_schemas).server


def test_metrics_listen_on_loopback_unless_configured_otherwise() -> None:
    assert _server().metrics_listen == "127.0.0.1:9464"
    assert _server(metrics_listen="").metrics_listen == ""
    assert _server(metrics_listen="0.0.0.0:9464").metrics_listen == "0.0.0.0:9464"


@pytest.mark.parametrize(
    ("server", "message"),
    [
        ({"metrics_listen": "9464"}, "server.metrics_listen: expected host:port"),
        ({"metrics_listen": 9464}, "server.metrics_listen: expected a str"),
        (
            {"listen": "0.0.0.0:50051", "metrics_listen": "0.0.0.0:50051"},
            "server.listen: port 50051 is given to two listeners",
        ),
    ],
)
def test_bad_metrics_listen_is_refused_by_name(server: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError) as refused:
        _server(**server)
    assert str(refused.value).startswith(message)
