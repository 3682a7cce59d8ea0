"""`answered`: whatever an adapter call does, it ends as an answer built by `on_failure`,
within its time budget."""

from __future__ import annotations

import asyncio
import logging

import pytest

from adapters.http import TIMEOUT, UNREADABLE, AuthRefused, UpstreamFailure, answered


async def _answer(call: object) -> tuple[str, str]:
    async def run() -> tuple[str, str]:
        if isinstance(call, BaseException):
            raise call
        if call == "hang":
            await asyncio.sleep(60)
        return ("ok", "")

    return await answered(
        run(),
        timeout=0.05,
        refused_code="HTTP 401",
        on_failure=lambda failure: (failure.code, failure.message),
    )


async def test_an_answer_passes_through() -> None:
    assert await _answer("fine") == ("ok", "")


async def test_a_call_past_its_budget_is_a_timeout_naming_it() -> None:
    code, message = await _answer("hang")
    assert (code, message) == (TIMEOUT, "no complete answer within 0.05s")


async def test_a_failure_keeps_its_code_and_a_refusal_takes_the_refused_code() -> None:
    assert await _answer(UpstreamFailure("HTTP 5xx", "HTTP 503")) == ("HTTP 5xx", "HTTP 503")
    assert await _answer(AuthRefused("bad password")) == ("HTTP 401", "bad password")


async def test_anything_else_is_unreadable_and_logged_with_its_traceback(
    caplog: pytest.LogCaptureFixture,
) -> None:
    with caplog.at_level(logging.ERROR):
        code, message = await _answer(KeyError("surprise"))
    assert (code, message) == (UNREADABLE, "the upstream's answer could not be read")
    assert caplog.records[-1].exc_info is not None
