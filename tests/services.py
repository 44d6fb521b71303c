"""Real `bertprobe serve` processes for the service tests: start one on a free loopback port,
wait until it answers, stop it; and read its /metrics."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
from prometheus_client.parser import text_string_to_metric_families


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def metric_samples(text: str) -> dict[tuple[str, tuple], float]:
    """Every sample of a /metrics page, by name and sorted labels."""
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def wait_healthy(url: str, server: subprocess.Popen, errors: Path, seconds: float = 180) -> None:
    """Until ``url``/healthz answers 200; fails with the server's last words if it exits."""
    deadline = time.monotonic() + seconds
    while True:
        assert server.poll() is None, errors.read_text()[-3000:]
        assert time.monotonic() < deadline, "the server did not start"
        try:
            if httpx.get(url + "/healthz", timeout=1).status_code == 200:
                return
        except httpx.HTTPError:
            time.sleep(0.2)


@contextmanager
def cli_service(
    args: list[str], errors: Path, env: dict[str, str] | None = None
) -> Iterator[tuple[str, subprocess.Popen]]:
    """``bertprobe serve ARGS`` on a free port, healthy; yields its URL and process, standard
    error going to ``errors``; stopped (SIGTERM) afterwards."""
    port = free_port()
    with open(errors, "wb") as stderr:
        server = subprocess.Popen(
            [sys.executable, "-m", "bertprobe", "serve", *args, "--port", str(port)],
            env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path), **(env or {})},
            stderr=stderr,
        )
    url = f"http://127.0.0.1:{port}"
    try:
        wait_healthy(url, server, errors)
        yield url, server
    finally:
        server.terminate()
        server.wait(timeout=90)
