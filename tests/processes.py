"""`cancelgw serve` as a real process: config file, environment, the port it bound."""

from __future__ import annotations

import asyncio
import json
import os
import re
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc

from cancellation.v1 import gateway_pb2 as pb
from cancellation.v1 import gateway_pb2_grpc

BOUND = 500  # polls of 10 ms: five seconds at most for what a test waits to happen
KIIEX_ENV = {"KIIEX_USERNAME": "operator", "KIIEX_PASSWORD": "operator-pass"}
CANCELGW = str(Path(sys.executable).parent / "cancelgw")
STARTUP_SECONDS = 20.0


@dataclass
class Served:
    process: asyncio.subprocess.Process
    target: str
    log: Path
    """The process's stderr: its JSON log lines."""

    def log_lines(self) -> list[str]:
        """The lines written so far. Tests poll while the process writes: the text after
        the last newline may be a line still being written, so it waits for the next read."""
        return self.log.read_text().split("\n")[:-1]

    def records(self) -> list[dict[str, Any]]:
        """The JSON log records (grpc's own lines are plain text and left out)."""
        return [json.loads(line) for line in self.log_lines() if line.startswith("{")]


def _files(folder: Path, config: str) -> tuple[Path, Path]:
    """A config file written for the next gateway, and the file its stderr goes to."""
    name = f"gateway-{len(list(folder.glob('gateway-*.toml')))}"
    path, log = folder / f"{name}.toml", folder / f"{name}.log"
    path.write_text(config)
    return path, log


async def serve(
    folder: Path, config: str, env: dict[str, str], *, cwd: Path | None = None
) -> Served:
    """Starts `cancelgw serve` on `config` (TOML text), in `cwd`, and waits until it serves."""
    path, log = _files(folder, config)
    with log.open("wb") as stderr:  # a file, not a pipe: a full pipe would block the gateway
        process = await asyncio.create_subprocess_exec(
            CANCELGW, "serve", "--config", str(path),
            stdout=asyncio.subprocess.PIPE, stderr=stderr, cwd=cwd,
            env={**_without_proxies(), **env},
        )  # fmt: skip
    assert process.stdout is not None
    async with asyncio.timeout(STARTUP_SECONDS):
        line = await process.stdout.readline()
    found = re.search(rb"serving on port (\d+)", line)
    if found is None:
        await process.wait()
        raise AssertionError(f"cancelgw serve did not start: {line!r} {log.read_text()[-2000:]}")
    return Served(process, f"127.0.0.1:{found.group(1).decode()}", log)


def kiiex_gateway_config(
    kiiex_url: str, *, redis: bool = False, grace: float = 5, server: str = "", **connection: object
) -> str:
    """A gateway with one KIIEX connection `k`; `server` adds lines to `[server]`."""
    settings = {"timeout_seconds": 2, "max_in_flight": 32, **connection}
    lines = "\n".join(f"{key} = {json.dumps(value)}" for key, value in settings.items())
    store = '[idempotency]\nstore = "redis"\n' if redis else ""
    return f"""
[server]
listen = "127.0.0.1:0"
metrics_listen = ""
allow_unauthenticated = true
shutdown_grace_seconds = {grace}
log_level = "info"
{server}
{store}
[connections.k]
upstream = "kiiex"
base_url = "{kiiex_url}"
username_env = "KIIEX_USERNAME"
password_env = "KIIEX_PASSWORD"
confirm_interval_seconds = 0.05
{lines}
"""


async def until(condition: Callable[[], object], what: str) -> None:
    """Polls `condition` every 10 ms, for five seconds at most."""
    for _ in range(BOUND):
        if condition():
            return
        await asyncio.sleep(0.01)
    raise AssertionError(f"never happened: {what}")


async def outcome(
    stub: gateway_pb2_grpc.CancellationGatewayStub, request: pb.CancelJobRequest
) -> pb.CancelJobResponse | grpc.aio.AioRpcError:
    """The envelope, or the gRPC error: whatever the call ends with."""
    try:
        return await stub.CancelJob(request, timeout=30)
    except grpc.aio.AioRpcError as error:
        return error


def _without_proxies() -> dict[str, str]:
    """This environment less its proxy variables: the served gateway reaches the loopback
    simulators directly, whatever proxy the machine running the tests has set."""
    return {k: v for k, v in os.environ.items() if not k.lower().endswith("_proxy")}
