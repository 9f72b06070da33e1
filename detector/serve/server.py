"""Serve the application with uvicorn (uvloop, httptools); SIGTERM stops it cleanly.

On SIGTERM (or Ctrl-C) uvicorn stops accepting connections and lets the requests in flight finish (up to
`graceful_timeout`); then the application's shutdown decides whatever is still queued and closes the store,
and the process exits 0.
"""

from __future__ import annotations

import logging

import uvicorn

from detector.serve.app import Service, create_app

log = logging.getLogger(__name__)


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
        timeout_graceful_shutdown=graceful_timeout,
        backlog=2048,
    )
    server = uvicorn.Server(config)
    log.info("serving decisions on http://%s:%d (OpenAPI at /schema/openapi.json)", host, port)
    server.run()
    if not server.started:
        return 1
    log.info("stopped")
    return 0
