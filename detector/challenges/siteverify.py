"""A CAPTCHA response token checked with its provider: Cloudflare Turnstile, hCaptcha or reCAPTCHA.

The three share one shape: POST a form with `secret`, `response` and optionally `remoteip` to the provider's
siteverify URL; the JSON answer has `success` and, when it is false, `error-codes`. What the answer means for
a challenge:

* `success: true` → `passed`;
* `success: false` with only codes that describe the *token* (missing, invalid, expired or already used) →
  `failed`: the solver did not pass;
* anything else (HTTP errors, timeouts, an unreadable answer, codes that describe *our* request: a missing or
  invalid secret, `bad-request`, `internal-error`) → `SiteVerifyError`: nobody knows whether the user passed,
  so the caller answers "try again" rather than failing a user for our misconfiguration.

Configuration: `DETECTOR_CAPTCHA_PROVIDER` (turnstile | hcaptcha | recaptcha) or `DETECTOR_CAPTCHA_VERIFY_URL`
(any siteverify URL),
and the secret from `DETECTOR_CAPTCHA_SECRET` or the file at `DETECTOR_CAPTCHA_SECRET_FILE`. The secret is a
`Secret`: it never shows in a repr, a log or an exception.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

import httpx

from detector.errors import ConfigurationError, UnavailableError
from detector.events import ChallengeResult
from detector.send.secrets import Secret, SecretError, load_api_key

log = logging.getLogger(__name__)

PROVIDER_ENV = "DETECTOR_CAPTCHA_PROVIDER"
VERIFY_URL_ENV = "DETECTOR_CAPTCHA_VERIFY_URL"
SECRET_ENV = "DETECTOR_CAPTCHA_SECRET"
SECRET_FILE_ENV = f"{SECRET_ENV}_FILE"
TIMEOUT_ENV = "DETECTOR_CAPTCHA_TIMEOUT"

Provider = Literal["turnstile", "hcaptcha", "recaptcha"]
# The siteverify URLs each provider documents.
PROVIDER_URLS: dict[str, str] = {
    "turnstile": "https://challenges.cloudflare.com/turnstile/v0/siteverify",
    "hcaptcha": "https://api.hcaptcha.com/siteverify",
    "recaptcha": "https://www.google.com/recaptcha/api/siteverify",
}
# Codes about the token the user handed in: a verdict on the user, not a fault of ours.
TOKEN_CODES = frozenset(
    {
        "missing-input-response",
        "invalid-input-response",
        "timeout-or-duplicate",
        "invalid-or-already-seen-response",  # hCaptcha's spelling of timeout-or-duplicate
    }
)
DEFAULT_TIMEOUT = 3.0


class SiteVerifyError(UnavailableError):
    """The provider gave no verdict (unreachable, slow, an error, or it refused our secret): try again."""


@dataclass(frozen=True, slots=True)
class Verdict:
    result: ChallengeResult
    error_codes: tuple[str, ...] = ()
    hostname: str | None = None


@dataclass(frozen=True)
class SiteVerifyConfig:
    url: str
    secret: Secret = field(repr=False)
    timeout: float = DEFAULT_TIMEOUT

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> SiteVerifyConfig | None:
        """The configuration in `env` (default: the process environment), or None when none is set."""
        env = os.environ if env is None else env
        provider, url = env.get(PROVIDER_ENV), env.get(VERIFY_URL_ENV)
        has_secret = SECRET_ENV in env or SECRET_FILE_ENV in env
        if provider is None and url is None and not has_secret:
            return None
        if url is None:
            if provider is None:
                raise ConfigurationError(
                    f"a CAPTCHA secret is set but no provider: set {PROVIDER_ENV} "
                    f"({' | '.join(PROVIDER_URLS)}) or {VERIFY_URL_ENV}"
                )
            if provider not in PROVIDER_URLS:
                raise ConfigurationError(
                    f"{PROVIDER_ENV}={provider!r} is not one of {', '.join(PROVIDER_URLS)} "
                    f"(or set {VERIFY_URL_ENV} to the siteverify URL)"
                )
            url = PROVIDER_URLS[provider]
        elif not url.startswith(("https://", "http://")):
            raise ConfigurationError(f"{VERIFY_URL_ENV} must be an http(s) URL")
        try:
            secret = load_api_key(env, name=SECRET_ENV, file_name=SECRET_FILE_ENV, what="CAPTCHA secret")
        except SecretError as exc:
            raise ConfigurationError(f"CAPTCHA secret: {exc}") from None
        try:
            timeout = float(env.get(TIMEOUT_ENV, DEFAULT_TIMEOUT))
        except ValueError:
            raise ConfigurationError(f"{TIMEOUT_ENV} must be seconds, e.g. 3") from None
        if not 0 < timeout <= 60:
            raise ConfigurationError(f"{TIMEOUT_ENV} must be between 0 and 60 seconds")
        return cls(url=url, secret=secret, timeout=timeout)


class SiteVerifier:
    """Verifies response tokens with one provider over one pooled async HTTP client."""

    def __init__(self, config: SiteVerifyConfig, client: httpx.AsyncClient | None = None) -> None:
        self.config = config
        self._client = client or httpx.AsyncClient(timeout=config.timeout)

    def __repr__(self) -> str:
        return f"SiteVerifier(url={self.config.url!r})"

    async def verify(self, token: str, remote_ip: str | None = None) -> Verdict:
        form = {"secret": self.config.secret.reveal(), "response": token}
        if remote_ip:
            form["remoteip"] = remote_ip
        try:
            response = await self._client.post(self.config.url, data=form, timeout=self.config.timeout)
        except httpx.TimeoutException:
            raise self._error(f"no answer within {self.config.timeout:g}s") from None
        except httpx.HTTPError as exc:
            raise self._error(type(exc).__name__) from None
        if response.status_code != 200:
            raise self._error(f"HTTP {response.status_code}")
        try:
            answer: Any = response.json()
        except ValueError:
            raise self._error("an answer that is not JSON") from None
        if not isinstance(answer, dict) or not isinstance(answer.get("success"), bool):
            raise self._error("an answer without a boolean `success`")
        codes = answer.get("error-codes") or []
        codes = tuple(str(code) for code in codes) if isinstance(codes, list) else ()
        hostname = answer.get("hostname") if isinstance(answer.get("hostname"), str) else None
        if answer["success"]:
            return Verdict("passed", codes, hostname)
        if codes and set(codes) <= TOKEN_CODES:
            return Verdict("failed", codes, hostname)
        raise self._error(f"success false with error codes {list(codes) or 'none'}")

    def _error(self, what: str) -> SiteVerifyError:
        # The URL and what went wrong; never the form (it holds the secret and the user's token).
        log.warning("CAPTCHA siteverify at %s failed: %s", self.config.url, what)
        return SiteVerifyError(f"the CAPTCHA provider gave no verdict: {what}")

    async def close(self) -> None:
        await self._client.aclose()
