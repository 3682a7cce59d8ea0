"""`SharedLogin`: one login for every waiting call, its failure shared and not kept, one
renewal when the upstream says the credential is stale, and a login no caller can cancel."""

from __future__ import annotations

import asyncio

import pytest

from adapters.http import AuthRefused, SharedLogin


class _Logins:
    def __init__(self) -> None:
        self.count = 0
        self.gate = asyncio.Event()
        self.refuse = False

    async def __call__(self, timeout: float) -> str:
        self.count += 1
        await self.gate.wait()
        if self.refuse:
            raise AuthRefused("refused")
        return f"token-{self.count}"


async def test_concurrent_calls_share_one_login() -> None:
    logins = _Logins()
    shared = SharedLogin(logins)
    waiting = [asyncio.create_task(shared.get(1.0)) for _ in range(5)]
    await asyncio.sleep(0)
    logins.gate.set()
    assert await asyncio.gather(*waiting) == ["token-1"] * 5
    assert await shared.get(1.0) == "token-1"  # kept while fresh
    assert logins.count == 1


async def test_a_refusal_is_shared_then_forgotten() -> None:
    logins = _Logins()
    logins.refuse = True
    logins.gate.set()
    shared = SharedLogin(logins)
    results = await asyncio.gather(shared.get(1.0), shared.get(1.0), return_exceptions=True)
    assert [type(r) for r in results] == [AuthRefused, AuthRefused]
    assert logins.count == 1
    logins.refuse = False
    assert await shared.get(1.0) == "token-2"


async def test_a_stale_credential_is_renewed_once() -> None:
    logins = _Logins()
    logins.gate.set()
    shared = SharedLogin(logins)
    sent: list[str] = []

    async def send(token: str) -> str:
        sent.append(token)
        return token

    answer = await shared.call(1.0, send, says_stale=lambda answer: answer == "token-1")
    assert (answer, sent) == ("token-2", ["token-1", "token-2"])
    always_stale = await shared.call(1.0, send, says_stale=lambda answer: True)
    assert always_stale == "token-3"  # renewed once, and that answer stands
    assert logins.count == 3


async def test_a_caller_giving_up_does_not_cancel_the_login_others_wait_for() -> None:
    logins = _Logins()
    shared = SharedLogin(logins)
    impatient = asyncio.create_task(shared.get(1.0))
    patient = asyncio.create_task(shared.get(1.0))
    await asyncio.sleep(0)
    impatient.cancel()
    with pytest.raises(asyncio.CancelledError):
        await impatient
    logins.gate.set()
    assert await patient == "token-1"


async def test_freshness_decides_when_to_log_in_again() -> None:
    logins = _Logins()
    logins.gate.set()
    fresh = {"token-1": False}
    shared = SharedLogin(logins, lambda token: fresh.get(token, True))
    assert await shared.get(1.0) == "token-1"
    assert await shared.get(1.0) == "token-2"  # token-1 went stale
    assert await shared.get(1.0) == "token-2"
