"""The HTTP decision service: the event contract over HTTP, on the engine and store the Kafka workers use.

Litestar because the contract types are msgspec Structs: it decodes, validates and encodes them natively
(one pass, the same checks as the Kafka path) and documents them in the OpenAPI document it generates.
"""

from __future__ import annotations

import asyncio
import logging
import re
import time
from dataclasses import dataclass, field
from typing import Any

import msgspec
from litestar import Litestar, MediaType, Request, Response, get, post
from litestar.exceptions import HTTPException, ValidationException
from litestar.openapi import OpenAPIConfig
from litestar.openapi.datastructures import ResponseSpec
from litestar.openapi.spec import Components, SecurityScheme
from litestar.types import ASGIApp

from detector.challenges.siteverify import SiteVerifier, SiteVerifyError
from detector.engine import Engine, FeedbackResult, Result
from detector.events import (
    FIELD_LIMITS,
    MAX_EVENT_BYTES,
    Address,
    CaptchaToken,
    ChallengeResult,
    Decision,
    Event,
    ForwardedFor,
    Identifier,
    Message,
    OtpChallenge,
    OtpFeedback,
    OtpRequest,
    Phone,
    parse_timestamp,
)
from detector.serve.auth import ApiTokens, BearerGate
from detector.serve.batcher import BatcherStopped, MicroBatcher
from detector.serve.metrics import HttpMetrics, ServeMetrics

log = logging.getLogger(__name__)

API_VERSION = "1"


# --- the bodies: the Kafka contract without `type`, with `ts` optional (the server stamps it) ---------------


class CheckBody(OtpRequest, frozen=True, tag=False, kw_only=True):
    """An `otp_request` without `type`; `ts` defaults to the server's clock and is bounded by it."""

    ts: float | str | None = None  # type: ignore[assignment]


class FeedbackBody(OtpFeedback, frozen=True, tag=False, kw_only=True):
    """An `otp_feedback` without `type`; `ts` defaults to the server's clock and is bounded by it."""

    ts: float | str | None = None  # type: ignore[assignment]


class ChallengeBody(msgspec.Struct, frozen=True, kw_only=True, omit_defaults=True):
    """A challenge's result: a trusted backend's verdict (`result`), or the CAPTCHA response `token` for the
    service to verify with the provider (with the solver's `remote_ip` if known). The `otp_challenge`
    contract without `type`, `request_id` (in the path) and `ts` (the server's clock); what the request was
    for may be repeated (`phone`, `client_ip`, `message`, ...) to have it checked and put in the decision."""

    challenge_id: Identifier
    result: ChallengeResult | None = None
    token: CaptchaToken | None = None
    remote_ip: Address | None = None
    phone: Phone | None = None
    phone_country: str | None = None
    client_ip: Address | None = None
    remote_addr: Address | None = None
    forwarded_for: ForwardedFor | None = None
    message: Message | None = None


class FeedbackAnswer(msgspec.Struct, frozen=True):
    request_id: str
    status: FeedbackResult


class ErrorBody(msgspec.Struct, frozen=True, omit_defaults=True):
    error: str
    field: str | None = None  # the offending field, as a JSON path: `$.phone`
    status: str | None = None  # the engine's status, for a challenge or feedback that yields no decision


class Health(msgspec.Struct, frozen=True, omit_defaults=True):
    status: str
    policy_version: str | None = None
    error: str | None = None


# --- errors --------------------------------------------------------------------------------


class FieldError(HTTPException):
    status_code = 422

    def __init__(self, message: str, field: str) -> None:
        super().__init__(detail=message)
        self.field = field


class StatusError(HTTPException):
    """A result that is not a decision, answered with the engine's status and the HTTP status it maps to."""

    def __init__(self, status_code: int, status: str, message: str) -> None:
        headers = {"Retry-After": "1"} if status_code == 503 else None
        super().__init__(detail=message, status_code=status_code, headers=headers)
        self.status = status


CHALLENGE_STATUSES: dict[str, tuple[int, str]] = {
    "unknown": (404, "no open challenge for this request"),
    "mismatch": (409, "not the challenge id this request was given"),
    "duplicate": (409, "this challenge already has a result"),
    "unavailable": (503, "the store did not answer; try again"),
    "unverified": (422, "the result was not accepted"),
}
FEEDBACK_STATUSES: dict[str, tuple[int, str]] = {
    "unknown": (404, "no such request (yet); try again later if it was just decided elsewhere"),
    "unavailable": (503, "the store did not answer; try again"),
}


_MISSING = re.compile(r"missing required field `([^`]+)`")


def _error(status_code: int, body: ErrorBody, headers: dict[str, str] | None = None) -> Response[ErrorBody]:
    return Response(body, status_code=status_code, headers=headers, media_type=MediaType.JSON)


def _http_error(_: Request[Any, Any, Any], exc: HTTPException) -> Response[ErrorBody]:
    headers = dict(exc.headers or {})
    if isinstance(exc, FieldError):
        return _error(422, ErrorBody(exc.detail, field=exc.field), headers)
    if isinstance(exc, StatusError):
        return _error(exc.status_code, ErrorBody(exc.detail, status=exc.status), headers)
    if isinstance(exc, ValidationException) and isinstance(exc.extra, list) and exc.extra:
        first = exc.extra[0] if isinstance(exc.extra[0], dict) else {}
        key, message = first.get("key"), str(first.get("message") or exc.detail)
        path = "$" if key in (None, "", "data") else f"$.{key}"
        missing = _MISSING.search(message)
        if missing:
            path = f"{path}.{missing.group(1)}"
        return _error(422, ErrorBody(message, field=path), headers)
    return _error(exc.status_code, ErrorBody(exc.detail), headers)


def _too_deep(_: Request[Any, Any, Any], __: RecursionError) -> Response[ErrorBody]:
    # msgspec refuses nesting past its depth limit with RecursionError, before anything reaches the engine.
    return _error(400, ErrorBody("JSON nested too deeply to read"))


def _internal_error(request: Request[Any, Any, Any], exc: Exception) -> Response[ErrorBody]:
    log.error("internal error on %s %s: %r", request.method, request.scope.get("path_template"), exc)
    return _error(500, ErrorBody("internal error"))


# --- the service --------------------------------------------------------------------------------


@dataclass
class Service:
    engine: Engine
    tokens: ApiTokens | None  # None: --insecure-local, no authentication
    verifier: SiteVerifier | None = None
    store_answered: bool = False  # since start: once it has, an outage degrades rather than unreadies
    metrics: ServeMetrics = field(default_factory=ServeMetrics)
    max_batch: int = 256
    max_in_flight: int = 1
    batcher: MicroBatcher = field(init=False)

    def __post_init__(self) -> None:
        self.batcher = MicroBatcher(
            self.engine, self.max_batch, self.max_in_flight, on_batch=self.metrics.batch
        )
        timeout = self.engine.policy.state.timeout_ms / 1000
        # The engine bounds each of its two store calls by 2 × the store's timeout; this bounds the wait in
        # the queue too, so a request never hangs whatever the store does.
        self.deadline = 4 * timeout + 1.0
        self.ping_timeout = 2 * timeout

    async def decide(self, event: Event, reference: float) -> Result:
        try:
            future = self.batcher.submit(event, reference)
        except BatcherStopped as exc:
            raise StatusError(503, "stopping", str(exc)) from None
        try:
            async with asyncio.timeout(self.deadline):
                return await future
        except TimeoutError:
            raise StatusError(503, "timeout", f"no decision within {self.deadline:g}s; try again") from None

    async def start(self) -> None:
        self.batcher.start()
        try:
            await asyncio.wait_for(self.engine.store.ping(), self.ping_timeout)
            self.store_answered = True
        except Exception as exc:
            log.warning("the store does not answer yet (%s); /readyz says so until it does", exc)

    async def stop(self) -> None:
        await self.batcher.stop()
        if self.verifier is not None:
            await self.verifier.close()
        await self.engine.store.close()


def _event_time(ts: float | str | None, now: float) -> float | str:
    if ts is None:
        return now
    try:
        parse_timestamp(ts)
    except ValueError as exc:
        raise FieldError(str(exc), "$.ts") from None
    return ts


def create_app(service: Service) -> ASGIApp:
    """The ASGI application (Litestar inside a metrics wrapper) serving `service`."""
    # Checked by `BearerGate` in front of the framework; declared here for the OpenAPI document.
    protected: dict[str, Any] = {"security": [{"bearer": []}] if service.tokens else None}
    errors = {
        401: ResponseSpec(ErrorBody, description="Missing or wrong bearer token"),
        413: ResponseSpec(ErrorBody, description=f"Body over {MAX_EVENT_BYTES} bytes"),
        422: ResponseSpec(ErrorBody, description="A field is invalid; `field` names it"),
        503: ResponseSpec(ErrorBody, description="Unavailable (store, provider): try again"),
    }

    @post("/v1/checks", status_code=200, operation_id="check", responses=errors, **protected)
    async def check(data: CheckBody) -> Decision:
        """Decide an OTP request: allow, delay (retry after `retry_after`), challenge or block; why."""
        now = time.time()
        fields = msgspec.structs.asdict(data)
        fields["ts"] = _event_time(data.ts, now)
        result = await service.decide(OtpRequest(**fields), now)
        if not isinstance(result, Decision):
            raise StatusError(503, "unavailable", "no decision")  # the engine answers a request with one
        return result

    @post(
        "/v1/feedback",
        status_code=200,
        operation_id="feedback",
        responses={**errors, 404: ResponseSpec(ErrorBody, description="No such request")},
        **protected,
    )
    async def feedback(data: FeedbackBody) -> FeedbackAnswer:
        """Report what became of an OTP: verified, failed, or completed another way."""
        now = time.time()
        event = OtpFeedback(request_id=data.request_id, ts=_event_time(data.ts, now), outcome=data.outcome)
        status = await service.decide(event, now)
        if not isinstance(status, str):
            raise StatusError(503, "unavailable", "no feedback status")
        if status in FEEDBACK_STATUSES:
            code, message = FEEDBACK_STATUSES[status]
            raise StatusError(code, status, message)
        return FeedbackAnswer(data.request_id, status)  # type: ignore[arg-type]

    @post(
        "/v1/challenges/{request_id:str}",
        status_code=200,
        operation_id="challenge_result",
        responses={
            **errors,
            404: ResponseSpec(ErrorBody, description="No open challenge for this request"),
            409: ResponseSpec(ErrorBody, description="Another challenge id, or already resolved"),
        },
        **protected,
    )
    async def challenge(request_id: str, data: ChallengeBody) -> Decision:
        """Report a challenge's result, or hand over the CAPTCHA token to verify; answers the new decision."""
        now = time.time()
        if len(request_id) > FIELD_LIMITS["request_id"]:
            raise FieldError(
                f"`request_id` is longer than {FIELD_LIMITS['request_id']} characters", "request_id"
            )
        fields = msgspec.structs.asdict(data)
        try:
            event = OtpChallenge(request_id=request_id, ts=now, **fields)
        except ValueError as exc:
            raise FieldError(str(exc).split(" - at ")[0], _field_of(str(exc))) from None
        if event.token is not None:
            fields.update(result=await _verify(service, event.token, event.remote_ip), token=None)
            event = OtpChallenge(request_id=request_id, ts=now, **fields)
        result = await service.decide(event, now)
        if isinstance(result, Decision):
            return result
        status = result if isinstance(result, str) else "unverified"
        code, message = CHALLENGE_STATUSES.get(status, (422, "the result was not accepted"))
        raise StatusError(code, status, message)

    @get("/healthz", operation_id="alive", media_type=MediaType.JSON)
    async def healthz() -> Health:
        """Alive: the process answers."""
        return Health("alive")

    @get(
        "/readyz",
        operation_id="ready",
        responses={503: ResponseSpec(Health, description="Not ready: the store does not answer")},
    )
    async def readyz() -> Response[Health]:
        """Ready: the policy is loaded and the store answers within its timeout."""
        version = service.engine.policy.version
        try:
            await asyncio.wait_for(service.engine.store.ping(), service.ping_timeout)
        except Exception as exc:
            error = f"store: {exc}"[:300]
            if service.store_answered and service.engine.policy.state.on_error == "degrade":
                # Still deciding, with limits per process: out of the Service, every check would fail.
                return Response(Health("degraded", version, error))
            return Response(Health("unavailable", version, error), status_code=503)
        service.store_answered = True
        return Response(Health("ready", version))

    @get("/metrics", include_in_schema=False, media_type="text/plain; version=0.0.4; charset=utf-8")
    async def metrics() -> bytes:
        return service.metrics.exposition()

    app = Litestar(
        route_handlers=[check, feedback, challenge, healthz, readyz, metrics],
        on_startup=[service.start],
        on_shutdown=[service.stop],
        exception_handlers={
            HTTPException: _http_error,
            RecursionError: _too_deep,
            Exception: _internal_error,
        },
        request_max_body_size=MAX_EVENT_BYTES,
        openapi_config=OpenAPIConfig(
            title="sms-pumping-detector",
            version=API_VERSION,
            description="Decide OTP requests before they are sent: allow, delay, challenge, block; why.",
            components=Components(security_schemes={"bearer": SecurityScheme(type="http", scheme="bearer")}),
        ),
        logging_config=None,
    )
    gated: ASGIApp = BearerGate(app, service.tokens) if service.tokens is not None else app
    return HttpMetrics(gated, service.metrics)


async def _verify(service: Service, token: str, remote_ip: str | None) -> ChallengeResult:
    if service.verifier is None:
        raise FieldError(
            "this service verifies no CAPTCHA tokens (no provider configured): send `result`", "$.token"
        )
    try:
        verdict = await service.verifier.verify(token, remote_ip)
    except SiteVerifyError as exc:
        service.metrics.siteverify.labels("error").inc()
        raise StatusError(503, "siteverify_unavailable", str(exc)) from None
    service.metrics.siteverify.labels(verdict.result).inc()
    return verdict.result


def _field_of(message: str) -> str:
    _, _, at = message.partition(" - at `")
    return at.rstrip("`") if at else "$"


__all__ = ["Service", "create_app"]
