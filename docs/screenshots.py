"""Regenerate the docs' screenshots with headless Chromium (Debian's chromium + Playwright).

The report page, the service's page, (``--explain-model``, a model on mean-pooled vectors)
the page ``bertprobe explain --html`` writes for a few SST-2 test sentences, and (``--web-model``)
the page ``bertprobe export --web`` writes, served by a static server on the loopback.

    .venv/bin/python docs/screenshots.py --report report/sst2-minilm-auto/report.html \
        --model models/sst2-minilm-auto --explain-model models/sst2-minilm-mean \
        --web-model models/sst2-minilm-auto --mlflow

``--mlflow`` starts an MLflow tracking server (sqlite, in a scratch folder), trains three
tracked runs on 2,000 SST-2 sentences ([CLS] as the recipe, mean pooling, ``--auto``) and takes
the MLflow UI comparing them: docs/mlflow-compare.png.
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

from bertprobe import Classifier
from bertprobe.datasets import load_sst2
from bertprobe.report import write_explanation_page

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


# Short SST-2 test sentences of both labels, one with a "but" that turns it (10).
EXPLAINED = (0, 4, 7, 10, 11, 23)


def explanation_page(model_dir: Path) -> Path:
    """The ``explain --html`` page of a few SST-2 test sentences, in a scratch folder."""
    import tempfile

    model = Classifier.load(model_dir)
    texts = [load_sst2("test").texts[i] for i in EXPLAINED]
    out = Path(tempfile.mkdtemp()) / "explain.html"
    return write_explanation_page(model, model.explain(texts), out)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--report", type=Path, help="a report.html: docs/report.png")
    parser.add_argument("--model", type=Path, help="a model to serve: docs/serve-page.png")
    parser.add_argument("--explain-model", type=Path, help="a model: docs/explain.png")
    parser.add_argument("--web-model", type=Path, help="a model: docs/web-page.png")
    parser.add_argument(
        "--mlflow", action="store_true", help="three tracked runs: docs/mlflow-compare.png"
    )
    args = parser.parse_args()
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=shutil.which("chromium"), args=FLAGS)
        if args.report is not None:
            page = browser.new_page(viewport={"width": 1100, "height": 900})
            page.goto(args.report.resolve().as_uri())
            page.screenshot(path=DOCS / "report.png", full_page=True)
        if args.model is not None:
            service_page(browser, args.model)
        if args.explain_model is not None:
            page = browser.new_page(viewport={"width": 1000, "height": 300})
            page.goto(explanation_page(args.explain_model).as_uri())
            page.screenshot(path=DOCS / "explain.png", full_page=True)
        if args.web_model is not None:
            web_page(browser, args.web_model)
        if args.mlflow:
            mlflow_page(browser)
        browser.close()
    print(f"wrote the screenshots in {DOCS}")


def service_page(browser, model: Path) -> None:
    """docs/serve-page.png: the service's page answering a text."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    command = [sys.executable, "-m", "bertprobe", "serve", "--model", str(model)]
    server = subprocess.Popen([*command, "--port", str(port)], stderr=subprocess.DEVNULL)
    try:
        for _ in range(600):
            try:
                httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=1)
                break
            except httpx.HTTPError:
                time.sleep(0.2)
        page = browser.new_page(viewport={"width": 760, "height": 560})
        page.goto(f"http://127.0.0.1:{port}/")
        page.fill("#text", "a gorgeous, witty, seductive movie")
        page.click("#classify")
        page.wait_for_selector("#result", state="visible")
        page.screenshot(path=DOCS / "serve-page.png")
    finally:
        server.terminate()
        server.wait(timeout=30)


def web_page(browser, model: Path) -> None:
    """docs/web-page.png: the page of ``export --web`` answering an example and three lines."""
    import http.server
    import tempfile
    import threading
    from functools import partial

    from bertprobe.web import export_web

    folder = export_web(model, Path(tempfile.mkdtemp()) / "page")
    handler = type(
        "Files",
        (http.server.SimpleHTTPRequestHandler,),
        {
            "extensions_map": {
                **http.server.SimpleHTTPRequestHandler.extensions_map,
                ".mjs": "text/javascript",
                ".wasm": "application/wasm",
            },
            "log_message": lambda *args: None,
        },
    )
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), partial(handler, directory=folder))
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        page = browser.new_page(viewport={"width": 760, "height": 900})
        page.goto(f"http://127.0.0.1:{server.server_address[1]}/")
        page.evaluate("() => window.bertprobe.loaded.then(() => true)")
        page.locator("button.example").first.click()
        page.wait_for_selector("#result", state="visible")
        lines = [load_sst2("test").texts[i] for i in EXPLAINED[:3]]
        page.fill("#lines", "\n".join(lines))
        page.click("#label-all")
        page.wait_for_selector("#download", state="visible")
        page.screenshot(path=DOCS / "web-page.png", full_page=True)
    finally:
        server.shutdown()


# The runs the MLflow screenshot compares: the recipe's features, mean pooling, --auto.
TRACKED = {
    "recipe-cls": ["--pooling", "cls", "--layer", "-1"],
    "mean": ["--pooling", "mean", "--layer", "-1"],
    "auto": ["--auto"],
}


def mlflow_page(browser) -> None:
    """docs/mlflow-compare.png: the MLflow UI comparing three tracked runs on SST-2."""
    import json
    import tempfile

    scratch = Path(tempfile.mkdtemp(prefix="bertprobe-mlflow-"))
    train = scratch / "train.tsv"
    rows = load_sst2("train")
    train.write_text(
        "".join(f"{t}\t{y}\n" for t, y in zip(rows.texts[:2000], rows.labels or [], strict=False)),
        encoding="utf-8",
    )
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    url = f"http://127.0.0.1:{port}"
    server = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "mlflow",
            "server",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--backend-store-uri",
            f"sqlite:///{scratch / 'mlflow.db'}",
            "--artifacts-destination",
            str(scratch / "artifacts"),
            "--workers",
            "1",
        ],  # fmt: skip
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        for _ in range(600):
            try:
                if httpx.get(url + "/health", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                time.sleep(0.2)
        runs = []
        for name, flags in TRACKED.items():
            command = [sys.executable, "-m", "bertprobe", "train", str(train), "--test",
                       str(DOCS.parent / "data/sst2/test.tsv"), "--encoder", "minilm", *flags,
                       "--out", str(scratch / name), "--track", url, "--experiment",
                       "sst2-2000", "--json"]  # fmt: skip
            done = subprocess.run(command, check=True, capture_output=True, text=True)
            runs.append(json.loads(done.stdout)["mlflow_run_id"])
        import mlflow

        experiment = mlflow.MlflowClient(url).get_experiment_by_name("sst2-2000").experiment_id
        # Tall: the page scrolls inside its own panel, so the figures below must fit the window.
        page = browser.new_page(viewport={"width": 1280, "height": 2000})
        listed = json.dumps(runs).replace(" ", "")
        page.goto(f"{url}/#/compare-runs?runs={listed}&experiments=[%22{experiment}%22]")
        # The UI polls its server (never idle): wait for the runs' table, then the charts.
        page.wait_for_selector("text=test_accuracy", timeout=60_000)
        assistant = page.locator("text=MLflow Assistant").locator("xpath=ancestor::div[1]")
        close = assistant.locator("button").last
        if close.count():  # the UI's assistant panel takes a third of the width
            close.click()
        page.get_by_text("Show diff only").first.click()  # the parameters that differ
        page.wait_for_timeout(3000)
        page.screenshot(path=DOCS / "mlflow-compare.png", full_page=True)
    finally:
        server.terminate()
        server.wait(timeout=30)


if __name__ == "__main__":
    main()
