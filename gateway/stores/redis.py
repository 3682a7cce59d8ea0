"""The idempotency store on Redis, shared by every replica: one hash per record, changed
only by Lua scripts, so a claim, a lease check and a takeover are each one atomic step.
Leases are read off Redis's own clock (`TIME`), so replicas never compare theirs.

Fields: `fp` (fingerprint), `state`, `owner`, `lease` (ms on Redis's clock), `attempts` and
`result` (JSON, `gateway.idempotency`'s codec), `reason` (the first call's
cancellation_reason, never rewritten). The key expires `ttl` after the last write.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any

import redis.asyncio as aioredis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import RedisError

from gateway.idempotency import (
    Claim,
    StoreError,
    decode_attempts,
    decode_result,
    encode_attempts,
    encode_result,
)
from gateway.model import Attempt, CancelResult

_PREFIX = "cancelgw:idempotency:"
# A busy key is polled: cheaper than a subscription per waiting call, and bounded.
_POLL_SECONDS = 0.05
# Fail fast: a keyed call waits on the store before its upstream attempt.
_STORE_SECONDS = 2.0

_NOW = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
"""
_CLAIM = (
    _NOW
    + """
local fp, state, owner, lease, attempts, result =
  unpack(redis.call('HMGET', KEYS[1], 'fp', 'state', 'owner', 'lease', 'attempts', 'result'))
if not fp then
  redis.call('HSET', KEYS[1], 'fp', ARGV[1], 'state', 'running', 'owner', ARGV[2],
             'lease', now + tonumber(ARGV[3]), 'attempts', '[]', 'result', '',
             'reason', ARGV[5])
  redis.call('PEXPIRE', KEYS[1], ARGV[4])
  return {'new', '[]', ''}
end
if fp ~= ARGV[1] then return {'mismatch', '[]', ''} end
if state == 'done' then return {'replay', attempts, result} end
if state == 'running' and tonumber(lease) > now then return {'busy', '[]', ''} end
redis.call('HSET', KEYS[1], 'state', 'running', 'owner', ARGV[2], 'lease', now + tonumber(ARGV[3]))
return {'resume', attempts, ''}
"""
)
_SAVE = (
    _NOW
    + """
if redis.call('HGET', KEYS[1], 'owner') ~= ARGV[1] then return 0 end
redis.call('HSET', KEYS[1], 'state', ARGV[2], 'attempts', ARGV[3], 'result', ARGV[4],
           'lease', now + tonumber(ARGV[5]))
redis.call('PEXPIRE', KEYS[1], ARGV[6])
return 1
"""
)
_RENEW = (
    _NOW
    + """
if redis.call('HGET', KEYS[1], 'owner') ~= ARGV[1] then return 0 end
redis.call('HSET', KEYS[1], 'lease', now + tonumber(ARGV[2]))
return 1
"""
)
_RELEASE = """
if redis.call('HGET', KEYS[1], 'owner') == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""


def _ms(seconds: float) -> int:
    return max(1, round(seconds * 1000))


class RedisStore:
    def __init__(self, url: str) -> None:
        self._redis = aioredis.Redis.from_url(
            url,
            decode_responses=True,
            socket_timeout=_STORE_SECONDS,
            socket_connect_timeout=_STORE_SECONDS,
            retry=Retry(NoBackoff(), 0),  # a keyed call answers UNAVAILABLE rather than wait
        )
        self._claim = self._redis.register_script(_CLAIM)
        self._save = self._redis.register_script(_SAVE)
        self._renew = self._redis.register_script(_RENEW)
        self._release = self._redis.register_script(_RELEASE)

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
        status, attempts, result = await self._run(
            self._claim, key, fingerprint, owner, _ms(lease), _ms(ttl), reason
        )
        return Claim(status, decode_attempts(attempts), decode_result(result))

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
        encoded = (encode_attempts(attempts), encode_result(result))
        held = await self._run(self._save, key, owner, state, *encoded, _ms(lease), _ms(ttl))
        return bool(held)

    async def renew(self, key: str, *, owner: str, lease: float) -> bool:
        return bool(await self._run(self._renew, key, owner, _ms(lease)))

    async def release(self, key: str, *, owner: str) -> None:
        await self._run(self._release, key, owner)

    async def changed(self, key: str, *, within: float) -> None:
        await asyncio.sleep(min(within, _POLL_SECONDS))

    async def aclose(self) -> None:
        await self._redis.aclose()

    async def _run(self, script: Any, key: str, *args: object) -> Any:
        try:
            async with asyncio.timeout(_STORE_SECONDS):
                return await script(keys=[_PREFIX + key], args=list(args))
        except (RedisError, OSError, TimeoutError) as error:
            raise StoreError(type(error).__name__) from error
