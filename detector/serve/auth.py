"""Bearer tokens of `detector serve`: from the environment or a file, compared in constant time, never shown.

`DETECTOR_API_TOKENS`: tokens separated by commas; `DETECTOR_API_TOKENS_FILE`: a file with one token a line
(blank lines and `#` comments ignored), e.g. a mounted Kubernetes secret. Several tokens let a caller's token
be rotated without downtime. A presented token is compared with every configured one, without stopping at a
match, and as SHA-256 digests so that `hmac.compare_digest` sees equal lengths: the time taken says nothing
about which token matched or how long the tokens are.
"""

from __future__ import annotations

import hashlib
import hmac
import os
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from detector.errors import ConfigurationError

API_TOKENS_ENV = "DETECTOR_API_TOKENS"
API_TOKENS_FILE_ENV = f"{API_TOKENS_ENV}_FILE"
MIN_TOKEN_LENGTH = 16


class ApiTokens:
    __slots__ = ("_digests",)

    def __init__(self, tokens: Iterable[str]) -> None:
        tokens = list(tokens)
        if not tokens:
            raise ConfigurationError("no API tokens given")
        for position, token in enumerate(tokens, 1):
            if len(token) < MIN_TOKEN_LENGTH or not all("!" <= ch <= "~" for ch in token):
                # Position only: the message must not carry any part of a token.
                raise ConfigurationError(
                    f"API token {position} is too short or not printable ASCII: use at least "
                    f"{MIN_TOKEN_LENGTH} characters without spaces (e.g. `openssl rand -hex 32`)"
                )
        self._digests = tuple(_digest(token) for token in tokens)

    def __repr__(self) -> str:
        return f"ApiTokens({len(self._digests)} tokens)"

    def __len__(self) -> int:
        return len(self._digests)

    def accepts(self, authorization: str | None) -> bool:
        """Whether an `Authorization` header value carries one of the tokens (`Bearer <token>`)."""
        if authorization is None:
            return False
        scheme, _, presented = authorization.partition(" ")
        if scheme.lower() != "bearer":
            return False
        digest = _digest(presented.strip())
        matched = False
        for known in self._digests:
            matched |= hmac.compare_digest(digest, known)
        return matched

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> ApiTokens | None:
        """The tokens set in `env` (default: the process environment), or None when neither variable is."""
        env = os.environ if env is None else env
        listed, path = env.get(API_TOKENS_ENV), env.get(API_TOKENS_FILE_ENV)
        if listed is not None and path is not None:
            raise ConfigurationError(f"both {API_TOKENS_ENV} and {API_TOKENS_FILE_ENV} are set; set one")
        if listed is not None:
            tokens = [token.strip() for token in listed.split(",") if token.strip()]
            source = f"${API_TOKENS_ENV}"
        elif path is not None:
            try:
                lines = Path(path).read_text(encoding="utf-8").splitlines()
            except (OSError, UnicodeDecodeError) as exc:
                raise ConfigurationError(
                    f"{API_TOKENS_FILE_ENV} points to {path!r}, which cannot be read: "
                    f"{getattr(exc, 'strerror', None) or type(exc).__name__}"
                ) from None
            tokens = [line.strip() for line in lines if line.strip() and not line.strip().startswith("#")]
            source = f"the file at ${API_TOKENS_FILE_ENV} ({path})"
        else:
            return None
        if not tokens:
            raise ConfigurationError(f"{source} holds no token")
        try:
            return cls(tokens)
        except ConfigurationError as exc:
            raise ConfigurationError(f"{source}: {exc}") from None


_UNAUTHORIZED = b'{"error":"a valid `Authorization: Bearer <token>` header is required"}'


class BearerGate:
    """ASGI wrapper: calls under `prefix` need one of `tokens`, else 401 with `WWW-Authenticate: Bearer`.

    In front of the framework rather than a route guard: a refused call is answered before its body is
    read, and the check costs a header lookup (Litestar copies the route handler for every guard call).
    """

    def __init__(self, app: Any, tokens: ApiTokens, prefix: str = "/v1/") -> None:
        self.app = app
        self.tokens = tokens
        self.prefix = prefix

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "http" and scope["path"].startswith(self.prefix):
            header = next((value for name, value in scope["headers"] if name == b"authorization"), None)
            if not self.tokens.accepts(header.decode("latin-1") if header is not None else None):
                await send(
                    {
                        "type": "http.response.start",
                        "status": 401,
                        "headers": [
                            (b"content-type", b"application/json"),
                            (b"content-length", str(len(_UNAUTHORIZED)).encode()),
                            (b"www-authenticate", b"Bearer"),
                        ],
                    }
                )
                await send({"type": "http.response.body", "body": _UNAUTHORIZED})
                return
        await self.app(scope, receive, send)


def _digest(token: str) -> bytes:
    return hashlib.sha256(token.encode("utf-8", "surrogateescape")).digest()
