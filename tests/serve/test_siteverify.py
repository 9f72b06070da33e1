"""The CAPTCHA verifier against a real HTTP double that answers as the providers document."""

from __future__ import annotations

import logging
import time
from pathlib import Path

import pytest

from detector.challenges.siteverify import (
    PROVIDER_URLS,
    SiteVerifier,
    SiteVerifyConfig,
    SiteVerifyError,
)
from detector.errors import ConfigurationError
from detector.testing.siteverify_double import SiteVerifyDouble

SECRET = "0x4AAAAAAAsiteverify-secret"


def config_for(double: SiteVerifyDouble, secret: str = SECRET, timeout: float = 2.0) -> SiteVerifyConfig:
    env = {"DETECTOR_CAPTCHA_VERIFY_URL": double.url, "DETECTOR_CAPTCHA_SECRET": secret}
    config = SiteVerifyConfig.from_env(env)
    assert config is not None
    return SiteVerifyConfig(config.url, config.secret, timeout)


@pytest.mark.parametrize("provider", ["turnstile", "hcaptcha", "recaptcha"])
async def test_a_fresh_token_passes_once_then_fails_as_a_duplicate(provider: str) -> None:
    async with SiteVerifyDouble(SECRET, provider=provider) as double:  # type: ignore[arg-type]
        verifier = SiteVerifier(config_for(double))
        token = double.issue()
        first = await verifier.verify(token, remote_ip="203.0.113.9")
        again = await verifier.verify(token)
        await verifier.close()
    assert first.result == "passed"
    assert first.hostname == "app.example.com"
    assert again.result == "failed"
    duplicate = "invalid-or-already-seen-response" if provider == "hcaptcha" else "timeout-or-duplicate"
    assert again.error_codes == (duplicate,)
    assert double.seen[0].remoteip == "203.0.113.9"
    assert double.seen[1].remoteip is None


async def test_a_token_the_provider_never_issued_or_an_expired_one_fails() -> None:
    async with SiteVerifyDouble(SECRET) as double:
        verifier = SiteVerifier(config_for(double))
        forged = await verifier.verify("turnstile.forged")
        expired = await verifier.verify(double.issue(issued_at=time.time() - 301))
        empty = await verifier.verify("")
        await verifier.close()
    assert (forged.result, forged.error_codes) == ("failed", ("invalid-input-response",))
    assert (expired.result, expired.error_codes) == ("failed", ("timeout-or-duplicate",))
    assert (empty.result, empty.error_codes) == ("failed", ("missing-input-response",))


async def test_a_wrong_secret_is_our_fault_not_the_users_and_never_logged(
    caplog: pytest.LogCaptureFixture,
) -> None:
    wrong = "0x4AAAAAAAnot-the-secret"
    async with SiteVerifyDouble(SECRET) as double:
        verifier = SiteVerifier(config_for(double, secret=wrong))
        with caplog.at_level(logging.DEBUG), pytest.raises(SiteVerifyError) as raised:
            await verifier.verify(double.issue())
        await verifier.close()
    assert "invalid-input-secret" in str(raised.value)
    assert raised.value.retriable
    assert wrong not in caplog.text and wrong not in str(raised.value)
    assert wrong not in repr(verifier) and wrong not in repr(verifier.config)


async def test_provider_errors_and_http_errors_are_retriable_errors() -> None:
    async with SiteVerifyDouble(SECRET) as double:
        verifier = SiteVerifier(config_for(double))
        double.internal_error = True
        with pytest.raises(SiteVerifyError, match="internal-error"):
            await verifier.verify(double.issue())
        double.internal_error = False
        double.fail_with = 502
        with pytest.raises(SiteVerifyError, match="HTTP 502"):
            await verifier.verify(double.issue())
        await verifier.close()


async def test_a_slow_provider_times_out_within_the_configured_timeout() -> None:
    async with SiteVerifyDouble(SECRET) as double:
        verifier = SiteVerifier(config_for(double, timeout=0.2))
        double.slow = 5.0
        started = time.monotonic()
        with pytest.raises(SiteVerifyError, match=r"no answer within 0\.2s"):
            await verifier.verify(double.issue())
        assert time.monotonic() - started < 2.0
        await verifier.close()


async def test_an_unreachable_provider_is_a_retriable_error() -> None:
    async with SiteVerifyDouble(SECRET) as double:
        config = config_for(double)
    verifier = SiteVerifier(config)  # the double has stopped: nothing listens on its port
    with pytest.raises(SiteVerifyError):
        await verifier.verify("turnstile.any")
    await verifier.close()


def test_configuration_from_the_environment(tmp_path: Path) -> None:
    assert SiteVerifyConfig.from_env({}) is None
    secret_file = tmp_path / "captcha-secret"
    secret_file.write_text("from-a-file\n")
    config = SiteVerifyConfig.from_env(
        {"DETECTOR_CAPTCHA_PROVIDER": "hcaptcha", "DETECTOR_CAPTCHA_SECRET_FILE": str(secret_file)}
    )
    assert config is not None
    assert config.url == PROVIDER_URLS["hcaptcha"]
    assert config.secret.reveal() == "from-a-file"
    with pytest.raises(ConfigurationError, match="not one of"):
        SiteVerifyConfig.from_env({"DETECTOR_CAPTCHA_PROVIDER": "nope", "DETECTOR_CAPTCHA_SECRET": "x"})
    with pytest.raises(ConfigurationError, match="no provider"):
        SiteVerifyConfig.from_env({"DETECTOR_CAPTCHA_SECRET": "x"})
    with pytest.raises(ConfigurationError, match="no CAPTCHA secret"):
        SiteVerifyConfig.from_env({"DETECTOR_CAPTCHA_PROVIDER": "turnstile"})
