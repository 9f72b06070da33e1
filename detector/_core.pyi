"""Types of the compiled core (core/src/lib.rs)."""

from collections.abc import Sequence

class WindowTables:
    """The windows of several dimensions, each counted per entity key (see `detector.windows`)."""

    def __init__(
        self,
        dimensions: Sequence[tuple[str, Sequence[tuple[int, int]]]],
        peaks: Sequence[tuple[str, int]] = ...,
    ) -> None: ...
    def add(
        self,
        keys: dict[str, str] | dict[str, str | None],
        ts: float,
        requests: int,
        verified: int,
        counts: list[tuple[int, int] | None] | None = None,
        peaks: list[int] | None = None,
    ) -> None: ...
    def read(
        self,
        keys: dict[str, str] | dict[str, str | None],
        ts: float,
        counts: list[tuple[int, int] | None] | None = None,
        peaks: list[int] | None = None,
    ) -> None: ...
    def sweep(self, ts: float) -> int: ...
    def __len__(self) -> int: ...

class MemoryCore:
    """The in-process store's state (see `detector.state.memory`)."""

    def __init__(
        self,
        windows: Sequence[tuple[str, Sequence[tuple[int, int]]]],
        peaks: Sequence[tuple[str, int]],
        pass_windows: Sequence[tuple[str, Sequence[tuple[int, int]]]],
        limit_dimension: str,
        limit_window: tuple[int, int],
        limit: int,
        distinct_dimension: str,
        distinct_window: float,
        record_dims: Sequence[str],
        record_ttl: float,
    ) -> None: ...
    def observe(
        self,
        request_id: str,
        ts: float,
        keys: dict[str, str],
        fingerprint: str,
        take_slot: bool,
        distinct_member: str | None,
    ) -> tuple[
        int, bytes | None, float | None, bool, int, int, list[tuple[int, int] | None], list[int], list[int]
    ]: ...
    def feedback(self, request_id: str, resolved: bool) -> int: ...
    def challenge(
        self, request_id: str, ts: float, fingerprint: str, passed: bool
    ) -> tuple[int, list[int]]: ...
    def remember(self, request_id: str, decision: bytes, challenge_expires: float | None) -> None: ...
    def sweep(self, now: float) -> None: ...
    def has_record(self, request_id: str) -> bool: ...
    def sizes(self) -> tuple[int, int]: ...
