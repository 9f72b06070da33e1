"""A stand-in for a CAPTCHA provider's siteverify endpoint on loopback: Turnstile, hCaptcha or reCAPTCHA.

It answers as the providers document: a POSTed form with `secret`, `response` and optional `remoteip`;
a JSON answer with `success`, `error-codes` and, on success, `challenge_ts` and `hostname`. Tokens are
issued by the double itself (`double.issue()`, what a user's solved widget would hand the backend); each
verifies once, within `token_ttl` seconds (300, as the providers document), and is then spent.

Error codes, as each provider names them:

* `missing-input-secret` / `invalid-input-secret`: no secret, or not the double's;
* `missing-input-response` / `invalid-input-response`: no token, or one the double never issued;
* `timeout-or-duplicate` (hCaptcha: `invalid-or-already-seen-response`): a token used before or expired;
* `bad-request`: not a POSTed form.

Faults for tests: `slow = seconds` delays every answer; `fail_with = 500` answers that HTTP status;
`internal_error = True` answers `success: false` with Turnstile's `internal-error`.

    async with SiteVerifyDouble(secret="s3cret", provider="turnstile") as double:
        token = double.issue()
        ... POST double.url ...
        double.seen  # [(form fields without the secret), ...]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import secrets
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Literal

from aiohttp import web

from detector.testing.loopback import LoopbackServer

Provider = Literal["turnstile", "hcaptcha", "recaptcha"]
TOKEN_TTL = 300.0


@dataclass(frozen=True, slots=True)
class SeenVerify:
    response: str | None
    remoteip: str | None
    had_secret: bool


class SiteVerifyDouble(LoopbackServer):
    def __init__(
        self,
        secret: str,
        *,
        provider: Provider = "turnstile",
        hostname: str = "app.example.com",
        token_ttl: float = TOKEN_TTL,
        port: int = 0,
    ) -> None:
        self._secret = secret
        self.provider = provider
        self.hostname = hostname
        self.token_ttl = token_ttl
        super().__init__(port)
        self.slow = 0.0
        self.fail_with: int | None = None
        self.internal_error = False
        self.seen: list[SeenVerify] = []
        self._issued: dict[str, float] = {}
        self._spent: set[str] = set()

    def __repr__(self) -> str:
        return f"SiteVerifyDouble(provider={self.provider!r}, port={self.port})"

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/siteverify"

    def issue(self, *, issued_at: float | None = None) -> str:
        """A token as a solved widget would hand it over (`issued_at` in the past makes it expired)."""
        token = f"{self.provider}.{secrets.token_urlsafe(24)}"
        self._issued[token] = time.time() if issued_at is None else issued_at
        return token

    def routes(self, app: web.Application) -> None:
        app.router.add_route("*", "/siteverify", self._handle)

    async def _handle(self, request: web.Request) -> web.Response:
        if self.slow:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stopping.wait(), self.slow)
        if self.fail_with is not None:
            return web.Response(status=self.fail_with, text="upstream error")
        if request.method != "POST" or request.content_type not in (
            "application/x-www-form-urlencoded",
            "multipart/form-data",
        ):
            return self._answer(False, "bad-request")
        form = await request.post()
        secret, response, remoteip = (_field(form, name) for name in ("secret", "response", "remoteip"))
        self.seen.append(SeenVerify(response, remoteip, secret is not None))
        if self.internal_error:
            return self._answer(False, "internal-error")
        if not secret:
            return self._answer(False, "missing-input-secret")
        if not secrets.compare_digest(secret.encode(), self._secret.encode()):
            return self._answer(False, "invalid-input-secret")
        if not response:
            return self._answer(False, "missing-input-response")
        issued = self._issued.get(response)
        if issued is None:
            return self._answer(False, "invalid-input-response")
        if response in self._spent or time.time() - issued > self.token_ttl:
            duplicate = "invalid-or-already-seen-response" if self.provider == "hcaptcha" else None
            return self._answer(False, duplicate or "timeout-or-duplicate")
        self._spent.add(response)
        return self._answer(True, challenge_ts=datetime.fromtimestamp(issued, UTC).isoformat())

    def _answer(self, success: bool, *codes: str, challenge_ts: str | None = None) -> web.Response:
        body: dict[str, Any] = {"success": success, "error-codes": list(codes)}
        if success:
            body["challenge_ts"] = challenge_ts
            body["hostname"] = self.hostname
            if self.provider == "turnstile":
                body.update(action="", cdata="")
            elif self.provider == "hcaptcha":
                body["credit"] = False
        return web.json_response(body)


def _field(form: Any, name: str) -> str | None:
    value = form.get(name)
    return value if isinstance(value, str) else None


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Serve a CAPTCHA siteverify double on 127.0.0.1.")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--provider", choices=["turnstile", "hcaptcha", "recaptcha"], default="turnstile")
    parser.add_argument("--secret", required=True)
    args = parser.parse_args(argv)

    async def serve() -> None:
        async with SiteVerifyDouble(args.secret, provider=args.provider, port=args.port) as double:
            print(f"siteverify double listening on {double.url}", flush=True)
            await asyncio.Event().wait()

    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(serve())


if __name__ == "__main__":
    main()
