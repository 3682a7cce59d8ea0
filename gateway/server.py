"""The composition root: builds each connection's adapter through the registry, the router and
the call pipeline, and the grpc.aio server with health checking, reflection and metrics
(interceptor plus a Prometheus endpoint); stops gracefully."""

from __future__ import annotations

import asyncio
import logging
import signal
from collections.abc import Callable, Mapping
from typing import Any
from wsgiref.simple_server import WSGIServer

import grpc
import prometheus_client
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection, reflection_pb2

from adapters import REGISTRY
from cancellation.v1 import gateway_pb2, gateway_pb2_grpc
from gateway.config import Config
from gateway.interceptors import MetricsInterceptor
from gateway.metrics import Metrics, possible_results
from gateway.pipeline import Pipeline
from gateway.registry import Registry
from gateway.router import Router
from gateway.service import CancellationService

SERVICE = gateway_pb2.DESCRIPTOR.services_by_name["CancellationGateway"]
SERVICE_NAME = SERVICE.full_name
# Every service the server registers, for the gRPC metrics' start-up series.
SERVICES = (
    SERVICE,
    health_pb2.DESCRIPTOR.services_by_name["Health"],
    reflection_pb2.DESCRIPTOR.services_by_name["ServerReflection"],
)
log = logging.getLogger(__name__)


def prepare_job_metrics(metrics: Metrics, config: Config, registry: Registry) -> None:
    """Creates the job series of every job kind the configured connections can serve."""
    for name in sorted({c.upstream for c in config.connections.values()}):
        upstream = registry.upstreams[name]
        results = possible_results(upstream.codes.values())
        for job in upstream.jobs:
            metrics.prepare_job(job.upstream, job.operation, results)


class GatewayServer:
    """One gateway: `start()`, serve, `stop()`. Transports may be injected for tests, by
    connection name; `registry` says which upstreams there are."""

    def __init__(
        self,
        config: Config,
        transports: Mapping[str, Any] | None = None,
        *,
        registry: Registry = REGISTRY,
    ) -> None:
        self.config = config
        self.metrics = Metrics()
        connected = {
            name: registry.upstreams[settings.upstream].connect(
                settings, (transports or {}).get(name)
            )
            for name, settings in config.connections.items()
        }
        operations = {
            name: tuple(sorted({job.operation for job in upstream.jobs}))
            for name, upstream in registry.upstreams.items()
        }
        self.router = Router(config, connected, operations, self.metrics)
        prepare_job_metrics(self.metrics, config, registry)
        self.health = health.aio.HealthServicer()
        # One process per port: grpc would otherwise share a port already in use, silently.
        self._server = grpc.aio.server(
            interceptors=[MetricsInterceptor(self.metrics, SERVICES)],
            options=[("grpc.so_reuseport", 0)],
        )
        gateway_pb2_grpc.add_CancellationGatewayServicer_to_server(
            CancellationService(self.router, Pipeline(self.metrics), registry), self._server
        )
        health_pb2_grpc.add_HealthServicer_to_server(self.health, self._server)
        reflection.enable_server_reflection(
            (SERVICE_NAME, health.SERVICE_NAME, reflection.SERVICE_NAME), self._server
        )
        self.port = 0
        self.metrics_port: int | None = None
        self._metrics_http: WSGIServer | None = None

    async def start(self) -> int:
        """Binds and starts serving (metrics endpoint first, so a gateway never serves
        unobserved); returns the bound gRPC port (useful with port 0)."""
        self._serve_metrics()
        listen = self.config.server.listen
        try:
            try:
                self.port = self._server.add_insecure_port(listen)
            except RuntimeError as error:
                raise RuntimeError(f"cannot listen on {listen}: the address is in use") from error
            await self._server.start()
        except BaseException:
            await self._stop_metrics()
            raise
        for service in ("", SERVICE_NAME):
            await self.health.set(service, health_pb2.HealthCheckResponse.SERVING)
        return self.port

    async def stop(self, grace: float | None = None) -> None:
        """Reports NOT_SERVING, lets in-flight calls finish within the grace, then closes.
        The metrics endpoint goes last, so the drain itself can be scraped."""
        await self.health.enter_graceful_shutdown()
        await self._server.stop(self.config.server.shutdown_grace if grace is None else grace)
        for route in self.router.routes.values():
            await route.adapter.aclose()
        await self._stop_metrics()

    def _serve_metrics(self) -> None:
        """Serves /metrics from a thread of prometheus_client, off the event loop."""
        address = self.config.server.metrics_listen
        if not address:
            return
        host, _, port = address.rpartition(":")
        try:
            httpd, _ = prometheus_client.start_http_server(
                int(port), host.strip("[]"), registry=self.metrics.registry
            )
        except OSError as error:
            raise RuntimeError(f"cannot serve metrics on {address}: {error.strerror}") from error
        self._metrics_http = httpd
        self.metrics_port = httpd.server_port

    async def _stop_metrics(self) -> None:
        httpd, self._metrics_http = self._metrics_http, None
        if httpd is not None:
            # shutdown() waits for the serving thread's next poll: not on the event loop.
            await asyncio.to_thread(httpd.shutdown)
            httpd.server_close()

    async def serve_until_signalled(self, ready: Callable[[], None] | None = None) -> None:
        """Runs until SIGTERM or SIGINT, then stops gracefully. `ready` runs once the signal
        handlers are in place: announcing readiness earlier lets a quick SIGTERM kill the
        process instead of draining it."""
        stopping = asyncio.Event()
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(signum, stopping.set)
        if ready is not None:
            ready()
        await stopping.wait()
        log.info(
            "stopping: draining in-flight calls", extra={"grace": self.config.server.shutdown_grace}
        )
        await self.stop()
