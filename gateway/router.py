"""The core of a CancelJob: pick the connection, call its adapter within the deadline
(retrying what is safe to retry), optionally confirm, and build the envelope.

Knows neither protobuf nor HTTP: it speaks `gateway.jobs`, `gateway.model` and the
adapter protocol.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Mapping
from dataclasses import dataclass, replace

from adapters.base import Adapter, ConfirmState, LegCheck, observing
from gateway.config import Config, ConnectionSettings
from gateway.errors import DeadlineExceeded, JobKindNotImplemented, UnknownConnection
from gateway.jobs import CancelRequest, Job
from gateway.metrics import ConnectionMetrics, Metrics, job_labels
from gateway.model import CancelResult, LegResult, Outcome, Reason, UpstreamReply
from gateway.outcomes import aggregate, describe
from gateway.resilience import (
    Bulkhead,
    CircuitBreaker,
    Clock,
    Deadline,
    is_outage,
    retry_delay,
)


@dataclass
class Route:
    """A configured connection with its live adapter, its in-flight bound and its breaker."""

    settings: ConnectionSettings
    adapter: Adapter
    bulkhead: Bulkhead
    breaker: CircuitBreaker
    metrics: ConnectionMetrics


@dataclass
class _Calls:
    """What the upstream calls of one CancelJob added up to; no reply when the circuit
    breaker refused the first attempt."""

    reply: UpstreamReply | None = None
    attempts: int = 0
    latency: float = 0.0


class Router:
    def __init__(
        self,
        config: Config,
        adapters: Mapping[str, Adapter],
        supported_jobs: frozenset[type],
        metrics: Metrics | None = None,
        clock: Clock = time.monotonic,
    ) -> None:
        self._config = config
        self._supported_jobs = tuple(supported_jobs)
        self._metrics = metrics or Metrics()
        self._routes = {
            name: self._new_route(settings, adapters[name], clock)
            for name, settings in config.connections.items()
        }

    def _new_route(self, settings: ConnectionSettings, adapter: Adapter, clock: Clock) -> Route:
        breaker = CircuitBreaker(settings.breaker, clock)
        metrics = self._metrics.connection(
            settings.name,
            operations=sorted({job_labels(job)[1] for job in adapter.jobs}),
            in_flight_limit=settings.max_in_flight,
            circuit_state=lambda: breaker.state.value,
        )
        return Route(settings, adapter, Bulkhead(settings.max_in_flight), breaker, metrics)

    @property
    def routes(self) -> Mapping[str, Route]:
        return self._routes

    def route(self, job: Job, connection: str) -> Route:
        """The connection for this job, or a gateway-side error naming what is wrong."""
        if not isinstance(job, self._supported_jobs):
            raise JobKindNotImplemented(f"{job.operation} ({job.upstream}) is not implemented yet")
        if connection:
            route = self._routes.get(connection)
            if route is None:
                known = ", ".join(sorted(self._routes))
                raise UnknownConnection(
                    f"connection {connection!r} is not configured (known: {known})"
                )
        else:
            settings = self._config.default_connection(job.upstream)
            if settings is None:
                raise UnknownConnection(f"no {job.upstream} connection is configured")
            route = self._routes[settings.name]
        if route.settings.upstream != job.upstream:
            raise UnknownConnection(
                f"connection {connection!r} is a {route.settings.upstream} connection, "
                f"but {type(job).__name__} needs {job.upstream}"
            )
        return route

    async def cancel_on(
        self, route: Route, request: CancelRequest, deadline: Deadline
    ) -> CancelResult:
        """Cancels on a route already chosen by `route()` (the edge logs which one)."""
        started = time.monotonic()
        calls = await self._call_with_retries(route, request.job, deadline)
        if calls.reply is None:
            result = _circuit_open(route, request)
        else:
            result = await self._result(route, request, calls, calls.reply, deadline)
        self._metrics.job_finished(result, time.monotonic() - started)
        return result

    async def _result(
        self,
        route: Route,
        request: CancelRequest,
        calls: _Calls,
        reply: UpstreamReply,
        deadline: Deadline,
    ) -> CancelResult:
        legs = reply.legs
        if request.wait_for_confirmation and any(leg.outcome is Outcome.ACCEPTED for leg in legs):
            legs = await self._confirm(route, request.job, legs, deadline)
        outcome, reason, retryable = aggregate(legs)
        return CancelResult(
            outcome=outcome,
            reason=reason,
            retryable=retryable,
            message=describe(request.job.upstream, outcome, legs),
            upstream=request.job.upstream,
            operation=request.job.operation,
            legs=legs,
            attempts=calls.attempts,
            upstream_latency=calls.latency,
            request_id=request.request_id,
            upstream_response=reply.body,
        )

    async def _call_with_retries(self, route: Route, job: Job, deadline: Deadline) -> _Calls:
        calls = _Calls()
        while True:
            reply = await self._attempt(route, job, calls, deadline)
            if reply is None:  # the circuit opened: the last real answer, if any, stands
                return calls
            calls.reply = reply
            if deadline.expired:
                raise DeadlineExceeded(f"the caller's deadline passed during {job.operation}")
            delay = retry_delay(reply, calls.attempts, route.settings.retry, deadline)
            if delay is None:
                return calls
            await asyncio.sleep(delay)

    async def _attempt(
        self, route: Route, job: Job, calls: _Calls, deadline: Deadline
    ) -> UpstreamReply | None:
        """One upstream call within the bulkhead, or None when the breaker refuses it."""
        permit = route.breaker.allow()
        if permit is None:
            return None
        try:
            await route.bulkhead.acquire(deadline)
            try:
                reply = await self._call_adapter(route, job, calls, deadline)
            finally:
                route.bulkhead.release()
        except BaseException:
            route.breaker.abandon(permit)  # no answer (deadline, cancellation): proves nothing
            raise
        route.breaker.record(permit, outage=is_outage(reply))
        return reply

    async def _call_adapter(
        self, route: Route, job: Job, calls: _Calls, deadline: Deadline
    ) -> UpstreamReply:
        # The budget is taken after the bulkhead wait, which may have used some of it.
        timeout = deadline.budget(
            route.settings.timeout, f"{job.operation} attempt {calls.attempts + 1}"
        )
        calls.attempts += 1
        if calls.attempts > 1:
            route.metrics.retried(job.operation)
        started = time.monotonic()
        try:
            with route.metrics.in_flight(), observing(route.metrics):
                return await route.adapter.cancel(job, timeout)
        finally:
            calls.latency += time.monotonic() - started

    async def _confirm(
        self, route: Route, job: Job, legs: tuple[LegResult, ...], deadline: Deadline
    ) -> tuple[LegResult, ...]:
        """Polls the upstream's read API until every acknowledged leg is settled or time is up."""
        window = Deadline(min(route.settings.confirm_timeout, deadline.remaining()))
        checks: dict[str, LegCheck] = {}
        while True:
            timeout = min(route.settings.timeout, window.remaining())
            if timeout > 0:
                with observing(route.metrics):
                    checks.update({c.leg: c for c in await route.adapter.confirm(job, timeout)})
            states = [
                checks.get(leg.leg, _UNCHECKED).state
                for leg in legs
                if leg.outcome is Outcome.ACCEPTED
            ]
            if (
                ConfirmState.PENDING not in states
                or window.remaining() <= route.settings.confirm_interval
            ):
                self._metrics.confirmed(job.upstream, _confirmation(states))
                return tuple(_confirmed(leg, checks.get(leg.leg, _UNCHECKED)) for leg in legs)
            await asyncio.sleep(route.settings.confirm_interval)


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


def _circuit_open(route: Route, request: CancelRequest) -> CancelResult:
    """The envelope when the breaker kept the upstream from being called at all."""
    breaker, job = route.breaker, request.job
    wait = breaker.retry_in()
    after = f"a trial call in {wait:.0f}s" if wait else "a trial call is under way"
    return CancelResult(
        outcome=Outcome.FAILED,
        reason=Reason.UPSTREAM_UNAVAILABLE,
        retryable=True,
        message=(
            f"circuit open for connection {route.settings.name}: {job.upstream} failed "
            f"{breaker.consecutive_failures} times in a row, so it was not called; {after}"
        ),
        upstream=job.upstream,
        operation=job.operation,
        request_id=request.request_id,
    )
