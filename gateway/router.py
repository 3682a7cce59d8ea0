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

from adapters.base import Adapter, ConfirmState, LegCheck
from gateway.config import Config, ConnectionSettings
from gateway.errors import DeadlineExceeded, JobKindNotImplemented, UnknownConnection
from gateway.jobs import CancelRequest, Job
from gateway.model import CancelResult, LegResult, Outcome, Reason, UpstreamReply
from gateway.outcomes import aggregate, describe
from gateway.resilience import Bulkhead, Deadline, retry_delay


@dataclass
class Route:
    """A configured connection with its live adapter and its in-flight bound."""

    settings: ConnectionSettings
    adapter: Adapter
    bulkhead: Bulkhead


@dataclass
class _Calls:
    """What the upstream calls of one CancelJob added up to."""

    reply: UpstreamReply
    attempts: int
    latency: float


class Router:
    def __init__(
        self, config: Config, adapters: Mapping[str, Adapter], supported_jobs: frozenset[type]
    ) -> None:
        self._config = config
        self._supported_jobs = tuple(supported_jobs)
        self._routes = {
            name: Route(settings, adapters[name], Bulkhead(settings.max_in_flight))
            for name, settings in config.connections.items()
        }

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

    async def cancel(self, request: CancelRequest, deadline: Deadline) -> CancelResult:
        route = self.route(request.job, request.connection)
        calls = await self._call_with_retries(route, request.job, deadline)
        legs = calls.reply.legs
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
            upstream_response=calls.reply.body,
        )

    async def _call_with_retries(self, route: Route, job: Job, deadline: Deadline) -> _Calls:
        attempt, latency = 0, 0.0
        while True:
            attempt += 1
            timeout = deadline.budget(route.settings.timeout, f"{job.operation} attempt {attempt}")
            await route.bulkhead.acquire(deadline)
            started = time.monotonic()
            try:
                reply = await route.adapter.cancel(job, timeout)
            finally:
                route.bulkhead.release()
                latency += time.monotonic() - started
            if deadline.expired:
                raise DeadlineExceeded(f"the caller's deadline passed during {job.operation}")
            delay = retry_delay(reply, attempt, route.settings.retry, deadline)
            if delay is None:
                return _Calls(reply, attempt, latency)
            await asyncio.sleep(delay)

    async def _confirm(
        self, route: Route, job: Job, legs: tuple[LegResult, ...], deadline: Deadline
    ) -> tuple[LegResult, ...]:
        """Polls the upstream's read API until every acknowledged leg is settled or time is up."""
        window = Deadline(min(route.settings.confirm_timeout, deadline.remaining()))
        checks: dict[str, LegCheck] = {}
        while True:
            timeout = min(route.settings.timeout, window.remaining())
            if timeout > 0:
                checks.update({c.leg: c for c in await route.adapter.confirm(job, timeout)})
            settled = all(
                checks.get(leg.leg, _UNCHECKED).state is not ConfirmState.PENDING
                for leg in legs
                if leg.outcome is Outcome.ACCEPTED
            )
            if settled or window.remaining() <= route.settings.confirm_interval:
                return tuple(_confirmed(leg, checks.get(leg.leg, _UNCHECKED)) for leg in legs)
            await asyncio.sleep(route.settings.confirm_interval)


_UNCHECKED = LegCheck("", ConfirmState.PENDING, "not confirmed within the confirmation window")


def _confirmed(leg: LegResult, check: LegCheck) -> LegResult:
    if leg.outcome is not Outcome.ACCEPTED:
        return leg
    if check.state is ConfirmState.CONFIRMED:
        return replace(leg, outcome=Outcome.CANCELED, detail=check.detail)
    return replace(leg, reason=Reason.NOT_CONFIRMED, detail=check.detail or _UNCHECKED.detail)
