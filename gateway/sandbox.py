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
from simulators.zuora import ZuoraSimulator

# Fixed ids so the README and the printed examples stay valid from run to run.
EXAMPLE_REPORT = "8e3a7f52-1c9d-4b6e-a0f4-2d5b9c7e1a30"
MISSING_REPORT = "00000000-0000-4000-8000-000000000000"
EXAMPLE_INSTRUMENT = 1
EXAMPLE_RUN = "ff808081529f4e3401529fd61f080074"
MISSING_RUN = "0123456789abcdef0123456789abcdef"
_ENVIRON = {
    "SANDBOX_KIIEX_USERNAME": "operator",
    "SANDBOX_KIIEX_PASSWORD": "operator-pass",
    "SANDBOX_ZUORA_CLIENT_ID": "sim-client",
    "SANDBOX_ZUORA_CLIENT_SECRET": "sim-secret",
}


@dataclass
class Sandbox:
    server: GatewayServer
    kiiex: KiiexSimulator
    zuora: ZuoraSimulator
    target: str
    example_quote: tuple[int, int]


def sandbox_config(listen: str, kiiex_url: str, zuora_url: str) -> dict[str, Any]:
    confirmation = {"confirm_timeout_seconds": 5, "confirm_interval_seconds": 0.2}
    return {
        "server": {"listen": listen, "shutdown_grace_seconds": 2, "metrics_listen": "127.0.0.1:0"},
        "connections": {
            "kiiex-sandbox": {
                "upstream": "kiiex",
                "base_url": kiiex_url,
                "username_env": "SANDBOX_KIIEX_USERNAME",
                "password_env": "SANDBOX_KIIEX_PASSWORD",
                **confirmation,
            },
            "zuora-sandbox": {
                "upstream": "zuora",
                "base_url": zuora_url,
                "client_id_env": "SANDBOX_ZUORA_CLIENT_ID",
                "client_secret_env": "SANDBOX_ZUORA_CLIENT_SECRET",
                **confirmation,
            },
        },
    }


@contextlib.asynccontextmanager
async def sandbox(listen: str = "127.0.0.1:0") -> AsyncIterator[Sandbox]:
    """Simulators on free loopback ports plus a started gateway on `listen`."""
    kiiex, zuora = KiiexSimulator(), ZuoraSimulator()
    kiiex.add_report(EXAMPLE_REPORT)
    quote = kiiex.add_quote_pair(instrument_id=EXAMPLE_INSTRUMENT)
    zuora.add_run("PROCESSINGDATA", run_id=EXAMPLE_RUN)
    async with LoopbackServer(kiiex.app) as kiiex_http, LoopbackServer(zuora.app) as zuora_http:
        data = sandbox_config(listen, kiiex_http.url, zuora_http.url)
        server = GatewayServer(parse_config(data, _ENVIRON, OPTION_PARSERS))
        port = await server.start()
        try:
            yield Sandbox(server, kiiex, zuora, f"127.0.0.1:{port}", quote)
        finally:
            await server.stop(grace=1.0)


def _instructions(box: Sandbox) -> str:
    cancel = f".venv/bin/cancelgw cancel --target {box.target}"
    bid, ask = box.example_quote
    return f"""
Cancellation gateway sandbox: gRPC on {box.target}, KIIEX and Zuora simulators built in.
Stop with Ctrl-C.

Try it from another shell (same checkout):
  {cancel} kiiex-report {EXAMPLE_REPORT}
      -> ACCEPTED (KIIEX acknowledges receipt); add --confirm to poll until CANCELED
  {cancel} kiiex-report {MISSING_REPORT}
      -> FAILED with REASON_NOT_FOUND
  {cancel} kiiex-quote --oms-id 1 --instrument-id {EXAMPLE_INSTRUMENT} {bid} {ask}
      -> ACCEPTED with a bid and an ask leg
  {cancel} zuora-run {EXAMPLE_RUN}
      -> CANCELED; again -> ALREADY_CANCELED
  {cancel} zuora-run {MISSING_RUN}
      -> FAILED with REASON_NOT_FOUND
  grpcurl -plaintext -d '{{"kiiex_user_report": {{"user_report_id": "{EXAMPLE_REPORT}"}}}}' \\
      {box.target} cancellation.v1.CancellationGateway/CancelJob

Prometheus metrics: curl http://127.0.0.1:{box.server.metrics_port}/metrics
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
