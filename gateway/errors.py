"""Gateway-side failures: the only things that end a CancelJob with a non-OK gRPC status.

Whatever the upstream decided or failed at is an envelope, not one of these. Each error
names its gRPC status code (by name, so this module stays free of grpc) and an ErrorInfo
reason; `gateway.service` turns them into a rich status in one place.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import ClassVar


@dataclass(frozen=True)
class FieldViolation:
    """A request field (dotted proto path) and what is wrong with it."""

    field: str
    description: str


class GatewayError(Exception):
    """Base of every gateway-side failure."""

    status_code: ClassVar[str] = "INTERNAL"
    reason: ClassVar[str] = "INTERNAL"

    def __init__(self, message: str, metadata: Mapping[str, str] | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.metadata: dict[str, str] = dict(metadata or {})


class InvalidArgument(GatewayError):
    status_code = "INVALID_ARGUMENT"
    reason = "INVALID_ARGUMENT"

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
    status_code = "FAILED_PRECONDITION"
    reason = "UNKNOWN_CONNECTION"


class JobKindNotImplemented(GatewayError):
    status_code = "UNIMPLEMENTED"
    reason = "JOB_KIND_NOT_IMPLEMENTED"


class DeadlineExceeded(GatewayError):
    status_code = "DEADLINE_EXCEEDED"
    reason = "DEADLINE_EXCEEDED"
