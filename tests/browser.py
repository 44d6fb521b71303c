"""Headless Chromium for page tests (Debian's chromium, driven by Playwright)."""

from __future__ import annotations

import http.server
import os
import shutil
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from functools import partial
from pathlib import Path

import pytest

CHROMIUM_FLAGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


def chromium_path() -> str:
    """The system Chromium; CI must have it (.ci/run installs it), elsewhere the test skips."""
    path = shutil.which("chromium") or shutil.which("chromium-browser")
    if path is None:
        if os.environ.get("CI"):
            pytest.fail("chromium is not installed; .ci/run should have installed it")
        pytest.skip("chromium is not installed (apt-get install chromium)")
    return path


def open_browser(playwright):
    return playwright.chromium.launch(executable_path=chromium_path(), args=CHROMIUM_FLAGS)


class StaticFiles(http.server.SimpleHTTPRequestHandler):
    """Any static file server: files as they are, with JavaScript and WASM types; ``isolate``
    adds the headers that make a page cross-origin isolated (SharedArrayBuffer, so WASM
    threads)."""

    extensions_map = {
        **http.server.SimpleHTTPRequestHandler.extensions_map,
        ".mjs": "text/javascript",
        ".js": "text/javascript",
        ".wasm": "application/wasm",
        ".json": "application/json",
    }

    isolate = False

    def end_headers(self) -> None:
        if self.isolate:
            self.send_header("Cross-Origin-Opener-Policy", "same-origin")
            self.send_header("Cross-Origin-Embedder-Policy", "require-corp")
        super().end_headers()

    def log_message(self, format, *args):  # noqa: A002 - the base class's name
        pass


@contextmanager
def static_server(folder: Path, isolate: bool = False) -> Iterator[str]:
    """``folder`` served on the loopback (a free port) while the block runs; yields its URL."""
    handler = type("Handler", (StaticFiles,), {"isolate": isolate})
    server = http.server.ThreadingHTTPServer(
        ("127.0.0.1", 0), partial(handler, directory=str(folder))
    )
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/"
    finally:
        server.shutdown()
        server.server_close()
