"""`make bench`: the gateway against the floor it can reach, every part in its own process.

- a cheap raw upstream (`benchmarks.upstream`), so the figures measure the gateway;
- the gateway (`cancelgw serve`), one KIIEX connection to that upstream;
- a bare relay (`benchmarks.relay`): grpc.aio plus the gateway's HTTP client, no logic;
- the upstream driven directly with that client (`benchmarks.direct`);
- the servicer in process on a mock transport (`benchmarks.inprocess`): the gateway's
  own CPU per call, with little noise;
- h2load as the load generator (C, so it is not the bottleneck): unary gRPC with a
  pre-encoded request. It counts HTTP statuses only, and a gRPC error is an HTTP 200, so
  the gRPC codes are read from the gateway's own `grpc_server_handled_total`.

Concurrency 1, 16, 64, 256 and 1024, each point bounded in time; then one and two workers
at 256 (two need Redis: a redis-server on a free loopback port). Prints a table and writes
`bench.json`. Figures, not assertions: goals live here, never in a timed test.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import statistics
import struct
import subprocess
import sys
import tempfile
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from cancellation.v1 import gateway_pb2 as pb
from tests.redis_server import RedisServer, free_port

PYTHON = sys.executable
CANCELGW = str(Path(sys.executable).parent / "cancelgw")
CONCURRENCY = (1, 16, 64, 256, 1024)
WORKERS_AT = 256
METHOD = "/cancellation.v1.CancellationGateway/CancelJob"
REPORT = "8e3a7f52-1c9d-4b6e-a0f4-2d5b9c7e1a30"
STARTUP_SECONDS = 30.0


def _cpu_seconds(pids: list[int]) -> float:
    """User + system CPU of these processes so far (/proc/PID/stat fields 14 and 15)."""
    total = 0
    for pid in pids:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        total += int(fields[11]) + int(fields[12])
    return total / os.sysconf("SC_CLK_TCK")


def _rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def _children(pid: int) -> list[int]:
    path = Path(f"/proc/{pid}/task/{pid}/children")
    return [int(child) for child in path.read_text().split()]


@contextmanager
def _process(argv: list[str], env: dict[str, str] | None = None) -> Iterator[subprocess.Popen[str]]:
    """A child that prints one line once it serves (`ready`, or the gateway's)."""
    environ = {**os.environ, **(env or {})}
    process = subprocess.Popen(argv, stdout=subprocess.PIPE, text=True, env=environ)
    try:
        assert process.stdout is not None
        line = process.stdout.readline()
        if "ready" not in line and "serving" not in line:
            raise RuntimeError(f"{' '.join(argv[:4])} did not start: {line!r}")
        yield process
    finally:
        process.terminate()
        process.wait(timeout=STARTUP_SECONDS)


@dataclass(frozen=True)
class Load:
    """What h2load saw: calls answered 200 and not, wall latency quantiles, its own CPU."""

    succeeded: int
    failed: int
    rps: float
    p50_ms: float
    p99_ms: float
    generator_cpu_s: float


class H2load:
    """h2load driving unary CancelJob calls at one port; `run` is one bounded point."""

    def __init__(self, folder: Path) -> None:
        request = pb.CancelJobRequest(kiiex_user_report=pb.KiiexUserReport(user_report_id=REPORT))
        message = request.SerializeToString()
        self._body = folder / "request.bin"
        self._body.write_bytes(b"\x00" + struct.pack(">I", len(message)) + message)
        self._log = folder / "h2load.log"

    def run(self, port: int, concurrency: int, seconds: float) -> Load:
        clients = min(concurrency, 16)  # connections; the rest are streams on them
        argv = [
            "h2load", "-c", str(clients), "-m", str(max(1, concurrency // clients)),
            "-D", f"{round(seconds * 1000)}ms", "-d", str(self._body), "--log-file", str(self._log),
            "-H", "content-type: application/grpc", "-H", "te: trailers",
            f"http://127.0.0.1:{port}{METHOD}",
        ]  # fmt: skip
        self._log.unlink(missing_ok=True)  # h2load appends
        before = os.times()
        out = subprocess.run(argv, capture_output=True, text=True, check=True).stdout
        after = os.times()
        counts = re.search(r"(\d+) succeeded, (\d+) failed, (\d+) errored", out)
        if counts is None:
            raise RuntimeError(f"h2load printed no counts: {out[-500:]}")
        succeeded, failed, errored = map(int, counts.groups())
        # The log: one line per request, its duration in microseconds third.
        latencies = [int(line.split()[2]) / 1000 for line in self._log.read_text().splitlines()]
        cuts = statistics.quantiles(latencies, n=100) if len(latencies) > 1 else [0.0] * 99
        cpu = after.children_user - before.children_user
        cpu += after.children_system - before.children_system
        return Load(succeeded, failed + errored, succeeded / seconds, cuts[49], cuts[98], cpu)


@dataclass(frozen=True)
class Served:
    """A process under load: its pids (a supervisor's workers too) and ports."""

    process: subprocess.Popen[str]
    port: int
    metrics_port: int = 0

    @property
    def pids(self) -> list[int]:
        return [self.process.pid, *_children(self.process.pid)]


def _handled(metrics_port: int) -> dict[str, float]:
    """grpc_server_handled_total of CancelJob by code, summed over workers."""
    url = f"http://127.0.0.1:{metrics_port}/metrics"
    text = urllib.request.urlopen(url, timeout=5).read().decode()
    found: dict[str, float] = {}
    for line in text.splitlines():
        if line.startswith("grpc_server_handled_total") and '"CancelJob"' in line:
            code = re.search(r'grpc_code="(\w+)"', line)
            if code:
                found[code.group(1)] = found.get(code.group(1), 0.0) + float(line.split()[-1])
    return found


def _config(folder: Path, upstream_port: int, port: int, metrics_port: int, workers: int) -> Path:
    path = folder / f"gateway-{workers}.toml"
    path.write_text(f"""
[server]
listen = "127.0.0.1:{port}"
metrics_listen = "127.0.0.1:{metrics_port}"
allow_unauthenticated = true
log_level = "warning"
workers = {workers}
[idempotency]
store = "{"memory" if workers == 1 else "redis"}"
[connections.kiiex]
upstream = "kiiex"
base_url = "http://127.0.0.1:{upstream_port}"
username_env = "BENCH_USER"
password_env = "BENCH_PASSWORD"
max_in_flight = 256
pool_size = 64
""")
    return path


@contextmanager
def _gateway(
    folder: Path, upstream_port: int, workers: int, redis_url: str = ""
) -> Iterator[Served]:
    port, metrics_port = free_port(), free_port()
    config = _config(folder, upstream_port, port, metrics_port, workers)
    env = {"BENCH_USER": "bench", "BENCH_PASSWORD": "bench-password"}
    if redis_url:
        env["CANCELGW_REDIS_URL"] = redis_url
    with _process([CANCELGW, "serve", "--config", str(config)], env) as process:
        yield Served(process, port, metrics_port)


@dataclass(frozen=True)
class Point:
    rps: float
    cpu_us_per_call: float
    p50_ms: float
    p99_ms: float
    errors: int
    rss_mb: float
    generator_cpu_us_per_call: float


def measure(load: H2load, served: Served, concurrency: int, seconds: float) -> Point:
    """One point; CPU per call over the calls the server answered (its metrics, if any)."""
    load.run(served.port, concurrency, min(1.0, seconds))  # warm: connections, pools, caches
    codes = _handled(served.metrics_port) if served.metrics_port else {}
    cpu = _cpu_seconds(served.pids)
    result = load.run(served.port, concurrency, seconds)
    cpu = _cpu_seconds(served.pids) - cpu
    calls, errors = result.succeeded, result.failed
    if served.metrics_port:
        moved = {c: n - codes.get(c, 0) for c, n in _handled(served.metrics_port).items()}
        calls = round(sum(moved.values()))
        # An HTTP 200 with a gRPC error; not CANCELLED: h2load abandons the calls still in
        # flight when its time is up, and the gateway records those as CANCELLED.
        errors += round(calls - moved.get("OK", 0) - moved.get("Canceled", 0))
    return Point(
        rps=result.rps,
        cpu_us_per_call=1e6 * cpu / max(1, calls),
        p50_ms=result.p50_ms,
        p99_ms=result.p99_ms,
        errors=errors,
        rss_mb=max(_rss_mb(pid) for pid in served.pids),
        generator_cpu_us_per_call=1e6 * result.generator_cpu_s / max(1, result.succeeded),
    )


def _direct(upstream_port: int, concurrency: int, seconds: float) -> dict[str, float]:
    argv = [PYTHON, "-m", "benchmarks.direct", f"http://127.0.0.1:{upstream_port}",
            str(concurrency), str(seconds)]  # fmt: skip
    out = subprocess.run(argv, capture_output=True, text=True, check=True).stdout
    figures: dict[str, float] = json.loads(out.splitlines()[-1])
    return figures


def _inprocess() -> dict[str, float]:
    out = subprocess.run(
        [PYTHON, "-m", "benchmarks.inprocess"], capture_output=True, text=True, check=True
    ).stdout
    figures: dict[str, float] = json.loads(out.splitlines()[-1])
    return figures


def _row(c: int, gateway: Point, relay: Point, direct: dict[str, float]) -> dict[str, float]:
    return {
        "concurrency": c,
        "gateway_rps": round(gateway.rps),
        "relay_rps": round(relay.rps),
        "direct_rps": round(direct["rps"]),
        "gateway_cpu_us_per_call": round(gateway.cpu_us_per_call),
        "relay_cpu_us_per_call": round(relay.cpu_us_per_call),
        "gateway_p50_ms": round(gateway.p50_ms, 2),
        "gateway_p99_ms": round(gateway.p99_ms, 2),
        "direct_p50_ms": round(direct["p50_ms"], 2),
        "errors": gateway.errors + relay.errors,
        "gateway_rss_mb": round(gateway.rss_mb, 1),
        "generator_cpu_us_per_call": round(gateway.generator_cpu_us_per_call),
    }


HEADER = (
    f"{'conc':>5} {'gw rps':>7} {'relay':>7} {'direct':>7} {'gw µs':>6} {'relay µs':>8} "
    f"{'gw p50':>7} {'gw p99':>7} {'dir p50':>7} {'err':>4} {'rss MB':>6} {'h2load µs':>9}"
)


def _line(row: dict[str, float]) -> str:
    return (
        f"{row['concurrency']:>5} {row['gateway_rps']:>7} {row['relay_rps']:>7} "
        f"{row['direct_rps']:>7} {row['gateway_cpu_us_per_call']:>6} "
        f"{row['relay_cpu_us_per_call']:>8} {row['gateway_p50_ms']:>7.2f} "
        f"{row['gateway_p99_ms']:>7.2f} {row['direct_p50_ms']:>7.2f} {row['errors']:>4} "
        f"{row['gateway_rss_mb']:>6.1f} {row['generator_cpu_us_per_call']:>9}"
    )


def run(*, seconds: float, concurrencies: tuple[int, ...], output: Path) -> dict[str, object]:
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        load = H2load(folder)
        upstream_port, relay_port = free_port(), free_port()
        upstream_argv = [PYTHON, "-m", "benchmarks.upstream", str(upstream_port)]
        relay_argv = [PYTHON, "-m", "benchmarks.relay", str(relay_port),
                      f"http://127.0.0.1:{upstream_port}"]  # fmt: skip
        rows = []
        print(HEADER, flush=True)
        with _process(upstream_argv), _process(relay_argv) as relay_process:
            relay = Served(relay_process, relay_port)
            with _gateway(folder, upstream_port, 1) as gateway:
                for c in concurrencies:
                    row = _row(
                        c,
                        measure(load, gateway, c, seconds),
                        measure(load, relay, c, seconds),
                        _direct(upstream_port, c, seconds),
                    )
                    rows.append(row)
                    print(_line(row), flush=True)
                one = measure(load, gateway, WORKERS_AT, seconds)
            redis = RedisServer(folder)
            redis.start()
            try:
                with _gateway(folder, upstream_port, 2, redis.url) as gateway:
                    two = measure(load, gateway, WORKERS_AT, seconds)
            finally:
                redis.stop()
    inprocess = _inprocess()
    result: dict[str, object] = {
        "runs": rows,
        "workers2_rps_at_256": round(two.rps),
        "workers1_rps_at_256": round(one.rps),
        "workers2_errors_at_256": two.errors,
        "inprocess": inprocess,
        "seconds_per_point": seconds,
        "cpus": os.cpu_count(),
    }
    output.write_text(json.dumps(result, indent=2) + "\n")
    print(
        f"in process: CancelJob {inprocess['gateway_us_per_call']} µs "
        f"({inprocess['gateway_traced_us_per_call']} µs traced), a bare httpx2 POST "
        f"{inprocess['bare_post_us_per_call']} µs (mock transport, no gRPC, no sockets)"
    )
    print(f"at {WORKERS_AT}: 1 worker {one.rps:.0f} calls/s, 2 workers {two.rps:.0f} calls/s")
    print(f"written to {output}")
    return result


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=5.0, help="per point (default 5)")
    parser.add_argument("--concurrency", default=",".join(map(str, CONCURRENCY)))
    parser.add_argument("--output", type=Path, default=Path("bench.json"))
    args = parser.parse_args()
    for tool, package in (("h2load", "nghttp2-client"), ("redis-server", "redis-server")):
        if shutil.which(tool) is None:
            print(f"error: {tool} is missing (Debian package {package})", file=sys.stderr)
            return 1
    concurrencies = tuple(int(c) for c in args.concurrency.split(","))
    run(seconds=args.seconds, concurrencies=concurrencies, output=args.output)
    return 0


if __name__ == "__main__":
    sys.exit(main())
