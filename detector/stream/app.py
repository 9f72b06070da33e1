"""The Kafka worker: a Faust app whose agents feed batches of events to the engine.

Agents (one instance each; throughput comes from batching, not concurrency):

* ``requests``: takes batches of up to `batch_size` messages from the requests topic, each closed at most
  `batch_wait` after its first message arrived (`detector.stream.batches`), runs them through
  `Engine.process` in one call (one store round trip per batch), and publishes one decision per request,
  keyed by `request_id`, to the decisions topic;
* ``feedback``: the same for the feedback topic, applying verification outcomes to the counters;
* ``feedback_retry``: a delay queue for feedback the store could not apply yet (see below).

Every input topic is read as raw bytes (Faust decodes nothing), so any message reaches `parse_event`: what is
not an event goes to the dead-letter topic as JSON ``{"error", "size", "digest", "fields", "request_id",
"topic", "partition", "offset", "timestamp"}`` (never the bytes, which may hold numbers and OTP texts: the
original is found by partition and offset, and matched by the digest keyed with the hash key); an invalid
request whose `request_id` can be read gets an ``invalid_request`` decision instead. Any event type is
accepted on any input topic.

Delivery is at least once. An agent acks a batch's events to Faust — which marks their offsets as
processed, to be committed by its commit timer — only after Kafka acknowledged every decision, dead letter
and retry of the batch; it processes the next batch meanwhile (one batch in flight). A request delivered
twice is recognised by the store (its request record) and gets the decision stored the first time, without
being counted again. If an output
cannot be published at all, the process exits at once with status 70, without committing, so the batch is
delivered again to whichever worker takes over.

Feedback and its request travel on different topics (and maybe to different workers), so feedback can
arrive before its request is decided: the store answers "unknown". Such feedback is published to the retry
topic with a due time `feedback_retry_delay` later and tried again then, up to `feedback_retries` times,
then dropped (``detector_feedback_dropped_total{reason="unknown"}``) — feedback for a request the detector
never recorded (decided while the store was down, or older than `record_ttl`) ends there. Feedback the store
did not answer at all ("unavailable") is never dropped: the feedback agent retries it in place with
exponential backoff (up to `unavailable_backoff_max` between tries) for `unavailable_patience` seconds,
holding its partitions, and then hands it to the retry topic, where it keeps being retried without a limit.
Requests never wait for feedback: unavailable feedback met by the requests agent goes to the retry topic.

Shutdown (SIGTERM/SIGINT, handled by mode's Worker): Faust stops fetching, waits until every message an agent
took is processed (a batch in hand finishes, a retry wait is cut short and its feedback re-queued), commits,
flushes the producer and leaves the group; the store is closed last.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, cast

import msgspec
import orjson
from aiokafka.errors import KafkaError

from detector.challenges.siteverify import SiteVerifier, SiteVerifyError
from detector.engine import Engine, Result
from detector.errors import UnavailableError
from detector.events import (
    BadEvent,
    ChallengeResult,
    Decision,
    Event,
    OtpChallenge,
    OtpFeedback,
    OtpRequest,
    describe_bad_input,
    encode,
    parse_event,
)
from detector.kafka.exit import exit_without_commit, leave_if_stuck
from detector.kafka.output import KafkaOutput, Output, acknowledged
from detector.kafka.topics import TopicNames
from detector.prices import load_prices
from detector.stream.batches import take_batches
from detector.stream.config import StreamConfig
from detector.stream.metrics import Metrics

log = logging.getLogger(__name__)
# A stop that takes longer is stuck (one takes about a second): the worker then leaves without committing,
# within the 60 s Kubernetes grants a pod to stop (the Helm chart's terminationGracePeriodSeconds).
STOP_DEADLINE = 45.0

Kind = Literal["requests", "feedback", "feedback_retry", "challenges"]  # challenges: the requests agent's

ATTEMPT_HEADER = "detector-attempt"
DUE_HEADER = "detector-due"
REASON_HEADER = "detector-reason"
ORIGIN_HEADER = "detector-origin"


@dataclass(slots=True)
class Incoming:
    """One consumed message, as the pipeline needs it (independent of Faust's types)."""

    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None
    timestamp: float | None = None  # seconds since the epoch (the producer's or the broker's time)
    headers: dict[str, bytes] = field(default_factory=dict)


class Pipeline:
    """What every agent does with a batch; knows the engine, the output topics and the metrics, not Faust."""

    def __init__(
        self,
        engine: Engine,
        output: Output,
        metrics: Metrics,
        config: StreamConfig,
        hurry: Callable[[], bool] = lambda: False,
        clock: Callable[[], float] = time.time,
        verifier: SiteVerifier | None = None,
    ) -> None:
        self.engine = engine
        self.verifier = verifier  # turns CAPTCHA tokens of otp_challenge events into results
        self.output = output
        self.metrics = metrics
        self.config = config
        self.topics: TopicNames = config.topics
        self.hurry = hurry  # true when the worker is stopping or rebalancing: cut waits short
        self.clock = clock
        self.store_answered = True  # the last batch's decisions came from the store (readiness)
        metrics.decided.prices = load_prices(engine.policy.spend.prices_file)

    async def handle(self, kind: Kind, batch: Sequence[Incoming]) -> None:
        """Process one batch; return once Kafka acknowledged everything it produced."""
        await (await self.submit(kind, batch))

    async def submit(self, kind: Kind, batch: Sequence[Incoming]) -> Awaitable[None]:
        """Process one batch and hand its output to the producer; what is returned completes once Kafka
        acknowledged all of it (raising `DeliveryFailed` if it did not), so the next batch can be processed
        meanwhile."""
        if not batch:
            return _done()
        started = time.perf_counter()
        metrics = self.metrics
        metrics.batch_size.labels(kind).observe(len(batch))
        if kind == "feedback_retry":
            await self._wait_until_due(batch)
        events = [self._parse(message) for message in batch]
        events, unverified = await self._verify_tokens(events)
        results = await self._process(events, [message.timestamp for message in batch])

        acks: list[Awaitable[Any]] = []
        decisions: list[tuple[bytes, bytes]] = []
        made: list[Decision] = []
        decided: list[Incoming] = []
        unavailable: list[tuple[Incoming, OtpFeedback]] = []
        seen: Counter[str] = Counter()
        statuses: Counter[str] = Counter()
        store_failed = False
        for message, event, result in zip(batch, events, results, strict=True):
            if isinstance(result, Decision):
                kind_of_event = "otp_challenge" if isinstance(event, OtpChallenge) else "otp_request"
                seen[kind_of_event if isinstance(event, OtpRequest | OtpChallenge) else "bad"] += 1
                decisions.append((result.request_id.encode(), encode(result)))
                made.append(result)
                decided.append(message)
                store_failed = store_failed or _store_unavailable(result)
            elif isinstance(result, BadEvent):
                seen["bad"] += 1
                acks.append(await self._dead_letter(message, result))
            elif isinstance(event, OtpChallenge):
                seen["otp_challenge"] += 1
                if isinstance(result, str):
                    metrics.challenges.labels(result).inc()
                if result == "unavailable" or id(event) in unverified:
                    acks.extend(await self._requeue([message], "unavailable"))
            else:
                seen["otp_feedback"] += 1
                statuses[result] += 1
                assert isinstance(event, OtpFeedback)
                if result == "unavailable":
                    unavailable.append((message, event))
                elif result == "unknown":
                    acks.extend(await self._requeue([message], "unknown"))
        acks.extend(await self.output.send_many(self.topics.decisions, decisions))
        for event_type, count in seen.items():
            metrics.events_in.labels(kind, event_type).inc(count)
        metrics.decided.observe(made)
        for status, count in statuses.items():
            metrics.feedback.labels(status).inc(count)
        if store_failed:
            metrics.store_errors.labels("decide").inc()
        if any(isinstance(result, Decision) for result in results):
            self.store_answered = not store_failed
        if unavailable:
            metrics.store_errors.labels("feedback").inc()
            acks.extend(await self._retry_unavailable(kind, unavailable))

        async def settled() -> None:
            await acknowledged(acks, f"the output of a {kind} batch")
            now = self.clock()
            for message in decided:
                if message.timestamp:
                    metrics.decision_delay.observe(max(0.0, now - message.timestamp))
            metrics.batch_seconds.labels(kind).observe(time.perf_counter() - started)

        return settled()

    # ------------------------------------------------------------------ steps

    async def _verify_tokens(self, events: list[Event | BadEvent]) -> tuple[list[Event | BadEvent], set[int]]:
        """Challenge results that hand over a CAPTCHA token get the provider's verdict as their `result`.
        Without a verifier the engine answers them "unverified"; when the provider gives no verdict, they
        are tried again later through the retry topic (the ids of those events are returned)."""
        tokens = [i for i, e in enumerate(events) if isinstance(e, OtpChallenge) and e.token is not None]
        if not tokens or self.verifier is None:
            return events, set()
        verifier = self.verifier

        async def verdict(event: OtpChallenge) -> ChallengeResult | None:
            try:
                return (await verifier.verify(event.token or "", event.remote_ip)).result
            except SiteVerifyError:
                return None

        verdicts = await asyncio.gather(*(verdict(cast(OtpChallenge, events[i])) for i in tokens))
        resolved = list(events)
        waiting: set[int] = set()
        for i, result in zip(tokens, verdicts, strict=True):
            challenge = cast(OtpChallenge, events[i])
            if result is None:
                waiting.add(id(challenge))  # the engine answers "unverified"; the retry topic tries again
                self.metrics.siteverify.labels("error").inc()
            else:
                resolved[i] = msgspec.structs.replace(challenge, result=result, token=None)
                self.metrics.siteverify.labels(result).inc()
        return resolved, waiting

    def _parse(self, message: Incoming) -> Event | BadEvent:
        if message.value is None:
            return BadEvent(error="empty message (no value)")
        return parse_event(message.value)

    async def _process(
        self, events: Sequence[Event | BadEvent], references: Sequence[float | None]
    ) -> list[Result]:
        """The engine's answers, each event's time bounded by its record's broker timestamp (`references`);
        should the engine fail on a batch, each event alone, so one cannot stop the rest."""
        try:
            return await self.engine.process(events, references)
        except Exception:
            log.exception("the engine failed on a batch of %d events; trying them one at a time", len(events))
        results: list[Result] = []
        for event, reference in zip(events, references, strict=True):
            try:
                results.extend(await self.engine.process([event], [reference]))
            except Exception as exc:
                log.exception("the engine failed on one event; writing it as a dead letter")
                results.append(BadEvent(error=f"internal error while processing: {exc!r}"[:500]))
        return results

    async def _dead_letter(self, message: Incoming, bad: BadEvent) -> Awaitable[Any]:
        self.metrics.dead_letters.labels(_kind_of(self.topics, message.topic)).inc()
        letter = describe_bad_input(bad, message.value or b"", self._digest)
        letter.update(topic=message.topic, partition=message.partition, offset=message.offset)
        letter["timestamp"] = message.timestamp
        return await self.output.send(self.topics.dead_letters, message.key, orjson.dumps(letter))

    def _digest(self, raw: bytes) -> str:
        return self.engine._hash.digest("dead_letter", raw, 16)

    async def _retry_unavailable(
        self, kind: Kind, waiting: list[tuple[Incoming, OtpFeedback]]
    ) -> list[Awaitable[Any]]:
        """Feedback the store did not answer: try again here with backoff, then hand it to the retry topic."""
        patience = 0.0 if kind == "requests" else self.config.unavailable_patience
        deadline = time.monotonic() + patience
        delay = 0.1
        acks: list[Awaitable[Any]] = []
        while waiting and time.monotonic() + delay <= deadline and not self.hurry():
            await self._nap(delay)
            if self.hurry():
                break
            delay = min(delay * 2, self.config.unavailable_backoff_max)
            results = await self._process(
                [event for _, event in waiting], [message.timestamp for message, _ in waiting]
            )
            for result in results:
                if isinstance(result, str):
                    self.metrics.feedback.labels(result).inc()
            unknown = [
                message for (message, _), result in zip(waiting, results, strict=True) if result == "unknown"
            ]
            acks.extend(await self._requeue(unknown, "unknown"))
            waiting = [pair for pair, result in zip(waiting, results, strict=True) if result == "unavailable"]
        return acks + await self._hand_on(waiting)

    async def _hand_on(self, waiting: list[tuple[Incoming, OtpFeedback]]) -> list[Awaitable[Any]]:
        if waiting:
            log.warning("store unavailable: %d feedback events go to the retry topic", len(waiting))
        return await self._requeue([message for message, _ in waiting], "unavailable")

    async def _requeue(self, messages: Iterable[Incoming], reason: str) -> list[Awaitable[Any]]:
        """Publish feedback to the retry topic, due `feedback_retry_delay`; drop it after its last try.

        Unknown feedback counts an attempt each time it comes back unknown from the retry topic (not when it
        was processed early because the worker was stopping); unavailable feedback never counts one.
        """
        acks = []
        now = self.clock()
        for message in messages:
            attempt = _int_header(message.headers, ATTEMPT_HEADER)
            early = _float_header(message.headers, DUE_HEADER) > now
            if reason == "unknown" and not early:
                attempt += 1
            if reason == "unknown" and attempt > self.config.feedback_retries:
                self.metrics.feedback_dropped.labels(reason).inc()
                log.info(
                    "dropping feedback for an unknown request after %d tries (%s/%d/%d)",
                    attempt - 1,
                    message.topic,
                    message.partition,
                    message.offset,
                )
                continue
            self.metrics.feedback_retries.labels(reason).inc()
            origin = (
                message.headers.get(ORIGIN_HEADER)
                or f"{message.topic}/{message.partition}/{message.offset}".encode()
            )
            headers = [
                (ATTEMPT_HEADER, str(attempt).encode()),
                (DUE_HEADER, repr(now + self.config.feedback_retry_delay).encode()),
                (REASON_HEADER, reason.encode()),
                (ORIGIN_HEADER, origin),
            ]
            acks.append(
                await self.output.send(self.topics.feedback_retry, message.key, message.value or b"", headers)
            )
        return acks

    async def _wait_until_due(self, batch: Sequence[Incoming]) -> None:
        due = max(_float_header(message.headers, DUE_HEADER) for message in batch)
        wait = min(due - self.clock(), self.config.feedback_retry_delay)
        if wait > 0:
            await self._nap(wait)

    async def _nap(self, seconds: float) -> None:
        """Sleep, but wake up within 50 ms once the worker stops or rebalances."""
        deadline = time.monotonic() + seconds
        while not self.hurry():
            left = deadline - time.monotonic()
            if left <= 0:
                return
            await asyncio.sleep(min(left, 0.05))


async def _done() -> None:
    pass


def _store_unavailable(decision: Decision) -> bool:
    """The shared store did not answer for this decision: decided by the policy's fail mode, or counted in
    this process meanwhile (degraded)."""
    return any(reason.code in ("state_unavailable", "state_degraded") for reason in decision.reasons)


def _kind_of(topics: TopicNames, topic: str) -> str:
    if topic == topics.requests:
        return "requests"
    if topic == topics.feedback:
        return "feedback"
    if topic == topics.challenges:
        return "challenges"
    if topic == topics.feedback_retry:
        return "feedback_retry"
    return "other"


def _int_header(headers: dict[str, bytes], name: str) -> int:
    try:
        return int(headers.get(name, b"0"))
    except ValueError:
        return 0


def _float_header(headers: dict[str, bytes], name: str) -> float:
    try:
        return float(headers.get(name, b"0"))
    except ValueError:
        return 0.0


# ---------------------------------------------------------------------- Faust


def incoming(message: Any) -> Incoming:
    """An `Incoming` from a Faust `Message`."""
    raw_headers = message.headers or ()
    pairs = raw_headers.items() if isinstance(raw_headers, dict) else raw_headers
    headers = {str(name): bytes(value or b"") for name, value in pairs}
    return Incoming(
        message.topic,
        message.partition,
        message.offset,
        message.key,
        message.value,
        message.timestamp,
        headers,
    )


def build_app(
    config: StreamConfig,
    engine: Engine,
    metrics: Metrics,
    data_dir: str,
    verifier: SiteVerifier | None = None,
) -> Any:
    """The Faust app with its agents; `app.pipeline` is the shared `Pipeline`."""
    from mode import CrashingSupervisor

    from detector.stream.lean import LeanApp

    output = KafkaOutput(config.bootstrap, f"{config.group_id}-output", config.producer_timeout)

    class DetectorApp(LeanApp):
        pipeline: Pipeline

        stop_deadline: threading.Timer | None = None

        async def on_stop(self) -> None:
            self.stop_deadline = leave_if_stuck(STOP_DEADLINE, "the worker")
            await super().on_stop()

        async def on_shutdown(self) -> None:
            """After the agents, the consumer and Faust's producer have stopped: our producer, the store."""
            await super().on_shutdown()
            closing = [("producer", output.stop), ("store", engine.store.close)]
            if verifier is not None:
                closing.append(("CAPTCHA verifier", verifier.close))
            for what, close in closing:
                try:
                    await close()
                except Exception:
                    log.exception("closing the %s failed", what)
            if self.stop_deadline is not None:
                self.stop_deadline.cancel()  # stopped in time

    app = DetectorApp(config.group_id, autodiscover=False, **config.faust_settings(data_dir))
    pipeline = Pipeline(
        engine,
        output,
        metrics,
        config,
        hurry=lambda: bool(app.should_stop or app.rebalancing),
        verifier=verifier,
    )
    app.pipeline = pipeline
    topics = config.topics

    def add_agent(kind: Kind, topic_names: list[str]) -> None:
        topic = app.topic(
            *topic_names,
            key_type=bytes,
            value_type=bytes,
            key_serializer="raw",
            value_serializer="raw",
            allow_empty=True,
        )

        async def consume(stream: Any) -> None:
            # One batch's output is acknowledged while the next is processed; its events are acked (so
            # that Faust may commit them) only then. Faust commits an offset only when every message
            # below it is acked, whatever order the acks come in.
            async def settle(output: Awaitable[None], events: Sequence[Any]) -> None:
                try:
                    await output
                except Exception as exc:
                    _die(kind, exc)
                for event in events:
                    await stream.ack(event)

            in_flight: asyncio.Future[None] | None = None
            try:
                async for events in take_batches(stream, config.batch_size, config.batch_wait):
                    try:
                        output = await pipeline.submit(kind, [incoming(event.message) for event in events])
                    except Exception as exc:
                        _die(kind, exc)
                    if in_flight is not None:
                        await in_flight
                    in_flight = asyncio.ensure_future(settle(output, events))
            finally:
                if in_flight is not None:
                    await in_flight

        consume.__name__ = consume.__qualname__ = kind
        app.agent(topic, name=f"detector.{kind}", concurrency=1, supervisor_strategy=CrashingSupervisor)(
            consume
        )

    # Challenge results are decided like requests (each may end in a decision): one agent reads both.
    add_agent("requests", list(dict.fromkeys([topics.requests, topics.challenges])))
    if topics.feedback not in (topics.requests, topics.challenges):
        add_agent("feedback", [topics.feedback])
    add_agent("feedback_retry", [topics.feedback_retry])
    return app


async def _wait_for_store(engine: Engine, url: str) -> bool:
    """Until the store first answers (True), saying what to fix while it does not; False on SIGTERM/SIGINT.

    The worker takes no partition before then: a store URL that points nowhere must not become a worker
    that decides everything with its fail mode."""
    from detector.wiring import redact

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    delay = 0.5
    try:
        while not stop.is_set():
            try:
                await engine.store.ping()
                return True
            except UnavailableError as exc:
                log.error(
                    "the store %s does not answer (%s): start it, or point --store / DETECTOR_STORE at one "
                    "that does; trying again in %.0f s",
                    redact(url), exc, delay,
                )  # fmt: skip
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), delay)
            delay = min(delay * 2, 10.0)
        return False
    finally:
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.remove_signal_handler(sig)


def _die(kind: str, exc: BaseException) -> None:
    """Exit without letting Faust commit the batch in hand: it is delivered again after a restart."""
    exit_without_commit(f"cannot finish a {kind} batch, exiting without committing it: {exc!r}", exc=exc)


def run_worker(
    config: StreamConfig,
    make_engine: Callable[[], Engine],
    metrics: Metrics | None = None,
    verifier: SiteVerifier | None = None,
) -> int:
    """Create missing topics, then run the Faust worker until a signal stops it; the exit status."""
    import faust

    from detector.kafka.health import HealthServer
    from detector.kafka.topics import TopicError, ensure_topics
    from detector.stream.lean import new_event_loop
    from detector.wiring import tune_gc

    loop = new_event_loop()
    names = config.topics.all()
    try:
        counts = loop.run_until_complete(
            ensure_topics(config.bootstrap, names, config.partitions, config.replication)
        )
    except (TopicError, OSError, KafkaError) as exc:
        log.error("cannot prepare the topics on %s: %s", config.brokers, exc)
        loop.close()
        return 1
    log.info("topics: %s", ", ".join(f"{name} ({counts[name]} partitions)" for name in names))
    if counts[config.topics.requests] != counts[config.topics.feedback]:
        log.warning(
            "the requests and feedback topics have different partition counts (%d, %d)",
            counts[config.topics.requests],
            counts[config.topics.feedback],
        )
    metrics = metrics or Metrics()
    engine = make_engine()
    if not loop.run_until_complete(_wait_for_store(engine, config.store_url)):
        loop.run_until_complete(engine.store.close())
        loop.close()
        return 0
    with contextlib.ExitStack() as stack:
        # Faust wants a data directory even without tables: a temporary one unless configured.
        data_dir = config.data_dir or stack.enter_context(tempfile.TemporaryDirectory(prefix="detector-"))
        app = build_app(config, engine, metrics, data_dir, verifier)

        degrade = engine.policy.state.on_error == "degrade"

        def ready() -> dict[str, bool]:
            checks = {
                "policy loaded": engine.policy is not None,
                "kafka consumer started": _consumer_running(app),
            }
            # Degraded, the worker still decides (with limits per process): taking it out would be worse.
            if not degrade:
                checks["store answered the last batch"] = app.pipeline.store_answered
            return checks

        stack.enter_context(HealthServer(metrics.registry, config.metrics_port, config.metrics_host, ready))
        log.info(
            "worker %s: group %s, store %s, mode %s, batches of up to %d within %g ms",
            os.getpid(),
            config.group_id,
            _redact(config.store_url),
            engine.policy.mode,
            config.batch_size,
            config.batch_wait * 1000,
        )
        worker = faust.Worker(app, loop=loop, quiet=True, override_logging=False, redirect_stdouts=False)
        tune_gc()  # as replay and serve do: the engine's long-lived objects, walked less often
        worker.spinner = None  # a terminal spinner, and its escape codes in log files: no
        try:
            worker.execute_from_commandline()
        except SystemExit as exc:
            code = exc.code
            return code if isinstance(code, int) else (0 if code is None else 1)
        except Exception:
            log.exception("the worker crashed")
            return 1
    return 0


def _consumer_running(app: Any) -> bool:
    """Faust's consumer joined the group (a rebalance went through) and is not rebalancing now; only reads
    attributes, as the health thread must."""
    return bool(app.rebalancing_count) and not app.rebalancing


def _redact(url: str) -> str:
    """A store URL without its password."""
    from urllib.parse import urlsplit, urlunsplit

    parts = urlsplit(url)
    if parts.password:
        netloc = parts.netloc.replace(f":{parts.password}@", ":****@")
        return urlunsplit(parts._replace(netloc=netloc))
    return url
