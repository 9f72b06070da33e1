"""Synthetic event streams for benchmarks: many unique numbers and IPs, feedback for most requests."""

from __future__ import annotations

import random

import orjson
import phonenumbers

REGIONS = ["US", "GB", "DE", "FR", "IN", "BR", "ES", "IT", "NG", "ID", "PH", "VN", "PK", "EG", "KE", "TH"]
T0 = 1_795_420_800.0


def number_blocks() -> list[str]:
    blocks = []
    for region in REGIONS:
        for kind in (phonenumbers.PhoneNumberType.MOBILE, phonenumbers.PhoneNumberType.FIXED_LINE):
            example = phonenumbers.example_number_for_type(region, kind)
            if example is not None:
                blocks.append(phonenumbers.format_number(example, phonenumbers.PhoneNumberFormat.E164)[:-6])
    return blocks


def mixed_stream(requests: int, seed: int = 1, events_per_second: float = 200.0) -> list[bytes]:
    """JSON lines: requests to mostly unique numbers from ~5k IPs; ~70% get a verified feedback."""
    rng = random.Random(seed)
    blocks = number_blocks()
    ips = [
        f"{rng.randrange(1, 224)}.{rng.randrange(256)}.{rng.randrange(256)}.{rng.randrange(1, 255)}"
        for _ in range(5000)
    ]
    lines: list[tuple[float, bytes]] = []
    ts = T0
    for index in range(requests):
        ts += rng.expovariate(events_per_second)
        request_id = f"b{seed}-{index}"
        event = {
            "type": "otp_request",
            "request_id": request_id,
            "ts": round(ts, 3),
            "phone": rng.choice(blocks) + f"{rng.randrange(1_000_000):06d}",
            "client_ip": rng.choice(ips),
            "session_id": f"s{rng.randrange(requests)}",
            "flow": "login",
            "message": {"text": "Your code is 123456"},
        }
        lines.append((ts, orjson.dumps(event)))
        if rng.random() < 0.7:
            done = ts + rng.lognormvariate(3.0, 0.6)
            lines.append(
                (
                    done,
                    orjson.dumps(
                        {
                            "type": "otp_feedback",
                            "request_id": request_id,
                            "ts": round(done, 3),
                            "outcome": "verified",
                        }
                    ),
                )
            )
    lines.sort(key=lambda pair: pair[0])
    return [line for _, line in lines]
