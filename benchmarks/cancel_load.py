"""`make bench`: a bounded load on the sandbox, printing throughput, latency and memory.

The gateway and its simulators run as `cancelgw sandbox` in a child process on loopback;
this process is the client. Figures, not assertions: speed goals live here, not in tests.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import socket
import statistics
import sys
import time
from pathlib import Path

import grpc

from cancellation.v1 import gateway_pb2 as pb
from cancellation.v1 import gateway_pb2_grpc
from simulators.kiiex import EXAMPLE_REPORT
from simulators.zuora import EXAMPLE_RUN

STARTUP_SECONDS = 30.0
JOBS = {
    "kiiex-report": pb.CancelJobRequest(
        kiiex_user_report=pb.KiiexUserReport(user_report_id=EXAMPLE_REPORT)
    ),
    "zuora-run": pb.CancelJobRequest(zuora_report_run=pb.ZuoraReportRun(report_run_id=EXAMPLE_RUN)),
}


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


def _rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


async def _wait_ready(stub: gateway_pb2_grpc.CancellationGatewayStub) -> None:
    deadline = time.monotonic() + STARTUP_SECONDS
    while True:
        try:
            await stub.CancelJob(JOBS["zuora-run"], timeout=1.0)
            return
        except grpc.aio.AioRpcError:
            if time.monotonic() > deadline:
                raise
            await asyncio.sleep(0.1)


async def _load(
    stub: gateway_pb2_grpc.CancellationGatewayStub,
    request: pb.CancelJobRequest,
    calls: int,
    concurrency: int,
) -> tuple[list[float], int]:
    latencies: list[float] = []
    failures = 0
    remaining = iter(range(calls))

    async def worker() -> None:
        nonlocal failures
        for _ in remaining:
            started = time.perf_counter()
            try:
                response = await stub.CancelJob(request, timeout=10.0)
                failures += response.outcome == pb.OUTCOME_FAILED
            except grpc.aio.AioRpcError:
                failures += 1
            latencies.append(time.perf_counter() - started)

    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return latencies, failures


def _report(job: str, latencies: list[float], failures: int, seconds: float) -> str:
    cuts = statistics.quantiles(latencies, n=100)
    return (
        f"{job:13} {len(latencies):6d} calls  {len(latencies) / seconds:8.0f} calls/s  "
        f"p50 {cuts[49] * 1000:6.1f} ms  p95 {cuts[94] * 1000:6.1f} ms  "
        f"p99 {cuts[98] * 1000:6.1f} ms  failed {failures}"
    )


async def main(calls: int, concurrency: int) -> int:
    target = f"127.0.0.1:{_free_port()}"
    cancelgw = str(Path(sys.executable).parent / "cancelgw")
    child = await asyncio.create_subprocess_exec(
        cancelgw, "sandbox", "--listen", target, stdout=asyncio.subprocess.DEVNULL
    )
    try:
        async with grpc.aio.insecure_channel(target) as channel:
            stub = gateway_pb2_grpc.CancellationGatewayStub(channel)
            await _wait_ready(stub)
            idle = _rss_mib(child.pid)
            print(f"sandbox pid {child.pid}, {calls} calls per job at concurrency {concurrency}")
            for job, request in JOBS.items():
                started = time.perf_counter()
                latencies, failures = await _load(stub, request, calls, concurrency)
                print(_report(job, latencies, failures, time.perf_counter() - started))
            loaded = _rss_mib(child.pid)
            print(f"gateway+simulators RSS: idle {idle:.1f} MiB, after load {loaded:.1f} MiB")
    finally:
        child.terminate()
        await asyncio.wait_for(child.wait(), STARTUP_SECONDS)
    return 0


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--calls", type=int, default=int(os.environ.get("BENCH_CALLS", 2000)))
    parser.add_argument("--concurrency", type=int, default=64)
    args = parser.parse_args()
    sys.exit(asyncio.run(main(args.calls, args.concurrency)))
