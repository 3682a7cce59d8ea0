"""Legs into one envelope: the rules for PARTIAL, FAILED, UNKNOWN and the rest, what a lost
answer does to them, and all envelope wording.

The envelope never claims more than the gateway knows. An attempt whose request may have
landed without an answer (`Delivery.NO_ANSWER`) changes what later answers prove: "not found"
or "already canceled" then fits both "our lost attempt canceled it" and "it was never there /
someone else did", so such legs become UNKNOWN; a failure of the lost attempt itself says
nothing about the job either. Only the read API (confirmation) turns UNKNOWN into CANCELED.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace

from gateway.jobs import CancelRequest, job_values
from gateway.model import (
    Attempt,
    CancelResult,
    LegResult,
    Outcome,
    Reason,
    UpstreamReply,
)
from gateway.resilience import CircuitBreaker
from gateway.upstream import ConfirmState, LegCheck

# The reason a caller can act on comes first: fix credentials or input before waiting out
# an outage. Used to pick "the more telling leg" when several legs failed differently.
_MOST_TELLING_FIRST = (
    Reason.UNAUTHORIZED,
    Reason.CONNECTION_MISCONFIGURED,
    Reason.INVALID_REQUEST,
    Reason.NOT_FOUND,
    Reason.NOT_SUPPORTED,
    Reason.OPERATION_FAILED,
    Reason.RATE_LIMITED,
    Reason.UPSTREAM_ERROR,
    Reason.TIMEOUT,
    Reason.UPSTREAM_UNAVAILABLE,
    Reason.BAD_UPSTREAM_RESPONSE,
    Reason.NOT_CONFIRMED,
    Reason.UNSPECIFIED,
)

# Of successful legs, the weakest claim wins: one merely ACCEPTED leg makes the job ACCEPTED.
_WEAKEST_FIRST = (Outcome.ACCEPTED, Outcome.CANCELED, Outcome.ALREADY_CANCELED)

LOST_NOW = "this attempt got no answer that says what happened; it may have canceled the job"
LOST_BEFORE = "an earlier attempt got no answer and may have canceled the job"
SHUTTING_DOWN = "gateway shutting down: not confirmed"


def most_telling(reasons: Sequence[Reason]) -> Reason:
    return min(reasons, key=_MOST_TELLING_FIRST.index, default=Reason.UNSPECIFIED)


def aggregate(legs: Sequence[LegResult]) -> tuple[Outcome, Reason, bool]:
    """(outcome, reason, retryable) of the whole job from its legs."""
    if not legs:
        return Outcome.FAILED, Reason.BAD_UPSTREAM_RESPONSE, False
    succeeded = [leg for leg in legs if leg.succeeded]
    unknown = [leg for leg in legs if leg.outcome is Outcome.UNKNOWN]
    failed = [leg for leg in legs if not leg.succeeded and leg.outcome is not Outcome.UNKNOWN]
    if failed and succeeded:
        # Retrying the whole call would re-cancel the leg that worked; the caller decides.
        return Outcome.PARTIAL, most_telling([leg.reason for leg in failed]), False
    if unknown:
        return Outcome.UNKNOWN, most_telling([leg.reason for leg in unknown]), False
    if failed:
        reason = most_telling([leg.reason for leg in failed])
        return Outcome.FAILED, reason, all(leg.retryable for leg in failed)
    outcome = min((leg.outcome for leg in succeeded), key=_WEAKEST_FIRST.index)
    return outcome, most_telling([leg.reason for leg in legs]), False


def reconcile(legs: Sequence[LegResult], history: Sequence[Attempt]) -> tuple[LegResult, ...]:
    """The final attempt's legs, read in the light of every attempt before it."""
    if not history:
        return tuple(legs)
    lost_now = history[-1].may_have_landed
    lost_before = any(attempt.may_have_canceled for attempt in history[:-1])
    return tuple(_reconciled(leg, lost_now, lost_before) for leg in legs)


def _reconciled(leg: LegResult, lost_now: bool, lost_before: bool) -> LegResult:
    if leg.outcome in (Outcome.ACCEPTED, Outcome.CANCELED):
        return leg  # the upstream says so now, whatever happened before
    fits_either = leg.reason is Reason.NOT_FOUND or leg.outcome is Outcome.ALREADY_CANCELED
    if lost_now and not leg.succeeded:
        return unknown(leg, LOST_NOW)
    if lost_before and fits_either:
        return unknown(leg, LOST_BEFORE)
    return leg


def unknown(leg: LegResult, why: str) -> LegResult:
    detail = f"{leg.detail}; {why}" if leg.detail else why
    return replace(leg, outcome=Outcome.UNKNOWN, retryable=False, detail=detail)


def needs_confirmation(leg: LegResult) -> bool:
    return leg.outcome in (Outcome.ACCEPTED, Outcome.UNKNOWN)


def confirmed(leg: LegResult, check: LegCheck) -> LegResult:
    """A leg after the read API had its say: CANCELED once it shows the job canceled;
    otherwise ACCEPTED becomes ACCEPTED / NOT_CONFIRMED and UNKNOWN stays UNKNOWN, each
    with what the read showed."""
    if not needs_confirmation(leg):
        return leg
    if check.state is ConfirmState.CONFIRMED:
        return replace(
            leg, outcome=Outcome.CANCELED, reason=Reason.UNSPECIFIED, detail=check.detail
        )
    seen = check.detail or "not confirmed within the confirmation window"
    if leg.outcome is Outcome.UNKNOWN:
        return replace(leg, detail=f"{leg.detail}; read API: {seen}")
    return replace(leg, reason=Reason.NOT_CONFIRMED, detail=seen)


def envelope(
    request: CancelRequest,
    legs: tuple[LegResult, ...],
    reply: UpstreamReply | None,
    *,
    attempts: int,
    latency: float,
    history: Sequence[Attempt],
) -> CancelResult:
    """The envelope for the legs the upstream (and confirmation) left."""
    job = request.job
    outcome, reason, retryable = aggregate(legs)
    lost = any(attempt.may_have_landed for attempt in history)
    return CancelResult(
        outcome=outcome,
        reason=reason,
        retryable=retryable,
        message=describe(job.upstream, outcome, legs, lost=lost),
        upstream=job.upstream,
        operation=job.operation,
        legs=legs,
        attempts=attempts,
        upstream_latency=latency,
        request_id=request.request_id,
        upstream_response=reply.body if reply is not None else None,
        retry_after=reply.retry_after if reply is not None else None,
        history=tuple(history),
    )


def describe(
    upstream: str, outcome: Outcome, legs: Sequence[LegResult], *, lost: bool = False
) -> str:
    """A one-line, human summary for the envelope's `message`."""
    headline = {
        Outcome.ACCEPTED: f"{upstream} acknowledged the cancel (receipt only, not yet confirmed)",
        Outcome.CANCELED: f"{upstream} canceled the job",
        Outcome.ALREADY_CANCELED: f"{upstream} reports the job was already canceled",
        Outcome.PARTIAL: "some legs were canceled and some were not",
        Outcome.FAILED: f"{upstream} did not cancel the job",
        Outcome.UNKNOWN: (
            f"the gateway cannot tell whether {upstream} canceled the job (an attempt got no "
            "answer); ask again with the same idempotency_key (the gateway reads the job "
            "first), or with wait_for_confirmation, to find out"
        ),
    }.get(outcome, "no outcome")
    if outcome is Outcome.FAILED and lost:
        headline = (
            f"{upstream} did not confirm the cancel, and an attempt that got no answer may "
            "have applied it; retry with the same idempotency_key, or ask with "
            "wait_for_confirmation"
        )
    notes = [
        f"{leg.leg}: {leg.upstream_message or leg.detail or leg.reason.name.lower()}"
        for leg in legs
        if not leg.succeeded or leg.reason is Reason.NOT_CONFIRMED
    ]
    return "; ".join([headline, *notes])


def circuit_open(
    connection: str, breaker: CircuitBreaker, request: CancelRequest, history: Sequence[Attempt]
) -> CancelResult:
    """The envelope when the breaker kept the upstream from being called at all."""
    job = request.job
    wait = breaker.retry_in()
    after = f"a trial call in {wait:.0f}s" if wait else "a trial call is under way"
    return CancelResult(
        outcome=Outcome.FAILED,
        reason=Reason.UPSTREAM_UNAVAILABLE,
        retryable=True,
        message=(
            f"circuit open for connection {connection}: {job.upstream} failed "
            f"{breaker.consecutive_failures} times in a row (the last: "
            f"{breaker.last_outage or 'not recorded'}), so it was not called; {after}"
        ),
        upstream=job.upstream,
        operation=job.operation,
        request_id=request.request_id,
        history=tuple(history),
    )


def validated(request: CancelRequest, connection: str) -> CancelResult:
    """The envelope of a validate_only call that passed every check: what would have been
    called, and that nothing was."""
    job = request.job
    ids = ", ".join(f"{name} {value}" for name, value in job_values(job).items())
    return CancelResult(
        outcome=Outcome.VALIDATED,
        reason=Reason.UNSPECIFIED,
        retryable=False,
        message=(
            f"would cancel {job.upstream} {job.operation} ({ids}) through connection "
            f"{connection}; validate_only: nothing was sent"
        ),
        upstream=job.upstream,
        operation=job.operation,
        request_id=request.request_id,
    )
