"""The servicer without a network: protobuf in, the pipeline, protobuf or a rich status out,
and one log line per call however it ends."""

from __future__ import annotations

import json
from typing import Any

import grpc
import pytest

from adapters.installed import REGISTRY
from adapters.kiiex import KiiexUserReport
from cancellation.v1 import gateway_pb2
from gateway.auth import Callers
from gateway.drain import Drain
from gateway.jobs import JobKind
from gateway.metrics import Metrics
from gateway.model import Delivery, LegResult, Outcome, Reason, UpstreamReply
from gateway.pipeline import Pipeline
from gateway.router import Router
from gateway.rpc.envelope import Undecodable
from gateway.rpc.servicer import REQUEST_ID_HEADER, CancellationService
from gateway.upstream import LegCheck, Preflight
from tests.conftest import kiiex_connection, make_config
from tests.unit.gateway.rpc.fakes import FakeContext

GUID = "8e3a7f52-1c9d-4b6e-a0f4-2d5b9c7e1a30"


class _Adapter:
    """Accepts every cancel; counts them."""

    def __init__(self) -> None:
        self.cancels: list[JobKind] = []

    async def cancel(self, job: JobKind, *, timeout: float) -> UpstreamReply:
        self.cancels.append(job)
        leg = LegResult("report", Outcome.ACCEPTED, Reason.UNSPECIFIED, False, "0")
        return UpstreamReply((leg,), {"result": True}, None, Delivery.ANSWERED)

    async def confirm(self, job: JobKind, *, timeout: float) -> tuple[LegCheck, ...]:
        return ()

    async def preflight(self, *, timeout: float) -> Preflight:
        return Preflight(True, "a scripted upstream: no login")

    async def aclose(self) -> None:
        pass


def _service() -> tuple[CancellationService, _Adapter, Drain]:
    config = make_config({"kiiex-main": kiiex_connection()})
    adapter, metrics, drain = _Adapter(), Metrics(), Drain()
    operations = {"kiiex": ("CancelQuote", "CancelUserReport")}
    router = Router(config, {"kiiex-main": adapter}, operations, metrics)
    callers = Callers((), allow_unauthenticated=True)
    pipeline = Pipeline(metrics, drain=drain)
    return CancellationService(router, pipeline, REGISTRY, drain, metrics, callers), adapter, drain


def _report(**fields: Any) -> gateway_pb2.CancelJobRequest:
    job = gateway_pb2.KiiexUserReport(user_report_id=GUID)
    return gateway_pb2.CancelJobRequest(kiiex_user_report=job, **fields)


def _lines(caplog: pytest.LogCaptureFixture) -> list[dict[str, Any]]:
    return [vars(r) for r in caplog.records if r.getMessage() == "cancel_job"]


async def test_a_cancel_answers_the_envelope_and_logs_one_line(
    caplog: pytest.LogCaptureFixture,
) -> None:
    service, adapter, _ = _service()
    context = FakeContext([(REQUEST_ID_HEADER, "rq-1")])
    caplog.set_level("INFO")
    response = await service.CancelJob(_report(), context)
    assert response.outcome == gateway_pb2.OUTCOME_ACCEPTED
    assert (response.upstream, response.operation, response.request_id) == (
        "kiiex", "CancelUserReport", "rq-1"
    )  # fmt: skip
    assert context.initial_metadata == ((REQUEST_ID_HEADER, "rq-1"),)
    assert adapter.cancels == [KiiexUserReport(GUID)]
    (line,) = _lines(caplog)
    assert (line["grpc_code"], line["connection"], line["outcome"]) == (
        "OK",
        "kiiex-main",
        "accepted",
    )
    assert line["job_ids"] == {"user_report_id": GUID}


@pytest.mark.parametrize(
    ("request_", "code", "reason", "fields"),
    [
        (gateway_pb2.CancelJobRequest(), "INVALID_ARGUMENT", "INVALID_ARGUMENT", ["job"]),
        (
            gateway_pb2.CancelJobRequest(
                kiiex_user_report=gateway_pb2.KiiexUserReport(user_report_id="nope")
            ),
            "INVALID_ARGUMENT",
            "INVALID_ARGUMENT",
            ["kiiex_user_report.user_report_id"],
        ),
        (
            gateway_pb2.CancelJobRequest(
                kiiex_quote=gateway_pb2.KiiexQuote(oms_id=1, bid_quote_id=7, ask_quote_id=7)
            ),
            "INVALID_ARGUMENT",
            "INVALID_ARGUMENT",
            ["kiiex_quote.bid_quote_id", "kiiex_quote.ask_quote_id"],
        ),
        (_report(connection="zuora-eu"), "FAILED_PRECONDITION", "UNKNOWN_CONNECTION", []),
        (Undecodable(12), "INVALID_ARGUMENT", "UNDECODABLE_REQUEST", []),
    ],
)
async def test_a_refusal_is_a_rich_status_logged_once_and_no_upstream_call(
    request_: Any, code: str, reason: str, fields: list[str], caplog: pytest.LogCaptureFixture
) -> None:
    service, adapter, _ = _service()
    context = FakeContext()
    caplog.set_level("INFO")
    with pytest.raises(grpc.aio.AbortError):
        await service.CancelJob(request_, context)
    assert context.details() == {"code": code, "reason": reason, "fields": fields}
    assert adapter.cancels == []
    (line,) = _lines(caplog)
    assert (line["grpc_code"], line["error_reason"]) == (code, reason)


async def test_undecodable_bytes_are_warned_about_at_most_once_a_minute(
    caplog: pytest.LogCaptureFixture,
) -> None:
    service, _, _ = _service()
    caplog.set_level("WARNING")
    for _ in range(3):
        with pytest.raises(grpc.aio.AbortError):
            await service.CancelJob(Undecodable(5), FakeContext())
    warnings = [r for r in caplog.records if r.levelname == "WARNING"]
    assert len(warnings) == 1


async def test_a_draining_gateway_refuses_before_anything_else() -> None:
    service, adapter, drain = _service()
    drain.begin()
    context = FakeContext()
    with pytest.raises(grpc.aio.AbortError):
        await service.CancelJob(_report(), context)
    assert context.details()["reason"] == "SHUTTING_DOWN"
    assert adapter.cancels == []


async def test_a_bug_is_logged_as_unknown_with_its_traceback(
    caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    service, _, _ = _service()

    def broken(*args: object, **kwargs: object) -> None:
        raise RuntimeError("a bug")

    monkeypatch.setattr("gateway.rpc.servicer.response_to_proto", broken)
    caplog.set_level("INFO")
    with pytest.raises(RuntimeError):
        await service.CancelJob(_report(), FakeContext())
    (line,) = _lines(caplog)
    assert line["grpc_code"] == "UNKNOWN"
    assert line["exc_info"] is not None
    assert json.dumps(line["job_ids"])  # the line stays writable
