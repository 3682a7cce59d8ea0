"""The embedded default: the gateway wired to built-in upstream simulators on loopback.

`cancelgw sandbox` (and so `make run`) serves it; end-to-end tests and the benchmark start
the very same thing on free ports.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

from adapters import OPTION_PARSERS
from gateway.config import parse_config
from gateway.server import GatewayServer
from simulators.kiiex import KiiexSimulator
from simulators.loopback import LoopbackServer

# Fixed ids so the README and the printed examples stay valid from run to run.
EXAMPLE_REPORT = "8e3a7f52-1c9d-4b6e-a0f4-2d5b9c7e1a30"
MISSING_REPORT = "00000000-0000-4000-8000-000000000000"
_ENVIRON = {"SANDBOX_KIIEX_USERNAME": "operator", "SANDBOX_KIIEX_PASSWORD": "operator-pass"}


@dataclass
class Sandbox:
    server: GatewayServer
    kiiex: KiiexSimulator
    target: str


def sandbox_config(listen: str, kiiex_url: str) -> dict[str, Any]:
    return {
        "server": {"listen": listen, "shutdown_grace_seconds": 2},
        "connections": {
            "kiiex-sandbox": {
                "upstream": "kiiex",
                "default": True,
                "base_url": kiiex_url,
                "path_prefix": "/ap",
                "token_header": "aptoken",
                "username_env": "SANDBOX_KIIEX_USERNAME",
                "password_env": "SANDBOX_KIIEX_PASSWORD",
                "confirm_timeout_seconds": 5,
                "confirm_interval_seconds": 0.2,
            },
        },
    }


@contextlib.asynccontextmanager
async def sandbox(listen: str = "127.0.0.1:0") -> AsyncIterator[Sandbox]:
    """Simulators on free loopback ports plus a started gateway on `listen`."""
    kiiex = KiiexSimulator()
    kiiex.add_report(EXAMPLE_REPORT)
    async with LoopbackServer(kiiex.app) as kiiex_http:
        config = parse_config(sandbox_config(listen, kiiex_http.url), _ENVIRON, OPTION_PARSERS)
        server = GatewayServer(config)
        port = await server.start()
        try:
            yield Sandbox(server, kiiex, f"127.0.0.1:{port}")
        finally:
            await server.stop(grace=1.0)


def _instructions(box: Sandbox) -> str:
    target = box.target
    return f"""
Cancellation gateway sandbox: gRPC on {target}, KIIEX simulator built in.
Stop with Ctrl-C.

Try it from another shell (same checkout):
  .venv/bin/cancelgw cancel --target {target} kiiex-report {EXAMPLE_REPORT}
      -> ACCEPTED (KIIEX acknowledges receipt); add --confirm to poll until CANCELED
  .venv/bin/cancelgw cancel --target {target} kiiex-report {MISSING_REPORT}
      -> FAILED with REASON_NOT_FOUND
  grpcurl -plaintext -d '{{"kiiex_user_report": {{"user_report_id": "{EXAMPLE_REPORT}"}}}}' \\
      {target} cancellation.v1.CancellationGateway/CancelJob
"""


async def run_sandbox(listen: str) -> int:
    try:
        async with sandbox(listen) as box:
            print(_instructions(box), flush=True)
            await box.server.serve_until_signalled()
    except RuntimeError as error:
        print(f"error: cannot start the sandbox on {listen}: {error}")
        return 1
    return 0
