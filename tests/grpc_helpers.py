"""Reading rich gRPC error details the way a polyglot client would."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import grpc
from google.rpc import error_details_pb2, status_pb2

from cancellation.v1 import gateway_pb2 as pb


def report_request(report_id: str, idempotency_key: str = "", **fields: Any) -> pb.CancelJobRequest:
    """A CancelJob for one KIIEX user report; `fields` are the request's other fields."""
    return pb.CancelJobRequest(
        kiiex_user_report=pb.KiiexUserReport(user_report_id=report_id),
        idempotency_key=idempotency_key,
        **fields,
    )


@dataclass
class RichError:
    code: grpc.StatusCode
    message: str
    info: error_details_pb2.ErrorInfo
    bad_fields: list[str]


def rich_error(error: grpc.aio.AioRpcError) -> RichError:
    """Decodes `grpc-status-details-bin`; fails the test if the details are missing."""
    raw = dict(error.trailing_metadata() or ()).get("grpc-status-details-bin")
    assert raw is not None, f"no rich status on {error.code()}: {error.details()}"
    status = status_pb2.Status.FromString(raw)
    info = error_details_pb2.ErrorInfo()
    bad_request = error_details_pb2.BadRequest()
    has_info = any(detail.Unpack(info) for detail in status.details)
    assert has_info, "every non-OK status carries ErrorInfo"
    for detail in status.details:
        detail.Unpack(bad_request)
    fields = [violation.field for violation in bad_request.field_violations]
    return RichError(error.code(), status.message, info, fields)
