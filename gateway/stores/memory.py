"""The in-memory twin of the Redis store: the same record rules in one process, for a
single gateway. Bounded: past `max_records`, the oldest finished records go first."""

from __future__ import annotations

import asyncio
import time
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass, field

from gateway.idempotency import (
    DONE,
    RUNNING,
    Claim,
    decode_attempts,
    decode_result,
    encode_attempts,
    encode_result,
)
from gateway.model import Attempt, CancelResult
from gateway.resilience import Clock


@dataclass
class _Record:
    fingerprint: str
    state: str
    owner: str
    lease_until: float
    expires_at: float
    # Kept encoded, as Redis keeps them, so that both stores exercise the same codec.
    attempts: str = "[]"
    result: str = ""
    reason: str = ""
    """The first call's cancellation_reason."""
    changed: asyncio.Event = field(default_factory=asyncio.Event)


class MemoryStore:
    def __init__(self, clock: Clock = time.monotonic, max_records: int = 100_000) -> None:
        self._clock = clock
        self._max_records = max_records
        self._records: OrderedDict[str, _Record] = OrderedDict()

    async def claim(
        self,
        key: str,
        *,
        fingerprint: str,
        owner: str,
        lease: float,
        ttl: float,
        reason: str = "",
    ) -> Claim:
        now = self._clock()
        record = self._live(key, now)
        if record is None:
            self._records[key] = _Record(
                fingerprint, RUNNING, owner, now + lease, now + ttl, reason=reason
            )
            self._bound()
            return Claim("new")
        if record.fingerprint != fingerprint:
            return Claim("mismatch")
        if record.state == DONE:
            return Claim("replay", decode_attempts(record.attempts), decode_result(record.result))
        if record.state == RUNNING and record.lease_until > now:
            return Claim("busy")
        record.state, record.owner, record.lease_until = RUNNING, owner, now + lease
        return Claim("resume", decode_attempts(record.attempts))

    async def save(
        self,
        key: str,
        *,
        owner: str,
        state: str,
        attempts: Sequence[Attempt],
        result: CancelResult | None,
        lease: float,
        ttl: float,
    ) -> bool:
        now = self._clock()
        record = self._live(key, now)
        if record is None or record.owner != owner:
            return False
        record.state, record.lease_until, record.expires_at = state, now + lease, now + ttl
        record.attempts, record.result = encode_attempts(attempts), encode_result(result)
        self._wake(record)
        return True

    async def renew(self, key: str, *, owner: str, lease: float) -> bool:
        now = self._clock()
        record = self._live(key, now)
        if record is None or record.owner != owner:
            return False
        record.lease_until = now + lease
        return True

    async def release(self, key: str, *, owner: str) -> None:
        record = self._live(key, self._clock())
        if record is not None and record.owner == owner:
            del self._records[key]
            self._wake(record)

    async def changed(self, key: str, *, within: float) -> None:
        record = self._records.get(key)
        if record is None:
            return
        try:
            async with asyncio.timeout(within):
                await record.changed.wait()
        except TimeoutError:
            pass

    async def aclose(self) -> None:
        self._records.clear()

    def _live(self, key: str, now: float) -> _Record | None:
        record = self._records.get(key)
        if record is not None and record.expires_at <= now:
            del self._records[key]
            return None
        return record

    def _wake(self, record: _Record) -> None:
        record.changed.set()
        record.changed = asyncio.Event()

    def _bound(self) -> None:
        """Drops the oldest finished records past the bound; running ones are never dropped
        (their holders still write to them)."""
        excess = len(self._records) - self._max_records
        for key in [k for k, r in self._records.items() if r.state == DONE][: max(0, excess)]:
            del self._records[key]
