"""Routing decisions that need no upstream: which connection, and which job kinds exist."""

from __future__ import annotations

import pytest

from adapters.kiiex import KiiexAdapter
from gateway.errors import JobKindNotImplemented, UnknownConnection
from gateway.jobs import KiiexUserReport, ZuoraReportRun
from gateway.router import Router
from tests.conftest import kiiex_connection, make_config

REPORT = KiiexUserReport("8e3a7f52-1c9d-4b6e-a0f4-2d5b9c7e1a30")
RUN = ZuoraReportRun("ff808081529f4e3401529fd61f080074")


def _router() -> Router:
    config = make_config(
        {"kiiex-a": kiiex_connection(default=True), "kiiex-b": kiiex_connection(default=False)}
    )
    adapters = {name: KiiexAdapter(settings) for name, settings in config.connections.items()}
    return Router(config, adapters, frozenset({KiiexUserReport}))


def test_empty_connection_picks_the_upstreams_default() -> None:
    assert _router().route(REPORT, "").settings.name == "kiiex-a"


def test_named_connection_wins_over_the_default() -> None:
    assert _router().route(REPORT, "kiiex-b").settings.name == "kiiex-b"


def test_job_kind_without_an_adapter_is_unimplemented() -> None:
    with pytest.raises(JobKindNotImplemented, match="DeleteReportRun"):
        _router().route(RUN, "")


def test_unknown_connection_lists_the_known_ones() -> None:
    with pytest.raises(UnknownConnection, match="known: kiiex-a, kiiex-b"):
        _router().route(REPORT, "kiiex-c")
