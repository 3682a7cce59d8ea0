"""The jobs a caller can cancel, as validated, typed values: what every job kind declares,
and the validated CancelJob call itself. The kinds themselves live in their upstream's
package (`adapters.<upstream>.jobs`).

Each job kind is registered once, as a class: it declares its upstream, the upstream
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
from dataclasses import dataclass
from typing import Any, ClassVar

from gateway.errors import FieldViolation, InvalidArgument

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


def raise_if(violations: list[FieldViolation]) -> None:
    """Refuses a job with every violation at once, so a caller fixes them in one go."""
    if violations:
        raise InvalidArgument(violations)


def positive(field: str, value: int | None, required: bool = True) -> list[FieldViolation]:
    """A positive integer id (proto3 leaves an unset one 0)."""
    if value is None:
        return [FieldViolation(field, "is required")] if required else []
    if value <= 0:
        return [FieldViolation(field, f"must be a positive integer, got {value}")]
    return []


def matching(field: str, value: str, pattern: re.Pattern[str], shape: str) -> list[FieldViolation]:
    """A text id of a fixed shape; the message quotes at most 64 characters of it."""
    if pattern.fullmatch(value):
        return []
    return [FieldViolation(field, f"must be {shape}, got {value[:64]!r}")]


_MAX_CONNECTION = 128
_MAX_IDEMPOTENCY_KEY = 256
_MAX_REASON = 512


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
    cancellation_reason: str = ""
    """Why, for the audit trail (trimmed); never part of what makes two requests the same."""
    validate_only: bool = False
    """Every check a real call passes, then stop: nothing is sent or recorded."""

    def __post_init__(self) -> None:
        object.__setattr__(self, "cancellation_reason", self.cancellation_reason.strip())
        # All end up in messages, logs, spans and store records: bounded and printable.
        raise_if(
            [
                *_short_printable("connection", self.connection, _MAX_CONNECTION),
                *_short_printable("idempotency_key", self.idempotency_key, _MAX_IDEMPOTENCY_KEY),
                *_short_printable("cancellation_reason", self.cancellation_reason, _MAX_REASON),
            ]
        )


def _short_printable(field: str, value: str, limit: int) -> list[FieldViolation]:
    if len(value) > limit:
        return [FieldViolation(field, f"must be at most {limit} characters, got {len(value)}")]
    if not value.isprintable():
        return [FieldViolation(field, "must be printable text")]
    return []
