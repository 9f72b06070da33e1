"""A stand-in for 8x8's SMS API on loopback that holds every request to 8x8's own OpenAPI document.

Every request is checked against ``sms-api.openapi.json`` (with openapi-core): the path and method
exist, path parameters match (sub-account pattern), ``Authorization: Bearer`` is there, and the JSON
body matches the operation's schema. A request that breaks the contract is answered as 8x8 describes
(400, or 401 without credentials, with ``{code, message, errorId, timestamp}``) and is recorded in
``double.violations``, so a test can assert there were none. A well-formed request with the wrong key
gets 401 too, but that is a configuration error, not a contract violation.

What it implements: send one (``Send-Sms-Single``), send a batch (``Send-Many-Sms``) and outcome
feedback (``api-Sms-Feedback``). Other operations of the document pass the contract check and are
answered 501.

Usage from pytest::

    async with EightByEightDouble(api_key="test-key") as double:
        config = EightByEightConfig("acme-otp", ApiKey("test-key"), base_url=double.base_url)
        client = EightByEightClient(config)
        ...
        assert double.violations == []
        assert [m.client_message_id for m in double.sent] == ["req-1"]

Faults, applied after the contract check: ``double.inject(RateLimited("2"), ServerError())`` for the
next requests in turn; ``double.add_rule(Slow(5), when=lambda r: r.operation == "Send-Many-Sms")``
for every matching request; ``double.reject("+6591234567")`` answers ``REJECTED`` for one number.

For a benchmark, in a background thread (``with double.in_thread(): ...``) or as a process::

    python -m detector.testing.eightbyeight_double --port 8088 --api-key-env EIGHTBYEIGHT_API_KEY

The documents are found at ``../shared/8x8`` from the repository root, or in ``$DETECTOR_8X8_SPECS``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import re
import socket
import threading
import uuid
from collections.abc import Awaitable, Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

from aiohttp import web
from openapi_core import Config, OpenAPI
from openapi_core.datatypes import RequestParameters
from openapi_core.templating.paths.exceptions import OperationNotFound, PathNotFound
from openapi_core.validation.request.exceptions import SecurityValidationError
from openapi_core.validation.response.exceptions import MissingData

from detector.send.secrets import Secret

SPECS_ENV = "DETECTOR_8X8_SPECS"
SMS_API = "sms-api.openapi.json"

SEND = "Send-Sms-Single"
BATCH = "Send-Many-Sms"
FEEDBACK = "api-Sms-Feedback"

# Error codes: 1200, 1300 and 2000 appear in the document's examples; 1000 (the request breaks the
# contract) is the double's own.
CONTRACT_CODE = 1000
UNAUTHENTICATED = (1200, "Request was not authenticated properly")
NOT_FOUND_CODE = 1300
INTERNAL = (2000, "Internal server error")
QUEUED_TEXT = "SMS is accepted and queued for processing"
INVALID_MSISDN = "Invalid MSISDN format (not E.164 international number)"

_BODY = web.RequestKey("body", dict)  # the request's JSON body, once it has passed the contract check


def specs_dir() -> Path:
    """Where 8x8's OpenAPI documents are: $DETECTOR_8X8_SPECS, else ../shared/8x8 from the repo root."""
    configured = os.environ.get(SPECS_ENV)
    path = Path(configured) if configured else Path(__file__).resolve().parents[2].parent / "shared" / "8x8"
    if not (path / SMS_API).is_file():
        raise FileNotFoundError(
            f"8x8's OpenAPI documents are not at {path} (no {SMS_API}); "
            f"set {SPECS_ENV} to the directory that holds them"
        )
    return path


# --- the contract -----------------------------------------------------------------------------------


@dataclass(slots=True)
class _Request:
    """What openapi-core needs to know of a request (its `Request` protocol)."""

    host_url: str
    path: str
    method: str
    body: bytes | None
    content_type: str
    parameters: RequestParameters


@dataclass(frozen=True, slots=True)
class _Response:
    """What openapi-core needs to know of a response (its `Response` protocol)."""

    status_code: int
    data: bytes | None
    content_type: str
    headers: Mapping[str, str]


@dataclass(frozen=True, slots=True)
class ContractErrors:
    kind: Literal["unauthenticated", "no_such_path", "no_such_method", "invalid"]
    messages: list[str]


class Contract:
    """8x8's SMS API document, for checking requests (and, in tests, the double's own responses).

    The document declares ``track`` with ``default: null`` although the field is not nullable, which
    strict OpenAPI 3.0 validation of the document itself refuses; requests are still checked against
    every schema in it.
    """

    def __init__(self, path: Path | None = None) -> None:
        path = path or specs_dir() / SMS_API
        self.document: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
        self.server_url: str = self.document["servers"][0]["url"]
        self._openapi = OpenAPI.from_dict(self.document, config=Config(spec_validator_cls=None))

    def request_errors(
        self, method: str, path: str, headers: Mapping[str, str], body: bytes, content_type: str
    ) -> ContractErrors | None:
        request = self._request(method, path, headers, body, content_type)
        errors = list(self._openapi.iter_apicall_request_errors(request))
        if not errors:
            return None
        kind: Literal["unauthenticated", "no_such_path", "no_such_method", "invalid"] = "invalid"
        if any(isinstance(e, PathNotFound) for e in errors):
            kind = "no_such_path"
        elif any(isinstance(e, OperationNotFound) for e in errors):
            kind = "no_such_method"
        elif any(isinstance(e, SecurityValidationError) for e in errors):
            kind = "unauthenticated"
        return ContractErrors(kind, [line for e in errors for line in _explain(e)])

    def response_errors(
        self,
        method: str,
        path: str,
        status: int,
        body: bytes,
        *,
        content_type: str = "application/json",
        headers: Mapping[str, str] | None = None,
    ) -> list[str]:
        """What is wrong with a response to `method path` (the request itself is not re-checked)."""
        request = self._request(method, path, {}, b"", "application/json")
        response = _Response(status, body, content_type, headers or {})
        errors = list(self._openapi.iter_apicall_response_errors(request, response))
        if not body and self._documents_no_body(method, path, status):
            # `content: {}` documents an empty answer, which openapi-core reads as "data is missing".
            errors = [e for e in errors if not isinstance(e, MissingData)]
        return [line for e in errors for line in _explain(e)]

    def path_parameter_pattern(self, operation_path: str, name: str) -> str:
        """The `pattern` of a path parameter, following $refs (for tests that pin the client to it)."""
        for parameter in self.document["paths"][operation_path]["post"]["parameters"]:
            parameter = self._resolve(parameter)
            if parameter["name"] == name:
                return str(parameter["schema"]["pattern"])
        raise KeyError(name)

    def _documents_no_body(self, method: str, path: str, status: int) -> bool:
        for template, item in self.document["paths"].items():
            operation = item.get(method.lower())
            if operation is not None and re.fullmatch(re.sub(r"\{[^}/]+\}", "[^/]+", template), path):
                response = self._resolve(operation["responses"].get(str(status), {}))
                return response.get("content") == {}
        return False

    def _resolve(self, node: dict[str, Any]) -> dict[str, Any]:
        while "$ref" in node:
            target: Any = self.document
            for part in node["$ref"].removeprefix("#/").split("/"):
                target = target[
                    part.replace("%7B", "{").replace("%7D", "}").replace("~1", "/").replace("~0", "~")
                ]
            node = target
        return node

    def _request(
        self, method: str, path: str, headers: Mapping[str, str], body: bytes, content_type: str
    ) -> _Request:
        return _Request(
            self.server_url, path, method.lower(), body, content_type, RequestParameters(header=headers)
        )


def _explain(error: BaseException) -> list[str]:
    """openapi-core's error, with the schema errors underneath it, as one line each."""
    cause = error.__cause__
    schema_errors = getattr(cause, "schema_errors", None) or ()
    name = getattr(error, "name", None)
    if name is not None and schema_errors:  # a parameter
        where = f"{getattr(error, 'location', 'path')} parameter {name}"
        return [f"{where}: {e.message}" for e in schema_errors]
    if schema_errors:  # the body
        return [f"body {_json_path(e.absolute_path)}: {e.message}" for e in schema_errors]
    return [f"{error}: {cause}" if cause is not None and str(cause) not in str(error) else str(error)]


def _json_path(parts: Iterable[str | int]) -> str:
    return "$" + "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in parts)


# --- what the double records and the faults it can play ---------------------------------------------


@dataclass(frozen=True, slots=True)
class Violation:
    method: str
    path: str
    errors: list[str]


@dataclass(frozen=True, slots=True)
class Seen:
    """A request as it arrived; `body` is the parsed JSON (None if absent or not JSON)."""

    method: str
    path: str
    operation: str | None
    body: Any


@dataclass(frozen=True, slots=True)
class SentSms:
    umid: str
    sub_account_id: str
    destination: str
    text: str
    client_message_id: str | None
    client_ip: str | None
    track: str | None
    batch_id: str | None = None


@dataclass(frozen=True, slots=True)
class FeedbackPost:
    umid: str
    sub_account_id: str
    outcome: str
    timestamp: str | None


@dataclass(frozen=True, slots=True)
class RateLimited:
    """429 with a Retry-After header (seconds, or an HTTP-date)."""

    retry_after: str = "1"


@dataclass(frozen=True, slots=True)
class ServerError:
    status: int = 500
    retry_after: str | None = None


@dataclass(frozen=True, slots=True)
class Slow:
    """Answer normally, but only after `seconds` (or as soon as the double stops)."""

    seconds: float


@dataclass(frozen=True, slots=True)
class Drop:
    """Close the connection without answering."""


Fault = RateLimited | ServerError | Slow | Drop


@dataclass(slots=True)
class _Rule:
    fault: Fault
    when: Callable[[Seen], bool]


# --- the server -------------------------------------------------------------------------------------


class EightByEightDouble:
    def __init__(self, api_key: str | Secret, *, contract: Contract | None = None, port: int = 0) -> None:
        self._api_key = api_key.reveal() if isinstance(api_key, Secret) else api_key
        self.contract = contract or Contract()
        self.port = port
        self.requests: list[Seen] = []
        self.violations: list[Violation] = []
        self.sent: list[SentSms] = []
        self.rejected: list[SentSms] = []
        self.feedback: list[FeedbackPost] = []
        self.batches: list[str] = []
        self._queued_faults: list[Fault] = []
        self._rules: list[_Rule] = []
        self._rejections: dict[str, str] = {}
        self._runner: web.AppRunner | None = None
        self._stopping = asyncio.Event()

    # faults

    def inject(self, *faults: Fault) -> None:
        """The next requests that pass the contract check get these faults, one each, in order."""
        self._queued_faults.extend(faults)

    def add_rule(self, fault: Fault, when: Callable[[Seen], bool] = lambda seen: True) -> None:
        """Every request for which `when` is true gets `fault` (after any injected ones run out)."""
        self._rules.append(_Rule(fault, when))

    def reject(self, destination: str, description: str = INVALID_MSISDN) -> None:
        """Answer 200 with status REJECTED for messages to this number (single or in a batch)."""
        self._rejections[destination.lstrip("+")] = description

    def clear_faults(self) -> None:
        self._queued_faults.clear()
        self._rules.clear()
        self._rejections.clear()

    # lifecycle

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def start(self) -> None:
        app = web.Application(middlewares=[self._check_contract])
        app.router.add_post("/api/v1/subaccounts/{subAccountId}/messages", self._send, name=SEND)
        app.router.add_post("/api/v1/subaccounts/{subAccountId}/messages/batch", self._send_batch, name=BATCH)
        app.router.add_post(
            "/api/v1/subaccounts/{subAccountId}/messages/{umid}/feedback", self._feedback, name=FEEDBACK
        )
        app.router.add_route("*", "/{tail:.*}", self._not_implemented)
        self._stopping = asyncio.Event()
        self._runner = web.AppRunner(app, access_log=None, shutdown_timeout=1.0)
        await self._runner.setup()
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(("127.0.0.1", self.port))
        self.port = sock.getsockname()[1]
        await web.SockSite(self._runner, sock).start()

    async def stop(self) -> None:
        self._stopping.set()
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def __aenter__(self) -> EightByEightDouble:
        await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.stop()

    @contextlib.contextmanager
    def in_thread(self) -> Iterator[EightByEightDouble]:
        """Serve from an event loop in a background thread (for benchmarks and synchronous code)."""
        loop = asyncio.new_event_loop()
        ready = threading.Event()
        failure: list[BaseException] = []

        def serve() -> None:
            asyncio.set_event_loop(loop)
            try:
                loop.run_until_complete(self.start())
            except BaseException as exc:  # reported to the caller below
                failure.append(exc)
                return
            finally:
                ready.set()
            loop.run_forever()
            loop.run_until_complete(self.stop())
            loop.close()

        thread = threading.Thread(target=serve, name="8x8-double", daemon=True)
        thread.start()
        ready.wait()
        if failure:
            raise failure[0]
        try:
            yield self
        finally:
            loop.call_soon_threadsafe(loop.stop)
            thread.join()

    # every request: contract, key, faults

    @web.middleware
    async def _check_contract(
        self, request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
    ) -> web.StreamResponse:
        raw = await request.read()
        operation = request.match_info.route.name
        seen = Seen(request.method, request.path, operation, _parse(raw))
        self.requests.append(seen)

        problem = self.contract.request_errors(
            request.method, request.path, request.headers, raw, request.content_type
        )
        if problem is None and operation is not None and not raw:
            problem = ContractErrors("invalid", [f"{operation}: the request has no JSON body"])
        if problem is not None:
            self.violations.append(Violation(request.method, request.path, problem.messages))
            if problem.kind == "unauthenticated":
                return _error(401, *UNAUTHENTICATED)
            if problem.kind == "no_such_path":
                return _error(404, NOT_FOUND_CODE, f"No such path in the SMS API: {request.path}")
            if problem.kind == "no_such_method":
                return _error(405, CONTRACT_CODE, f"{request.method} is not an operation on {request.path}")
            return _error(400, CONTRACT_CODE, "; ".join(problem.messages))

        if request.headers.get("Authorization") != f"Bearer {self._api_key}":
            return _error(401, *UNAUTHENTICATED)

        fault = self._fault_for(seen)
        if isinstance(fault, RateLimited):
            return _error(
                429,
                429,
                f"Quota exceeded. Please try again in {fault.retry_after} second(s).",
                headers={"Retry-After": fault.retry_after},
            )
        if isinstance(fault, ServerError):
            headers = {"Retry-After": fault.retry_after} if fault.retry_after else None
            return _error(fault.status, *INTERNAL, headers=headers)
        if isinstance(fault, Drop):
            if request.transport is not None:
                request.transport.abort()
            raise asyncio.CancelledError  # nothing more to write; aiohttp drops the handler quietly
        if isinstance(fault, Slow):
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stopping.wait(), fault.seconds)
        request[_BODY] = seen.body
        return await handler(request)

    def _fault_for(self, seen: Seen) -> Fault | None:
        if self._queued_faults:
            return self._queued_faults.pop(0)
        return next((rule.fault for rule in self._rules if rule.when(seen)), None)

    # the operations

    async def _send(self, request: web.Request) -> web.Response:
        return web.json_response(
            self._accept(request.match_info["subAccountId"], request[_BODY], batch_id=None)
        )

    async def _send_batch(self, request: web.Request) -> web.Response:
        body = request[_BODY]
        batch_id = str(uuid.uuid4())
        self.batches.append(batch_id)
        template = body.get("template") or {}
        results = []
        for message in body["messages"]:
            merged = {**template, **message}
            merged.setdefault("clientIp", body.get("clientIp"))
            results.append(self._accept(request.match_info["subAccountId"], merged, batch_id=batch_id))
        answer: dict[str, Any] = {
            "batchId": batch_id,
            "acceptedCount": sum(r["status"]["code"] == "QUEUED" for r in results),
            "rejectedCount": sum(r["status"]["code"] == "REJECTED" for r in results),
        }
        if "clientBatchId" in body:
            answer["clientBatchId"] = body["clientBatchId"]
        if body.get("includeMessagesInResponse"):
            answer["messages"] = results
        return web.json_response(answer)

    async def _feedback(self, request: web.Request) -> web.Response:
        body = request[_BODY]
        umid = request.match_info["umid"]
        if not any(m.umid == umid for m in self.sent):
            return _error(400, NOT_FOUND_CODE, "Message not found.")
        self.feedback.append(
            FeedbackPost(umid, request.match_info["subAccountId"], body["outcome"], body.get("timestamp"))
        )
        return web.Response(status=200)

    async def _not_implemented(self, request: web.Request) -> web.Response:
        return _error(
            501, CONTRACT_CODE, f"the 8x8 double does not implement {request.method} {request.path}"
        )

    def _accept(self, sub_account_id: str, message: dict[str, Any], batch_id: str | None) -> dict[str, Any]:
        """Queue (or reject) one SmsRequest; answer with its SmsResponse."""
        destination = message["destination"].lstrip("+")
        record = SentSms(
            umid=str(uuid.uuid4()),
            sub_account_id=sub_account_id,
            destination=message["destination"],
            text=message["text"],
            client_message_id=message.get("clientMessageId"),
            client_ip=message.get("clientIp"),
            track=message.get("track"),
            batch_id=batch_id,
        )
        rejection = self._rejections.get(destination)
        (self.rejected if rejection else self.sent).append(record)
        answer: dict[str, Any] = {
            "umid": record.umid,
            "destination": destination,
            "encoding": "GSM7" if record.text.isascii() else "UCS2",
            "status": {"code": "REJECTED", "description": rejection}
            if rejection
            else {"code": "QUEUED", "description": QUEUED_TEXT},
        }
        if record.client_message_id is not None:
            answer["clientMessageId"] = record.client_message_id
        return answer


def _parse(raw: bytes) -> Any:
    try:
        return json.loads(raw) if raw else None
    except ValueError:
        return None


def _error(status: int, code: int, message: str, *, headers: Mapping[str, str] | None = None) -> web.Response:
    """8x8's error body: {code, message, errorId, timestamp}."""
    body = {
        "code": code,
        "message": message,
        "errorId": str(uuid.uuid4()),
        "timestamp": datetime.now(UTC).isoformat(),
    }
    return web.json_response(body, status=status, headers=headers)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Serve the 8x8 SMS API double on 127.0.0.1.")
    parser.add_argument("--port", type=int, default=0, help="0 picks a free port (printed on start)")
    parser.add_argument(
        "--api-key-env", default="EIGHTBYEIGHT_API_KEY", help="environment variable holding the key to expect"
    )
    args = parser.parse_args(argv)
    key = os.environ.get(args.api_key_env)
    if not key:
        parser.error(f"set {args.api_key_env} to the API key the double should expect")

    async def serve() -> None:
        async with EightByEightDouble(api_key=key, port=args.port) as double:
            print(f"8x8 double listening on {double.base_url}", flush=True)
            await asyncio.Event().wait()

    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(serve())


if __name__ == "__main__":
    main()
