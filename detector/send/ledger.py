"""The send ledger: what the send worker did for each `request_id`, in Redis, so nothing is sent twice.

One hash per request, ``{prefix}{{shard}}:{request_id}``, with a TTL (default two days), written only by
the send worker through the scripts below:

==============  ==================================================================================
``claim``       who is sending it: ``<owner>@<epoch ms>.<round>``; set once, before the first HTTP attempt
``outcome``     the ``otp_outcome`` event (JSON bytes) the worker publishes; set once, by the claim's owner
``umid``        8x8's message id, when the outcome is ``sent`` (the feedback endpoint needs it)
``published``   ``1`` once Kafka acknowledged the outcome event
``feedback``    ``success`` / ``failure`` once the OTP's outcome was reported to 8x8
==============  ==================================================================================

and one liveness key per running worker, ``{prefix}owner:{owner}``, refreshed while the worker runs, so
another worker can tell a dead owner's claim from a live one's.

``{shard}`` is a Redis Cluster hash tag (crc32 of the request id, modulo `shards`): a round's requests are
grouped by shard and each group is one script call, all of them in one pipeline, so a round of hundreds of
requests costs one round trip and a few dozen commands, and every script touches keys of one hash slot
(the same scheme as the detector's own store, :mod:`detector.state.redis`).

Request ids and umids are not personal data; no phone number, IP or message text is ever written here.
Every Redis failure surfaces as :class:`LedgerUnavailable`; the worker decides whether to wait or stop.
"""

from __future__ import annotations

import contextlib
import zlib
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

import redis.asyncio as aioredis
from redis.exceptions import RedisError

from detector.errors import UnavailableError

DEFAULT_SHARDS = 16

# Every script takes the keys of one shard and answers one entry per key, in order.

# ARGV: claim token, ttl ms. Claims each request without a record (answers {}); else answers the record.
_CLAIM = """
local out = {}
for i, key in ipairs(KEYS) do
  local found = redis.call('HMGET', key, 'claim', 'outcome', 'published', 'umid')
  if found[1] or found[2] then
    out[i] = found
  else
    redis.call('HSET', key, 'claim', ARGV[1])
    redis.call('PEXPIRE', key, ARGV[2])
    out[i] = {}
  end
end
return out
"""

# ARGV: ttl ms, then (claim token, outcome, umid or '') per key. Writes the outcome where the claim is still
# that token and nobody wrote one (answers {}); else answers the record. A record that vanished (TTL, lost
# Redis data) is written again rather than lost.
_RECORD = """
local out = {}
for i, key in ipairs(KEYS) do
  local token, outcome, umid = ARGV[3 * i - 1], ARGV[3 * i], ARGV[3 * i + 1]
  local found = redis.call('HMGET', key, 'claim', 'outcome', 'published', 'umid')
  if found[2] or (found[1] and found[1] ~= token) then
    out[i] = found
  else
    redis.call('HSET', key, 'claim', token, 'outcome', outcome)
    if umid ~= '' then redis.call('HSET', key, 'umid', umid) end
    redis.call('PEXPIRE', key, ARGV[1])
    out[i] = {}
  end
end
return out
"""

# ARGV: claim token per key. Drops claims 8x8 has nothing for (never tried, or not in its message log).
_RELEASE = """
for i, key in ipairs(KEYS) do
  if redis.call('HGET', key, 'claim') == ARGV[i] and redis.call('HEXISTS', key, 'outcome') == 0 then
    redis.call('DEL', key)
  end
end
return 0
"""

_PUBLISHED = """
for _, key in ipairs(KEYS) do
  if redis.call('HEXISTS', key, 'outcome') == 1 then redis.call('HSET', key, 'published', '1') end
end
return 0
"""

# ARGV: feedback outcome per key. At most one feedback post per sent request.
_FEEDBACK = """
local out = {}
for i, key in ipairs(KEYS) do
  local umid = redis.call('HGET', key, 'umid')
  if umid then
    if redis.call('HSETNX', key, 'feedback', ARGV[i]) == 1 then out[i] = {'post', umid}
    else out[i] = {'duplicate'} end
  elseif redis.call('HEXISTS', key, 'outcome') == 1 then out[i] = {'not_sent'}
  elseif redis.call('EXISTS', key) == 1 then out[i] = {'pending'}
  else out[i] = {'unknown'} end
end
return out
"""

FeedbackVerdict = Literal["post", "duplicate", "not_sent", "pending", "unknown"]


class LedgerUnavailable(UnavailableError):
    """Redis did not answer (or refused); nothing can be claimed or recorded until it does."""


@dataclass(frozen=True, slots=True)
class Entry:
    """A request's record as found: claimed (maybe finished), maybe published."""

    claim: str | None
    outcome: bytes | None
    published: bool
    umid: str | None

    @property
    def owner(self) -> str | None:
        """The worker that claimed it (the claim token without its time)."""
        return self.claim.rsplit("@", 1)[0] if self.claim else None


@dataclass(frozen=True, slots=True)
class FeedbackClaim:
    verdict: FeedbackVerdict
    umid: str | None = None


class SendLedger:
    """The ledger on one Redis (or Redis Cluster); every method is one round trip however many requests."""

    def __init__(
        self, client: aioredis.Redis, *, prefix: str, ttl: float, shards: int = DEFAULT_SHARDS
    ) -> None:
        if shards < 1:
            raise ValueError("the ledger needs at least one shard")
        self._redis = client
        self.prefix = prefix
        self.ttl_ms = int(ttl * 1000)
        self.shards = shards
        self._claim = client.register_script(_CLAIM)
        self._record = client.register_script(_RECORD)
        self._release = client.register_script(_RELEASE)
        self._published = client.register_script(_PUBLISHED)
        self._feedback = client.register_script(_FEEDBACK)

    @classmethod
    def from_url(
        cls, url: str, *, prefix: str, ttl: float, timeout: float = 2.0, shards: int = DEFAULT_SHARDS
    ) -> SendLedger:
        client = aioredis.Redis.from_url(
            url, socket_timeout=timeout, socket_connect_timeout=timeout, health_check_interval=15
        )
        return cls(client, prefix=prefix, ttl=ttl, shards=shards)

    def __repr__(self) -> str:
        return f"SendLedger(prefix={self.prefix!r}, ttl_ms={self.ttl_ms}, shards={self.shards})"

    def shard(self, request_id: str) -> int:
        return zlib.crc32(request_id.encode()) % self.shards

    def key(self, request_id: str) -> str:
        return f"{self.prefix}{{{self.shard(request_id)}}}:{request_id}"

    async def ping(self) -> None:
        await self._run(lambda: self._redis.ping())

    async def close(self) -> None:
        with contextlib.suppress(RedisError):
            await self._redis.aclose()

    # --- sends

    async def claim(self, request_ids: Sequence[str], token: str) -> list[Entry | None]:
        """Claim each request; None where the claim is now ours, else the record someone left before."""
        answers = await self._by_shard(self._claim, request_ids, lambda _: [], [token, self.ttl_ms])
        return [_entry(answer) for answer in answers]

    async def record(self, writes: Sequence[tuple[str, str, bytes, str | None]]) -> list[Entry | None]:
        """Write (request_id, claim token, outcome, umid); None where written, else the record that won."""
        by_id = {request_id: (token, outcome, umid or "") for request_id, token, outcome, umid in writes}
        answers = await self._by_shard(
            self._record, [w[0] for w in writes], lambda request_id: list(by_id[request_id]), [self.ttl_ms]
        )
        return [_entry(answer) for answer in answers]

    async def release(self, claims: Sequence[tuple[str, str]]) -> None:
        """Drop (request_id, token) claims 8x8 has nothing for: never attempted (the worker stopped first),
        or absent from 8x8's message log (a dead claimant's, taken over)."""
        tokens = dict(claims)
        await self._by_shard(self._release, [c[0] for c in claims], lambda r: [tokens[r]], [], answers=False)

    async def mark_published(self, request_ids: Sequence[str]) -> None:
        await self._by_shard(self._published, request_ids, lambda _: [], [], answers=False)

    async def get(self, request_ids: Sequence[str]) -> list[Entry | None]:
        if not request_ids:
            return []
        async with self._redis.pipeline(transaction=False) as pipe:
            for request_id in request_ids:
                pipe.hmget(self.key(request_id), ["claim", "outcome", "published", "umid"])
            answers = await self._run(pipe.execute)
        return [_entry(answer) for answer in answers]

    # --- feedback

    async def claim_feedback_many(self, wanted: Sequence[tuple[str, str]]) -> list[FeedbackClaim]:
        """For each (request_id, "success" | "failure"): whether to post it, and to which umid. A request
        gets at most one feedback post (the first one claimed)."""
        outcomes = dict(wanted)
        answers = await self._by_shard(self._feedback, [w[0] for w in wanted], lambda r: [outcomes[r]], [])
        claims = []
        for answer in answers:
            verdict = _text(answer[0]) or "unknown"
            umid = _text(answer[1]) if len(answer) > 1 else None
            claims.append(FeedbackClaim(verdict, umid))  # type: ignore[arg-type]
        return claims

    # --- liveness of workers

    def _owner_key(self, owner: str) -> str:
        return f"{self.prefix}owner:{owner}"

    async def heartbeat(self, owner: str, ttl: float) -> None:
        await self._run(lambda: self._redis.set(self._owner_key(owner), b"1", px=int(ttl * 1000)))

    async def retire(self, owner: str) -> None:
        await self._run(lambda: self._redis.delete(self._owner_key(owner)))

    async def alive(self, owner: str) -> bool:
        return bool(await self._run(lambda: self._redis.exists(self._owner_key(owner))))

    # --- plumbing

    async def _by_shard(
        self,
        script: Any,
        request_ids: Sequence[str],
        per_key: Any,
        shared: list[Any],
        *,
        answers: bool = True,
    ) -> list[Any]:
        """One call of `script` per shard (keys of that shard; `shared` then `per_key(request_id)` args), all
        in one pipeline; the answers in the order of `request_ids`."""
        if not request_ids:
            return []
        groups: dict[int, list[int]] = {}
        for index, request_id in enumerate(request_ids):
            groups.setdefault(self.shard(request_id), []).append(index)
        async with self._redis.pipeline(transaction=False) as pipe:
            for indexes in groups.values():
                ids = [request_ids[i] for i in indexes]
                args = list(shared)
                for request_id in ids:
                    args.extend(per_key(request_id))
                await script(keys=[self.key(r) for r in ids], args=args, client=pipe)
            replies: list[Any] = await self._run(pipe.execute)
        if not answers:
            return []
        ordered: list[Any] = [None] * len(request_ids)
        for indexes, reply in zip(groups.values(), replies, strict=True):
            for index, answer in zip(indexes, reply, strict=True):
                ordered[index] = answer
        return ordered

    async def _run(self, call: Any) -> Any:
        try:
            return await call()
        except (RedisError, OSError) as exc:
            raise LedgerUnavailable(f"the send ledger (Redis) failed: {type(exc).__name__}: {exc}") from None


def _text(value: Any) -> str | None:
    if value is None or value is False:
        return None
    return value.decode() if isinstance(value, bytes) else str(value)


def _entry(answer: Any) -> Entry | None:
    """An HMGET of claim, outcome, published, umid; None when there is no record (or the script claimed)."""
    if not answer:
        return None
    claim, outcome, published, umid = (list(answer) + [None] * 4)[:4]
    if claim is None and outcome is None:
        return None
    return Entry(
        claim=_text(claim),
        outcome=bytes(outcome) if outcome is not None else None,
        published=published is not None,
        umid=_text(umid),
    )
