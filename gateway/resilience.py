"""Pure policies for calling upstreams: deadline budget, backoff with jitter, the retry
decision and loop (`retry_target`), the bulkhead that bounds in-flight calls per connection,
and the circuit breaker that stops calling an upstream that keeps failing. No network in
here."""

from __future__ import annotations

import asyncio
import enum
import math
import random
import time
from collections.abc import Awaitable, Callable, Iterable, Iterator
from dataclasses import dataclass

from gateway.connection import BreakerSettings, RetrySettings
from gateway.errors import DeadlineExceeded
from gateway.model import Delivery, Reason, UpstreamReply

Clock = Callable[[], float]
Pause = Callable[[float], Awaitable[bool]]
"""Sleeps; False when the caller should not go on (the gateway is draining)."""


# Kept off the caller's deadline so the gateway answers (an envelope or DEADLINE_EXCEEDED
# with its ErrorInfo) before gRPC cuts the call off with a bare status.
ANSWER_MARGIN = 0.2


class Deadline:
    """The time left for one CancelJob: the caller's gRPC deadline, or none."""

    def __init__(self, seconds: float | None, clock: Clock = time.monotonic) -> None:
        self._clock = clock
        self._end = math.inf if seconds is None else clock() + seconds

    @classmethod
    def for_caller(cls, seconds: float | None, clock: Clock = time.monotonic) -> Deadline:
        """The caller's deadline less the time the gateway needs to answer."""
        return cls(None if seconds is None else seconds - ANSWER_MARGIN, clock)

    def remaining(self) -> float:
        return max(0.0, self._end - self._clock())

    @property
    def expired(self) -> bool:
        return self.remaining() <= 0.0

    def budget(self, limit: float, doing: str) -> float:
        """Time for the next step: at most `limit`, never past the deadline."""
        remaining = self.remaining()
        if remaining <= 0.0:
            raise DeadlineExceeded(f"the caller's deadline passed before {doing}")
        return min(limit, remaining)


def backoff_delays(
    settings: RetrySettings, rng: Callable[[], float] = random.random
) -> Iterator[float]:
    """Full-jitter exponential backoff: the pause after each of the first `max_attempts - 1`
    failed attempts (none after the last)."""
    for attempt in range(1, settings.max_attempts):
        ceiling = min(settings.backoff_max, settings.backoff_initial * 2.0 ** min(attempt - 1, 32))
        yield rng() * ceiling


def worth_retrying(reply: UpstreamReply, settings: RetrySettings) -> bool:
    """Whether another attempt may change the answer, and is safe.

    Only a reply whose every leg failed retryably is retried: once any leg succeeded, a
    repeat would cancel that leg again and turn its success into a failure. An upstream that
    asks for a longer pause than `backoff_max` gets its answer passed on instead: waiting
    for it would hold the caller (who may have no deadline) for as long as it says.
    """
    if reply.retry_after is not None and reply.retry_after > settings.backoff_max:
        return False
    return bool(reply.legs) and all(not leg.succeeded and leg.retryable for leg in reply.legs)


async def retry_target(
    attempt: Callable[[int], Awaitable[UpstreamReply | None]],
    *,
    predicate: Callable[[UpstreamReply], bool],
    delays: Iterable[float],
    deadline: Deadline,
    pause: Pause,
) -> UpstreamReply | None:
    """Makes attempt 1, 2, ... while `predicate` says the reply is worth another one.

    Shaped like python-api-core's `retry_target`, but it judges replies, not exceptions:
    an upstream's refusal is an answer here. Between attempts it waits the next of `delays`
    (the upstream's Retry-After when that is longer) and stops when `delays` runs out, the
    wait would pass the deadline, or `pause` says stop. An attempt that returns None could
    not be made (breaker open, shutting down): the last real reply, if any, stands.
    """
    reply: UpstreamReply | None = None
    pauses = iter(delays)
    number = 0
    while True:
        number += 1
        latest = await attempt(number)
        if latest is None:
            return reply
        reply = latest
        wait = next(pauses, None)
        if wait is None or not predicate(reply):
            return reply
        wait = max(wait, reply.retry_after or 0.0)
        if wait >= deadline.remaining() or not await pause(wait):
            return reply


class Bulkhead:
    """Bounds the calls in flight to one connection; waiting counts against the deadline,
    and ends at once when `until()` completes (a drain began): no call waits for a slot it
    would not use."""

    def __init__(self, limit: int) -> None:
        self._slots = asyncio.BoundedSemaphore(limit)
        self.limit = limit

    async def acquire(
        self, deadline: Deadline, doing: str, until: Callable[[], Awaitable[None]] | None = None
    ) -> bool:
        """True with a slot held; False when `until()` completed first (no slot held)."""
        wait = deadline.budget(math.inf, doing)  # an expired deadline is not a busy bulkhead
        if not self._slots.locked():
            await self._slots.acquire()
            return True
        slot = asyncio.ensure_future(self._slots.acquire())
        stop = asyncio.ensure_future(until()) if until is not None else None
        try:
            done, _ = await asyncio.wait(
                [slot] if stop is None else [slot, stop],
                timeout=None if math.isinf(wait) else wait,
                return_when=asyncio.FIRST_COMPLETED,
            )
        finally:
            if stop is not None:
                stop.cancel()
            if not slot.done():
                slot.cancel()
                await asyncio.gather(slot, return_exceptions=True)
        if slot.done() and not slot.cancelled() and slot.exception() is None:
            if slot in done:
                return True
            self._slots.release()  # won just as the wait ended: not ours to keep
        if stop is not None and stop in done:
            return False
        raise DeadlineExceeded(
            f"the caller's deadline passed while all {self.limit} upstream slots were busy "
            f"(waiting to start {doing})"
        )

    def release(self) -> None:
        self._slots.release()


# Only these say the upstream itself is in trouble; a refusal (not found, unauthorized, rate
# limited) is an upstream that answers, and calling it more is fine.
OUTAGE_REASONS = frozenset({Reason.UPSTREAM_UNAVAILABLE, Reason.UPSTREAM_ERROR, Reason.TIMEOUT})


def is_outage(reply: UpstreamReply) -> bool:
    """Every leg failed for a reason that says the upstream is down or broken."""
    return bool(reply.legs) and all(leg.reason in OUTAGE_REASONS for leg in reply.legs)


def is_misconfigured(reply: UpstreamReply) -> bool:
    """The connection's own configuration stopped the call: it says nothing of the
    upstream's health, so the breaker neither counts it nor is reset by it."""
    return any(leg.reason is Reason.CONNECTION_MISCONFIGURED for leg in reply.legs)


def outage_of(reply: UpstreamReply) -> str:
    """What an outage looked like, for the envelope of a circuit it opened: the gateway's
    own words when no answer came (refused, timed out); of an answer, only its code (the
    upstream's message may be about another caller's job)."""
    leg = reply.legs[0]
    own = reply.delivery is not Delivery.ANSWERED
    said = leg.upstream_message if own and leg.upstream_message else leg.upstream_code
    return f"{leg.reason.name}: {said}" if said else leg.reason.name


class CircuitState(enum.IntEnum):
    """Values are what `cancelgw_circuit_state` exports."""

    CLOSED = 0
    HALF_OPEN = 1
    OPEN = 2


class CircuitBreaker:
    """Closed until `failure_threshold` outages in a row; then open (no calls) for
    `reset_seconds`; then half-open: one trial call decides between closed and open again.

    Every state change starts a new generation, and a result counts only for the generation
    its permit was issued in: a late answer to a call made before the circuit opened cannot
    close it again, so `reset_seconds` holds.

    Not thread-safe, and needs not be: it lives on the event loop. `state` only reads, so a
    metrics scrape from another thread may call it.
    """

    def __init__(self, settings: BreakerSettings, clock: Clock = time.monotonic) -> None:
        self._settings = settings
        self._clock = clock
        self._failures = 0
        self._opened_at: float | None = None
        self._trial_running = False
        self._generation = 0
        self.last_outage = ""
        """What the latest outage it counted looked like (`outage_of`)."""

    @property
    def state(self) -> CircuitState:
        if self._opened_at is None:
            return CircuitState.CLOSED
        if self._clock() - self._opened_at < self._settings.reset_seconds:
            return CircuitState.OPEN
        return CircuitState.HALF_OPEN

    @property
    def consecutive_failures(self) -> int:
        return self._failures

    def retry_in(self) -> float:
        """Seconds until a trial call may go out (0 when one may go now or is under way)."""
        if self._opened_at is None:
            return 0.0
        return max(0.0, self._opened_at + self._settings.reset_seconds - self._clock())

    def allow(self) -> Permit | None:
        """A permit for a call to go out now, or None. In half-open, only the one trial call
        gets a permit; whoever holds a permit must `record` its result or `abandon` it."""
        state = self.state
        if state is CircuitState.CLOSED:
            return Permit(trial=False, generation=self._generation)
        if state is CircuitState.OPEN or self._trial_running:
            return None
        self._trial_running = True
        self._generation += 1  # half-open: from now on only the trial's result counts
        return Permit(trial=True, generation=self._generation)

    def record(self, permit: Permit, outage: bool, cause: str = "") -> None:
        """The result of a permitted call: an outage (see `is_outage`, `cause` saying what it
        looked like) or an answer."""
        if permit.trial:
            self._trial_running = False
        if permit.generation != self._generation:
            return  # issued before the last state change: it says nothing about now
        if not outage:
            if self._opened_at is not None:
                self._generation += 1
            self._failures, self._opened_at = 0, None
            return
        self._failures += 1
        self.last_outage = cause or self.last_outage
        if permit.trial or self._failures >= self._settings.failure_threshold:
            self._opened_at = self._clock()
            self._generation += 1

    def abandon(self, permit: Permit) -> None:
        """A permitted call ended without an answer (cancelled): it proves nothing either way."""
        if permit.trial:
            self._trial_running = False


@dataclass(frozen=True)
class Permit:
    """Leave to make one call, in the breaker generation it was issued in; only the trial
    call's permit may settle a half-open circuit."""

    trial: bool
    generation: int
