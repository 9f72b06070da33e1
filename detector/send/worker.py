"""The send worker's Kafka loop: a plain aiokafka consumer feeding rounds of `SendPipeline`.

Up to four rounds run at once (so one slow retry does not hold up the rest), sharing the rate limit and the
request slots; offsets are committed in the order the rounds were taken, so a commit never passes a
decision still in hand. Before partitions move to another worker (rebalance) the rounds in hand finish
and are committed. If outcomes cannot be published, the worker stops without committing that round and
exits EX_SOFTWARE (70): the round is delivered again, and the ledger keeps it from being sent twice.

Stopping
--------
SIGTERM stops taking records. Requests in flight finish; pending backoff and rate-limit waits are cut
short: a request that was already tried ends ``failed`` with its last error, one never tried was never
claimed and is left (offset not committed) for the next worker. What is recorded is published and
committed, then the worker leaves the group and exits 0. Feedback is reported at most once per request
(claimed in the ledger before the POST); a feedback post cut short by stopping is not retried.

The ledger and the 8x8 client are opened by factories (`open_ledger`, `open_client`), which is where the
crash tests put their os._exit points (:mod:`detector.testing.crashing_send_worker`).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import signal
import time
from collections import deque
from collections.abc import AsyncIterator, Callable, Iterable
from dataclasses import dataclass, replace
from typing import Any

from aiokafka import AIOKafkaConsumer, ConsumerRebalanceListener
from aiokafka.errors import CommitFailedError, IllegalStateError, KafkaError
from aiokafka.structs import TopicPartition

from detector.kafka.exit import EX_CONFIG, EX_SOFTWARE
from detector.kafka.health import HealthServer
from detector.kafka.output import KafkaOutput
from detector.kafka.topics import TopicError, ensure_topics
from detector.send.config import SendConfig
from detector.send.eightbyeight import Balance, EightByEightClient, EightByEightConfig, PermanentFailure
from detector.send.ledger import LedgerUnavailable, SendLedger
from detector.send.metrics import SendMetrics
from detector.send.pipeline import Positions, SendPipeline, new_owner_id
from detector.send.retry import NO_RETRIES

log = logging.getLogger(__name__)


def open_ledger(config: SendConfig) -> SendLedger:
    return SendLedger.from_url(config.ledger_url, prefix=config.ledger_prefix, ttl=config.ledger_ttl)


def open_client(vendor: EightByEightConfig) -> EightByEightClient:
    return EightByEightClient(vendor, retry=NO_RETRIES)  # the pipeline retries, sharing the rate limit


ROUNDS_IN_FLIGHT = 4  # rounds started before the oldest must finish: a slow retry does not stall the rest


@dataclass(slots=True)
class _Round:
    seq: int
    task: asyncio.Task[tuple[Positions, Positions]]


class SendWorker:
    """Consumes decisions (and feedback) with a plain aiokafka consumer and runs rounds of `SendPipeline`.

    Up to `ROUNDS_IN_FLIGHT` rounds run at once (sharing the rate limit and the request slots); their offsets
    are committed in the order the rounds were taken, each once its round is finished, so a commit never
    passes a decision that is still being worked on.
    """

    def __init__(
        self,
        config: SendConfig,
        vendor: EightByEightConfig,
        metrics: SendMetrics | None = None,
        *,
        owner: str | None = None,
        open_ledger: Callable[[SendConfig], SendLedger] = open_ledger,
        open_client: Callable[[EightByEightConfig], EightByEightClient] = open_client,
    ) -> None:
        self.config = config
        self.open_ledger = open_ledger
        self.open_client = open_client
        self.consuming = False
        self.credentials_checked = False
        self.ledger_answered_at = -math.inf
        self.vendor = replace(vendor, max_connections=max(vendor.max_connections, config.max_in_flight))
        self.metrics = metrics or SendMetrics()
        self.owner = owner or new_owner_id()
        self.stopping = asyncio.Event()
        self.assigned: set[tuple[str, int]] = set()
        self._rounds: deque[_Round] = deque()
        self._seq = 0
        self._stale: dict[
            tuple[str, int], int
        ] = {}  # partition -> rounds up to this seq were read before a seek
        self._retire_lock = asyncio.Lock()
        self._revoking = 0
        self._failure: BaseException | None = None
        self._consumer: AIOKafkaConsumer | None = None

    def __repr__(self) -> str:
        return (
            f"SendWorker(owner={self.owner!r}, group={self.config.group_id!r}, 8x8={self.vendor.base_url!r})"
        )

    def stop(self) -> None:
        if not self.stopping.is_set():
            log.info("stopping: finishing the requests in flight")
            self.stopping.set()

    async def run(self) -> int:
        """Until `stop()`: 0 after a clean stop, EX_SOFTWARE if outcomes could not be published, 1 if Kafka
        cannot be reached at start, EX_CONFIG if 8x8 refuses the API key at start."""
        config = self.config
        topics = config.topics
        wanted = [topics.decisions, topics.outcomes] + ([topics.feedback] if config.consume_feedback else [])
        try:
            await ensure_topics(config.bootstrap, wanted, config.partitions, config.replication)
        except (TopicError, OSError, KafkaError) as exc:
            log.error("cannot prepare the topics on %s: %s", config.brokers, exc)
            return 1
        async with contextlib.AsyncExitStack() as stack:
            ledger = self.open_ledger(config)
            stack.push_async_callback(ledger.close)
            stack.push_async_callback(self._retire_owner, ledger)
            client = self.open_client(self.vendor)
            stack.push_async_callback(client.aclose)
            if not await self._wait_for_ledger(ledger):
                return 0
            if not await self._check_credentials(client):
                return EX_CONFIG
            try:
                output = await stack.enter_async_context(
                    KafkaOutput(config.bootstrap, f"send-worker-{self.owner}")
                )
                consumer = await stack.enter_async_context(self._consumer_for(wanted[:1] + wanted[2:]))
            except (OSError, KafkaError) as exc:
                log.error("cannot reach Kafka on %s: %s", config.brokers, exc)
                return 1
            stack.push_async_callback(self._drain)
            heartbeat = asyncio.ensure_future(self._heartbeat(ledger))
            stack.callback(heartbeat.cancel)
            pipeline = SendPipeline(
                config, client, ledger, output, self.metrics, owner=self.owner, stopping=self.stopping
            )
            self._log_ready()
            await self._loop(consumer, pipeline)
        if self._failure is not None:
            log.critical("%s: exited without committing it; it is delivered again", self._failure)
            return EX_SOFTWARE
        log.info("send worker %s stopped", self.owner)
        return 0

    async def _loop(self, consumer: AIOKafkaConsumer, pipeline: SendPipeline) -> None:
        while not self.stopping.is_set():
            await self._retire(block=False)
            if self._revoking or len(self._rounds) >= ROUNDS_IN_FLIGHT:
                waiting = {r.task for r in self._rounds}
                if waiting:
                    await asyncio.wait(waiting, timeout=0.2, return_when=asyncio.FIRST_COMPLETED)
                else:
                    await asyncio.sleep(0.01)
                continue
            records = await self._poll(consumer)
            if records:
                self._seq += 1
                self._rounds.append(_Round(self._seq, asyncio.ensure_future(pipeline.handle(records))))
        await self._retire(block=True)

    @contextlib.asynccontextmanager
    async def _consumer_for(self, topics: list[str]) -> AsyncIterator[AIOKafkaConsumer]:
        config = self.config
        # The longest a round can take: its retries, a live claimant's wait, and two searches of 8x8's log
        # (one after an ambiguous failure, one for a dead claimant's requests).
        lookup = config.lookup_delay + config.lookup_patience if config.lookup else 0.0
        patience = config.retry_max_elapsed + config.claim_wait + 2 * lookup
        consumer = AIOKafkaConsumer(
            bootstrap_servers=config.bootstrap,
            group_id=config.group_id,
            client_id=f"send-worker-{self.owner}",
            enable_auto_commit=False,
            auto_offset_reset=config.offset_reset,
            session_timeout_ms=int(config.session_timeout * 1000),
            heartbeat_interval_ms=int(config.heartbeat_interval * 1000),
            rebalance_timeout_ms=int((patience + 30) * 1000),
            max_poll_interval_ms=int(max(300.0, patience + 60) * 1000),
        )
        self._consumer = consumer
        consumer.subscribe(topics, listener=_Rebalance(self))
        await consumer.start()
        self.consuming = True
        try:
            yield consumer
        finally:
            self.consuming = False
            with contextlib.suppress(Exception):
                await consumer.stop()

    async def _drain(self) -> None:
        """Only after a failure are rounds left: let them finish, commit nothing more."""
        if self._rounds:
            await asyncio.gather(*(r.task for r in self._rounds), return_exceptions=True)

    async def _retire_owner(self, ledger: SendLedger) -> None:
        """A clean stop drops the liveness key at once, so nobody waits for this worker's claims."""
        if self._failure is None:
            with contextlib.suppress(LedgerUnavailable):
                await ledger.retire(self.owner)

    def _log_ready(self) -> None:
        config, topics = self.config, self.config.topics
        log.info(
            "send worker %s ready: group %s, decisions %s, feedback %s, outcomes %s, 8x8 %s "
            "(sub-account %s), %.0f msg/s, batches of up to %d, %d in flight",
            self.owner,
            config.group_id,
            topics.decisions,
            topics.feedback if config.consume_feedback else "off",
            topics.outcomes,
            self.vendor.base_url,
            self.vendor.sub_account_id,
            config.rate,
            config.batch_size,
            config.max_in_flight,
        )

    def readiness(self) -> dict[str, bool]:
        """For /readyz: read on the health server's thread, so only flags and times."""
        return {
            "ledger reachable": time.monotonic() - self.ledger_answered_at < self.config.owner_ttl,
            "8x8 credentials checked (or the check skipped)": self.credentials_checked,
            "kafka consumer started": self.consuming,
        }

    async def _check_credentials(self, client: EightByEightClient) -> bool:
        """The cheapest authenticated call (the account balance) before taking any decision: False if 8x8
        refuses the key. Without EIGHTBYEIGHT_ACCOUNT_ID, or if 8x8 cannot answer now, the worker starts
        anyway (a wrong key then shows as failed / unauthorized outcomes)."""
        account = self.vendor.account_id
        if account is None:
            log.info("EIGHTBYEIGHT_ACCOUNT_ID is not set: the 8x8 API key is not checked at start")
        else:
            answer = await client.balance(account)
            if isinstance(answer, PermanentFailure) and answer.reason == "unauthorized":
                log.critical(
                    "8x8 refused the API key (HTTP %s) for account %s: set EIGHTBYEIGHT_API_KEY or "
                    "EIGHTBYEIGHT_API_KEY_FILE to a key of that account (and check EIGHTBYEIGHT_ACCOUNT_ID, "
                    "EIGHTBYEIGHT_REGION / EIGHTBYEIGHT_BASE_URL); not starting",
                    answer.status,
                    account,
                )
                return False
            if isinstance(answer, Balance) or (isinstance(answer, PermanentFailure) and answer.status == 403):
                log.info("8x8 accepted the API key (the balance call; 403 is a postpaid account)")
            else:
                log.warning("8x8 did not answer the key check (%s); starting anyway", answer.reason)
        self.credentials_checked = True
        return True

    async def _retire(self, *, block: bool) -> None:
        """Commit finished rounds, oldest first; with `block`, wait for every round. A round that failed
        stops the worker, and nothing after it is committed."""
        async with self._retire_lock:
            while self._rounds and self._failure is None:
                head = self._rounds[0]
                if not head.task.done():
                    if not block:
                        return
                    await asyncio.wait({head.task})
                self._rounds.popleft()
                try:
                    commit, rewind = head.task.result()
                except Exception as exc:
                    self._failure = exc
                    self.stop()
                    return
                commit = {tp: offset for tp, offset in commit.items() if self._stale.get(tp, 0) < head.seq}
                await self._commit(commit)
                if rewind and not self.stopping.is_set():
                    for (topic, partition), offset in rewind.items():
                        if self._stale.get((topic, partition), 0) < head.seq:
                            self._seek(topic, partition, offset)
                            # Rounds already taken read past this point: their offsets are not committed
                            # for this partition; they are read (and found in the ledger) again.
                            self._stale[(topic, partition)] = self._seq

    def _seek(self, topic: str, partition: int, offset: int) -> None:
        if self._consumer is not None:
            try:
                self._consumer.seek(_tp(topic, partition), offset)
            except (IllegalStateError, ValueError, AssertionError) as exc:
                log.info("not reading %s/%d again from %d here: %s", topic, partition, offset, exc)

    async def _poll(self, consumer: AIOKafkaConsumer) -> list[Any]:
        """Up to `round_size` records: whatever arrives within 200 ms, then more for up to `batch_wait`."""
        size = self.config.round_size
        records: list[Any] = []
        batches = await consumer.getmany(timeout_ms=200, max_records=size)
        for part in batches.values():
            records.extend(part)
        if not records:
            return records
        deadline = time.monotonic() + self.config.batch_wait
        while len(records) < size and not self.stopping.is_set():
            left = deadline - time.monotonic()
            if left <= 0:
                break
            more = await consumer.getmany(
                timeout_ms=max(1, math.ceil(left * 1000)), max_records=size - len(records)
            )
            for part in more.values():
                records.extend(part)
        return records

    async def _commit(self, positions: dict[tuple[str, int], int]) -> None:
        if not positions or self._consumer is None:
            return
        try:
            await self._consumer.commit(
                {_tp(topic, partition): offset for (topic, partition), offset in positions.items()}
            )
        except (CommitFailedError, IllegalStateError) as exc:
            log.warning(
                "offsets not committed (the group rebalanced; the ledger keeps redelivered decisions "
                "from being sent again): %s",
                exc,
            )
        except KafkaError as exc:
            log.warning("offset commit failed: %r", exc)

    async def _wait_for_ledger(self, ledger: SendLedger) -> bool:
        """Until the ledger answers (True), or the worker is stopped first (False)."""
        delay = 0.1
        while True:
            try:
                await ledger.heartbeat(self.owner, self.config.owner_ttl)
                self.ledger_answered_at = time.monotonic()
                return True
            except LedgerUnavailable as exc:
                log.warning("waiting for the send ledger: %s", exc)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.stopping.wait(), delay)
            if self.stopping.is_set():
                return False
            delay = min(delay * 2, 5.0)

    async def _heartbeat(self, ledger: SendLedger) -> None:
        every = self.config.owner_ttl / 4
        while True:
            await asyncio.sleep(every)
            try:
                await ledger.heartbeat(self.owner, self.config.owner_ttl)
                self.ledger_answered_at = time.monotonic()
            except LedgerUnavailable as exc:
                log.warning("liveness key not refreshed: %s", exc)

    async def revoked(self, partitions: Iterable[Any]) -> None:
        """Before partitions move to another worker: finish the rounds in hand and commit them."""
        self._revoking += 1
        try:
            await self._retire(block=True)
        finally:
            self._revoking -= 1
        for tp in partitions:
            self.assigned.discard((tp.topic, tp.partition))
        self._stale.clear()  # the positions are the committed ones again

    def assigned_partitions(self, partitions: Iterable[Any]) -> None:
        self.assigned |= {(tp.topic, tp.partition) for tp in partitions}
        log.info("assigned %s", ", ".join(sorted(f"{t}/{p}" for t, p in self.assigned)) or "nothing")


def _tp(topic: str, partition: int) -> TopicPartition:
    return TopicPartition(topic, partition)


class _Rebalance(ConsumerRebalanceListener):
    def __init__(self, worker: SendWorker) -> None:
        self.worker = worker

    async def on_partitions_revoked(self, revoked: Any) -> None:
        await self.worker.revoked(revoked)

    async def on_partitions_assigned(self, assigned: Any) -> None:
        self.worker.assigned_partitions(assigned)


def run_send_worker(
    config: SendConfig,
    vendor: EightByEightConfig,
    metrics: SendMetrics | None = None,
    *,
    open_ledger: Callable[[SendConfig], SendLedger] = open_ledger,
    open_client: Callable[[EightByEightConfig], EightByEightClient] = open_client,
) -> int:
    """Run until SIGTERM/SIGINT; the exit status."""
    if logging.getLogger().getEffectiveLevel() > logging.DEBUG:
        logging.getLogger("httpx").setLevel(logging.WARNING)  # a line per request: only when debugging
    worker = SendWorker(config, vendor, metrics, open_ledger=open_ledger, open_client=open_client)

    async def main() -> int:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, worker.stop)
        return await worker.run()

    registry = worker.metrics.registry
    with HealthServer(registry, config.metrics_port, config.metrics_host, worker.readiness):
        return asyncio.run(main())
