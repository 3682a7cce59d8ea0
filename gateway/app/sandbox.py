"""The embedded default: the gateway wired to every registered upstream's simulator on
loopback, seeded with the examples it prints.

`cancelgw sandbox` (and so `make run`) serves it; end-to-end tests and the benchmark start
the very same thing on free ports. Nothing here names an upstream: each `Upstream.sandbox`
says which simulator runs it and what to seed.
"""

from __future__ import annotations

import contextlib
import importlib
import json
import sys
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass
from typing import Any

from adapters.installed import REGISTRY
from adapters.simulation import Example, SandboxUpstream
from adapters.simulation.loopback import LoopbackServer
from gateway.app.cancel_command import command_line
from gateway.app.serve import GatewayServer
from gateway.config import parse_config
from gateway.jobs import job_values
from gateway.registry import Registry
from gateway.rpc.servicer import SERVICE_NAME
from gateway.upstream import Upstream

_LOOPBACK = frozenset({"127.0.0.1", "localhost", "::1"})


@dataclass
class Sandbox:
    server: GatewayServer
    simulators: Mapping[str, Any]
    """By upstream name."""
    examples: list[Example]
    target: str


def sandbox_upstream(upstream: Upstream) -> SandboxUpstream:
    module, _, attribute = upstream.sandbox.partition(":")
    if not module or not attribute:
        raise RuntimeError(f"upstream {upstream.name} names no simulator for the sandbox")
    spec: SandboxUpstream = getattr(importlib.import_module(module), attribute)
    return spec


def sandbox_config(
    listen: str, specs: Mapping[str, SandboxUpstream], urls: Mapping[str, str]
) -> dict[str, Any]:
    # The simulators answer on loopback within milliseconds: short timeouts, a short drain.
    timing = {"timeout_seconds": 2, "confirm_timeout_seconds": 5, "confirm_interval_seconds": 0.2}
    server = {"listen": listen, "shutdown_grace_seconds": 3, "metrics_listen": "127.0.0.1:0"}
    # No callers: anyone who reaches the port may cancel, so only loopback may reach it.
    server["allow_unauthenticated"] = True
    return {
        "server": server,
        "connections": {
            f"{name}-sandbox": {**spec.connection(urls[name]), **timing}
            for name, spec in specs.items()
        },
    }


@contextlib.asynccontextmanager
async def sandbox(
    listen: str = "127.0.0.1:0", registry: Registry = REGISTRY
) -> AsyncIterator[Sandbox]:
    """Simulators on free loopback ports plus a started gateway on `listen`."""
    host = listen.rpartition(":")[0].strip("[]")
    if host not in _LOOPBACK:
        raise RuntimeError(
            f"the sandbox serves unauthenticated calls, so only on loopback, not {host!r}"
        )
    specs = {name: sandbox_upstream(u) for name, u in registry.upstreams.items()}
    simulators = {name: spec.simulator() for name, spec in specs.items()}
    examples = [example for name, spec in specs.items() for example in spec.seed(simulators[name])]
    environ = {key: value for spec in specs.values() for key, value in spec.environ.items()}
    async with contextlib.AsyncExitStack() as stack:
        urls = {}
        for name, simulator in simulators.items():
            served = await stack.enter_async_context(LoopbackServer(simulator.app))
            urls[name] = served.url
        config = parse_config(sandbox_config(listen, specs, urls), environ, registry.option_schemas)
        server = GatewayServer(config, registry=registry)
        port = await server.start()
        try:
            yield Sandbox(server, simulators, examples, f"127.0.0.1:{port}")
        finally:
            await server.stop(grace=1.0)


def instructions(box: Sandbox) -> str:
    cancel = f".venv/bin/cancelgw cancel --target {box.target}"
    calls = "\n".join(
        f"  {cancel} {command_line(example.job)}\n      -> {example.expect}"
        for example in box.examples
    )
    first = box.examples[0].job
    payload = json.dumps({first.proto_field: job_values(first)})
    return f"""
Cancellation gateway sandbox: gRPC on {box.target}, with simulators of {", ".join(box.simulators)}.
Unauthenticated calls are allowed (server.allow_unauthenticated): it listens on loopback only.
Stop with Ctrl-C.

Try it from another shell (same checkout):
{calls}
  grpcurl -plaintext -d '{payload}' \\
      {box.target} {SERVICE_NAME}/CancelJob

Prometheus metrics: curl http://127.0.0.1:{box.server.metrics_port}/metrics
"""


async def run_sandbox(listen: str, registry: Registry = REGISTRY) -> int:
    try:
        async with sandbox(listen, registry) as box:
            print(instructions(box), flush=True)
            await box.server.serve_until_signalled()
    except RuntimeError as error:
        print(f"error: cannot start the sandbox on {listen}: {error}", file=sys.stderr)
        return 1
    return 0
