"""The jobs a caller can cancel, as validated, typed values.

Each job checks its own fields on construction, so a job object that exists is valid; the
field names in violations are the proto's, relative to the job message.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import ClassVar, TypeAlias

from gateway.errors import FieldViolation, InvalidArgument

_GUID = re.compile(r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}")
_REPORT_RUN_ID = re.compile(r"[0-9a-f]{32}")


def _raise_if(violations: list[FieldViolation]) -> None:
    if violations:
        raise InvalidArgument(violations)


def _positive(field: str, value: int | None, required: bool = True) -> list[FieldViolation]:
    if value is None:
        return [FieldViolation(field, "is required")] if required else []
    if value <= 0:
        return [FieldViolation(field, f"must be a positive integer, got {value}")]
    return []


def _matching(field: str, value: str, pattern: re.Pattern[str], shape: str) -> list[FieldViolation]:
    if pattern.fullmatch(value):
        return []
    return [FieldViolation(field, f"must be {shape}, got {value[:64]!r}")]


@dataclass(frozen=True)
class KiiexUserReport:
    """KIIEX CancelUserReport: a scheduled report, by its GUID (kept lower-case)."""

    upstream: ClassVar[str] = "kiiex"
    operation: ClassVar[str] = "CancelUserReport"
    user_report_id: str

    def __post_init__(self) -> None:
        _raise_if(
            _matching(
                "user_report_id",
                self.user_report_id,
                _GUID,
                "a GUID like 3f2504e0-4f89-11d3-9a0c-0305e82c3301",
            )
        )
        object.__setattr__(self, "user_report_id", self.user_report_id.lower())


@dataclass(frozen=True)
class KiiexQuote:
    """KIIEX CancelQuote: both legs of a quote; absent account/instrument use KIIEX defaults."""

    upstream: ClassVar[str] = "kiiex"
    operation: ClassVar[str] = "CancelQuote"
    oms_id: int
    bid_quote_id: int
    ask_quote_id: int
    account_id: int | None = None
    instrument_id: int | None = None

    def __post_init__(self) -> None:
        _raise_if(
            [
                *_positive("oms_id", self.oms_id),
                *_positive("account_id", self.account_id, required=False),
                *_positive("instrument_id", self.instrument_id, required=False),
                *_positive("bid_quote_id", self.bid_quote_id),
                *_positive("ask_quote_id", self.ask_quote_id),
            ]
        )


@dataclass(frozen=True)
class ZuoraReportRun:
    """Zuora Reporting API: one report run, by its 32-hex id."""

    upstream: ClassVar[str] = "zuora"
    operation: ClassVar[str] = "DeleteReportRun"
    report_run_id: str

    def __post_init__(self) -> None:
        # Strict on purpose: the id lands in a URL path, so nothing else may pass.
        _raise_if(
            _matching(
                "report_run_id", self.report_run_id, _REPORT_RUN_ID, "32 lower-case hex characters"
            )
        )


Job: TypeAlias = KiiexUserReport | KiiexQuote | ZuoraReportRun


_MAX_CONNECTION = 128
_MAX_IDEMPOTENCY_KEY = 256


@dataclass(frozen=True)
class CancelRequest:
    """A validated CancelJob call, free of protobuf."""

    job: Job
    connection: str = ""
    idempotency_key: str = ""
    wait_for_confirmation: bool = False
    request_id: str = ""

    def __post_init__(self) -> None:
        # Both end up in messages, logs and (later) store keys: bounded and printable.
        _raise_if(
            [
                *_short_printable("connection", self.connection, _MAX_CONNECTION),
                *_short_printable("idempotency_key", self.idempotency_key, _MAX_IDEMPOTENCY_KEY),
            ]
        )


def _short_printable(field: str, value: str, limit: int) -> list[FieldViolation]:
    if len(value) > limit:
        return [FieldViolation(field, f"must be at most {limit} characters, got {len(value)}")]
    if not value.isprintable():
        return [FieldViolation(field, "must be printable text")]
    return []
