"""Keyed hashes of phone numbers and IPs: what reaches a store instead of the values themselves."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import Any

from detector.errors import ConfigurationError

HASH_KEY_ENV = "DETECTOR_HASH_KEY"
HASH_KEY_FILE_ENV = "DETECTOR_HASH_KEY_FILE"
MIN_KEY_BYTES = 16
MIN_KEY_CHARACTERS = 16
MIN_DISTINCT_CHARACTERS = 5
DIGEST_SIZE = 12  # bytes of a key's digest: 96 bits, 24 hex characters
GOOD_KEY_ADVICE = f"make one with `openssl rand -hex 32` and set {HASH_KEY_ENV} or {HASH_KEY_FILE_ENV}"


class MissingHashKey(ConfigurationError):
    pass


class KeyedHasher:
    """BLAKE2b in keyed mode (a MAC): without the key, a stored hash cannot be tested against a guess."""

    __slots__ = ("_key", "_keyed")

    def __init__(self, key: bytes) -> None:
        if len(key) < MIN_KEY_BYTES:
            raise ValueError(f"the hash key must be at least {MIN_KEY_BYTES} bytes")
        self._key = key[:64]
        # A keyed state per kind (and size, when not the default), copied per digest: keying costs a
        # compression of its own.
        self._keyed: dict[str | tuple[str, int], Any] = {}

    def __call__(self, kind: str, value: str) -> str:
        """The digest of a string, of the default size: what the engine asks for several times a request."""
        state = (self._keyed.get(kind) or self._keyed_state(kind, kind, DIGEST_SIZE)).copy()
        state.update(value.encode())
        return state.hexdigest()

    def digest(self, kind: str, data: bytes, size: int = DIGEST_SIZE) -> str:
        slot = kind if size == DIGEST_SIZE else (kind, size)
        state = (self._keyed.get(slot) or self._keyed_state(slot, kind, size)).copy()
        state.update(data)
        return state.hexdigest()

    def _keyed_state(self, slot: str | tuple[str, int], kind: str, size: int) -> Any:
        keyed = hashlib.blake2b(key=self._key, digest_size=size, person=kind.encode()[:16])
        self._keyed[slot] = keyed
        return keyed

    def __repr__(self) -> str:
        return "KeyedHasher(key=****)"


# Not a secret: offline runs decide files they were given, and keep nothing. Services never use it.
OFFLINE_KEY = b"sms-pumping-detector/offline-run/not-a-secret"


def load_hash_key(*, required: bool) -> bytes:
    """The key from DETECTOR_HASH_KEY or the file named by DETECTOR_HASH_KEY_FILE.

    Without either, an offline run (replay, evaluation: one process, nothing kept) gets `OFFLINE_KEY`, so
    the same file gives byte-identical decisions, challenge ids included; anything that shares state or
    answers real clients must have a secret key, the same everywhere, so it is required.
    """
    value = os.environ.get(HASH_KEY_ENV)
    path = os.environ.get(HASH_KEY_FILE_ENV)
    if value is None and path:
        try:
            value = Path(path).read_text().strip()
        except OSError as exc:
            raise MissingHashKey(f"cannot read {HASH_KEY_FILE_ENV}={path}: {exc.strerror}") from exc
    if value:
        check_key_strength(value)
        return value.encode()
    if required:
        raise MissingHashKey(
            f"shared state needs a hash key: set {HASH_KEY_ENV} (at least {MIN_KEY_CHARACTERS} random "
            f"characters, e.g. `export {HASH_KEY_ENV}=$(openssl rand -hex 32)`) or {HASH_KEY_FILE_ENV}=/path"
        )
    return OFFLINE_KEY


def check_key_strength(key: str) -> None:
    """Refuse keys an attacker could guess: short ones (counted in characters, not bytes), blank ones, and
    ones made of a handful of distinct characters (`0000000000000000`, `abababababababab`). A random key
    of 16 hex characters has fewer than 5 distinct characters less than once in a million."""
    problem = None
    if not key.strip():
        problem = "is blank (only whitespace)"
    elif len(key) < MIN_KEY_CHARACTERS:
        problem = f"has {len(key)} characters, fewer than {MIN_KEY_CHARACTERS}"
    elif len(set(key)) < MIN_DISTINCT_CHARACTERS:
        problem = f"uses only {len(set(key))} distinct characters, too few to be random"
    if problem is not None:
        raise MissingHashKey(f"the hash key {problem}: {GOOD_KEY_ADVICE}")
