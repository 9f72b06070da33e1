"""The input side of issue 9, as an attacker would try it: each test reproduces one attack on the contract,
the logs, the number, the client address, the memos or the hash key."""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest
from click.testing import CliRunner
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from detector.engine import Engine
from detector.events import (
    FIELD_LIMITS,
    MAX_EVENT_BYTES,
    BadEvent,
    Decision,
    Message,
    OtpFeedback,
    OtpRequest,
    parse_event,
)
from detector.hashing import HASH_KEY_ENV, MissingHashKey, load_hash_key
from detector.logs import configure
from detector.memo import Memo
from detector.signals.phone import PhoneParser
from tests.factories import T0, codes, decisions, engine, quiet_policy, request

PHONE = "+447400123456"
OTP = "Your code is 482913"

# ----------------------------------------------------------------------------- parsing never raises


def _nested(depth: int, opener: bytes = b"[", closer: bytes = b"]", *, close: bool = True) -> bytes:
    return opener * depth + (closer * depth if close else b"")


def _request_with(extra: bytes, request_id: str = "deep-1") -> bytes:
    head = orjson.dumps(
        {
            "type": "otp_request",
            "request_id": request_id,
            "ts": T0,
            "phone": PHONE,
            "client_ip": "203.0.113.5",
        }
    )
    return head[:-1] + b',"x":' + extra + b"}"


@pytest.mark.parametrize("depth", [1_000, 5_000, 20_000])
@pytest.mark.parametrize("shape", ["list", "object", "unterminated"])
def test_deep_nesting_is_a_bad_event_not_a_recursion_error(depth: int, shape: str) -> None:
    inner = {
        "list": _nested(depth),
        "object": b'{"a":' * depth + b"1" + b"}" * depth,
        "unterminated": _nested(depth, close=False),
    }[shape]
    alone = parse_event(b'{"x":' + inner + b"}")
    assert isinstance(alone, BadEvent) and alone.request_id is None
    inside_a_request = parse_event(_request_with(inner))
    assert isinstance(inside_a_request, BadEvent)
    if len(_request_with(inner)) <= MAX_EVENT_BYTES and shape != "unterminated":
        assert "deep" in inside_a_request.error
    assert inside_a_request.request_id == "deep-1", "a readable request id earns an invalid_request decision"


def test_deep_nesting_inside_a_request_gets_an_invalid_request_decision() -> None:
    eng = engine()
    (decision,) = asyncio.run(eng.process([parse_event(_request_with(_nested(1_000)))]))
    assert isinstance(decision, Decision) and decision.request_id == "deep-1"
    assert decision.action == "block" and codes(decision) == {"invalid_request"}


def test_an_oversize_request_whose_id_can_be_read_gets_an_invalid_request_decision() -> None:
    raw = orjson.dumps(request(request_id="big-1", user_agent="x" * 70_000))
    parsed = parse_event(raw)
    assert isinstance(parsed, BadEvent) and parsed.request_id == "big-1"
    assert "byte limit" in parsed.error
    (decision,) = asyncio.run(engine().process([parsed]))
    assert isinstance(decision, Decision) and decision.reasons[0].code == "invalid_request"


@pytest.mark.parametrize(
    "raw",
    [
        # not a request: feedback and unknown types never get a decision
        b'{"type":"otp_feedback","request_id":"f1","pad":"' + b"x" * 70_000 + b'"}',
        b'{"type":"otp_sms","request_id":"f1","pad":"' + b"x" * 70_000 + b'"}',
        b'{"request_id":"f1","pad":"' + b"x" * 70_000 + b'"}',
        # the id only inside a nested object, or after the readable prefix, or too long
        b'{"type":"otp_request","signals":{"request_id":"nested"},"pad":"' + b"x" * 70_000 + b'"}',
        b'{"type":"otp_request","pad":"' + b"x" * 70_000 + b'","request_id":"late"}',
        b'{"type":"otp_request","request_id":"' + b"i" * 500 + b'","pad":"' + b"x" * 70_000 + b'"}',
        # the id inside a string that only looks like fields
        b'{"type":"otp_request","pad":"\\"request_id\\":\\"fake\\"' + b"x" * 70_000 + b'"}',
        # two ids: ambiguous
        b'{"type":"otp_request","request_id":"a","request_id":"b","pad":"' + b"x" * 70_000 + b'"}',
        b"[" * 70_000,
    ],
    ids=["feedback", "other-type", "no-type", "nested", "late", "too-long", "in-a-string", "twice", "deep"],
)
def test_an_oversize_message_without_a_safely_readable_request_id_is_a_dead_letter(raw: bytes) -> None:
    parsed = parse_event(raw)
    assert isinstance(parsed, BadEvent) and parsed.request_id is None, parsed.request_id


def test_escaped_request_ids_are_read_from_oversize_requests() -> None:
    raw = b'{"type" : "otp_request" ,\n "request_id":"a\\u0062c","pad":"' + b"x" * 70_000 + b'"}'
    parsed = parse_event(raw)
    assert isinstance(parsed, BadEvent) and parsed.request_id == "abc"


@pytest.mark.parametrize(("field", "limit"), sorted(FIELD_LIMITS.items()))
def test_client_strings_are_bounded_with_an_error_naming_the_field(field: str, limit: int) -> None:
    event: dict[str, Any] = request(request_id="long-1", message={"text": OTP, "source": "Acme"})
    path = field.split(".")
    target = event
    for step in path[:-1]:
        target = target[step]
    target[path[-1]] = "7" * limit
    assert isinstance(parse_event(orjson.dumps(event)), OtpRequest), f"{field} at its limit is refused"
    target[path[-1]] = "7" * (limit + 1)
    parsed = parse_event(orjson.dumps(event))
    assert isinstance(parsed, BadEvent), f"{field} of {limit + 1} characters was accepted"
    assert f"$.{field}" in parsed.error and str(limit) in parsed.error, parsed.error
    assert parsed.request_id == (None if field == "request_id" else "long-1")


def test_feedback_request_id_is_bounded_too() -> None:
    feedback = {"type": "otp_feedback", "request_id": "f" * 129, "ts": T0, "outcome": "verified"}
    parsed = parse_event(orjson.dumps(feedback))
    assert isinstance(parsed, BadEvent) and "$.request_id" in parsed.error


# A JSON value of any shape and depth, sometimes inside a request whose other fields are valid.
_scalars = st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=40)
_json = st.recursive(
    _scalars,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=30,
)


def _dumps(value: Any) -> bytes:
    return json.dumps(value, ensure_ascii=False).encode()  # orjson refuses integers beyond 64 bits


_WEIRD_TEXT = st.text(st.characters(codec="utf-8"), max_size=60) | st.sampled_from(
    ["+٤٤٧٤٠٠١٢٣٤٥٦", "0.0.0.0", "::", "[::1]:80", "10.0.0.1, 10.0.0.2", "+447400ABCDEF", "\u200e", "+"]
)


@st.composite
def _typed_request(draw: st.DrawFn) -> bytes:
    """A request every field of which has the right type, with hostile values: it reaches the engine."""
    event: dict[str, Any] = {
        "type": "otp_request",
        "request_id": draw(st.text(min_size=1, max_size=FIELD_LIMITS["request_id"])),
        "ts": draw(st.floats(min_value=0, max_value=32503679999) | st.integers(0, 32503679999)),
        "phone": draw(_WEIRD_TEXT.filter(bool)),
    }
    for field in ("client_ip", "remote_addr", "forwarded_for", "session_id", "account_id", "device_id"):
        if draw(st.booleans()):
            event[field] = draw(_WEIRD_TEXT)
    event.setdefault("client_ip", draw(_WEIRD_TEXT))
    if draw(st.booleans()):
        event["phone_country"] = draw(st.sampled_from(["GB", "US", "AE", "ZZ", "XK"]))
    if draw(st.booleans()):
        event["message"] = {"text": draw(_WEIRD_TEXT), "source": draw(st.text(max_size=16))}
    return _dumps(event)


@st.composite
def _hostile_lines(draw: st.DrawFn) -> bytes:
    kind = draw(st.sampled_from(["bytes", "json", "request", "deep", "mutated", "typed"]))
    if kind == "typed":
        return draw(_typed_request())
    if kind == "bytes":
        return draw(st.binary(max_size=300))
    if kind == "json":
        return _dumps(draw(_json))
    event = request(request_id=draw(st.text(min_size=1, max_size=20)), message={"text": OTP})
    if kind == "request":
        field = draw(st.sampled_from([*sorted(event), "phone_country", "signals", "forwarded_for"]))
        event[field] = draw(_json)
        return _dumps(event)
    if kind == "deep":
        depth = draw(st.integers(min_value=500, max_value=40_000))
        opener = draw(st.sampled_from([b"[", b'{"k":']))
        closer = b"]" if opener == b"[" else b"}"
        return _request_with(_nested(depth, opener, closer, close=draw(st.booleans())))
    raw = bytearray(orjson.dumps(event))
    for _ in range(draw(st.integers(1, 5))):
        raw[draw(st.integers(0, len(raw) - 1))] = draw(st.integers(0, 255))
    return bytes(raw)


def _check_parsed(parsed: object) -> None:
    assert isinstance(parsed, OtpRequest | OtpFeedback | BadEvent)
    if isinstance(parsed, BadEvent):
        assert parsed.error
        if parsed.request_id is not None:
            assert 0 < len(parsed.request_id) <= FIELD_LIMITS["request_id"]


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(_hostile_lines())
def test_parse_event_never_raises(raw: bytes) -> None:
    _check_parsed(parse_event(raw))


@settings(max_examples=400, deadline=None)
@given(st.binary(max_size=2_000))
def test_parse_event_never_raises_on_arbitrary_bytes(raw: bytes) -> None:
    _check_parsed(parse_event(raw))


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(_hostile_lines(), min_size=1, max_size=12))
def test_replay_of_hostile_lines_never_stops(
    tmp_path_factory: pytest.TempPathFactory, lines: list[bytes]
) -> None:
    folder = tmp_path_factory.mktemp("fuzz")
    good = orjson.dumps(request(request_id="good-one"))
    lines = [line.replace(b"\n", b" ").replace(b"\r", b" ") for line in lines] + [good]
    (folder / "in.jsonl").write_bytes(b"\n".join(lines) + b"\n")
    out, dead = folder / "decisions.jsonl", folder / "dead.jsonl"
    from detector.cli import main

    result = CliRunner().invoke(
        main,
        ["replay", str(folder / "in.jsonl"), "--decisions", str(out), "--dead-letters", str(dead)],
    )
    assert result.exit_code == 0, result.output
    summary = orjson.loads(result.stdout)
    written = out.read_bytes().splitlines()
    assert summary["requests"] == len(written)
    assert any(orjson.loads(d)["request_id"] == "good-one" for d in written)
    non_blank = [line for line in lines if line.strip()]
    assert summary["events"] == len(non_blank), "every line is decided, counted as feedback or dead-lettered"


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(_hostile_lines(), min_size=1, max_size=12))
def test_the_request_worker_pipeline_never_stops_on_hostile_messages(lines: list[bytes]) -> None:
    from tests.test_stream import RecordingOutput, incoming, make_pipeline

    output = RecordingOutput()
    pipeline, _ = make_pipeline(output)
    topics = pipeline.topics
    good = orjson.dumps(request(request_id="good-one"))
    batch = [incoming(topics.requests, value, offset=i) for i, value in enumerate([*lines, good])]
    asyncio.run(pipeline.handle("requests", batch))
    decided = output.to(topics.decisions)
    letters = output.to(topics.dead_letters)
    retried = output.to(topics.feedback_retry)
    assert any(key == b"good-one" for _, key, _, _ in decided)
    feedback = sum(isinstance(parse_event(value), OtpFeedback) for value in lines)
    assert len(decided) + len(letters) + feedback == len(batch), "one outcome per message"
    assert len(retried) <= feedback
    for _, _, value, _ in letters:
        letter = orjson.loads(value)
        assert "internal error" not in letter["error"], "the engine itself failed on a hostile event"
        _assert_redacted(letter)


# ----------------------------------------------------------------------------- no raw personal data


def _assert_redacted(letter: dict[str, Any]) -> None:
    text = orjson.dumps(letter).decode()
    assert "raw" not in letter and "raw_b64" not in letter
    for secret in ("447400123456", "482913", "203.0.113.5"):
        assert secret not in text, f"{secret} leaked into a dead letter: {text}"


def _poison_with_personal_data() -> bytes:
    event = request(request_id="poison-1", phone=PHONE, message={"text": OTP})
    return orjson.dumps({**event, "type": "otp_smsx"})


async def test_worker_dead_letters_describe_the_message_without_its_bytes() -> None:
    from tests.test_stream import RecordingOutput, incoming, make_pipeline

    output = RecordingOutput()
    pipeline, _ = make_pipeline(output)
    raw = _poison_with_personal_data()
    await pipeline.handle(
        "requests",
        [
            incoming(pipeline.topics.requests, raw, offset=41),
            incoming(pipeline.topics.requests, raw, offset=42),
            incoming(pipeline.topics.requests, raw + b" ", offset=43),
        ],
    )
    letters = [orjson.loads(value) for _, _, value, _ in output.to(pipeline.topics.dead_letters)]
    assert [letter["offset"] for letter in letters] == [41, 42, 43]
    first, again, other = letters
    for letter in letters:
        _assert_redacted(letter)
        assert letter["partition"] == 0 and "`type`" in letter["error"]
    assert first["size"] == len(raw) and other["size"] == len(raw) + 1
    assert first["digest"] == again["digest"] != other["digest"], "the digest identifies the bytes"
    assert {"type", "request_id", "phone", "client_ip", "message"} <= set(first["fields"])


def test_replay_dead_letters_carry_no_raw_bytes(tmp_path: Path) -> None:
    from detector.cli import main

    events = tmp_path / "in.jsonl"
    events.write_bytes(_poison_with_personal_data() + b"\n" + b"not json " + PHONE.encode() + b"\n")
    dead = tmp_path / "dead.jsonl"
    result = CliRunner().invoke(main, ["replay", str(events), "--dead-letters", str(dead)])
    assert result.exit_code == 0, result.output
    letters = [orjson.loads(line) for line in dead.read_bytes().splitlines()]
    assert [letter["line"] for letter in letters] == [1, 2]
    for letter in letters:
        _assert_redacted(letter)
        assert letter["size"] > 0 and len(letter["digest"]) >= 32
    assert "447400123456" not in result.stdout


@pytest.fixture
def root_logging() -> Iterator[None]:
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    noisy = {
        name: logging.getLogger(name).level
        for name in ("faust", "mode", "aiokafka", "kafka", "faust.tables.recovery")
    }
    yield
    root.handlers[:] = handlers
    root.setLevel(level)
    for name, old in noisy.items():
        logging.getLogger(name).setLevel(old)


_DECISION_BYTES = orjson.dumps(
    {
        "type": "otp_decision",
        "request_id": "r1",
        "client_ip": "203.0.113.5",
        "phone": PHONE,
        "message": {"text": OTP, "source": "Acme"},
        "action": "allow",
    }
)


@pytest.mark.parametrize("fmt", ["text", "json"])
def test_debug_logs_carry_no_number_no_otp_and_no_client_ip(
    fmt: str, root_logging: None, capsys: pytest.CaptureFixture[str]
) -> None:
    configure("DEBUG", fmt)
    # what aiokafka's producer writes for every decision at DEBUG
    logging.getLogger("aiokafka.producer.producer").debug(
        "Sending (key=%s value=%s) to %s", b"r1", _DECISION_BYTES, "otp.decisions-3"
    )
    decision = Decision(
        request_id="r2",
        ts=None,
        action="allow",
        verdict="allow",
        mode="enforce",
        score=0.0,
        reasons=(),
        policy_version="v",
        client_ip="203.0.113.5",
        phone=PHONE,
        message=Message(text=OTP),
    )
    logging.getLogger("faust.agents.agent").debug("%r yielded: %r", "agent", decision)
    log = logging.getLogger("detector.test")
    log.info("decided", extra={"phone": PHONE, "detail": {"to": [PHONE], "ip": "203.0.113.5"}})
    log.warning("the client typed %s", "+44 7400 123456")
    try:
        raise ValueError(f"bad event {_DECISION_BYTES.decode()}")
    except ValueError:
        log.exception("failed on %s", PHONE)
    err = capsys.readouterr().err
    assert "otp.decisions-3" in err and "decided" in err and "ValueError" in err, err
    for secret in ("447400123456", "482913", "203.0.113.5", "7400 1234"):
        assert secret not in err, f"{secret} in the {fmt} log:\n{err}"
    if fmt == "json":
        for line in err.splitlines():
            json.loads(line)


@pytest.mark.parametrize(("level", "quiet"), [("INFO", True), ("WARNING", True), ("DEBUG", False)])
def test_third_party_start_up_noise_is_quiet_unless_debugging(
    level: str, quiet: bool, root_logging: None, capsys: pytest.CaptureFixture[str]
) -> None:
    configure(level, "text")
    for name in ("faust", "mode", "aiokafka", "kafka"):
        logging.getLogger(f"{name}.sub").info("noise from %s", name)
        logging.getLogger(f"{name}.sub").warning("trouble in %s", name)
    logging.getLogger("detector.x").warning("ours")
    logging.getLogger("faust.tables.recovery").info("[^---Recovery]: Worker ready")
    err = capsys.readouterr().err
    assert ("noise from" in err) is (not quiet and level == "DEBUG")
    assert err.count("trouble in") == 4 and "ours" in err
    assert ("Worker ready" in err) is (level != "WARNING"), "the line that says a worker processes stays"


# ----------------------------------------------------------------------------- one canonical number

SPELLINGS = [
    "+447400123456",
    "+447400123456\n",
    " +44 7400 123456 ",
    "+44 (0)7400-123.456".replace("(0)", ""),
    "+44-7400-123-456",
    "+4474００123456",  # full-width digits
    "＋４４７４００１２３４５６",  # full-width plus and digits
    "+٤٤٧٤٠٠١٢٣٤٥٦",  # Arabic-Indic
    "+۴۴۷۴۰۰۱۲۳۴۵۶",  # Eastern Arabic-Indic (Persian, Urdu)
    "\u200e+447400123456\u200f",  # direction marks pasted from right-to-left text
    "00447400123456",
    "+44\u00a07400\u2009123456",  # no-break and thin spaces
    "+44\u20137400\u2010123456",  # en dash and hyphen
]


@pytest.mark.parametrize("spelling", SPELLINGS)
def test_every_spelling_is_one_ascii_e164(spelling: str) -> None:
    facts = PhoneParser().parse(spelling)
    assert facts.e164 == PHONE and facts.valid and facts.region == "GB"


@pytest.mark.parametrize(
    "phone", ["+447400ABCDEF", "+44740012345a", "+447400123456x1", "+44 74OO 123456", "+44+7400123456", "+"]
)
def test_letters_and_stray_signs_are_unparseable(phone: str) -> None:
    facts = PhoneParser().parse(phone, "GB")
    assert facts.e164 is None and facts.problem == "unparseable_number"


def test_national_numbers_in_other_digits_need_their_country() -> None:
    assert PhoneParser().parse("٠٧٤٠٠ ١٢٣٤٥٦", "GB").e164 == PHONE
    assert PhoneParser().parse("٠٧٤٠٠ ١٢٣٤٥٦").e164 is None


def test_spellings_of_one_number_share_its_limit() -> None:
    pol = quiet_policy(rules={"msisdn_rate_limit": {"limit": 3, "window": "30m"}})
    same = [request(ts=T0 + i, phone=PHONE) for i in range(len(SPELLINGS))]
    spelled = [request(ts=T0 + i, phone=phone) for i, phone in enumerate(SPELLINGS)]
    identical = [d.action for d in decisions(same, pol)]
    assert identical.count("allow") == 3
    got = decisions(spelled, pol)
    assert [d.action for d in got] == identical
    assert {d.phone for d in got} == {PHONE}
    assert all("msisdn_rate_limit" in codes(d) for d in got[3:])


# ----------------------------------------------------------------------------- impossible client IPs


@pytest.mark.parametrize(
    ("address", "category"),
    [
        ("0.0.0.0", "unspecified"),
        ("0.1.2.3", "unspecified"),
        ("::", "unspecified"),
        ("127.0.0.1", "loopback"),
        ("::1", "loopback"),
        ("::ffff:127.0.0.1", "loopback"),
        ("224.0.0.1", "multicast"),
        ("ff02::1", "multicast"),
        ("255.255.255.255", "broadcast"),
        ("169.254.10.1", "link_local"),
        ("fe80::1", "link_local"),
        ("240.0.0.1", "reserved"),
    ],
)
@pytest.mark.parametrize("via", ["client_ip", "remote_addr"])
def test_addresses_that_cannot_be_clients_get_a_reason_and_points(
    address: str, category: str, via: str
) -> None:
    event = request(request_id=f"imp-{via}", client_ip=address)
    if via == "remote_addr":
        del event["client_ip"]
        event["remote_addr"] = address
    (decision,) = decisions([event], quiet_policy())
    (reason,) = [r for r in decision.reasons if r.code == "impossible_client_ip"]
    assert reason.value == category and reason.points == 40
    assert decision.action == "challenge"


@pytest.mark.parametrize(
    "address",
    [
        "10.1.2.3",
        "192.168.1.10",
        "172.16.0.9",
        "100.64.1.1",
        "fd00::1",
        "203.0.113.5",
        "8.8.8.8",
        "2a00:1450::1",
    ],
)
def test_private_and_public_addresses_are_possible_clients(address: str) -> None:
    (decision,) = decisions([request(client_ip=address)], quiet_policy())
    assert "impossible_client_ip" not in codes(decision) and decision.action == "allow"


def test_impossible_client_ip_points_come_from_the_policy() -> None:
    pol = quiet_policy(rules={"impossible_client_ip": {"points": 75}})
    (decision,) = decisions([request(client_ip="0.0.0.0")], pol)
    assert decision.action == "block" and decision.score == 75
    off = quiet_policy(rules={"impossible_client_ip": {"mode": "off"}})
    (decision,) = decisions([request(client_ip="0.0.0.0")], off)
    assert "impossible_client_ip" not in codes(decision)


# ----------------------------------------------------------------------------- bounded memory


def test_memo_is_bounded_in_bytes_not_entries() -> None:
    memo: Memo[str, int] = Memo(budget_bytes=100_000)
    for i in range(1_000):
        memo.put(f"{i:06d}" + "k" * 5_000, i)
        assert memo.bytes <= 100_000
        assert memo.bytes >= sum(len(key) for key in memo), "the accounting covers at least the keys"
    assert 0 < len(memo) < 20


def test_a_memo_recalls_a_long_key_by_its_digest_and_never_keeps_it_raw() -> None:
    memo: Memo[tuple[str | None, ...], int] = Memo()
    short, long = ("198.51.100.7", None, None), (None, "10.0.0.1", "10.0.0.2, " * 400)
    for key, value in ((short, 1), (long, 2)):
        assert memo.recall(key) is None
        memo.put(memo.compact(key), value)
        assert memo.recall(key) == value
    assert long not in memo and max(len(repr(key)) for key in memo) < 200


def test_unique_huge_forwarded_for_headers_keep_the_address_memo_bounded() -> None:
    eng: Engine = engine(quiet_policy())
    budget = eng._networks.budget_bytes
    padding = "198.51.100.77, " * 4_000  # 60 KB
    for i in range(20_000):
        peer = f"198.51.100.{i % 250}"
        event = OtpRequest(
            request_id=f"m{i}",
            ts=T0,
            phone=PHONE,
            remote_addr=peer,
            forwarded_for=f"{padding}203.0.{i >> 8}.{i & 255}",
        )
        network = eng._network(event)
        assert network.facts is not None and network.facts.ip == peer
        assert eng._networks.bytes <= budget
    assert max(len(repr(key)) for key in eng._networks) < 200, "no raw header is kept as a key"
    assert budget <= 64 * 1024 * 1024


def test_over_long_headers_are_refused_at_parse_time() -> None:
    raw = orjson.dumps(
        request(
            request_id="xff-1", client_ip=None, remote_addr="10.0.0.2", forwarded_for="10.0.0.1, " * 6_000
        )
    )
    parsed = parse_event(raw)
    assert isinstance(parsed, BadEvent) and "$.forwarded_for" in parsed.error and parsed.request_id == "xff-1"


# ----------------------------------------------------------------------------- hash keys


@pytest.mark.parametrize(
    "key",
    [
        " " * 16,
        "\t" * 20,
        "0000000000000000",
        "a" * 64,
        "abababababababab",
        "abcabcabcabcabca",
        "é" * 8,
        "\u00a0" * 16,
        "12121212121212121212121212121212",
    ],
    ids=[
        "spaces",
        "tabs",
        "zeros",
        "one-char",
        "two-chars",
        "three-chars",
        "8-chars-16-bytes",
        "nbsp",
        "digits",
    ],
)
def test_weak_hash_keys_are_refused_with_advice(key: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(HASH_KEY_ENV, key)
    with pytest.raises(MissingHashKey, match="openssl rand -hex 32"):
        load_hash_key(required=True)


def test_weak_hash_keys_in_a_file_are_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    secret = tmp_path / "key"
    secret.write_text("0000000000000000\n")
    monkeypatch.delenv(HASH_KEY_ENV, raising=False)
    monkeypatch.setenv("DETECTOR_HASH_KEY_FILE", str(secret))
    with pytest.raises(MissingHashKey, match="openssl rand -hex 32"):
        load_hash_key(required=True)


@pytest.mark.parametrize(
    "key", ["9f86d081884c7d659a2feaa0c55ad015", "correct-horse-battery-staple", "ключ-для-хешей-2026"]
)
def test_good_hash_keys_are_taken(key: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(HASH_KEY_ENV, key)
    assert load_hash_key(required=True) == key.encode()
