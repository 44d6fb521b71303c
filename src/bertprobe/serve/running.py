"""Running the service: :func:`serve`, in one process or in several workers; and
:func:`listen_socket`, the address checked before the server starts."""

from __future__ import annotations

import os
import signal
import socket
from dataclasses import replace

from bertprobe.core.errors import BadInputError
from bertprobe.core.extras import needs_extra
from bertprobe.model.classifier import Classifier
from bertprobe.serve.app import create_app
from bertprobe.serve.config import ServeConfig
from bertprobe.serve.observe import access_log, log, log_to_stderr
from bertprobe.serve.workers import run_workers


def serve(
    model: Classifier,
    config: ServeConfig = ServeConfig(),
    *,
    host: str = "127.0.0.1",
    port: int = 8000,
    workers: int = 1,
    graceful_seconds: int = 30,
    sock: socket.socket | None = None,
) -> None:
    """Run the app of ``model`` as ``config`` says on uvicorn until SIGINT/SIGTERM; requests in
    flight are finished first. SIGHUP reloads the model folder (see
    :func:`~bertprobe.serve.app.create_app`'s ``/v1/admin/reload``).

    Each process serves and nothing else, so the heap is frozen once a model serves
    (``config.freeze_heap``), and the model runs in a process of its own unless
    ``config.model_process`` is ``False`` (then in a thread of each worker).

    ``workers``: HTTP worker processes sharing the port (see :mod:`bertprobe.serve.workers`),
    each with its own queue and its own model process of ``config.model_threads`` torch
    threads (default: the cores shared out among the workers). ``sock``, from
    :func:`listen_socket`, is used instead of binding ``host:port`` here. Access log lines
    (JSON) go to standard error unless the ``bertprobe.access`` logger already has a handler.
    """
    with needs_extra("serve"):
        import uvicorn

    if workers < 1:
        raise BadInputError(f"workers={workers}: give 1 or more worker processes", param="workers")
    config = _alone_in_its_processes(config, workers)
    sock = sock or listen_socket(host, port)
    if workers > 1:
        run_workers(
            model, config, workers, sock, host=host, port=port, graceful_seconds=graceful_seconds
        )
        return
    app = create_app(model, config)
    server = uvicorn.Config(
        app,
        host=host,
        port=port,
        timeout_graceful_shutdown=graceful_seconds,
        log_level="info",
        access_log=False,  # bertprobe.access writes one JSON line per request instead
    )
    hangup = getattr(signal, "SIGHUP", None)  # not on Windows
    previous = (
        signal.signal(hangup, lambda *_: app.state.slot.reload_in_background()) if hangup else None
    )
    try:
        with sock, log_to_stderr(access_log, log):
            uvicorn.Server(server).run(sockets=[sock])
    finally:
        if hangup is not None:
            signal.signal(hangup, previous if previous is not None else signal.SIG_DFL)


def _alone_in_its_processes(config: ServeConfig, workers: int) -> ServeConfig:
    """``config`` for processes that serve and nothing else: the heap frozen, the model in a
    process of its own unless asked otherwise, its torch threads sharing out the cores among
    ``workers``."""
    model_process = config.model_process is not False
    threads = config.model_threads
    if model_process and threads is None and workers > 1:
        threads = max(1, (os.cpu_count() or 1) // workers)
    return replace(config, freeze_heap=True, model_process=model_process, model_threads=threads)


def listen_socket(host: str, port: int) -> socket.socket:
    """A socket bound to ``host:port``, or a one-line error if that address cannot be had.

    Binding before the server starts turns "address already in use" into our error instead of
    the server's log lines and exit 3, and hands the server the very socket that was checked.
    """
    try:
        family, _, _, _, address = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0]
    except (socket.gaierror, UnicodeError) as exc:
        raise BadInputError(
            f"host {host!r} is not an address this machine can listen on "
            f"({exc}); use e.g. 127.0.0.1 or 0.0.0.0"
        ) from None
    try:
        server = socket.create_server(address, family=family)
    except OSError as exc:
        raise BadInputError(
            f"cannot listen on {host}:{port} ({exc.strerror or exc}); choose "
            "another port or stop the program that holds it"
        ) from None
    # asyncio turns Nagle's algorithm off (TCP_NODELAY) only on connections whose socket says
    # it is TCP; create_server's says protocol 0. Without it each answer on a kept-alive
    # connection waited for the client's delayed ACK: about 45 ms a request, even /healthz.
    return socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP, fileno=server.detach())
