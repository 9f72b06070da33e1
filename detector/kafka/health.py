"""The HTTP endpoint of a worker, on a thread of its own: ``/metrics`` (Prometheus), ``/healthz`` (the
process answers), ``/readyz`` (the worker's own readiness checks) and 404 for anything else.

Readiness is a callback the worker supplies, called on the server's thread: it must only read state the
worker keeps up to date (flags, the time of the last successful call), never do I/O itself. It returns
each check's name and whether it passes; ``/readyz`` answers 200 when all pass, else 503, with one line
per check either way.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterable, Mapping
from socketserver import ThreadingMixIn
from typing import Any
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

from prometheus_client import CollectorRegistry, make_wsgi_app

log = logging.getLogger(__name__)

Readiness = Callable[[], Mapping[str, bool]]


def _text(respond: Callable[..., Any], status: str, text: str) -> list[bytes]:
    body = text.encode()
    respond(status, [("Content-Type", "text/plain; charset=utf-8"), ("Content-Length", str(len(body)))])
    return [body]


class _Server(ThreadingMixIn, WSGIServer):
    daemon_threads = True


class _QuietHandler(WSGIRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:  # a line per scrape: no
        pass


class HealthServer:
    """Serve until `stop()`; port 0 means off. Also a context manager: ``with HealthServer(...):``."""

    def __init__(
        self,
        registry: CollectorRegistry,
        port: int,
        host: str = "0.0.0.0",
        ready: Readiness = lambda: {},
    ) -> None:
        self.registry = registry
        self.port = port
        self.host = host
        self.ready = ready
        self._metrics = make_wsgi_app(registry)
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None

    def __enter__(self) -> HealthServer:
        self.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def app(self, environ: dict[str, Any], respond: Callable[..., Any]) -> Iterable[bytes]:
        path = environ.get("PATH_INFO", "")
        if path == "/metrics":
            return self._metrics(environ, respond)
        if path == "/healthz":
            return _text(respond, "200 OK", "ok\n")
        if path == "/readyz":
            try:
                checks = dict(self.ready())
            except Exception as exc:  # a broken check means not ready, never a dead endpoint
                checks = {f"readiness check raised {type(exc).__name__}": False}
            body = "".join(f"{name}: {'ok' if passed else 'not ready'}\n" for name, passed in checks.items())
            return _text(respond, "200 OK" if all(checks.values()) else "503 Service Unavailable", body)
        return _text(respond, "404 Not Found", "not found: /metrics, /healthz, /readyz\n")

    def start(self) -> None:
        if self.port == 0 or self._server is not None:
            return
        server = make_server(self.host, self.port, self.app, _Server, handler_class=_QuietHandler)
        self._server = server
        self._thread = threading.Thread(target=server.serve_forever, name="health-http", daemon=True)
        self._thread.start()
        log.info("metrics on http://%s:%d/metrics, health on /healthz and /readyz", self.host, self.port)

    def stop(self) -> None:
        server, self._server = self._server, None
        if server is not None:
            server.shutdown()
            server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None
