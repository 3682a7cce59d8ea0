"""The keys only a ticketing connection reads."""

from __future__ import annotations

from gateway.schema import Section, settle, url


class TicketingOptions(Section, frozen=True):
    base_url: str

    def __post_init__(self) -> None:
        settle(self, "base_url", url("base_url", self.base_url))
