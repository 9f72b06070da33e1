"""A memo that forgets everything when its byte budget is spent: cheap, bounded, enough for keys that recur.

The budget is in bytes, not entries, because keys come from clients: a count of entries bounds nothing when
one key can be 60 KB. Each entry is charged `entry_bytes` (the dict slot, the key and value objects; each
user measures its own with tracemalloc) plus the characters of its key, so a caller that keys on client
strings pays for their length.
"""

from __future__ import annotations

import hashlib
from typing import Generic, TypeVar, cast

K = TypeVar("K")
V = TypeVar("V")

LONG_KEY = 128  # characters: longer keys are kept as a digest
ENTRY_BYTES = 240  # bytes per entry besides its key's characters, unless the memo is told better
DEFAULT_BUDGET = 64 * 1024 * 1024


def key_size(key: object) -> int:
    """The variable part of a key's size: the length of its strings (a tuple's, summed)."""
    # isinstance with a tuple of types, not a union, and a plain loop: this runs for every new key
    if isinstance(key, (str, bytes)):
        return len(key)
    size = 0
    if isinstance(key, tuple):
        for part in key:
            if isinstance(part, (str, bytes)):
                size += len(part)
    return size


class Memo(dict[K, V], Generic[K, V]):
    __slots__ = ("budget_bytes", "bytes", "entry_bytes")

    def __init__(self, *, budget_bytes: int = DEFAULT_BUDGET, entry_bytes: int = ENTRY_BYTES) -> None:
        super().__init__()
        self.budget_bytes = budget_bytes
        self.entry_bytes = entry_bytes
        self.bytes = 0

    @staticmethod
    def compact(key: K) -> K:
        """The key to memoise under: itself, or a digest of its strings when they are long (a 1-tuple for
        a tuple key). 128 bits of BLAKE2b: distinct spellings never share an entry in practice."""
        if key_size(key) <= LONG_KEY:
            return key
        parts = key if isinstance(key, tuple) else (key,)
        digest = hashlib.blake2b(digest_size=16)
        for part in parts:
            text = part.encode() if isinstance(part, str) else part if isinstance(part, bytes) else b""
            digest.update(len(text).to_bytes(4, "big") + bytes([part is None]) + text)
        compacted = digest.hexdigest()
        return cast(K, (compacted,) if isinstance(key, tuple) else compacted)

    def recall(self, key: K) -> V | None:
        """The value kept for `key` (put under `compact(key)`): one lookup unless its strings are long."""
        known = self.get(key)
        if known is None and key_size(key) > LONG_KEY:
            known = self.get(self.compact(key))
        return known

    def put(self, key: K, value: V) -> V:
        cost = self.entry_bytes + (len(key) if isinstance(key, str) else key_size(key))
        if cost > self.budget_bytes:
            return value
        if self.bytes + cost > self.budget_bytes:
            self.clear()
        entries = len(self)
        self[key] = value
        if len(self) > entries:  # a new key (one probe of the dict, not two)
            self.bytes += cost
        return value

    def clear(self) -> None:
        super().clear()
        self.bytes = 0
