"""Legs into one envelope: the rules for PARTIAL, FAILED and the rest, and all envelope
wording."""

from __future__ import annotations

from collections.abc import Sequence

from gateway.jobs import CancelRequest
from gateway.model import CancelResult, LegResult, Outcome, Reason, UpstreamReply
from gateway.resilience import CircuitBreaker

# The reason a caller can act on comes first: fix credentials or input before waiting out
# an outage. Used to pick "the more telling leg" when several legs failed differently.
_MOST_TELLING_FIRST = (
    Reason.UNAUTHORIZED,
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


def most_telling(reasons: Sequence[Reason]) -> Reason:
    return min(reasons, key=_MOST_TELLING_FIRST.index, default=Reason.UNSPECIFIED)


def aggregate(legs: Sequence[LegResult]) -> tuple[Outcome, Reason, bool]:
    """(outcome, reason, retryable) of the whole job from its legs."""
    failed = [leg for leg in legs if not leg.succeeded]
    succeeded = [leg for leg in legs if leg.succeeded]
    if not legs:
        return Outcome.FAILED, Reason.BAD_UPSTREAM_RESPONSE, False
    if not failed:
        outcome = min((leg.outcome for leg in succeeded), key=_WEAKEST_FIRST.index)
        return outcome, most_telling([leg.reason for leg in legs]), False
    reason = most_telling([leg.reason for leg in failed])
    if succeeded:
        # Retrying the whole call would re-cancel the leg that worked; the caller decides.
        return Outcome.PARTIAL, reason, False
    return Outcome.FAILED, reason, all(leg.retryable for leg in failed)


def describe(upstream: str, outcome: Outcome, legs: Sequence[LegResult]) -> str:
    """A one-line, human summary for the envelope's `message`."""
    headline = {
        Outcome.ACCEPTED: f"{upstream} acknowledged the cancel (receipt only, not yet confirmed)",
        Outcome.CANCELED: f"{upstream} canceled the job",
        Outcome.ALREADY_CANCELED: f"{upstream} reports the job was already canceled",
        Outcome.PARTIAL: "some legs were canceled and some were not",
        Outcome.FAILED: f"{upstream} did not cancel the job",
    }.get(outcome, "no outcome")
    notes = [
        f"{leg.leg}: {leg.upstream_message or leg.detail or leg.reason.name.lower()}"
        for leg in legs
        if not leg.succeeded or leg.reason is Reason.NOT_CONFIRMED
    ]
    return "; ".join([headline, *notes])


def envelope(
    request: CancelRequest,
    legs: tuple[LegResult, ...],
    reply: UpstreamReply,
    attempts: int,
    latency: float,
) -> CancelResult:
    """The envelope for the legs the upstream (and confirmation) left."""
    job = request.job
    outcome, reason, retryable = aggregate(legs)
    return CancelResult(
        outcome=outcome,
        reason=reason,
        retryable=retryable,
        message=describe(job.upstream, outcome, legs),
        upstream=job.upstream,
        operation=job.operation,
        legs=legs,
        attempts=attempts,
        upstream_latency=latency,
        request_id=request.request_id,
        upstream_response=reply.body,
    )


def circuit_open(connection: str, breaker: CircuitBreaker, request: CancelRequest) -> CancelResult:
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
            f"{breaker.consecutive_failures} times in a row, so it was not called; {after}"
        ),
        upstream=job.upstream,
        operation=job.operation,
        request_id=request.request_id,
    )
