"""What the commands share: one way to load a policy, and to run work on an engine whose store answers."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import IO, TypeVar

import msgspec

from detector.engine import Engine
from detector.policy import Policy, load_policy
from detector.wiring import check_store

T = TypeVar("T")


def policy_for(path: str | None, *, shadow: bool = False) -> Policy:
    """The policy at `path` merged over the default (every problem in one `PolicyError`), shadow forced."""
    policy = load_policy(path)
    return msgspec.structs.replace(policy, mode="shadow") if shadow else policy


async def on_live_store(engine: Engine, store_url: str, work: Callable[[], Awaitable[T]]) -> T:
    """`work`, once the store answered (else `StoreUnavailable` saying what to fix); then the store closed."""
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
