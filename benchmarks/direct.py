"""The upstream driven directly with the gateway's HTTP client, no gRPC in between: what the
HTTP leg alone costs. `python -m benchmarks.direct UPSTREAM_URL CONCURRENCY SECONDS` prints
one JSON line: requests per second and p50 latency in ms."""

from __future__ import annotations

import asyncio
import json
import statistics
import sys
import time

from benchmarks.relay import LIMIT, engine


async def main(url: str, concurrency: int, seconds: float) -> None:
    send, close = engine("gateway", limit=LIMIT)
    body = json.dumps({"UserReportId": "8e3a7f52-1c9d-4b6e-a0f4-2d5b9c7e1a30"}).encode()
    target = f"{url}/ap/CancelUserReport"
    latencies: list[float] = []
    end = time.monotonic() + seconds

    async def worker() -> None:
        while time.monotonic() < end:
            started = time.perf_counter()
            json.loads(await send(target, body))
            latencies.append(time.perf_counter() - started)

    for _ in range(20):  # warm the pool
        await send(target, body)
    began = time.monotonic()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    elapsed = time.monotonic() - began
    await close()
    p50 = statistics.median(latencies) * 1000 if latencies else 0.0
    print(json.dumps({"rps": len(latencies) / elapsed, "p50_ms": p50}), flush=True)


if __name__ == "__main__":
    import uvloop

    uvloop.install()
    asyncio.run(main(sys.argv[1], int(sys.argv[2]), float(sys.argv[3])))
