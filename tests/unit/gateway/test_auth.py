"""Callers, free of gRPC: who a token or a certificate names, what a caller may cancel where,
and its token bucket."""

from __future__ import annotations

import hashlib
from typing import Any

import pytest

from adapters.simulation import ManualClock
from gateway.auth import ANONYMOUS, Callers, CallerSettings, TokenBucket
from gateway.errors import CallerNotPermitted, CallerRateLimited, Unauthenticated

TOKEN = "s3cret-token-of-the-ops-bot"


def _settings(**overrides: Any) -> CallerSettings:
    fields: dict[str, Any] = {
        "name": "ops-bot",
        "token_sha256": hashlib.sha256(TOKEN.encode()).hexdigest(),
        "jobs": frozenset({"kiiex_user_report"}),
        **overrides,
    }
    return CallerSettings(**fields)


def test_a_bucket_refills_at_its_rate_and_says_how_long_to_wait() -> None:
    clock = ManualClock()
    bucket = TokenBucket(rate=2.0, burst=2, clock=clock)
    assert [bucket.take(), bucket.take()] == [0.0, 0.0]
    assert bucket.take() == pytest.approx(0.5)
    clock.advance(0.5)
    assert bucket.take() == 0.0
    clock.advance(-10)  # a clock that stepped back refills nothing
    assert bucket.take() > 0


def test_a_bearer_token_names_its_caller() -> None:
    callers = Callers([_settings()], allow_unauthenticated=False)
    caller = callers.identify(authorization=[f"Bearer {TOKEN}"], cert_names=[])
    assert caller.name == "ops-bot"


@pytest.mark.parametrize(
    ("authorization", "says"),
    [
        (["Bearer wrong"], "no configured caller's"),
        ([f"Basic {TOKEN}"], "must be `Bearer <token>`"),
        (["Bearer "], "must be `Bearer <token>`"),
        ([f"Bearer {TOKEN}", f"Bearer {TOKEN}"], "exactly one"),
        ([], "no credentials"),
    ],
)
def test_a_token_that_names_no_caller_is_refused(authorization: list[str], says: str) -> None:
    callers = Callers([_settings()], allow_unauthenticated=False)
    with pytest.raises(Unauthenticated, match=says):
        callers.identify(authorization=authorization, cert_names=[])


def test_a_certificate_names_one_caller_or_none() -> None:
    a = _settings(name="a", token_sha256="", cert_subject="a.example")
    b = _settings(name="b", token_sha256="", cert_subject="b.example")
    callers = Callers([a, b], allow_unauthenticated=False)
    assert callers.identify(authorization=[], cert_names=["a.example"]).name == "a"
    with pytest.raises(Unauthenticated, match="more than one caller"):
        callers.identify(authorization=[], cert_names=["a.example", "b.example"])
    with pytest.raises(Unauthenticated, match="names no configured caller"):
        callers.identify(authorization=[], cert_names=["c.example"])


def test_anonymous_only_where_allowed_and_nothing_was_sent() -> None:
    open_gateway = Callers([], allow_unauthenticated=True)
    assert open_gateway.identify(authorization=[], cert_names=[]).name == ANONYMOUS
    assert open_gateway.names == [ANONYMOUS]
    with pytest.raises(Unauthenticated):
        Callers([_settings()], allow_unauthenticated=False).anonymous()


def test_admission_checks_the_job_kind_the_connection_and_the_rate() -> None:
    clock = ManualClock()
    settings = _settings(connections=frozenset({"kiiex-main"}), rate_per_second=1.0, burst=1)
    callers = Callers([settings], allow_unauthenticated=False, clock=clock)
    caller = callers.identify(authorization=[f"Bearer {TOKEN}"], cert_names=[])
    with pytest.raises(CallerNotPermitted) as refused:
        callers.admit(caller, "zuora_report_run", "kiiex-main")
    assert refused.value.metadata == {
        "caller": "ops-bot", "job": "zuora_report_run", "connection": "kiiex-main"
    }  # fmt: skip
    with pytest.raises(CallerNotPermitted):
        callers.admit(caller, "kiiex_user_report", "kiiex-other")
    callers.admit(caller, "kiiex_user_report", "kiiex-main")
    with pytest.raises(CallerRateLimited) as limited:
        callers.admit(caller, "kiiex_user_report", "kiiex-main")
    assert limited.value.retry_after == pytest.approx(1.0)


def test_a_callers_burst_defaults_to_twice_its_rate() -> None:
    assert _settings(rate_per_second=5.0).burst == 10
    assert _settings(rate_per_second=0.1).burst == 1
    assert _settings(rate_per_second=5.0, burst=3).burst == 3
