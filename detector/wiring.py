"""Put an engine together from what the operator configured: a policy file, a store URL, the hash key."""

from __future__ import annotations

import gc
from urllib.parse import urlsplit

from detector.engine import Engine
from detector.hashing import KeyedHasher, load_hash_key
from detector.policy import Policy, load_policy
from detector.scoring import counter_plan
from detector.state.base import Store, StoreUnavailable
from detector.state.open import DEFAULT_STORE, open_store

__all__ = ["DEFAULT_STORE", "build_engine", "check_store", "redact", "tune_gc"]


def build_engine(policy: Policy | str | None = None, store_url: str = DEFAULT_STORE) -> Engine:
    if not isinstance(policy, Policy):
        policy = load_policy(policy)
    store = open_store(store_url, counter_plan(policy), policy)
    hasher = KeyedHasher(load_hash_key(required=not store_url.startswith("memory:")))
    return Engine(policy, store, hasher)


async def check_store(store: Store, url: str) -> None:
    """Fail at start, saying what to fix, rather than deciding every request with `state_unavailable`."""
    try:
        await store.ping()
    except StoreUnavailable as exc:
        raise StoreUnavailable(
            f"the store {redact(url)} does not answer ({exc}): start it, or point --store / DETECTOR_STORE "
            "at one that does"
        ) from None


def redact(url: str) -> str:
    """`url` without its password, fit for a message or a log."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = parts.netloc.replace(f":{parts.password}@", ":****@", 1)
    return parts._replace(netloc=netloc).geturl()


def tune_gc() -> None:
    """The engine keeps millions of small, long-lived counter objects that hold no reference cycles.

    With CPython's default thresholds (700 allocations) the collector walks them over and over, which
    halves throughput; collecting less often costs little memory here.
    """
    gc.collect()
    gc.freeze()
    gc.set_threshold(50_000, 50, 100)
