"""Pure policies for calling upstreams: deadline budget, backoff with jitter, retry decision,
and the bulkhead that bounds in-flight calls per connection. No network in here."""

from __future__ import annotations

import asyncio
import math
import random
import time
from collections.abc import Callable

from gateway.config import RetrySettings
from gateway.errors import DeadlineExceeded
from gateway.model import UpstreamReply

Clock = Callable[[], float]


class Deadline:
    """The time left for one CancelJob: the caller's gRPC deadline, or none."""

    def __init__(self, seconds: float | None, clock: Clock = time.monotonic) -> None:
        self._clock = clock
        self._end = math.inf if seconds is None else clock() + seconds

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


def backoff_delay(
    attempt: int, settings: RetrySettings, rng: Callable[[], float] = random.random
) -> float:
    """Full-jitter exponential backoff after `attempt` (1-based) failed attempts."""
    ceiling = min(settings.backoff_max, settings.backoff_initial * 2.0 ** min(attempt - 1, 32))
    return rng() * ceiling


def retry_delay(
    reply: UpstreamReply,
    attempt: int,
    settings: RetrySettings,
    deadline: Deadline,
    rng: Callable[[], float] = random.random,
) -> float | None:
    """How long to wait before another attempt, or None when another attempt is wrong.

    Only a reply whose every leg failed retryably is retried: once any leg succeeded, a
    repeat would cancel that leg again and turn its success into a failure.
    """
    if attempt >= settings.max_attempts:
        return None
    if not reply.legs or not all(not leg.succeeded and leg.retryable for leg in reply.legs):
        return None
    delay = max(backoff_delay(attempt, settings, rng), reply.retry_after or 0.0)
    return delay if delay < deadline.remaining() else None


class Bulkhead:
    """Bounds the calls in flight to one connection; waiting counts against the deadline."""

    def __init__(self, limit: int) -> None:
        self._slots = asyncio.Semaphore(limit)
        self.limit = limit

    async def acquire(self, deadline: Deadline) -> None:
        wait = deadline.remaining()
        try:
            await asyncio.wait_for(self._slots.acquire(), None if math.isinf(wait) else wait)
        except TimeoutError as error:
            raise DeadlineExceeded(
                f"the caller's deadline passed waiting for one of {self.limit} upstream slots"
            ) from error

    def release(self) -> None:
        self._slots.release()
