"""What the commands share: one way to load a policy, and to run work on an engine whose store answers."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import IO, TYPE_CHECKING, TypeVar

import msgspec

from detector.errors import ConfigurationError
from detector.hashing import MissingHashKey, load_hash_key
from detector.policy import Policy, PolicyError, load_policy

if TYPE_CHECKING:  # the engine and its stores load when a command runs, not for --help
    from detector.engine import Engine

T = TypeVar("T")


def policy_for(path: str | None, *, shadow: bool = False) -> Policy:
    """The policy at `path` merged over the default (every problem in one `PolicyError`), shadow forced."""
    policy = load_policy(path)
    return msgspec.structs.replace(policy, mode="shadow") if shadow else policy


def engine_for(
    policy_path: str | None,
    store_url: str,
    *,
    shadow: bool = False,
    service: bool = False,
    remember_wait: float | None = None,
) -> tuple[Policy, Engine]:
    """The policy and an engine on `store_url`; the problems with either and the hash key, all at once.

    `service`: the engine answers real clients, so it needs the secret hash key whatever the store.
    `remember_wait`: see `RedisStore`."""
    problems: list[str] = []
    policy: Policy | None = None
    engine: Engine | None = None
    try:
        policy = policy_for(policy_path, shadow=shadow)
    except PolicyError as exc:
        problems.append(str(exc))
    try:
        load_hash_key(required=service or not store_url.startswith("memory:"))
    except MissingHashKey as exc:
        problems.append(str(exc))
    if policy is not None:
        from detector.wiring import build_engine

        try:
            engine = build_engine(policy, store_url, service=service, remember_wait=remember_wait)
        except ConfigurationError as exc:
            if str(exc) not in problems:
                problems.append(str(exc))
    if problems or policy is None or engine is None:
        raise ConfigurationError("\n".join(problems))
    return policy, engine


async def on_live_store(engine: Engine, store_url: str, work: Callable[[], Awaitable[T]]) -> T:
    """`work`, once the store answered (else `StoreUnavailable` saying what to fix); then the store closed."""
    from detector.wiring import check_store

    try:
        await check_store(engine.store, store_url)
        return await work()
    finally:
        await engine.store.close()


class open_out:
    """A binary output file (its directory made), or nothing."""

    def __init__(self, path: str | None) -> None:
        self.path = path
        self.handle: IO[bytes] | None = None

    def __enter__(self) -> IO[bytes] | None:
        if self.path is not None:
            Path(self.path).parent.mkdir(parents=True, exist_ok=True)
            self.handle = open(self.path, "wb")
        return self.handle

    def __exit__(self, *exc: object) -> None:
        if self.handle is not None:
            self.handle.close()
