"""The vocabulary every module speaks: outcomes, reasons, leg results and the final result.

Nothing here knows about protobuf or HTTP; the edges convert to and from these types.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from typing import TypeAlias

JsonValue: TypeAlias = "dict[str, JsonValue] | list[JsonValue] | str | int | float | bool | None"


class Outcome(enum.Enum):
    """What happened to the job. Names match the proto's `OUTCOME_*` values."""

    UNSPECIFIED = 0
    ACCEPTED = 1
    CANCELED = 2
    ALREADY_CANCELED = 3
    PARTIAL = 4
    FAILED = 5
    UNKNOWN = 6
    VALIDATED = 7
    """A validate_only call passed every check; nothing was sent."""


class Reason(enum.Enum):
    """Why a leg or job ended as it did. Names match the proto's `REASON_*` values."""

    UNSPECIFIED = 0
    INVALID_REQUEST = 1
    NOT_FOUND = 2
    UNAUTHORIZED = 3
    OPERATION_FAILED = 4
    NOT_SUPPORTED = 5
    RATE_LIMITED = 6
    UPSTREAM_ERROR = 7
    UPSTREAM_UNAVAILABLE = 8
    TIMEOUT = 9
    BAD_UPSTREAM_RESPONSE = 10
    NOT_CONFIRMED = 11
    CONNECTION_MISCONFIGURED = 12
    """The connection's configuration stops it: never retried, never an outage."""


class Delivery(enum.Enum):
    """What became of one attempt's request. Names match the proto's `DELIVERY_*` values."""

    UNSPECIFIED = 0
    ANSWERED = 1
    """The upstream answered, and the answer says what it did."""
    NO_ANSWER = 2
    """Sent, or possibly sent, and no readable answer came back: it may have landed."""
    NOT_SENT = 3
    """Never left the gateway: nothing can have landed."""


SUCCESSFUL_OUTCOMES = frozenset({Outcome.ACCEPTED, Outcome.CANCELED, Outcome.ALREADY_CANCELED})


@dataclass(frozen=True)
class Verdict:
    """One row of an adapter's code table: how an upstream signal normalizes."""

    outcome: Outcome
    reason: Reason
    retryable: bool
    meaning: str = ""


@dataclass(frozen=True)
class LegResult:
    """The normalized answer for one leg of a cancel (`report`, `bid`, `ask`, `report_run`)."""

    leg: str
    outcome: Outcome
    reason: Reason
    retryable: bool
    upstream_code: str = ""
    upstream_message: str = ""
    detail: str = ""

    @classmethod
    def from_verdict(
        cls, leg: str, verdict: Verdict, code: str, message: str = "", detail: str = ""
    ) -> LegResult:
        return cls(leg, verdict.outcome, verdict.reason, verdict.retryable, code, message, detail)

    @property
    def succeeded(self) -> bool:
        return self.outcome in SUCCESSFUL_OUTCOMES


@dataclass(frozen=True)
class UpstreamReply:
    """What one upstream call came back with, already normalized by its adapter."""

    legs: tuple[LegResult, ...]
    body: JsonValue = None
    retry_after: float | None = None
    delivery: Delivery = Delivery.ANSWERED


@dataclass(frozen=True)
class Attempt:
    """One upstream attempt as the ledger keeps it; `request_id` is the call that made it."""

    number: int
    delivery: Delivery
    legs: tuple[LegResult, ...] = ()
    latency: float = 0.0
    request_id: str = ""

    @property
    def may_have_landed(self) -> bool:
        """Sent, and no answer says what happened."""
        return self.delivery is Delivery.NO_ANSWER

    @property
    def may_have_canceled(self) -> bool:
        """It may have canceled a leg: no answer, or an answer that a leg succeeded."""
        answered_success = self.delivery is Delivery.ANSWERED and any(
            leg.succeeded for leg in self.legs
        )
        return self.may_have_landed or answered_success


@dataclass(frozen=True)
class CancelResult:
    """The envelope: one per CancelJob, whatever the upstream answered."""

    outcome: Outcome
    reason: Reason
    retryable: bool
    message: str
    upstream: str
    operation: str
    legs: tuple[LegResult, ...] = ()
    attempts: int = 0
    upstream_latency: float = 0.0
    replayed: bool = False
    request_id: str = ""
    upstream_response: JsonValue = field(default=None, compare=False)
    retry_after: float | None = None
    history: tuple[Attempt, ...] = ()
