"""Shared fixtures: real Kafka and Redis servers, started only when a test asks for them.

``kafka_bootstrap`` / ``redis_url`` use the servers named by the ``KAFKA_BOOTSTRAP`` /
``REDIS_URL`` environment variables when set (e.g. after ``make services``); otherwise one
broker and one redis-server are started for the whole session and stopped at its end.
"""

from __future__ import annotations

import os
import re
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from detector.testing.services import KafkaBroker, RedisServer, create_topic

if TYPE_CHECKING:
    from detector.engine import Engine
    from detector.policy import Policy

TopicFactory = Callable[..., Awaitable[str]]


@pytest.fixture(scope="session")
def kafka_bootstrap(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """``"127.0.0.1:PORT"`` of a running Kafka broker (KRaft, 4 partitions per auto-created topic)."""
    external = os.environ.get("KAFKA_BOOTSTRAP")
    if external:
        yield external
        return
    with KafkaBroker(tmp_path_factory.mktemp("kafka")) as broker:
        yield broker.bootstrap


@pytest.fixture(scope="session")
def redis_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """``"redis://127.0.0.1:PORT/0"`` of a redis-server shared by the session. Do not stop it."""
    external = os.environ.get("REDIS_URL")
    if external:
        yield external
        return
    with RedisServer(tmp_path_factory.mktemp("redis")) as server:
        yield server.url


@pytest.fixture
def redis_server(tmp_path: Path) -> Iterator[RedisServer]:
    """A redis-server of this test's own, already answering; the test may ``stop()`` and ``start()`` it.

    It always comes back on the same port, so clients configured with ``redis_server.url``
    see an outage and a recovery. Stopped after the test, whatever state it was left in.
    """
    with RedisServer(tmp_path / "redis") as server:
        yield server


@pytest.fixture
def kafka_topic_factory(kafka_bootstrap: str, request: pytest.FixtureRequest) -> TopicFactory:
    """``await kafka_topic_factory(partitions=4, prefix="test") -> str``: a new, uniquely named topic.

    Returns once every partition has a leader, so producing to it right away works.
    """
    stem = re.sub(r"[^A-Za-z0-9._-]+", "-", request.node.name)[:40]  # Kafka's legal topic characters

    async def make(partitions: int = 4, prefix: str = "") -> str:
        name = f"{prefix or stem}-{uuid.uuid4().hex[:10]}"
        await create_topic(kafka_bootstrap, name, partitions=partitions)
        return name

    return make


@pytest.fixture
async def kafka_topic(kafka_topic_factory: TopicFactory) -> str:
    """Name of a new topic with 4 partitions, unique to this test."""
    return await kafka_topic_factory(partitions=4)


EngineFactory = Callable[..., "Engine"]


@pytest.fixture(params=["memory", "redis"])
async def make_engine(request: pytest.FixtureRequest) -> AsyncIterator[EngineFactory]:
    """`make_engine(policy=None) -> Engine`, once on the memory store and once on the session's Redis (a
    namespace of its own per engine): a test written with it proves both stores answer alike. The default
    policy is the shipped one without the retry delay."""
    from detector.engine import Engine
    from detector.hashing import KeyedHasher
    from detector.scoring import counter_plan
    from detector.state.memory import MemoryStore
    from detector.state.redis import RedisStore
    from tests.factories import policy as make_policy

    engines: list[Engine] = []

    def make(pol: Policy | None = None) -> Engine:
        pol = pol or make_policy(rules={"retry_delay": {"mode": "off"}})
        plan = counter_plan(pol)
        store: MemoryStore | RedisStore
        if request.param == "memory":
            store = MemoryStore(plan)
        else:
            url = request.getfixturevalue("redis_url")
            store = RedisStore.from_url(url, plan, namespace=f"e{uuid.uuid4().hex[:8]}:", timeout=2.0)
        engine = Engine(pol, store, KeyedHasher(b"both-stores-tests-key-5d1e8a"))
        engines.append(engine)
        return engine

    yield make
    for engine in engines:
        await engine.store.close()
