"""The job class: the one place that declares the new job kind."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from gateway.errors import FieldViolation, InvalidArgument
from gateway.jobs import JobKind


@dataclass(frozen=True)
class TicketingJob(JobKind):
    """Ticketing: close one ticket, by its id."""

    upstream: ClassVar[str] = "ticketing"
    operation: ClassVar[str] = "CloseTicket"
    proto_field: ClassVar[str] = "ticketing_job"
    legs: ClassVar[tuple[str, ...]] = ("ticket",)
    cli_name: ClassVar[str] = "ticketing-job"
    ticket_id: str
    priority: int | None = None

    def __post_init__(self) -> None:
        if not self.ticket_id.isalnum():
            raise InvalidArgument([FieldViolation("ticket_id", "must be letters and digits")])
