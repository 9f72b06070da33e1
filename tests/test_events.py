import json
import random
from datetime import UTC, datetime
from pathlib import Path

import jsonschema
import orjson
import pytest
from referencing import Registry, Resource

from detector.events import (
    BadEvent,
    OtpChallenge,
    OtpFeedback,
    OtpRequest,
    encode,
    format_timestamp,
    parse_event,
    parse_timestamp,
)
from tests.factories import decisions

SCHEMAS = Path(__file__).parent.parent / "schemas"
EXAMPLES = SCHEMAS / "examples"


def _validator(name: str) -> jsonschema.Draft202012Validator:
    resources = [
        (path.name, Resource.from_contents(json.loads(path.read_text())))
        for path in SCHEMAS.glob("*.schema.json")
    ]
    registry: Registry = Registry().with_resources(resources)
    return jsonschema.Draft202012Validator(json.loads((SCHEMAS / name).read_text()), registry=registry)


def _schema_for(event: dict) -> str:
    kind = event.get("type")
    return f"{kind}.schema.json" if kind in ("otp_feedback", "otp_challenge") else "otp_request.schema.json"


@pytest.mark.parametrize("path", sorted((EXAMPLES / "valid").glob("*.json")), ids=lambda p: p.name)
def test_valid_examples_pass_the_schema_and_the_parser(path: Path) -> None:
    event = json.loads(path.read_text())
    _validator(_schema_for(event)).validate(event)
    parsed = parse_event(path.read_bytes())
    assert isinstance(parsed, OtpRequest | OtpFeedback | OtpChallenge), parsed


@pytest.mark.parametrize("path", sorted((EXAMPLES / "invalid").glob("*.json")), ids=lambda p: p.name)
def test_invalid_examples_fail_the_schema_and_the_parser(path: Path) -> None:
    event = json.loads(path.read_text())
    assert not _validator(_schema_for(event)).is_valid(event)
    parsed = parse_event(path.read_bytes())
    assert isinstance(parsed, BadEvent)
    assert parsed.error


@pytest.mark.parametrize(
    ("event", "field"),
    [
        ({"type": "otp_request", "request_id": "a", "ts": 1, "client_ip": "1.2.3.4"}, "phone"),
        (
            {
                "type": "otp_request",
                "request_id": "a",
                "ts": "noon",
                "phone": "+447400123456",
                "client_ip": "1.2.3.4",
            },
            "ts",
        ),
        (
            {
                "type": "otp_request",
                "request_id": "a",
                "ts": 1,
                "phone": 447400123456,
                "client_ip": "1.2.3.4",
            },
            "phone",
        ),
        (
            {
                "type": "otp_request",
                "request_id": "a",
                "ts": 1,
                "phone": "+447400123456",
                "client_ip": "1.2.3.4",
                "signals": {"session_velocity": "extreme"},
            },
            "session_velocity",
        ),
        ({"type": "otp_feedback", "request_id": "a", "ts": 1, "outcome": "maybe"}, "outcome"),
        ({"type": "sms", "request_id": "a"}, "type"),
        ({"request_id": "a"}, "type"),
    ],
)
def test_errors_name_the_field(event: dict, field: str) -> None:
    parsed = parse_event(orjson.dumps(event))
    assert isinstance(parsed, BadEvent)
    assert field in parsed.error


def test_request_id_is_kept_for_invalid_requests_only() -> None:
    bad_request = parse_event(b'{"type": "otp_request", "request_id": "x1", "ts": "noon", "phone": "+1"}')
    bad_feedback = parse_event(
        b'{"type": "otp_feedback", "request_id": "x2", "ts": "noon", "outcome": "verified"}'
    )
    assert isinstance(bad_request, BadEvent) and bad_request.request_id == "x1"
    assert isinstance(bad_feedback, BadEvent) and bad_feedback.request_id is None


@pytest.mark.parametrize("raw", [b"not json", b"[1, 2]", b'"text"', b"{", b"\xff\xfe", b"null"])
def test_garbage_is_a_bad_event_not_a_crash(raw: bytes) -> None:
    assert isinstance(parse_event(raw), BadEvent)


def test_oversize_line_is_rejected_before_parsing() -> None:
    raw = orjson.dumps(
        {
            "type": "otp_request",
            "request_id": "big",
            "ts": 1,
            "phone": "+447400123456",
            "client_ip": "1.2.3.4",
            "user_agent": "x" * 70_000,
        }
    )
    parsed = parse_event(raw)
    assert isinstance(parsed, BadEvent) and "limit" in parsed.error


@pytest.mark.parametrize(
    ("text", "epoch"),
    [
        ("2026-11-23T08:00:00Z", 1_795_420_800.0),
        ("2026-11-23T09:00:00+01:00", 1_795_420_800.0),
        ("2026-11-23T08:00:00.500Z", 1_795_420_800.5),
        (1_795_420_800, 1_795_420_800.0),
    ],
)
def test_timestamps(text: str | int, epoch: float) -> None:
    assert parse_timestamp(text) == epoch


@pytest.mark.parametrize(
    "text",
    ["2026-11-23T08:00:00", "2026-11-23", "tomorrow", "2026-13-01T00:00:00Z", True, -1.0, 10**400, 4e10],
)
def test_timestamps_without_offset_or_invalid_are_refused(text: str | float) -> None:
    with pytest.raises(ValueError):
        parse_timestamp(text)


def test_challenge_decisions_and_their_ends_match_the_decision_schema() -> None:
    asked = {**json.loads((EXAMPLES / "valid" / "request-e164.json").read_text())}
    asked.update(signals={"anonymizer": True}, ip_country="NL")  # 20 + 20 points: a challenge
    validator = _validator("otp_decision.schema.json")
    [challenge] = decisions([asked])
    assert challenge.action == "challenge" and challenge.challenge_id
    result = json.loads((EXAMPLES / "valid" / "challenge-passed.json").read_text())
    result["challenge_id"] = challenge.challenge_id
    engine_decisions = decisions([asked, result], batch_size=1)
    assert [d.supersedes for d in engine_decisions] == [None, "challenge"]
    for decision in engine_decisions:
        validator.validate(orjson.loads(encode(decision)))


def test_decisions_match_the_decision_schema() -> None:
    events = [json.loads(p.read_text()) for p in sorted((EXAMPLES / "valid").glob("*.json"))]
    events = [event for event in events if event["type"] != "otp_challenge"]
    events.append(json.loads((EXAMPLES / "invalid" / "request-bad-ts.json").read_text()))
    produced = decisions(events)
    assert len(produced) == 3
    validator = _validator("otp_decision.schema.json")
    for decision in produced:
        validator.validate(orjson.loads(encode(decision)))


def test_the_schemas_state_the_parser_length_limits() -> None:
    from detector.events import FIELD_LIMITS

    schema = json.loads((SCHEMAS / "otp_request.schema.json").read_text())
    for field, limit in FIELD_LIMITS.items():
        node = schema
        for step in field.split("."):
            node = node["properties"][step]
        assert node["maxLength"] == limit, field
    feedback = json.loads((SCHEMAS / "otp_feedback.schema.json").read_text())
    assert feedback["properties"]["request_id"]["maxLength"] == FIELD_LIMITS["request_id"]


def test_timestamps_are_spelled_as_isoformat_would_across_second_boundaries() -> None:
    """The spelling never differs from datetime's: each second's is cached, and the millisecond is taken from
    the microsecond datetime would round to (half to even), also where that rounds up to the next second."""
    rng = random.Random(7)
    whole = [float(second) for second in range(1_795_420_800, 1_795_420_900)]
    near_next = [second + 0.9999996 for second in whole] + [second + 0.9995 for second in whole]
    halves = [second + (rng.randrange(10**6) + 0.5) / 1e6 for second in whole for _ in range(20)]
    milliseconds = [round(rng.uniform(1.7e9, 1.8e9), 3) for _ in range(5000)]
    spread = [rng.uniform(0, 4e9) for _ in range(5000)]
    for epoch in [*whole, *near_next, *halves, *milliseconds, *spread]:
        expected = (
            datetime.fromtimestamp(epoch, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
        )
        assert format_timestamp(epoch) == expected, epoch
