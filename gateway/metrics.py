"""Every metric the gateway exports, defined in one place with its labels.

Labels are bounded on purpose: names of configured connections and upstreams, operation
names, enum names and status classes; never an id or a free text. Series are created at
start-up (`prepare_*`), so a rate or an alert reads 0 instead of "no data" before the first
call. Each `GatewayServer` owns one `Metrics` with its own registry, so several gateways in
one process (tests) keep separate counts. docs/OBSERVABILITY.md says what each one is for.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable, Iterable, Iterator
from typing import Generic, TypeVar

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    disable_created_metrics,
)
from prometheus_client.metrics import MetricWrapperBase

from gateway.model import SUCCESSFUL_OUTCOMES, CancelResult, Outcome, Reason, Verdict

PREFIX = "cancelgw"
MULTIPROCESS = "PROMETHEUS_MULTIPROC_DIR" in os.environ
"""Set for `server.workers > 1` workers: values go to files the supervisor sums
(prometheus-client decides this at import time, so the gateway reads it the same way)."""
STATUS_CLASSES = ("2xx", "3xx", "4xx", "5xx", "error")
"""`status_class` values: the HTTP status class, or `error` when no HTTP answer came."""
TOKEN_RESULTS = ("ok", "refused", "error")
"""`token_refreshes_total` results: a token, credentials refused, no usable answer."""
CONFIRM_RESULTS = ("confirmed", "not_confirmed", "refuted")
AUTH_REFUSALS = {
    "Unauthenticated": "unauthenticated",
    "CallerNotPermitted": "not_permitted",
    "CallerRateLimited": "rate_limited",
}
"""`auth_refusals_total` reasons, by the core error that refused the call."""

# Upstream calls are capped by timeout_seconds (5 s by default); a CancelJob adds retries,
# backoff and up to confirm_timeout_seconds (10 s) of confirmation, hence the longer tail.
_CALL_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2, 3, 5, 10)
_JOB_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 15, 30, 60)

_GRPC_LABELS = ("grpc_type", "grpc_service", "grpc_method")

# `*_created` samples (one per counter and histogram series, process-wide setting) would
# double the series Prometheus stores, for a start time no dashboard or alert here reads.
disable_created_metrics()  # type: ignore[no-untyped-call]


_NAMES: dict[type, dict[Outcome | Reason, str]] = {
    kind: {value: value.name.lower() for value in kind} for kind in (Outcome, Reason)
}


def label(value: Outcome | Reason) -> str:
    """Enum names as label values: lower case, no proto prefix (`not_found`)."""
    return _NAMES[type(value)][value]


def possible_results(verdicts: Iterable[Verdict]) -> frozenset[tuple[Outcome, Reason]]:
    """Every (outcome, reason) an envelope can end with, given an upstream's code table.

    A superset, on purpose: series cost little, and a missing one shows as a gap. Failures
    may be whole (FAILED) or partial; the pipeline adds FAILED/UPSTREAM_UNAVAILABLE (circuit
    open) and FAILED/BAD_UPSTREAM_RESPONSE (no legs); confirmation turns ACCEPTED into
    CANCELED or ACCEPTED/NOT_CONFIRMED; a lost answer turns a failure, or a success that
    fits either case, into UNKNOWN with the same reason.
    """
    verdicts = list(verdicts)
    failures = {v.reason for v in verdicts if v.outcome not in SUCCESSFUL_OUTCOMES}
    failures |= {Reason.UPSTREAM_UNAVAILABLE, Reason.BAD_UPSTREAM_RESPONSE}
    results = {(v.outcome, v.reason) for v in verdicts if v.outcome in SUCCESSFUL_OUTCOMES}
    accepted = {reason for outcome, reason in results if outcome is Outcome.ACCEPTED}
    if accepted:
        results |= {(Outcome.CANCELED, reason) for reason in accepted}
        results.add((Outcome.ACCEPTED, Reason.NOT_CONFIRMED))
    results |= {(outcome, r) for outcome in (Outcome.FAILED, Outcome.PARTIAL) for r in failures}
    results |= {(Outcome.UNKNOWN, r) for r in failures | {Reason.UNSPECIFIED}}
    if accepted:
        results.add((Outcome.CANCELED, Reason.UNSPECIFIED))
    results.add((Outcome.VALIDATED, Reason.UNSPECIFIED))  # a validate_only rehearsal
    return frozenset(results)


Child = TypeVar("Child", bound=MetricWrapperBase)


class Series(Generic[Child]):
    """A labelled metric's children, each looked up once: `labels()` checks and hashes its
    values on every call, which a hot path pays several times per CancelJob. Bounded like
    the labels themselves (see the module docstring)."""

    def __init__(self, metric: Child) -> None:
        self._metric = metric
        self._children: dict[tuple[str, ...], Child] = {}

    def __call__(self, *values: str) -> Child:
        child = self._children.get(values)
        if child is None:
            child = self._children[values] = self._metric.labels(*values)
        return child


class Metrics:
    """The gateway's metrics in one registry; `connection()` hands out per-connection views."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        self._sampled: list[tuple[Gauge, Callable[[], float]]] = []
        self._define_grpc()
        self._define_jobs()
        self._define_upstream()
        self._define_callers()
        self._define_build()
        self.started_of: Series[Counter] = Series(self.grpc_started)
        self.handled_of: Series[Counter] = Series(self.grpc_handled)
        self.handling_of: Series[Histogram] = Series(self.grpc_handling)
        self.jobs_of: Series[Counter] = Series(self.jobs)
        self.job_duration_of: Series[Histogram] = Series(self.job_duration)
        self.requests_of: Series[Counter] = Series(self.upstream_requests)
        self.request_duration_of: Series[Histogram] = Series(self.upstream_duration)
        self.caller_calls_of: Series[Counter] = Series(self.caller_calls)

    def _define_grpc(self) -> None:
        # The names and labels of go-grpc-prometheus, which existing gRPC dashboards query.
        self.grpc_started = Counter(
            "grpc_server_started_total",
            "RPCs started on the server.",
            _GRPC_LABELS,
            registry=self.registry,
        )
        self.grpc_handled = Counter(
            "grpc_server_handled_total",
            "RPCs completed on the server, whatever their status code.",
            (*_GRPC_LABELS, "grpc_code"),
            registry=self.registry,
        )
        self.grpc_handling = Histogram(
            "grpc_server_handling_seconds",
            "Time from the start of an RPC to its status, as the server saw it.",
            _GRPC_LABELS,
            buckets=_JOB_BUCKETS,
            registry=self.registry,
        )

    def _define_jobs(self) -> None:
        self.jobs = Counter(
            f"{PREFIX}_jobs_total",
            "CancelJob envelopes, by how they ended (gateway-side errors are in grpc_server_*).",
            ("upstream", "operation", "outcome", "reason"),
            registry=self.registry,
        )
        self.job_duration = Histogram(
            f"{PREFIX}_job_duration_seconds",
            "Time to build a CancelJob envelope: upstream calls, retries, confirmation.",
            ("upstream", "operation"),
            buckets=_JOB_BUCKETS,
            registry=self.registry,
        )
        self.idempotent_replays = Counter(
            f"{PREFIX}_idempotent_replays_total",
            "Envelopes answered from the idempotency store without calling the upstream.",
            ("upstream",),
            registry=self.registry,
        )
        self.confirmations = Counter(
            f"{PREFIX}_confirmations_total",
            "wait_for_confirmation results: the read API showed the job canceled or not.",
            ("upstream", "result"),
            registry=self.registry,
        )

    def _define_upstream(self) -> None:
        self.upstream_requests = Counter(
            f"{PREFIX}_upstream_requests_total",
            "HTTP requests to upstreams, by status class (error: no HTTP answer).",
            ("connection", "operation", "status_class"),
            registry=self.registry,
        )
        self.upstream_duration = Histogram(
            f"{PREFIX}_upstream_request_duration_seconds",
            "Time of one HTTP request to an upstream, body included, answered or not.",
            ("connection", "operation"),
            buckets=_CALL_BUCKETS,
            registry=self.registry,
        )
        self.retries = Counter(
            f"{PREFIX}_retries_total",
            "Upstream cancel attempts repeated after a retryable failure.",
            ("connection", "operation"),
            registry=self.registry,
        )
        self.circuit_state = Gauge(
            f"{PREFIX}_circuit_state",
            "Circuit breaker per connection: 0 closed, 1 half-open, 2 open (no calls).",
            ("connection",),
            registry=self.registry,
            multiprocess_mode="livemax",
        )
        self.in_flight = Gauge(
            f"{PREFIX}_upstream_in_flight",
            "Cancel attempts holding one of the connection's max_in_flight slots.",
            ("connection",),
            registry=self.registry,
            multiprocess_mode="livesum",
        )
        self.in_flight_limit = Gauge(
            f"{PREFIX}_upstream_in_flight_limit",
            "The connection's max_in_flight: beyond it, calls wait for a slot.",
            ("connection",),
            registry=self.registry,
            multiprocess_mode="livesum",
        )
        self.client_cert_expiry = Gauge(
            f"{PREFIX}_upstream_client_cert_expiry_timestamp_seconds",
            "When the connection's client certificate (client_cert_file) expires.",
            ("connection",),
            registry=self.registry,
            multiprocess_mode="livemin",
        )
        self.token_refreshes = Counter(
            f"{PREFIX}_token_refreshes_total",
            "Logins to upstreams (session or OAuth token): ok, refused, or error.",
            ("connection", "result"),
            registry=self.registry,
        )

    def _define_build(self) -> None:
        self.build_info = Gauge(
            f"{PREFIX}_build_info",
            "Always 1; its labels say which gateway, Python and grpcio are running.",
            ("version", "python", "grpc"),
            registry=self.registry,
            multiprocess_mode="max",  # the same in every worker: one series, not one per pid
        )

    def _define_callers(self) -> None:
        self.caller_calls = Counter(
            f"{PREFIX}_caller_calls_total",
            "CancelJob calls admitted, by configured caller name (never an address or a token).",
            ("caller",),
            registry=self.registry,
        )
        self.auth_refusals = Counter(
            f"{PREFIX}_auth_refusals_total",
            "CancelJob calls refused before any work: no or unknown credentials, not "
            "permitted, over the caller's rate.",
            ("reason",),
            registry=self.registry,
        )

    def built(self, *, version: str, python: str, grpc: str) -> None:
        self.build_info.labels(version, python, grpc).set(1)

    def prepare_callers(self, names: Iterable[str]) -> None:
        for name in names:
            self.caller_calls.labels(name)
        for reason in AUTH_REFUSALS.values():
            self.auth_refusals.labels(reason)

    def refused(self, error: Exception) -> None:
        self.auth_refusals.labels(AUTH_REFUSALS[type(error).__name__]).inc()

    def prepare_grpc(self, grpc_type: str, service: str, method: str, codes: Iterable[str]) -> None:
        self.grpc_started.labels(grpc_type, service, method)
        self.grpc_handling.labels(grpc_type, service, method)
        for code in codes:
            self.grpc_handled.labels(grpc_type, service, method, code)

    def prepare_job(
        self, upstream: str, operation: str, results: Iterable[tuple[Outcome, Reason]]
    ) -> None:
        for outcome, reason in results:
            self.jobs.labels(upstream, operation, label(outcome), label(reason))
        self.job_duration.labels(upstream, operation)
        self.idempotent_replays.labels(upstream)
        for result in CONFIRM_RESULTS:
            self.confirmations.labels(upstream, result)

    def connection(
        self,
        name: str,
        operations: Iterable[str],
        in_flight_limit: int,
        circuit_state: Callable[[], float],
        client_cert_expires: float | None = None,
    ) -> ConnectionMetrics:
        """The metrics of one connection, its series created for `operations`."""
        self._sample(self.circuit_state.labels(name), circuit_state)
        if client_cert_expires is not None:
            self.client_cert_expiry.labels(name).set(client_cert_expires)
        self.in_flight.labels(name)
        self.in_flight_limit.labels(name).set(in_flight_limit)
        for result in TOKEN_RESULTS:
            self.token_refreshes.labels(name, result)
        for operation in operations:
            self.retries.labels(name, operation)
            self.upstream_duration.labels(name, operation)
            for status_class in STATUS_CLASSES:
                self.upstream_requests.labels(name, operation, status_class)
        return ConnectionMetrics(self, name)

    def _sample(self, gauge: Gauge, value: Callable[[], float]) -> None:
        if MULTIPROCESS:
            self._sampled.append((gauge, value))
        else:
            gauge.set_function(value)

    def sample(self) -> None:
        """Writes the sampled gauges' current values to this worker's multiprocess file.

        A function gauge is read at scrape time, but the supervisor scrapes files, not this
        process: under `server.workers > 1` the server calls this every second instead."""
        for gauge, value in self._sampled:
            gauge.set(value())

    def job_finished(self, result: CancelResult, seconds: float) -> None:
        upstream, operation = result.upstream, result.operation
        self.jobs_of(upstream, operation, label(result.outcome), label(result.reason)).inc()
        self.job_duration_of(upstream, operation).observe(seconds)

    def confirmed(self, upstream: str, result: str) -> None:
        self.confirmations.labels(upstream, result).inc()


class ConnectionMetrics:
    """What happens on one connection; also the `gateway.upstream.UpstreamObserver` its
    adapter reports to."""

    def __init__(self, metrics: Metrics, name: str) -> None:
        self._metrics = metrics
        self.name = name
        self._in_flight = metrics.in_flight.labels(name)

    def http_call(self, operation: str, status_class: str, seconds: float) -> None:
        self._metrics.requests_of(self.name, operation, status_class).inc()
        self._metrics.request_duration_of(self.name, operation).observe(seconds)

    def token_refreshed(self, result: str) -> None:
        self._metrics.token_refreshes.labels(self.name, result).inc()

    def retried(self, operation: str) -> None:
        self._metrics.retries.labels(self.name, operation).inc()

    @contextlib.contextmanager
    def in_flight(self) -> Iterator[None]:
        gauge = self._in_flight
        gauge.inc()
        try:
            yield
        finally:
            gauge.dec()
