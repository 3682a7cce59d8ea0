"""Protobuf in and out, and nothing else: a `CancelJobRequest` to a validated
`CancelRequest` (each job converted field by field as its registered kind declares it, so no
kind is named here), a `CancelResult` to a `CancelJobResponse`. The upstream's body becomes a
Struct within a size a client can use."""

from __future__ import annotations

import json
from dataclasses import dataclass

from google.protobuf import duration_pb2, struct_pb2
from google.protobuf.message import DecodeError

from cancellation.v1 import gateway_pb2
from gateway.errors import FieldViolation, InvalidArgument, JobKindNotImplemented
from gateway.jobs import CancelRequest, JobKind, job_fields
from gateway.model import Attempt, CancelResult, JsonValue, LegResult
from gateway.registry import Registry

_MAX_TEXT = 2048
# Far below gRPC's 4 MiB message limit: the raw body is a courtesy, the envelope is the answer.
_MAX_BODY = 64 * 1024


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


def job_kind_of(request: gateway_pb2.CancelJobRequest, registry: Registry) -> type[JobKind]:
    """The registered kind of the request's `job` member; what a request without one, or
    with one this gateway does not serve, is told."""
    field = request.WhichOneof("job")
    if field is None:
        choices = ", ".join(registry.job_kinds)
        raise InvalidArgument([FieldViolation("job", f"set one of {choices}")])
    kind = registry.job_kinds.get(field)
    if kind is None:
        raise JobKindNotImplemented(f"{field} is not served by this gateway")
    return kind


def ids_as_sent(kind: type[JobKind], request: gateway_pb2.CancelJobRequest) -> dict[str, object]:
    """The job's fields as the caller sent them, before validation (for the log line)."""
    message = getattr(request, kind.proto_field)
    return {f.name: getattr(message, f.name) for f in job_fields(kind)}


def job_from_proto(kind: type[JobKind], request: gateway_pb2.CancelJobRequest) -> JobKind:
    message = getattr(request, kind.proto_field)
    values = {
        f.name: getattr(message, f.name) if f.required or message.HasField(f.name) else None
        for f in job_fields(kind)
    }
    try:
        return kind(**values)
    except InvalidArgument as invalid:
        raise invalid.under(kind.proto_field) from None


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
    request: gateway_pb2.CancelJobRequest, kind: type[JobKind], *, request_id: str, caller: str
) -> CancelRequest:
    return CancelRequest(
        job=job_from_proto(kind, request),
        connection=request.connection,
        idempotency_key=request.idempotency_key,
        wait_for_confirmation=request.wait_for_confirmation,
        request_id=request_id,
        caller=caller,
        cancellation_reason=request.cancellation_reason,
        validate_only=request.validate_only,
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


def _json(body: JsonValue) -> str:
    """The body as JSON text, integers as sent (a Struct makes every number a double); cut
    to the same bound as the Struct, in the same `{truncated, text}` form."""
    if body is None:
        return ""
    text = _text_of(body)
    if len(text) > _MAX_BODY:
        return _text_of({"truncated": True, "text": text[:_MAX_TEXT]})
    return text


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


def duration(seconds: float) -> duration_pb2.Duration:
    nanos = round(max(0.0, seconds) * 1e9)  # durations here are never negative
    return duration_pb2.Duration(seconds=nanos // 10**9, nanos=nanos % 10**9)


def _attempt_to_proto(attempt: Attempt) -> gateway_pb2.Attempt:
    return gateway_pb2.Attempt(
        number=attempt.number,
        delivery=attempt.delivery.value,  # type: ignore[arg-type]
        legs=[_leg_to_proto(leg) for leg in attempt.legs],
        latency=duration(attempt.latency),
        request_id=attempt.request_id,
    )


def response_to_proto(result: CancelResult) -> gateway_pb2.CancelJobResponse:
    retry_after = None if result.retry_after is None else duration(result.retry_after)
    return gateway_pb2.CancelJobResponse(
        outcome=result.outcome.value,  # type: ignore[arg-type]
        reason=result.reason.value,  # type: ignore[arg-type]
        retryable=result.retryable,
        message=_text(result.message),
        upstream=result.upstream,
        operation=result.operation,
        legs=[_leg_to_proto(leg) for leg in result.legs],
        attempts=result.attempts,
        upstream_latency=duration(result.upstream_latency),
        replayed=result.replayed,
        request_id=result.request_id,
        upstream_response=_struct(result.upstream_response),
        upstream_response_json=_json(result.upstream_response),
        retry_after=retry_after,
        attempt_history=[_attempt_to_proto(attempt) for attempt in result.history],
    )
