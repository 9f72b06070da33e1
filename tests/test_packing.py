"""Decisions kept for redelivery: packed small, read back exactly, and records of the previous format too."""

from __future__ import annotations

import zlib

import orjson

from detector.state import packing
from detector.state.packing import pack_decision, unpack_decision

DECISION = orjson.dumps(
    {
        "type": "otp_decision",
        "request_id": "3f2b9c1e-8d6a-4b8e-9a51-2c7d1e0f4a6b",
        "ts": "2026-11-23T08:14:03.512Z",
        "action": "block",
        "verdict": "block",
        "mode": "enforce",
        "score": 75.0,
        "reasons": [{"code": "ip_10m_velocity", "value": 12, "threshold": 10, "points": 30.0}],
        "policy_version": "default-2",
        "phone_country": "NG",
        "flow": "login",
    }
)


def test_a_decision_comes_back_exactly_and_packed_small() -> None:
    packed = pack_decision(DECISION)
    assert unpack_decision(packed) == DECISION
    assert len(packed) < len(DECISION) / 2


def test_decisions_kept_by_the_previous_version_are_still_read() -> None:
    """Records live 48 h: a rolling upgrade meets the deflate format (0x04) the previous version wrote."""
    deflate = zlib.compressobj(1, zlib.DEFLATED, -11, 2, zlib.Z_DEFAULT_STRATEGY, packing._DECISION_WORDS)
    previous = b"\x04" + deflate.compress(DECISION) + deflate.flush()
    assert unpack_decision(previous) == DECISION


def test_unknown_or_damaged_records_read_as_no_decision() -> None:
    packed = pack_decision(DECISION)
    for stored in (b"", b"\x02" + bytes(60), b"\x03garbage", packed[:1] + b"garbage", packed[:-8]):
        assert unpack_decision(stored) is None, stored
