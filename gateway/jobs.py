"""The jobs a caller can cancel, as validated, typed values.

Each job kind is registered once, here as a class: it declares its upstream, the upstream
operation, the `CancelJobRequest.job` oneof member it arrives in (`proto_field`), its legs
and its CLI subcommand. The edges derive everything else from that: the servicer converts
the proto message field by field, the CLI builds its subcommands, the sandbox prints its
examples. Field names are the proto's; a field whose default is None is optional (proto3
`optional`), and `field(metadata=CLI_FLAG)` marks a required field the CLI takes as
`--option` rather than as a positional argument.

Each job checks its own fields on construction, so a job object that exists is valid; the
field names in violations are relative to the job message.
"""

from __future__ import annotations

import dataclasses
import re
import typing
from dataclasses import dataclass, field
from typing import Any, ClassVar

from gateway.errors import FieldViolation, InvalidArgument

_GUID = re.compile(r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}")
_REPORT_RUN_ID = re.compile(r"[0-9a-f]{32}")
_FLAG = "cli_flag"
CLI_FLAG = {_FLAG: True}


class JobKind:
    """What every job class declares; instances are the validated jobs themselves."""

    upstream: ClassVar[str]
    operation: ClassVar[str]
    proto_field: ClassVar[str]
    legs: ClassVar[tuple[str, ...]]
    cli_name: ClassVar[str]


Job = JobKind


@dataclass(frozen=True)
class JobField:
    """One field of a job kind, as the edges see it."""

    name: str
    kind: type  # int or str
    required: bool
    flag: bool


_FIELDS: dict[type[JobKind], tuple[JobField, ...]] = {}


def job_fields(kind: type[JobKind]) -> tuple[JobField, ...]:
    """The fields of a job kind, in declaration order (read once per kind)."""
    known = _FIELDS.get(kind)
    if known is None:
        known = _FIELDS[kind] = tuple(_read_fields(kind))
    return known


def _read_fields(kind: type[JobKind]) -> list[JobField]:
    hints = typing.get_type_hints(kind)
    fields = []
    for declared in dataclasses.fields(kind):  # type: ignore[arg-type]
        base = [t for t in typing.get_args(hints[declared.name]) if t is not type(None)]
        fields.append(
            JobField(
                name=declared.name,
                kind=base[0] if base else hints[declared.name],
                required=declared.default is dataclasses.MISSING,
                flag=bool(declared.metadata.get(_FLAG)),
            )
        )
    return fields


def job_values(job: JobKind) -> dict[str, Any]:
    """The job's set fields by name (optional fields left unset are absent)."""
    return {
        f.name: value for f in job_fields(type(job)) if (value := getattr(job, f.name)) is not None
    }


def summary(kind: type[JobKind]) -> str:
    """The first line of the job class's docstring: help texts and listings use it."""
    return (kind.__doc__ or kind.__name__).strip().splitlines()[0]


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
class KiiexUserReport(JobKind):
    """KIIEX CancelUserReport: a scheduled report, by its GUID (kept lower-case)."""

    upstream: ClassVar[str] = "kiiex"
    operation: ClassVar[str] = "CancelUserReport"
    proto_field: ClassVar[str] = "kiiex_user_report"
    legs: ClassVar[tuple[str, ...]] = ("report",)
    cli_name: ClassVar[str] = "kiiex-report"
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
class ZuoraReportRun(JobKind):
    """Zuora Reporting API: cancel one report run, by its 32-hex id."""

    upstream: ClassVar[str] = "zuora"
    operation: ClassVar[str] = "DeleteReportRun"
    proto_field: ClassVar[str] = "zuora_report_run"
    legs: ClassVar[tuple[str, ...]] = ("report_run",)
    cli_name: ClassVar[str] = "zuora-run"
    report_run_id: str

    def __post_init__(self) -> None:
        # Strict on purpose: the id lands in a URL path, so nothing else may pass.
        _raise_if(
            _matching(
                "report_run_id", self.report_run_id, _REPORT_RUN_ID, "32 lower-case hex characters"
            )
        )


_MAX_CONNECTION = 128
_MAX_IDEMPOTENCY_KEY = 256


@dataclass(frozen=True)
class CancelRequest:
    """A validated CancelJob call, free of protobuf."""

    job: JobKind
    connection: str = ""
    idempotency_key: str = ""
    wait_for_confirmation: bool = False
    request_id: str = ""
    caller: str = ""
    """Who asked (an authenticated caller's configured name): keys are scoped per caller."""

    def __post_init__(self) -> None:
        # Both end up in messages, logs and store keys: bounded and printable.
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
