"""In-process fakes of the upstream HTTP APIs (their dialects: docs/UPSTREAMS.md).

Each upstream's simulator lives in its own package (``adapters.<upstream>.simulator``);
fault injection is in ``adapters.simulation.faults`` and the uvicorn runner in
``adapters.simulation.loopback``. This module holds what every simulator shares (the
clock, session bookkeeping, and the record `cancelgw sandbox` runs one by), so
it must not import them.
"""

import secrets
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from gateway.jobs import JobKind

Clock = Callable[[], float]


class Traceparents(deque[tuple[str, str]]):
    """The `traceparent` header of each request a simulator answered, with the request's
    name ("" when absent); the latest few hundred, so a long sandbox run stays small."""

    def __init__(self) -> None:
        super().__init__(maxlen=256)

    def heard(self, name: str, headers: Mapping[str, str]) -> None:
        self.append((name, headers.get("traceparent", "")))


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
    issued: list[str] = field(default_factory=list)
    """Every token ever issued, live or not (leak tests look for each)."""

    def issue(self) -> str:
        token = secrets.token_hex(16)
        self._expiry[token] = self.clock() + self.ttl
        self.issued.append(token)
        return token

    def is_live(self, token: str | None) -> bool:
        expiry = self._expiry.get(token) if token else None
        return expiry is not None and self.clock() < expiry

    def expire_all(self) -> None:
        self._expiry.clear()


@dataclass(frozen=True)
class Example:
    """A call the sandbox prints, and what it answers against the seeded simulator."""

    job: JobKind
    expect: str


@dataclass(frozen=True, kw_only=True)
class SandboxUpstream:
    """How `cancelgw sandbox` runs one upstream's simulator; an `Upstream.sandbox` names it."""

    simulator: Callable[[], Any]
    """A fresh simulator: an object with an ASGI `.app`."""
    seed: Callable[[Any], list[Example]]
    """Puts the examples' jobs into a simulator and returns the examples."""
    connection: Callable[[str], dict[str, Any]]
    """The connection table (TOML keys) for the simulator at a base URL."""
    environ: Mapping[str, str]
    """The secrets that table names, by environment variable."""
