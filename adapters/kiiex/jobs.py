"""KIIEX's job kinds: the `kiiex_user_report` and `kiiex_quote` members of the contract's
`job` oneof, validated on construction, and the body each cancel sends."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import ClassVar

from gateway.errors import FieldViolation
from gateway.jobs import CLI_FLAG, JobKind, matching, positive, raise_if
from gateway.model import JsonValue

_GUID = re.compile(r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}")


@dataclass(frozen=True)
class KiiexUserReport(JobKind):
    """KIIEX CancelUserReport: a scheduled report, by its GUID (kept lower-case)."""

    upstream: ClassVar[str] = "kiiex"
    operation: ClassVar[str] = "CancelUserReport"
    proto_field: ClassVar[str] = "kiiex_user_report"
    legs: ClassVar[tuple[str, ...]] = ("report",)
    cli_name: ClassVar[str] = "kiiex-report"
    user_report_id: str

    def __post_init__(self) -> None:
        shape = "a GUID like 3f2504e0-4f89-11d3-9a0c-0305e82c3301"
        raise_if(matching("user_report_id", self.user_report_id, _GUID, shape))
        object.__setattr__(self, "user_report_id", self.user_report_id.lower())

    def payload(self) -> dict[str, JsonValue]:
        return {"UserReportId": self.user_report_id}


@dataclass(frozen=True)
class KiiexQuote(JobKind):
    """KIIEX CancelQuote: both legs of a quote; absent account/instrument use KIIEX defaults."""

    upstream: ClassVar[str] = "kiiex"
    operation: ClassVar[str] = "CancelQuote"
    proto_field: ClassVar[str] = "kiiex_quote"
    legs: ClassVar[tuple[str, ...]] = ("bid", "ask")
    cli_name: ClassVar[str] = "kiiex-quote"
    oms_id: int = field(metadata=CLI_FLAG)
    bid_quote_id: int
    ask_quote_id: int
    account_id: int | None = None
    instrument_id: int | None = None

    def __post_init__(self) -> None:
        raise_if(
            [
                *positive("oms_id", self.oms_id),
                *positive("account_id", self.account_id, required=False),
                *positive("instrument_id", self.instrument_id, required=False),
                *positive("bid_quote_id", self.bid_quote_id),
                *positive("ask_quote_id", self.ask_quote_id),
                *_two_orders(self.bid_quote_id, self.ask_quote_id),
            ]
        )

    def payload(self) -> dict[str, JsonValue]:
        payload: dict[str, JsonValue] = {
            "omsId": self.oms_id,
            "bidQuoteId": self.bid_quote_id,
            "askQuoteId": self.ask_quote_id,
        }
        # Absent means "KIIEX default" (account) or "all instruments"; only send what was set.
        if self.account_id is not None:
            payload["accountId"] = self.account_id
        if self.instrument_id is not None:
            payload["instrumentId"] = self.instrument_id
        return payload


def _two_orders(bid: int, ask: int) -> list[FieldViolation]:
    """A quote's legs are two orders: one id for both would cancel one order twice, and the
    two answers would each claim the other's leg."""
    if bid != ask or bid <= 0:
        return []
    return [
        FieldViolation(
            "bid_quote_id", f"is ask_quote_id too ({bid}): a quote's legs are two orders"
        ),
        FieldViolation(
            "ask_quote_id", f"is bid_quote_id too ({ask}): a quote's legs are two orders"
        ),
    ]
