"""The gRPC server itself: its options (one metadata limit, a port shared only when asked),
its ports (TLS when configured; errors name the address), the services it registers, and a
health service that knows of drains."""

from __future__ import annotations

import asyncio
import contextlib
from pathlib import Path

import grpc
from grpc_health.v1 import health, health_pb2

from gateway.drain import Drain
from gateway.rpc import reflection
from gateway.rpc.servicer import SERVICE
from gateway.serving import ServerSettings, TlsSettings

# Every service the server registers, for the gRPC metrics' start-up series.
SERVICES = (
    SERVICE,
    health_pb2.DESCRIPTOR.services_by_name["Health"],
    reflection.V1ALPHA,
    reflection.V1,
)


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

    async def Watch(  # noqa: N802 - the name is the RPC's
        self, request: health_pb2.HealthCheckRequest, context: grpc.aio.ServicerContext
    ) -> None:
        """The standard stream until a drain begins; then NOT_SERVING, and the stream ends,
        so that an open Watch (a load balancer's) never holds the shutdown.

        The standard loop writes NOT_SERVING itself (only one write may be under way on a
        stream): once it has, it waits for the next change, and is stopped there."""
        told = _Told(context)
        watching = asyncio.ensure_future(super().Watch(request, told))
        draining = asyncio.ensure_future(self._drain.begun())
        try:
            await asyncio.wait((watching, draining), return_when=asyncio.FIRST_COMPLETED)
            if draining.done() and not watching.done():
                await self.enter_graceful_shutdown()  # every status NOT_SERVING, told now
                with contextlib.suppress(TimeoutError):  # a service it never knew: no change
                    await asyncio.wait_for(told.not_serving.wait(), NOT_SERVING_SECONDS)
        finally:
            draining.cancel()
            if not watching.done():
                watching.cancel()
                await asyncio.gather(watching, return_exceptions=True)
        if watching.done() and not watching.cancelled() and (error := watching.exception()):
            raise error


# How long a drained Watch waits for its NOT_SERVING to be written before it ends anyway.
NOT_SERVING_SECONDS = 1.0


class _Told:
    """A Watch's context, noting when NOT_SERVING has been written to the stream."""

    def __init__(self, context: grpc.aio.ServicerContext) -> None:
        self._context = context
        self.not_serving = asyncio.Event()

    async def write(self, message: health_pb2.HealthCheckResponse) -> None:
        await self._context.write(message)
        if message.status == health_pb2.HealthCheckResponse.NOT_SERVING:
            self.not_serving.set()

    def __getattr__(self, name: str) -> object:
        return getattr(self._context, name)


# What a call's metadata may take in all. grpc's own default refuses at random between a soft
# limit (8 KiB) and a hard one (16 KiB): the same call would pass or fail by chance. One limit
# makes it decided: up to this much is always served, more is always RESOURCE_EXHAUSTED.
MAX_METADATA_BYTES = 16 * 1024


def grpc_server(*interceptors: grpc.aio.ServerInterceptor, shared: bool) -> grpc.aio.Server:
    # A port is shared only when `server.workers` asks for it: grpc would otherwise share a
    # port already in use by another program, silently.
    options = [
        ("grpc.so_reuseport", int(shared)),
        ("grpc.max_metadata_size", MAX_METADATA_BYTES),
        ("grpc.absolute_max_metadata_size", MAX_METADATA_BYTES),
    ]
    return grpc.aio.server(interceptors=interceptors, options=options)


def bind(server: grpc.aio.Server, listen: str, settings: ServerSettings | None) -> int:
    """Binds `listen`, with TLS when `settings` has it (its files read now); an error names
    the address."""
    tls = settings.tls if settings is not None else None
    try:
        if tls is None or not tls.enabled:
            return int(server.add_insecure_port(listen))
        return int(server.add_secure_port(listen, _credentials(tls)))
    except RuntimeError as error:
        raise RuntimeError(
            f"cannot listen on {listen}: the address is in use, or not this host's"
        ) from error


def _credentials(tls: TlsSettings) -> grpc.ServerCredentials:
    client_ca = _pem(tls.client_ca_file) if tls.mutual else None
    return grpc.ssl_server_credentials(
        [(_pem(tls.key_file), _pem(tls.cert_file))],
        root_certificates=client_ca,
        require_client_auth=client_ca is not None,
    )


def _pem(path: str) -> bytes:
    """A PEM file as it is now (it was checked when the config was read)."""
    try:
        return Path(path).read_bytes()
    except OSError as error:
        raise RuntimeError(f"cannot read {path}: {error.strerror}") from error
