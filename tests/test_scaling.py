"""Horizontal scaling on a real broker and Redis: two `detector worker` processes in one consumer group."""

from __future__ import annotations

import asyncio
import uuid
from pathlib import Path

import pytest

from detector.kafka.topics import TopicNames, ensure_topics, partition_key
from tests.test_stream import (
    QUIET_POLICY,
    Message,
    TopicReader,
    WorkerProcess,
    as_json,
    decisions_by_id,
    eventually,
    have_ids,
    produce,
    produce_steadily,
    request_event,
    unique_topics,
    wait_group,
    wait_no_lag,
    worker_env,
)

pytestmark = [pytest.mark.kafka, pytest.mark.redis]

PARTITIONS = 8
BACKEND_SECRET = b"the backend's own partition-key secret"


async def start_pair(
    bootstrap: str, redis_url: str, policy_file: Path, workdir: Path, stem: str
) -> tuple[TopicNames, str, list[WorkerProcess]]:
    topics = unique_topics(stem)
    await ensure_topics(bootstrap, topics.all(), PARTITIONS, 1)
    group = f"{stem}-{uuid.uuid4().hex[:8]}"
    env = worker_env(
        bootstrap,
        redis_url,
        topics,
        group,
        DETECTOR_POLICY=str(policy_file),
        DETECTOR_TOPIC_PARTITIONS=str(PARTITIONS),
    )
    workers = [WorkerProcess(name, workdir, env) for name in ("a", "b")]
    await wait_group(bootstrap, group, 2, 60, alive=lambda: all_running(workers))
    return topics, group, workers


@pytest.fixture(scope="module")
def policy_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("policy") / "quiet.yaml"
    path.write_text(QUIET_POLICY)
    return path


def all_running(workers: list[WorkerProcess]) -> None:
    for worker in workers:
        worker.assert_running()


def number_key(phone: str) -> bytes:
    return partition_key(phone, BACKEND_SECRET)


async def test_two_workers_decide_every_request_once_and_share_the_number_limit(
    kafka_bootstrap: str, redis_url: str, policy_file: Path, tmp_path: Path
) -> None:
    topics, group, workers = await start_pair(kafka_bootstrap, redis_url, policy_file, tmp_path, "scale")
    try:
        tag = uuid.uuid4().hex[:6]
        hot = f"+4474008{int(tag, 16) % 100_000:05d}"
        spread = [request_event(f"{tag}-n{i}", f"+4474006{i:05d}") for i in range(600)]
        # 30 requests to one number within seconds, keyed so they spread over every partition (both workers):
        # only the shared counter in Redis can hold the limit of 10 per 30 minutes.
        burst = [request_event(f"{tag}-hot{i}", hot) for i in range(30)]
        messages: list[Message] = [(number_key(e["phone"]), as_json(e)) for e in spread]
        for i, event in enumerate(burst):
            messages.insert(i * 20, (event["request_id"].encode(), as_json(event)))
        await produce(kafka_bootstrap, topics.requests, messages)

        ids = {e["request_id"] for e in spread + burst}
        async with TopicReader(kafka_bootstrap, topics.decisions) as reader:
            await reader.wait_for(
                have_ids(ids), 90, "a decision for every request", alive=lambda: all_running(workers)
            )
            await wait_no_lag(kafka_bootstrap, group, topics.requests, 30)
            found = decisions_by_id(await reader.drain())

        assert set(found) == ids, f"missing: {sorted(ids - set(found))[:5]}"
        assert {rid: len(copies) for rid, copies in found.items()} == dict.fromkeys(ids, 1)
        hot_actions = [found[e["request_id"]][0]["action"] for e in burst]
        assert hot_actions.count("allow") == 10, hot_actions
        assert all(
            found[e["request_id"]][0]["reasons"][0]["code"] == "msisdn_rate_limit"
            for e in burst
            if found[e["request_id"]][0]["action"] == "block"
        )
        assert all(found[e["request_id"]][0]["action"] == "allow" for e in spread)
        for worker in workers:
            assert worker.metric("detector_decisions_total") > 0, f"{worker.name} decided nothing"
            assert worker.metric("detector_store_errors_total") == 0, worker.tail()
        assert sum(w.metric("detector_decisions_total") for w in workers) == len(ids)
    finally:
        for worker in workers:
            worker.close()


async def test_the_survivor_takes_over_when_a_worker_is_killed(
    kafka_bootstrap: str, redis_url: str, policy_file: Path, tmp_path: Path
) -> None:
    topics, group, workers = await start_pair(kafka_bootstrap, redis_url, policy_file, tmp_path, "kill")
    survivor, victim = workers
    try:
        tag = uuid.uuid4().hex[:6]
        events = [request_event(f"{tag}-{i}", f"+4474005{i:05d}") for i in range(4000)]
        messages: list[Message] = [(number_key(e["phone"]), as_json(e)) for e in events]
        producing = asyncio.create_task(produce_steadily(kafka_bootstrap, topics.requests, messages, 800))
        ids = {e["request_id"] for e in events}
        async with TopicReader(kafka_bootstrap, topics.decisions) as reader:
            await eventually(
                lambda: min(w.metric("detector_decisions_total") for w in workers) >= 200,
                60,
                "both workers deciding",
                alive=survivor.assert_running,
            )
            victim.kill()  # SIGKILL mid-stream: no commit, no LeaveGroup; the broker notices after 6 s
            await producing
            await reader.wait_for(
                have_ids(ids), 120, "a decision for every request", alive=survivor.assert_running
            )
            await wait_no_lag(kafka_bootstrap, group, topics.requests, 60, alive=survivor.assert_running)
            found = decisions_by_id(await reader.drain())

        assert set(found) == ids
        # At least once: a request the victim decided but did not commit is decided again, identically.
        assert all(all(d == copies[0] for d in copies) for copies in found.values())
        assert survivor.metric("detector_store_errors_total") == 0, survivor.tail()
        assert survivor.metric("detector_decisions_total") > len(ids) / 2, "the survivor took the partitions"
    finally:
        for worker in workers:
            worker.close()
