"""`server.workers = N`: N gateway processes on one port, and the supervisor that runs them.

Each worker is a whole gateway (`cancelgw serve` with `CANCELGW_WORKER=1`) binding the same
gRPC port with SO_REUSEPORT, so the kernel spreads connections across them and every core
works. Their metrics go to prometheus-client's multiprocess files; the supervisor serves
the sum on `metrics_listen`. SIGTERM and SIGINT go to every worker and each drains as one
gateway does; the supervisor exits 0 once all of them did. A worker that dies on its own
takes the others down with it (drained) and the supervisor exits 1: the platform restarts
the whole pod instead of serving at N-1 unnoticed.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
from pathlib import Path
from types import FrameType
from wsgiref.simple_server import WSGIServer

from prometheus_client import CollectorRegistry, multiprocess, start_http_server

from gateway.config import Config

WORKER = "CANCELGW_WORKER"
STARTUP_SECONDS = 30.0
SERVING = "cancellation gateway serving"
"""The first line a gateway prints once it serves (`cancelgw serve`)."""


def is_worker() -> bool:
    return os.environ.get(WORKER) == "1"


def supervise(config_path: Path, config: Config) -> int:
    """Runs `config.server.workers` workers until a signal; 0 when every one drained."""
    metrics_dir = tempfile.mkdtemp(prefix="cancelgw-metrics-")
    listen = _resolved(config.server.listen)
    env = {
        **os.environ,
        WORKER: "1",
        "PROMETHEUS_MULTIPROC_DIR": metrics_dir,
        "CANCELGW_LISTEN": listen,
        "CANCELGW_METRICS_LISTEN": "",  # the supervisor serves the sum
    }
    # -P: the workers import the installed gateway, never a `gateway/` in the current folder.
    argv = [sys.executable, "-P", "-m", "gateway.app.cli", "serve", "--config", str(config_path)]
    workers: list[_Worker] = []
    stopping = _forward_signals(workers)  # before the first spawn: no worker is orphaned
    try:
        workers.extend(_Worker(argv, env) for _ in range(config.server.workers))
        return _run(workers, config, listen, metrics_dir, stopping)
    finally:
        for worker in workers:
            if worker.process.poll() is None:
                worker.process.kill()
                worker.process.wait()
        shutil.rmtree(metrics_dir, ignore_errors=True)


def _run(
    workers: list[_Worker],
    config: Config,
    listen: str,
    metrics_dir: str,
    stopping: threading.Event,
) -> int:
    started = all(worker.started.wait(STARTUP_SECONDS) for worker in workers)
    if not started or any(worker.process.poll() is not None for worker in workers):
        print("error: a worker did not start", file=sys.stderr)
        return 1
    try:
        httpd = _serve_metrics(config.server.metrics_listen, metrics_dir)
    except RuntimeError as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    port = listen.rpartition(":")[2]
    print(f"{SERVING} on port {port} ({len(workers)} workers)", flush=True)
    try:
        return _wait_all(workers, stopping, metrics_dir)
    finally:
        if httpd is not None:
            httpd.shutdown()


def _resolved(listen: str) -> str:
    """The address every worker binds: port 0 becomes one free port, the same for all."""
    host, _, port = listen.rpartition(":")
    if port != "0":
        return listen
    with socket.socket(socket.AF_INET6 if host.startswith("[") else socket.AF_INET) as sock:
        sock.bind((host.strip("[]"), 0))
        return f"{host}:{sock.getsockname()[1]}"


class _Worker:
    """One worker process; its stdout is relayed, its "serving" line sets `started`."""

    def __init__(self, argv: list[str], env: dict[str, str]) -> None:
        self.process = subprocess.Popen(argv, env=env, stdout=subprocess.PIPE, text=True)
        self.started = threading.Event()
        threading.Thread(target=self._relay, daemon=True).start()

    def _relay(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            if line.startswith(SERVING) and not self.started.is_set():
                self.started.set()
            else:
                sys.stdout.write(line)
        self.started.set()  # exited: nothing more to wait for (`_wait_all` sees how)


def _forward_signals(workers: list[_Worker]) -> threading.Event:
    """SIGTERM and SIGINT reach every worker; the event says a stop was asked for."""
    stopping = threading.Event()

    def forward(signum: int, frame: FrameType | None) -> None:
        stopping.set()
        _signal_all(workers, signum)

    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, forward)
    return stopping


def _signal_all(workers: list[_Worker], signum: int) -> None:
    """Signals the workers not yet reaped. Never polls: reaping here would hide an exit from
    `_wait_all`'s `os.wait` (and a reaped pid may already be another process's)."""
    for worker in workers:
        if worker.process.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(worker.process.pid, signum)


def _wait_all(workers: list[_Worker], stopping: threading.Event, metrics_dir: str) -> int:
    """Reaps the workers as they exit; one exiting unasked drains the others."""
    failed = False
    running = {worker.process.pid: worker for worker in workers}
    while running:
        pid, code = _next_exit(running)
        worker = running.pop(pid, None)
        if worker is None:
            continue
        worker.process.returncode = code  # reaped: never signalled again
        # Its live gauges (in flight, circuit state) leave the sum with it.
        multiprocess.mark_process_dead(pid, metrics_dir)  # type: ignore[no-untyped-call]
        if code != 0 or not stopping.is_set():
            failed = True
            if not stopping.is_set():
                print(f"error: worker {pid} exited unasked; stopping the others", file=sys.stderr)
                stopping.set()
                _signal_all(list(running.values()), signal.SIGTERM)
    return 1 if failed else 0


def _next_exit(running: dict[int, _Worker]) -> tuple[int, int]:
    """(pid, exit code) of the next worker to exit."""
    try:
        pid, status = os.wait()
    except ChildProcessError:  # already reaped by its Popen, which kept the code
        pid, worker = next(iter(running.items()))
        return pid, worker.process.wait()
    return pid, os.waitstatus_to_exitcode(status)


def _serve_metrics(address: str, metrics_dir: str) -> WSGIServer | None:
    """/metrics summed over the workers' files, by prometheus-client's own collector."""
    if not address:
        return None
    registry = CollectorRegistry()
    multiprocess.MultiProcessCollector(registry, path=metrics_dir)  # type: ignore[no-untyped-call]
    host, _, port = address.rpartition(":")
    try:
        httpd, _ = start_http_server(int(port), host.strip("[]"), registry=registry)
    except OSError as error:
        raise RuntimeError(f"cannot serve metrics on {address}: {error.strerror}") from error
    return httpd
