"""Legs into one envelope: ACCEPTED, PARTIAL, FAILED, UNKNOWN and the reason shown; what a
lost answer does to later answers; what confirmation may claim."""

from __future__ import annotations

import pytest

from gateway.model import Attempt, Delivery, LegResult, Outcome, Reason
from gateway.outcomes import aggregate, confirmed, describe, reconcile
from gateway.upstream import ConfirmState, LegCheck


def _leg(
    outcome: Outcome,
    reason: Reason = Reason.UNSPECIFIED,
    retryable: bool = False,
    leg: str = "report",
    message: str = "",
) -> LegResult:
    return LegResult(leg, outcome, reason, retryable, upstream_message=message)


@pytest.mark.parametrize(
    "leg",
    [
        _leg(Outcome.ACCEPTED),
        _leg(Outcome.CANCELED),
        _leg(Outcome.ALREADY_CANCELED),
        _leg(Outcome.FAILED, Reason.NOT_FOUND),
        _leg(Outcome.FAILED, Reason.RATE_LIMITED, retryable=True),
    ],
)
def test_single_leg_passes_through(leg: LegResult) -> None:
    assert aggregate([leg]) == (leg.outcome, leg.reason, leg.retryable)


def test_two_accepted_legs_are_accepted() -> None:
    legs = [_leg(Outcome.ACCEPTED, leg="bid"), _leg(Outcome.ACCEPTED, leg="ask")]
    assert aggregate(legs) == (Outcome.ACCEPTED, Reason.UNSPECIFIED, False)


@pytest.mark.parametrize(
    ("first", "second", "expected"),
    [
        (Outcome.ACCEPTED, Outcome.CANCELED, Outcome.ACCEPTED),
        (Outcome.CANCELED, Outcome.ACCEPTED, Outcome.ACCEPTED),
        (Outcome.ALREADY_CANCELED, Outcome.CANCELED, Outcome.CANCELED),
        (Outcome.ALREADY_CANCELED, Outcome.ALREADY_CANCELED, Outcome.ALREADY_CANCELED),
    ],
)
def test_successful_legs_make_the_weakest_claim(
    first: Outcome, second: Outcome, expected: Outcome
) -> None:
    outcome, _, retryable = aggregate([_leg(first, leg="bid"), _leg(second, leg="ask")])
    assert (outcome, retryable) == (expected, False)


def test_failed_legs_show_the_more_telling_reason() -> None:
    legs = [
        _leg(Outcome.FAILED, Reason.UPSTREAM_UNAVAILABLE, retryable=True, leg="bid"),
        _leg(Outcome.FAILED, Reason.NOT_FOUND, leg="ask"),
    ]
    assert aggregate(legs) == (Outcome.FAILED, Reason.NOT_FOUND, False)
    assert aggregate(legs[::-1]) == (Outcome.FAILED, Reason.NOT_FOUND, False)


@pytest.mark.parametrize("other", [r for r in Reason if r is not Reason.UNAUTHORIZED])
def test_unauthorized_beats_every_other_reason(other: Reason) -> None:
    legs = [
        _leg(Outcome.FAILED, other, leg="bid"),
        _leg(Outcome.FAILED, Reason.UNAUTHORIZED, leg="ask"),
    ]
    assert aggregate(legs)[:2] == (Outcome.FAILED, Reason.UNAUTHORIZED)
    assert aggregate(legs[::-1])[:2] == (Outcome.FAILED, Reason.UNAUTHORIZED)


@pytest.mark.parametrize(
    ("bid_retryable", "ask_retryable", "expected"),
    [(True, True, True), (True, False, False), (False, True, False), (False, False, False)],
)
def test_failed_job_is_retryable_only_if_every_leg_is(
    bid_retryable: bool, ask_retryable: bool, expected: bool
) -> None:
    legs = [
        _leg(Outcome.FAILED, Reason.UPSTREAM_ERROR, bid_retryable, leg="bid"),
        _leg(Outcome.FAILED, Reason.TIMEOUT, ask_retryable, leg="ask"),
    ]
    assert aggregate(legs) == (Outcome.FAILED, Reason.UPSTREAM_ERROR, expected)


@pytest.mark.parametrize("success", [Outcome.ACCEPTED, Outcome.CANCELED])
def test_one_success_one_failure_is_partial_and_not_retryable(success: Outcome) -> None:
    legs = [
        _leg(success, leg="bid"),
        _leg(Outcome.FAILED, Reason.RATE_LIMITED, retryable=True, leg="ask"),
    ]
    assert aggregate(legs) == (Outcome.PARTIAL, Reason.RATE_LIMITED, False)
    assert aggregate(legs[::-1]) == (Outcome.PARTIAL, Reason.RATE_LIMITED, False)


def test_partial_reason_comes_from_the_failed_leg_not_the_successful_one() -> None:
    legs = [
        _leg(Outcome.ACCEPTED, Reason.NOT_CONFIRMED, leg="bid"),
        _leg(Outcome.FAILED, Reason.TIMEOUT, retryable=True, leg="ask"),
    ]
    assert aggregate(legs) == (Outcome.PARTIAL, Reason.TIMEOUT, False)


def test_not_confirmed_on_a_successful_leg_is_the_jobs_reason() -> None:
    legs = [
        _leg(Outcome.CANCELED, leg="bid"),
        _leg(Outcome.ACCEPTED, Reason.NOT_CONFIRMED, leg="ask"),
    ]
    assert aggregate(legs) == (Outcome.ACCEPTED, Reason.NOT_CONFIRMED, False)
    assert aggregate(legs[::-1]) == (Outcome.ACCEPTED, Reason.NOT_CONFIRMED, False)


def test_no_legs_is_a_bad_upstream_response() -> None:
    assert aggregate([]) == (Outcome.FAILED, Reason.BAD_UPSTREAM_RESPONSE, False)


def test_describe_mentions_failed_legs_messages_only() -> None:
    legs = [
        _leg(Outcome.CANCELED, leg="bid", message="bid was fine"),
        _leg(Outcome.FAILED, Reason.NOT_FOUND, leg="ask", message="Resource Not Found"),
    ]
    text = describe("kiiex", Outcome.PARTIAL, legs)
    assert "ask: Resource Not Found" in text
    assert "bid was fine" not in text


def test_describe_falls_back_to_detail_then_reason() -> None:
    legs = [
        LegResult("bid", Outcome.FAILED, Reason.TIMEOUT, True, detail="no answer in 5s"),
        LegResult("ask", Outcome.FAILED, Reason.UPSTREAM_UNAVAILABLE, True),
    ]
    text = describe("kiiex", Outcome.FAILED, legs)
    assert text.startswith("kiiex did not cancel the job")
    assert "bid: no answer in 5s" in text
    assert "ask: upstream_unavailable" in text


def test_describe_notes_an_unconfirmed_success() -> None:
    legs = [_leg(Outcome.ACCEPTED, Reason.NOT_CONFIRMED, leg="report")]
    text = describe("kiiex", Outcome.ACCEPTED, legs)
    assert "kiiex acknowledged the cancel" in text
    assert "report: not_confirmed" in text


# --- what a lost answer does to the legs (gateway.outcomes.reconcile) ---

LOST = Attempt(1, Delivery.NO_ANSWER)
ANSWERED = Attempt(2, Delivery.ANSWERED)
NOT_SENT = Attempt(1, Delivery.NOT_SENT)


@pytest.mark.parametrize(
    "leg",
    [_leg(Outcome.FAILED, Reason.NOT_FOUND), _leg(Outcome.ALREADY_CANCELED)],
    ids=["not found", "already canceled"],
)
def test_after_a_lost_answer_what_fits_either_case_is_unknown(leg: LegResult) -> None:
    (seen,) = reconcile([leg], [LOST, ANSWERED])
    assert (seen.outcome, seen.reason, seen.retryable) == (Outcome.UNKNOWN, leg.reason, False)
    assert "may have canceled" in seen.detail


@pytest.mark.parametrize(
    "leg",
    [
        _leg(Outcome.ACCEPTED),
        _leg(Outcome.CANCELED),
        _leg(Outcome.FAILED, Reason.UPSTREAM_ERROR, retryable=True),
        _leg(Outcome.FAILED, Reason.INVALID_REQUEST),
    ],
)
def test_after_a_lost_answer_a_telling_answer_stands(leg: LegResult) -> None:
    assert reconcile([leg], [LOST, ANSWERED]) == (leg,)


def test_without_a_lost_answer_nothing_changes() -> None:
    legs = [_leg(Outcome.FAILED, Reason.NOT_FOUND), _leg(Outcome.ALREADY_CANCELED, leg="ask")]
    assert reconcile(legs, [NOT_SENT, ANSWERED]) == tuple(legs)


def test_a_failure_of_the_lost_attempt_itself_says_nothing_of_the_job() -> None:
    leg = _leg(Outcome.FAILED, Reason.TIMEOUT, retryable=True)
    (seen,) = reconcile([leg], [LOST])
    assert (seen.outcome, seen.reason, seen.retryable) == (Outcome.UNKNOWN, Reason.TIMEOUT, False)


def test_any_unknown_leg_makes_the_job_unknown_unless_it_is_partial() -> None:
    unknown = _leg(Outcome.UNKNOWN, Reason.NOT_FOUND, leg="bid")
    assert aggregate([unknown, _leg(Outcome.ACCEPTED, leg="ask")]) == (
        Outcome.UNKNOWN, Reason.NOT_FOUND, False
    )  # fmt: skip
    failed = _leg(Outcome.FAILED, Reason.OPERATION_FAILED, leg="ask")
    assert aggregate([unknown, failed])[0] is Outcome.UNKNOWN
    three = [unknown, failed, _leg(Outcome.ACCEPTED, leg="x")]
    assert aggregate(three) == (Outcome.PARTIAL, Reason.OPERATION_FAILED, False)


@pytest.mark.parametrize(
    ("before", "state", "after"),
    [
        (Outcome.ACCEPTED, ConfirmState.CONFIRMED, (Outcome.CANCELED, Reason.UNSPECIFIED)),
        (Outcome.ACCEPTED, ConfirmState.ACTIVE, (Outcome.ACCEPTED, Reason.NOT_CONFIRMED)),
        (Outcome.ACCEPTED, ConfirmState.REFUTED, (Outcome.ACCEPTED, Reason.NOT_CONFIRMED)),
        (Outcome.UNKNOWN, ConfirmState.CONFIRMED, (Outcome.CANCELED, Reason.UNSPECIFIED)),
        (Outcome.UNKNOWN, ConfirmState.PENDING, (Outcome.UNKNOWN, Reason.NOT_FOUND)),
        (Outcome.UNKNOWN, ConfirmState.REFUTED, (Outcome.UNKNOWN, Reason.NOT_FOUND)),
    ],
)
def test_only_the_read_api_turns_a_leg_canceled(
    before: Outcome, state: ConfirmState, after: tuple[Outcome, Reason]
) -> None:
    leg = _leg(before, Reason.NOT_FOUND if before is Outcome.UNKNOWN else Reason.UNSPECIFIED)
    seen = confirmed(leg, LegCheck("report", state, "RequestStatus X"))
    assert (seen.outcome, seen.reason) == after
    assert "RequestStatus X" in seen.detail


def test_a_failure_after_a_lost_answer_does_not_say_it_did_not_cancel() -> None:
    legs = [_leg(Outcome.FAILED, Reason.UPSTREAM_ERROR, retryable=True)]
    plain = describe("kiiex", Outcome.FAILED, legs)
    lost = describe("kiiex", Outcome.FAILED, legs, lost=True)
    assert plain.startswith("kiiex did not cancel the job")
    assert "did not cancel" not in lost
    assert "may have applied it" in lost
