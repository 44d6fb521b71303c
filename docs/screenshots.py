"""Regenerate the README's screenshots with headless Chromium (Debian's chromium + Playwright).

    .venv/bin/python docs/screenshots.py --report report/sst2-minilm-auto/report.html \
        --model models/sst2-minilm-auto
"""

from __future__ import annotations

import argparse
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
from playwright.sync_api import sync_playwright

DOCS = Path(__file__).resolve().parent
FLAGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--report", type=Path, required=True)
    parser.add_argument("--model", type=Path, required=True)
    args = parser.parse_args()

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "bertprobe",
            "serve",
            "--model",
            str(args.model),
            "--port",
            str(port),
        ],
        stderr=subprocess.DEVNULL,
    )
    try:
        for _ in range(600):
            try:
                httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=1)
                break
            except httpx.HTTPError:
                time.sleep(0.2)
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=shutil.which("chromium"), args=FLAGS)
            page = browser.new_page(viewport={"width": 1100, "height": 900})
            page.goto(args.report.resolve().as_uri())
            page.screenshot(path=DOCS / "report.png", full_page=True)
            page = browser.new_page(viewport={"width": 760, "height": 560})
            page.goto(f"http://127.0.0.1:{port}/")
            page.fill("#text", "a gorgeous, witty, seductive movie")
            page.click("#classify")
            page.wait_for_selector("#result", state="visible")
            page.screenshot(path=DOCS / "serve-page.png")
            browser.close()
    finally:
        server.terminate()
        server.wait(timeout=30)
    print(f"wrote {DOCS / 'report.png'} and {DOCS / 'serve-page.png'}")


if __name__ == "__main__":
    main()
