"""Put an engine together from what the operator configured: a policy file, a store URL, the hash key."""

from __future__ import annotations

import gc
from collections.abc import Sequence
from urllib.parse import urlsplit

from detector.engine import Engine
from detector.errors import ConfigurationError
from detector.hashing import KeyedHasher, load_hash_key
from detector.policy import ListsConfig, Policy, load_policy, read_cidr_file
from detector.scoring import counter_plan
from detector.signals.network import GeoReader, IpClassifier, NetworkSet
from detector.state.base import Store, StoreUnavailable
from detector.state.open import DEFAULT_STORE, open_store

__all__ = ["DEFAULT_STORE", "build_engine", "check_store", "open_ip_classifier", "redact", "tune_gc"]


def build_engine(
    policy: Policy | str | None = None,
    store_url: str = DEFAULT_STORE,
    *,
    service: bool = False,
    remember_wait: float | None = None,
) -> Engine:
    """An engine on `store_url`. `service`: it answers real clients (its challenge ids must be unforgeable),
    so it needs the secret hash key even on an in-process store. `remember_wait`: see `RedisStore`."""
    if not isinstance(policy, Policy):
        policy = load_policy(policy)
    store = open_store(store_url, counter_plan(policy), policy, remember_wait=remember_wait)
    hasher = KeyedHasher(load_hash_key(required=service or not store_url.startswith("memory:")))
    return Engine(policy, store, hasher, open_ip_classifier(policy.lists))


def open_ip_classifier(lists: ListsConfig) -> IpClassifier:
    """The classifier of the policy's lists, with its CIDR files read and its GeoIP database opened."""

    def cidr_files(paths: Sequence[str]) -> NetworkSet:
        return NetworkSet(cidr for path in paths for cidr in read_cidr_file(path))

    return IpClassifier(
        NetworkSet(lists.allow_ips),
        NetworkSet(lists.deny_ips),
        cidr_files(lists.datacenter_ip_files),
        cidr_files(lists.anonymizer_ip_files),
        _open_geo(lists.geoip_database),
    )


def _open_geo(path: str | None) -> GeoReader | None:
    if path is None:
        return None
    import maxminddb

    try:
        reader: GeoReader = maxminddb.open_database(path)
    except (OSError, ValueError) as exc:
        raise ConfigurationError(f"cannot open the GeoIP database {path}: {exc}") from exc
    return reader


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
