"""A gateway's shutdown as its calls see it.

`begin()` is called from the SIGTERM handler and takes effect at once (a flag, read by every
new call and every pipeline step); waiters are woken through the event loop. From then on
new calls are refused by the gateway itself, calls in flight make no new upstream attempt,
stop backing off, and stop polling for confirmation, answering with what they know.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Awaitable, Iterator
from typing import TypeVar

from gateway.resilience import Clock

T = TypeVar("T")


class Drain:
    def __init__(self, clock: Clock = time.monotonic) -> None:
        self._clock = clock
        self._begun = False
        self._event = asyncio.Event()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._in_flight = 0
        self._last_arrival = -1e9
        self.begun_at: float | None = None

    @property
    def began(self) -> bool:
        return self._begun

    def bind(self, loop: asyncio.AbstractEventLoop) -> None:
        """The loop whose waiters `begin` wakes (the server's)."""
        self._loop = loop

    def begin(self) -> None:
        """Safe from a signal handler: sets a flag now, wakes waiters through the loop."""
        if self._begun:
            return
        self._begun, self.begun_at = True, self._clock()
        if self._loop is not None and not self._loop.is_closed():
            self._loop.call_soon_threadsafe(self._event.set)
        else:
            self._event.set()

    async def begun(self) -> None:
        """Returns once a drain began."""
        await self._event.wait()

    async def pause(self, seconds: float) -> bool:
        """Sleeps up to `seconds`; False when a drain began (then: do not go on)."""
        if self._begun:
            return False
        try:
            async with asyncio.timeout(seconds):
                await self._event.wait()
        except TimeoutError:
            return not self._begun
        return False

    async def unless_draining(self, call: Awaitable[T]) -> T | None:
        """`call`'s result, or None when a drain began first (the call is then cancelled:
        use it only for calls that change nothing, like reads)."""
        if self._begun:
            return None
        task = asyncio.ensure_future(call)
        waiter = asyncio.ensure_future(self._event.wait())
        try:
            await asyncio.wait((task, waiter), return_when=asyncio.FIRST_COMPLETED)
        finally:
            waiter.cancel()
            if not task.done():
                task.cancel()
                await asyncio.gather(task, return_exceptions=True)
        return None if task.cancelled() else task.result()

    @contextlib.contextmanager
    def call(self) -> Iterator[None]:
        """Counts one RPC in flight."""
        self._in_flight += 1
        self._last_arrival = self._clock()
        try:
            yield
        finally:
            self._in_flight -= 1

    async def settled(self, *, quiet: float, until: float, poll: float = 0.01) -> None:
        """Returns once no call is in flight and none arrived for `quiet` seconds (calls the
        transport had queued before the signal still come in and are answered), or at
        `until` (a clock reading), whichever is first."""
        while self._clock() < until:
            if self._in_flight == 0 and self._clock() - self._last_arrival >= quiet:
                return
            await asyncio.sleep(poll)
