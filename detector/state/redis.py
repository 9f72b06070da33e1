"""The Redis store: counters shared by every worker, with the same answers as `MemoryStore`.

Key layout. Every key starts with the namespace (``det:`` by default; ``?namespace=`` in the URL) and a
Redis Cluster hash tag ``{n}``, the entity's or request's *shard* (0 ≤ n < `shards`, 64 by default)::

    det:{17}:msisdn:<key>     one entity's state, a msgpack string: every window of its dimension;
    det:{40}:ip:<key>         for a number also its send-limit window and previous request time;
    det:{3}:phone_country:GB  for an IP also the distinct members (phone countries) seen with it.
    det:{9}:req:<digest>      one request record: resolved flag, event time, the entity keys it counted
                              and the decision kept for redelivery.

``<key>`` is what the engine passes: a keyed hash for numbers, IPs, subnets, prefixes, sessions, accounts
and devices, an ISO country code for ``phone_country`` / ``ip_country``. ``<digest>`` is a BLAKE2b digest of
the request id, so no client-supplied text becomes a key. The decision kept for redelivery is stored as the
engine gives it, deflated: the engine leaves the phone number, client IP and message out of it (it puts them
back from the redelivered request), so nothing here names a number or an address, and nothing needs a key
to read. The shard is CRC32(dimension:key) or the digest, modulo `shards`: every worker must use the same
value (changing it starts the counts afresh, like a new namespace).

Why a shard tag and not one tag per entity: a script may only touch keys of one hash slot on Redis Cluster,
so with a tag per entity every entity would need its own script call — about ten per request, each costing a
fixed ~4 µs on the server and ~15 µs in the client, which caps a worker at a few thousand events/s. With a
tag per shard one call carries every entity (or record) of that shard in the batch, and each call still
touches one slot only, all of its keys declared in ``KEYS`` (`tests/test_redis_store.py` checks every call's
keys hash to one slot, and runs the store on a real three-master cluster through ``?cluster=1``). 64 shards
spread over the masters of a small cluster; raise `shards` for a large one. Fewer, larger calls are not
cheaper: replaying the same batches with 8 or 1 shards cost the server more per event, not less.

Scripts and round trips. One Lua script (run with EVALSHA): ``Q`` claims and resolves request records, ``R``
remembers decisions, ``E`` applies operations to entities. `apply(batch)` costs two round trips of latency,
whatever the batch size, and `remember` one more (three per engine batch):

1. one ``Q`` call per shard, carrying that shard's claims (observations) and resolutions
   (feedback) in batch order. A feedback sees a request recorded earlier in the same batch (same request id,
   same shard, same call, in order); a second copy of a request id in a batch is a duplicate. The answers
   say which observations count, and, for applied feedback, the record's time and entity keys;
2. one ``E`` call per shard, carrying that shard's entity operations in batch order: count
   a request in every window and read them back (with the peak bucket where the plan wants it), add a
   verification, read-and-keep the previous request time, take a send-limit slot, add a distinct member.
   The script reads and decodes each entity once, applies its operations in order, and encodes and writes it
   once; entities share no state, so only the order within an entity matters, and it is kept.

Counting has to wait for the duplicate check, and feedback first has to learn which entities its request
touched: those live under different hash tags, and a script that reads one tag and writes another would not
run on a cluster — hence two round trips, not one. The send limit is read and taken inside one script call,
so two workers racing for a number's last slot cannot both get it; a record is claimed the same way, so a
request id counts once across workers. Window arithmetic is `BucketCounter`'s: an operation carries the event
time (float64, exact in msgpack) and the script computes each bucket as ``floor(ts / (seconds / buckets))``,
the same two IEEE-754 double operations as `Window.bucket` (times are never negative, so floor and ``int``
agree); the distinct horizon ``ts - distinct_window`` likewise. Each call's arguments are its keys and a few
msgpack blobs, not one argument per operation, and commands are packed by hiredis (`_hiredis_packing`).

One Redis server: a batch is one pipelined *flight* on one connection, in chunks of `chunk_size` (256)
items. The first write carries ``SCRIPT LOAD`` (a no-op when the script is there) and the ``Q`` calls of
chunks 0 and 1; when chunk i's ``Q`` answers arrive, its ``E`` calls go out with chunk i+2's ``Q`` calls.
Redis runs one connection's commands in the order they were sent, so every record sees the claims and
resolutions of the batch in batch order, and every entity its operations; ``Q`` and ``E`` calls touch
disjoint keys, so how the two streams interleave does not matter. Redis works on one chunk while this
process reads and builds the next; with one pipeline per round trip the two took turns (the bench stream at
batch 500 on a shared 2-core machine: 11,000–12,000 events/s taking turns, 14,500–18,000 in flight). The
latency stays two round trips — chunk i's ``E`` waits for chunk i's ``Q`` only — while the wire sees one
write per chunk and one more. With the script loaded at the head of every flight (about 15 µs of server
time: about 10 % of it at batch 1, nothing at batch 500), ``NOSCRIPT`` can only come from a SCRIPT FLUSH
landing in the middle of one; like any error it fails the batch and closes the connection.

Redis Cluster (``?cluster=1``): one pipeline of ``Q`` calls, then one of ``E`` calls, which redis-py's cluster
client splits by node. ``NOSCRIPT`` (after a restart, a failover or SCRIPT FLUSH) is handled by loading the
script and resending the refused calls, which is safe because a refused call did nothing and no two calls of
a round trip share a key.

`remember` is its own round trip, before the caller acknowledges the batch: about 7 ms per engine batch of 500
here, a tenth of the batch. Folding it into the next batch's first round trip would save the wait and the
calls' fixed costs (not the compression and writes), but a worker that died or lost its partitions before
its next batch would take the decisions with it, and a redelivery of exactly those requests — the case
stored decisions exist for — would find none.

TTLs. Every key has one, set on every write: an entity lives for its longest window plus one bucket (a
number: at least `record_ttl`, because its previous request time is kept that long, as in the memory store;
an IP: at least `distinct_window`); a record lives `record_ttl` from its creation (resolving or remembering
keeps the TTL). Memory, measured with ``MEMORY USAGE`` on redis-server 7.0 with the default policy (``python
-m bench.redis_store`` prints it): 168 B per active number, about 245 B per active IP (three windows and its
countries), 136–152 B per subnet, session or prefix, and about 460 B per request record with its compressed
decision (about 310 B more if decisions were stored uncompressed). A request from a new number, IP, session,
subnet and prefix costs about 1.3 KB; the record part stays for `record_ttl` (48 h), the counters at most
their window plus a bucket after the last write.

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
decision. An ``E`` call writes its entities only after every operation succeeded.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import math
import zlib
from collections import deque
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlparse, urlunparse

import hiredis
import msgspec
import orjson
from redis.asyncio import Redis, RedisCluster
from redis.asyncio.connection import AbstractConnection
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
DEFAULT_CHUNK_SIZE = 256

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
  -- request records, one string each: resolved ('0'/'1'), ts, '\n', entity keys (JSON), '\n', decision.
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
  local out, o = {}, 0
  if op == 'R' then
    -- remember decisions. ARGV: 'R', key indices (msgpack), the decision of each (binary, so not in the
    -- msgpack: Redis's cmsgpack has no bin type). The record is rewritten whole (SET KEEPTTL) rather than
    -- APPENDed to, which would leave its string over-allocated.
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
  -- ARGV: 'Q', operations (msgpack, flat), record_ttl (s), record_ttl (ms).
  -- Answers, flat, in order: a claim 0 (new) or 1 and the stored decision (nil for none); a resolution
  -- 0 (unknown), 1 (failed), 2 (duplicate), or 3, the record's time and its entity keys (applied).
  local ops = cmsgpack.unpack(ARGV[2])
  local ttl = tonumber(ARGV[3])
  for j = 1, #ops, 4 do
    local k, ts = ops[j + 1], ops[j + 2]
    local rec = record(k)
    if ops[j] == 1 then
      if rec and rec[2] + ttl > ts then
        out[o + 1] = 1
        out[o + 2] = rec[5] ~= '' and rec[5]
        o = o + 2
      else
        redis.call('SET', KEYS[k], ops[j + 3], 'PX', ARGV[4])
        values[k] = ops[j + 3]
        parsed[k] = nil
        o = o + 1
        out[o] = 0
      end
    elseif not rec or rec[2] + ttl <= ts then
      o = o + 1
      out[o] = 0
    elseif ops[j + 3] ~= 1 then
      o = o + 1
      out[o] = 1
    elseif rec[1] then
      o = o + 1
      out[o] = 2
    else
      rec[1] = true
      values[k] = '1' .. string.sub(values[k], 2)
      redis.call('SETRANGE', KEYS[k], 0, '1')
      out[o + 1], out[o + 2], out[o + 3] = 3, rec[3], rec[4]
      o = o + 3
    end
  end
  return out
end

if op ~= 'E' then return redis.error_reply('unknown op ' .. tostring(op)) end

-- entities. ARGV: 'E', the dimension index of each key (msgpack), operations (msgpack, flat, batch order),
-- configuration (msgpack): {limit, limit seconds, limit buckets, distinct window, then per dimension
-- {ttl (ms), seconds, buckets, peak (1/0) of window 1, of window 2, ...}}.
-- operation: key index, code, event time ts, then for code 5 the member:
--   1  count a request in every window; answer requests, verified (and the peak) of each
--   2  count a verification in every window
--   3  answer the previous request time (false for none), keep the latest
--   4  as 3, then take a send-limit slot if one is free; answer taken (1/0) and the slots used
--   5  add the distinct member seen at ts; answer how many were seen after ts - distinct window
-- A bucket is floor(ts / (seconds / buckets)), the same IEEE double operations as `Window.bucket`.
-- state: {[seconds] = window, L = send-limit window, p = previous time, d = {member, ts, member, ts, ...}}
-- window: {buckets B, head, requests, verified, then bucket, requests, verified of every kept bucket};
-- buckets older than head - B are dropped, as in detector.windows.BucketCounter.
-- Each key is read (MGET) and decoded once, and encoded and written (SET) once, per call.

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

local floor = math.floor
local dims = cmsgpack.unpack(ARGV[2])
local ops = cmsgpack.unpack(ARGV[3])
local cfg = cmsgpack.unpack(ARGV[4])
local limit, limit_buckets, distinct_window = cfg[1], cfg[3], cfg[4]
local limit_width = cfg[2] / limit_buckets
local values = fetch()
local states, touched = {}, {}
local out, o = {}, 0
local p, total = 1, #ops
while p <= total do
  local k, code, ts = ops[p], ops[p + 1], ops[p + 2]
  p = p + 3
  local state = states[k]
  if state == nil then
    local v = values[k]
    if v then state = cmsgpack.unpack(v) else state = {} end
    states[k] = state
    touched[#touched + 1] = k
  end
  if code == 1 or code == 2 then
    local c = cfg[4 + dims[k]]
    for w = 2, #c, 3 do
      local seconds, buckets = c[w], c[w + 1]
      local b = floor(ts / (seconds / buckets))
      local s = state[seconds]
      if s == nil or s[1] ~= buckets then
        s = {buckets, b, 0, 0}
        state[seconds] = s
      end
      if code == 1 then
        add(s, b, 1, 0)
        out[o + 1], out[o + 2] = s[3], s[4]
        o = o + 2
        if c[w + 2] == 1 then
          o = o + 1
          out[o] = peak(s)
        end
      else
        add(s, b, 0, 1)
      end
    end
  elseif code == 3 or code == 4 then
    local previous = state.p
    if previous == nil or ts > previous then state.p = ts end
    o = o + 1
    out[o] = previous or false
    if code == 4 then
      local b = floor(ts / limit_width)
      local s = state.L
      if s == nil or s[1] ~= limit_buckets then
        s = {limit_buckets, b, 0, 0}
        state.L = s
      end
      advance(s, b)
      local used = s[3]
      if used < limit then
        add(s, b, 1, 0)
        out[o + 1], out[o + 2] = 1, used + 1
      else
        out[o + 1], out[o + 2] = 0, used
      end
      o = o + 2
    end
  elseif code == 5 then
    local member, horizon = ops[p], ts - distinct_window
    p = p + 1
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
    o = o + 1
    out[o] = #kept / 2
  else
    return redis.error_reply('unknown entity operation ' .. tostring(code))
  end
end
for j = 1, #touched do
  local k = touched[j]
  redis.call('SET', KEYS[k], cmsgpack.pack(states[k]), 'PX', cfg[4 + dims[k]][1])
end
return cmsgpack.pack(out)
"""
SCRIPT_SHA = hashlib.sha1(SCRIPT.encode()).hexdigest()

# Entity operation codes (see the script) and the answers a batch waits for.
_OBSERVE, _VERIFY, _PREVIOUS, _PREVIOUS_AND_SLOT, _DISTINCT = 1, 2, 3, 4, 5
_CLAIM, _RESOLVE = 1, 2
_LOAD, _COUNT = 0, 2  # answer groups of a flight: the script load, Q calls (_CLAIM), E calls
_encode = msgspec.msgpack.encode
_decode = msgspec.msgpack.decode
_json = orjson.dumps


def _ms(seconds: float) -> int:
    return max(1, math.ceil(seconds * 1000))


@dataclass(frozen=True, slots=True)
class _Dimension:
    """How the entities of one dimension are counted (`index` picks its configuration in the script)."""

    name: str
    index: int
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
        config: list[int] = [_ms(lifetime)]
        for window, peak in zip(windows, peaks, strict=True):
            config += [window.seconds, window.buckets, int(peak)]
        slots = tuple(((name, w.seconds), peak) for w, peak in zip(windows, peaks, strict=True))
        return cls(name, index, slots, config)


class _Shard:
    """The keys, operations and waiting answers of one hash tag in one round trip."""

    __slots__ = ("dims", "index", "keys", "ops", "sinks")

    def __init__(self) -> None:
        self.keys: list[bytes] = []
        self.index: dict[bytes, int] = {}
        self.ops: list[Any] = []
        self.dims: list[int] = []  # the dimension index of each key (entities only)
        self.sinks: list[Any] = []  # (kind, Counts) pairs, flat, in the order of the answers

    def key(self, name: bytes) -> int:
        position = self.index.get(name)
        if position is None:
            self.keys.append(name)
            position = self.index[name] = len(self.keys)
        return position


# Stored decisions: a format byte, then the decision deflated with a preset dictionary of what most decisions
# share (about 390 → 95 bytes, ~6 µs; a record without it takes about 290 B more of Redis memory). An unknown
# format byte (written by an older version: 0x02 was encrypted, 0x03 another dictionary) reads as no decision.
_DECISION_FORMAT = b"\x04"
_DECISION_WORDS = (
    b'"flow":"login"}{"code":"non_core_destination","value":"","points":20.0}'
    b'{"code":"phone_country_unverified","value":,"threshold":,"points":'
    b'{"code":"ip_10m_velocity","value":1,"threshold":10,"points":25.0,"mode":"shadow"},'
    b'{"code":"msisdn_rate_limit"},{"code":"retry_too_soon"},{"code":"ip_unverified"},{"code":"denied_ip"}'
    b'{"type":"otp_decision","request_id":"","ts":"2026-11-23T08:00:00.000Z","action":"block",'
    b'"verdict":"block","mode":"enforce","score":0.0,"reasons":[{"code":"non_core_destination","value":"",'
    b'"points":20.0}],"policy_version":"default-2","phone_country":"","flow":"login"}'
)
_WBITS = -11  # raw deflate, a 2 KiB window: room for the dictionary and a decision


def pack_decision(decision: bytes) -> bytes:
    deflate = zlib.compressobj(1, zlib.DEFLATED, _WBITS, 2, zlib.Z_DEFAULT_STRATEGY, _DECISION_WORDS)
    return _DECISION_FORMAT + deflate.compress(decision) + deflate.flush()


def unpack_decision(stored: bytes) -> bytes | None:
    if stored[:1] != _DECISION_FORMAT:
        return None
    inflate = zlib.decompressobj(_WBITS, _DECISION_WORDS)
    try:
        return inflate.decompress(stored[1:]) + inflate.flush()
    except zlib.error:
        return None


def _hiredis_packing(base: type[AbstractConnection]) -> type[AbstractConnection]:
    """`base` packing commands with hiredis's C packer, as redis-py's sync client does.

    redis-py's asyncio connections pack in Python, about 1 µs per argument, and a store call has one argument
    per key: measured, 10–15 % of the store's client CPU. Standalone clients only (the cluster client chooses
    its connection class itself); anything hiredis cannot pack goes to redis-py's own packer.
    """

    class HiredisPacking(base):  # type: ignore[valid-type, misc]
        def pack_command(self, *args: Any) -> list[bytes]:
            first = args[0]
            if isinstance(first, str | bytes) and (" " in first if isinstance(first, str) else b" " in first):
                args = (*first.split(), *args[1:])  # "SCRIPT LOAD", "CLIENT SETINFO": split, as redis-py does
            try:
                return [hiredis.pack_command(args)]
            except TypeError:
                packed: list[bytes] = super().pack_command(*args)
                return packed

    HiredisPacking.__name__ = HiredisPacking.__qualname__ = f"HiredisPacking{base.__name__}"
    return HiredisPacking


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
        chunk_size: int = DEFAULT_CHUNK_SIZE,
    ) -> None:
        """`chunk_size`: batch items per chunk of a flight (one Redis server; see the module docstring)."""
        if "{" in namespace or "}" in namespace:
            raise ValueError(
                "the key namespace must not contain '{' or '}' (they make Redis Cluster hash tags)"
            )
        if timeout <= 0:
            raise ValueError("timeout must be positive")
        if not 1 <= shards <= 16384:
            raise ValueError("shards must be between 1 and 16384")
        if chunk_size < 1:
            raise ValueError("chunk_size must be positive")
        self.plan = plan
        self.timeout = timeout
        self.namespace = namespace
        self.shards = shards
        self.round_trips = 0
        self._client = client
        names = sorted({*plan.windows, LIMIT_DIMENSION, DISTINCT_DIMENSION})
        self._dims = {name: _Dimension.build(name, index, plan) for index, name in enumerate(names, start=1)}
        self._counted = tuple((name, self._dims[name]) for name in plan.windows)
        limit = plan.limit_window
        self._config = _encode(
            [plan.limit, limit.seconds, limit.buckets, plan.distinct_window]
            + [self._dims[name].config for name in names]
        )
        self._record_args = (str(plan.record_ttl), str(_ms(plan.record_ttl)))
        self._prefixes = [f"{namespace}{{{shard}}}:".encode() for shard in range(shards)]
        self._unreadable = 0
        self.chunk_size = chunk_size
        # One Redis server: batches go out as one pipelined flight on a connection of this pool. A cluster
        # (None): as two pipelines that redis-py's cluster client splits by node.
        self._pool = client.connection_pool if isinstance(client, Redis) else None

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
        chunk_size: int = DEFAULT_CHUNK_SIZE,
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
        client: Redis | RedisCluster
        if cluster:
            client = RedisCluster.from_url(url, **common)
        else:
            client = Redis.from_url(url, retry_on_error=[], health_check_interval=0, **common)
            pool = client.connection_pool
            pool.connection_class = _hiredis_packing(pool.connection_class)
        return cls(
            client, plan, timeout=timeout,
            namespace=namespace or options.get("namespace") or DEFAULT_NAMESPACE,
            shards=shards or int(options.get("shards") or DEFAULT_SHARDS), chunk_size=chunk_size,
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
        work = self._apply_in_round_trips(batch) if self._pool is None else self._apply_in_flight(batch)
        result: list[Counts | FeedbackStatus] = await self._guard(work)
        return result

    async def remember(self, decisions: Sequence[tuple[str, float, bytes]]) -> None:
        if not decisions:
            return
        shards: dict[int, _Shard] = {}
        for request_id, _ts, decision in decisions:
            number, name = self.record_key(request_id)
            shard = shards.get(number)
            if shard is None:
                shard = shards[number] = _Shard()
            shard.ops.append(shard.key(name))
            shard.sinks.append(pack_decision(decision))
        commands = [
            ("EVALSHA", SCRIPT_SHA, len(shard.keys), *shard.keys, "R", _encode(shard.ops), *shard.sinks)
            for shard in shards.values()
        ]
        await self._guard(self._run(commands) if self._pool is None else self._remember_in_flight(commands))

    async def close(self) -> None:
        await self._client.aclose()

    async def ping(self) -> None:
        await self._guard(self._client.ping())

    # ------------------------------------------------------------------ work

    async def _guard(self, work: Any) -> Any:
        try:
            async with asyncio.timeout(self.timeout):
                return await work
        except TimeoutError as exc:
            raise StoreUnavailable(f"redis did not answer within {self.timeout:g}s") from exc
        except (RedisError, OSError) as exc:
            raise StoreUnavailable(f"redis: {exc}") from exc

    async def _apply_in_round_trips(
        self, batch: Sequence[Observation | FeedbackUpdate]
    ) -> list[Counts | FeedbackStatus]:
        """Redis Cluster: one pipeline of ``Q`` calls, then one of ``E`` calls (redis-py routes each call)."""
        claims, places = self._claims(batch)
        replies = await self._run([self._claim_call(shard) for shard in claims])
        results: list[Counts | FeedbackStatus] = []
        counting = self._count(batch, places, claims, replies, results)
        if counting:
            replies = await self._run([self._count_call(shard) for shard in counting])
            for shard, reply in zip(counting, replies, strict=True):
                _deliver(shard.sinks, _decode(reply))
        return results

    async def _apply_in_flight(
        self, batch: Sequence[Observation | FeedbackUpdate]
    ) -> list[Counts | FeedbackStatus]:
        """One Redis server: the batch in chunks, pipelined on one connection (see the module docstring)."""
        size = self.chunk_size
        chunks = [batch[start : start + size] for start in range(0, len(batch), size)]
        claimed: list[tuple[list[_Shard], list[_Shard]]] = []
        counting: list[list[_Shard]] = []
        results: list[Counts | FeedbackStatus] = []
        pending: deque[tuple[int, int, int]] = deque([(_LOAD, 0, 1)])  # answers expected: kind, chunk, calls

        def claim(chunk: int) -> list[tuple[Any, ...]]:
            claims, places = self._claims(chunks[chunk])
            claimed.append((claims, places))
            pending.append((_CLAIM, chunk, len(claims)))
            return [self._claim_call(shard) for shard in claims]

        async with self._connection() as connection:
            # Answers come back in the order sent: the load, Q0, Q1, then E0, Q2, E1, Q3, ... E(n-1).
            commands: list[tuple[Any, ...]] = [(b"SCRIPT", b"LOAD", SCRIPT), *claim(0)]
            if len(chunks) > 1:
                commands += claim(1)
            await self._send(connection, commands)
            self.round_trips += 2
            while pending:
                kind, chunk, calls = pending.popleft()
                replies = [await connection.read_response() for _ in range(calls)]
                if kind == _LOAD:
                    _check_load(replies[0])
                elif kind == _CLAIM:
                    claims, places = claimed[chunk]
                    shards = self._count(chunks[chunk], places, claims, replies, results)
                    counting.append(shards)
                    commands = [self._count_call(shard) for shard in shards]
                    if shards:
                        pending.append((_COUNT, chunk, len(shards)))
                    if chunk + 2 < len(chunks):
                        commands += claim(chunk + 2)
                    if commands:
                        await self._send(connection, commands)
                else:
                    for shard, reply in zip(counting[chunk], replies, strict=True):
                        _deliver(shard.sinks, _decode(reply))
        return results

    async def _remember_in_flight(self, commands: list[tuple[Any, ...]]) -> None:
        async with self._connection() as connection:
            await self._send(connection, [(b"SCRIPT", b"LOAD", SCRIPT), *commands])
            self.round_trips += 1
            _check_load(await connection.read_response())
            for _ in commands:
                await connection.read_response()

    @asynccontextmanager
    async def _connection(self) -> AsyncIterator[AbstractConnection]:
        """A connection of the pool, closed if anything goes wrong (it could hold unread answers)."""
        pool = self._pool
        assert pool is not None
        connection = await pool.get_connection()
        try:
            yield connection
        except BaseException:
            await connection.disconnect(nowait=True)
            raise
        finally:
            await pool.release(connection)

    async def _send(self, connection: AbstractConnection, commands: list[tuple[Any, ...]]) -> None:
        await connection.send_packed_command(connection.pack_commands(commands), check_health=False)

    def _claim_call(self, shard: _Shard) -> tuple[Any, ...]:
        keys = shard.keys
        return ("EVALSHA", SCRIPT_SHA, len(keys), *keys, "Q", _encode(shard.ops), *self._record_args)

    def _count_call(self, shard: _Shard) -> tuple[Any, ...]:
        return ("EVALSHA", SCRIPT_SHA, len(shard.keys), *shard.keys, "E", _encode(shard.dims),
                _encode(shard.ops), self._config)  # fmt: skip

    def _claims(self, items: Sequence[Observation | FeedbackUpdate]) -> tuple[list[_Shard], list[_Shard]]:
        """The ``Q`` calls of `items` (one per shard) and the shard of each item."""
        record_key = self.record_key
        shards: dict[int, _Shard] = {}
        places: list[_Shard] = []
        for item in items:
            number, name = record_key(item.request_id)
            shard = shards.get(number)
            if shard is None:
                shard = shards[number] = _Shard()
            places.append(shard)
            if isinstance(item, Observation):
                record = f"0{item.ts!r}\n{_json(item.keys).decode()}\n"
                shard.ops += (_CLAIM, shard.key(name), item.ts, record)
            else:
                shard.ops += (_RESOLVE, shard.key(name), item.ts, 1 if item.resolved else 0)
        return list(shards.values()), places

    def _count(
        self,
        items: Sequence[Observation | FeedbackUpdate],
        places: list[_Shard],
        claims: list[_Shard],
        replies: list[Any],
        results: list[Counts | FeedbackStatus],
    ) -> list[_Shard]:
        """Read the ``Q`` answers of `items` into `results`; the ``E`` calls (one per shard) of what counts.

        A fresh request's `Counts` goes into `results` now and is filled in when the ``E`` answers come.
        """
        cursors = {id(shard): [reply, 0] for shard, reply in zip(claims, replies, strict=True)}
        entities: dict[tuple[str, str], tuple[_Shard, int]] = {}
        shards: dict[int, _Shard] = {}
        entity = self._entity
        counted = self._counted
        limit_dimension = self._dims[LIMIT_DIMENSION]
        distinct_dimension = self._dims[DISTINCT_DIMENSION]
        for item, place in zip(items, places, strict=True):
            cursor = cursors[id(place)]
            answers, position = cursor
            code = answers[position]
            if isinstance(item, Observation):
                if code == 1:
                    cursor[1] = position + 2
                    stored = answers[position + 1]
                    results.append(Counts(duplicate=True, stored_decision=stored and self._open(stored)))
                    continue
                cursor[1] = position + 1
                counts = Counts()
                results.append(counts)
                ts = item.ts
                keys = item.keys
                for dim, dimension in counted:
                    key = keys.get(dim)
                    if key is not None:
                        shard, k = entities.get((dim, key)) or entity(entities, shards, dimension, key)
                        shard.ops += (k, _OBSERVE, ts)
                        shard.sinks += (dimension, counts)
                phone = keys.get(LIMIT_DIMENSION)
                if phone is not None:
                    shard, k = entities.get((LIMIT_DIMENSION, phone)) or entity(
                        entities, shards, limit_dimension, phone
                    )
                    if item.take_slot:
                        shard.ops += (k, _PREVIOUS_AND_SLOT, ts)
                        shard.sinks += (_PREVIOUS_AND_SLOT, counts)
                    else:
                        shard.ops += (k, _PREVIOUS, ts)
                        shard.sinks += (_PREVIOUS, counts)
                address = keys.get(DISTINCT_DIMENSION)
                if address is not None and item.distinct_member is not None:
                    shard, k = entities.get((DISTINCT_DIMENSION, address)) or entity(
                        entities, shards, distinct_dimension, address
                    )
                    shard.ops += (k, _DISTINCT, ts, item.distinct_member)
                    shard.sinks += (_DISTINCT, counts)
                continue
            results.append(_FEEDBACK[code])
            if code != 3:
                cursor[1] = position + 1
                continue
            cursor[1] = position + 3
            ts = float(answers[position + 1])
            counted_keys = orjson.loads(answers[position + 2])
            if isinstance(counted_keys, list):  # written by an earlier version: [dim, key, dim, key, ...]
                counted_keys = dict(zip(counted_keys[::2], counted_keys[1::2], strict=True))
            for dim, dimension in counted:
                key = counted_keys.get(dim)
                if key is not None:
                    shard, k = entities.get((dim, key)) or entity(entities, shards, dimension, key)
                    shard.ops += (k, _VERIFY, ts)
        return list(shards.values())

    def _entity(
        self,
        entities: dict[tuple[str, str], tuple[_Shard, int]],
        shards: dict[int, _Shard],
        dimension: _Dimension,
        key: str,
    ) -> tuple[_Shard, int]:
        """(shard, key index) of an entity new to this batch (the caller looked in `entities` first)."""
        name = f"{dimension.name}:{key}".encode()
        number = zlib.crc32(name) % self.shards
        shard = shards.get(number)
        if shard is None:
            shard = shards[number] = _Shard()
        shard.keys.append(self._prefixes[number] + name)
        shard.dims.append(dimension.index)
        found = entities[(dimension.name, key)] = (shard, len(shard.keys))
        return found

    def _open(self, stored: bytes) -> bytes | None:
        decision = unpack_decision(stored)
        if decision is None:
            self._unreadable += 1
            if self._unreadable == 1 or self._unreadable % 10_000 == 0:
                log.warning(
                    "%d stored decision(s) in an unknown format (written by an older version?): "
                    "their redeliveries are answered without them", self._unreadable,
                )  # fmt: skip
        return decision

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


def _check_load(answer: Any) -> None:
    if answer != SCRIPT_SHA.encode():
        raise StoreUnavailable(f"redis gave the script sha {answer!r}, expected {SCRIPT_SHA}")


def _deliver(sinks: list[Any], answers: list[Any]) -> None:
    """Hand one call's answers (flat, in operation order) to the `Counts` waiting for them."""
    position = 0
    pairs = iter(sinks)
    try:
        for kind, counts in zip(pairs, pairs, strict=True):
            if kind.__class__ is _Dimension:
                windows = counts.windows
                for slot, peak in kind.slots:
                    windows[slot] = (answers[position], answers[position + 1])
                    position += 2
                    if peak:
                        counts.peaks[slot] = answers[position]
                        position += 1
            elif kind == _PREVIOUS_AND_SLOT:
                previous = answers[position]
                counts.previous_ts = None if previous is False else float(previous)
                counts.slot_taken = answers[position + 1] == 1
                counts.slot_count = answers[position + 2]
                position += 3
            elif kind == _PREVIOUS:
                previous = answers[position]
                counts.previous_ts = None if previous is False else float(previous)
                position += 1
            else:
                counts.distinct = answers[position]
                position += 1
    except IndexError:
        position = -1
    if position != len(answers):
        raise StoreUnavailable(f"redis answered {len(answers)} values where {position} were expected")


_FEEDBACK: tuple[FeedbackStatus, ...] = ("unknown", "failed", "duplicate", "applied")
