"""The gRPC edge: protobuf in, typed objects to the core, protobuf out.

The only module that touches the generated stubs. Gateway-side failures become a rich
status here, in one place: the code named by the error, a `google.rpc.ErrorInfo`, and a
`google.rpc.BadRequest` when fields were at fault.
"""

from __future__ import annotations

import uuid
from datetime import timedelta

import grpc
from google.protobuf import any_pb2, duration_pb2, struct_pb2
from google.rpc import error_details_pb2, status_pb2
from grpc_status import rpc_status

from cancellation.v1 import gateway_pb2, gateway_pb2_grpc
from gateway import NAME
from gateway.errors import FieldViolation, GatewayError, InvalidArgument
from gateway.jobs import CancelRequest, Job, KiiexQuote, KiiexUserReport, ZuoraReportRun
from gateway.model import CancelResult, JsonValue, LegResult
from gateway.resilience import Deadline
from gateway.router import Router

REQUEST_ID_HEADER = "x-request-id"
_MAX_REQUEST_ID = 128


def job_from_proto(request: gateway_pb2.CancelJobRequest) -> Job:
    kind = request.WhichOneof("job")
    try:
        if kind == "kiiex_user_report":
            return KiiexUserReport(request.kiiex_user_report.user_report_id)
        if kind == "kiiex_quote":
            quote = request.kiiex_quote
            return KiiexQuote(
                oms_id=quote.oms_id,
                bid_quote_id=quote.bid_quote_id,
                ask_quote_id=quote.ask_quote_id,
                account_id=quote.account_id if quote.HasField("account_id") else None,
                instrument_id=quote.instrument_id if quote.HasField("instrument_id") else None,
            )
        if kind == "zuora_report_run":
            return ZuoraReportRun(request.zuora_report_run.report_run_id)
    except InvalidArgument as invalid:
        raise invalid.under(str(kind)) from None
    raise InvalidArgument(
        [FieldViolation("job", "set one of kiiex_user_report, kiiex_quote, zuora_report_run")]
    )


def request_from_proto(request: gateway_pb2.CancelJobRequest, request_id: str) -> CancelRequest:
    return CancelRequest(
        job=job_from_proto(request),
        connection=request.connection,
        idempotency_key=request.idempotency_key,
        wait_for_confirmation=request.wait_for_confirmation,
        request_id=request_id,
    )


def _struct(body: JsonValue) -> struct_pb2.Struct | None:
    if body is None:
        return None
    value = body if isinstance(body, dict) else {"body": body}
    struct = struct_pb2.Struct()
    try:
        struct.update(value)
    except (ValueError, TypeError):
        # Struct holds only JSON-safe values (no huge ints, no NaN keys): keep the text.
        struct.update({"body": str(body)[:2048]})
    return struct


def _leg_to_proto(leg: LegResult) -> gateway_pb2.LegResult:
    return gateway_pb2.LegResult(
        leg=leg.leg,
        outcome=leg.outcome.value,  # type: ignore[arg-type]
        reason=leg.reason.value,  # type: ignore[arg-type]
        retryable=leg.retryable,
        upstream_code=leg.upstream_code,
        upstream_message=leg.upstream_message,
        detail=leg.detail,
    )


def response_to_proto(result: CancelResult) -> gateway_pb2.CancelJobResponse:
    latency = duration_pb2.Duration()
    latency.FromTimedelta(timedelta(seconds=result.upstream_latency))
    return gateway_pb2.CancelJobResponse(
        outcome=result.outcome.value,  # type: ignore[arg-type]
        reason=result.reason.value,  # type: ignore[arg-type]
        retryable=result.retryable,
        message=result.message,
        upstream=result.upstream,
        operation=result.operation,
        legs=[_leg_to_proto(leg) for leg in result.legs],
        attempts=result.attempts,
        upstream_latency=latency,
        replayed=result.replayed,
        request_id=result.request_id,
        upstream_response=_struct(result.upstream_response),
    )


def rich_status(error: GatewayError) -> grpc.Status:
    """The one mapping from a gateway error to a gRPC status with details."""
    details = [
        error_details_pb2.ErrorInfo(reason=error.reason, domain=NAME, metadata=error.metadata)
    ]
    if isinstance(error, InvalidArgument):
        details.append(
            error_details_pb2.BadRequest(
                field_violations=[
                    error_details_pb2.BadRequest.FieldViolation(
                        field=v.field, description=v.description
                    )
                    for v in error.violations
                ]
            )
        )
    packed = []
    for detail in details:
        container = any_pb2.Any()
        container.Pack(detail)
        packed.append(container)
    status = status_pb2.Status(
        code=grpc.StatusCode[error.status_code].value[0], message=error.message, details=packed
    )
    return rpc_status.to_status(status)


def request_id_of(context: grpc.aio.ServicerContext) -> str:
    """The caller's `x-request-id` when it is sane, else a fresh one."""
    for key, value in context.invocation_metadata() or ():
        if key == REQUEST_ID_HEADER and _sane_request_id(value):
            return str(value)
    return uuid.uuid4().hex


def _sane_request_id(value: object) -> bool:
    return isinstance(value, str) and 0 < len(value) <= _MAX_REQUEST_ID and value.isprintable()


class CancellationService(gateway_pb2_grpc.CancellationGatewayServicer):
    def __init__(self, router: Router) -> None:
        self._router = router

    async def CancelJob(  # noqa: N802 - the name is the RPC's
        self, request: gateway_pb2.CancelJobRequest, context: grpc.aio.ServicerContext
    ) -> gateway_pb2.CancelJobResponse:
        request_id = request_id_of(context)
        await context.send_initial_metadata(((REQUEST_ID_HEADER, request_id),))
        try:
            cancel = request_from_proto(request, request_id)
            result = await self._router.cancel(cancel, Deadline(context.time_remaining()))
        except GatewayError as error:
            await context.abort_with_status(rich_status(error))
            raise AssertionError("abort_with_status returned") from error  # pragma: no cover
        return response_to_proto(result)
