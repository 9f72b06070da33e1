"""Keyed hashes of phone numbers and IPs: what reaches a store instead of the values themselves."""

from __future__ import annotations

import hashlib
import os
import secrets
from pathlib import Path

from detector.errors import ConfigurationError

HASH_KEY_ENV = "DETECTOR_HASH_KEY"
HASH_KEY_FILE_ENV = "DETECTOR_HASH_KEY_FILE"
MIN_KEY_BYTES = 16


class MissingHashKey(ConfigurationError):
    pass


class KeyedHasher:
    """BLAKE2b in keyed mode (a MAC): without the key, a stored hash cannot be tested against a guess."""

    __slots__ = ("_key",)

    def __init__(self, key: bytes) -> None:
        if len(key) < MIN_KEY_BYTES:
            raise ValueError(f"the hash key must be at least {MIN_KEY_BYTES} bytes")
        self._key = key[:64]

    def __call__(self, kind: str, value: str) -> str:
        digest = hashlib.blake2b(value.encode(), key=self._key, digest_size=12, person=kind.encode()[:16])
        return digest.hexdigest()

    def __repr__(self) -> str:
        return "KeyedHasher(key=****)"


def load_hash_key(*, required: bool) -> bytes:
    """The key from DETECTOR_HASH_KEY or the file named by DETECTOR_HASH_KEY_FILE.

    Without either, an in-process run gets a random key (its hashes only need to agree with themselves);
    anything that shares state between processes must have the same key everywhere, so it is required.
    """
    value = os.environ.get(HASH_KEY_ENV)
    path = os.environ.get(HASH_KEY_FILE_ENV)
    if value is None and path:
        try:
            value = Path(path).read_text().strip()
        except OSError as exc:
            raise MissingHashKey(f"cannot read {HASH_KEY_FILE_ENV}={path}: {exc.strerror}") from exc
    if value:
        key = value.encode()
        if len(key) < MIN_KEY_BYTES:
            raise MissingHashKey(f"{HASH_KEY_ENV} must be at least {MIN_KEY_BYTES} characters long")
        return key
    if required:
        raise MissingHashKey(
            f"shared state needs a hash key: set {HASH_KEY_ENV} (at least {MIN_KEY_BYTES} random characters, "
            f"e.g. `export {HASH_KEY_ENV}=$(openssl rand -hex 32)`) or {HASH_KEY_FILE_ENV}=/path/to/secret"
        )
    return secrets.token_bytes(32)
