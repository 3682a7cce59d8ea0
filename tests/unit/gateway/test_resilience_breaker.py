"""The circuit breaker: the pure state machine on a fake clock, its config keys, and the
router keeping an open circuit's upstream uncalled. No network, no sleeps."""

from __future__ import annotations

import asyncio
from typing import Any, ClassVar

import pytest

from adapters.kiiex import KiiexUserReport
from gateway.config import Config, ConfigError
from gateway.connection import BreakerSettings
from gateway.jobs import CancelRequest, JobKind
from gateway.metrics import Metrics
from gateway.model import CancelResult, LegResult, Outcome, Reason, UpstreamReply
from gateway.pipeline import Pipeline
from gateway.resilience import CircuitBreaker, CircuitState, Deadline, Permit, is_outage
from gateway.router import Router
from gateway.upstream import LegCheck, Preflight
from tests.conftest import kiiex_connection, make_config


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def _reply(*reasons: Reason) -> UpstreamReply:
    legs = tuple(
        LegResult(
            f"leg{i}",
            Outcome.ACCEPTED if reason is Reason.UNSPECIFIED else Outcome.FAILED,
            reason,
            reason in (Reason.UPSTREAM_UNAVAILABLE, Reason.TIMEOUT, Reason.RATE_LIMITED),
        )
        for i, reason in enumerate(reasons)
    )
    return UpstreamReply(legs)


DOWN = _reply(Reason.UPSTREAM_UNAVAILABLE)
OK = _reply(Reason.UNSPECIFIED)


@pytest.fixture
def fake_clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def breaker(fake_clock: FakeClock) -> CircuitBreaker:
    return CircuitBreaker(BreakerSettings(failure_threshold=3, reset_seconds=30), fake_clock)


def _state(breaker: CircuitBreaker) -> CircuitState:
    """Read through a call: mypy would otherwise narrow the property after one assert."""
    return breaker.state


def _permit(breaker: CircuitBreaker) -> Permit:
    permit = breaker.allow()
    assert permit is not None
    return permit


def _fail(breaker: CircuitBreaker, times: int) -> None:
    for _ in range(times):
        breaker.record(_permit(breaker), outage=True)


@pytest.mark.parametrize(
    ("reply", "outage"),
    [
        (_reply(Reason.UPSTREAM_UNAVAILABLE), True),
        (_reply(Reason.TIMEOUT, Reason.UPSTREAM_ERROR), True),
        (_reply(Reason.NOT_FOUND), False),  # the upstream answered
        (_reply(Reason.RATE_LIMITED), False),  # up, asking us to slow down
        (_reply(Reason.BAD_UPSTREAM_RESPONSE), False),
        (_reply(Reason.UPSTREAM_ERROR, Reason.UNSPECIFIED), False),  # one leg worked
        (UpstreamReply(()), False),
    ],
)
def test_only_outages_count_against_the_circuit(reply: UpstreamReply, outage: bool) -> None:
    assert is_outage(reply) is outage


def test_opens_after_the_threshold_of_consecutive_outages(breaker: CircuitBreaker) -> None:
    _fail(breaker, 2)
    assert _state(breaker) is CircuitState.CLOSED
    _fail(breaker, 1)
    assert _state(breaker) is CircuitState.OPEN
    assert not breaker.allow()
    assert breaker.consecutive_failures == 3


def test_an_answer_resets_the_count(breaker: CircuitBreaker) -> None:
    _fail(breaker, 2)
    breaker.record(_permit(breaker), outage=False)
    _fail(breaker, 2)
    assert _state(breaker) is CircuitState.CLOSED


def test_half_open_after_the_cool_down_lets_one_trial_through(
    breaker: CircuitBreaker, fake_clock: FakeClock
) -> None:
    _fail(breaker, 3)
    fake_clock.now += 29.0
    assert (_state(breaker), breaker.retry_in()) == (CircuitState.OPEN, 1.0)
    fake_clock.now += 1.0
    assert _state(breaker) is CircuitState.HALF_OPEN
    trial = _permit(breaker)
    assert not breaker.allow(), "one trial at a time"
    breaker.record(trial, outage=False)
    assert _state(breaker) is CircuitState.CLOSED
    assert breaker.allow()


def test_a_late_ordinary_call_cannot_free_the_trial_slot(
    breaker: CircuitBreaker, fake_clock: FakeClock
) -> None:
    _fail(breaker, 2)
    late = _permit(breaker)  # went out while the circuit was still closed
    _fail(breaker, 1)
    fake_clock.now += 30.0
    _permit(breaker)  # the trial
    breaker.abandon(late)
    assert breaker.allow() is None, "still one trial at a time"


def test_a_failed_trial_opens_again_for_a_full_cool_down(
    breaker: CircuitBreaker, fake_clock: FakeClock
) -> None:
    _fail(breaker, 3)
    fake_clock.now += 30.0
    breaker.record(_permit(breaker), outage=True)
    assert _state(breaker) is CircuitState.OPEN
    assert breaker.retry_in() == 30.0


def test_an_abandoned_trial_frees_the_slot(breaker: CircuitBreaker, fake_clock: FakeClock) -> None:
    _fail(breaker, 3)
    fake_clock.now += 30.0
    breaker.abandon(_permit(breaker))
    assert _state(breaker) is CircuitState.HALF_OPEN
    assert breaker.allow()


def test_breaker_keys_are_read_per_connection() -> None:
    config = make_config(
        {
            "k": kiiex_connection(breaker={"failure_threshold": 2, "reset_seconds": 5}),
            "d": kiiex_connection(default=False),
        }
    )
    assert config.connections["k"].breaker == BreakerSettings(2, 5.0)
    assert config.connections["d"].breaker == BreakerSettings(5, 30.0)


@pytest.mark.parametrize(
    ("breaker", "key"),
    [
        ({"failure_threshold": 0}, "connections.k.breaker.failure_threshold"),
        ({"reset_seconds": -1}, "connections.k.breaker.reset_seconds"),
        ({"treshold": 3}, "connections.k.breaker.treshold"),
    ],
)
def test_bad_breaker_keys_are_refused_by_name(breaker: dict[str, Any], key: str) -> None:
    with pytest.raises(ConfigError) as refused:
        make_config({"k": kiiex_connection(breaker=breaker)})
    assert str(refused.value).startswith(f"{key}:")


class ScriptedAdapter:
    """Answers with the replies given, the last one for ever; counts its calls."""

    upstream: ClassVar[str] = "kiiex"
    jobs: ClassVar[tuple[type, ...]] = (KiiexUserReport,)

    def __init__(self, *replies: UpstreamReply) -> None:
        self.replies = list(replies)
        self.calls = 0
        self.block: asyncio.Event | None = None

    async def cancel(self, job: JobKind, *, timeout: float) -> UpstreamReply:
        self.calls += 1
        if self.block is not None:
            await self.block.wait()
        return self.replies.pop(0) if len(self.replies) > 1 else self.replies[0]

    async def confirm(self, job: JobKind, *, timeout: float) -> tuple[LegCheck, ...]:
        return ()

    async def preflight(self, *, timeout: float) -> Preflight:
        return Preflight(True, "a scripted upstream: no login")

    async def aclose(self) -> None:
        pass


def _config(max_attempts: int = 1) -> Config:
    retry = {"max_attempts": max_attempts, "backoff_initial_seconds": 0.001}
    connection = kiiex_connection(
        retry=retry, breaker={"failure_threshold": 2, "reset_seconds": 10}
    )
    return make_config({"k": connection})


JOB = KiiexUserReport("8e3a7f52-1c9d-4b6e-a0f4-2d5b9c7e1a30")


OPERATIONS = {"kiiex": ("CancelUserReport",)}


async def _cancel(router: Router) -> CancelResult:
    route = router.route(JOB, "")
    return await Pipeline(Metrics()).cancel(route, CancelRequest(JOB), Deadline(None))


def _router(adapter: ScriptedAdapter, clock: FakeClock, max_attempts: int = 1) -> Router:
    return Router(_config(max_attempts), {"k": adapter}, OPERATIONS, Metrics(), clock)


async def test_an_open_circuit_answers_without_calling_the_upstream(fake_clock: FakeClock) -> None:
    adapter = ScriptedAdapter(DOWN, DOWN, OK)
    router = _router(adapter, fake_clock)
    for _ in range(2):
        assert (await _cancel(router)).reason is Reason.UPSTREAM_UNAVAILABLE
    result = await _cancel(router)
    assert adapter.calls == 2
    assert (result.outcome, result.reason, result.retryable, result.attempts) == (
        Outcome.FAILED,
        Reason.UPSTREAM_UNAVAILABLE,
        True,
        0,
    )
    assert result.message.startswith("circuit open for connection k: kiiex failed 2 times")
    assert "a trial call in 10s" in result.message
    fake_clock.now += 10.0
    assert (await _cancel(router)).outcome is Outcome.ACCEPTED  # the trial call closes it
    assert adapter.calls == 3
    assert _state(router.routes["k"].breaker) is CircuitState.CLOSED


async def test_circuit_state_gauge_reads_the_breaker(fake_clock: FakeClock) -> None:
    metrics = Metrics()
    router = Router(_config(), {"k": ScriptedAdapter(DOWN)}, OPERATIONS, metrics, fake_clock)

    def gauge() -> float | None:
        return metrics.registry.get_sample_value("cancelgw_circuit_state", {"connection": "k"})

    assert gauge() == 0
    await _cancel(router)
    await _cancel(router)
    assert gauge() == 2
    fake_clock.now += 10.0
    assert gauge() == 1  # half-open shows without waiting for a call


async def test_a_circuit_opening_mid_retries_keeps_the_last_real_answer(
    fake_clock: FakeClock,
) -> None:
    adapter = ScriptedAdapter(DOWN)
    result = await _cancel(_router(adapter, fake_clock, max_attempts=3))
    assert adapter.calls == 2  # the third attempt met the open circuit
    assert (result.reason, result.attempts, len(result.legs)) == (
        Reason.UPSTREAM_UNAVAILABLE,
        2,
        1,
    )


async def test_a_cancelled_trial_does_not_wedge_the_circuit(fake_clock: FakeClock) -> None:
    adapter = ScriptedAdapter(DOWN, DOWN, OK)
    router = _router(adapter, fake_clock)
    await _cancel(router)
    await _cancel(router)
    fake_clock.now += 10.0
    adapter.block = asyncio.Event()
    trial = asyncio.ensure_future(_cancel(router))
    for _ in range(100):  # bounded: the trial starts within a few loop turns
        if adapter.calls == 3:
            break
        await asyncio.sleep(0)
    assert (await _cancel(router)).attempts == 0, "a second caller waits out the trial"
    trial.cancel()
    with pytest.raises(asyncio.CancelledError):
        await trial
    adapter.block = None
    assert (await _cancel(router)).outcome is Outcome.ACCEPTED


def test_a_late_success_from_before_the_circuit_opened_does_not_close_it(
    breaker: CircuitBreaker, fake_clock: FakeClock
) -> None:
    early = breaker.allow()  # issued while closed, answered after the circuit opened
    assert early is not None
    for _ in range(3):
        permit = breaker.allow()
        assert permit is not None
        breaker.record(permit, outage=True)
    assert _state(breaker) is CircuitState.OPEN
    breaker.record(early, outage=False)
    assert _state(breaker) is CircuitState.OPEN, "reset_seconds must hold"
    fake_clock.now += 30.0
    trial = breaker.allow()
    assert trial is not None
    breaker.record(early, outage=False)  # still of the old generation: ignored
    assert breaker.allow() is None, "the trial is still the only call"
    breaker.record(trial, outage=False)
    assert _state(breaker) is CircuitState.CLOSED


def test_a_late_outage_from_before_a_recovery_does_not_count(breaker: CircuitBreaker) -> None:
    stale = [breaker.allow() for _ in range(3)]
    for permit in stale[:2]:
        assert permit is not None
        breaker.record(permit, outage=True)
    permit = breaker.allow()
    assert permit is not None
    breaker.record(permit, outage=True)  # the third: open
    assert _state(breaker) is CircuitState.OPEN
    last = stale[2]
    assert last is not None
    breaker.record(last, outage=True)
    assert breaker.consecutive_failures == 3, "a result of an older generation is not counted"
