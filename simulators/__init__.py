"""In-process fakes of the upstream HTTP APIs (see /work/shared/upstreams.md).

The simulators live in ``simulators.kiiex`` and ``simulators.zuora``; fault
injection is in ``simulators.faults`` and the uvicorn runner in
``simulators.loopback``. This module holds the clock and session bookkeeping
both simulators share, so it must not import them.
"""

import secrets
from collections.abc import Callable
from dataclasses import dataclass, field

Clock = Callable[[], float]


@dataclass
class ManualClock:
    """A clock that only moves when told to, so tests expire tokens without sleeping."""

    now: float = 0.0

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


@dataclass
class TokenStore:
    """Opaque bearer/session tokens that die ``ttl`` seconds after issue."""

    ttl: float
    clock: Clock
    _expiry: dict[str, float] = field(default_factory=dict)

    def issue(self) -> str:
        token = secrets.token_hex(16)
        self._expiry[token] = self.clock() + self.ttl
        return token

    def is_live(self, token: str | None) -> bool:
        expiry = self._expiry.get(token) if token else None
        return expiry is not None and self.clock() < expiry

    def expire_all(self) -> None:
        self._expiry.clear()
