"""Pure policies: deadline budget, backoff, the retry decision and loop, the bulkhead."""

from __future__ import annotations

import asyncio
import math

import pytest

from gateway.connection import RetrySettings
from gateway.errors import DeadlineExceeded
from gateway.model import LegResult, Outcome, Reason, UpstreamReply
from gateway.resilience import Bulkhead, Deadline, backoff_delays, retry_target, worth_retrying


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
    settings = RetrySettings(max_attempts=8, backoff_initial=0.1, backoff_max=1.0)
    delays = list(backoff_delays(settings, _top))
    assert delays == pytest.approx([0.1, 0.2, 0.4, 0.8, 1.0, 1.0, 1.0])


def test_backoff_is_jittered_by_the_rng() -> None:
    assert list(backoff_delays(SETTINGS, lambda: 0.25)) == pytest.approx([0.025, 0.05])
    assert list(backoff_delays(SETTINGS, _bottom)) == [0.0, 0.0]


def test_backoff_pauses_only_between_attempts() -> None:
    assert len(list(backoff_delays(SETTINGS))) == SETTINGS.max_attempts - 1


def _reply(*legs: LegResult, retry_after: float | None = None) -> UpstreamReply:
    return UpstreamReply(legs=legs, retry_after=retry_after)


def _failed(retryable: bool = True, leg: str = "report") -> LegResult:
    reason = Reason.UPSTREAM_ERROR if retryable else Reason.NOT_FOUND
    return LegResult(leg, Outcome.FAILED, reason, retryable)


def test_a_retryable_failure_is_worth_retrying() -> None:
    assert worth_retrying(_reply(_failed()), SETTINGS)


def test_no_retry_once_any_leg_succeeded() -> None:
    reply = _reply(
        LegResult("bid", Outcome.ACCEPTED, Reason.UNSPECIFIED, False), _failed(leg="ask")
    )
    assert not worth_retrying(reply, SETTINGS)


def test_no_retry_when_a_failed_leg_is_not_retryable() -> None:
    assert not worth_retrying(_reply(_failed(True, "bid"), _failed(False, "ask")), SETTINGS)


def test_no_retry_without_legs() -> None:
    assert not worth_retrying(_reply(), SETTINGS)


def test_a_retry_after_longer_than_backoff_max_is_passed_on_not_waited_for() -> None:
    # With no caller deadline, waiting an upstream's hour would hold the call for an hour.
    hour = _reply(_failed(), retry_after=3600.0)
    assert SETTINGS.backoff_max < 3600.0
    assert not worth_retrying(hour, SETTINGS)


class _Script:
    """Attempts answering from a list; records the pauses `retry_target` takes."""

    def __init__(self, *replies: UpstreamReply | None) -> None:
        self.replies = list(replies)
        self.made: list[int] = []
        self.pauses: list[float] = []

    async def attempt(self, number: int) -> UpstreamReply | None:
        self.made.append(number)
        return self.replies.pop(0)

    async def pause(self, seconds: float) -> bool:
        self.pauses.append(seconds)
        return True


async def _run(script: _Script, delays: list[float], deadline: Deadline) -> UpstreamReply | None:
    return await retry_target(
        script.attempt,
        predicate=lambda reply: worth_retrying(reply, SETTINGS),
        delays=delays,
        deadline=deadline,
        pause=script.pause,
    )


async def test_retry_target_retries_until_an_answer_worth_keeping() -> None:
    done = _reply(LegResult("report", Outcome.ACCEPTED, Reason.UNSPECIFIED, False))
    script = _Script(_reply(_failed()), done)
    assert await _run(script, [0.1, 0.2], Deadline(None)) is done
    assert (script.made, script.pauses) == ([1, 2], [0.1])


async def test_retry_target_stops_when_the_delays_run_out() -> None:
    script = _Script(*[_reply(_failed())] * 3)
    assert await _run(script, [0.1, 0.2], Deadline(None)) is not None
    assert (script.made, script.pauses) == ([1, 2, 3], [0.1, 0.2])


async def test_retry_after_is_a_floor() -> None:
    script = _Script(_reply(_failed(), retry_after=0.8), _reply(_failed(), retry_after=0.01))
    script.replies.append(_reply(_failed(False)))
    await _run(script, [0.1, 0.2], Deadline(None))
    assert script.pauses == [0.8, 0.2]


async def test_no_retry_when_the_pause_does_not_fit_the_deadline() -> None:
    clock = FakeClock()
    script = _Script(_reply(_failed(), retry_after=0.9))
    await _run(script, [0.1], Deadline(0.5, clock))
    assert (script.made, script.pauses) == ([1], [])


async def test_a_refused_attempt_keeps_the_last_real_reply() -> None:
    first = _reply(_failed())
    script = _Script(first, None)
    assert await _run(script, [0.1, 0.2], Deadline(None)) is first
    assert await _run(_Script(None), [0.1], Deadline(None)) is None


async def test_bulkhead_makes_a_second_caller_wait_for_release() -> None:
    bulkhead = Bulkhead(1)
    await bulkhead.acquire(Deadline(None), "calling")
    entered = asyncio.Event()

    async def second() -> None:
        await bulkhead.acquire(Deadline(None), "calling")
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
        await bulkhead.acquire(Deadline(None), "calling")
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
    await bulkhead.acquire(Deadline(None), "calling")
    with pytest.raises(DeadlineExceeded, match="all 1 upstream slots were busy"):
        await bulkhead.acquire(Deadline(0.05), "calling")

    # The timed-out waiter must not have taken or lost the slot.
    bulkhead.release()
    await asyncio.wait_for(bulkhead.acquire(Deadline(None), "calling"), 1.0)


async def test_an_expired_deadline_is_not_blamed_on_busy_slots() -> None:
    clock = FakeClock()
    deadline = Deadline(1.0, clock)
    clock.now += 2.0
    with pytest.raises(DeadlineExceeded, match="passed before CancelQuote attempt 1") as raised:
        await Bulkhead(4).acquire(deadline, "CancelQuote attempt 1")
    assert "slots" not in str(raised.value)
