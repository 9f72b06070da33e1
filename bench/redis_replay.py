"""Server CPU per event of the Redis store's script, without the client's noise: record, then replay.

    python -m bench.redis_replay [--requests N] [--sizes 1,500] [--rounds 3] [--script OTHER.lua ...]

`python -m bench.redis_store` measures the server while this process runs next to it on the same cores, so
its server figure moves by 10-20 % from run to run on a shared machine. Here the store's commands for the
same stream are recorded once per batch size (every write of every flight, as sent), then sent again, write
by write, to a flushed server of our own with nothing else running in this process: the same commands, the
same order, the same answers. Each round prints the server's CPU (INFO used_cpu_user + used_cpu_sys) and
the scripts' own time (INFO commandstats, EVALSHA) per event; the best round is the figure. `--script`
replays the same commands through another script that takes the same calls (an experiment on store.lua),
next to the store's own. Always starts its own redis-server: a replay flushes it.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import tempfile
from pathlib import Path
from typing import Any

import hiredis
from redis import Redis
from redis.exceptions import ResponseError

from bench.redis_store import drive, updates
from detector.policy import load_policy
from detector.scoring import counter_plan
from detector.state import redis as store_module
from detector.testing.services import RedisServer


async def record(url: str, requests: int, size: int) -> tuple[list[list[tuple[Any, ...]]], int]:
    """Every write (a list of commands) the store sends for the bench stream in batches of `size`, and the
    number of updates in the stream."""
    writes: list[list[tuple[Any, ...]]] = []
    original = store_module.RedisStore._send

    async def send(store: Any, connection: Any, commands: list[tuple[Any, ...]]) -> None:
        writes.append([command for command in commands if command[0] != b"SCRIPT"])
        await original(store, connection, commands)

    store_module.RedisStore._send = send  # type: ignore[method-assign]
    try:
        plan = counter_plan(load_policy())
        store = store_module.RedisStore.from_url(url, plan, timeout=30.0, namespace="replay:")
        stream = updates(requests)
        await drive(store, stream, size)
        await store.close()
    finally:
        store_module.RedisStore._send = original  # type: ignore[method-assign]
    return writes, len(stream)


def replay(url: str, writes: list[list[tuple[Any, ...]]], script: str, events: int) -> tuple[float, float]:
    """(server CPU, EVALSHA time) per event of sending `writes` again through `script` to a flushed server."""
    sha = hashlib.sha1(script.encode()).hexdigest()
    own = store_module.SCRIPT_SHA
    packed = [
        b"".join(hiredis.pack_command(tuple(sha if part == own else part for part in call)) for call in write)
        for write in writes
    ]
    client = Redis.from_url(url)
    try:
        client.flushall()
        client.script_load(script)
        client.config_resetstat()
        cpu = client.info("cpu")
        before = float(cpu["used_cpu_user"]) + float(cpu["used_cpu_sys"])
        connection = client.connection_pool.get_connection()
        try:
            for write, data in zip(writes, packed, strict=True):
                connection.send_packed_command([data])
                for _ in write:
                    try:
                        connection.read_response(disable_decoding=True)
                    except ResponseError as exc:  # a script that does not take these calls
                        raise SystemExit(f"the script refused a call: {exc}") from None
        finally:
            client.connection_pool.release(connection)
        cpu = client.info("cpu")
        after = float(cpu["used_cpu_user"]) + float(cpu["used_cpu_sys"])
        scripts = client.info("commandstats").get("cmdstat_evalsha", {}).get("usec", 0)
    finally:
        client.close()
    return (after - before) / events * 1e6, scripts / events


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--requests", type=int, default=60_000)
    parser.add_argument("--sizes", default="1,500")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--script", action="append", default=[], help="another script taking the same calls")
    args = parser.parse_args()
    scripts = {"store.lua": store_module.SCRIPT} | {path: Path(path).read_text() for path in args.script}
    with tempfile.TemporaryDirectory() as workdir, RedisServer(Path(workdir)) as server:
        for size in [int(size) for size in args.sizes.split(",")]:
            requests = args.requests if size > 1 else max(1, args.requests // 3)
            Redis.from_url(server.url).flushall()
            writes, events = asyncio.run(record(server.url, requests, size))
            calls = sum(map(len, writes))
            print(f"batch {size}: {events:,} updates, {calls:,} calls in {len(writes):,} writes")
            best: dict[str, tuple[float, float]] = {}
            for _ in range(args.rounds):  # alternated, so a busy moment of the machine hits every script
                for name, script in scripts.items():
                    cpu, scripts_time = replay(server.url, writes, script, events)
                    print(f"  {name:<24} server CPU {cpu:6.1f} us/event, scripts {scripts_time:6.1f} us")
                    if name not in best or cpu < best[name][0]:
                        best[name] = (cpu, scripts_time)
            for name, (cpu, scripts_time) in best.items():
                print(f"  best {name:<19} server CPU {cpu:6.1f} us/event, scripts {scripts_time:6.1f} us")


if __name__ == "__main__":
    main()
