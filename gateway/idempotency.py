"""Idempotency keys and the ledger: the store interface the core calls, what a record holds,
and how a keyed call writes its record as it goes.

A record (per caller and key) holds the request's fingerprint, a state, the lease of the
process running it, every attempt so far and, once final, the envelope:

    running  a process holds the lease and works on it; others wait, or take over once the
             lease has expired (the holder died)
    open     the last answer was retryable but an attempt may have landed: a retry runs
             again, knowing that
    done     the envelope is final: the same request gets it again, `replayed` set

Stores (`gateway.stores.memory`, `gateway.stores.redis`) implement `IdempotencyStore`; leases
run on the store's own clock, so replicas never compare clocks. Records are JSON, so a record
written by one gateway version is read by the next.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import hashlib
import json
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Annotated, Any, ClassVar, Literal, Protocol

from msgspec import field

from gateway.errors import IdempotencyKeyInProgress, IdempotencyStoreUnavailable
from gateway.jobs import CancelRequest, job_values
from gateway.model import Attempt, CancelResult, Delivery, LegResult, Outcome, Reason
from gateway.schema import Seconds, Section, about, choice

STORES = ("memory", "redis")


class IdempotencySettings(Section, frozen=True):
    """The `[idempotency]` section."""

    derived: ClassVar[frozenset[str]] = frozenset({"redis_url"})

    store: Annotated[str, about("`memory` (one process) or `redis` (shared by replicas)")] = (
        "memory"
    )
    redis_url_env: Annotated[
        str,
        about("environment variable holding the Redis URL (`redis://`, `rediss://`, `unix://`)"),
    ] = "CANCELGW_REDIS_URL"
    ttl: Annotated[Seconds, about("how long a key's record is kept after its last write")] = field(
        default=86400.0, name="ttl_seconds"
    )
    lease: Annotated[
        Seconds,
        about(
            "a running call renews its lease every third of this; a dead one's key is free after it"
        ),
    ] = field(default=6.0, name="lease_seconds")
    redis_url_file: Annotated[
        str, about("or the file that holds the Redis URL (instead of redis_url_env)")
    ] = ""
    redis_url: str = ""
    """Read from `redis_url_env` (or `redis_url_file`) when the store is Redis."""

    def __post_init__(self) -> None:
        choice("store", self.store, STORES)


RUNNING, OPEN, DONE = "running", "open", "done"
ClaimStatus = Literal["new", "replay", "resume", "busy", "mismatch"]
log = logging.getLogger(__name__)


class StoreError(Exception):
    """The store could not be reached, or answered something unusable."""


@dataclass(frozen=True)
class Claim:
    """The answer to `claim`: `new` (first use), `replay` (the stored envelope), `resume`
    (an open record, or a running one whose holder's lease expired: attempts so far come
    along), `busy` (another call holds it), `mismatch` (first used with another request)."""

    status: ClaimStatus
    attempts: tuple[Attempt, ...] = ()
    result: CancelResult | None = None


class IdempotencyStore(Protocol):
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
        """Atomically: create the record (running, leased to `owner`, with the caller's
        `reason` kept for good: a retry's own reason never replaces it), or say why not."""
        ...

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
        """Writes the record and renews the lease, only while `owner` holds it (False
        when another process has taken it over)."""
        ...

    async def renew(self, key: str, *, owner: str, lease: float) -> bool:
        """Extends the lease, only while `owner` holds it (the record is left as it is)."""
        ...

    async def release(self, key: str, *, owner: str) -> None:
        """Deletes the record, only while `owner` holds it: the key is free again."""
        ...

    async def changed(self, key: str, *, within: float) -> None:
        """Returns when the record may have changed, or after `within` seconds."""
        ...

    async def aclose(self) -> None: ...


def record_key(caller: str, key: str) -> str:
    """Keys are scoped per caller; hashed so that any text is a safe store key."""
    return hashlib.sha256(f"{caller}\0{key}".encode()).hexdigest()


def _known(kind: type[Any], fields: dict[str, Any]) -> dict[str, Any]:
    """The fields `kind` has: a record written by a newer gateway, with more, still reads."""
    names = {f.name for f in dataclasses.fields(kind)}
    return {k: v for k, v in fields.items() if k in names}


def fingerprint(request: CancelRequest, connection: str) -> str:
    """What makes two requests "the same": the job, the resolved connection and whether to
    wait for confirmation."""
    job = request.job
    same = {
        "job": job.proto_field,
        "fields": job_values(job),
        "connection": connection,
        "wait_for_confirmation": request.wait_for_confirmation,
    }
    return hashlib.sha256(json.dumps(same, sort_keys=True).encode()).hexdigest()


def encode_attempts(attempts: Sequence[Attempt]) -> str:
    return json.dumps([_attempt_json(a) for a in attempts])


def decode_attempts(text: str) -> tuple[Attempt, ...]:
    try:
        return tuple(_attempt(item) for item in json.loads(text or "[]"))
    except (ValueError, KeyError, TypeError) as error:
        raise StoreError(f"unreadable attempts in the record: {error}") from error


def encode_result(result: CancelResult | None) -> str:
    if result is None:
        return ""
    fields = dataclasses.asdict(result)
    fields.update(
        outcome=result.outcome.name,
        reason=result.reason.name,
        legs=[_leg_json(leg) for leg in result.legs],
        history=[_attempt_json(a) for a in result.history],
    )
    return json.dumps(fields)


def decode_result(text: str) -> CancelResult | None:
    if not text:
        return None
    try:
        fields: dict[str, Any] = json.loads(text)
        fields.update(
            outcome=Outcome[fields["outcome"]],
            reason=Reason[fields["reason"]],
            legs=tuple(_leg(leg) for leg in fields["legs"]),
            history=tuple(_attempt(a) for a in fields["history"]),
        )
        return CancelResult(**_known(CancelResult, fields))
    except (ValueError, KeyError, TypeError) as error:
        raise StoreError(f"unreadable envelope in the record: {error}") from error


def _leg_json(leg: LegResult) -> dict[str, Any]:
    return {**dataclasses.asdict(leg), "outcome": leg.outcome.name, "reason": leg.reason.name}


def _leg(item: dict[str, Any]) -> LegResult:
    named = {"outcome": Outcome[item["outcome"]], "reason": Reason[item["reason"]]}
    return LegResult(**_known(LegResult, {**item, **named}))


def _attempt_json(attempt: Attempt) -> dict[str, Any]:
    return {
        "number": attempt.number,
        "delivery": attempt.delivery.name,
        "legs": [_leg_json(leg) for leg in attempt.legs],
        "latency": attempt.latency,
        "request_id": attempt.request_id,
    }


def _attempt(item: dict[str, Any]) -> Attempt:
    return Attempt(
        number=int(item["number"]),
        delivery=Delivery[item["delivery"]],
        legs=tuple(_leg(leg) for leg in item["legs"]),
        latency=float(item["latency"]),
        request_id=str(item["request_id"]),
    )


class Ledger:
    """A keyed call's record, written as the call goes: before each attempt (so that a crash
    mid-attempt leaves "this may have landed" behind), after each answer, and at the end.

    While the call works, a heartbeat renews its lease every third of it, so only a process
    that died loses the key. A write before an attempt must succeed while the lease is still
    this call's, or the attempt is not made (never run without the guard the caller asked
    for, never beside the call that took the key over); later writes are best effort: if one
    fails, the record still says the attempt may have landed, and a retry treats it so.
    """

    def __init__(
        self, store: IdempotencyStore | None, key: str, *, owner: str, lease: float, ttl: float
    ) -> None:
        self._store = store
        self._key = key
        self._owner = owner
        self._lease = lease
        self._ttl = ttl
        self._heartbeat: asyncio.Task[None] | None = None
        self.lost = False
        self.attempts: tuple[Attempt, ...] = ()

    @classmethod
    def unkeyed(cls) -> Ledger:
        """For a call without an idempotency key: keeps nothing."""
        return cls(None, "", owner="", lease=0.0, ttl=0.0)

    async def __aenter__(self) -> Ledger:
        if self._store is not None:
            self._heartbeat = asyncio.ensure_future(self._beat(self._store))
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._heartbeat is not None:
            self._heartbeat.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._heartbeat

    async def _beat(self, store: IdempotencyStore) -> None:
        while not self.lost:
            await asyncio.sleep(self._lease / 3)
            try:
                self.lost = not await store.renew(self._key, owner=self._owner, lease=self._lease)
            except StoreError:
                log.warning("could not renew an idempotency lease; trying again")

    async def sending(self, attempts: Sequence[Attempt]) -> None:
        """Before an attempt: `attempts` ends with it, marked as possibly landed."""
        self.attempts = tuple(attempts)
        try:
            held = await self._save(RUNNING, None)
        except StoreError as error:
            raise IdempotencyStoreUnavailable(
                f"the idempotency store cannot be reached: {error}"
            ) from error
        if not held:
            self.lost = True
            raise IdempotencyKeyInProgress(
                "another call took this idempotency_key over (this one was too slow to keep "
                "it); ask again with the key for its answer"
            )

    async def answered(self, attempts: Sequence[Attempt]) -> None:
        self.attempts = tuple(attempts)
        await self._best_effort(RUNNING, None)

    async def settle(self, result: CancelResult) -> None:
        """A final envelope is kept for replays. UNKNOWN, or a retryable one, frees the key
        when no attempt can have canceled anything, and is otherwise kept open: a retry with
        the key then reads the job first."""
        if not result.retryable and result.outcome is not Outcome.UNKNOWN:
            await self._best_effort(DONE, result)
        else:
            await self.abandon()

    async def abandon(self) -> None:
        """The call ends without an envelope to keep (deadline, shutdown, caller gone)."""
        if self._store is None or self.lost:
            return
        if any(a.may_have_canceled for a in self.attempts):
            await self._best_effort(OPEN, None)
            return
        try:
            await self._store.release(self._key, owner=self._owner)
        except StoreError:
            log.warning("could not release an idempotency key; its lease will expire")

    async def _save(self, state: str, result: CancelResult | None) -> bool:
        if self._store is None:
            return True
        return await self._store.save(
            self._key,
            owner=self._owner,
            state=state,
            attempts=self.attempts,
            result=result,
            lease=self._lease,
            ttl=self._ttl,
        )

    async def _best_effort(self, state: str, result: CancelResult | None) -> None:
        try:
            held = await self._save(state, result)
        except StoreError:
            log.warning("could not update an idempotency record", extra={"state": state})
            return
        if not held:
            self.lost = True
            log.warning("an idempotency record was taken over by another call")
