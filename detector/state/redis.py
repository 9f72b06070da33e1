"""The Redis store: counters shared by every worker, with the same answers as `MemoryStore`.

Key layout. Every key starts with the namespace (``det:`` by default; ``?namespace=`` in the URL) and a
Redis Cluster hash tag ``{n}``, the entity's or request's *shard* (0 ≤ n < `shards`, 64 by default)::

    det:{17}:msisdn:<key>     one entity's state, a msgpack string: every window of its dimension;
    det:{40}:ip:<key>         for a number also its send-limit window and previous request time;
    det:{3}:phone_country:GB  for an IP also the distinct members (phone countries) seen with it.
    det:{9}:req:<digest>      one request record: resolved flag, event time, the entity keys it counted
                              and the decision kept for redelivery, compressed.

``<key>`` is what the engine passes: a keyed hash for numbers, IPs, subnets, prefixes, sessions, accounts
and devices, an ISO country code for ``phone_country`` / ``ip_country``. ``<digest>`` is a BLAKE2b digest of
the request id, so no client-supplied text becomes a key. The remembered decision is deflated; the engine
keeps the phone number, client IP and message out of it (a redelivered request carries them again), so no
number or address is stored in clear anywhere. The shard is CRC32(dimension:key) or the digest, modulo
`shards`: every worker must use the same value (changing it starts the counts afresh, like a new namespace).

Why a shard tag and not one tag per entity: a script may only touch keys of one hash slot on Redis Cluster,
so with a tag per entity every entity would need its own script call — about ten per request, each costing a
fixed ~4 µs on the server and ~15 µs in the client, which caps a worker at a few thousand events/s. With a
tag per shard one call carries every entity (or record) of that shard in the batch, and each call still
touches one slot only (`tests/test_redis_store.py` checks every call's keys hash to one slot, and runs the
store on a real three-master cluster through ``?cluster=1``). 64 shards spread over the masters of a small
cluster; raise `shards` for a large one.

Scripts and round trips. One Lua script (loaded once, run with EVALSHA): ``Q`` claims and resolves request
records, ``R`` remembers decisions, ``E`` applies operations to entities. `apply(batch)` makes two round
trips, whatever the batch size (`remember` one more):

1. one pipeline with one ``Q`` call per shard, carrying that shard's claims (observations) and resolutions
   (feedback) in batch order. A feedback sees a request recorded earlier in the same batch (same request id,
   same shard, same call, in order); a second copy of a request id in a batch is a duplicate. The answers
   say which observations count, and, for applied feedback, the record's time and entity keys;
2. one pipeline with one ``E`` call per shard, carrying, per entity, its operations in batch order: count a
   request in every window and read them back (with the peak bucket where the plan wants it), add a
   verification, read-and-keep the previous request time, take a send-limit slot, add a distinct member.
   Entities share no state, so only the order within an entity matters, and it is kept.

Counting has to wait for the duplicate check, and feedback first has to learn which entities its request
touched: those live under different hash tags, and a script that reads one tag and writes another would not
run on a cluster — hence two round trips, not one. The send limit is read and taken inside one script call,
so two workers racing for a number's last slot cannot both get it; a record is claimed the same way, so a
request id counts once across workers. Window arithmetic is `BucketCounter`'s: bucket indices are computed
in Python with `Window.bucket`, as the memory store does, and passed to the script; times travel as float64
and compare exactly. ``NOSCRIPT`` (after a restart or SCRIPT FLUSH) is handled by loading the script and
resending the refused calls, which is safe because a refused call did nothing and no two calls of a round trip
share a key.

TTLs. Every key has one, set on every write: an entity lives for its longest window plus one bucket (a
number: at least `record_ttl`, because its previous request time is kept that long, as in the memory store;
an IP: at least `distinct_window`); a record lives `record_ttl` from its creation (resolving or remembering
keeps the TTL). Memory, measured with ``MEMORY USAGE`` on redis-server 7.0 with the default policy (``python
-m bench.redis_store`` prints it): 168 B per active number, about 255 B per active IP (three windows and its
countries), 136–152 B per subnet, session or prefix, and about 530 B per request record with its compressed
decision. A request from a new number, IP, session, subnet and prefix costs about 1.4 KB; the record part
stays for `record_ttl` (48 h), the counters at most their window plus a bucket after the last write.

Differences from the memory store, all about time:

* TTLs are wall-clock; the memory store's expiry is event time. The scripts repeat the event-time rules that
  decide answers (buckets leave a window exactly as in `BucketCounter`; a request id whose record is
  `record_ttl` older than a new request counts as new), but a key whose TTL ran out is gone even if event
  time says it should still count (a replay slower than real time, an event later than the TTL), and a key
  is kept while it is written to however far event time moves on (the event-time rules still apply to its
  contents).
* The memory store forgets records in arrival order as requests arrive; here feedback compares the record's
  age with the feedback's own time (``unknown`` once `record_ttl` has passed). Within `record_ttl` both
  agree.
* The memory store's periodic sweep (every 200,000 requests) forgets empty counters; here an entity's
  buckets leave as its window moves and the key goes when its TTL runs out.

Failure. Every call has a deadline (`timeout`, from `state.timeout_ms`: socket connect and read timeouts and
an overall `asyncio.timeout`); refused connections, timeouts and server errors raise `StoreUnavailable`.
Calls are never retried by the client (a script that ran but whose answer was lost must not count twice);
redis-py closes a connection whose call failed or was cancelled, and the pool opens a fresh one on the next
call, which is how the store comes back when Redis does. If phase 1 succeeded and phase 2 did not, the
batch's requests are recorded but not counted, and their redelivery is a duplicate without a stored
decision.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import math
import zlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from itertools import chain
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlparse, urlunparse

import msgspec
import orjson
from redis.asyncio import Redis, RedisCluster
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import NoScriptError, RedisError

from detector.state.base import (
    DISTINCT_DIMENSION,
    LIMIT_DIMENSION,
    CounterPlan,
    Counts,
    FeedbackStatus,
    FeedbackUpdate,
    Observation,
    StoreUnavailable,
)

log = logging.getLogger(__name__)

DEFAULT_NAMESPACE = "det:"
DEFAULT_SHARDS = 64

# One script, so it is either loaded or not: a pipeline never finds half of the store's scripts missing.
# Every call touches the keys of one hash tag ({shard}) only, all of them declared in KEYS.
SCRIPT = r"""
local op = ARGV[1]

local function fetch()
  local values = {}
  local n = #KEYS
  for first = 1, n, 512 do
    local last = math.min(first + 511, n)
    local chunk = redis.call('MGET', unpack(KEYS, first, last))
    for j = 1, #chunk do values[first + j - 1] = chunk[j] end
  end
  return values
end

if op == 'Q' or op == 'R' then
  -- request records, one string each:
  -- resolved ('0'/'1'), ts, '\n', entity keys (JSON), '\n', sealed decision.
  -- SET on creation (with the TTL), SETRANGE to resolve, SET KEEPTTL to remember a decision.
  local values = fetch()
  local parsed = {}
  local function record(k)
    local rec = parsed[k]
    if rec == nil then
      local v = values[k]
      if v then
        local a = string.find(v, '\n', 2, true)
        local b = string.find(v, '\n', a + 1, true)
        rec = {string.byte(v, 1) == 49, tonumber(string.sub(v, 2, a - 1)), string.sub(v, 2, a - 1),
               string.sub(v, a + 1, b - 1), string.sub(v, b + 1)}
      else
        rec = false
      end
      parsed[k] = rec
    end
    return rec
  end
  local out = {}
  if op == 'R' then
    -- remember decisions. ARGV: 'R', key indices (msgpack), sealed decision of each. The record is
    -- rewritten whole (SET KEEPTTL) rather than APPENDed to, which would leave its string over-allocated.
    local indices = cmsgpack.unpack(ARGV[2])
    for j = 1, #indices do
      local k = indices[j]
      local rec = record(k)
      if rec and rec[5] == '' then
        rec[5] = ARGV[2 + j]
        values[k] = values[k] .. ARGV[2 + j]
        redis.call('SET', KEYS[k], values[k], 'KEEPTTL')
      end
    end
    return out
  end
  -- claim (1, k, ts, record) and resolve (2, k, ts, resolved 1/0) in batch order.
  -- ARGV: 'Q', operations (msgpack, flat), record_ttl (s), record_ttl (ms)
  local ops = cmsgpack.unpack(ARGV[2])
  local ttl = tonumber(ARGV[3])
  for j = 1, #ops, 4 do
    local k, ts = ops[j + 1], ops[j + 2]
    local rec = record(k)
    if ops[j] == 1 then
      if rec and rec[2] + ttl > ts then
        out[#out + 1] = {1, rec[5]}
      else
        redis.call('SET', KEYS[k], ops[j + 3], 'PX', ARGV[4])
        values[k] = ops[j + 3]
        parsed[k] = nil
        out[#out + 1] = {0}
      end
    elseif not rec or rec[2] + ttl <= ts then
      out[#out + 1] = {0}
    elseif ops[j + 3] ~= 1 then
      out[#out + 1] = {1}
    elseif rec[1] then
      out[#out + 1] = {2}
    else
      rec[1] = true
      values[k] = '1' .. string.sub(values[k], 2)
      redis.call('SETRANGE', KEYS[k], 0, '1')
      out[#out + 1] = {3, rec[3], rec[4]}
    end
  end
  return out
end

if op ~= 'E' then return redis.error_reply('unknown op ' .. tostring(op)) end

-- entities. ARGV: 'E', entities (msgpack, flat), then one configuration per dimension (msgpack):
--   {ttl (ms), limit, limit buckets, seconds, buckets, peak (1/0) of window 1, of window 2, ...}
-- entity: key index, dimension index, length of its operations, operations:
--   1 b1..bn      count a request in every window; answer requests, verified (and peak) of each
--   2 b1..bn      count a verification in every window
--   3 ts          answer the previous request time (false for none), keep the latest
--   4 b           take a send-limit slot if one is free; answer taken (1/0) and the slots used
--   5 m ts h      add distinct member m seen at ts; answer how many were seen after h
-- state: {[seconds] = window, L = send-limit window, p = previous time, d = {member, ts, member, ts, ...}}
-- window: {buckets B, head, requests, verified, then bucket, requests, verified of every kept bucket};
-- buckets older than head - B are dropped, as in detector.windows.BucketCounter.

local function advance(w, b)
  if b <= w[2] then return end
  w[2] = b
  local oldest = b - w[1]
  local n = #w
  local stale = false
  for c = 5, n, 3 do
    if w[c] < oldest then
      stale = true
      break
    end
  end
  if not stale then return end
  local j = 5
  for c = 5, n, 3 do
    if w[c] < oldest then
      w[3] = w[3] - w[c + 1]
      w[4] = w[4] - w[c + 2]
    else
      w[j], w[j + 1], w[j + 2] = w[c], w[c + 1], w[c + 2]
      j = j + 3
    end
  end
  for c = n, j, -1 do w[c] = nil end
end

local function add(w, b, dr, dv)
  advance(w, b)
  if b < w[2] - w[1] then return end
  w[3] = w[3] + dr
  w[4] = w[4] + dv
  for c = 5, #w, 3 do
    if w[c] == b then
      w[c + 1] = w[c + 1] + dr
      w[c + 2] = w[c + 2] + dv
      return
    end
  end
  local n = #w
  w[n + 1], w[n + 2], w[n + 3] = b, dr, dv
end

local function peak(w)
  local best = 0
  for c = 7, #w, 3 do
    if w[c] > best then best = w[c] end
  end
  return best
end

local spec = cmsgpack.unpack(ARGV[2])
local configs = {}
local values = fetch()
local out = {}
local p, total = 1, #spec
while p <= total do
  local k, d = spec[p], spec[p + 1]
  local i, n = p + 3, p + 2 + spec[p + 2]
  p = n + 1
  local cfg = configs[d]
  if cfg == nil then
    cfg = cmsgpack.unpack(ARGV[2 + d])
    configs[d] = cfg
  end
  local nw = (#cfg - 3) / 3
  local state = values[k] and cmsgpack.unpack(values[k]) or {}
  local res = {}
  while i <= n do
    local code = spec[i]
    if code == 1 or code == 2 then
      for w = 1, nw do
        local b = spec[i + w]
        local seconds, buckets = cfg[1 + 3 * w], cfg[2 + 3 * w]
        local s = state[seconds]
        if s == nil or s[1] ~= buckets then
          s = {buckets, b, 0, 0}
          state[seconds] = s
        end
        if code == 1 then
          add(s, b, 1, 0)
          res[#res + 1] = s[3]
          res[#res + 1] = s[4]
          if cfg[3 + 3 * w] == 1 then res[#res + 1] = peak(s) end
        else
          add(s, b, 0, 1)
        end
      end
      i = i + 1 + nw
    elseif code == 3 then
      local ts, previous = spec[i + 1], state.p
      if previous == nil or ts > previous then state.p = ts end
      res[#res + 1] = previous or false
      i = i + 2
    elseif code == 4 then
      local b = spec[i + 1]
      local s = state.L
      if s == nil or s[1] ~= cfg[3] then
        s = {cfg[3], b, 0, 0}
        state.L = s
      end
      advance(s, b)
      local used = s[3]
      if used < cfg[2] then
        add(s, b, 1, 0)
        res[#res + 1] = 1
        res[#res + 1] = used + 1
      else
        res[#res + 1] = 0
        res[#res + 1] = used
      end
      i = i + 2
    elseif code == 5 then
      local member, ts, horizon = spec[i + 1], spec[i + 2], spec[i + 3]
      local seen = state.d or {}
      local kept = {}
      local found = false
      for j = 1, #seen, 2 do
        local m, t = seen[j], seen[j + 1]
        if m == member then
          found = true
          if ts > t then t = ts end
        end
        if t > horizon then
          kept[#kept + 1] = m
          kept[#kept + 1] = t
        end
      end
      if not found and ts > horizon then
        kept[#kept + 1] = member
        kept[#kept + 1] = ts
      end
      state.d = kept
      res[#res + 1] = #kept / 2
      i = i + 4
    else
      return redis.error_reply('unknown entity operation ' .. tostring(code))
    end
  end
  redis.call('SET', KEYS[k], cmsgpack.pack(state), 'PX', cfg[1])
  out[#out + 1] = res
end
return cmsgpack.pack(out)
"""
SCRIPT_SHA = hashlib.sha1(SCRIPT.encode()).hexdigest()

_OBSERVE, _VERIFY, _PREVIOUS, _LIMIT, _DISTINCT = 1, 2, 3, 4, 5
_encode = msgspec.msgpack.encode
_decode = msgspec.msgpack.decode


def _ms(seconds: float) -> int:
    return max(1, math.ceil(seconds * 1000))


@dataclass(frozen=True, slots=True)
class _Dimension:
    """How the entities of one dimension are counted (`index` picks its configuration in the script)."""

    name: str
    index: int
    buckets: tuple[Callable[[float], int], ...]  # `Window.bucket` of each window, as the memory store
    slots: tuple[tuple[tuple[str, int], bool], ...]  # ((dim, seconds), has a peak) of each window
    config: list[int]

    @classmethod
    def build(cls, name: str, index: int, plan: CounterPlan) -> _Dimension:
        windows = plan.windows.get(name, ())
        peaks = [(name, window.seconds) in plan.peaks for window in windows]
        lifetime = max((window.seconds + window.width for window in windows), default=1.0)
        if name == LIMIT_DIMENSION:
            limit = plan.limit_window
            lifetime = max(lifetime, limit.seconds + limit.width, float(plan.record_ttl))
        if name == DISTINCT_DIMENSION:
            lifetime = max(lifetime, float(plan.distinct_window))
        config: list[int] = [_ms(lifetime), plan.limit, plan.limit_window.buckets]
        for window, peak in zip(windows, peaks, strict=True):
            config += [window.seconds, window.buckets, int(peak)]
        slots = tuple(((name, w.seconds), peak) for w, peak in zip(windows, peaks, strict=True))
        return cls(name, index, tuple(w.bucket for w in windows), slots, config)


# An entity of a batch is a list [spec, sinks, dimension]: spec is what the script gets (key index, dimension
# index, length of the operations, operations), sinks pairs each answering operation with its Counts.


def _deliver(entity: list[Any], answers: list[Any]) -> None:
    sinks: list[Any] = entity[1]
    slots = entity[2].slots
    position = 0
    for index in range(0, len(sinks), 2):
        kind = sinks[index]
        counts: Counts = sinks[index + 1]
        if kind == _OBSERVE:
            windows = counts.windows
            for slot, peak in slots:
                windows[slot] = (answers[position], answers[position + 1])
                position += 2
                if peak:
                    counts.peaks[slot] = answers[position]
                    position += 1
        elif kind == _PREVIOUS:
            previous = answers[position]
            counts.previous_ts = None if previous is False else float(previous)
            position += 1
        elif kind == _LIMIT:
            counts.slot_taken = answers[position] == 1
            counts.slot_count = answers[position + 1]
            position += 2
        else:
            counts.distinct = answers[position]
            position += 1
    if position != len(answers):
        raise StoreUnavailable(f"redis answered {len(answers)} values where {position} were expected")


class _Shard:
    """The keys and operations of one hash tag in one round trip."""

    __slots__ = ("entities", "index", "keys", "ops")

    def __init__(self) -> None:
        self.keys: list[bytes] = []
        self.index: dict[bytes, int] = {}
        self.ops: list[Any] = []
        self.entities: list[list[Any]] = []

    def key(self, name: bytes) -> int:
        position = self.index.get(name)
        if position is None:
            self.keys.append(name)
            position = self.index[name] = len(self.keys)
        return position


# A preset dictionary for compressing decisions: what most of them share. Changing it needs a new VERSION.
_DECISION_WORDS = (
    b'{"type":"otp_decision","request_id":"","ts":"2026-11-23T08:00:00.000Z","action":"allow","verdict":"allow",'
    b'"mode":"enforce","score":0.0,"reasons":[{"code":"non_core_destination","value":"","points":20.0},'
    b'{"code":"ip_10m_velocity","value":1,"threshold":10,"points":25.0,"mode":"shadow"},'
    b'{"code":"retry_too_soon"},{"code":"msisdn_rate_limit"},{"code":"ip_unverified"},'
    b'{"code":"prefix_conversion"},{"code":"state_unavailable"}],"policy_version":"default-1",'
    b'"client_ip":"","phone":"+","phone_country":"","message":{"text":"Your code is ","source":""},'
    b'"flow":"login","retry_after":0.0}'
)


class _Compressor:
    """Stored decisions, deflated with a preset dictionary of what most of them share (~480 → ~140 bytes).

    They carry no phone number, client IP or message: the engine strips those before `remember`.
    """

    VERSION = b"\x03"

    def pack(self, plain: bytes) -> bytes:
        deflate = zlib.compressobj(1, zlib.DEFLATED, -15, 9, zlib.Z_DEFAULT_STRATEGY, _DECISION_WORDS)
        return self.VERSION + deflate.compress(plain) + deflate.flush()

    def unpack(self, packed: bytes) -> bytes | None:
        if packed[:1] != self.VERSION:
            return None
        inflate = zlib.decompressobj(-15, _DECISION_WORDS)
        try:
            return inflate.decompress(packed[1:]) + inflate.flush()
        except zlib.error:
            return None


def _split_options(url: str) -> tuple[str, dict[str, str]]:
    """Take our own query parameters out of a Redis URL: redis-py would reject them."""
    parts = urlparse(url)
    query = parse_qsl(parts.query, keep_blank_values=True)
    ours = {name: value for name, value in query if name in ("namespace", "shards", "cluster")}
    rest = urlencode([(name, value) for name, value in query if name not in ours])
    return urlunparse(parts._replace(query=rest)), ours


class RedisStore:
    """The `Store` protocol on Redis (redis-py asyncio, hiredis): see the module docstring."""

    def __init__(
        self,
        client: Redis | RedisCluster,
        plan: CounterPlan,
        *,
        timeout: float,
        namespace: str = DEFAULT_NAMESPACE,
        shards: int = DEFAULT_SHARDS,
    ) -> None:
        if "{" in namespace or "}" in namespace:
            raise ValueError(
                "the key namespace must not contain '{' or '}' (they make Redis Cluster hash tags)"
            )
        if timeout <= 0:
            raise ValueError("timeout must be positive")
        if not 1 <= shards <= 16384:
            raise ValueError("shards must be between 1 and 16384")
        self.plan = plan
        self.timeout = timeout
        self.namespace = namespace
        self.shards = shards
        self.round_trips = 0
        self._client = client
        self._compressor = _Compressor()
        names = sorted({*plan.windows, LIMIT_DIMENSION, DISTINCT_DIMENSION})
        self._dims = {name: _Dimension.build(name, index, plan) for index, name in enumerate(names, start=1)}
        self._dim_args = tuple(_encode(self._dims[name].config) for name in names)
        self._counted = tuple(plan.windows)
        self._record_args = (str(plan.record_ttl), str(_ms(plan.record_ttl)))
        self._distinct_window = plan.distinct_window
        self._limit_bucket = plan.limit_window.bucket
        self._prefixes = [f"{namespace}{{{shard}}}:".encode() for shard in range(shards)]

    @classmethod
    def from_url(
        cls,
        url: str,
        plan: CounterPlan,
        *,
        timeout: float = 0.25,
        namespace: str | None = None,
        shards: int | None = None,
        cluster: bool | None = None,
        max_connections: int = 64,
    ) -> RedisStore:
        """``redis://HOST:PORT/DB[?namespace=det:&shards=64&cluster=1]`` (also ``rediss://``, ``unix://``).

        ``cluster=1`` talks to a Redis Cluster through any of its nodes (redis-py's cluster client); the keys
        and scripts are the same either way.
        """
        url, options = _split_options(url)
        if cluster is None:
            cluster = options.get("cluster", "").lower() in ("1", "true", "yes", "on")
        common: dict[str, Any] = {
            "socket_timeout": timeout,
            "socket_connect_timeout": timeout,
            "retry": Retry(NoBackoff(), 0),  # never re-send: a script that ran must not count twice
            "max_connections": max_connections,
        }
        client: Redis | RedisCluster = (
            RedisCluster.from_url(url, **common)
            if cluster
            else Redis.from_url(url, retry_on_error=[], health_check_interval=0, **common)
        )
        return cls(
            client, plan, timeout=timeout,
            namespace=namespace or options.get("namespace") or DEFAULT_NAMESPACE,
            shards=shards or int(options.get("shards") or DEFAULT_SHARDS),
        )  # fmt: skip

    # ------------------------------------------------------------------ keys

    def entity_key(self, dim: str, key: str) -> tuple[int, bytes]:
        """(shard, key name) of an entity's state."""
        name = f"{dim}:{key}".encode()
        shard = zlib.crc32(name) % self.shards
        return shard, self._prefixes[shard] + name

    def record_key(self, request_id: str) -> tuple[int, bytes]:
        """(shard, key name) of a request record: a digest of the request id, never the id itself."""
        digest = hashlib.blake2b(request_id.encode(), digest_size=12, person=b"det-request").digest()
        shard = int.from_bytes(digest[:4], "little") % self.shards
        return shard, self._prefixes[shard] + b"req:" + digest.hex().encode()

    # ------------------------------------------------------------------ protocol

    async def apply(self, batch: Sequence[Observation | FeedbackUpdate]) -> list[Counts | FeedbackStatus]:
        if not batch:
            return []
        result: list[Counts | FeedbackStatus] = await self._guard(self._apply(batch))
        return result

    async def remember(self, decisions: Sequence[tuple[str, float, bytes]]) -> None:
        if not decisions:
            return
        shards: dict[int, tuple[_Shard, list[bytes]]] = {}
        for request_id, _ts, decision in decisions:
            number, name = self.record_key(request_id)
            shard, sealed = shards.get(number) or shards.setdefault(number, (_Shard(), []))
            shard.ops.append(shard.key(name))
            sealed.append(self._compressor.pack(decision))
        commands = [
            ("EVALSHA", SCRIPT_SHA, len(shard.keys), *shard.keys, "R", _encode(shard.ops), *sealed)
            for shard, sealed in shards.values()
        ]
        await self._guard(self._run(commands))

    async def close(self) -> None:
        await self._client.aclose()

    # ------------------------------------------------------------------ work

    async def _guard(self, work: Any) -> Any:
        try:
            async with asyncio.timeout(self.timeout):
                return await work
        except TimeoutError as exc:
            raise StoreUnavailable(f"redis did not answer within {self.timeout:g}s") from exc
        except (RedisError, OSError) as exc:
            raise StoreUnavailable(f"redis: {exc}") from exc

    async def _apply(self, batch: Sequence[Observation | FeedbackUpdate]) -> list[Counts | FeedbackStatus]:
        counted = self._counted
        record_key = self.record_key
        shards: dict[int, _Shard] = {}
        places: list[tuple[_Shard, int]] = []
        for item in batch:
            number, name = record_key(item.request_id)
            shard = shards.get(number)
            if shard is None:
                shard = shards[number] = _Shard()
            places.append((shard, len(shard.ops) >> 2))
            if isinstance(item, Observation):
                keys = item.keys
                pairs = [part for dim in counted if dim in keys for part in (dim, keys[dim])]
                record = f"0{item.ts!r}\n{orjson.dumps(pairs).decode()}\n"
                shard.ops += (1, shard.key(name), item.ts, record)
            else:
                shard.ops += (2, shard.key(name), item.ts, 1 if item.resolved else 0)
        todo = list(shards.values())
        replies = await self._run([
            ("EVALSHA", SCRIPT_SHA, len(s.keys), *s.keys, "Q", _encode(s.ops), *self._record_args)
            for s in todo
        ])  # fmt: skip
        answers = {id(shard): reply for shard, reply in zip(todo, replies, strict=True)}

        results: list[Counts | FeedbackStatus] = []
        entities: dict[tuple[str, str], list[Any]] = {}
        shards = {}
        windows = self.plan.windows
        observe = self._observe
        for item, (shard, position) in zip(batch, places, strict=True):
            answer = answers[id(shard)][position]
            if isinstance(item, Observation):
                if answer[0] == 1:
                    results.append(Counts(duplicate=True, stored_decision=self._open(answer[1])))
                else:
                    counts = Counts()
                    results.append(counts)
                    observe(item, counts, entities, shards)
                continue
            code = answer[0]
            results.append(_FEEDBACK[code])
            if code == 3:
                ts = float(answer[1])
                pairs = orjson.loads(answer[2])
                for index in range(0, len(pairs), 2):
                    dim = pairs[index]
                    if dim in windows:
                        key = pairs[index + 1]
                        entity = entities.get((dim, key)) or self._entity(entities, shards, dim, key)
                        spec = entity[0]
                        spec.append(_VERIFY)
                        spec += [bucket(ts) for bucket in entity[2].buckets]

        if entities:
            todo = list(shards.values())
            for entity in entities.values():
                entity[0][2] = len(entity[0]) - 3
            replies = await self._run([
                ("EVALSHA", SCRIPT_SHA, len(s.keys), *s.keys, "E",
                 _encode(list(chain.from_iterable(entity[0] for entity in s.entities))), *self._dim_args)
                for s in todo
            ])  # fmt: skip
            for shard, reply in zip(todo, replies, strict=True):
                decoded = _decode(reply)
                if len(decoded) != len(shard.entities):
                    raise StoreUnavailable("redis answered for the wrong number of entities")
                for entity, values in zip(shard.entities, decoded, strict=True):
                    _deliver(entity, values)
        return results

    def _entity(
        self, entities: dict[tuple[str, str], list[Any]], shards: dict[int, _Shard], dim: str, key: str
    ) -> list[Any]:
        """A new entity for this batch (the caller looked in `entities` first)."""
        name = f"{dim}:{key}".encode()
        number = zlib.crc32(name) % self.shards
        shard = shards.get(number)
        if shard is None:
            shard = shards[number] = _Shard()
        name = self._prefixes[number] + name
        dimension = self._dims[dim]
        shard.keys.append(name)
        entity = entities[(dim, key)] = [[len(shard.keys), dimension.index, 0], [], dimension]
        shard.entities.append(entity)
        return entity

    def _observe(
        self,
        item: Observation,
        counts: Counts,
        entities: dict[tuple[str, str], list[Any]],
        shards: dict[int, _Shard],
    ) -> None:
        ts = item.ts
        keys = item.keys
        get = entities.get
        for dim in self._counted:
            key = keys.get(dim)
            if key is not None:
                entity = get((dim, key)) or self._entity(entities, shards, dim, key)
                spec = entity[0]
                spec.append(_OBSERVE)
                spec += [bucket(ts) for bucket in entity[2].buckets]
                entity[1] += (_OBSERVE, counts)
        number = keys.get(LIMIT_DIMENSION)
        if number is not None:
            entity = get((LIMIT_DIMENSION, number)) or self._entity(entities, shards, LIMIT_DIMENSION, number)
            if item.take_slot:
                entity[0] += (_PREVIOUS, ts, _LIMIT, self._limit_bucket(ts))
                entity[1] += (_PREVIOUS, counts, _LIMIT, counts)
            else:
                entity[0] += (_PREVIOUS, ts)
                entity[1] += (_PREVIOUS, counts)
        address = keys.get(DISTINCT_DIMENSION)
        if address is not None and item.distinct_member is not None:
            entity = get((DISTINCT_DIMENSION, address)) or self._entity(
                entities, shards, DISTINCT_DIMENSION, address
            )
            entity[0] += (_DISTINCT, item.distinct_member, ts, ts - self._distinct_window)
            entity[1] += (_DISTINCT, counts)

    def _open(self, sealed: bytes | None) -> bytes | None:
        if not sealed:
            return None
        plain = self._compressor.unpack(sealed)
        if plain is None:
            log.warning("a stored decision could not be read (written by another version?)")
        return plain

    async def _execute(self, commands: Sequence[tuple[Any, ...]]) -> list[Any]:
        """One round trip: every command in one pipeline, answers (or errors) in order."""
        pipe = self._client.pipeline(transaction=False)
        for command in commands:
            pipe.execute_command(*command)
        self.round_trips += 1
        result: list[Any] = await pipe.execute(raise_on_error=False)
        return result

    async def _run(self, commands: Sequence[tuple[Any, ...]]) -> list[Any]:
        answers = await self._execute(commands)
        refused = [index for index, answer in enumerate(answers) if isinstance(answer, NoScriptError)]
        if refused:
            # A refused EVALSHA did nothing, and no two calls of a round trip share a key: re-sending the
            # refused calls after loading the script gives the answers the first attempt would have.
            loaded = await self._client.script_load(SCRIPT)
            self.round_trips += 1
            if loaded != SCRIPT_SHA:
                raise StoreUnavailable(f"redis gave the script sha {loaded}, expected {SCRIPT_SHA}")
            again = await self._execute([commands[index] for index in refused])
            for index, answer in zip(refused, again, strict=True):
                answers[index] = answer
        for answer in answers:
            if isinstance(answer, Exception):
                raise StoreUnavailable(f"redis refused a call: {answer}") from answer
        return answers


_FEEDBACK: tuple[FeedbackStatus, ...] = ("unknown", "failed", "duplicate", "applied")
