"""One CancelJob on a chosen route: attempts within the deadline (retrying what is safe to
retry), optional confirmation through the upstream's read API, and the envelope.

Knows neither protobuf nor HTTP: it calls the route's adapter through `gateway.upstream`.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from dataclasses import dataclass, replace

from gateway.errors import DeadlineExceeded
from gateway.jobs import CancelRequest, JobKind
from gateway.metrics import Metrics
from gateway.model import CancelResult, LegResult, Outcome, Reason, UpstreamReply
from gateway.outcomes import circuit_open, envelope
from gateway.resilience import Deadline, Permit, backoff_delays, is_outage, worth_retrying
from gateway.router import Route
from gateway.upstream import ConfirmState, LegCheck, observing

Sleep = Callable[[float], Awaitable[None]]


async def retry_target(
    attempt: Callable[[int], Awaitable[UpstreamReply | None]],
    *,
    predicate: Callable[[UpstreamReply], bool],
    delays: Iterable[float],
    deadline: Deadline,
    sleep: Sleep = asyncio.sleep,
) -> UpstreamReply | None:
    """Makes attempt 1, 2, ... while `predicate` says the reply is worth another one.

    Shaped like python-api-core's `retry_target`, but it judges replies, not exceptions:
    an upstream's refusal is an answer here. Between attempts it waits the next of `delays`
    (the upstream's Retry-After when that is longer) and stops when `delays` runs out or the
    wait would pass the deadline. An attempt that returns None could not be made (the
    breaker refused it): the last real reply, if any, stands.
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
        pause = next(pauses, None)
        if pause is None or not predicate(reply):
            return reply
        pause = max(pause, reply.retry_after or 0.0)
        if pause >= deadline.remaining():
            return reply
        await sleep(pause)


@dataclass
class _Calls:
    """What the cancel attempts of one CancelJob added up to."""

    attempts: int = 0
    latency: float = 0.0


class Pipeline:
    def __init__(self, metrics: Metrics, sleep: Sleep = asyncio.sleep) -> None:
        self._metrics = metrics
        self._sleep = sleep

    async def cancel(
        self, route: Route, request: CancelRequest, deadline: Deadline
    ) -> CancelResult:
        started = time.monotonic()
        calls = _Calls()
        reply = await retry_target(
            lambda number: self._attempt(route, request.job, calls, deadline),
            predicate=lambda reply: worth_retrying(reply, route.settings.retry),
            delays=backoff_delays(route.settings.retry),
            deadline=deadline,
            sleep=self._sleep,
        )
        if reply is None:
            result = circuit_open(route.settings.name, route.breaker, request)
        else:
            legs = reply.legs
            if request.wait_for_confirmation and any(
                leg.outcome is Outcome.ACCEPTED for leg in legs
            ):
                legs = await self._confirm(route, request.job, legs, deadline)
            result = envelope(request, legs, reply, calls.attempts, calls.latency)
        self._metrics.job_finished(result, time.monotonic() - started)
        return result

    async def _attempt(
        self, route: Route, job: JobKind, calls: _Calls, deadline: Deadline
    ) -> UpstreamReply | None:
        """One upstream cancel, or None when the breaker refuses it."""
        async with guarded(route, deadline, f"{job.operation} attempt {calls.attempts + 1}") as (
            permit
        ):
            if permit is None:
                return None
            # The budget is taken after the bulkhead wait, which may have used some of it.
            timeout = deadline.budget(
                route.settings.timeout, f"{job.operation} attempt {calls.attempts + 1}"
            )
            calls.attempts += 1
            if calls.attempts > 1:
                route.metrics.retried(job.operation)
            started = time.monotonic()
            try:
                with observing(route.metrics):
                    reply = await route.adapter.cancel(job, timeout=timeout)
            finally:
                calls.latency += time.monotonic() - started
            route.breaker.record(permit, outage=is_outage(reply))
        if deadline.expired:
            raise DeadlineExceeded(f"the caller's deadline passed during {job.operation}")
        return reply

    async def _confirm(
        self, route: Route, job: JobKind, legs: tuple[LegResult, ...], deadline: Deadline
    ) -> tuple[LegResult, ...]:
        """Polls the upstream's read API until every acknowledged leg is settled or time is up."""
        settings = route.settings
        window = Deadline(min(settings.confirm_timeout, deadline.remaining()))
        checks: dict[str, LegCheck] = {}
        while True:
            timeout = min(settings.timeout, window.remaining())
            if timeout > 0:
                with observing(route.metrics):
                    found = await route.adapter.confirm(job, timeout=timeout)
                checks.update({check.leg: check for check in found})
            states = [
                checks.get(leg.leg, _UNCHECKED).state
                for leg in legs
                if leg.outcome is Outcome.ACCEPTED
            ]
            if (
                ConfirmState.PENDING not in states
                or window.remaining() <= settings.confirm_interval
            ):
                self._metrics.confirmed(job.upstream, _confirmation(states))
                return tuple(_confirmed(leg, checks.get(leg.leg, _UNCHECKED)) for leg in legs)
            await self._sleep(settings.confirm_interval)


@contextlib.asynccontextmanager
async def guarded(route: Route, deadline: Deadline, doing: str) -> AsyncIterator[Permit | None]:
    """Breaker permit + bulkhead slot + in-flight gauge around one upstream attempt.

    Yields None when the breaker refuses the call (nothing is acquired then). The holder
    records the attempt's result on the breaker; a block left by an exception (deadline,
    cancellation) abandons the permit, since no answer proves nothing either way.
    """
    permit = route.breaker.allow()
    if permit is None:
        yield None
        return
    try:
        await route.bulkhead.acquire(deadline, doing)
        try:
            with route.metrics.in_flight():
                yield permit
        finally:
            route.bulkhead.release()
    except BaseException:
        route.breaker.abandon(permit)
        raise


_UNCHECKED = LegCheck("", ConfirmState.PENDING, "not confirmed within the confirmation window")


def _confirmed(leg: LegResult, check: LegCheck) -> LegResult:
    if leg.outcome is not Outcome.ACCEPTED:
        return leg
    if check.state is ConfirmState.CONFIRMED:
        return replace(leg, outcome=Outcome.CANCELED, detail=check.detail)
    return replace(leg, reason=Reason.NOT_CONFIRMED, detail=check.detail or _UNCHECKED.detail)


def _confirmation(states: list[ConfirmState]) -> str:
    """One `cancelgw_confirmations_total` result for the job: refuted beats not confirmed."""
    if ConfirmState.REFUTED in states:
        return "refuted"
    return "confirmed" if all(s is ConfirmState.CONFIRMED for s in states) else "not_confirmed"
