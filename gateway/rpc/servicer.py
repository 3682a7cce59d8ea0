"""The servicer: one CancelJob from the gRPC call to the pipeline and back. Protobuf goes
through `gateway.rpc.envelope`, a gateway error out as its rich status
(`gateway.rpc.status`), and every call, however it ends, writes one log line."""

from __future__ import annotations

import logging
import uuid

import grpc

from cancellation.v1 import gateway_pb2
from gateway.auth import Caller, Callers, current_caller
from gateway.drain import Drain
from gateway.errors import (
    CallerNotPermitted,
    CallerRateLimited,
    GatewayError,
    ShuttingDown,
    UndecodableRequest,
    status_of,
)
from gateway.jobs import JobKind, job_values
from gateway.logs import EveryFewSeconds, call_line, envelope_fields
from gateway.metrics import Metrics
from gateway.model import CancelResult
from gateway.pipeline import Pipeline
from gateway.registry import Registry
from gateway.resilience import Deadline
from gateway.router import Router
from gateway.rpc.envelope import (
    Undecodable,
    check_job_kinds,
    decode_request,
    ids_as_sent,
    job_kind_of,
    request_from_proto,
    response_to_proto,
)
from gateway.rpc.status import rich_status

SERVICE = gateway_pb2.DESCRIPTOR.services_by_name["CancellationGateway"]
SERVICE_NAME = SERVICE.full_name
REQUEST_ID_HEADER = "x-request-id"
_MAX_REQUEST_ID = 128
# What the server span repeats of the log line: enough to find and judge the call (every
# attribute costs a few microseconds in the SDK).
_TRACED = (
    "request_id", "caller", "job", "connection", "outcome", "reason", "attempts",
    "cancellation_reason",
)  # fmt: skip
log = logging.getLogger(__name__)


def request_id_of(context: grpc.aio.ServicerContext) -> str:
    """The caller's `x-request-id` when it is sane, else a fresh one."""
    for key, value in context.invocation_metadata() or ():
        if key == REQUEST_ID_HEADER and _sane_request_id(value):
            return str(value)
    return uuid.uuid4().hex


def _sane_request_id(value: object) -> bool:
    return isinstance(value, str) and 0 < len(value) <= _MAX_REQUEST_ID and value.isprintable()


def _first_fields(
    request: gateway_pb2.CancelJobRequest | Undecodable,
    request_id: str,
    context: grpc.aio.ServicerContext,
) -> dict[str, object]:
    """What the log line knows of a call before it runs."""
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
    return line


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
        self._undecodable = EveryFewSeconds(60.0)

    async def CancelJob(  # noqa: N802 - the name is the RPC's
        self,
        request: gateway_pb2.CancelJobRequest | Undecodable,
        context: grpc.aio.ServicerContext,
    ) -> gateway_pb2.CancelJobResponse:
        request_id = request_id_of(context)
        line = _first_fields(request, request_id, context)
        answered = (grpc.aio.AbortError,)  # a gateway error: its status is in the line
        with self._drain.call(), call_line(log, line, answered=answered, traced=_TRACED):
            try:
                await context.send_initial_metadata(((REQUEST_ID_HEADER, request_id),))
                if self._drain.began:
                    raise ShuttingDown("gateway shutting down: send the call to another replica")
                result = await self._cancel(self._decoded(request), request_id, context, line)
            except GatewayError as error:
                code, reason = status_of(error)
                line.update(grpc_code=code, error_reason=reason, detail=error.message)
                await context.abort_with_status(rich_status(error))
                raise AssertionError("abort_with_status returned") from error  # pragma: no cover
            line.update(envelope_fields(result))
            return response_to_proto(result)

    async def _cancel(
        self,
        request: gateway_pb2.CancelJobRequest,
        request_id: str,
        context: grpc.aio.ServicerContext,
        line: dict[str, object],
    ) -> CancelResult:
        caller = current_caller() or self._callers.anonymous()  # identified before all else
        kind = job_kind_of(request, self._registry)
        line["job_ids"] = ids_as_sent(kind, request)
        self._admit(caller, kind, request.connection)
        cancel = request_from_proto(request, kind, request_id=request_id, caller=caller.name)
        line["job_ids"] = job_values(cancel.job)
        line["cancellation_reason"] = cancel.cancellation_reason
        if cancel.validate_only:
            line["validate_only"] = True
        route = self._router.route(cancel.job, cancel.connection)
        line["connection"] = route.settings.name
        deadline = Deadline.for_caller(context.time_remaining())
        return await self._pipeline.cancel(route, cancel, deadline)

    def _admit(self, caller: Caller, kind: type[JobKind], connection: str) -> None:
        """Refuses unless the caller may cancel this job kind on this connection, within its
        rate: checked before the connection lookup, so a stranger learns nothing of
        connections."""
        connection = connection or self._router.default_name(kind.upstream)
        try:
            self._callers.admit(caller, kind.proto_field, connection)
        except (CallerNotPermitted, CallerRateLimited) as refused:
            self._metrics.refused(refused)
            raise
        self._metrics.caller_calls.labels(caller.name).inc()

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
