"""The gateway's own CPU per CancelJob, without gRPC, sockets or another process: the servicer
called directly on one event loop, its KIIEX connection on an httpx2 mock transport, against
a bare httpx2 POST on the same transport. Low noise, so a change in the gateway's Python
shows here first. Once more with tracing on (every span recorded and batch-exported to
nowhere), for what tracing costs per call. `python -m benchmarks.inprocess [CALLS]` prints
one JSON line; `make bench` includes it.
"""

from __future__ import annotations

import asyncio
import json
import sys
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

import httpx2
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter, SpanExportResult

from adapters.installed import REGISTRY
from cancellation.v1 import gateway_pb2 as pb
from gateway.app.serve import GatewayServer
from gateway.config import Config, parse_config
from gateway.tracing import Tracing

REPORT = "8e3a7f52-1c9d-4b6e-a0f4-2d5b9c7e1a30"
_LOGIN = {"Authenticated": True, "SessionToken": "bench-session", "User": {"UserId": 1}}
_CANCELED = {"result": True, "errormsg": None, "errorcode": 0, "detail": None}
WARM = 200


def _upstream(request: httpx2.Request) -> httpx2.Response:
    body = _LOGIN if request.url.path.endswith("/AuthenticateUser") else _CANCELED
    return httpx2.Response(200, json=body)


class _Context:
    """What the servicer asks of a grpc.aio context, answered for a plain call."""

    def time_remaining(self) -> float | None:
        return None

    def peer(self) -> str:
        return "ipv4:127.0.0.1:1"

    def invocation_metadata(self) -> tuple[tuple[str, str], ...]:
        return ()

    async def send_initial_metadata(self, metadata: object) -> None:
        pass


async def _per_call(calls: int, call: Callable[[], Awaitable[Any]]) -> float:
    """Microseconds per call, after a warm-up."""
    for _ in range(WARM):
        await call()
    started = time.perf_counter()
    for _ in range(calls):
        await call()
    return (time.perf_counter() - started) / calls * 1e6


async def measure(calls: int) -> dict[str, float]:
    data = {
        "server": {"allow_unauthenticated": True, "metrics_listen": ""},
        "connections": {
            # A mock transport answers: nothing crosses a network, so plain HTTP is allowed.
            "k": {"upstream": "kiiex", "base_url": "http://upstream", "username_env": "U",
                  "password_env": "P", "allow_plaintext": True},
        },
    }  # fmt: skip
    config = parse_config(data, {"U": "bench", "P": "bench-password"}, REGISTRY.option_schemas)
    server = GatewayServer(config, transports={"k": httpx2.MockTransport(_upstream)})
    request = pb.CancelJobRequest(kiiex_user_report=pb.KiiexUserReport(user_report_id=REPORT))
    context: Any = _Context()
    gateway = await _per_call(calls, lambda: server.service.CancelJob(request, context))
    traced = await _per_call(calls, _traced_call(config, request, context))
    client = httpx2.AsyncClient(transport=httpx2.MockTransport(_upstream))
    body = json.dumps({"UserReportId": REPORT}).encode()

    async def post() -> object:
        response = await client.post("http://upstream/ap/CancelUserReport", content=body)
        return response.json()

    bare = await _per_call(calls, post)
    await client.aclose()
    return {
        "gateway_us_per_call": round(gateway),
        "gateway_traced_us_per_call": round(traced),
        "bare_post_us_per_call": round(bare),
    }


class _Discarded(SpanExporter):
    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        return SpanExportResult.SUCCESS


def _traced_call(
    config: Config, request: pb.CancelJobRequest, context: Any
) -> Callable[[], Awaitable[Any]]:
    """CancelJob with every span recorded and batch-exported (to nowhere), inside the server
    span the interceptor would open."""
    tracing = Tracing(config.tracing, processor=BatchSpanProcessor(_Discarded()))
    server = GatewayServer(
        config, transports={"k": httpx2.MockTransport(_upstream)}, tracing=tracing
    )
    metadata = (("traceparent", "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"),)

    async def call() -> Any:
        with tracing.serving("/cancellation.v1.CancellationGateway/CancelJob", metadata):
            return await server.service.CancelJob(request, context)

    return call


if __name__ == "__main__":
    print(json.dumps(asyncio.run(measure(int(sys.argv[1]) if len(sys.argv) > 1 else 5000))))
