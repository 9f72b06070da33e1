"""Choose a store from a URL: memory:// (in-process) or redis://HOST:PORT/DB (shared by every worker)."""

from __future__ import annotations

from urllib.parse import urlparse

from detector.errors import ConfigurationError
from detector.policy import Policy
from detector.state.base import CounterPlan, Store

DEFAULT_STORE = "memory://"


class StoreUrlError(ConfigurationError, ValueError):
    pass


def open_store(url: str, plan: CounterPlan, policy: Policy, *, remember_wait: float | None = None) -> Store:
    """`remember_wait`: see `RedisStore` (for a service answering over HTTP; None for a Kafka worker)."""
    scheme = urlparse(url).scheme
    if scheme == "memory":
        from detector.state.memory import MemoryStore

        return MemoryStore(plan)
    if scheme in ("redis", "rediss", "unix"):
        from detector.state.redis import RedisStore

        shared = RedisStore.from_url(
            url, plan, timeout=policy.state.timeout_ms / 1000, remember_wait=remember_wait
        )
        if policy.state.on_error == "degrade":
            from detector.state.degraded import DegradingStore

            return DegradingStore(shared)
        return shared
    raise StoreUrlError(f"unknown store {url!r}: use memory:// or redis://HOST:PORT/DB")
