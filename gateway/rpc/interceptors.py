"""The gRPC server interceptors: one counts every RPC as go-grpc-prometheus does, one traces each
CancelJob, one authenticates the caller before anything else runs.

Each wraps each method's behaviour. Tracing comes before authentication, so a refused call is a span
too and every log line of a call carries its trace id. The metrics one is outermost, so it sees the
final status code: a normal return (OK, or what `set_code` chose), `context.abort*` (AbortError, the
code set on the context), an unhandled exception (UNKNOWN) and a cancelled handler
(DEADLINE_EXCEEDED or CANCELLED); refused credentials are counted too. Health checks and reflection
are counted like any RPC; only CancelJob needs credentials.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from contextvars import Token
from typing import Any

import grpc
from google.protobuf.descriptor import ServiceDescriptor

from gateway import tracing
from gateway.auth import Caller, Callers, bind_caller, unbind_caller
from gateway.errors import Unauthenticated
from gateway.metrics import Metrics
from gateway.rpc.status import rich_status

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


class _Wrapped:
    """Each method's wrapped handler, built once: grpc asks the interceptors on every call.
    Bounded by the methods the server has (an unknown method has no handler to wrap)."""

    def __init__(self, wrap: Callable[[str, grpc.RpcMethodHandler], grpc.RpcMethodHandler]):
        self._wrap = wrap
        self._by_method: dict[str, tuple[grpc.RpcMethodHandler, grpc.RpcMethodHandler]] = {}

    def __call__(self, method: str, handler: grpc.RpcMethodHandler) -> grpc.RpcMethodHandler:
        cached = self._by_method.get(method)
        if cached is not None and cached[0] is handler:
            return cached[1]
        wrapped = self._wrap(method, handler)
        self._by_method[method] = (handler, wrapped)
        return wrapped


class _MethodInterceptor(grpc.aio.ServerInterceptor):  # type: ignore[misc]
    """Wraps the handler of each method outside `open_services`, once per method, with
    what `wrapping` returns. A method the server does not have is left to grpc, which
    answers UNIMPLEMENTED on its own."""

    def __init__(self, open_services: Iterable[str] = ()) -> None:
        self._open = frozenset(open_services)
        self._wrapped = _Wrapped(self.wrapping)

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler:
        handler = await continuation(handler_call_details)
        service = handler_call_details.method.lstrip("/").rpartition("/")[0]
        if handler is None or service in self._open:
            return handler
        return self._wrapped(handler_call_details.method, handler)

    def wrapping(self, method: str, handler: grpc.RpcMethodHandler) -> grpc.RpcMethodHandler:
        raise NotImplementedError


class MetricsInterceptor(_MethodInterceptor):
    """Counts `grpc_server_started_total`, `grpc_server_handled_total` and
    `grpc_server_handling_seconds` for every RPC; series exist from start for `services`."""

    def __init__(self, metrics: Metrics, services: Iterable[ServiceDescriptor]) -> None:
        super().__init__()
        self._metrics = metrics
        codes = GRPC_CODE_NAMES.values()
        for service in services:
            for method in service.methods:
                kind = grpc_type(method.client_streaming, method.server_streaming)
                metrics.prepare_grpc(kind, service.full_name, method.name, codes)

    def wrapping(self, method: str, handler: grpc.RpcMethodHandler) -> grpc.RpcMethodHandler:
        service, _, name = method.lstrip("/").rpartition("/")
        kind = grpc_type(handler.request_streaming, handler.response_streaming)
        series = _RpcSeries(self._metrics, (kind, service, name))
        return _wrap(handler, lambda context: _Observed(series, context))


class _RpcSeries:
    """The metric children of one method, looked up once."""

    def __init__(self, metrics: Metrics, labels: tuple[str, str, str]) -> None:
        self.started = metrics.started_of(*labels)
        self.handling = metrics.handling_of(*labels)
        self._handled = metrics.handled_of
        self._labels = labels

    def handled(self, code: str) -> Any:
        return self._handled(*self._labels, code)


class _Observed:
    """One RPC, counted: started on entry; its final code and duration on exit."""

    __slots__ = ("_context", "_series", "_started")

    def __init__(self, series: _RpcSeries, context: grpc.aio.ServicerContext) -> None:
        self._series, self._context, self._started = series, context, 0.0

    async def __aenter__(self) -> None:
        self._series.started.inc()
        self._started = time.monotonic()

    async def __aexit__(self, kind: object, error: BaseException | None, trace: object) -> None:
        code = GRPC_CODE_NAMES.get(final_code(self._context, error), "Unknown")
        self._series.handled(code).inc()
        self._series.handling.observe(time.monotonic() - self._started)


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


# The codes a server span is failed for (OpenTelemetry's gRPC conventions): the server's
# faults, not the caller's (INVALID_ARGUMENT, NOT_FOUND, ... leave the status unset).
_SERVER_FAULTS = frozenset(
    {
        grpc.StatusCode.UNKNOWN,
        grpc.StatusCode.DEADLINE_EXCEEDED,
        grpc.StatusCode.UNIMPLEMENTED,
        grpc.StatusCode.INTERNAL,
        grpc.StatusCode.UNAVAILABLE,
        grpc.StatusCode.DATA_LOSS,
    }
)


class TracingInterceptor(_MethodInterceptor):
    """A server span per RPC outside `open_services` (probes and schema discovery are not
    worth a trace), continuing the caller's `traceparent`."""

    def __init__(self, tracer: tracing.Tracing, open_services: Iterable[str]) -> None:
        super().__init__(open_services)
        self._tracing = tracer

    def wrapping(self, method: str, handler: grpc.RpcMethodHandler) -> grpc.RpcMethodHandler:
        return _wrap(handler, lambda context: _Traced(self._tracing, context, method))


class _Traced:
    """One RPC's server span: current for the handler, ended with the final status code."""

    __slots__ = ("_context", "_method", "_span", "_tracing")

    def __init__(
        self, tracer: tracing.Tracing, context: grpc.aio.ServicerContext, method: str
    ) -> None:
        self._tracing, self._context, self._method = tracer, context, method
        self._span = contextlib.ExitStack()

    async def __aenter__(self) -> None:
        metadata = self._context.invocation_metadata() or ()
        self._span.enter_context(self._tracing.serving(self._method, metadata))

    async def __aexit__(self, kind: object, error: BaseException | None, trace: object) -> None:
        code = final_code(self._context, error)
        current = tracing.current()
        current.set_attribute("rpc.grpc.status_code", code.value[0])
        if code in _SERVER_FAULTS:
            tracing.failed(current, code.name)
        self._span.close()


class AuthInterceptor(_MethodInterceptor):
    """Identifies the caller of every RPC outside `open_services` before its handler runs
    (bearer token, else client certificate), and binds it for the handler
    (`gateway.auth.current_caller`); refuses with UNAUTHENTICATED otherwise."""

    def __init__(self, callers: Callers, open_services: Iterable[str], metrics: Metrics) -> None:
        super().__init__(open_services)
        self._callers = callers
        self._metrics = metrics

    def wrapping(self, method: str, handler: grpc.RpcMethodHandler) -> grpc.RpcMethodHandler:
        wrapped = _wrap(handler, lambda context: _Authenticated(self, context, method))
        if wrapped is handler:  # a handler kind it cannot wrap must not run unauthenticated
            raise TypeError(f"cannot authenticate {method}: not async")
        return wrapped

    async def identify(self, context: grpc.aio.ServicerContext, method: str) -> Caller:
        """The caller, or the call aborted UNAUTHENTICATED (counted and logged)."""
        authorization = [
            str(value)
            for key, value in context.invocation_metadata() or ()
            if key == "authorization"
        ]
        try:
            return self._callers.identify(
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
            raise  # not reached: abort raises


class _Authenticated:
    """The caller bound for the length of one RPC (or the RPC refused on entry)."""

    __slots__ = ("_context", "_interceptor", "_method", "_token")

    def __init__(
        self, interceptor: AuthInterceptor, context: grpc.aio.ServicerContext, method: str
    ) -> None:
        self._interceptor, self._context, self._method = interceptor, context, method
        self._token: Token[Caller | None] | None = None

    async def __aenter__(self) -> None:
        caller = await self._interceptor.identify(self._context, self._method)
        self._token = bind_caller(caller)

    async def __aexit__(self, kind: object, error: BaseException | None, trace: object) -> None:
        if self._token is not None:
            unbind_caller(self._token)


def certificate_names(context: grpc.aio.ServicerContext) -> list[str]:
    """The names a verified client certificate gives its holder (none without mTLS): its
    SANs, or its subject CN when it has no SAN (as TLS host checks do)."""
    seen = context.auth_context() or {}
    names = seen.get("x509_subject_alternative_name") or seen.get("x509_common_name") or ()
    return [n.decode("utf-8", "replace") if isinstance(n, bytes) else str(n) for n in names]
