"""Job kind + connection name -> a route: the configured connection with its live adapter,
its in-flight bound, its breaker and its metrics. Nothing per call happens here; the call
itself is `gateway.pipeline`."""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass

from gateway.config import Config
from gateway.connection import ConnectionSettings
from gateway.errors import UnknownConnection
from gateway.jobs import JobKind
from gateway.metrics import ConnectionMetrics, Metrics
from gateway.resilience import Bulkhead, CircuitBreaker, Clock
from gateway.upstream import Adapter


@dataclass
class Route:
    settings: ConnectionSettings
    adapter: Adapter
    bulkhead: Bulkhead
    breaker: CircuitBreaker
    metrics: ConnectionMetrics


class Router:
    def __init__(
        self,
        config: Config,
        connected: Mapping[str, Adapter],
        operations: Mapping[str, tuple[str, ...]],
        metrics: Metrics,
        clock: Clock = time.monotonic,
    ) -> None:
        """`connected`: each connection's adapter, by connection name; `operations`: the
        operations of each upstream, by upstream name (for the metric series)."""
        self._config = config
        self.routes: Mapping[str, Route] = {
            name: _route(settings, connected[name], operations[settings.upstream], metrics, clock)
            for name, settings in config.connections.items()
        }

    def default_name(self, upstream: str) -> str:
        """The connection a request without `connection` goes to, or "" when none."""
        settings = self._config.default_connection(upstream)
        return settings.name if settings else ""

    def route(self, job: JobKind, connection: str) -> Route:
        """The connection for this job, or a gateway-side error naming what is wrong."""
        if not connection:
            settings = self._config.default_connection(job.upstream)
            if settings is None:
                raise UnknownConnection(f"no {job.upstream} connection is configured")
            return self.routes[settings.name]
        route = self.routes.get(connection)
        # One answer for "no such connection" and "another upstream's": the names of other
        # connections are nothing a caller needs to learn from an error.
        if route is None or route.settings.upstream != job.upstream:
            raise UnknownConnection(
                f"connection {connection!r} is not a configured {job.upstream} connection"
            )
        return route


def _route(
    settings: ConnectionSettings,
    adapter: Adapter,
    operations: tuple[str, ...],
    metrics: Metrics,
    clock: Clock,
) -> Route:
    breaker = CircuitBreaker(settings.breaker, clock)
    connection_metrics = metrics.connection(
        settings.name,
        operations=operations,
        in_flight_limit=settings.max_in_flight,
        circuit_state=lambda: breaker.state.value,
        client_cert_expires=certificate.expires
        if (certificate := settings.client_certificate)
        else None,
    )
    return Route(settings, adapter, Bulkhead(settings.max_in_flight), breaker, connection_metrics)
