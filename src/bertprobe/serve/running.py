"""Running the service: :func:`serve`, in one process or in several workers."""

from __future__ import annotations

import os
import signal
import socket

from bertprobe.core.errors import BadInputError
from bertprobe.core.extras import needs_extra
from bertprobe.model.classifier import Classifier
from bertprobe.serve.app import (
    ServeLimits,
    ServeSecurity,
    access_log,
    create_app,
    listen_socket,
    log,
    log_to_stderr,
)
from bertprobe.serve.batching import BatchingConfig
from bertprobe.serve.workers import run_workers


def serve(
    model: Classifier,
    *,
    host: str = "127.0.0.1",
    port: int = 8000,
    limits: ServeLimits = ServeLimits(),
    batching: BatchingConfig = BatchingConfig(),
    security: ServeSecurity = ServeSecurity(),
    device: str = "cpu",
    backend: str | None = None,
    graceful_seconds: int = 30,
    sock: socket.socket | None = None,
    threshold: float | str | None = None,
    workers: int = 1,
    model_process: bool = True,
    model_threads: int | None = None,
) -> None:
    """Run the app on uvicorn until SIGINT/SIGTERM; requests in flight are finished first.
    SIGHUP reloads the model folder (see :func:`~bertprobe.serve.app.create_app`'s
    ``/v1/admin/reload``).

    ``workers``: HTTP worker processes sharing the port (see :mod:`bertprobe.serve.workers`),
    each with its own queue and, with ``model_process``, its own model process of
    ``model_threads`` torch threads (default: the cores shared out among the workers).
    ``model_process`` ``False``: the model runs in a thread of each worker instead.
    ``sock``, from :func:`~bertprobe.serve.app.listen_socket`, is used instead of binding
    ``host:port`` here. Access log lines (JSON) go to standard error unless the
    ``bertprobe.access`` logger already has a handler.
    """
    with needs_extra("serve"):
        import uvicorn

    if workers < 1:
        raise BadInputError(f"workers={workers}: give 1 or more worker processes")
    if model_process and model_threads is None and workers > 1:
        model_threads = max(1, (os.cpu_count() or 1) // workers)
    sock = sock or listen_socket(host, port)
    options = {
        "limits": limits,
        "batching": batching,
        "security": security,
        "device": device,
        "backend": backend,
        "threshold": threshold,
        "freeze_heap": True,  # the process serves and nothing else
        "model_process": model_process,
        "model_threads": model_threads,
    }
    if workers > 1:
        run_workers(
            model,
            workers,
            sock,
            host=host,
            port=port,
            graceful_seconds=graceful_seconds,
            options=options,
        )
        return
    app = create_app(model, **options)  # type: ignore[arg-type]
    config = uvicorn.Config(
        app,
        host=host,
        port=port,
        timeout_graceful_shutdown=graceful_seconds,
        log_level="info",
        access_log=False,  # bertprobe.access writes one JSON line per request instead
    )
    hangup = getattr(signal, "SIGHUP", None)  # not on Windows
    previous = (
        signal.signal(hangup, lambda *_: app.state.reload_in_background()) if hangup else None
    )
    try:
        with sock, log_to_stderr(access_log, log):
            uvicorn.Server(config).run(sockets=[sock])
    finally:
        if hangup is not None:
            signal.signal(hangup, previous if previous is not None else signal.SIG_DFL)
