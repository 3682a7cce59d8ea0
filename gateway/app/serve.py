"""Serving: the composition of every part. Builds each connection's adapter through the
registry, the router, the call pipeline and the idempotency store, and the grpc.aio server
with health checking, reflection and metrics (interceptors plus a Prometheus endpoint);
stops gracefully."""

from __future__ import annotations

import asyncio
import logging
import signal
import sys
import time
from collections.abc import Callable, Mapping
from typing import Any
from wsgiref.simple_server import WSGIServer

import grpc
import prometheus_client
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

from adapters.installed import REGISTRY
from gateway import VERSION
from gateway.auth import Callers
from gateway.config import DRAIN_MARGIN, Config
from gateway.connection import ConnectionSettings
from gateway.drain import Drain
from gateway.idempotency import IdempotencySettings, IdempotencyStore
from gateway.metrics import MULTIPROCESS, Metrics, possible_results
from gateway.pipeline import Pipeline
from gateway.registry import Registry
from gateway.router import Router
from gateway.rpc import reflection
from gateway.rpc.interceptors import AuthInterceptor, MetricsInterceptor, TracingInterceptor
from gateway.rpc.server import SERVICES, DrainAwareHealth, bind, grpc_server
from gateway.rpc.servicer import SERVICE_NAME, CancellationService, rpc_handler
from gateway.secrets import SECRETS, SHORTEST
from gateway.stores.memory import MemoryStore
from gateway.tracing import Tracing

log = logging.getLogger(__name__)
# In a drain, calls the transport queued before the signal keep arriving for a moment; the
# gateway answers them itself (UNAVAILABLE) until none came for this long.
DRAIN_QUIET_SECONDS = 0.1
# How long a stopping gateway gives its last spans to reach the collector (out of
# DRAIN_MARGIN, kept for closing).
TRACES_FLUSH_SECONDS = 0.5
# How stale a worker's circuit_state may be in the summed metrics (see Metrics.sample).
SAMPLE_SECONDS = 1.0


def idempotency_store(settings: IdempotencySettings) -> IdempotencyStore:
    if settings.store == "redis":
        # Imported only when configured: redis-py and what it loads cost ~6 MB per process.
        from gateway.stores.redis import RedisStore

        return RedisStore(settings.redis_url)
    return MemoryStore()


def connection_fields(settings: ConnectionSettings) -> dict[str, object]:
    """What the start-up log (and `cancelgw check`) says of a connection: where it goes, how
    it leaves, what it trusts and who it is; never a secret."""
    certificate = settings.client_certificate
    return {
        "connection": settings.name,
        "upstream": settings.upstream,
        "base_url": str(getattr(settings.options, "base_url", "")),
        "leaves": settings.egress.describe(),
        "trust": settings.ca_file or "system roots",
        "client_certificate": (
            f"{certificate.subject}, expires "
            f"{time.strftime('%Y-%m-%d', time.gmtime(certificate.expires))}"
            if certificate
            else "none"
        ),
    }


def prepare_job_metrics(metrics: Metrics, config: Config, registry: Registry) -> None:
    """Creates the job series of every job kind the configured connections can serve."""
    for name in sorted({c.upstream for c in config.connections.values()}):
        upstream = registry.upstreams[name]
        results = possible_results(upstream.codes.values())
        for job in upstream.jobs:
            metrics.prepare_job(job.upstream, job.operation, results)


class GatewayServer:
    """One gateway: `start()`, serve, `stop()`. Transports may be injected for tests, by
    connection name, and `tracing` (an in-memory exporter); `registry` says which upstreams
    there are."""

    def __init__(
        self,
        config: Config,
        transports: Mapping[str, Any] | None = None,
        *,
        registry: Registry = REGISTRY,
        tracing: Tracing | None = None,
    ) -> None:
        self.config = config
        self.tracing = tracing or Tracing(config.tracing)
        self.metrics = Metrics()
        python = ".".join(map(str, sys.version_info[:3]))
        self.metrics.built(version=VERSION, python=python, grpc=grpc.__version__)
        connected = {
            name: registry.upstreams[settings.upstream].connect(
                settings, (transports or {}).get(name)
            )
            for name, settings in config.connections.items()
        }
        for settings in config.connections.values():
            log.info("connection", extra=connection_fields(settings))
        operations = {
            name: tuple(sorted({job.operation for job in upstream.jobs}))
            for name, upstream in registry.upstreams.items()
        }
        self.router = Router(config, connected, operations, self.metrics)
        prepare_job_metrics(self.metrics, config, registry)
        self.drain = Drain()
        self.store = idempotency_store(config.idempotency)
        pipeline = Pipeline(
            self.metrics, drain=self.drain, store=self.store, idempotency=config.idempotency
        )
        self.health = DrainAwareHealth(self.drain)
        SECRETS.configured(config.secrets)
        if any(len(secret) < SHORTEST for secret in config.secrets):
            log.warning(f"a configured secret is shorter than {SHORTEST} characters: not scrubbed")
        callers = Callers(config.callers, allow_unauthenticated=config.server.allow_unauthenticated)
        self.metrics.prepare_callers(callers.names)
        # Probes and schema discovery need no credentials; CancelJob always does.
        open_services = {health.SERVICE_NAME, *reflection.NAMES}
        self._server = grpc_server(
            MetricsInterceptor(self.metrics, SERVICES),
            TracingInterceptor(self.tracing, open_services),
            AuthInterceptor(callers, open_services, self.metrics),
            shared=config.server.workers > 1,
        )
        self.service = service = CancellationService(
            self.router, pipeline, registry, self.drain, self.metrics, callers
        )
        self._server.add_generic_rpc_handlers((rpc_handler(service),))
        health_pb2_grpc.add_HealthServicer_to_server(self.health, self._server)
        if config.server.reflection:
            reflection.enable_reflection(self._server, (SERVICE_NAME, health.SERVICE_NAME))
        self._health_server: grpc.aio.Server | None = None
        if config.server.health_listen:
            self._health_server = grpc_server(
                MetricsInterceptor(self.metrics, ()), shared=config.server.workers > 1
            )
            health_pb2_grpc.add_HealthServicer_to_server(self.health, self._health_server)
        self.port = 0
        self.health_port: int | None = None
        self.metrics_port: int | None = None
        self._metrics_http: WSGIServer | None = None
        self._sampler: asyncio.Task[None] | None = None

    async def start(self) -> int:
        """Binds and starts serving (metrics endpoint first, so a gateway never serves
        unobserved); returns the bound gRPC port (useful with port 0)."""
        self.drain.bind(asyncio.get_running_loop())
        self._serve_metrics()
        settings = self.config.server
        try:
            self.port = bind(self._server, settings.listen, settings)
            if self._health_server is not None:
                self.health_port = bind(self._health_server, settings.health_listen, None)
                await self._health_server.start()
            await self._server.start()
        except BaseException:
            await self._stop_metrics()
            raise
        for service in ("", SERVICE_NAME):
            await self.health.set(service, health_pb2.HealthCheckResponse.SERVING)
        if MULTIPROCESS:
            self._sampler = asyncio.create_task(self._sample_metrics())
        return self.port

    async def _sample_metrics(self) -> None:
        while True:
            self.metrics.sample()
            await asyncio.sleep(SAMPLE_SECONDS)

    async def stop(self, grace: float | None = None) -> None:
        """Drains, then closes: NOT_SERVING and new calls answered UNAVAILABLE by the gateway
        from the moment the drain began (the signal, or this call); in-flight calls finish
        within the grace (no new attempts, no more confirmation polls); then the transport
        stops. The metrics endpoint goes last, so the drain itself can be scraped."""
        grace = self.config.server.shutdown_grace if grace is None else grace
        self.drain.begin()
        end = (self.drain.begun_at or time.monotonic()) + grace
        await self.health.enter_graceful_shutdown()
        await self.drain.settled(quiet=DRAIN_QUIET_SECONDS, until=end - DRAIN_MARGIN / 2)
        await self._server.stop(max(0.0, end - time.monotonic()))
        if self._health_server is not None:
            await self._health_server.stop(0)
        for route in self.router.routes.values():
            await route.adapter.aclose()
        await self.store.aclose()
        if self._sampler is not None:
            self._sampler.cancel()
        # The last spans, off the event loop, within the margin the drain keeps for closing.
        await asyncio.to_thread(self.tracing.shutdown, TRACES_FLUSH_SECONDS)
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
        process instead of draining it.

        The handler is a plain `signal.signal` one, not the event loop's: it runs at the next
        bytecode however busy the loop is, so the drain takes effect at once under load."""
        stopping = asyncio.Event()
        loop = asyncio.get_running_loop()

        def on_signal(signum: int, frame: object) -> None:
            self.drain.begin()
            loop.call_soon_threadsafe(stopping.set)

        for signum in (signal.SIGTERM, signal.SIGINT):
            signal.signal(signum, on_signal)
        if ready is not None:
            ready()
        await stopping.wait()
        log.info(
            "stopping: draining in-flight calls", extra={"grace": self.config.server.shutdown_grace}
        )
        await self.stop()
