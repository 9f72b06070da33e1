"""`detector quarantine list | lift` on a real redis-server: what an Engine quarantined, an operator sees and
ends."""

from __future__ import annotations

import asyncio
import time
import uuid

import orjson
import pytest
from click.testing import CliRunner

from detector.cli import main
from detector.engine import Engine
from detector.hashing import KeyedHasher
from detector.scoring import counter_plan
from detector.state.redis import RedisStore
from tests.factories import policy
from tests.test_quarantine import BURST_IP, burst

HASH_KEY = "a-local-test-key-of-32-characters"


def _cli(*args: str) -> tuple[int, str]:
    result = CliRunner().invoke(main, ["quarantine", *args], env={"DETECTOR_HASH_KEY": HASH_KEY})
    return result.exit_code, result.output


def _listed(store: str) -> list[dict[str, object]]:
    code, output = _cli("list", "--store", store, "--json")
    assert code == 0, output
    listed = orjson.loads(output)
    assert isinstance(listed, list)
    return listed


async def _quarantine_a_burst(store: str) -> None:
    pol = policy(rules={"retry_delay": {"mode": "off"}})
    redis = RedisStore.from_url(store, counter_plan(pol), timeout=2.0)
    async with Engine(pol, redis, KeyedHasher(HASH_KEY.encode())) as engine:
        await burst(engine, time.time() - 250, 40)  # a burst that ended a moment ago: its quarantine is on


@pytest.mark.redis
def test_an_operator_lists_and_lifts_what_the_engine_quarantined(redis_url: str) -> None:
    store = f"{redis_url}?namespace=qcli{uuid.uuid4().hex[:8]}:"
    assert _listed(store) == []
    asyncio.run(_quarantine_a_burst(store))
    [client] = [q for q in _listed(store) if q["dimension"] == "ip"]
    assert client["label"] == BURST_IP.rsplit(".", 1)[0] + ".x" and client["offences"] == 1
    assert str(client["since"]) < str(client["until"])

    code, text = _cli("list", "--store", store)
    assert code == 0 and "198.51.100.x" in text and str(client["key"]) in text
    assert "+4474005" not in text  # numbers stay hidden: a prefix shows masked

    code, output = _cli("lift", "ip", str(client["key"]), "--store", store)
    assert code == 0, output
    assert all(q["key"] != client["key"] for q in _listed(store))
    code, output = _cli("lift", "ip", str(client["key"]), "--store", store)
    assert code == 1 and "no quarantine of ip" in output


def test_an_in_process_store_has_nothing_to_list() -> None:
    code, output = _cli("list", "--store", "memory://")
    assert code == 0 and "in-process store" in output and "shared store" in output
    code, output = _cli("lift", "ip", "abc", "--store", "memory://")
    assert code == 1 and "in-process store" in output


@pytest.mark.redis
def test_lifting_a_dimension_the_policy_does_not_quarantine_says_which_it_does(redis_url: str) -> None:
    code, output = _cli("lift", "msisdn", "abc", "--store", redis_url)
    assert code == 2 and "prefix, subnet" in output.replace("\n", " ")
