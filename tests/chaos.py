"""Chaos: thousands of CancelJob calls through a real `cancelgw serve` process while a
quarter of the upstream answers go wrong, then every envelope is checked against what the
simulators recorded doing.

Faults, drawn per upstream request: HTTP 5xx, 429 with Retry-After, delays past the
gateway's timeout, answers held past it after the cancel was applied ("applied, answer
lost"), garbage and empty bodies, expired sessions and tokens, and TCP resets from a proxy
between the gateway and the simulators (before the request reaches them, or after, with the
answer dropped).

Printed: classified % (an envelope, or a gRPC error with its ErrorInfo), truthful %
(nothing an envelope claims contradicts the simulators), lost (calls with no classified
answer), crashes, tracebacks in the gateway's log, and its RSS before and after.

`make chaos` runs 10,000 calls; `tests/integration/test_chaos.py` runs 2,000 of them in
`make test` and requires 100 % classified, 100 % truthful, 0 lost, no crash, no traceback.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import random
import socket
import struct
import sys
import tempfile
import uuid
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
from google.rpc import error_details_pb2, status_pb2

from adapters.kiiex.simulator import CANCELED, KiiexSimulator
from adapters.simulation.faults import Fault, FaultQueue
from adapters.simulation.loopback import LoopbackServer
from adapters.zuora.simulator import ZuoraSimulator
from cancellation.v1 import gateway_pb2 as pb
from cancellation.v1 import gateway_pb2_grpc
from tests.processes import Served, serve

GATEWAY_TIMEOUT = 0.5  # seconds per upstream attempt: held answers outlast it
HELD = 0.8
KEY_SHARE = 0.3  # calls with an idempotency key
ENV = {
    "KIIEX_USERNAME": "operator",
    "KIIEX_PASSWORD": "operator-pass",
    "ZUORA_CLIENT_ID": "sim-client",
    "ZUORA_CLIENT_SECRET": "sim-secret",
}


class RandomFaults(FaultQueue):
    """Draws a fault for each request (at `rate`), instead of taking them in order; counts
    what it drew, and the held requests still pending (the run waits for them to settle)."""

    def __init__(self, rng: random.Random, rate: float, expire: Callable[[], None], body: Any):
        super().__init__(rate_limit_body=body)
        self._rng, self._rate, self._expire = rng, rate, expire
        self.drawn: Counter[str] = Counter()
        self.pending = 0

    def _take(self, auth: bool) -> Fault | None:
        if self._rng.random() >= self._rate:
            return None
        fault = self._rng.choice(
            [
                Fault("http_status", status=self._rng.choice([500, 502, 503])),
                Fault("rate_limited", seconds=0),
                Fault("delay", seconds=HELD),
                Fault("late", seconds=HELD),
                Fault("late", seconds=HELD),
                Fault("garbage"),
                Fault("empty"),
            ]
            + ([] if auth else [Fault("json", payload="expire")])
        )
        if fault.payload == "expire":  # sessions/tokens die now; the request goes on
            self._expire()
            self.drawn["expired session"] += 1
            return None
        self.drawn[f"{fault.kind} {fault.status if fault.kind == 'http_status' else ''}"] += 1
        return fault

    async def answer(self, *, auth: bool, respond: Callable[[], Awaitable[Any]]) -> Any:
        self.pending += 1
        try:
            return await super().answer(auth=auth, respond=respond)
        finally:
            self.pending -= 1


class ResettingProxy:
    """A TCP proxy that resets some connections: before a request reaches the upstream, or
    after it did, dropping the answer (SO_LINGER 0: the gateway sees a reset, not a close)."""

    def __init__(self, upstream_port: int, rng: random.Random, rate: float) -> None:
        self._upstream = upstream_port
        self._rng, self._rate = rng, rate
        self.resets: Counter[str] = Counter()
        self.port = 0
        self._server: asyncio.Server | None = None

    async def __aenter__(self) -> ResettingProxy:
        self._server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._server is not None:
            self._server.close()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self._upstream)
        except OSError:
            _reset(writer)
            return
        drop = asyncio.Event()
        with contextlib.suppress(OSError, asyncio.CancelledError):
            await asyncio.gather(
                self._pump_up(reader, up_writer, writer, drop),
                self._pump_down(up_reader, writer, drop),
            )
        _reset(up_writer)
        writer.close()

    async def _pump_up(
        self,
        reader: asyncio.StreamReader,
        up: asyncio.StreamWriter,
        client: asyncio.StreamWriter,
        drop: asyncio.Event,
    ) -> None:
        while data := await reader.read(65536):
            fate = self._rng.random()
            if fate < self._rate / 2:
                self.resets["before the upstream"] += 1
                _reset(client)
                _reset(up)
                return
            up.write(data)
            await up.drain()
            if fate < self._rate:
                self.resets["after the upstream, answer dropped"] += 1
                drop.set()
        up.close()

    async def _pump_down(
        self, up: asyncio.StreamReader, client: asyncio.StreamWriter, drop: asyncio.Event
    ) -> None:
        while data := await up.read(65536):
            if drop.is_set():
                _reset(client)
                return
            client.write(data)
            await client.drain()
        client.close()


def _reset(writer: asyncio.StreamWriter) -> None:
    sock = writer.get_extra_info("socket")
    if sock is not None:
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    writer.transport.abort()


@dataclass
class Upstreams:
    kiiex: KiiexSimulator
    zuora: ZuoraSimulator
    faults: list[RandomFaults]
    proxies: list[ResettingProxy]
    instruments: int = 100


def _config(kiiex_url: str, zuora_url: str) -> str:
    common = f"""timeout_seconds = {GATEWAY_TIMEOUT}
confirm_timeout_seconds = 1.5
confirm_interval_seconds = 0.05
[connections.{{name}}.retry]
max_attempts = 3
backoff_initial_seconds = 0.01
backoff_max_seconds = 0.05
# A fault mix this dense opens the circuit often (a failed shared login fails every call
# waiting on it at once), and open-circuit answers, being instant, would then be most of
# the run. The breaker has its own tests; here it stays out of the way.
[connections.{{name}}.breaker]
failure_threshold = 100000
reset_seconds = 0.2
"""
    return f"""
[server]
listen = "127.0.0.1:0"
metrics_listen = ""
allow_unauthenticated = true
log_level = "info"
[connections.kiiex]
upstream = "kiiex"
base_url = "{kiiex_url}"
username_env = "KIIEX_USERNAME"
password_env = "KIIEX_PASSWORD"
{common.format(name="kiiex")}
[connections.zuora]
upstream = "zuora"
base_url = "{zuora_url}"
client_id_env = "ZUORA_CLIENT_ID"
client_secret_env = "ZUORA_CLIENT_SECRET"
{common.format(name="zuora")}
"""


@dataclass
class Case:
    """One call and the job it targets (fresh: nothing canceled it before)."""

    request: pb.CancelJobRequest
    check: Callable[[], list[bool]]
    """Per leg, whether the simulator applied a cancel."""


def _case(rng: random.Random, up: Upstreams) -> Case:
    roll = rng.random()
    wait = rng.random() < 0.3
    key = uuid.uuid4().hex if rng.random() < KEY_SHARE else ""
    if roll < 0.4:
        report = up.kiiex.add_report()
        job = pb.CancelJobRequest(kiiex_user_report=pb.KiiexUserReport(user_report_id=report))
        applied = lambda: [up.kiiex.report_status(report) in ("UserCancelPending", "UserCancelled")]  # noqa: E731
    elif roll < 0.7:
        up.instruments += 1
        instrument = up.instruments
        bid, ask = up.kiiex.add_quote_pair(instrument_id=instrument)
        quote = pb.KiiexQuote(
            oms_id=1, instrument_id=instrument, bid_quote_id=bid, ask_quote_id=ask
        )
        job = pb.CancelJobRequest(kiiex_quote=quote)
        applied = lambda: [up.kiiex.quote_state(q) == CANCELED for q in (bid, ask)]  # noqa: E731
    else:
        run = up.zuora.add_run("PROCESSINGDATA")
        job = pb.CancelJobRequest(zuora_report_run=pb.ZuoraReportRun(report_run_id=run))
        applied = lambda: [up.zuora.run_status(run) == "CANCELLED"]  # noqa: E731
    job.wait_for_confirmation, job.idempotency_key = wait, key
    return Case(job, applied)


def _error_info(error: grpc.aio.AioRpcError) -> error_details_pb2.ErrorInfo | None:
    raw = dict(error.trailing_metadata() or ()).get("grpc-status-details-bin")
    if raw is None:
        return None
    info = error_details_pb2.ErrorInfo()
    status = status_pb2.Status.FromString(raw)
    return info if any(detail.Unpack(info) for detail in status.details) else None


SUCCESS = {pb.OUTCOME_ACCEPTED, pb.OUTCOME_CANCELED}


def untruths(response: pb.CancelJobResponse, applied: list[bool]) -> list[str]:
    """What in the envelope the simulator's record contradicts (empty: truthful)."""
    lost = any(a.delivery == pb.DELIVERY_NO_ANSWER for a in response.attempt_history)
    found = []
    if response.outcome == pb.OUTCOME_UNKNOWN and not lost:
        found.append("UNKNOWN without a lost answer")
    for leg, done in zip(response.legs, applied, strict=False):
        if leg.outcome in SUCCESS and not done:
            found.append(f"{leg.leg} {pb.Outcome.Name(leg.outcome)} but not applied")
        if leg.outcome == pb.OUTCOME_ALREADY_CANCELED:
            found.append(f"{leg.leg} ALREADY_CANCELED, but the job was fresh")
        if leg.outcome == pb.OUTCOME_FAILED and done and not lost:
            found.append(f"{leg.leg} FAILED ({pb.Reason.Name(leg.reason)}) but applied")
    if response.outcome == pb.OUTCOME_FAILED and lost and "did not cancel" in response.message:
        found.append("says 'did not cancel' after a lost answer")
    return found


@dataclass
class Tally:
    calls: int = 0
    classified: int = 0
    truthful: int = 0
    lost: int = 0
    outcomes: Counter[str] = field(default_factory=Counter)
    untrue: list[str] = field(default_factory=list)

    def report(self) -> dict[str, Any]:
        return {
            "calls": self.calls,
            "classified_pct": round(100 * self.classified / max(1, self.calls), 2),
            "truthful_pct": round(100 * self.truthful / max(1, self.classified), 2),
            "lost": self.lost,
            "outcomes": dict(self.outcomes.most_common()),
            "untrue_examples": self.untrue[:10],
        }


async def _call(stub: gateway_pb2_grpc.CancellationGatewayStub, case: Case, tally: Tally) -> Any:
    try:
        return await stub.CancelJob(case.request, timeout=15)
    except grpc.aio.AioRpcError as error:
        return error


def _judge(case: Case, answer: Any, tally: Tally) -> None:
    tally.calls += 1
    if isinstance(answer, grpc.aio.AioRpcError):
        info = _error_info(answer)
        if info is None:
            tally.lost += 1
            tally.outcomes[f"lost {answer.code().name}"] += 1
            return
        tally.classified += 1
        tally.truthful += 1  # a gateway-side error claims nothing about the job
        tally.outcomes[f"error {info.reason}"] += 1
        return
    if answer.outcome == pb.OUTCOME_UNSPECIFIED:
        tally.lost += 1
        return
    tally.classified += 1
    outcome = pb.Outcome.Name(answer.outcome).removeprefix("OUTCOME_")
    tally.outcomes[f"{outcome} {pb.Reason.Name(answer.reason).removeprefix('REASON_')}"] += 1
    found = untruths(answer, case.check())
    if found:
        attempts = [
            f"{pb.Delivery.Name(a.delivery)}:{','.join(leg.upstream_message for leg in a.legs)}"
            for a in answer.attempt_history
        ]
        tally.untrue.append(f"{answer.request_id}: {'; '.join(found)} {attempts}")
    else:
        tally.truthful += 1


def _rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


@contextlib.asynccontextmanager
async def _upstreams(rng: random.Random, rate: float) -> AsyncIterator[tuple[Upstreams, str]]:
    kiiex, zuora = KiiexSimulator(), ZuoraSimulator()
    faults = [
        RandomFaults(rng, rate, kiiex.expire_sessions, "TOO MANY REQUESTS"),
        RandomFaults(rng, rate, zuora.expire_tokens, zuora.faults.rate_limit_body),
    ]
    kiiex.faults, zuora.faults = faults
    async with (
        LoopbackServer(kiiex.app) as kiiex_http,
        LoopbackServer(zuora.app) as zuora_http,
        ResettingProxy(kiiex_http.port, rng, rate / 4) as kiiex_proxy,
        ResettingProxy(zuora_http.port, rng, rate / 4) as zuora_proxy,
    ):
        up = Upstreams(kiiex, zuora, faults, [kiiex_proxy, zuora_proxy])
        yield up, _config(kiiex_proxy.url, zuora_proxy.url)


async def run(
    calls: int, *, concurrency: int = 16, rate: float = 0.25, seed: int = 7
) -> dict[str, Any]:
    rng = random.Random(seed)
    tally = Tally()
    with tempfile.TemporaryDirectory() as folder:
        async with _upstreams(rng, rate) as (up, config):
            served: Served = await serve(Path(folder), config, ENV)
            rss_before = _rss_mib(served.process.pid)
            async with grpc.aio.insecure_channel(served.target) as channel:
                stub = gateway_pb2_grpc.CancellationGatewayStub(channel)
                cases = iter([_case(rng, up) for _ in range(calls)])

                async def worker() -> None:
                    for case in cases:
                        _judge(case, await _call(stub, case, tally), tally)

                # Judged as each answer comes back, before held requests settle: what the
                # simulator did by then is what the envelope may claim.
                await asyncio.gather(*(worker() for _ in range(concurrency)))
            rss_after = _rss_mib(served.process.pid)
            crashed = served.process.returncode is not None
            served.process.terminate()
            code = await served.process.wait()
            log = served.log.read_text()
    return {
        **tally.report(),
        "crashes": int(crashed or code != 0),
        "tracebacks": log.count("Traceback"),
        "rss_mib_before": round(rss_before, 1),
        "rss_mib_after": round(rss_after, 1),
        "faults_drawn": dict(sum((f.drawn for f in up.faults), Counter())),
        "resets": dict(sum((p.resets for p in up.proxies), Counter())),
    }


def main() -> int:
    # The simulators' server logs every request a reset cut short; that is the point here.
    logging.getLogger("uvicorn.error").setLevel(logging.CRITICAL)
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--calls", type=int, default=10_000)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--seed", type=int, default=7)
    args = parser.parse_args()
    result = asyncio.run(run(args.calls, concurrency=args.concurrency, seed=args.seed))
    print(json.dumps(result, indent=2))
    good = result["classified_pct"] == 100 and result["truthful_pct"] == 100
    return 0 if good and not result["lost"] and not result["crashes"] else 1


if __name__ == "__main__":
    sys.exit(main())
