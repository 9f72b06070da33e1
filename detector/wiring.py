"""Put an engine together from what the operator configured: a policy file, a store URL, the hash key."""

from __future__ import annotations

import gc

from detector.engine import Engine
from detector.hashing import KeyedHasher, load_hash_key
from detector.policy import Policy, load_policy
from detector.scoring import counter_plan
from detector.state.open import open_store

DEFAULT_STORE = "memory://"


def build_engine(policy: Policy | str | None = None, store_url: str = DEFAULT_STORE) -> Engine:
    if not isinstance(policy, Policy):
        policy = load_policy(policy)
    store = open_store(store_url, counter_plan(policy), policy)
    hasher = KeyedHasher(load_hash_key(required=not store_url.startswith("memory:")))
    return Engine(policy, store, hasher)


def tune_gc() -> None:
    """The engine keeps millions of small, long-lived counter objects that hold no reference cycles.

    With CPython's default thresholds (700 allocations) the collector walks them over and over, which
    halves throughput; collecting less often costs little memory here.
    """
    gc.collect()
    gc.freeze()
    gc.set_threshold(50_000, 50, 100)
