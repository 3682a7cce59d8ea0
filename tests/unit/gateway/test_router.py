"""Routing decisions that need no upstream: which connection for which job."""

from __future__ import annotations

import pytest

from adapters.kiiex import KiiexAdapter, KiiexUserReport
from adapters.zuora import ZuoraReportRun
from gateway.errors import UnknownConnection
from gateway.metrics import Metrics
from gateway.router import Router
from tests.conftest import kiiex_connection, make_config

REPORT = KiiexUserReport("8e3a7f52-1c9d-4b6e-a0f4-2d5b9c7e1a30")
RUN = ZuoraReportRun("ff808081529f4e3401529fd61f080074")


def _router() -> Router:
    config = make_config(
        {"kiiex-a": kiiex_connection(default=True), "kiiex-b": kiiex_connection(default=False)}
    )
    connected = {name: KiiexAdapter(settings) for name, settings in config.connections.items()}
    return Router(config, connected, {"kiiex": ("CancelUserReport",)}, Metrics())


def test_empty_connection_picks_the_upstreams_default() -> None:
    assert _router().route(REPORT, "").settings.name == "kiiex-a"


def test_named_connection_wins_over_the_default() -> None:
    assert _router().route(REPORT, "kiiex-b").settings.name == "kiiex-b"


def test_job_of_an_upstream_without_a_connection_names_the_upstream() -> None:
    with pytest.raises(UnknownConnection, match="no zuora connection is configured"):
        _router().route(RUN, "")


def test_connection_of_another_upstream_is_refused() -> None:
    with pytest.raises(UnknownConnection, match="'kiiex-a' is not a configured zuora connection"):
        _router().route(RUN, "kiiex-a")


def test_unknown_connection_names_no_other_connection() -> None:
    with pytest.raises(UnknownConnection) as raised:
        _router().route(REPORT, "kiiex-c")
    assert str(raised.value) == "connection 'kiiex-c' is not a configured kiiex connection"
