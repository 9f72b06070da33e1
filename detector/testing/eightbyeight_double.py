"""A stand-in for 8x8's SMS API on loopback that holds every request to 8x8's own OpenAPI document.

Every request is checked against ``sms-api.openapi.json``: the path and method exist, path
parameters match (sub-account pattern), ``Authorization: Bearer`` is there, and the JSON body matches
the operation's schema. The check is compiled from the document once (jsonschema, about 0.1 ms for a
single send), and the double's tests hold it to openapi-core's reading of the same document.

A request that breaks the contract is answered as 8x8 describes (400, or 401 without credentials,
with ``{code, message, errorId, timestamp}``) and is recorded in ``double.violations``, so a test can
assert there were none. A well-formed request with the wrong key gets 401 too, but that is a
configuration error, not a contract violation.

What it implements: send one (``Send-Sms-Single``), send a batch (``Send-Many-Sms``), outcome
feedback (``api-Sms-Feedback``), the account balance (``get-account-balance``) and the message log
export (``start-log-export-job``, then ``get-log-export-job-result``: ``running`` on the first poll,
then ``succeeded`` with a link to a CSV of the columns the document lists, numbers and bodies redacted,
or ``empty``). The CSV link is served under ``.../messages/download/{token}`` as the document's example
shows; it is a file, not an operation of the document, so it is checked for the key only. Other
operations pass the contract check and are answered 501.

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
``Slow(5, after_accepting=True)`` and ``Drop(after_accepting=True)`` queue the messages first and then
keep or lose the answer: the ambiguous failures after which 8x8 did send.

Outside pytest's event loop: in a background thread (``with double.in_thread(): ...``), or as a
process, which is the better choice for a benchmark (in a thread the double competes with the client
for the GIL)::

    python -m detector.testing.eightbyeight_double --port 8088 --api-key-env EIGHTBYEIGHT_API_KEY

The documents are found at ``../shared/8x8`` from the repository root, or in ``$DETECTOR_8X8_SPECS``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import csv
import io
import json
import os
import re
import uuid
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, Literal
from urllib.parse import unquote

from aiohttp import web
from jsonschema.protocols import Validator
from openapi_core import Config, OpenAPI
from openapi_core.datatypes import RequestParameters
from openapi_core.validation.response.exceptions import MissingData
from openapi_schema_validator import OAS30Validator, oas30_format_checker
from referencing import Registry
from referencing.jsonschema import DRAFT4

from detector.send.secrets import Secret
from detector.testing.loopback import LoopbackServer

SPECS_ENV = "DETECTOR_8X8_SPECS"
SMS_API = "sms-api.openapi.json"

SEND = "Send-Sms-Single"
BATCH = "Send-Many-Sms"
FEEDBACK = "api-Sms-Feedback"
EXPORT = "start-log-export-job"
EXPORT_RESULT = "get-log-export-job-result"
BALANCE = "get-account-balance"
LOG_COLUMNS = [
    *("umid", "subaccountid", "direction", "country", "operator", "mcc", "mnc", "status_value"),
    *("status_details", "status_errorcode", "status_errormessage", "status_timestamp", "msisdn", "source"),
    *("encoding", "createdat", "smscount", "price_currency", "price_persms", "price_total"),
    *("clientmessageid", "clientbatchid", "batchid", "body"),
]
_DOWNLOAD = re.compile(r"/api/v1/subaccounts/[^/]+/messages/download/(?P<token>[A-Za-z0-9]+)")

# Error codes: 1200, 1300 and 2000 appear in the document's examples; 1000 (the request breaks the
# contract) is the double's own.
CONTRACT_CODE = 1000
UNAUTHENTICATED = (1200, "Request was not authenticated properly")
NOT_FOUND_CODE = 1300
INTERNAL = (2000, "Internal server error")
QUEUED_TEXT = "SMS is accepted and queued for processing"
INVALID_MSISDN = "Invalid MSISDN format (not E.164 international number)"


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

Kind = Literal["ok", "unauthenticated", "no_such_path", "no_such_method", "invalid"]


@dataclass(frozen=True, slots=True)
class Operation:
    """One operation of the document, with validators compiled once for its path parameters and body."""

    id: str
    method: str  # upper case
    template: str  # e.g. /api/v1/subaccounts/{subAccountId}/messages
    path_regex: re.Pattern[str]
    path_parameters: dict[str, Validator]
    body: Validator | None  # for the application/json request body, if the operation takes one
    secured: bool


@dataclass(frozen=True, slots=True)
class CheckedRequest:
    """A request held against the document: which operation it is, and what is wrong with it."""

    kind: Kind
    errors: list[str]
    operation: str | None = None  # operationId
    path_parameters: dict[str, str] = field(default_factory=dict)
    body: Any = None  # the parsed JSON body, None if absent or not JSON


class Contract:
    """8x8's SMS API document, compiled for checking requests fast enough to serve a benchmark.

    :meth:`check` holds a request to the path templates, path parameters, bearer security and the
    JSON request body schema (OpenAPI 3.0 semantics: ``nullable``, formats) of the document. Query and
    header parameters are not checked: none of the operations the project uses has any.

    :meth:`reference_request_errors` and :meth:`response_errors` use openapi-core instead: slower,
    but an independent reading of the same document, which the double's own tests use to check the
    fast path and the double's answers. (The document declares ``track`` with ``default: null``
    although the field is not nullable; strict validation of the document itself refuses that, so
    it is loaded without that step.)
    """

    def __init__(self, path: Path | None = None) -> None:
        path = path or specs_dir() / SMS_API
        self.document: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
        self.server_url: str = self.document["servers"][0]["url"]
        self._registry: Registry[Any] = Registry().with_resource(
            _DOCUMENT, DRAFT4.create_resource(self.document)
        )
        self.operations = sorted(
            (op for template in self.document["paths"] for op in self._operations(template)),
            key=lambda op: op.template.count("{"),  # ".../messages/batch" before ".../messages/{umid}"
        )
        self._openapi: OpenAPI | None = None

    def check(
        self, method: str, path: str, headers: Mapping[str, str], body: bytes, content_type: str
    ) -> CheckedRequest:
        matches = [(op, m) for op in self.operations if (m := op.path_regex.fullmatch(path))]
        if not matches:
            return CheckedRequest("no_such_path", [f"no path of the SMS API matches {path}"])
        found = next(((op, m) for op, m in matches if op.method == method.upper()), None)
        if found is None:
            allowed = ", ".join(sorted({op.method for op, _ in matches}))
            return CheckedRequest(
                "no_such_method", [f"{method} is not an operation on {path} (only {allowed})"]
            )
        op, match = found
        parameters = {name: unquote(value) for name, value in match.groupdict().items()}
        parsed = _parse(body)
        if op.secured and not _BEARER.fullmatch(headers.get("Authorization", "")):
            return CheckedRequest(
                "unauthenticated",
                [f"{op.id}: no 'Authorization: Bearer <apiKey>' header"],
                op.id,
                parameters,
                parsed,
            )
        errors = [
            f"path parameter {name}: {e.message}"
            for name, validator in op.path_parameters.items()
            for e in validator.iter_errors(parameters[name])
        ]
        if op.body is not None:
            errors += _body_errors(op, body, content_type, parsed)
        return CheckedRequest("invalid" if errors else "ok", errors, op.id, parameters, parsed)

    def path_parameter_pattern(self, template: str, name: str) -> str:
        """The documented `pattern` of a path parameter (for tests that pin the client to it)."""
        for op in self.operations:
            if op.template == template and name in op.path_parameters:
                schema = self._registry.resolver().lookup(op.path_parameters[name].schema["$ref"]).contents
                return str(schema["pattern"])
        raise KeyError(f"{template} has no path parameter {name}")

    # openapi-core's reading, for tests

    def reference_request_errors(
        self, method: str, path: str, headers: Mapping[str, str], body: bytes, content_type: str
    ) -> list[str]:
        request = _Request(
            self.server_url, path, method.lower(), body, content_type, RequestParameters(header=headers)
        )
        return [line for e in self._reference().iter_apicall_request_errors(request) for line in _explain(e)]

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
        request = _Request(
            self.server_url, path, method.lower(), b"", "application/json", RequestParameters()
        )
        response = _Response(status, body, content_type, headers or {})
        errors = list(self._reference().iter_apicall_response_errors(request, response))
        if not body and self._documents_no_body(method, path, status):
            # `content: {}` documents an empty answer, which openapi-core reads as "data is missing".
            errors = [e for e in errors if not isinstance(e, MissingData)]
        return [line for e in errors for line in _explain(e)]

    # compiling the document

    def _operations(self, template: str) -> Iterator[Operation]:
        item_pointer = "/paths/" + template.replace("~", "~0").replace("/", "~1")
        item, _ = self._follow(item_pointer)
        shared = [
            self._follow(f"{item_pointer}/parameters/{i}") for i in range(len(item.get("parameters", [])))
        ]
        path_regex = re.compile(re.sub(r"\\\{(\w+)\\\}", r"(?P<\1>[^/]+)", re.escape(template)))
        for method, operation in item.items():
            if method not in _METHODS:
                continue
            pointer = f"{item_pointer}/{method}"
            own = [
                self._follow(f"{pointer}/parameters/{i}") for i in range(len(operation.get("parameters", [])))
            ]
            body = None
            if "requestBody" in operation:
                request_body, body_pointer = self._follow(f"{pointer}/requestBody")
                if "application/json" in request_body.get("content", {}):
                    body = self._validator(f"{body_pointer}/content/application~1json/schema")
            yield Operation(
                id=operation.get("operationId", f"{method.upper()} {template}"),
                method=method.upper(),
                template=template,
                path_regex=path_regex,
                path_parameters={
                    p["name"]: self._validator(f"{p_pointer}/schema")
                    for p, p_pointer in shared + own
                    if p["in"] == "path"
                },
                body=body,
                secured=bool(operation.get("security", self.document.get("security"))),
            )

    def _validator(self, pointer: str) -> Validator:
        schema = {"$ref": f"{_DOCUMENT}#{pointer}"}
        return OAS30Validator(schema, registry=self._registry, format_checker=oas30_format_checker)

    def _follow(self, pointer: str) -> tuple[Any, str]:
        """The node at a JSON pointer, following $refs; and the pointer where it really is."""
        node = self._at(pointer)
        while isinstance(node, dict) and "$ref" in node:
            pointer = node["$ref"].removeprefix("#")
            node = self._at(pointer)
        return node, pointer

    def _at(self, pointer: str) -> Any:
        node: Any = self.document
        for part in pointer.removeprefix("/").split("/"):
            key = unquote(part).replace("~1", "/").replace("~0", "~")
            node = node[int(key)] if isinstance(node, list) else node[key]
        return node

    def _documents_no_body(self, method: str, path: str, status: int) -> bool:
        checked = self.check(method, path, {}, b"", "")
        op = next((op for op in self.operations if op.id == checked.operation), None)
        if op is None:
            return False
        item_pointer = "/paths/" + op.template.replace("~", "~0").replace("/", "~1")
        responses = self._at(f"{item_pointer}/{method.lower()}/responses")
        if str(status) not in responses:
            return False
        response, _ = self._follow(f"{item_pointer}/{method.lower()}/responses/{status}")
        return bool(response.get("content") == {})

    def _reference(self) -> OpenAPI:
        if self._openapi is None:
            self._openapi = OpenAPI.from_dict(self.document, config=Config(spec_validator_cls=None))
        return self._openapi


_DOCUMENT = "urn:8x8:sms-api"
_METHODS = ("get", "put", "post", "delete", "patch", "head", "options", "trace")
_BEARER = re.compile(r"[Bb]earer [!-~]+")


def _body_errors(op: Operation, raw: bytes, content_type: str, parsed: Any) -> list[str]:
    assert op.body is not None
    if not raw:
        return [f"{op.id}: the request has no JSON body"]
    if content_type.split(";")[0].strip().lower() != "application/json":
        return [f"body: content type {content_type!r} is not application/json"]
    if parsed is None:
        return ["body: not JSON"]
    return [f"body {_json_path(e.absolute_path)}: {e.message}" for e in op.body.iter_errors(parsed)]


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


def _parse(raw: bytes) -> Any:
    try:
        return json.loads(raw) if raw else None
    except ValueError:
        return None


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
    created_at: datetime = field(default_factory=lambda: datetime.now(UTC))
    source: str | None = None


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
    """Answer normally, but only after `seconds` (or as soon as the double stops); with `after_accepting`,
    the messages are queued at once and only the answer waits (a client that times out never hears it)."""

    seconds: float
    after_accepting: bool = False


@dataclass(frozen=True, slots=True)
class Drop:
    """Close the connection without answering; with `after_accepting`, after queueing the messages."""

    after_accepting: bool = False


Fault = RateLimited | ServerError | Slow | Drop


@dataclass(slots=True)
class _Rule:
    fault: Fault
    when: Callable[[Seen], bool]


# --- the server -------------------------------------------------------------------------------------


class EightByEightDouble(LoopbackServer):
    def __init__(self, api_key: str | Secret, *, contract: Contract | None = None, port: int = 0) -> None:
        self._api_key = api_key.reveal() if isinstance(api_key, Secret) else api_key
        self.contract = contract or Contract()
        super().__init__(port)
        self.requests: list[Seen] = []
        self.violations: list[Violation] = []
        self.sent: list[SentSms] = []
        self.rejected: list[SentSms] = []
        self.feedback: list[FeedbackPost] = []
        self.batches: list[str] = []
        self.exports: list[dict[str, Any]] = []  # the bodies of log export requests
        self.balance = 149309.7985931
        self._jobs: dict[str, list[Any]] = {}  # jobId -> [polls so far, rows, download token]
        self._downloads: dict[str, str] = {}  # token -> CSV
        self._queued_faults: list[tuple[Fault, frozenset[str] | None]] = []
        self._rules: list[_Rule] = []
        self._rejections: dict[str, str] = {}
        self._queued_umids: set[str] = set()

    # faults

    def inject(self, *faults: Fault, operations: Iterable[str] | None = None) -> None:
        """The next requests that pass the contract check (of these operationIds, if given) get these
        faults, one each, in order."""
        only = frozenset(operations) if operations is not None else None
        self._queued_faults.extend((fault, only) for fault in faults)

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

    max_body = 64 * 1024 * 1024  # a batch of 10,000 is several MB

    def routes(self, app: web.Application) -> None:
        app.router.add_route("*", "/{path:.*}", self._handle)

    # every request: contract, key, faults, then the operation

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        raw = await request.read()
        path = request.rel_url.raw_path  # still percent-encoded: the contract decodes each parameter once
        download = _DOWNLOAD.fullmatch(path)
        if download and request.method == "GET":
            return self._download(request, download["token"])
        checked = self.contract.check(request.method, path, request.headers, raw, request.content_type)
        seen = Seen(request.method, request.path, checked.operation, checked.body)
        self.requests.append(seen)

        if checked.kind != "ok":
            self.violations.append(Violation(request.method, request.path, checked.errors))
            if checked.kind == "unauthenticated":
                return _error(401, *UNAUTHENTICATED)
            if checked.kind == "no_such_path":
                return _error(404, NOT_FOUND_CODE, f"No such path in the SMS API: {request.path}")
            if checked.kind == "no_such_method":
                return _error(405, CONTRACT_CODE, checked.errors[0])
            return _error(400, CONTRACT_CODE, "; ".join(checked.errors))

        if request.headers.get("Authorization") != f"Bearer {self._api_key}":
            return _error(401, *UNAUTHENTICATED)

        fault = self._fault_for(seen)
        if isinstance(fault, RateLimited):
            message = f"Quota exceeded. Please try again in {fault.retry_after} second(s)."
            return _error(429, 429, message, headers={"Retry-After": fault.retry_after})
        if isinstance(fault, ServerError):
            headers = {"Retry-After": fault.retry_after} if fault.retry_after else None
            return _error(fault.status, *INTERNAL, headers=headers)
        if isinstance(fault, Drop | Slow) and fault.after_accepting:
            answer = self._operate(checked)
            if isinstance(fault, Slow):
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._stopping.wait(), fault.seconds)
                return answer
        if isinstance(fault, Drop):
            if request.transport is not None:
                request.transport.abort()
            raise asyncio.CancelledError  # nothing more to write; aiohttp drops the handler quietly
        if isinstance(fault, Slow):
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stopping.wait(), fault.seconds)
        return self._operate(checked)

    def _operate(self, checked: CheckedRequest) -> web.Response:
        sub_account = checked.path_parameters.get("subAccountId", "")
        if checked.operation == SEND:
            return web.json_response(self._accept(sub_account, checked.body, batch_id=None))
        if checked.operation == BATCH:
            return self._send_batch(sub_account, checked.body)
        if checked.operation == FEEDBACK:
            return self._feedback(sub_account, checked.path_parameters["umid"], checked.body)
        if checked.operation == EXPORT:
            return self._start_export(sub_account, checked.body or {})
        if checked.operation == EXPORT_RESULT:
            return self._export_result(sub_account, checked.path_parameters["jobId"])
        if checked.operation == BALANCE:
            return web.json_response({"balance": self.balance, "currency": "USD"})
        return _error(501, CONTRACT_CODE, f"the 8x8 double does not play {checked.operation}")

    def _fault_for(self, seen: Seen) -> Fault | None:
        for i, (fault, only) in enumerate(self._queued_faults):
            if only is None or seen.operation in only:
                del self._queued_faults[i]
                return fault
        return next((rule.fault for rule in self._rules if rule.when(seen)), None)

    # the operations

    def _send_batch(self, sub_account_id: str, body: dict[str, Any]) -> web.Response:
        batch_id = str(uuid.uuid4())
        self.batches.append(batch_id)
        template = body.get("template") or {}
        results = []
        for message in body["messages"]:
            merged = {**template, **message}
            merged.setdefault("clientIp", body.get("clientIp"))
            results.append(self._accept(sub_account_id, merged, batch_id=batch_id))
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

    def _feedback(self, sub_account_id: str, umid: str, body: dict[str, Any]) -> web.Response:
        if umid not in self._queued_umids:
            return _error(400, NOT_FOUND_CODE, "Message not found.")
        self.feedback.append(FeedbackPost(umid, sub_account_id, body["outcome"], body.get("timestamp")))
        return web.Response(status=200)

    def _start_export(self, sub_account_id: str, body: dict[str, Any]) -> web.Response:
        self.exports.append(body)
        since, until = _log_bound(body.get("from")), _log_bound(body.get("to"))
        limit = body.get("limit") or 0
        rows = [
            sms
            for sms in [*self.sent, *self.rejected]
            if sms.sub_account_id == sub_account_id
            and (since is None or sms.created_at >= since)
            and (until is None or sms.created_at <= until)
        ]
        rows.sort(key=lambda sms: sms.created_at)
        job = uuid.uuid4().hex
        self._jobs[job] = [0, rows[:limit] if limit else rows, uuid.uuid4().hex]
        return web.json_response({"jobId": job}, status=202)

    def _export_result(self, sub_account_id: str, job_id: str) -> web.Response:
        job = self._jobs.get(job_id)
        if job is None:
            return _error(404, 4018, "Invalid jobId")
        job[0] += 1
        if job[0] == 1:
            return web.json_response({"status": "running"})
        if not job[1]:
            return web.json_response({"status": "empty"})
        token = job[2]
        if token not in self._downloads:
            self._downloads[token] = _log_csv(job[1], {sms.umid for sms in self.rejected})
        link = f"{self.base_url}/api/v1/subaccounts/{sub_account_id}/messages/download/{token}"
        expires = (datetime.now(UTC) + timedelta(days=30)).isoformat().replace("+00:00", "Z")
        return web.json_response({"status": "succeeded", "data": [link], "expires": expires})

    def _download(self, request: web.Request, token: str) -> web.Response:
        if request.headers.get("Authorization") != f"Bearer {self._api_key}":
            return _error(401, *UNAUTHENTICATED)
        if token not in self._downloads:
            return _error(404, NOT_FOUND_CODE, "No such file")
        return web.Response(text=self._downloads[token], content_type="text/csv")

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
            source=message.get("source"),
        )
        rejection = self._rejections.get(destination)
        if rejection:
            self.rejected.append(record)
        else:
            self.sent.append(record)
            self._queued_umids.add(record.umid)
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


def _log_bound(value: Any) -> datetime | None:
    """A LogExportRequest bound: a date (midnight UTC) or a date-time with Z, an offset or neither (UTC)."""
    if not isinstance(value, str) or not value:
        return None
    moment = datetime.fromisoformat(value)
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment


def _log_csv(rows: list[SentSms], rejected: set[str]) -> str:
    """The export file: 8x8's columns, number and body redacted as 8x8 does by default."""
    out = io.StringIO()
    writer = csv.DictWriter(out, LOG_COLUMNS)
    writer.writeheader()
    for sms in rows:
        writer.writerow(
            {
                "umid": sms.umid,
                "subaccountid": sms.sub_account_id,
                "direction": 1,
                "status_value": "rejected" if sms.umid in rejected else "queued",
                "msisdn": "*" * max(0, len(sms.destination) - 4) + sms.destination[-4:],
                "source": sms.source or "",
                "createdat": sms.created_at.isoformat().replace("+00:00", "Z"),
                "smscount": 1,
                "clientmessageid": sms.client_message_id or "",
                "batchid": sms.batch_id or "",
                "body": "[redacted]",
            }
        )
    return out.getvalue()


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
