"""Gateway-side failures: the only things that end a CancelJob with a non-OK gRPC status.

Whatever the upstream decided or failed at is an envelope, not one of these. The core raises
them; `STATUS` below is the one table from each class to the gRPC status code (by name, so
this module stays free of grpc) and the ErrorInfo reason a client sees.

    GatewayError
    ├── InvalidArgument              a request field is malformed (each violation names it)
    ├── UndecodableRequest           the request bytes are no CancelJobRequest at all
    ├── UnknownConnection            `connection` names nothing configured, or another upstream's
    ├── JobKindNotImplemented        a job kind no registered upstream serves
    ├── DeadlineExceeded             the caller's deadline passed before the gateway could answer
    ├── IdempotencyKeyReused         the key was first used with another request
    ├── IdempotencyKeyInProgress     the key's first call was still running at the deadline
    ├── IdempotencyStoreUnavailable  the store that guards keys cannot be reached
    ├── ShuttingDown                 the gateway is draining and took no new upstream call
    ├── Unauthenticated              no credentials, or none a configured caller has
    ├── CallerNotPermitted           the caller may not cancel this job kind on this connection
    └── CallerRateLimited            the caller spent its token bucket (`retry_after` seconds)
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import NamedTuple


@dataclass(frozen=True)
class FieldViolation:
    """A request field (dotted proto path) and what is wrong with it."""

    field: str
    description: str


class GatewayError(Exception):
    """Base of every gateway-side failure; `metadata` goes into the ErrorInfo."""

    def __init__(self, message: str, metadata: Mapping[str, str] | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.metadata: dict[str, str] = dict(metadata or {})


class InvalidArgument(GatewayError):
    def __init__(self, violations: list[FieldViolation]) -> None:
        message = "; ".join(f"{v.field}: {v.description}" for v in violations)
        super().__init__(message, {"fields": ",".join(v.field for v in violations)})
        self.violations = tuple(violations)

    def under(self, prefix: str) -> InvalidArgument:
        """The same violations, with field paths rooted at `prefix` (e.g. the oneof name)."""
        return InvalidArgument(
            [FieldViolation(f"{prefix}.{v.field}", v.description) for v in self.violations]
        )


class UnknownConnection(GatewayError):
    pass


class JobKindNotImplemented(GatewayError):
    pass


class DeadlineExceeded(GatewayError):
    pass


class UndecodableRequest(GatewayError):
    pass


class IdempotencyKeyReused(GatewayError):
    pass


class IdempotencyKeyInProgress(GatewayError):
    pass


class IdempotencyStoreUnavailable(GatewayError):
    pass


class ShuttingDown(GatewayError):
    pass


class Unauthenticated(GatewayError):
    pass


class CallerNotPermitted(GatewayError):
    pass


class CallerRateLimited(GatewayError):
    def __init__(self, message: str, retry_after: float) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class Status(NamedTuple):
    code: str
    """A gRPC status code's name (`INVALID_ARGUMENT`)."""
    reason: str
    """The ErrorInfo reason: a contract with the clients that switch on it."""


STATUS: Mapping[type[GatewayError], Status] = {
    InvalidArgument: Status("INVALID_ARGUMENT", "INVALID_ARGUMENT"),
    UnknownConnection: Status("FAILED_PRECONDITION", "UNKNOWN_CONNECTION"),
    JobKindNotImplemented: Status("UNIMPLEMENTED", "JOB_KIND_NOT_IMPLEMENTED"),
    DeadlineExceeded: Status("DEADLINE_EXCEEDED", "DEADLINE_EXCEEDED"),
    UndecodableRequest: Status("INVALID_ARGUMENT", "UNDECODABLE_REQUEST"),
    IdempotencyKeyReused: Status("INVALID_ARGUMENT", "IDEMPOTENCY_KEY_REUSED"),
    IdempotencyKeyInProgress: Status("ABORTED", "IDEMPOTENCY_KEY_IN_PROGRESS"),
    IdempotencyStoreUnavailable: Status("UNAVAILABLE", "IDEMPOTENCY_STORE_UNAVAILABLE"),
    ShuttingDown: Status("UNAVAILABLE", "SHUTTING_DOWN"),
    Unauthenticated: Status("UNAUTHENTICATED", "UNAUTHENTICATED"),
    CallerNotPermitted: Status("PERMISSION_DENIED", "CALLER_NOT_PERMITTED"),
    CallerRateLimited: Status("RESOURCE_EXHAUSTED", "CALLER_RATE_LIMITED"),
}
_INTERNAL = Status("INTERNAL", "INTERNAL")


def status_of(error: GatewayError) -> Status:
    """The status of the error's class, or of the nearest class above it in the table."""
    return next((STATUS[c] for c in type(error).__mro__ if c in STATUS), _INTERNAL)
