"""A login shared by every call of one connection: fetched once, reused until stale,
renewed once when the upstream says it is no longer valid: a session token, or an OAuth
access token."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Generic, TypeVar

from adapters.http._guard import AuthRefused
from gateway import tracing
from gateway.upstream import observer

Credential = TypeVar("Credential")
Answer = TypeVar("Answer")


class SharedLogin(Generic[Credential]):
    """Single-flight cache: concurrent callers share one login, and its failure too, instead
    of queueing behind each other to fail one by one."""

    def __init__(
        self,
        login: Callable[[float], Awaitable[Credential]],
        is_fresh: Callable[[Credential], bool] = lambda _: True,
    ) -> None:
        self._login = login
        self._is_fresh = is_fresh
        self._current: Credential | None = None
        self._pending: asyncio.Future[Credential] | None = None

    async def get(self, timeout: float) -> Credential:
        current = self._current
        if current is not None and self._is_fresh(current):
            return current
        if self._pending is None:
            self._pending = asyncio.ensure_future(self._reported_login(timeout))
            self._pending.add_done_callback(self._settle)
        # Shielded: a caller giving up must not cancel the login others wait for.
        return await asyncio.shield(self._pending)

    async def call(
        self,
        timeout: float,
        send: Callable[[Credential], Awaitable[Answer]],
        says_stale: Callable[[Answer], bool],
    ) -> Answer:
        """`send` with the shared credential; once more with a fresh one if it `says_stale`."""
        credential = await self.get(timeout)
        answer = await send(credential)
        if not says_stale(answer):
            return answer
        if self._current is credential:
            self._current = None
        return await send(await self.get(timeout))

    def _settle(self, done: asyncio.Future[Credential]) -> None:
        self._pending = None
        if not done.cancelled() and done.exception() is None:
            self._current = done.result()

    async def _reported_login(self, timeout: float) -> Credential:
        """One login, counted in `cancelgw_token_refreshes_total` of the connection."""
        try:
            with tracing.span("login"):
                credential = await self._login(timeout)
        except AuthRefused:
            observer().token_refreshed("refused")
            raise
        except Exception:
            observer().token_refreshed(
                "error"
            )  # no usable answer: unreachable, timeout, unreadable
            raise
        observer().token_refreshed("ok")
        return credential
