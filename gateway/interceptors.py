"""The gRPC server interceptors: one counts every RPC as go-grpc-prometheus does, one
authenticates the caller before anything else runs.

Both wrap each method's behaviour. The metrics one is outermost, so it sees the final
status code: a normal return (OK, or what `set_code` chose), `context.abort*` (AbortError,
the code set on the context), an unhandled exception (UNKNOWN) and a cancelled handler
(DEADLINE_EXCEEDED or CANCELLED); refused credentials are counted too. Health checks and
reflection are counted like any RPC; only CancelJob needs credentials.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from typing import Any

import grpc
from google.protobuf.descriptor import ServiceDescriptor

from gateway.auth import Callers, bind_caller, unbind_caller
from gateway.errors import Unauthenticated
from gateway.metrics import Metrics
from gateway.service import rich_status

log = logging.getLogger(__name__)

# Label values as go-grpc-prometheus writes them (Go's code names), so dashboards built for
# it (`grpc_code!="OK"`, `grpc_code="Unavailable"`) work unchanged.
GRPC_CODE_NAMES = {
    grpc.StatusCode.OK: "OK",
    grpc.StatusCode.CANCELLED: "Canceled",
    grpc.StatusCode.UNKNOWN: "Unknown",
    grpc.StatusCode.INVALID_ARGUMENT: "InvalidArgument",
    grpc.StatusCode.DEADLINE_EXCEEDED: "DeadlineExceeded",
    grpc.StatusCode.NOT_FOUND: "NotFound",
    grpc.StatusCode.ALREADY_EXISTS: "AlreadyExists",
    grpc.StatusCode.PERMISSION_DENIED: "PermissionDenied",
    grpc.StatusCode.RESOURCE_EXHAUSTED: "ResourceExhausted",
    grpc.StatusCode.FAILED_PRECONDITION: "FailedPrecondition",
    grpc.StatusCode.ABORTED: "Aborted",
    grpc.StatusCode.OUT_OF_RANGE: "OutOfRange",
    grpc.StatusCode.UNIMPLEMENTED: "Unimplemented",
    grpc.StatusCode.INTERNAL: "Internal",
    grpc.StatusCode.UNAVAILABLE: "Unavailable",
    grpc.StatusCode.DATA_LOSS: "DataLoss",
    grpc.StatusCode.UNAUTHENTICATED: "Unauthenticated",
}

Behavior = Callable[..., Any]


def grpc_type(client_streaming: bool, server_streaming: bool) -> str:
    if client_streaming:
        return "bidi_stream" if server_streaming else "client_stream"
    return "server_stream" if server_streaming else "unary"


def final_code(context: grpc.aio.ServicerContext, error: BaseException | None) -> grpc.StatusCode:
    """The status the client gets, judged once the handler has returned or raised."""
    # A cancelled handler, or a response stream closed before its end.
    if isinstance(error, asyncio.CancelledError | GeneratorExit):
        remaining = context.time_remaining()
        expired = remaining is not None and remaining <= 0
        return grpc.StatusCode.DEADLINE_EXCEEDED if expired else grpc.StatusCode.CANCELLED
    code: grpc.StatusCode | None = context.code()
    if code is not None:
        return code
    return grpc.StatusCode.OK if error is None else grpc.StatusCode.UNKNOWN


class MetricsInterceptor(grpc.aio.ServerInterceptor):  # type: ignore[misc]
    """Counts `grpc_server_started_total`, `grpc_server_handled_total` and
    `grpc_server_handling_seconds` for every RPC; series exist from start for `services`."""

    def __init__(self, metrics: Metrics, services: Iterable[ServiceDescriptor]) -> None:
        self._metrics = metrics
        codes = GRPC_CODE_NAMES.values()
        for service in services:
            for method in service.methods:
                kind = grpc_type(method.client_streaming, method.server_streaming)
                metrics.prepare_grpc(kind, service.full_name, method.name, codes)

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler:
        handler = await continuation(handler_call_details)
        if handler is None:  # no such method: grpc answers UNIMPLEMENTED on its own
            return None
        service, _, method = handler_call_details.method.lstrip("/").rpartition("/")
        kind = grpc_type(handler.request_streaming, handler.response_streaming)
        labels = (kind, service, method)
        return _wrap(handler, lambda context: self._observed(labels, context))

    @contextlib.asynccontextmanager
    async def _observed(
        self, labels: tuple[str, str, str], context: grpc.aio.ServicerContext
    ) -> AsyncIterator[None]:
        self._metrics.grpc_started.labels(*labels).inc()
        started = time.monotonic()
        error: BaseException | None = None
        try:
            yield
        except BaseException as raised:
            error = raised
            raise
        finally:
            code = GRPC_CODE_NAMES.get(final_code(context, error), "Unknown")
            self._metrics.grpc_handled.labels(*labels, code).inc()
            self._metrics.grpc_handling.labels(*labels).observe(time.monotonic() - started)


Observe = Callable[[grpc.aio.ServicerContext], contextlib.AbstractAsyncContextManager[None]]


def _wrap(handler: grpc.RpcMethodHandler, observe: Observe) -> grpc.RpcMethodHandler:
    """The same handler, its behaviour run inside `observe`; kept as is when not async."""
    if handler.unary_unary:
        factory, behavior = grpc.unary_unary_rpc_method_handler, handler.unary_unary
    elif handler.unary_stream:
        factory, behavior = grpc.unary_stream_rpc_method_handler, handler.unary_stream
    elif handler.stream_unary:
        factory, behavior = grpc.stream_unary_rpc_method_handler, handler.stream_unary
    else:
        factory, behavior = grpc.stream_stream_rpc_method_handler, handler.stream_stream
    wrapped = _observed_behavior(behavior, observe)
    if wrapped is None:
        return handler
    return factory(
        wrapped,
        request_deserializer=handler.request_deserializer,
        response_serializer=handler.response_serializer,
    )


def _observed_behavior(behavior: Behavior, observe: Observe) -> Behavior | None:
    # grpc.aio iterates an async generator and awaits a coroutine (which may use
    # context.write): the wrapper must be of the same kind as what it wraps.
    if inspect.isasyncgenfunction(behavior):

        async def stream(request: Any, context: grpc.aio.ServicerContext) -> AsyncIterator[Any]:
            async with observe(context):
                async for response in behavior(request, context):
                    yield response

        return stream
    if inspect.iscoroutinefunction(behavior):

        async def call(request: Any, context: grpc.aio.ServicerContext) -> Any:
            async with observe(context):
                return await behavior(request, context)

        return call
    return None


class AuthInterceptor(grpc.aio.ServerInterceptor):  # type: ignore[misc]
    """Identifies the caller of every RPC outside `open_services` before its handler runs
    (bearer token, else client certificate), and binds it for the handler
    (`gateway.auth.current_caller`); refuses with UNAUTHENTICATED otherwise."""

    def __init__(self, callers: Callers, open_services: Iterable[str], metrics: Metrics) -> None:
        self._callers = callers
        self._open = frozenset(open_services)
        self._metrics = metrics

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler:
        handler = await continuation(handler_call_details)
        service = handler_call_details.method.lstrip("/").rpartition("/")[0]
        if handler is None or service in self._open:
            return handler
        authorization = [
            str(value)
            for key, value in handler_call_details.invocation_metadata or ()
            if key == "authorization"
        ]
        method = handler_call_details.method
        wrapped = _wrap(
            handler, lambda context: self._authenticated(context, authorization, method)
        )
        if wrapped is handler:  # a handler kind it cannot wrap must not run unauthenticated
            raise TypeError(f"cannot authenticate {handler_call_details.method}: not async")
        return wrapped

    @contextlib.asynccontextmanager
    async def _authenticated(
        self, context: grpc.aio.ServicerContext, authorization: list[str], method: str
    ) -> AsyncIterator[None]:
        try:
            caller = self._callers.identify(
                authorization=authorization, cert_names=certificate_names(context)
            )
        except Unauthenticated as error:
            self._metrics.refused(error)
            log.info(
                "refused",
                extra={"peer": context.peer(), "method": method, "grpc_code": "UNAUTHENTICATED",
                       "error_reason": "UNAUTHENTICATED", "detail": error.message},
            )  # fmt: skip
            await context.abort_with_status(rich_status(error))
        token = bind_caller(caller)
        try:
            yield
        finally:
            unbind_caller(token)


def certificate_names(context: grpc.aio.ServicerContext) -> list[str]:
    """The names a verified client certificate gives its holder (none without mTLS): its
    SANs, or its subject CN when it has no SAN (as TLS host checks do)."""
    seen = context.auth_context() or {}
    names = seen.get("x509_subject_alternative_name") or seen.get("x509_common_name") or ()
    return [n.decode("utf-8", "replace") if isinstance(n, bytes) else str(n) for n in names]
