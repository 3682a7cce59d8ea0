"""Pure policies: deadline budget, backoff, the retry decision and the bulkhead."""

from __future__ import annotations

import asyncio
import math

import pytest

from gateway.config import RetrySettings
from gateway.errors import DeadlineExceeded
from gateway.model import LegResult, Outcome, Reason, UpstreamReply
from gateway.resilience import Bulkhead, Deadline, backoff_delay, retry_delay


class FakeClock:
    def __init__(self, now: float = 100.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


SETTINGS = RetrySettings(max_attempts=3, backoff_initial=0.1, backoff_max=1.0)


def _top() -> float:
    return 1.0


def _bottom() -> float:
    return 0.0


def test_deadline_counts_down_with_the_clock() -> None:
    clock = FakeClock()
    deadline = Deadline(2.0, clock)
    assert deadline.remaining() == 2.0
    assert not deadline.expired
    clock.now += 1.5
    assert deadline.remaining() == pytest.approx(0.5)
    clock.now += 1.0
    assert deadline.remaining() == 0.0
    assert deadline.expired


def test_budget_is_capped_by_the_limit_and_the_deadline() -> None:
    clock = FakeClock()
    deadline = Deadline(3.0, clock)
    assert deadline.budget(1.0, "calling") == 1.0
    clock.now += 2.5
    assert deadline.budget(1.0, "calling") == pytest.approx(0.5)


def test_budget_raises_once_the_deadline_passed() -> None:
    clock = FakeClock()
    deadline = Deadline(1.0, clock)
    clock.now += 1.0
    with pytest.raises(DeadlineExceeded, match="before confirming"):
        deadline.budget(5.0, "confirming")


def test_no_deadline_never_expires() -> None:
    clock = FakeClock()
    deadline = Deadline(None, clock)
    clock.now += 1e9
    assert deadline.remaining() == math.inf
    assert not deadline.expired
    assert deadline.budget(2.0, "calling") == 2.0


def test_backoff_grows_exponentially_up_to_the_cap() -> None:
    delays = [backoff_delay(attempt, SETTINGS, _top) for attempt in range(1, 8)]
    assert delays == pytest.approx([0.1, 0.2, 0.4, 0.8, 1.0, 1.0, 1.0])


def test_backoff_is_jittered_by_the_rng() -> None:
    assert backoff_delay(3, SETTINGS, lambda: 0.25) == pytest.approx(0.1)
    assert backoff_delay(3, SETTINGS, _bottom) == 0.0


def _reply(*legs: LegResult, retry_after: float | None = None) -> UpstreamReply:
    return UpstreamReply(legs=legs, retry_after=retry_after)


def _failed(retryable: bool = True, leg: str = "report") -> LegResult:
    reason = Reason.UPSTREAM_ERROR if retryable else Reason.NOT_FOUND
    return LegResult(leg, Outcome.FAILED, reason, retryable)


def test_retry_delay_is_the_backoff_for_a_retryable_failure() -> None:
    delay = retry_delay(_reply(_failed()), 2, SETTINGS, Deadline(None), _top)
    assert delay == pytest.approx(0.2)


def test_no_retry_after_max_attempts() -> None:
    assert retry_delay(_reply(_failed()), 3, SETTINGS, Deadline(None), _top) is None


def test_no_retry_once_any_leg_succeeded() -> None:
    reply = _reply(
        LegResult("bid", Outcome.ACCEPTED, Reason.UNSPECIFIED, False), _failed(leg="ask")
    )
    assert retry_delay(reply, 1, SETTINGS, Deadline(None), _top) is None


def test_no_retry_when_a_failed_leg_is_not_retryable() -> None:
    reply = _reply(_failed(True, "bid"), _failed(False, "ask"))
    assert retry_delay(reply, 1, SETTINGS, Deadline(None), _top) is None


def test_no_retry_without_legs() -> None:
    assert retry_delay(_reply(), 1, SETTINGS, Deadline(None), _top) is None


def test_retry_after_is_a_floor() -> None:
    slow = _reply(_failed(), retry_after=0.8)
    assert retry_delay(slow, 1, SETTINGS, Deadline(None), _top) == 0.8
    quick = _reply(_failed(), retry_after=0.01)
    assert retry_delay(quick, 2, SETTINGS, Deadline(None), _top) == pytest.approx(0.2)


def test_no_retry_when_the_delay_does_not_fit_the_deadline() -> None:
    clock = FakeClock()
    reply = _reply(_failed(), retry_after=0.9)
    deadline = Deadline(3.0, clock)
    assert retry_delay(reply, 1, SETTINGS, deadline, _top) == 0.9
    clock.now += 2.5
    assert retry_delay(reply, 1, SETTINGS, deadline, _top) is None


def test_a_retry_after_longer_than_backoff_max_is_passed_on_not_waited_for() -> None:
    # With no caller deadline, waiting an upstream's hour would hold the call for an hour.
    hour = _reply(_failed(), retry_after=3600.0)
    assert SETTINGS.backoff_max < 3600.0
    assert retry_delay(hour, 1, SETTINGS, Deadline(None), _top) is None


async def test_bulkhead_makes_a_second_caller_wait_for_release() -> None:
    bulkhead = Bulkhead(1)
    await bulkhead.acquire(Deadline(None))
    entered = asyncio.Event()

    async def second() -> None:
        await bulkhead.acquire(Deadline(None))
        entered.set()

    task = asyncio.create_task(second())
    for _ in range(20):  # let the task run as far as it can; a free slot needs only one step
        await asyncio.sleep(0)
    assert not entered.is_set()
    assert not task.done()

    bulkhead.release()
    await asyncio.wait_for(entered.wait(), 1.0)
    await task
    bulkhead.release()


async def test_bulkhead_bounds_calls_in_flight() -> None:
    bulkhead = Bulkhead(2)
    gate = asyncio.Event()
    in_flight = 0
    peak = 0
    finished = 0

    async def call() -> None:
        nonlocal in_flight, peak, finished
        await bulkhead.acquire(Deadline(None))
        in_flight += 1
        peak = max(peak, in_flight)
        await gate.wait()
        in_flight -= 1
        finished += 1
        bulkhead.release()

    tasks = [asyncio.create_task(call()) for _ in range(5)]
    for _ in range(20):
        await asyncio.sleep(0)
    assert in_flight == 2

    gate.set()
    await asyncio.wait_for(asyncio.gather(*tasks), 1.0)
    assert (peak, finished) == (2, 5)


async def test_bulkhead_wait_is_bounded_by_the_deadline() -> None:
    bulkhead = Bulkhead(1)
    await bulkhead.acquire(Deadline(None))
    with pytest.raises(DeadlineExceeded, match="1 upstream slots"):
        await bulkhead.acquire(Deadline(0.05))

    # The timed-out waiter must not have taken or lost the slot.
    bulkhead.release()
    await asyncio.wait_for(bulkhead.acquire(Deadline(None)), 1.0)
