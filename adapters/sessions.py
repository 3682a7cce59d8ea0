"""A login shared by every call of one connection: fetched once, reused until stale,
renewed once when the upstream says it is no longer valid. KIIEX session tokens and Zuora
OAuth tokens both live in one of these."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Generic, TypeVar

from adapters.base import token_refreshed

Credential = TypeVar("Credential")


class AuthRefused(Exception):
    """The upstream refused the gateway's credentials; the message is the upstream's own."""


class SharedLogin(Generic[Credential]):
    """Single-flight cache: concurrent callers wait for one login instead of each making one."""

    def __init__(
        self,
        login: Callable[[float], Awaitable[Credential]],
        is_fresh: Callable[[Credential], bool] = lambda _: True,
    ) -> None:
        self._login = login
        self._is_fresh = is_fresh
        self._current: Credential | None = None
        self._lock = asyncio.Lock()
        self.logins = 0

    async def get(self, timeout: float) -> Credential:
        current = self._current
        if current is not None and self._is_fresh(current):
            return current
        async with self._lock:
            current = self._current
            if current is None or not self._is_fresh(current):
                current = self._current = await self._reported_login(timeout)
                self.logins += 1
            return current

    async def _reported_login(self, timeout: float) -> Credential:
        """One login, counted in `cancelgw_token_refreshes_total` of the connection."""
        try:
            credential = await self._login(timeout)
        except AuthRefused:
            token_refreshed("refused")
            raise
        except Exception:
            token_refreshed("error")  # no usable answer: unreachable, timeout, unreadable
            raise
        token_refreshed("ok")
        return credential

    def forget(self, stale: Credential) -> None:
        """Drops `stale` unless another caller already replaced it."""
        if self._current is stale:
            self._current = None
