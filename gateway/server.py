"""The composition root: builds adapters from config, the router, and the grpc.aio server
with health checking and reflection; stops gracefully."""

from __future__ import annotations

import asyncio
import logging
import signal
from collections.abc import Mapping

import grpc
import httpx
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from adapters import SUPPORTED_JOBS, UPSTREAMS
from cancellation.v1 import gateway_pb2, gateway_pb2_grpc
from gateway.config import Config
from gateway.router import Router
from gateway.service import CancellationService

SERVICE_NAME = gateway_pb2.DESCRIPTOR.services_by_name["CancellationGateway"].full_name
log = logging.getLogger(__name__)


class GatewayServer:
    """One gateway: `start()`, serve, `stop()`. Transports may be injected for tests."""

    def __init__(
        self, config: Config, transports: Mapping[str, httpx.AsyncBaseTransport] | None = None
    ) -> None:
        self.config = config
        adapters = {
            name: UPSTREAMS[settings.upstream].connect(settings, (transports or {}).get(name))
            for name, settings in config.connections.items()
        }
        self.router = Router(config, adapters, SUPPORTED_JOBS)
        self.health = health.aio.HealthServicer()
        self._server = grpc.aio.server()
        gateway_pb2_grpc.add_CancellationGatewayServicer_to_server(
            CancellationService(self.router), self._server
        )
        health_pb2_grpc.add_HealthServicer_to_server(self.health, self._server)
        reflection.enable_server_reflection(
            (SERVICE_NAME, health.SERVICE_NAME, reflection.SERVICE_NAME), self._server
        )
        self.port = 0

    async def start(self) -> int:
        """Binds and starts serving; returns the bound port (useful with port 0)."""
        self.port = self._server.add_insecure_port(self.config.server.listen)
        await self._server.start()
        for service in ("", SERVICE_NAME):
            await self.health.set(service, health_pb2.HealthCheckResponse.SERVING)
        return self.port

    async def stop(self, grace: float | None = None) -> None:
        """Reports NOT_SERVING, lets in-flight calls finish within the grace, then closes."""
        await self.health.enter_graceful_shutdown()
        await self._server.stop(self.config.server.shutdown_grace if grace is None else grace)
        for route in self.router.routes.values():
            await route.adapter.aclose()

    async def serve_until_signalled(self) -> None:
        """Runs until SIGTERM or SIGINT, then stops gracefully."""
        stopping = asyncio.Event()
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(signum, stopping.set)
        await stopping.wait()
        log.info(
            "stopping: draining in-flight calls", extra={"grace": self.config.server.shutdown_grace}
        )
        await self.stop()
