"""Serve the application with uvicorn (uvloop, httptools); SIGTERM stops it cleanly.

On SIGTERM (or Ctrl-C) uvicorn stops accepting connections and lets the requests in flight finish (up to
`graceful_timeout`); then the application's shutdown decides whatever is still queued and closes the store,
and the process exits 0.
"""

from __future__ import annotations

import contextlib
import logging
import signal
from collections.abc import Iterator

import uvicorn

from detector.serve.app import Service, create_app

log = logging.getLogger(__name__)


class _Server(uvicorn.Server):
    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        """SIGTERM and SIGINT stop the server gracefully (a second one at once), and the process exits 0.

        uvicorn's own handling re-raises the signal once stopped, which would end the process by the signal.
        """
        previous = {sig: signal.signal(sig, self.handle_exit) for sig in (signal.SIGTERM, signal.SIGINT)}
        try:
            yield
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)


def serve(service: Service, host: str, port: int, *, graceful_timeout: int = 10) -> int:
    config = uvicorn.Config(
        create_app(service),
        host=host,
        port=port,
        loop="uvloop",
        http="httptools",
        lifespan="on",
        log_config=None,  # the detector's logging (masked, text or JSON) stays in charge
        access_log=False,
        server_header=False,
        proxy_headers=False,  # the client's address is in the body (client_ip / forwarded_for), not the peer
        timeout_graceful_shutdown=graceful_timeout,
        backlog=2048,
    )
    server = _Server(config)
    log.info("serving decisions on http://%s:%d (OpenAPI at /schema/openapi.json)", host, port)
    server.run()
    if not server.started:
        return 1
    log.info("stopped")
    return 0
