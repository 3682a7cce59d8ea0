"""Traces: the caller's W3C trace context in, a span per CancelJob, attempt, login, read and
upstream HTTP request, and the context out on every upstream request (`traceparent`).

Spans are made by hand with the OpenTelemetry API: the gRPC instrumentation would add a
second server interceptor stack, and none fits httpx2 over aiohttp. Each server has its own
`Tracing` (its provider and exporter, from `tracing.*` in the config); a call binds its
tracer for everything it does (`Tracing.serving`), as `gateway.upstream.observing` binds
metrics, so the pipeline and the adapters only say `span(...)`.

Off (the default), the tracer is the API's no-op one: spans cost a context switch and record
nothing, but a caller's `traceparent` still goes on to the upstream unchanged (the no-op
tracer keeps the parent's context), so a trace through an untraced gateway is not cut.
The SDK is imported only when an exporter is configured.
"""

from __future__ import annotations

import contextlib
import contextvars
import threading
from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import TYPE_CHECKING, Annotated, Any

from opentelemetry import trace
from opentelemetry.trace import Span, SpanKind, Status, StatusCode, Tracer
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

from gateway import NAME, VERSION
from gateway.schema import Fraction, Section, about, choice, invalid, url

EXPORTERS = ("off", "console", "otlp")


class TracingSettings(Section, frozen=True):
    """The `[tracing]` section."""

    exporter: Annotated[
        str,
        about(
            "`off`, `console` (spans as JSON on stdout) or `otlp` (OTLP/HTTP to `endpoint`); "
            "off, a caller's `traceparent` is still passed on to the upstreams"
        ),
    ] = "off"
    endpoint: Annotated[
        str,
        about("the collector's traces URL, e.g. http://collector:4318/v1/traces (`otlp` only)"),
    ] = ""
    service_name: Annotated[str, about("the `service.name` resource attribute")] = (
        "cancellation-gateway"
    )
    sample_ratio: Annotated[
        Fraction,
        about("of the traces the gateway starts itself, the share kept; a caller's flag rules"),
    ] = 1.0

    def __post_init__(self) -> None:
        choice("exporter", self.exporter, EXPORTERS)
        if self.exporter == "otlp":
            if not self.endpoint:
                raise invalid("endpoint", "is required")
            url("endpoint", self.endpoint)
        elif self.endpoint:
            raise invalid("endpoint", 'only used with exporter = "otlp"')


if TYPE_CHECKING:
    from opentelemetry.sdk.trace import SpanProcessor, TracerProvider

# Only W3C trace context: what every tracing system reads (`OTEL_PROPAGATORS` is not consulted,
# so the header the upstreams get does not depend on the environment).
_PROPAGATOR = TraceContextTextMapPropagator()
_CARRIED = frozenset(_PROPAGATOR.fields)
_NO_TRACER: Tracer = trace.NoOpTracer()
_tracer: contextvars.ContextVar[Tracer] = contextvars.ContextVar("tracer", default=_NO_TRACER)


class Tracing:
    """One server's tracing. `processor` replaces the configured exporter (a testing switch:
    a SimpleSpanProcessor over an in-memory exporter)."""

    def __init__(
        self, settings: TracingSettings, *, processor: SpanProcessor | None = None
    ) -> None:
        self._provider: TracerProvider | None = None
        self.tracer = _NO_TRACER
        if processor is None and settings.exporter != "off":
            processor = _batching(settings)
        if processor is not None:
            self._provider = _provider(settings, processor)
            self.tracer = self._provider.get_tracer(NAME, VERSION)

    @contextlib.contextmanager
    def serving(self, method: str, metadata: Iterable[tuple[str, Any]]) -> Iterator[Span]:
        """The server span of one RPC, continuing the caller's trace; current in the block."""
        carrier = {k: str(v) for k, v in metadata if k in _CARRIED}
        if not carrier and self.tracer is _NO_TRACER:  # nothing to record, nothing to pass on
            yield trace.INVALID_SPAN
            return
        parent = _PROPAGATOR.extract(carrier)
        service, _, name = method.lstrip("/").rpartition("/")
        attributes = {"rpc.system": "grpc", "rpc.service": service, "rpc.method": name}
        token = _tracer.set(self.tracer)
        try:
            with self.tracer.start_as_current_span(
                method.lstrip("/"),
                context=parent,
                kind=SpanKind.SERVER,
                attributes=attributes,
                record_exception=False,  # the interceptor sets the outcome (see `failed`)
                set_status_on_exception=False,
            ) as current:
                yield current
        finally:
            _tracer.reset(token)

    def shutdown(self, timeout: float) -> None:
        """Exports what is left for at most `timeout` seconds, and stops; blocking, so run it
        off the event loop. The SDK's own shutdown may wait 30 s on a collector that accepts
        and never answers: past `timeout` it is left to finish in a daemon thread, so a
        drain stays within its grace."""
        if self._provider is not None:
            ending = threading.Thread(target=self._provider.shutdown, daemon=True)
            ending.start()
            ending.join(timeout)


def _batching(settings: TracingSettings) -> SpanProcessor:
    """Spans exported in batches by the SDK's own thread: never on the event loop, and a
    bounded queue (spans beyond it are dropped, not buffered)."""
    from opentelemetry.sdk.trace.export import BatchSpanProcessor, ConsoleSpanExporter

    if settings.exporter == "console":
        return BatchSpanProcessor(ConsoleSpanExporter())
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

    return BatchSpanProcessor(OTLPSpanExporter(endpoint=settings.endpoint, timeout=5))


def _provider(settings: TracingSettings, processor: SpanProcessor) -> TracerProvider:
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.sampling import ParentBased, TraceIdRatioBased

    resource = Resource.create({"service.name": settings.service_name, "service.version": VERSION})
    sampler = ParentBased(TraceIdRatioBased(settings.sample_ratio))
    # Not at exit either: the SDK's exit hook would wait up to 30 s more; `shutdown` bounds it.
    provider = TracerProvider(resource=resource, sampler=sampler, shutdown_on_exit=False)
    provider.add_span_processor(processor)
    return provider


def span(
    name: str,
    *,
    kind: SpanKind = SpanKind.INTERNAL,
    attributes: Callable[[], Mapping[str, Any]] | None = None,
) -> contextlib.AbstractContextManager[None]:
    """A child of the current span, current in the block; `attributes` is called only when
    the span is recorded. Untraced, nothing at all: the no-op tracer's child would be its
    parent again, so the caller's context stays current and still goes upstream."""
    tracer = _tracer.get()
    if tracer is _NO_TRACER:
        return _UNTRACED
    return _recorded(tracer, name, kind, attributes() if attributes else None)


_UNTRACED = contextlib.nullcontext()


@contextlib.contextmanager
def _recorded(
    tracer: Tracer, name: str, kind: SpanKind, attributes: Mapping[str, Any] | None
) -> Iterator[None]:
    """An exception fails the span by its type alone: its text may quote an upstream's body
    or a request's headers, and a trace is not scrubbed as logs and envelopes are."""
    with tracer.start_as_current_span(
        name,
        kind=kind,
        attributes=attributes,
        record_exception=False,
        set_status_on_exception=False,
    ) as current:
        try:
            yield
        except BaseException as error:
            failed(current, type(error).__name__)
            raise


def inject(headers: Any) -> None:
    """Writes the current trace context (`traceparent`, `tracestate`) into `headers`."""
    _PROPAGATOR.inject(headers)


def current() -> Span:
    return trace.get_current_span()


def note(fields: Callable[[], Mapping[str, object]], *, prefix: str = "cancelgw.") -> None:
    """Sets the plain values `fields()` returns as attributes of the current span; called
    only when the span is recorded, so an untraced call builds nothing."""
    span = current()
    if span.is_recording():
        plain = {k: v for k, v in fields().items() if isinstance(v, str | bool | int | float)}
        span.set_attributes({prefix + k: v for k, v in plain.items()})


def failed(current: Span, error_type: str) -> None:
    """Marks `current` failed, by a type or code name (never an error's text)."""
    current.set_attribute("error.type", error_type)
    current.set_status(Status(StatusCode.ERROR, error_type))


def trace_ids() -> tuple[str, str] | None:
    """(trace id, span id) of the current span, as W3C writes them; None outside a trace."""
    context = current().get_span_context()
    if not context.is_valid:
        return None
    return trace.format_trace_id(context.trace_id), trace.format_span_id(context.span_id)
