"""Keyed calls through the pipeline against a scripted quote exchange, on the memory store
with a manual clock: what a retry with the key does after every way a first call can end
(answered, lost, cancelled by its caller, overtaken), and that no path cancels twice."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable
from typing import Any

import pytest

from adapters.kiiex import KiiexQuote
from adapters.simulation import ManualClock
from gateway.errors import IdempotencyKeyInProgress
from gateway.idempotency import OPEN, decode_attempts, decode_result, encode_result
from gateway.jobs import CancelRequest, JobKind
from gateway.metrics import Metrics
from gateway.model import Attempt, CancelResult, Delivery, LegResult, Outcome, Reason, UpstreamReply
from gateway.pipeline import Pipeline
from gateway.resilience import Deadline
from gateway.router import Route, Router
from gateway.stores.memory import MemoryStore
from gateway.upstream import ConfirmState, LegCheck, Preflight
from tests.conftest import kiiex_connection, make_config

Hook = Callable[[], Awaitable[UpstreamReply | None]]


class QuoteExchange:
    """Cancelling an open quote answers 0 (ACCEPTED), anything else 104; reads show open
    quotes ACTIVE and others CONFIRMED. `hook` may hold or replace the next answer."""

    def __init__(self, *open_quotes: int) -> None:
        self.open = set(open_quotes)
        self.cancels = 0
        self.hook: Hook | None = None

    async def cancel(self, job: JobKind, *, timeout: float) -> UpstreamReply:
        assert isinstance(job, KiiexQuote)
        self.cancels += 1
        legs = []
        for name, quote in (("bid", job.bid_quote_id), ("ask", job.ask_quote_id)):
            if quote in self.open:
                self.open.discard(quote)
                legs.append(LegResult(name, Outcome.ACCEPTED, Reason.UNSPECIFIED, False, "0"))
            else:
                legs.append(LegResult(name, Outcome.FAILED, Reason.NOT_FOUND, False, "104"))
        if self.hook is not None:
            hook, self.hook = self.hook, None
            replaced = await hook()
            if replaced is not None:
                return replaced
        return UpstreamReply(tuple(legs))

    async def confirm(self, job: JobKind, *, timeout: float) -> tuple[LegCheck, ...]:
        assert isinstance(job, KiiexQuote)
        return tuple(
            LegCheck(name, ConfirmState.ACTIVE if q in self.open else ConfirmState.CONFIRMED)
            for name, q in (("bid", job.bid_quote_id), ("ask", job.ask_quote_id))
        )

    async def preflight(self, *, timeout: float) -> Preflight:
        return Preflight(True, "a scripted upstream: no login")

    async def aclose(self) -> None:
        pass


LOST = UpstreamReply(
    tuple(
        LegResult(leg, Outcome.FAILED, Reason.TIMEOUT, True, "timeout") for leg in ("bid", "ask")
    ),
    delivery=Delivery.NO_ANSWER,
)


def _route(exchange: QuoteExchange, **connection: Any) -> Route:
    config = make_config({"k": kiiex_connection(**connection)})
    router = Router(config, {"k": exchange}, {"kiiex": ("CancelQuote",)}, Metrics())
    return router.routes["k"]


def _request(key: str = "K", *, request_id: str = "first", confirm: bool = False) -> CancelRequest:
    job = KiiexQuote(oms_id=1, bid_quote_id=11, ask_quote_id=12, instrument_id=1)
    return CancelRequest(job, "", key, confirm, request_id)


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock(1000.0)


@pytest.fixture
def store(clock: ManualClock) -> MemoryStore:
    return MemoryStore(clock=clock)


def _pipeline(store: MemoryStore) -> Pipeline:
    return Pipeline(Metrics(), store=store)


async def test_a_caller_gone_after_an_accepted_answer_leaves_the_key_open(
    store: MemoryStore,
) -> None:
    exchange = QuoteExchange(11, 12)
    route = _route(exchange, confirm_timeout_seconds=5)
    first = asyncio.ensure_future(
        _pipeline(store).cancel(route, _request(confirm=True), Deadline(None))
    )
    for _ in range(100):  # until it answered and polls for confirmation
        if exchange.cancels:
            break
        await asyncio.sleep(0)
    exchange.open.add(11)  # the read keeps showing the bid: confirmation keeps polling
    await asyncio.sleep(0.05)
    first.cancel()
    with pytest.raises(asyncio.CancelledError):
        await first
    exchange.open.discard(11)
    again = await _pipeline(store).cancel(route, _request(confirm=True), Deadline(None))
    assert exchange.cancels == 1, "an ACCEPTED answer had landed: no second cancel"
    assert again.outcome is Outcome.CANCELED


async def test_a_takeover_after_an_answered_attempt_reads_instead_of_cancelling(
    store: MemoryStore, clock: ManualClock
) -> None:
    exchange = QuoteExchange(11, 12)
    route = _route(exchange)
    held = asyncio.Event()

    async def die_after_the_answer() -> None:
        await held.wait()  # the answer arrived; the gateway "dies" before writing it down
        return None

    exchange.hook = die_after_the_answer
    first = asyncio.ensure_future(_pipeline(store).cancel(route, _request(), Deadline(None)))
    await asyncio.sleep(0.01)
    clock.advance(60)  # its lease runs out: to the store, its process is gone
    again = await _pipeline(store).cancel(route, _request(request_id="second"), Deadline(None))
    held.set()
    overtaken = await first  # its answer is still true; it may not write it over B's record
    assert overtaken.outcome is Outcome.ACCEPTED
    assert exchange.cancels == 1
    assert again.outcome is Outcome.CANCELED, "the read shows both quotes gone"


async def test_a_call_that_lost_its_lease_does_not_send(
    store: MemoryStore, clock: ManualClock
) -> None:
    exchange = QuoteExchange(11, 12)
    route = _route(exchange, max_in_flight=1, pool_size=1)
    gate = asyncio.Event()

    async def hold() -> None:
        await gate.wait()

    exchange.hook = hold
    blocker = asyncio.ensure_future(
        _pipeline(store).cancel(route, _request("other", request_id="x"), Deadline(None))
    )
    await asyncio.sleep(0.01)
    slow = asyncio.ensure_future(_pipeline(store).cancel(route, _request(), Deadline(None)))
    await asyncio.sleep(0.01)  # it claimed K and waits for the only slot
    clock.advance(60)
    exchange.open = {11, 12}
    quick_route = _route(exchange)
    quick = await _pipeline(store).cancel(quick_route, _request(request_id="quick"), Deadline(None))
    gate.set()
    await blocker
    with pytest.raises(IdempotencyKeyInProgress):
        await slow
    assert quick.outcome is Outcome.ACCEPTED
    assert exchange.cancels == 2  # the blocker's, and K's once


async def test_unknown_stays_open_so_a_retry_with_the_key_reads_first(store: MemoryStore) -> None:
    exchange = QuoteExchange(11, 12)
    route = _route(exchange, retry={"max_attempts": 1})
    exchange.hook = lambda: _answer(LOST)
    first = await _pipeline(store).cancel(route, _request(), Deadline(None))
    assert first.outcome is Outcome.UNKNOWN
    assert store._records[next(iter(store._records))].state == OPEN
    again = await _pipeline(store).cancel(route, _request(request_id="second"), Deadline(None))
    assert (again.outcome, again.replayed, exchange.cancels) == (Outcome.CANCELED, False, 1)


async def test_a_resumed_key_cancels_again_only_the_legs_still_open(store: MemoryStore) -> None:
    exchange = QuoteExchange(12)  # the lost attempt canceled the ask only... in effect
    route = _route(exchange, retry={"max_attempts": 1})
    exchange.hook = lambda: _answer(LOST)
    await _pipeline(store).cancel(route, _request(), Deadline(None))
    exchange.open = {11}  # bid still open, ask canceled
    again = await _pipeline(store).cancel(route, _request(request_id="second"), Deadline(None))
    assert [(leg.leg, leg.outcome) for leg in again.legs] == [
        ("bid", Outcome.ACCEPTED), ("ask", Outcome.CANCELED)
    ]  # fmt: skip
    assert exchange.open == set()


async def test_an_answer_that_arrives_at_the_deadline_is_answered_and_kept(
    store: MemoryStore,
) -> None:
    exchange = QuoteExchange(11, 12)
    route = _route(exchange)

    async def late() -> None:
        await asyncio.sleep(0.2)  # past the deadline below

    exchange.hook = late
    first = await _pipeline(store).cancel(route, _request(), Deadline(0.1))
    assert first.outcome is Outcome.ACCEPTED
    again = await _pipeline(store).cancel(route, _request(request_id="second"), Deadline(None))
    assert (again.replayed, again.request_id, exchange.cancels) == (True, "second", 1)


async def _answer(reply: UpstreamReply) -> UpstreamReply:
    return reply


def test_records_written_by_a_newer_gateway_still_read() -> None:
    leg = LegResult("bid", Outcome.CANCELED, Reason.UNSPECIFIED, False)
    result = CancelResult(
        Outcome.CANCELED, Reason.UNSPECIFIED, False, "m", "kiiex", "CancelQuote", legs=(leg,),
        history=(Attempt(1, Delivery.ANSWERED, (leg,)),),
    )  # fmt: skip
    newer = json.loads(encode_result(result))
    newer["cost_cents"] = 3
    newer["legs"][0]["hint"] = "x"
    newer["history"][0]["legs"][0]["hint"] = "x"
    assert decode_result(json.dumps(newer)) == result
    assert decode_attempts(json.dumps(newer["history"])) == result.history
