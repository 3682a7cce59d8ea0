"""Shared fixtures: simulators with a manual clock, and a real gateway on a free port."""

from __future__ import annotations

import io
import logging
import socket
from collections.abc import AsyncIterator, Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

import grpc
import httpx2
import pytest

from adapters.installed import REGISTRY
from adapters.kiiex.simulator import KiiexSimulator
from adapters.simulation import ManualClock
from adapters.simulation.loopback import LoopbackServer
from cancellation.v1 import gateway_pb2_grpc
from gateway.app.serve import GatewayServer
from gateway.config import Config, parse_config
from gateway.logs import JsonFormatter
from tests.redis_server import RedisServer

KIIEX_ENV = {
    "KIIEX_USERNAME": "operator",
    "KIIEX_PASSWORD": "operator-pass",
    "ZUORA_CLIENT_ID": "sim-client",
    "ZUORA_CLIENT_SECRET": "sim-secret",
    "ZUORA_USER": "sim-user",
    "ZUORA_PASSWORD": "sim-password",
    "NON_ASCII": "usér",
}


def kiiex_connection(base_url: str | None = "http://kiiex.sim", **overrides: Any) -> dict[str, Any]:
    """A KIIEX connection table; an override of None removes that key."""
    table = {
        **_in_process(base_url),
        "upstream": "kiiex",
        "default": True,
        "base_url": base_url,
        "username_env": "KIIEX_USERNAME",
        "password_env": "KIIEX_PASSWORD",
        "retry": {"backoff_initial_seconds": 0.001, "backoff_max_seconds": 0.002},
        "confirm_interval_seconds": 0.01,
        **overrides,
    }
    return {key: value for key, value in table.items() if value is not None}


def zuora_connection(base_url: str | None = "http://zuora.sim", **overrides: Any) -> dict[str, Any]:
    """A Zuora connection table; an override of None removes that key."""
    table = {
        **_in_process(base_url),
        "upstream": "zuora",
        "base_url": base_url,
        "client_id_env": "ZUORA_CLIENT_ID",
        "client_secret_env": "ZUORA_CLIENT_SECRET",
        "retry": {"backoff_initial_seconds": 0.001, "backoff_max_seconds": 0.002},
        **overrides,
    }
    return {key: value for key, value in table.items() if value is not None}


def _in_process(base_url: str | None) -> dict[str, Any]:
    """The made-up `*.sim` hosts are reached through a transport the test injects: no
    request crosses a network, so plain HTTP to them is allowed."""
    return {"allow_plaintext": True} if base_url and base_url.endswith(".sim") else {}


def make_config(
    connections: Mapping[str, dict[str, Any]],
    environ: Mapping[str, str] = KIIEX_ENV,
    **sections: Any,
) -> Config:
    """A config of these connections; other top-level tables (`idempotency`, `server`
    keys) may be given by name."""
    server = {
        "listen": "127.0.0.1:0",
        "shutdown_grace_seconds": 10,
        "metrics_listen": "",
        "allow_unauthenticated": True,
        **sections.pop("server", {}),
    }
    data = {"server": server, "connections": dict(connections), **sections}
    return parse_config(data, environ, REGISTRY.option_schemas)


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock(now=1000.0)


@pytest.fixture
def kiiex_sim(clock: ManualClock) -> KiiexSimulator:
    return KiiexSimulator(clock=clock)


@pytest.fixture
async def kiiex_http(kiiex_sim: KiiexSimulator) -> AsyncIterator[LoopbackServer]:
    """The KIIEX simulator served over real HTTP on a loopback port."""
    async with LoopbackServer(kiiex_sim.app) as server:
        yield server


GatewayFactory = Callable[..., Any]


@pytest.fixture
async def start_gateway() -> AsyncIterator[Callable[..., Any]]:
    """Starts real gateways (real gRPC on loopback); returns (stub, server). Stopped at teardown."""
    started: list[tuple[GatewayServer, grpc.aio.Channel]] = []

    async def start(
        config: Config, transports: Mapping[str, httpx2.AsyncBaseTransport] | None = None
    ) -> tuple[gateway_pb2_grpc.CancellationGatewayStub, GatewayServer]:
        server = GatewayServer(config, transports)
        port = await server.start()
        channel = grpc.aio.insecure_channel(f"127.0.0.1:{port}")
        started.append((server, channel))
        return gateway_pb2_grpc.CancellationGatewayStub(channel), server

    yield start
    for server, channel in started:
        await channel.close()
        await server.stop(grace=0.5)


@pytest.fixture
async def kiiex_gateway(
    start_gateway: Callable[..., Any], kiiex_sim: KiiexSimulator
) -> tuple[gateway_pb2_grpc.CancellationGatewayStub, GatewayServer]:
    """A gateway whose one KIIEX connection talks to the simulator in-process."""
    config = make_config({"kiiex-main": kiiex_connection()})
    transport = httpx2.ASGITransport(app=kiiex_sim.app)
    result: tuple[gateway_pb2_grpc.CancellationGatewayStub, GatewayServer] = await start_gateway(
        config, {"kiiex-main": transport}
    )
    return result


@pytest.fixture
def refused_url() -> Iterator[str]:
    """An address on loopback that refuses connections: bound (so nobody else can take the
    port while the test runs) but not listening."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        yield f"http://127.0.0.1:{sock.getsockname()[1]}"


@pytest.fixture
def redis_server(tmp_path: Path) -> Iterator[RedisServer]:
    """A real redis-server on a free loopback port, for this test alone."""
    server = RedisServer(tmp_path)
    server.start()
    yield server
    server.stop()


@pytest.fixture
def captured_logs() -> Iterator[io.StringIO]:
    """Every log record of the process, as the JSON lines `configure_logging` writes."""
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JsonFormatter())
    root = logging.getLogger()
    level = root.level
    root.addHandler(handler)
    root.setLevel(logging.DEBUG)  # debug included: nothing may leak at any level
    yield stream
    root.removeHandler(handler)
    root.setLevel(level)
