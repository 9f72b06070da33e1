"""The Redis store: counters shared by every worker, with the same answers as `MemoryStore`.

One script (`lua/store.lua`, run with EVALSHA) does the work on the server; this module groups a batch's
operations by shard (a Redis Cluster hash tag; one server takes every shard in one call), pipelines them, and
reads the answers back. A batch costs two round trips: ``Q`` claims and resolves request records, then ``E``
counts and reads every entity; `remember` is one more, or rides with the next batch (`remember_wait`).
Keys are keyed hashes or country codes, never a number or an address; every key has a TTL.
docs/redis-store.md has the key layout, why two round trips and not one, the flight of chunks on one
server, Redis Cluster, TTLs and memory per entity, and how this store differs from the memory store.
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
from importlib import resources
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
    Answer,
    AnswersReady,
    ChallengeAnswer,
    ChallengeState,
    ChallengeUpdate,
    CounterPlan,
    Counts,
    FeedbackStatus,
    FeedbackUpdate,
    Observation,
    Offence,
    Quarantine,
    Remembered,
    StoreLifecycle,
    StoreUnavailable,
    Update,
)
from detector.state.packing import pack_decision, unpack_decision

log = logging.getLogger(__name__)

DEFAULT_NAMESPACE = "det:"
DEFAULT_SHARDS = 64
DEFAULT_CHUNK_SIZE = 256

# One script (detector/state/lua/store.lua), so it is either loaded or not: a pipeline never finds half of the
# store's scripts missing. Every call touches the keys of one hash tag ({shard}) only, all declared in KEYS.
SCRIPT = resources.files("detector.state").joinpath("lua/store.lua").read_text()
SCRIPT_SHA = hashlib.sha1(SCRIPT.encode()).hexdigest()

# Entity operation codes (see the script) and the answers a batch waits for.
_OBSERVE, _VERIFY, _PREVIOUS, _PREVIOUS_AND_SLOT, _DISTINCT, _PASS, _OFFENCE = 1, 2, 3, 4, 5, 6, 7
_PASSES = "passes"  # the answers of a _PASS operation, for a `ChallengeAnswer`
_CLAIM, _RESOLVE, _CHALLENGE = 1, 2, 3
# answer groups of a flight: the script load, Q calls (_CLAIM), E calls, remembered decisions that waited
_LOAD, _COUNT, _REMEMBERED = 0, 2, 3
_FINGERPRINT = "#fp"  # a request's fingerprint, kept with the entity keys of its record (no dimension's name)
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
    slots: tuple[tuple[int, bool], ...]  # (place in Counts.windows, has a peak) of each window
    pass_slots: tuple[int, ...]  # the place in Counts.passes of each window of challenges passed
    quarantinable: bool
    config: list[int]

    @classmethod
    def build(cls, name: str, index: int, plan: CounterPlan) -> _Dimension:
        windows = plan.windows.get(name, ())
        passes = plan.pass_windows.get(name, ())
        peaks = [(name, window.seconds) in plan.peaks for window in windows]
        lifetime = max((window.seconds + window.width for window in (*windows, *passes)), default=1.0)
        if name == LIMIT_DIMENSION:
            limit = plan.limit_window
            lifetime = max(lifetime, limit.seconds + limit.width, float(plan.record_ttl))
        if name == DISTINCT_DIMENSION:
            lifetime = max(lifetime, float(plan.distinct_window))
        quarantinable = name in plan.quarantine_dimensions
        if quarantinable:  # a quarantine, and the memory of its offences, outlive the counts
            lifetime = max(lifetime, float(max(plan.quarantine_ttls) + plan.quarantine_forget))
        # The TTL is set again once 1% of it has passed since it last was: a key outlives its last write by
        # at least 99% of its lifetime, longer than its longest window by most of a bucket.
        refresh = max(1, math.ceil(lifetime / 100))
        config: list[int] = [_ms(lifetime), refresh, len(windows), int(quarantinable)]
        for window, peak in zip(windows, peaks, strict=True):
            config += [window.seconds, window.buckets, int(peak)]
        for window in passes:
            config += [window.seconds, window.buckets]
        places, pass_places = plan.slots(), plan.pass_slots()
        slots = tuple((places[(name, w.seconds)], peak) for w, peak in zip(windows, peaks, strict=True))
        passed = tuple(pass_places[(name, w.seconds)] for w in passes)
        return cls(name, index, slots, passed, quarantinable, config)


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


def _hiredis_packing(base: type[AbstractConnection]) -> type[AbstractConnection]:
    """`base` packing commands with hiredis's C packer, as redis-py's sync client does.

    redis-py's asyncio connections pack in Python, about 1 µs per argument, and a store call has one argument
    per key: measured, 10–15 % of the store's client CPU. Standalone clients only (the cluster client chooses
    its connection class itself); anything hiredis cannot pack goes to redis-py's own packer.
    """

    class HiredisPacking(base):  # type: ignore[valid-type, misc]
        # Whether this session (socket) has loaded the store's script: a flight then sends it only when not.
        script_loaded = False

        async def on_connect_check_health(self, check_health: bool = True) -> None:
            self.script_loaded = False
            await super().on_connect_check_health(check_health=check_health)

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


class RedisStore(StoreLifecycle):
    """The `Store` protocol on Redis (redis-py asyncio, hiredis): see the module docstring."""

    bounds_its_calls = True  # every call goes through `_guard`

    def __init__(
        self,
        client: Redis | RedisCluster,
        plan: CounterPlan,
        *,
        timeout: float,
        namespace: str = DEFAULT_NAMESPACE,
        shards: int = DEFAULT_SHARDS,
        chunk_size: int = DEFAULT_CHUNK_SIZE,
        remember_wait: float | None = None,
    ) -> None:
        """`chunk_size`: batch items per chunk of a flight (one Redis server; see the module docstring).

        `remember_wait` (one Redis server): `remember` returns at once, and its calls go at the head of the
        next batch's flight, or on their own after this many seconds if none comes; None: `remember` is its
        own round trip, over when it returns (the Kafka worker acknowledges a batch after it)."""
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
        names = sorted(
            {*plan.record_dimensions, *plan.quarantine_dimensions, LIMIT_DIMENSION, DISTINCT_DIMENSION}
        )
        self._dims = {name: _Dimension.build(name, index, plan) for index, name in enumerate(names, start=1)}
        self._counted = tuple((name, self._dims[name]) for name in plan.record_dimensions)
        self._window_count, self._pass_count = plan.window_count(), len(plan.pass_slots())
        self._passed = tuple((name, self._dims[name]) for name in plan.pass_windows)
        limit = plan.limit_window
        self._config = _encode(
            [plan.limit, limit.seconds, limit.buckets, plan.distinct_window]
            + [self._dims[name].config for name in names]
            + [[plan.quarantine_forget, *plan.quarantine_ttls]]
        )
        self._record_args = (str(plan.record_ttl), str(_ms(plan.record_ttl)))
        self._prefixes = [f"{namespace}{{{shard}}}:".encode() for shard in range(shards)]
        self._unreadable = 0
        self.chunk_size = chunk_size
        self.remember_wait = remember_wait
        self._deferred: list[tuple[Any, ...]] = []  # remember calls waiting for the next flight
        self._deferred_timer: asyncio.TimerHandle | None = None
        self._deferred_tasks: set[asyncio.Task[None]] = set()
        # One Redis server: batches go out as one pipelined flight on a connection of this pool. A cluster
        # (None): as two pipelines that redis-py's cluster client splits by node.
        self._pool = client.connection_pool if isinstance(client, Redis) else None
        # A cluster needs a call per hash tag (1: calls grouped by shard); one server takes one call per
        # chunk and kind whatever the tags of its keys (0: every shard in group 0), which costs it less.
        self._by_shard = 0 if self._pool is not None else 1

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
        remember_wait: float | None = None,
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
            # Every call on one server goes through `_guard`, which bounds it by `timeout`; a socket timeout
            # too would make redis-py wrap each send in a task of its own (wait_for) and each read in a timer.
            common["socket_timeout"] = None
            client = Redis.from_url(url, retry_on_error=[], health_check_interval=0, **common)
            pool = client.connection_pool
            pool.connection_class = _hiredis_packing(pool.connection_class)
        return cls(
            client, plan, timeout=timeout,
            namespace=namespace or options.get("namespace") or DEFAULT_NAMESPACE,
            shards=shards or int(options.get("shards") or DEFAULT_SHARDS), chunk_size=chunk_size,
            remember_wait=remember_wait,
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

    async def apply(self, batch: Sequence[Update], on_answers: AnswersReady | None = None) -> list[Answer]:
        if not batch:
            return []
        if self._pool is None:
            work = self._apply_in_round_trips(batch)
        else:
            work = self._apply_in_flight(batch, on_answers)
        result: list[Answer] = await self._guard(work)
        return result

    async def remember(self, decisions: Sequence[Remembered], offences: Sequence[Offence] = ()) -> None:
        if not decisions and not offences:
            return
        shards: dict[int, _Shard] = {}
        for entry in decisions:
            number, name = self.record_key(entry.request_id)
            number *= self._by_shard
            shard = shards.get(number)
            if shard is None:
                shard = shards[number] = _Shard()
            if entry.challenge_expires is None:
                shard.ops += (shard.key(name), 0, 0)
            else:
                challenge = shard.key(_challenge_key(name))
                shard.ops += (shard.key(name), challenge, repr(entry.challenge_expires))  # exact in Lua
            shard.sinks.append(pack_decision(entry.decision))
        ttl = str(_ms(self.plan.record_ttl))
        commands = [
            ("EVALSHA", SCRIPT_SHA, len(shard.keys), *shard.keys, "R", _encode(shard.ops), ttl, *shard.sinks)
            for shard in shards.values()
        ]
        commands += self._offence_calls(offences)
        if self._pool is None:
            await self._guard(self._run(commands))
        elif self.remember_wait is None:
            await self._guard(self._remember_in_flight(commands))
        else:
            self._deferred += commands
            if self._deferred_timer is None:
                loop = asyncio.get_running_loop()
                self._deferred_timer = loop.call_later(self.remember_wait, self._flush_deferred)

    def _take_deferred(self) -> list[tuple[Any, ...]]:
        commands, self._deferred = self._deferred, []
        if self._deferred_timer is not None:
            self._deferred_timer.cancel()
            self._deferred_timer = None
        return commands

    def _flush_deferred(self) -> None:
        """No flight came within `remember_wait`: the waiting remember calls go on their own."""
        self._deferred_timer = None
        task = asyncio.create_task(self._send_deferred(self._take_deferred()))
        self._deferred_tasks.add(task)
        task.add_done_callback(self._deferred_tasks.discard)

    async def _send_deferred(self, commands: list[tuple[Any, ...]]) -> None:
        if not commands:
            return
        try:
            await self._guard(self._remember_in_flight(commands))
        except StoreUnavailable as exc:
            log.warning("could not record decisions for redelivery (%d calls): %s", len(commands), exc)

    def _offence_calls(self, offences: Sequence[Offence]) -> list[tuple[Any, ...]]:
        """``E`` calls quarantining the entities of `offences` (one per shard, in the remember flight)."""
        entities: dict[tuple[str, str], tuple[_Shard, int]] = {}
        shards: dict[int, _Shard] = {}
        for offence in offences:
            dimension = self._dims.get(offence.dimension)
            if dimension is None or not dimension.quarantinable:
                continue
            key = (offence.dimension, offence.key)
            shard, k = entities.get(key) or self._entity(entities, shards, dimension, offence.key)
            shard.ops += (k, _OFFENCE, offence.ts, offence.label)
        return [self._count_call(shard) for shard in shards.values()]

    async def quarantines(self, now: float) -> list[Quarantine]:
        found: list[Quarantine] = []
        for dimension in sorted(self.plan.quarantine_dimensions):
            pattern = f"{self.namespace}{{*}}:{dimension}:*"
            keys = await self._scan(pattern)
            for name, value in zip(
                keys, await self._guard(self._client.mget(keys)) if keys else [], strict=True
            ):
                state = _decode(value) if value else None
                quarantine = state.get("Q") if isinstance(state, dict) else None
                if quarantine and quarantine[0] > now:
                    until, offences, since, label = quarantine
                    key = name.decode().rsplit(":", 1)[1]
                    found.append(Quarantine(dimension, key, label, float(since), float(until), int(offences)))
        return sorted(found, key=lambda q: q.since)

    async def _scan(self, pattern: str) -> list[bytes]:
        """The keys matching `pattern`; on one server (no socket timeout), each SCAN bounded by `_guard`."""
        if self._pool is None:  # a cluster: its client scans every node, with its socket timeout
            return [key async for key in self._client.scan_iter(match=pattern, count=1000)]
        keys: list[bytes] = []
        cursor = 0
        while True:
            cursor, found = await self._guard(self._client.scan(cursor, match=pattern, count=1000))
            keys += found
            if not cursor:
                return keys

    async def lift(self, dimension: str, key: str) -> bool:
        _, name = self.entity_key(dimension, key)
        [lifted] = await self._guard(self._run([("EVALSHA", SCRIPT_SHA, 1, name, "L")]))
        return bool(lifted[0]) if isinstance(lifted, list) else bool(lifted)

    async def close(self) -> None:
        await self._send_deferred(self._take_deferred())
        if self._deferred_tasks:
            await asyncio.gather(*self._deferred_tasks, return_exceptions=True)
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

    async def _apply_in_round_trips(self, batch: Sequence[Update]) -> list[Answer]:
        """Redis Cluster: one pipeline of ``Q`` calls, then one of ``E`` calls (redis-py routes each call)."""
        claims, places = self._claims(batch)
        replies = await self._run([self._claim_call(shard) for shard in claims])
        results: list[Answer] = []
        counting = self._count(batch, places, claims, replies, results)
        if counting:
            replies = await self._run([self._count_call(shard) for shard in counting])
            for shard, reply in zip(counting, replies, strict=True):
                _deliver(shard.sinks, _decode(reply))
        return results

    async def _apply_in_flight(
        self, batch: Sequence[Update], on_answers: AnswersReady | None
    ) -> list[Answer]:
        """One Redis server: the batch in chunks, pipelined on one connection (see the module docstring)."""
        size = self.chunk_size
        chunks = [batch[start : start + size] for start in range(0, len(batch), size)]
        deferred = self._take_deferred()
        try:
            async with self._connection() as connection:
                load = not _script_loaded(connection)
                # Requests only (the service's usual batch): their entity operations do not depend on what
                # the claims find, beyond being skipped or taking no slot: one fused call per chunk, one
                # round trip.
                fused = all(item.__class__ is Observation for item in batch)
                fly = self._fly_fused if fused else self._fly
                try:
                    return await fly(connection, chunks, deferred, load, on_answers)
                except _ScriptMissing:  # nothing of the flight ran: load the script and fly it again
                    return await fly(connection, chunks, deferred, True, on_answers)
        except BaseException:
            if deferred:
                log.warning("could not record decisions for redelivery (%d calls): no flight", len(deferred))
            raise

    async def _fly(
        self,
        connection: AbstractConnection,
        chunks: list[Sequence[Update]],
        deferred: list[tuple[Any, ...]],
        load: bool,
        on_answers: AnswersReady | None,
    ) -> list[Answer]:
        claimed: list[tuple[list[_Shard], list[_Shard]]] = []
        counting: list[list[_Shard]] = []
        results: list[Answer] = []
        # answers expected: kind, chunk, calls
        pending: deque[tuple[int, int, int]] = deque([(_LOAD, 0, 1)] if load else [])
        if deferred:
            pending.append((_REMEMBERED, 0, len(deferred)))
        # A chunk's answers are complete once its counts came (or when nothing of it counts), and go to
        # `on_answers` in chunk order.
        spans: list[tuple[int, int]] = []  # each claimed chunk's answers in `results`
        complete: list[bool] = []
        handed = 0

        def claim(chunk: int) -> list[tuple[Any, ...]]:
            claims, places = self._claims(chunks[chunk])
            claimed.append((claims, places))
            pending.append((_CLAIM, chunk, len(claims)))
            return [self._claim_call(shard) for shard in claims]

        def hand_over() -> None:
            nonlocal handed
            while handed < len(complete) and complete[handed]:
                if on_answers is not None:
                    on_answers(results[spans[handed][0] : spans[handed][1]])
                handed += 1

        # Answers come back in the order sent: [the load,] [remembered,] Q0, Q1, then E0, Q2, E1, ... E(n-1).
        commands: list[tuple[Any, ...]] = [(b"SCRIPT", b"LOAD", SCRIPT)] if load else []
        commands += deferred
        commands += claim(0)
        if len(chunks) > 1:
            commands += claim(1)
        await self._send(connection, commands)
        self.round_trips += 2
        first = not load  # the first answers may refuse the script: then nothing else may have run
        while pending:
            kind, chunk, calls = pending.popleft()
            if first:
                replies = await _first_replies(connection, calls, sum(calls for _, _, calls in pending))
                first = False
            else:
                replies = [await connection.read_response() for _ in range(calls)]
            if kind == _LOAD:
                _check_load(replies[0])
            elif kind == _REMEMBERED:
                continue
            elif kind == _CLAIM:
                claims, places = claimed[chunk]
                start = len(results)
                shards = self._count(chunks[chunk], places, claims, replies, results)
                spans.append((start, len(results)))
                complete.append(not shards)
                counting.append(shards)
                commands = [self._count_call(shard) for shard in shards]
                if shards:
                    pending.append((_COUNT, chunk, len(shards)))
                if chunk + 2 < len(chunks):
                    commands += claim(chunk + 2)
                if commands:
                    await self._send(connection, commands)
                hand_over()
            else:
                for shard, reply in zip(counting[chunk], replies, strict=True):
                    _deliver(shard.sinks, _decode(reply))
                complete[chunk] = True
                hand_over()
        _mark_loaded(connection)
        return results

    async def _fly_fused(
        self,
        connection: AbstractConnection,
        chunks: list[Sequence[Update]],
        deferred: list[tuple[Any, ...]],
        load: bool,
        on_answers: AnswersReady | None,
    ) -> list[Answer]:
        """A batch of requests only: one ``F`` call per chunk (claims, then the counts of what counts), one
        round trip. Each request's operations are built as if it were new; the claims' answers say which
        were redeliveries (their operations skipped by the script too) or reused ids.

        Each chunk's call is sent as soon as it is built, so Redis works on it while the next is built, and
        each chunk's answers go to `on_answers` as they come, to be used while Redis works on the next.
        """
        head: list[tuple[Any, ...]] = [(b"SCRIPT", b"LOAD", SCRIPT)] if load else []
        head += deferred
        planned: list[tuple[Sequence[Update], list[Answer], _Shard | None]] = []
        for chunk in chunks:
            claims, places = self._claims(chunk)
            results: list[Answer] = []
            counting = self._count(chunk, places, claims, [[0] * len(chunk)], results)
            entity = counting[0] if counting else None
            planned.append((chunk, results, entity))
            await self._send(connection, [*head, self._fused_call(claims[0], entity, results)])
            head = []
        self.round_trips += 1
        if load:
            _check_load(await connection.read_response())
            early: list[Any] = []
        else:  # the first answer may refuse the script: then nothing of the flight ran
            early = await _first_replies(connection, 1, len(deferred) + len(chunks) - 1)

        async def reply() -> Any:
            return early.pop() if early else await connection.read_response()

        for _ in deferred:
            await reply()
        answers: list[Answer] = []
        for chunk, results, entity in planned:
            part = self._fused_answers(chunk, results, entity, await reply())
            answers += part
            if on_answers is not None:
                on_answers(part)
        _mark_loaded(connection)
        return answers

    def _fused_call(self, claims: _Shard, entity: _Shard | None, results: list[Answer]) -> tuple[Any, ...]:
        owner = {id(counts): position for position, counts in enumerate(results, start=1)}
        keys, dims, ops, owners = claims.keys, [], [], []
        if entity is not None:
            keys = keys + entity.keys
            dims, ops = entity.dims, entity.ops
            owners = [owner[id(counts)] for counts in entity.sinks[1::2]]
        return ("EVALSHA", SCRIPT_SHA, len(keys), *keys, "F", _encode(claims.ops), *self._record_args,
                len(claims.keys), _encode(dims), _encode(ops), _encode(owners), self._config)  # fmt: skip

    def _fused_answers(
        self, chunk: Sequence[Update], results: list[Answer], entity: _Shard | None, reply: list[Any]
    ) -> list[Answer]:
        """A fused call's answers: the claims', as ``Q`` answers, then the counts of what counted."""
        verdicts: dict[int, int] = {}  # id(Counts) -> 1 a redelivery, 2 a reused id
        position = 0
        for index, item in enumerate(chunk):
            counts = results[index]
            assert isinstance(item, Observation) and isinstance(counts, Counts)
            if reply[position] != 1:
                position += 1
                continue
            recorded = orjson.loads(reply[position + 2])
            fingerprint = recorded.get(_FINGERPRINT, "") if isinstance(recorded, dict) else ""
            if not fingerprint or fingerprint == item.fingerprint:
                stored = reply[position + 1]
                results[index] = Counts(duplicate=True, stored_decision=stored and self._open(stored))
                verdicts[id(counts)] = 1
            else:
                counts.reused = True  # counted like a new request, without a record or a slot
                verdicts[id(counts)] = 2
            position += 3
        if position != len(reply) - 1:
            raise StoreUnavailable(f"redis answered {len(reply) - 1} claim values, {position} expected")
        if entity is not None:
            sinks = entity.sinks
            if verdicts:
                kept: list[Any] = []
                for kind, counts in zip(sinks[::2], sinks[1::2], strict=True):
                    verdict = verdicts.get(id(counts), 0)
                    if verdict == 1:
                        continue
                    kept += (_PREVIOUS if verdict == 2 and kind == _PREVIOUS_AND_SLOT else kind, counts)
                sinks = kept
            _deliver(sinks, _decode(reply[-1]))
        return results

    async def _remember_in_flight(self, commands: list[tuple[Any, ...]]) -> None:
        async with self._connection() as connection:
            load = not _script_loaded(connection)
            await self._send(connection, [(b"SCRIPT", b"LOAD", SCRIPT), *commands] if load else commands)
            self.round_trips += 1
            if load:
                _check_load(await connection.read_response())
            refused = []
            for command in commands:
                try:
                    await connection.read_response()
                except NoScriptError:
                    if load:
                        raise
                    refused.append(command)
            if refused:
                # A refused call did nothing, and no two calls of a flight share a key: load, send them again.
                await self._send(connection, [(b"SCRIPT", b"LOAD", SCRIPT), *refused])
                self.round_trips += 1
                _check_load(await connection.read_response())
                for _ in refused:
                    await connection.read_response()
            _mark_loaded(connection)

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

    def _claims(self, items: Sequence[Update]) -> tuple[list[_Shard], list[_Shard]]:
        """The ``Q`` calls of `items` (one per shard) and the shard of each item."""
        record_key = self.record_key
        by_shard = self._by_shard
        shards: dict[int, _Shard] = {}
        places: list[_Shard] = []
        for item in items:
            number, name = record_key(item.request_id)
            number *= by_shard
            shard = shards.get(number)
            if shard is None:
                shard = shards[number] = _Shard()
            places.append(shard)
            if isinstance(item, Observation):
                keys = {**item.keys, _FINGERPRINT: item.fingerprint} if item.fingerprint else item.keys
                record = f"0{item.ts!r}\n{_json(keys).decode()}\n"
                shard.ops += (_CLAIM, shard.key(name), item.ts, record)
            elif isinstance(item, FeedbackUpdate):
                shard.ops += (_RESOLVE, shard.key(name), item.ts, 1 if item.resolved else 0)
            else:
                challenge = shard.key(_challenge_key(name))
                shard.ops += (_CHALLENGE, shard.key(name), item.ts, item.fingerprint, challenge)
        return list(shards.values()), places

    def _count(
        self,
        items: Sequence[Update],
        places: list[_Shard],
        claims: list[_Shard],
        replies: list[Any],
        results: list[Answer],
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
                counts = Counts.places(self._window_count, self._pass_count)
                if code == 1:
                    cursor[1] = position + 3
                    recorded = orjson.loads(answers[position + 2])
                    fingerprint = recorded.get(_FINGERPRINT, "") if isinstance(recorded, dict) else ""
                    if not fingerprint or fingerprint == item.fingerprint:
                        stored = answers[position + 1]
                        results.append(Counts(duplicate=True, stored_decision=stored and self._open(stored)))
                        continue
                    counts.reused = True  # counted like a new request, without a record or a slot
                else:
                    cursor[1] = position + 1
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
                    if item.take_slot and not counts.reused:
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
            if isinstance(item, ChallengeUpdate):
                answer = ChallengeAnswer(_CHALLENGE_STATES[code], [0] * self._pass_count)
                results.append(answer)
                if code != 3:
                    cursor[1] = position + 1
                    continue
                cursor[1] = position + 2
                if item.passed:
                    recorded = orjson.loads(answers[position + 1])
                    for dim, dimension in self._passed:
                        key = recorded.get(dim) if isinstance(recorded, dict) else None
                        if key is not None:
                            shard, k = entities.get((dim, key)) or entity(entities, shards, dimension, key)
                            shard.ops += (k, _PASS, item.ts)
                            shard.sinks += (_PASSES, (dimension, answer))
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
        shard = shards.get(number * self._by_shard)
        if shard is None:
            shard = shards[number * self._by_shard] = _Shard()
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


class _ScriptMissing(Exception):
    """The server refused every call of a flight's first write for want of the script: nothing ran."""


def _script_loaded(connection: AbstractConnection) -> bool:
    """Whether this connection's session has loaded the script (see `_hiredis_packing`)."""
    return bool(getattr(connection, "script_loaded", False))


def _mark_loaded(connection: AbstractConnection) -> None:
    if hasattr(connection, "script_loaded"):
        connection.script_loaded = True


async def _first_replies(connection: AbstractConnection, calls: int, rest: int) -> list[Any]:
    """The answers to the first `calls` calls of a flight sent without loading the script.

    Should the first be NOSCRIPT (a restart, a failover or SCRIPT FLUSH since this connection loaded it), the
    other `rest` calls of the flight's first write are read too: all refused, nothing ran (`_ScriptMissing`:
    the flight can be sent again with the script); some answered, calls ran out of order (`StoreUnavailable`).
    """
    try:
        first = await connection.read_response()
    except NoScriptError:
        ran = 0
        for _ in range(calls - 1 + rest):
            try:
                await connection.read_response()
                ran += 1
            except NoScriptError:
                continue
        if hasattr(connection, "script_loaded"):
            connection.script_loaded = False
        if ran:
            raise StoreUnavailable("the script was flushed in the middle of a flight") from None
        raise _ScriptMissing from None
    return [first, *[await connection.read_response() for _ in range(calls - 1)]]


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
                for slot in kind.pass_slots:
                    counts.passes[slot] = answers[position]
                    position += 1
                if kind.quarantinable:
                    until, offences = answers[position], answers[position + 1]
                    position += 2
                    if offences:
                        counts.quarantines[kind.name] = (float(until), offences)
            elif kind == _PASSES:
                dimension, answer = counts
                for slot in dimension.pass_slots:
                    answer.passes[slot] = answers[position]
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
_CHALLENGE_STATES: tuple[ChallengeState, ...] = (
    "unknown",
    "unknown",
    "duplicate",
    "applied",
    "expired",
    "mismatch",
)


def _challenge_key(record: bytes) -> bytes:
    """A request's open challenge: next to its record (the same shard), holding its expiry until taken."""
    return record.replace(b":req:", b":chl:", 1)
