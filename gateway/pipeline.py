"""One CancelJob on a chosen route, in order:

1. idempotency: a keyed call claims its record (or replays the stored envelope, waits for a
   concurrent duplicate, refuses a reused key);
2. a key resumed after an attempt that may have landed reads the job first, and does not
   cancel again unless the read shows the job still running;
3. attempts within the deadline (`resilience.retry_target`), each written to the ledger before it is
   sent and after it is answered;
4. the answer read in the light of every attempt (`outcomes.reconcile`), confirmation
   through the read API when asked, and the envelope;
5. the record settled: kept when final, freed when nothing can have landed, kept open
   otherwise.

Knows neither protobuf nor HTTP: it calls the route's adapter through `gateway.upstream`.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from collections.abc import AsyncIterator, Iterable
from dataclasses import dataclass, field, replace

from gateway import tracing
from gateway.drain import Drain
from gateway.errors import (
    DeadlineExceeded,
    IdempotencyKeyInProgress,
    IdempotencyKeyReused,
    IdempotencyStoreUnavailable,
    ShuttingDown,
)
from gateway.idempotency import (
    Claim,
    IdempotencySettings,
    IdempotencyStore,
    Ledger,
    StoreError,
    fingerprint,
    record_key,
)
from gateway.jobs import CancelRequest, JobKind
from gateway.metrics import Metrics
from gateway.model import Attempt, CancelResult, Delivery, LegResult, Outcome, Reason, UpstreamReply
from gateway.outcomes import (
    LOST_BEFORE,
    SHUTTING_DOWN,
    circuit_open,
    confirmed,
    envelope,
    needs_confirmation,
    reconcile,
    unknown,
    validated,
)
from gateway.resilience import (
    CircuitBreaker,
    Deadline,
    Permit,
    backoff_delays,
    is_misconfigured,
    is_outage,
    outage_of,
    retry_target,
    worth_retrying,
)
from gateway.router import Route
from gateway.secrets import SECRETS, SecretBook, scrubbed, scrubbed_legs
from gateway.upstream import ConfirmState, LegCheck, observing

_DEFAULT_IDEMPOTENCY = IdempotencySettings()


@dataclass
class _Call:
    """One CancelJob in progress: its attempts (earlier calls' with the same key first)."""

    route: Route
    request: CancelRequest
    deadline: Deadline
    ledger: Ledger
    history: list[Attempt] = field(default_factory=list)
    attempts: int = 0
    latency: float = 0.0

    @property
    def job(self) -> JobKind:
        return self.request.job


class Pipeline:
    def __init__(
        self,
        metrics: Metrics,
        *,
        drain: Drain | None = None,
        store: IdempotencyStore | None = None,
        idempotency: IdempotencySettings = _DEFAULT_IDEMPOTENCY,
        secrets: SecretBook = SECRETS,
    ) -> None:
        self._metrics = metrics
        self._secrets = secrets
        self._drain = drain or Drain()
        self._store = store
        self._ttl, self._lease = idempotency.ttl, idempotency.lease

    async def cancel(
        self, route: Route, request: CancelRequest, deadline: Deadline
    ) -> CancelResult:
        if request.validate_only:  # checked, routed: nothing sent, claimed or held
            result = validated(request, route.settings.name)
            self._metrics.job_finished(result, 0.0)
            return result
        store = self._store
        if not request.idempotency_key or store is None:
            return await self._run(_Call(route, request, deadline, Ledger.unkeyed()))
        key = record_key(request.caller, request.idempotency_key)
        owner = uuid.uuid4().hex  # this call, as the lease holder
        claim = await self._claim(store, key, owner, route, request, deadline)
        if claim.result is not None:
            self._metrics.idempotent_replays.labels(claim.result.upstream).inc()
            return replace(claim.result, replayed=True, request_id=request.request_id)
        ledger = Ledger(store, key, owner=owner, lease=self._lease, ttl=self._ttl)
        ledger.attempts = claim.attempts
        call = _Call(route, request, deadline, ledger, list(claim.attempts))
        async with ledger:
            try:
                result = await self._run(call)
            except BaseException:
                await asyncio.shield(ledger.abandon())
                raise
            await ledger.settle(result)
        return result

    async def _claim(
        self,
        store: IdempotencyStore,
        key: str,
        owner: str,
        route: Route,
        request: CancelRequest,
        deadline: Deadline,
    ) -> Claim:
        """The key's record for this call; waits for a concurrent duplicate to finish."""
        same = fingerprint(request, route.settings.name)
        while True:
            try:
                claim = await store.claim(
                    key,
                    fingerprint=same,
                    owner=owner,
                    lease=self._lease,
                    ttl=self._ttl,
                    reason=request.cancellation_reason,
                )
            except StoreError as error:
                raise IdempotencyStoreUnavailable(
                    f"the idempotency store cannot be reached: {error}"
                ) from error
            if claim.status == "mismatch":
                raise IdempotencyKeyReused(
                    "idempotency_key was first used with another request (job, connection "
                    "or wait_for_confirmation differ); use a new key for a new request"
                )
            if claim.status != "busy":
                return claim
            if self._drain.began:
                raise ShuttingDown("gateway shutting down while waiting for the key's first call")
            wait = deadline.remaining()
            if wait <= 0:
                raise IdempotencyKeyInProgress(
                    "a call with this idempotency_key is still running; ask again later"
                )
            try:
                await store.changed(key, within=min(wait, self._lease))
            except StoreError as error:
                raise IdempotencyStoreUnavailable(str(error)) from error

    async def _run(self, call: _Call) -> CancelResult:
        started = time.monotonic()
        result, read = None, {}
        if any(attempt.may_have_canceled for attempt in call.history):
            read = await self._read(call)
            result = await self._resume(call, read)
        if result is None:
            result = await self._attempts(call, read)
        result = scrubbed(result, self._secrets)  # before it is kept, logged or answered
        self._metrics.job_finished(result, time.monotonic() - started)
        return result

    async def _attempts(self, call: _Call, read: dict[str, LegCheck]) -> CancelResult:
        """Attempts until one answers for good; `read`: what a read before them showed."""
        settings = call.route.settings
        reply = await retry_target(
            lambda number: self._attempt(call),
            predicate=lambda reply: worth_retrying(reply, settings.retry),
            delays=backoff_delays(settings.retry),
            deadline=call.deadline,
            pause=self._drain.pause,
        )
        if reply is None:
            if self._drain.began:
                raise ShuttingDown("gateway shutting down: the upstream was not called")
            return circuit_open(settings.name, call.route.breaker, call.request, call.history)
        legs = reconcile(reply.legs, call.history)
        # A leg the read already showed canceled stays so, whatever the repeat answered.
        legs = tuple(_known_canceled(leg, read.get(leg.leg)) for leg in legs)
        return await self._finish(call, legs, reply)

    async def _finish(
        self, call: _Call, legs: tuple[LegResult, ...], reply: UpstreamReply | None
    ) -> CancelResult:
        if call.request.wait_for_confirmation and any(needs_confirmation(leg) for leg in legs):
            legs = await self._confirm(call, legs)
        return envelope(
            call.request,
            legs,
            reply,
            attempts=call.attempts,
            latency=call.latency,
            history=call.history,
        )

    async def _attempt(self, call: _Call) -> UpstreamReply | None:
        """One upstream cancel, or None when it may not be made (breaker, drain)."""
        job, settings = call.job, call.route.settings
        # Numbered as the key's ledger numbers it: a resumed key goes on from its history.
        number = len(call.history) + 1
        doing = f"{job.operation} attempt {number}"
        async with guarded(call.route, call.deadline, doing, self._drain) as permit:
            if permit is None:
                return None
            # The budget is taken after the bulkhead wait, which may have used some of it.
            timeout = call.deadline.budget(settings.timeout, doing)
            pending = Attempt(number, Delivery.NO_ANSWER, request_id=call.request.request_id)
            await call.ledger.sending([*call.history, pending])
            call.attempts += 1
            if call.attempts > 1:
                call.route.metrics.retried(job.operation)
            started = time.monotonic()
            with (
                observing(call.route.metrics),
                tracing.span(
                    doing, attributes=lambda: {**_span_of(call), "cancelgw.attempt": number}
                ),
            ):
                reply = await call.route.adapter.cancel(job, timeout=timeout)
                tracing.note(
                    lambda: {"delivery": reply.delivery.name, "legs": _legs_of(reply.legs)}
                )
            # Clean before it is written down anywhere (the ledger may be a shared Redis).
            reply = replace(reply, legs=scrubbed_legs(reply.legs, self._secrets))
            seconds = time.monotonic() - started
            call.latency += seconds
            call.history.append(
                replace(pending, delivery=reply.delivery, legs=reply.legs, latency=seconds)
            )
            _record(call.route.breaker, permit, reply)
        await call.ledger.answered(call.history)
        # An answer that came back is worth sending even now (ANSWER_MARGIN leaves the time);
        # no answer by the deadline is the caller's DEADLINE_EXCEEDED.
        if call.deadline.expired and reply.delivery is not Delivery.ANSWERED:
            raise DeadlineExceeded(f"the caller's deadline passed during {job.operation}")
        return reply

    async def _resume(self, call: _Call, read: dict[str, LegCheck]) -> CancelResult | None:
        """A key whose earlier attempt may have canceled the job: answer from what the read
        showed, without cancelling again; or None, to cancel again, when the read shows each
        leg canceled or still running with no sign of a cancel, and some still running."""
        states = [read.get(leg, _UNREAD).state for leg in call.job.legs]
        resend = {ConfirmState.ACTIVE, ConfirmState.CONFIRMED}
        if set(states) <= resend and ConfirmState.ACTIVE in states:
            return None
        legs = tuple(
            confirmed(_earlier(leg, call.history), read.get(leg, _UNREAD)) for leg in call.job.legs
        )
        return await self._finish(call, legs, None)

    async def _read(self, call: _Call) -> dict[str, LegCheck]:
        """One read of the upstream's read API, within a bulkhead slot; nothing when the
        deadline, the confirmation window or a drain leaves no time for it."""
        settings = call.route.settings
        timeout = min(settings.timeout, call.deadline.remaining())
        if timeout <= 0:
            return {}
        try:
            doing = f"reading {call.job.operation}"
            async with _slot(call.route, call.deadline, doing, self._drain) as held:
                if not held:  # the drain began while every slot was busy: no read
                    return {}
                with (
                    observing(call.route.metrics),
                    tracing.span(doing, attributes=lambda: _span_of(call)),
                ):
                    found = await self._drain.unless_draining(
                        call.route.adapter.confirm(call.job, timeout=timeout)
                    )
                    tracing.note(lambda: {"states": _states_of(found or ())})
        except DeadlineExceeded:  # every slot busy for the whole window: no read this time
            return {}
        return {check.leg: check for check in found or ()}

    async def _confirm(self, call: _Call, legs: tuple[LegResult, ...]) -> tuple[LegResult, ...]:
        """Polls the read API until every leg to confirm is settled, the confirmation window
        is over, or the gateway begins to drain."""
        settings = call.route.settings
        window = Deadline(min(settings.confirm_timeout, call.deadline.remaining()))
        checks: dict[str, LegCheck] = {}
        while True:
            checks.update(await self._read(replace(call, deadline=window)))
            states = [checks.get(leg.leg, _UNREAD).state for leg in legs if needs_confirmation(leg)]
            unsettled = {ConfirmState.PENDING, ConfirmState.ACTIVE} & set(states)
            if (
                not unsettled
                or window.remaining() <= settings.confirm_interval
                or not await self._drain.pause(settings.confirm_interval)
            ):
                break
        if self._drain.began:
            checks = {leg: _shutting_down(check) for leg, check in checks.items()}
        self._metrics.confirmed(call.job.upstream, _confirmation(states))
        fallback = _SHUTTING_DOWN if self._drain.began else _UNREAD
        return tuple(confirmed(leg, checks.get(leg.leg, fallback)) for leg in legs)


@contextlib.asynccontextmanager
async def guarded(
    route: Route, deadline: Deadline, doing: str, drain: Drain
) -> AsyncIterator[Permit | None]:
    """Breaker permit + bulkhead slot + in-flight gauge around one upstream attempt.

    Yields None when no attempt may be made: the breaker refuses, or the gateway began to
    drain (before the slot, or while waiting for it). The holder records the attempt's
    result on the breaker; a block left otherwise (None, deadline, cancellation) abandons
    the permit, since no answer proves nothing either way.
    """
    permit = None if drain.began else route.breaker.allow()
    if permit is None:
        yield None
        return
    try:
        async with _slot(route, deadline, doing, drain) as held:
            if not held or drain.began:
                route.breaker.abandon(permit)
                yield None
            else:
                yield permit
    except BaseException:
        route.breaker.abandon(permit)
        raise


@contextlib.asynccontextmanager
async def _slot(route: Route, deadline: Deadline, doing: str, drain: Drain) -> AsyncIterator[bool]:
    """One of the connection's `max_in_flight` slots, counted in the in-flight gauge; False
    (no slot) when a drain began while every slot was busy: a queued call is answered at
    once, not when a slot frees."""
    if not await route.bulkhead.acquire(deadline, doing, drain.begun):
        yield False
        return
    try:
        with route.metrics.in_flight():
            yield True
    finally:
        route.bulkhead.release()


def _span_of(call: _Call) -> dict[str, str | int]:
    """What the span of an attempt or a read says of the call."""
    return {
        "cancelgw.upstream": call.job.upstream,
        "cancelgw.connection": call.route.settings.name,
        "cancelgw.operation": call.job.operation,
    }


def _legs_of(legs: Iterable[LegResult]) -> str:
    return ",".join(f"{leg.leg}={leg.outcome.name}" for leg in legs)


def _states_of(checks: Iterable[LegCheck]) -> str:
    return ",".join(f"{check.leg}={check.state.name}" for check in checks)


_UNREAD = LegCheck("", ConfirmState.PENDING, "not confirmed within the confirmation window")


def _earlier(leg: str, history: list[Attempt]) -> LegResult:
    """What the latest earlier attempt that may have canceled `leg` says of it: its answer
    when it succeeded, UNKNOWN when its answer was lost."""
    for attempt in reversed(history):
        answered = next((g for g in attempt.legs if g.leg == leg), None)
        if answered is not None and answered.succeeded:
            return answered
        if attempt.may_have_landed:
            break
    return LegResult(leg, Outcome.UNKNOWN, Reason.UNSPECIFIED, False, detail=LOST_BEFORE)


def _known_canceled(leg: LegResult, read: LegCheck | None) -> LegResult:
    if read is None or read.state is not ConfirmState.CONFIRMED:
        return leg
    return confirmed(unknown(leg, LOST_BEFORE) if not leg.succeeded else leg, read)


_SHUTTING_DOWN = LegCheck("", ConfirmState.PENDING, SHUTTING_DOWN)


def _shutting_down(check: LegCheck) -> LegCheck:
    if check.state is ConfirmState.CONFIRMED:
        return check
    return replace(check, state=ConfirmState.PENDING, detail=f"{SHUTTING_DOWN} ({check.detail})")


def _confirmation(states: list[ConfirmState]) -> str:
    """One `cancelgw_confirmations_total` result for the job: refuted beats not confirmed."""
    if ConfirmState.REFUTED in states:
        return "refuted"
    return "confirmed" if all(s is ConfirmState.CONFIRMED for s in states) else "not_confirmed"


def _record(breaker: CircuitBreaker, permit: Permit, reply: UpstreamReply) -> None:
    """An attempt's result, as the breaker counts it: a misconfiguration not at all."""
    if is_misconfigured(reply):
        breaker.abandon(permit)
        return
    outage = is_outage(reply)
    breaker.record(permit, outage=outage, cause=outage_of(reply) if outage else "")
