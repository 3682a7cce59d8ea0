"""The composition root: builds each connection's adapter through the registry, the router and
the call pipeline, and the grpc.aio server with health checking, reflection and metrics
(interceptor plus a Prometheus endpoint); stops gracefully."""

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

from adapters import REGISTRY
from cancellation.v1 import gateway_pb2
from gateway import VERSION, reflection
from gateway.auth import Callers
from gateway.config import DRAIN_MARGIN, Config, IdempotencySettings, ServerSettings
from gateway.drain import Drain
from gateway.idempotency import IdempotencyStore
from gateway.interceptors import AuthInterceptor, MetricsInterceptor, TracingInterceptor
from gateway.metrics import MULTIPROCESS, Metrics, possible_results
from gateway.pipeline import Pipeline
from gateway.registry import Registry
from gateway.router import Router
from gateway.secrets import SECRETS, SHORTEST
from gateway.service import CancellationService, rpc_handler
from gateway.tracing import Tracing
from stores.memory import MemoryStore

SERVICE = gateway_pb2.DESCRIPTOR.services_by_name["CancellationGateway"]
SERVICE_NAME = SERVICE.full_name
# Every service the server registers, for the gRPC metrics' start-up series.
SERVICES = (
    SERVICE,
    health_pb2.DESCRIPTOR.services_by_name["Health"],
    reflection.V1ALPHA,
    reflection.V1,
)
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
        from stores.redis import RedisStore

        return RedisStore(settings.redis_url)
    return MemoryStore()


class DrainAwareHealth(health.aio.HealthServicer):  # type: ignore[misc]
    """The standard health service, NOT_SERVING from the instant a drain begins (the
    signal handler sets a flag; the watchers are told through the event loop)."""

    def __init__(self, drain: Drain) -> None:
        super().__init__()
        self._drain = drain

    async def Check(  # noqa: N802 - the name is the RPC's
        self, request: health_pb2.HealthCheckRequest, context: grpc.aio.ServicerContext
    ) -> health_pb2.HealthCheckResponse:
        if self._drain.began:
            return health_pb2.HealthCheckResponse(status=health_pb2.HealthCheckResponse.NOT_SERVING)
        return await super().Check(request, context)


# What a call's metadata may take in all. grpc's own default refuses at random between a soft
# limit (8 KiB) and a hard one (16 KiB): the same call would pass or fail by chance. One limit
# makes it decided: up to this much is always served, more is always RESOURCE_EXHAUSTED.
MAX_METADATA_BYTES = 16 * 1024


def _grpc_server(*interceptors: grpc.aio.ServerInterceptor, shared: bool) -> grpc.aio.Server:
    # A port is shared only when `server.workers` asks for it: grpc would otherwise share a
    # port already in use by another program, silently.
    options = [
        ("grpc.so_reuseport", int(shared)),
        ("grpc.max_metadata_size", MAX_METADATA_BYTES),
        ("grpc.absolute_max_metadata_size", MAX_METADATA_BYTES),
    ]
    return grpc.aio.server(interceptors=interceptors, options=options)


def _bind(server: grpc.aio.Server, listen: str, settings: ServerSettings | None) -> int:
    """Binds `listen`, with TLS when `settings` has it; an error names the address."""
    tls = settings.tls if settings is not None else None
    try:
        if tls is None:
            return int(server.add_insecure_port(listen))
        credentials = grpc.ssl_server_credentials(
            [(tls.key, tls.cert)],
            root_certificates=tls.client_ca,
            require_client_auth=tls.client_ca is not None,
        )
        return int(server.add_secure_port(listen, credentials))
    except RuntimeError as error:
        raise RuntimeError(
            f"cannot listen on {listen}: the address is in use, or not this host's"
        ) from error


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
        self._server = _grpc_server(
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
            self._health_server = _grpc_server(
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
            self.port = _bind(self._server, settings.listen, settings)
            if self._health_server is not None:
                self.health_port = _bind(self._health_server, settings.health_listen, None)
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
