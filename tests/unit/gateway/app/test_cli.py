"""`server.event_loop` decides the loop `cancelgw serve` runs the gateway on."""

from __future__ import annotations

import asyncio

import pytest
import uvloop

from gateway.app.cli import _run


@pytest.mark.parametrize(
    ("event_loop", "expected"), [("uvloop", uvloop.Loop), ("asyncio", asyncio.BaseEventLoop)]
)
def test_the_gateway_runs_on_the_configured_loop(event_loop: str, expected: type) -> None:
    seen: list[asyncio.AbstractEventLoop] = []

    async def gateway() -> int:
        seen.append(asyncio.get_running_loop())
        return 7

    assert _run(gateway(), event_loop) == 7
    (loop,) = seen
    assert isinstance(loop, expected)
    assert event_loop == "uvloop" or not isinstance(loop, uvloop.Loop)
