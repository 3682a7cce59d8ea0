"""The gRPC edge: protobuf in, typed objects to the core, protobuf out.

The only module that touches the generated stubs. Jobs convert field by field as their
registered kind declares them, so no job kind is named here. Gateway-side failures become a
rich status here, in one table: the gRPC code and ErrorInfo reason of each core error, a
`google.rpc.ErrorInfo` always, and a `google.rpc.BadRequest` when fields were at fault.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
import uuid
from collections.abc import Iterator, Mapping
from dataclasses import dataclass

import grpc
from google.protobuf import any_pb2, duration_pb2, struct_pb2
from google.protobuf.message import DecodeError
from google.rpc import error_details_pb2, status_pb2
from grpc_status import rpc_status

from cancellation.v1 import gateway_pb2
from gateway import NAME, tracing
from gateway.auth import Caller, Callers, current_caller
from gateway.drain import Drain
from gateway.errors import (
    CallerNotPermitted,
    CallerRateLimited,
    DeadlineExceeded,
    FieldViolation,
    GatewayError,
    IdempotencyKeyInProgress,
    IdempotencyKeyReused,
    IdempotencyStoreUnavailable,
    InvalidArgument,
    JobKindNotImplemented,
    ShuttingDown,
    Unauthenticated,
    UndecodableRequest,
    UnknownConnection,
)
from gateway.jobs import CancelRequest, JobKind, job_fields, job_values
from gateway.metrics import Metrics, label
from gateway.model import Attempt, CancelResult, JsonValue, LegResult
from gateway.pipeline import Pipeline
from gateway.registry import Registry
from gateway.resilience import Deadline
from gateway.router import Router

SERVICE_NAME = gateway_pb2.DESCRIPTOR.services_by_name["CancellationGateway"].full_name
REQUEST_ID_HEADER = "x-request-id"
_MAX_REQUEST_ID = 128
_MAX_TEXT = 2048
# Far below gRPC's 4 MiB message limit: the raw body is a courtesy, the envelope is the answer.
_MAX_BODY = 64 * 1024
log = logging.getLogger(__name__)


# The one mapping from core errors to what a gRPC client sees: status code, ErrorInfo reason.
STATUS: Mapping[type[GatewayError], tuple[grpc.StatusCode, str]] = {
    InvalidArgument: (grpc.StatusCode.INVALID_ARGUMENT, "INVALID_ARGUMENT"),
    UnknownConnection: (grpc.StatusCode.FAILED_PRECONDITION, "UNKNOWN_CONNECTION"),
    JobKindNotImplemented: (grpc.StatusCode.UNIMPLEMENTED, "JOB_KIND_NOT_IMPLEMENTED"),
    DeadlineExceeded: (grpc.StatusCode.DEADLINE_EXCEEDED, "DEADLINE_EXCEEDED"),
    UndecodableRequest: (grpc.StatusCode.INVALID_ARGUMENT, "UNDECODABLE_REQUEST"),
    IdempotencyKeyReused: (grpc.StatusCode.INVALID_ARGUMENT, "IDEMPOTENCY_KEY_REUSED"),
    IdempotencyKeyInProgress: (grpc.StatusCode.ABORTED, "IDEMPOTENCY_KEY_IN_PROGRESS"),
    IdempotencyStoreUnavailable: (grpc.StatusCode.UNAVAILABLE, "IDEMPOTENCY_STORE_UNAVAILABLE"),
    ShuttingDown: (grpc.StatusCode.UNAVAILABLE, "SHUTTING_DOWN"),
    Unauthenticated: (grpc.StatusCode.UNAUTHENTICATED, "UNAUTHENTICATED"),
    CallerNotPermitted: (grpc.StatusCode.PERMISSION_DENIED, "CALLER_NOT_PERMITTED"),
    CallerRateLimited: (grpc.StatusCode.RESOURCE_EXHAUSTED, "CALLER_RATE_LIMITED"),
}
_INTERNAL = (grpc.StatusCode.INTERNAL, "INTERNAL")


def status_of(error: GatewayError) -> tuple[grpc.StatusCode, str]:
    return next((STATUS[c] for c in type(error).__mro__ if c in STATUS), _INTERNAL)


def check_job_kinds(registry: Registry) -> None:
    """Each registered job kind matches the contract: its `job` oneof member exists, and so
    does each field, optional exactly where the proto field has presence. Checked at start,
    so a mismatch fails the gateway's start rather than a caller's request."""
    request = gateway_pb2.CancelJobRequest.DESCRIPTOR
    members = {f.name: f for f in request.oneofs_by_name["job"].fields}
    for name, kind in registry.job_kinds.items():
        member = members.get(name)
        if member is None or member.message_type is None:
            raise ValueError(f"{kind.__name__}: the contract has no job member {name!r}")
        fields = member.message_type.fields_by_name
        for field in job_fields(kind):
            declared = fields.get(field.name)
            if declared is None:
                raise ValueError(f"{kind.__name__}.{field.name}: not a field of {name}")
            if declared.has_presence == field.required:
                raise ValueError(
                    f"{kind.__name__}.{field.name}: optional (None) exactly when the proto "
                    "field is `optional`"
                )


def job_from_proto(request: gateway_pb2.CancelJobRequest, registry: Registry) -> JobKind:
    field = request.WhichOneof("job")
    if field is None:
        choices = ", ".join(registry.job_kinds)
        raise InvalidArgument([FieldViolation("job", f"set one of {choices}")])
    kind = registry.job_kinds.get(field)
    if kind is None:
        raise JobKindNotImplemented(f"{field} is not served by this gateway")
    message = getattr(request, field)
    values = {
        f.name: getattr(message, f.name) if f.required or message.HasField(f.name) else None
        for f in job_fields(kind)
    }
    try:
        return kind(**values)
    except InvalidArgument as invalid:
        raise invalid.under(field) from None


@dataclass(frozen=True)
class Undecodable:
    """What the request deserializer hands on when the bytes are no CancelJobRequest: the
    servicer answers it, so the call is counted and logged like any other, without the
    traceback grpc would print."""

    size: int


def decode_request(data: bytes) -> gateway_pb2.CancelJobRequest | Undecodable:
    try:
        return gateway_pb2.CancelJobRequest.FromString(data)
    except (DecodeError, RecursionError):
        return Undecodable(len(data))


def request_from_proto(
    request: gateway_pb2.CancelJobRequest, request_id: str, registry: Registry, caller: str = ""
) -> CancelRequest:
    return CancelRequest(
        job=job_from_proto(request, registry),
        connection=request.connection,
        idempotency_key=request.idempotency_key,
        wait_for_confirmation=request.wait_for_confirmation,
        request_id=request_id,
        caller=caller,
    )


def _text(value: str) -> str:
    """A string protobuf can carry: valid UTF-8 (upstreams send lone surrogates) and short."""
    if value.isascii():  # the common case: nothing to replace
        return value[:_MAX_TEXT]
    return value.encode("utf-8", "replace").decode("utf-8")[:_MAX_TEXT]


def _struct(body: JsonValue) -> struct_pb2.Struct | None:
    """The upstream body as a Struct, or its text when it is too big or too odd for one.

    Built straight from the parsed body; only a body protobuf refuses as it is (a lone
    surrogate, an integer past a double's range) takes the way through JSON text."""
    if body is None:
        return None
    struct = struct_pb2.Struct()
    try:
        struct.update(body if isinstance(body, dict) else {"body": body})
    except (ValueError, TypeError, OverflowError):
        return _struct_of_text(_text_of(body))
    if struct.ByteSize() > _MAX_BODY:
        return _truncated(_text_of(body))
    return struct


def _struct_of_text(text: str) -> struct_pb2.Struct:
    struct = struct_pb2.Struct()
    try:
        value = json.loads(text)
        struct.update(value if isinstance(value, dict) else {"body": value})
    except (ValueError, TypeError, OverflowError):
        return _truncated(text)
    return struct if struct.ByteSize() <= _MAX_BODY else _truncated(text)


def _truncated(text: str) -> struct_pb2.Struct:
    struct = struct_pb2.Struct()
    struct.update({"truncated": True, "text": text[:_MAX_TEXT]})
    return struct


def _text_of(body: JsonValue) -> str:
    """JSON text of the body that protobuf can carry (lone surrogates replaced)."""
    encoded = json.dumps(body, ensure_ascii=False, default=str)
    return encoded.encode("utf-8", "replace").decode("utf-8")


def _leg_to_proto(leg: LegResult) -> gateway_pb2.LegResult:
    return gateway_pb2.LegResult(
        leg=leg.leg,
        outcome=leg.outcome.value,  # type: ignore[arg-type]
        reason=leg.reason.value,  # type: ignore[arg-type]
        retryable=leg.retryable,
        upstream_code=_text(leg.upstream_code),
        upstream_message=_text(leg.upstream_message),
        detail=_text(leg.detail),
    )


def _duration(seconds: float) -> duration_pb2.Duration:
    nanos = round(max(0.0, seconds) * 1e9)  # durations here are never negative
    return duration_pb2.Duration(seconds=nanos // 10**9, nanos=nanos % 10**9)


def _attempt_to_proto(attempt: Attempt) -> gateway_pb2.Attempt:
    return gateway_pb2.Attempt(
        number=attempt.number,
        delivery=attempt.delivery.value,  # type: ignore[arg-type]
        legs=[_leg_to_proto(leg) for leg in attempt.legs],
        latency=_duration(attempt.latency),
        request_id=attempt.request_id,
    )


def response_to_proto(result: CancelResult) -> gateway_pb2.CancelJobResponse:
    retry_after = None if result.retry_after is None else _duration(result.retry_after)
    return gateway_pb2.CancelJobResponse(
        outcome=result.outcome.value,  # type: ignore[arg-type]
        reason=result.reason.value,  # type: ignore[arg-type]
        retryable=result.retryable,
        message=_text(result.message),
        upstream=result.upstream,
        operation=result.operation,
        legs=[_leg_to_proto(leg) for leg in result.legs],
        attempts=result.attempts,
        upstream_latency=_duration(result.upstream_latency),
        replayed=result.replayed,
        request_id=result.request_id,
        upstream_response=_struct(result.upstream_response),
        retry_after=retry_after,
        attempt_history=[_attempt_to_proto(attempt) for attempt in result.history],
    )


def rich_status(error: GatewayError) -> grpc.Status:
    """A gateway error as a gRPC status with its details."""
    code, reason = status_of(error)
    details = [error_details_pb2.ErrorInfo(reason=reason, domain=NAME, metadata=error.metadata)]
    if isinstance(error, CallerRateLimited):
        details.append(error_details_pb2.RetryInfo(retry_delay=_duration(error.retry_after)))
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
    status = status_pb2.Status(code=code.value[0], message=error.message, details=packed)
    return rpc_status.to_status(status)


def request_id_of(context: grpc.aio.ServicerContext) -> str:
    """The caller's `x-request-id` when it is sane, else a fresh one."""
    for key, value in context.invocation_metadata() or ():
        if key == REQUEST_ID_HEADER and _sane_request_id(value):
            return str(value)
    return uuid.uuid4().hex


def _sane_request_id(value: object) -> bool:
    return isinstance(value, str) and 0 < len(value) <= _MAX_REQUEST_ID and value.isprintable()


def result_fields(result: CancelResult) -> dict[str, object]:
    """What the log line says of an envelope; the upstream's body stays out of logs."""
    return {
        "upstream": result.upstream,
        "operation": result.operation,
        "outcome": label(result.outcome),
        "reason": label(result.reason),
        "retryable": result.retryable,
        "attempts": result.attempts,
        "upstream_latency_ms": round(result.upstream_latency * 1000, 1),
        "detail": result.message,
    }


# What the server span repeats of the log line: enough to find and judge the call (every
# attribute costs a few microseconds in the SDK).
_TRACED = ("request_id", "caller", "job", "connection", "outcome", "reason", "attempts")


@contextlib.contextmanager
def call_log(
    request: gateway_pb2.CancelJobRequest | Undecodable,
    request_id: str,
    context: grpc.aio.ServicerContext,
) -> Iterator[dict[str, object]]:
    """The one log line of a CancelJob: the call fills it in; it is written however it ends."""
    started = time.monotonic()
    caller = current_caller()
    line: dict[str, object] = {
        "request_id": request_id,
        "caller": caller.name if caller else "unidentified",
        "peer": context.peer(),
        "job": "",
        "connection": "",
        "grpc_code": "OK",
    }
    if not isinstance(request, Undecodable):
        line.update(job=request.WhichOneof("job") or "", connection=request.connection[:128])
    failure: Exception | None = None
    try:
        yield line
    except asyncio.CancelledError:
        line["grpc_code"] = "CANCELLED"  # the caller went away, or its deadline passed
        raise
    except grpc.aio.AbortError:
        raise  # a gateway error, already in the line
    except Exception as error:
        line["grpc_code"], failure = "UNKNOWN", error  # a bug: the line carries the traceback
        raise
    finally:
        line["latency_ms"] = round((time.monotonic() - started) * 1000, 1)
        tracing.note(lambda: {key: line[key] for key in _TRACED if key in line})
        level = logging.ERROR if failure else logging.INFO
        log.log(level, "cancel_job", extra=line, exc_info=failure)


class _EveryFewSeconds:
    """Lets a warning through at most once per `seconds`, counting what it held back."""

    def __init__(self, seconds: float) -> None:
        self._seconds = seconds
        self._next = 0.0
        self.held_back = 0

    def due(self) -> bool:
        now = time.monotonic()
        if now < self._next:
            self.held_back += 1
            return False
        self._next = now + self._seconds
        return True


class CancellationService:
    def __init__(
        self,
        router: Router,
        pipeline: Pipeline,
        registry: Registry,
        drain: Drain,
        metrics: Metrics,
        callers: Callers,
    ) -> None:
        check_job_kinds(registry)
        self._metrics = metrics
        self._router = router
        self._pipeline = pipeline
        self._registry = registry
        self._drain = drain
        self._callers = callers
        self._undecodable = _EveryFewSeconds(60.0)

    async def CancelJob(  # noqa: N802 - the name is the RPC's
        self,
        request: gateway_pb2.CancelJobRequest | Undecodable,
        context: grpc.aio.ServicerContext,
    ) -> gateway_pb2.CancelJobResponse:
        request_id = request_id_of(context)
        with self._drain.call(), call_log(request, request_id, context) as line:
            try:
                await context.send_initial_metadata(((REQUEST_ID_HEADER, request_id),))
                if self._drain.began:
                    raise ShuttingDown("gateway shutting down: send the call to another replica")
                result = await self._cancel(self._decoded(request), request_id, context, line)
            except GatewayError as error:
                code, reason = status_of(error)
                line.update(grpc_code=code.name, error_reason=reason, detail=error.message)
                await context.abort_with_status(rich_status(error))
                raise AssertionError("abort_with_status returned") from error  # pragma: no cover
            line.update(result_fields(result))
            return response_to_proto(result)

    async def _cancel(
        self,
        request: gateway_pb2.CancelJobRequest,
        request_id: str,
        context: grpc.aio.ServicerContext,
        line: dict[str, object],
    ) -> CancelResult:
        caller = self._admitted(request, line)
        cancel = request_from_proto(request, request_id, self._registry, caller.name)
        line["job_ids"] = job_values(cancel.job)
        route = self._router.route(cancel.job, cancel.connection)
        line["connection"] = route.settings.name
        deadline = Deadline.for_caller(context.time_remaining())
        return await self._pipeline.cancel(route, cancel, deadline)

    def _admitted(self, request: gateway_pb2.CancelJobRequest, line: dict[str, object]) -> Caller:
        """The caller, once it may cancel this job kind on this connection, within its rate:
        checked before the connection lookup, so a stranger learns nothing of connections."""
        caller = current_caller() or self._callers.anonymous()
        field = request.WhichOneof("job")
        kind = self._registry.job_kinds.get(field or "")
        if kind is not None:
            message = getattr(request, kind.proto_field)
            line["job_ids"] = {f.name: getattr(message, f.name) for f in job_fields(kind)}
            connection = request.connection or self._router.default_name(kind.upstream)
            try:
                self._callers.admit(caller, kind.proto_field, connection)
            except (CallerNotPermitted, CallerRateLimited) as refused:
                self._metrics.refused(refused)
                raise
            self._metrics.caller_calls.labels(caller.name).inc()
        return caller

    def _decoded(
        self, request: gateway_pb2.CancelJobRequest | Undecodable
    ) -> gateway_pb2.CancelJobRequest:
        if not isinstance(request, Undecodable):
            return request
        if self._undecodable.due():
            log.warning(
                "request bytes that are no CancelJobRequest",
                extra={"size": request.size, "since_last_warning": self._undecodable.held_back},
            )
            self._undecodable.held_back = 0
        raise UndecodableRequest(
            f"the request ({request.size} bytes) does not decode as a CancelJobRequest"
        )


def rpc_handler(service: CancellationService) -> grpc.GenericRpcHandler:
    """CancelJob with the forgiving deserializer above (the generated registration would
    let grpc fail undecodable bytes itself: a traceback per call, and no metric)."""
    method = grpc.unary_unary_rpc_method_handler(
        service.CancelJob,
        request_deserializer=decode_request,
        response_serializer=gateway_pb2.CancelJobResponse.SerializeToString,
    )
    return grpc.method_handlers_generic_handler(SERVICE_NAME, {"CancelJob": method})
