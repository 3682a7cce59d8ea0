"""A job kind registered against the contract is checked at start: a mismatch fails the
gateway's start (and the CLI's), never a caller's request."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

import pytest

from adapters.installed import REGISTRY
from gateway.app.cli import _parser
from gateway.jobs import JobKind
from gateway.registry import Registry
from gateway.rpc.envelope import check_job_kinds
from gateway.schema import Section
from gateway.upstream import Upstream


def _registry(kind: type[JobKind]) -> Registry:
    def connect(settings: Any, transport: Any) -> Any:
        raise AssertionError("not called")

    return Registry([Upstream(name="x", jobs=(kind,), codes={}, options=Section, connect=connect)])


@dataclass(frozen=True)
class _Report(JobKind):
    upstream: ClassVar[str] = "x"
    operation: ClassVar[str] = "Cancel"
    proto_field: ClassVar[str] = "kiiex_user_report"
    legs: ClassVar[tuple[str, ...]] = ("report",)
    cli_name: ClassVar[str] = "x-report"


@dataclass(frozen=True)
class Misnamed(_Report):
    report_id: str


@dataclass(frozen=True)
class OptionalWithoutPresence(_Report):
    user_report_id: str | None = None


@dataclass(frozen=True)
class NoSuchMember(_Report):
    proto_field: ClassVar[str] = "kiiex_typo"
    user_report_id: str


@dataclass(frozen=True)
class ShadowsAnOption(_Report):
    user_report_id: str
    timeout: int


def test_the_shipped_job_kinds_match_the_contract() -> None:
    check_job_kinds(REGISTRY)


@pytest.mark.parametrize(
    ("kind", "message"),
    [
        (Misnamed, "Misnamed.report_id: not a field of kiiex_user_report"),
        (OptionalWithoutPresence, r"user_report_id: optional \(None\) exactly when the proto"),
        (NoSuchMember, "the contract has no job member 'kiiex_typo'"),
    ],
)
def test_a_job_kind_that_does_not_match_the_contract_fails_at_start(
    kind: type[JobKind], message: str
) -> None:
    with pytest.raises(ValueError, match=message):
        check_job_kinds(_registry(kind))


def test_a_job_field_named_like_a_cancel_option_is_refused() -> None:
    with pytest.raises(ValueError, match=r"ShadowsAnOption\.timeout: the name of a cancel option"):
        _parser(_registry(ShadowsAnOption))


def test_two_kinds_on_one_proto_member_are_refused() -> None:
    with pytest.raises(ValueError, match="same proto field"):
        Registry([*REGISTRY.upstreams.values(), *_registry(Misnamed).upstreams.values()])
