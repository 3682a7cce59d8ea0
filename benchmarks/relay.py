"""The floor for `make bench`: a bare grpc.aio relay that forwards each CancelJob to the
upstream with an HTTP client and no logic (no validation, no metrics, no logs), answering
a fixed envelope. Run as `python -m benchmarks.relay GRPC_PORT UPSTREAM_URL [ENGINE]`; prints
`ready`. ENGINE is the HTTP client to measure (`gateway`: the one the adapters use)."""

from __future__ import annotations

import asyncio
import json
import signal
import sys
from collections.abc import Awaitable, Callable
from typing import Any

import grpc

from cancellation.v1 import gateway_pb2 as pb

Send = Callable[[str, bytes], Awaitable[bytes]]
_BODY = json.dumps({"UserReportId": "8e3a7f52-1c9d-4b6e-a0f4-2d5b9c7e1a30"}).encode()
# As the gateway's benchmark connection: max_in_flight 256, pool_size 64.
LIMIT, POOL = 256, 64
_HEADERS = {"aptoken": "bench-session", "content-type": "application/json"}


def _httpx_style(client: Any) -> Send:
    async def send(url: str, body: bytes) -> bytes:
        response = await client.post(url, content=body, headers=_HEADERS)
        content: bytes = response.content
        return content

    return send


def engine(name: str, limit: int) -> tuple[Send, Callable[[], Awaitable[None]]]:
    """(send, close) for one HTTP client, by name: `gateway` (adapters.http.engine_client:
    httpx2 over aiohttp's pool), `httpx2` (its own pool) or `aiohttp` (the bare engine)."""
    if name == "aiohttp":
        import aiohttp

        session = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=limit))

        async def send(url: str, body: bytes) -> bytes:
            async with session.post(url, data=body, headers=_HEADERS) as response:
                return await response.read()

        return send, session.close
    if name == "httpx2":
        import httpx2

        limits = httpx2.Limits(max_connections=limit, max_keepalive_connections=POOL)
        native = httpx2.AsyncClient(limits=limits)
        return _httpx_style(native), native.aclose
    from adapters.http import engine_client

    client = engine_client(limit=limit, keep=POOL)
    return _httpx_style(client), client.aclose


async def main(port: int, upstream: str, name: str) -> None:
    send, close = engine(name, limit=LIMIT)
    url = f"{upstream}/ap/CancelUserReport"
    answer = pb.CancelJobResponse(outcome=pb.OUTCOME_ACCEPTED, upstream="kiiex").SerializeToString()

    async def cancel_job(request: pb.CancelJobRequest, context: grpc.aio.ServicerContext) -> bytes:
        json.loads(await send(url, _BODY))
        return answer

    handler = grpc.method_handlers_generic_handler(
        "cancellation.v1.CancellationGateway",
        {
            "CancelJob": grpc.unary_unary_rpc_method_handler(
                cancel_job,
                request_deserializer=pb.CancelJobRequest.FromString,
                response_serializer=lambda raw: raw,
            )
        },
    )
    server = grpc.aio.server(options=[("grpc.so_reuseport", 1)])
    server.add_generic_rpc_handlers((handler,))
    server.add_insecure_port(f"127.0.0.1:{port}")
    await server.start()
    stop = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
    print("ready", flush=True)
    await stop.wait()
    await server.stop(0)
    await close()


if __name__ == "__main__":
    import uvloop

    uvloop.install()
    asyncio.run(
        main(int(sys.argv[1]), sys.argv[2], sys.argv[3] if len(sys.argv) > 3 else "gateway")
    )
