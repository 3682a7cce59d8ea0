"""The two idempotency stores keep one contract: the memory twin and Redis (a real
redis-server on loopback) answer every claim, save and release alike."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator

import pytest

from gateway.idempotency import DONE, OPEN, RUNNING, Claim, IdempotencyStore, StoreError
from gateway.model import Attempt, CancelResult, Delivery, LegResult, Outcome, Reason
from gateway.stores.memory import MemoryStore
from gateway.stores.redis import RedisStore
from tests.redis_server import RedisServer

LEG = LegResult("report", Outcome.ACCEPTED, Reason.UNSPECIFIED, False, "0", "", "")
RESULT = CancelResult(
    outcome=Outcome.ACCEPTED, reason=Reason.UNSPECIFIED, retryable=False, message="ok",
    upstream="kiiex", operation="CancelUserReport", legs=(LEG,), attempts=1,
    upstream_latency=0.01, request_id="rq-1", upstream_response={"result": True, "n": [1, 2]},
    retry_after=3.0, history=(Attempt(1, Delivery.ANSWERED, (LEG,), 0.01, "rq-1"),),
)  # fmt: skip
LOST = Attempt(1, Delivery.NO_ANSWER, (), 0.0, "rq-1")


@pytest.fixture(params=["memory", "redis"])
async def store(request: pytest.FixtureRequest) -> AsyncIterator[IdempotencyStore]:
    if request.param == "memory":
        made: IdempotencyStore = MemoryStore()
    else:
        made = RedisStore(request.getfixturevalue("redis_server").url)
    yield made
    await made.aclose()


async def _claim(
    store: IdempotencyStore, owner: str = "a", fp: str = "fp", lease: float = 30
) -> Claim:
    return await store.claim("k", fingerprint=fp, owner=owner, lease=lease, ttl=60)


async def _save(store: IdempotencyStore, state: str, owner: str = "a", **fields: object) -> bool:
    return await store.save(
        "k", owner=owner, state=state, attempts=fields.get("attempts", ()),  # type: ignore[arg-type]
        result=fields.get("result"), lease=float(fields.get("lease", 30)), ttl=60,  # type: ignore[arg-type]
    )  # fmt: skip


async def test_first_claim_is_new_and_a_second_is_busy(store: IdempotencyStore) -> None:
    assert (await _claim(store)).status == "new"
    assert (await _claim(store, owner="b")).status == "busy"


async def test_another_request_under_the_key_is_a_mismatch(store: IdempotencyStore) -> None:
    await _claim(store)
    assert (await _claim(store, owner="b", fp="other")).status == "mismatch"


async def test_a_done_record_replays_its_envelope_intact(store: IdempotencyStore) -> None:
    await _claim(store)
    assert await _save(store, DONE, attempts=RESULT.history, result=RESULT)
    claim = await _claim(store, owner="b")
    assert (claim.status, claim.result, claim.attempts) == ("replay", RESULT, RESULT.history)
    assert claim.result is not None
    assert claim.result.upstream_response == RESULT.upstream_response


async def test_an_open_record_resumes_with_its_attempts(store: IdempotencyStore) -> None:
    await _claim(store)
    await _save(store, OPEN, attempts=(LOST,))
    claim = await _claim(store, owner="b")
    assert (claim.status, claim.attempts) == ("resume", (LOST,))
    assert not await _save(store, RUNNING, owner="a"), "the old owner lost the record"
    assert await _save(store, RUNNING, owner="b")


async def test_an_expired_lease_is_taken_over(store: IdempotencyStore) -> None:
    await _claim(store, lease=0.2)
    await _save(store, RUNNING, attempts=(LOST,), lease=0.2)
    deadline = time.monotonic() + 5
    while (claim := await _claim(store, owner="b")).status == "busy":
        assert time.monotonic() < deadline, "the lease never expired"
        await store.changed("k", within=0.05)
    assert (claim.status, claim.attempts) == ("resume", (LOST,))


async def test_release_frees_the_key_for_its_owner_only(store: IdempotencyStore) -> None:
    await _claim(store)
    await store.release("k", owner="b")
    assert (await _claim(store, owner="b")).status == "busy"
    await store.release("k", owner="a")
    assert (await _claim(store, owner="b")).status == "new"


async def test_changed_returns_within_its_bound(store: IdempotencyStore) -> None:
    await _claim(store)
    await asyncio.wait_for(store.changed("k", within=0.05), 2.0)


async def test_memory_store_wakes_a_waiter_on_save() -> None:
    store = MemoryStore()
    await _claim(store)
    waiter = asyncio.ensure_future(store.changed("k", within=30))
    await asyncio.sleep(0)
    await _save(store, DONE, result=RESULT)
    await asyncio.wait_for(waiter, 2.0)


async def test_memory_store_drops_the_oldest_finished_records_past_its_bound() -> None:
    store = MemoryStore(max_records=2)
    for key in ("a", "b", "c"):
        await store.claim(key, fingerprint="fp", owner="o", lease=30, ttl=60)
        await store.save(key, owner="o", state=DONE, attempts=(), result=RESULT, lease=30, ttl=60)
    await store.claim("d", fingerprint="fp", owner="o", lease=30, ttl=60)  # running: kept
    assert (
        await store.claim("c", fingerprint="fp", owner="o", lease=30, ttl=60)
    ).status == "replay"
    assert (await store.claim("a", fingerprint="fp", owner="o", lease=30, ttl=60)).status == "new"


async def test_records_expire_after_their_ttl(store: IdempotencyStore) -> None:
    await store.claim("k", fingerprint="fp", owner="a", lease=0.1, ttl=0.2)
    deadline = time.monotonic() + 5
    while (await _claim(store, owner="b")).status != "new":
        assert time.monotonic() < deadline, "the record never expired"
        await asyncio.sleep(0.05)


async def test_an_unreachable_redis_is_a_store_error(redis_server: RedisServer) -> None:
    store = RedisStore(redis_server.url)
    redis_server.stop()
    with pytest.raises(StoreError):
        await _claim(store)
    await store.aclose()
