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
        counts: dict[tuple[str, int], tuple[int, int]] | None = None,
        peaks: dict[tuple[str, int], int] | None = None,
    ) -> None: ...
    def read(
        self,
        keys: dict[str, str] | dict[str, str | None],
        ts: float,
        counts: dict[tuple[str, int], tuple[int, int]] | None = None,
        peaks: dict[tuple[str, int], int] | None = None,
    ) -> None: ...
    def sweep(self, ts: float) -> int: ...
    def __len__(self) -> int: ...
