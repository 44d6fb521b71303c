"""Several HTTP worker processes on one port: uvicorn's supervisor, bertprobe's app in each.

Each worker is a process of its own with its own app, batching queue and (by default) model
process; the kernel spreads connections over them (one listening socket, shared). What makes
them one service:

- **one** ``/metrics``: prometheus-client's multiprocess mode. The supervisor gives every
  worker the same ``PROMETHEUS_MULTIPROC_DIR``; each writes its samples there and any worker's
  ``/metrics`` merges them (counters and histograms summed, the queue gauges summed over the
  workers alive).
- **one** model: SIGHUP to the supervisor, or ``POST /v1/admin/reload`` to any worker, replaces
  the workers one at a time (uvicorn's rolling restart: each new worker is serving before the
  old one stops and finishes its requests), every new one loading the folder named in the
  service's state file. The admin route checks the folder first; a folder that fails is
  refused and nothing restarts.
"""

from __future__ import annotations

import atexit
import json
import logging
import os
import pickle  # nosec B403 - our own file, in a folder only this user can read
import signal
import socket
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bertprobe.core.extras import needs_extra
from bertprobe.model.classifier import Classifier
from bertprobe.serve.app import create_app
from bertprobe.serve.config import ServeConfig
from bertprobe.serve.observe import access_log, log, log_to_stderr

with needs_extra("serve"):
    from fastapi import FastAPI

SPEC_ENV = "BERTPROBE_SERVE_WORKER_SPEC"


@dataclass(frozen=True)
class WorkerSpec:
    """What every worker builds its app from: the model as the supervisor loaded it (a worker
    loads its folder again, or the folder a reload named), the service's config, the
    supervisor's pid (reloads are sent there) and the service's private folder."""

    model: Classifier
    config: ServeConfig
    supervisor: int
    state_dir: str

    @property
    def served_file(self) -> Path:
        return Path(self.state_dir) / "served.json"

    def folder(self) -> str | None:
        """The model folder to serve: the last reload's, else the one served at start."""
        if self.served_file.is_file():
            return str(json.loads(self.served_file.read_text())["folder"])
        return str(self.model.folder) if self.model.folder is not None else None

    def announce(self, folder: str) -> None:
        """Name ``folder`` as the one to serve, then have the supervisor replace every
        worker (each loads it)."""
        written = self.served_file.with_suffix(".tmp")
        written.write_text(json.dumps({"folder": folder}))
        os.replace(written, self.served_file)  # a worker starting now reads old or new, whole
        os.kill(self.supervisor, signal.SIGHUP)


def worker_app() -> FastAPI:
    """The app of one worker (uvicorn's ``factory``): built from the spec the supervisor wrote."""
    with open(os.environ[SPEC_ENV], "rb") as file:
        spec: WorkerSpec = pickle.load(file)  # noqa: S301 - written by our supervisor, 0700 dir
    folder = spec.folder()
    model = Classifier.load(folder) if folder is not None else spec.model
    # This worker's live gauges leave the merged /metrics with it (counters stay: totals).
    atexit.register(_mark_dead, os.getpid())
    logging_on = log_to_stderr(access_log, log)
    logging_on.__enter__()
    _KEPT.append(logging_on)  # for the worker's life: collected, it would take its handlers
    return create_app(model, spec.config, announce_reload=spec.announce)


_KEPT: list[Any] = []


def _mark_dead(pid: int) -> None:
    from prometheus_client import multiprocess

    multiprocess.mark_process_dead(pid)


def run_workers(
    model: Classifier,
    config: ServeConfig,
    workers: int,
    sock: socket.socket,
    *,
    host: str,
    port: int,
    graceful_seconds: int,
) -> None:
    """Serve ``model`` as ``config`` says from ``workers`` processes sharing ``sock`` until
    SIGINT/SIGTERM; SIGHUP reloads the folder in each, one at a time."""
    with needs_extra("serve"):
        import uvicorn
        from uvicorn.supervisors import Multiprocess

    with tempfile.TemporaryDirectory(prefix="bertprobe-serve-") as state_dir:
        metrics_dir = Path(state_dir) / "metrics"
        metrics_dir.mkdir()
        spec_file = Path(state_dir) / "spec.pickle"
        with open(spec_file, "wb") as file:
            pickle.dump(WorkerSpec(model, config, os.getpid(), state_dir), file)
        # Read by the workers, which uvicorn spawns with this process's environment.
        saved = {name: os.environ.get(name) for name in (SPEC_ENV, "PROMETHEUS_MULTIPROC_DIR")}
        os.environ[SPEC_ENV] = str(spec_file)
        os.environ["PROMETHEUS_MULTIPROC_DIR"] = str(metrics_dir)
        server = uvicorn.Config(
            "bertprobe.serve.workers:worker_app",
            factory=True,
            host=host,
            port=port,
            workers=workers,
            timeout_graceful_shutdown=graceful_seconds,
            # A worker loads the model, its model process and warms up: more than uvicorn's 5 s.
            timeout_worker_healthcheck=120,
            log_level="info",
            access_log=False,  # bertprobe.access writes one JSON line per request instead
        )
        try:
            with sock:
                Multiprocess(server, sockets=[sock]).run()
        finally:
            for name, value in saved.items():
                if value is None:
                    os.environ.pop(name, None)
                else:
                    os.environ[name] = value
            logging.getLogger("bertprobe.serve").info("workers stopped")
