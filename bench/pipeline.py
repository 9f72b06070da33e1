"""The Kafka pipeline, measured: one `detector worker` (Redis store, default policy) next to two passthroughs
on the same broker that consume a batch, publish every message and wait for the acks, deciding nothing:

* aiokafka: the bare client, ``getmany`` → ``send`` → commit — the ceiling for any Python consumer here;
* faust only: the worker's own Faust app (`detector.stream.lean`) and settings, batches
  (`detector.stream.batches`) and output producer (`send_many`) — what Faust costs.

    python -m bench.pipeline [--requests 50000] [--rates 2000,1000,500] [--seconds 15] [--json out.json]

Uses $KAFKA_BOOTSTRAP and $REDIS_URL when set (``make services``); otherwise starts a broker and a
redis-server of its own in a temporary directory. Measured:

1. engine alone: `Engine.process` on the Redis store in this process, batches of --batch-size (no Kafka);
2. throughput: --requests requests are loaded into a fresh topic first, then the consumer starts; the rate is
   counted between the first and the last output record's broker timestamps, so start-up and this reader's
   speed do not count. Also the consumer process's CPU time per event over that stretch (all threads, from
   /proc), which load from other processes does not inflate the way it does the rate;
3. latency: with the consumer running and its group settled, requests are produced at each of --rates per
   second for --seconds (2,000/s is the target; lower rates show a worker that is not saturated); latency
   is from just before `send` to the moment this process reads the output (the first --warmup seconds are
   left out). Producer and reader share this process and its clock;
4. CPU while idle: a ready consumer on a topic nothing is written to, over 10 s (% of one core).

Every process — broker, Redis, consumer, this one — shares the machine's cores: the report gives the core
count, the load average and Linux's CPU pressure (the share of time some runnable task waited for a CPU).
Requests go to unique valid numbers in 16 countries from 5,000 client IPs, keyed by number.

Where the time goes: BENCH_PROFILE=DIR records each worker and passthrough with py-spy into DIR (raw,
collapsed stacks: one line per stack and its sample count); BENCH_METRICS_PORT=N serves the worker's
/metrics on port N (its batch sizes and batch times, while a run goes on).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import random
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson

REPO = Path(__file__).resolve().parents[1]
REGIONS = ["US", "GB", "DE", "FR", "IN", "BR", "ES", "IT", "NG", "ID", "PH", "VN", "PK", "EG", "KE", "TH"]
PARTITIONS = 8


# ----------------------------------------------------------------------------- workload


def number_blocks() -> list[str]:
    """E.164 prefixes of valid mobile numbers (the example number minus its last four digits)."""
    import phonenumbers

    blocks = []
    for region in REGIONS:
        example = phonenumbers.example_number_for_type(region, phonenumbers.PhoneNumberType.MOBILE)
        if example is not None:
            blocks.append(phonenumbers.format_number(example, phonenumbers.PhoneNumberFormat.E164)[:-4])
    return blocks


class Workload:
    def __init__(self, seed: int = 7) -> None:
        self.rng = random.Random(seed)
        self.blocks = number_blocks()
        rng = self.rng
        self.ips = [
            ".".join(
                str(part)
                for part in (
                    rng.randrange(1, 224),
                    rng.randrange(256),
                    rng.randrange(256),
                    rng.randrange(1, 255),
                )
            )
            for _ in range(5000)
        ]
        self.tag = uuid.uuid4().hex[:8]
        self.count = 0

    def request(self) -> tuple[str, bytes, bytes]:
        """(request_id, key, value) of a fresh request, stamped now."""
        from detector.kafka.topics import partition_key

        rng = self.rng
        self.count += 1
        request_id = f"{self.tag}-{self.count}"
        phone = rng.choice(self.blocks) + f"{rng.randrange(10_000):04d}"
        event = {
            "type": "otp_request", "request_id": request_id, "ts": round(time.time(), 3), "phone": phone,
            "client_ip": rng.choice(self.ips), "session_id": f"s{rng.randrange(1_000_000)}", "flow": "login",
        }  # fmt: skip
        return request_id, partition_key(phone, b"bench"), orjson.dumps(event)


# ----------------------------------------------------------------------------- services


@contextlib.contextmanager
def services() -> Iterator[tuple[str, str]]:
    """(bootstrap, redis url): from the environment, or started here for the run."""
    from detector.testing.services import KafkaBroker, RedisServer

    bootstrap, redis_url = os.environ.get("KAFKA_BOOTSTRAP"), os.environ.get("REDIS_URL")
    with tempfile.TemporaryDirectory(prefix="bench-pipeline-") as tmp, contextlib.ExitStack() as stack:
        if not bootstrap:
            print("starting a Kafka broker ...", file=sys.stderr, flush=True)
            bootstrap = stack.enter_context(KafkaBroker(Path(tmp) / "kafka")).bootstrap
        if not redis_url:
            redis_url = stack.enter_context(RedisServer(Path(tmp) / "redis")).url
        yield bootstrap, redis_url


def profiled(name: str, command: list[str]) -> list[str]:
    """`command`, under py-spy when $BENCH_PROFILE names a directory (a raw profile per process there)."""
    profiles = os.environ.get("BENCH_PROFILE")
    if not profiles:
        return command
    out = Path(profiles) / f"{name}-{uuid.uuid4().hex[:6]}.txt"
    spy = str(Path(sys.executable).parent / "py-spy")
    return [spy, "record", "--rate", "250", "--format", "raw", "--output", str(out), "--", *command]


def worker_command() -> list[str]:
    return profiled("worker", [sys.executable, "-m", "detector", "worker"])


class Process:
    """A worker or passthrough subprocess, logging to a file."""

    def __init__(self, argv: list[str], log: Path, env: dict[str, str]) -> None:
        self.log = log
        self.argv = argv
        with log.open("ab") as out:
            self.proc = subprocess.Popen(
                argv, env=env, cwd=REPO, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT
            )

    def cpu_seconds(self) -> float:
        """User + system CPU time of the process so far (all its threads), from /proc."""
        try:
            fields = Path(f"/proc/{self.proc.pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            return float("nan")
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def check(self) -> None:
        if self.proc.poll() is not None:
            tail = "\n".join(self.log.read_text(errors="replace").splitlines()[-30:])
            raise RuntimeError(f"{self.argv[:4]} exited with {self.proc.returncode}:\n{tail}")

    def stop(self) -> None:
        if self.proc.poll() is None:
            # Under py-spy, the worker is its child: py-spy writes the profile once the worker has exited.
            children = Path(f"/proc/{self.proc.pid}/task/{self.proc.pid}/children")
            profiled = os.path.basename(self.argv[0]) == "py-spy" and children.exists()
            for child in children.read_text().split() if profiled else []:
                os.kill(int(child), signal.SIGTERM)
            if not profiled:
                self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


def start_worker(
    bootstrap: str,
    redis_url: str,
    names: dict[str, str],
    group: str,
    workdir: Path,
    batch_size: int,
    batch_wait: float | None = None,
) -> Process:
    env = {key: value for key, value in os.environ.items() if not key.startswith("DETECTOR_")}
    env.update({
        "DETECTOR_HASH_KEY": f"bench-{uuid.uuid4().hex}",
        "DETECTOR_KAFKA_BROKERS": bootstrap,
        "DETECTOR_STORE": redis_url,
        "DETECTOR_GROUP_ID": group,
        "DETECTOR_TOPIC_REQUESTS": names["requests"],
        "DETECTOR_TOPIC_FEEDBACK": names["feedback"],
        "DETECTOR_TOPIC_DECISIONS": names["decisions"],
        "DETECTOR_TOPIC_DEAD_LETTERS": names["dead_letters"],
        "DETECTOR_TOPIC_FEEDBACK_RETRY": names["feedback_retry"],
        "DETECTOR_BATCH_SIZE": str(batch_size),
        "DETECTOR_METRICS_PORT": os.environ.get("BENCH_METRICS_PORT", "0"),
        "DETECTOR_DATA_DIR": str(workdir / f"{group}-data"),
        "DETECTOR_KAFKA_SESSION_TIMEOUT": "10",
        "DETECTOR_KAFKA_HEARTBEAT_INTERVAL": "1",
        "DETECTOR_LOG_LEVEL": os.environ.get("BENCH_LOG_LEVEL", "WARNING"),
    })  # fmt: skip
    if batch_wait is not None:
        env["DETECTOR_BATCH_WAIT"] = str(batch_wait)
    return Process(worker_command(), workdir / f"{group}.log", env)


def start_passthrough(
    kind: str, bootstrap: str, source: str, target: str, group: str, workdir: Path, batch_size: int
) -> Process:
    """`kind` "aiokafka": the bare client; "faust": the worker's Faust set-up and output, no engine."""
    argv = [
        sys.executable,
        "-m",
        "bench.pipeline",
        f"{kind}-passthrough",
        "--bootstrap",
        bootstrap,
        "--source",
        source,
        "--target",
        target,
        "--group",
        group,
        "--batch-size",
        str(batch_size),
    ]
    return Process(profiled(kind, argv), workdir / f"{group}.log", dict(os.environ))


async def passthrough(bootstrap: str, source: str, target: str, group: str, batch_size: int) -> None:
    """The ceiling: consume a batch, produce every message, wait for the acks, commit. No parsing at all."""
    from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

    consumer = AIOKafkaConsumer(
        source,
        bootstrap_servers=bootstrap,
        group_id=group,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        session_timeout_ms=10_000,
        heartbeat_interval_ms=1_000,
    )
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all")
    await consumer.start()
    await producer.start()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    try:
        while not stop.is_set():
            batches = await consumer.getmany(timeout_ms=10, max_records=batch_size)
            acks = [
                await producer.send(target, record.value, key=record.key)
                for records in batches.values()
                for record in records
            ]
            if acks:
                await asyncio.gather(*acks)
                await consumer.commit()
    finally:
        await consumer.stop()
        await producer.stop()


def faust_passthrough(bootstrap: str, source: str, target: str, group: str, batch_size: int) -> None:
    """What Faust itself costs: the worker's app settings, batches and output, and no engine."""
    import faust

    from detector.kafka.output import KafkaOutput
    from detector.stream.batches import take_batches
    from detector.stream.config import StreamConfig
    from detector.stream.lean import LeanApp, new_event_loop

    config = StreamConfig(
        brokers=bootstrap, group_id=group, batch_size=batch_size, session_timeout=10, heartbeat_interval=1
    )
    loop = new_event_loop()
    output = KafkaOutput(config.bootstrap, f"{group}-output")
    with tempfile.TemporaryDirectory(prefix="bench-faust-") as data_dir:
        app = LeanApp(group, autodiscover=False, **config.faust_settings(data_dir))
        topic = app.topic(
            source, key_type=bytes, value_type=bytes, key_serializer="raw", value_serializer="raw"
        )

        async def forward(stream: Any) -> None:
            async for events in take_batches(stream, config.batch_size, config.batch_wait):
                messages = [(event.message.key, event.message.value) for event in events]
                await asyncio.gather(*await output.send_many(target, messages))
                for event in events:
                    await stream.ack(event)

        app.agent(topic, name="bench.forward")(forward)
        worker = faust.Worker(app, loop=loop, quiet=True, override_logging=False, redirect_stdouts=False)
        worker.spinner = None
        with contextlib.suppress(SystemExit):
            worker.execute_from_commandline()


# ----------------------------------------------------------------------------- measuring


def topic_names(stem: str) -> dict[str, str]:
    tag = f"{stem}-{uuid.uuid4().hex[:8]}"
    return {
        kind: f"bench.{tag}.{kind.replace('_', '-')}"
        for kind in ("requests", "feedback", "decisions", "dead_letters", "feedback_retry")
    }


async def create(bootstrap: str, names: dict[str, str]) -> None:
    from detector.kafka.topics import ensure_topics

    await ensure_topics(bootstrap, list(names.values()), PARTITIONS, 1)


async def load(bootstrap: str, topic: str, workload: Workload, count: int) -> None:
    from aiokafka import AIOKafkaProducer

    producer = AIOKafkaProducer(
        bootstrap_servers=bootstrap, acks="all", linger_ms=20, max_batch_size=512 * 1024
    )
    await producer.start()
    try:
        acks = []
        for _ in range(count):
            _, key, value = workload.request()
            acks.append(await producer.send(topic, value, key=key))
        await asyncio.gather(*acks)
    finally:
        await producer.stop()


class Reader:
    """Reads an output topic from the start: when each request id first showed up, and its broker time."""

    def __init__(self, bootstrap: str, topic: str, on_first: Any = None) -> None:
        self.bootstrap = bootstrap
        self.topic = topic
        self.seen: dict[str, float] = {}
        self.stamps: list[float] = []
        self.on_first = on_first

    async def run(self, expected: int, deadline: float, check: Any) -> None:
        from aiokafka import AIOKafkaConsumer
        from aiokafka.structs import TopicPartition

        consumer = AIOKafkaConsumer(
            bootstrap_servers=self.bootstrap, enable_auto_commit=False, fetch_max_wait_ms=5
        )
        await consumer.start()
        try:
            tps = [TopicPartition(self.topic, p) for p in range(PARTITIONS)]
            consumer.assign(tps)
            await consumer.seek_to_beginning(*tps)
            while len(self.seen) < expected:
                if time.monotonic() > deadline:
                    raise RuntimeError(f"only {len(self.seen)} of {expected} outputs on {self.topic} in time")
                check()
                batches = await consumer.getmany(timeout_ms=20)
                now = time.time()
                if batches and not self.seen and self.on_first is not None:
                    self.on_first()
                for records in batches.values():
                    for record in records:
                        request_id = orjson.loads(record.value)["request_id"]
                        if request_id not in self.seen:
                            self.seen[request_id] = now
                            self.stamps.append(record.timestamp / 1000)
        finally:
            await consumer.stop()


async def throughput(bootstrap: str, count: int, start: Any, workdir: Path) -> tuple[float, float]:
    """(outputs per second, CPU µs per output) of a consumer started on `count` waiting requests.

    The rate is taken from the broker timestamps of the first and last output; the CPU time is the
    consumer process's own (all threads) over the same stretch, which other load on the machine does not
    inflate the way it does the rate."""
    names = topic_names("tput")
    await create(bootstrap, names)
    await load(bootstrap, names["requests"], Workload(), count)
    proc: Process = start(names)
    cpu: list[float] = []
    try:
        reader = Reader(bootstrap, names["decisions"], on_first=lambda: cpu.append(proc.cpu_seconds()))
        await reader.run(count, time.monotonic() + 600, proc.check)
        cpu.append(proc.cpu_seconds())
    finally:
        proc.stop()
    stamps = sorted(reader.stamps)
    return (len(stamps) - 1) / max(stamps[-1] - stamps[0], 1e-9), (cpu[-1] - cpu[0]) * 1e6 / count


async def latency(
    bootstrap: str, rate: float, seconds: float, warmup: float, start: Any, workdir: Path
) -> dict[str, float]:
    """Send → read latency (ms) at `rate` requests per second, once the consumer is ready."""
    from aiokafka import AIOKafkaProducer

    names = topic_names("lat")
    await create(bootstrap, names)
    proc: Process = start(names)
    workload = Workload(seed=11)
    sent: dict[str, float] = {}
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all", linger_ms=0)
    await producer.start()
    try:
        await probe(bootstrap, names, proc, producer, workload)  # then produce at a fixed rate, read as we go
        total = int(rate * (seconds + warmup))
        reader = Reader(bootstrap, names["decisions"])
        deadline = time.monotonic() + seconds + warmup + 120
        reading = asyncio.create_task(reader.run(total + 1, deadline, proc.check))
        began = time.monotonic()
        acks = []
        for index in range(total):
            due = began + index / rate
            ahead = due - time.monotonic()
            if ahead > 0.001:
                await asyncio.sleep(ahead)
            request_id, key, value = workload.request()
            sent[request_id] = time.time()
            acks.append(await producer.send(names["requests"], value, key=key))
        offered = total / (time.monotonic() - began)
        await asyncio.gather(*acks)
        await reading
    finally:
        await producer.stop()
        proc.stop()
    skip = int(rate * warmup)
    ids = list(sent)[skip:]
    waits = sorted((reader.seen[rid] - sent[rid]) * 1000 for rid in ids)

    def pct(p: float) -> float:
        return waits[min(len(waits) - 1, int(p / 100 * len(waits)))]

    return {
        "offered_per_s": offered,
        "p50_ms": pct(50),
        "p90_ms": pct(90),
        "p99_ms": pct(99),
        "max_ms": waits[-1],
        "measured": len(waits),
    }


async def probe(
    bootstrap: str, names: dict[str, str], proc: Process, producer: Any, workload: Workload
) -> None:
    """Until the consumer is ready: a probe request comes back."""
    _, key, value = workload.request()
    await producer.send_and_wait(names["requests"], value, key=key)
    await Reader(bootstrap, names["decisions"]).run(1, time.monotonic() + 120, proc.check)


async def idle_cpu(bootstrap: str, start: Any, seconds: float = 10.0) -> float:
    """CPU of a ready consumer on a topic nothing is written to, % of one core: what it costs to wait."""
    from aiokafka import AIOKafkaProducer

    names = topic_names("idle")
    await create(bootstrap, names)
    proc: Process = start(names)
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap)
    await producer.start()
    try:
        await probe(bootstrap, names, proc, producer, Workload(seed=5))
        await asyncio.sleep(2.0)  # the probe's batch settled
        before = proc.cpu_seconds()
        await asyncio.sleep(seconds)
        return (proc.cpu_seconds() - before) / seconds * 100
    finally:
        await producer.stop()
        proc.stop()


async def engine_alone(redis_url: str, count: int, batch_size: int) -> tuple[float, float]:
    """(requests per second, CPU µs per request of this process) through `Engine.process` on the Redis
    store, no Kafka: the engine's share of a worker's CPU (the Redis server's is not counted, as it is not
    in the worker's figure either)."""
    from detector.events import parse_event
    from detector.wiring import build_engine, tune_gc

    os.environ.setdefault("DETECTOR_HASH_KEY", f"bench-{uuid.uuid4().hex}")
    engine = build_engine(None, redis_url)
    tune_gc()  # as the worker runs
    workload = Workload(seed=3)
    events = [parse_event(workload.request()[2]) for _ in range(count)]
    try:
        await engine.process(events[:batch_size])  # connect, load the script
        started, cpu = time.perf_counter(), time.process_time()
        for index in range(batch_size, count, batch_size):
            await engine.process(events[index : index + batch_size])
        measured = count - batch_size
        return measured / (time.perf_counter() - started), (time.process_time() - cpu) * 1e6 / measured
    finally:
        await engine.store.close()


# ----------------------------------------------------------------------------- main


async def run(args: argparse.Namespace, bootstrap: str, redis_url: str, workdir: Path) -> dict[str, Any]:
    def worker(names: dict[str, str]) -> Process:
        return start_worker(
            bootstrap,
            redis_url,
            names,
            f"bench-worker-{uuid.uuid4().hex[:6]}",
            workdir,
            args.batch_size,
            args.batch_wait,
        )

    def passthrough(kind: str) -> Any:
        def start(names: dict[str, str]) -> Process:
            return start_passthrough(
                kind,
                bootstrap,
                names["requests"],
                names["decisions"],
                f"bench-{kind}-{uuid.uuid4().hex[:6]}",
                workdir,
                args.batch_size,
            )

        return start

    report: dict[str, Any] = {
        "cores": os.cpu_count(), "requests": args.requests, "batch_size": args.batch_size,
        "partitions": PARTITIONS, "repeat": args.repeat, "load_before": os.getloadavg()[0],
        "cpu_pressure_before": cpu_pressure(),
    }  # fmt: skip
    say("engine alone (Redis store, no Kafka) ...")
    report["engine_per_s"], report["engine_cpu_us_per_event"] = await engine_alone(
        redis_url, min(args.requests, 20_000), args.batch_size
    )
    consumers = (("aiokafka", passthrough("aiokafka")), ("faust", passthrough("faust")), ("worker", worker))
    for name, start in consumers:
        runs = []
        for attempt in range(1, args.repeat + 1):
            say(f"{name}: throughput on {args.requests:,} waiting requests ({attempt}/{args.repeat}) ...")
            runs.append(await throughput(bootstrap, args.requests, start, workdir))
        rates = sorted(rate for rate, _ in runs)
        report[f"{name}_per_s"] = statistics.median(rates)
        report[f"{name}_per_s_range"] = [rates[0], rates[-1]]
        report[f"{name}_cpu_us_per_event"] = statistics.median(cpu for _, cpu in runs)
        report[f"{name}_latency"] = {}
        say(f"{name}: CPU while idle ...")
        report[f"{name}_idle_cpu_pct"] = await idle_cpu(bootstrap, start)
        for rate in args.rates:
            say(f"{name}: latency at {rate:,.0f}/s for {args.seconds:.0f}s ...")
            report[f"{name}_latency"][rate] = await latency(
                bootstrap, rate, args.seconds, args.warmup, start, workdir
            )
    report["throughput_ratio"] = report["worker_per_s"] / report["aiokafka_per_s"]
    report["worker_overhead_cpu_us_per_event"] = (
        report["worker_cpu_us_per_event"] - report["engine_cpu_us_per_event"]
    )
    report["load_after"] = os.getloadavg()[0]
    report["cpu_pressure_after"] = cpu_pressure()
    return report


def cpu_pressure() -> float | None:
    """Linux PSI: the share of the last minute in which some runnable task waited for a CPU (0-100)."""
    try:
        line = Path("/proc/pressure/cpu").read_text().splitlines()[0]
    except (OSError, IndexError):
        return None
    return float(dict(part.split("=") for part in line.split()[1:])["avg60"])


def say(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


def print_report(report: dict[str, Any]) -> None:
    """Each figure of the worker next to its two ceilings, and the issue's targets as ratios of one run."""
    names = ("worker", "faust", "aiokafka")
    print(
        f"cores: {report['cores']}   load average before/after: {report['load_before']:.1f}/"
        f"{report['load_after']:.1f}   CPU pressure (PSI some avg60, %) before/after: "
        f"{report['cpu_pressure_before']}/{report['cpu_pressure_after']}"
    )
    print(
        f"topic partitions: {report['partitions']}   batch size: {report['batch_size']}   "
        f"throughput runs: {report['repeat']} (median)"
    )
    heads = ("worker", "faust only", "aiokafka")
    print(f"{'':34}" + "".join(f"{h:>12}" for h in heads) + f"{'worker/faust':>14}{'faust/aiokafka':>16}")

    def ratio(a: float, b: float) -> float:
        return a / b if b else float("nan")

    def row(label: str, values: list[float], fmt: str) -> None:
        ratios = f"{ratio(values[0], values[1]):>14.2f}{ratio(values[1], values[2]):>16.2f}"
        print(f"{label:34}" + "".join(f"{v:>12{fmt}}" for v in values) + ratios)

    row("throughput (events/s)", [report[f"{n}_per_s"] for n in names], ",.0f")
    ranges = [report[f"{n}_per_s_range"] for n in names]
    print(f"{'  range':34}" + "".join(f"{f'{lo / 1000:.1f}k-{hi / 1000:.1f}k':>12}" for lo, hi in ranges))
    row("CPU per event (µs)", [report[f"{n}_cpu_us_per_event"] for n in names], ",.0f")
    row("CPU while idle (% of a core)", [report[f"{n}_idle_cpu_pct"] for n in names], ",.1f")
    for rate in report["worker_latency"]:
        for key in ("p50_ms", "p99_ms", "max_ms"):
            values = [report[f"{n}_latency"][rate][key] for n in names]
            row(f"latency {key[:-3]} at {rate:,.0f}/s (ms)", values, ",.1f")
    engine_cpu, overhead = report["engine_cpu_us_per_event"], report["worker_overhead_cpu_us_per_event"]
    print(
        f"engine alone on Redis, no Kafka: {report['engine_per_s']:,.0f} requests/s, "
        f"{engine_cpu:,.0f} µs CPU per request (client side); "
        f"worker overhead (worker - engine CPU): {overhead:,.0f} µs/event = "
        f"{ratio(overhead, report['faust_cpu_us_per_event']):.2f} x the faust passthrough's"
    )
    cpu = ratio(report["worker_cpu_us_per_event"], report["faust_cpu_us_per_event"])
    rate = ratio(report["worker_per_s"], report["faust_per_s"])
    verdicts = [
        f"CPU/event <= 1.5 x faust: {cpu:.2f} {'met' if cpu <= 1.5 else 'NOT met'}",
        f"throughput >= 0.6 x faust: {rate:.2f} {'met' if rate >= 0.6 else 'NOT met'}",
    ]
    target = report["worker_latency"].get(2000.0)
    if target is not None:
        p99 = target["p99_ms"]
        verdicts.append(f"p99 <= 50 ms at 2,000/s: {p99:,.0f} ms {'met' if p99 <= 50 else 'NOT met'}")
    print("targets (issue 14): " + "; ".join(verdicts))


def _rates(text: str) -> list[float]:
    return [float(part) for part in text.split(",") if part.strip()]


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] in ("aiokafka-passthrough", "faust-passthrough"):
        parser = argparse.ArgumentParser(prog=f"python -m bench.pipeline {sys.argv[1]}")
        for flag in ("--bootstrap", "--source", "--target", "--group"):
            parser.add_argument(flag, required=True)
        parser.add_argument("--batch-size", type=int, default=500)
        opts = parser.parse_args(sys.argv[2:])
        if sys.argv[1] == "faust-passthrough":
            faust_passthrough(opts.bootstrap, opts.source, opts.target, opts.group, opts.batch_size)
        else:
            asyncio.run(passthrough(opts.bootstrap, opts.source, opts.target, opts.group, opts.batch_size))
        return
    parser = argparse.ArgumentParser(prog="python -m bench.pipeline", description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=50_000, help="requests for the throughput runs")
    parser.add_argument(
        "--rates",
        type=_rates,
        default=[2000.0, 1000.0, 500.0],
        help="offered loads of the latency runs, events/s, comma-separated",
    )
    parser.add_argument("--seconds", type=float, default=15.0, help="measured length of the latency runs")
    parser.add_argument("--warmup", type=float, default=2.0, help="seconds at the start left out of latency")
    parser.add_argument("--batch-size", type=int, default=500)
    parser.add_argument(
        "--batch-wait", type=float, help="the worker's --batch-wait (seconds; default: the worker's own)"
    )
    parser.add_argument("--repeat", type=int, default=3, help="throughput runs of each (the median counts)")
    parser.add_argument("--json", type=Path, help="also write the figures here")
    args = parser.parse_args()
    with services() as (bootstrap, redis_url), tempfile.TemporaryDirectory(prefix="bench-logs-") as logs:
        report = asyncio.run(run(args, bootstrap, redis_url, Path(logs)))
    print_report(report)
    if args.json:
        options = orjson.OPT_INDENT_2 | orjson.OPT_NON_STR_KEYS
        args.json.write_bytes(orjson.dumps(report, option=options))


if __name__ == "__main__":
    main()
