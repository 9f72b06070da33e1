"""The send pipeline without Kafka: records in, a recording output out, a real Redis ledger and the
contract-checked 8x8 double (every request it gets is held to 8x8's OpenAPI document).

The attacks of issue 9 on the send side: messages that would make 8x8 refuse a whole batch, and
ambiguous failures (timeouts, dropped connections, 5xx) that must not turn into a second SMS.
"""

from __future__ import annotations

import json
import uuid
from collections import Counter
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import orjson
import pytest

from detector.send import NO_RETRIES, ApiKey, EightByEightClient, EightByEightConfig
from detector.send.config import SendConfig
from detector.send.ledger import SendLedger
from detector.send.metrics import SendMetrics
from detector.send.pipeline import SendPipeline, _message_for
from detector.testing.eightbyeight_double import (
    BATCH,
    SEND,
    Drop,
    EightByEightDouble,
    ServerError,
    Slow,
)
from tests.test_send_worker import API_KEY, OUTCOME_SCHEMA, SUB_ACCOUNT, decision, sample, sent_ids
from tests.test_stream import RecordingOutput

pytestmark = [pytest.mark.redis]

SENDS = (SEND, BATCH)


@dataclass(frozen=True, slots=True)
class Record:
    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None


class Rig:
    """A pipeline over the double, a Redis ledger of its own and a recording output."""

    def __init__(self, double: EightByEightDouble, ledger: SendLedger, **changes: Any) -> None:
        settings: dict[str, Any] = {
            "rate": 10_000.0,
            "retry_base_delay": 0.01,
            "retry_max_delay": 0.05,
            "lookup_delay": 0.05,
            "lookup_poll": 0.02,
            "lookup_patience": 5.0,
            "ledger_prefix": ledger.prefix,
            "metrics_port": 0,
            **changes,
        }
        timeout = settings.pop("timeout", 5.0)
        self.config = SendConfig(**settings)
        self.double = double
        self.ledger = ledger
        self.output = RecordingOutput()
        self.metrics = SendMetrics()
        vendor = EightByEightConfig(SUB_ACCOUNT, ApiKey(API_KEY), base_url=double.base_url, timeout=timeout)
        self.client = EightByEightClient(vendor, retry=NO_RETRIES)
        self.pipeline = SendPipeline(self.config, self.client, ledger, self.output, self.metrics)
        self.offset = 0

    async def run(self, *events: dict[str, Any]) -> dict[str, dict[str, Any]]:
        """One round of these decisions; the outcome published for each request."""
        records = []
        for event in events:
            records.append(Record(self.config.topics.decisions, 0, self.offset, None, orjson.dumps(event)))
            self.offset += 1
        commit, rewind = await self.pipeline.handle(records)
        assert rewind == {} and commit == {(self.config.topics.decisions, 0): self.offset}
        return self.outcomes()

    def outcomes(self) -> dict[str, dict[str, Any]]:
        """Each request's outcome, every one held to schemas/otp_outcome.schema.json."""
        found = {}
        for _, key, value, _ in self.output.to(self.config.topics.outcomes):
            outcome = orjson.loads(value)
            OUTCOME_SCHEMA.validate(outcome)
            assert key == outcome["request_id"].encode()
            found[outcome["request_id"]] = outcome
        return found


def send_requests(double: EightByEightDouble) -> int:
    return sum(seen.operation in SENDS for seen in double.requests)


@pytest.fixture
async def double() -> AsyncIterator[EightByEightDouble]:
    async with EightByEightDouble(api_key=API_KEY) as running:
        yield running
        assert running.violations == [], "requests that break 8x8's contract"


@pytest.fixture
async def ledger(redis_url: str) -> AsyncIterator[SendLedger]:
    made = SendLedger.from_url(redis_url, prefix=f"test:{uuid.uuid4().hex[:8]}:", ttl=3600)
    yield made
    await made.close()


@pytest.fixture
async def rig(double: EightByEightDouble, ledger: SendLedger) -> AsyncIterator[Rig]:
    made = Rig(double, ledger)
    yield made
    await made.client.aclose()


# ----------------------------------------------------------------------------- one bad message, one batch

ATTACKS = {
    "fullwidth": {"phone": "+4474\uff10\uff10123456"},
    "newline": {"phone": "+447400123456\n"},
    "letters": {"phone": "+447400ABCDEF"},
    "long-id": {"request_id": "x" * 400},
    "long-source": {"message": {"text": "Your code is 123456", "source": "S" * 18}},
}


async def test_one_bad_message_fails_alone_and_the_rest_of_the_batch_goes_out(
    rig: Rig, double: EightByEightDouble
) -> None:
    tag = uuid.uuid4().hex[:6]
    good = [decision(f"{tag}-{i}", n=i) for i in range(100)]
    bad = [
        {**decision(f"{tag}-{name}", n=200 + i), **fields} for i, (name, fields) in enumerate(ATTACKS.items())
    ]

    long_id = bad[list(ATTACKS).index("long-id")]
    # The attack as it hit main: one such message in a batch, and 8x8 refuses all of it.
    messages = [_message_for(_decision(event))[0] for event in [*good[:99], long_id]]
    async with EightByEightClient(rig.client.config) as client:
        results = await client.send_batch([m for m in messages if m is not None])
    assert {type(r).__name__ for r in results} == {"PermanentFailure"} and double.sent == []
    double.violations.clear()

    outcomes = await rig.run(*good[:50], *bad, *good[50:])
    bad_ids = [e["request_id"] for e in bad]
    assert {outcomes[rid]["status"] for rid in bad_ids} == {"failed"}
    # A source over 16 characters breaks the decision contract itself (events.py bounds it as 8x8 does):
    # such a decision is not even read as one, so it fails as invalid_decision; the rest pass the contract
    # and fail 8x8's message rules.
    errors = {e["request_id"]: outcomes[e["request_id"]]["error"] for e in bad}
    assert errors == {
        e["request_id"]: "invalid_decision" if name == "long-source" else "invalid_message"
        for name, e in zip(ATTACKS, bad, strict=True)
    }
    assert "S" * 18 not in json.dumps(outcomes) and "ABCDEF" not in json.dumps(outcomes)
    assert {outcomes[e["request_id"]]["status"] for e in good} == {"sent"}
    assert sent_ids(double) == Counter({e["request_id"]: 1 for e in good})
    assert send_requests(double) == 2, "one batch of 100, sent once (and the refused one above)"


async def test_a_batch_8x8_refuses_for_another_reason_is_halved_until_the_culprit_is_alone(
    rig: Rig, double: EightByEightDouble
) -> None:
    tag = uuid.uuid4().hex[:6]
    events = [decision(f"{tag}-{i}", n=i) for i in range(16)]
    poison = events[11]["request_id"]
    double.add_rule(ServerError(400), when=lambda seen: poison in json.dumps(seen.body))
    outcomes = await rig.run(*events)
    assert (outcomes[poison]["status"], outcomes[poison]["error"]) == ("failed", "bad_request")
    assert sent_ids(double) == Counter({e["request_id"]: 1 for e in events if e["request_id"] != poison})
    assert send_requests(double) <= 2 * 4 + 1, "halving: about two requests per level"


# ----------------------------------------------------------------------------- ambiguous failures


@pytest.mark.parametrize(
    "fault",
    [Slow(1.0, after_accepting=True), Drop(after_accepting=True), ServerError(500)],
    ids=["timeout-after-queueing", "dropped-after-queueing", "500-not-queued"],
)
async def test_an_ambiguous_failure_is_looked_up_in_8x8s_log_never_resent_blindly(
    double: EightByEightDouble, ledger: SendLedger, fault: Any
) -> None:
    rig = Rig(double, ledger, timeout=0.3)
    try:
        tag = uuid.uuid4().hex[:6]
        events = [decision(f"{tag}-{i}", n=i) for i in range(10)]
        double.inject(fault, operations=SENDS)
        outcomes = await rig.run(*events)
    finally:
        await rig.client.aclose()
    ids = [e["request_id"] for e in events]
    assert sent_ids(double) == Counter({rid: 1 for rid in ids}), "each SMS once"
    assert {outcomes[rid]["status"] for rid in ids} == {"sent"}
    umids = {sms.client_message_id: sms.umid for sms in double.sent}
    assert {rid: outcomes[rid]["umid"] for rid in ids} == umids
    queued_first = not isinstance(fault, ServerError)
    assert send_requests(double) == (1 if queued_first else 2)
    assert len(double.exports) == 1
    result = "found" if queued_first else "absent"
    assert sample(rig.metrics, "detector_send_lookups_total", result=result) == 10
    if queued_first:
        assert "found in 8x8's message log" in outcomes[ids[0]]["message"]


async def test_without_an_answer_from_8x8s_log_the_request_is_in_doubt(
    double: EightByEightDouble, ledger: SendLedger
) -> None:
    """The log export fails too (8x8 down): the messages may have gone out, so they are not resent."""
    rig = Rig(double, ledger, timeout=0.3, retry_attempts=4)
    try:
        double.inject(Drop(after_accepting=True), operations=SENDS)
        double.add_rule(ServerError(500), when=lambda seen: seen.operation not in SENDS)
        outcomes = await rig.run(decision("doubt-a", n=1), decision("doubt-b", n=2))
    finally:
        await rig.client.aclose()
    assert {(o["status"], o["error"]) for o in outcomes.values()} == {("failed", "in_doubt")}
    assert sent_ids(double) == Counter({"doubt-a": 1, "doubt-b": 1})
    assert send_requests(double) == 1


async def test_with_the_lookup_off_an_ambiguous_failure_is_in_doubt(
    double: EightByEightDouble, ledger: SendLedger
) -> None:
    rig = Rig(double, ledger, lookup=False)
    try:
        double.inject(ServerError(502), operations=SENDS)
        outcomes = await rig.run(decision("off-1", n=1))
    finally:
        await rig.client.aclose()
    assert (outcomes["off-1"]["status"], outcomes["off-1"]["error"]) == ("failed", "in_doubt")
    assert double.sent == [] and double.exports == []


def _decision(event: dict[str, Any]) -> Any:
    import msgspec

    from detector.events import Decision

    return msgspec.json.decode(orjson.dumps(event), type=Decision)
