"""The page of `bertprobe export --web` in Chromium, beside the Python export (`make bench-web`).

A model trained on SST-2 with the bundled encoder (all-MiniLM-L6-v2, mean pooling) is written as
a page (int8, the default; and fp32, to show the page's own fidelity), served by a static
server on the loopback, and opened in headless Chromium (Debian's, through Playwright), each
measurement in a fresh browser context (a cold cache). Measured: the folder's size (and its
largest files), the time from navigation to the model being ready and to the first example's
answer on screen, sentences a second over --n SST-2 test sentences in batches of 32 through the
page's own classifier (tokenizing included) with WASM on one thread and, for int8, with
threads (the page served with the COOP/COEP headers that SharedArrayBuffer needs; no static
host sends them by default), the page's label agreement with `Classifier.predict` and with the
Python export of the same graph (and the largest probability differences), and the Python
export's rate (`ExportedClassifier`, onnxruntime on the same graph; for int8 one thread and
all cores). Writes bench/results/web.json.

    .venv/bin/python bench/web_bench.py --model models/sst2-minilm-mean
    .venv/bin/python bench/web_bench.py --n-train 2000 --n 500   # trains a model first

Not a timed test: the figures depend on the machine, and on what else runs on it.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results" / "web.json"
sys.path.insert(0, str(ROOT / "tests"))


def measure_page(browser, url: str, texts: list[str]) -> dict:
    """One cold load: time to ready and to the first answer, then the rate over ``texts``."""
    context = browser.new_context()
    page = context.new_page()
    start = time.perf_counter()
    page.goto(url)
    page.evaluate("() => window.bertprobe.loaded.then(() => true)")
    ready = time.perf_counter() - start
    page.locator("button.example").first.click()
    page.wait_for_selector("#result", state="visible")
    first = time.perf_counter() - start
    run = page.evaluate(
        """async (texts) => {
            const c = await window.bertprobe.loaded;
            await c.predictProba(texts.slice(0, 32), 32);  // warm-up
            const start = performance.now();
            const rows = await c.predictProba(texts, 32);
            const seconds = (performance.now() - start) / 1000;
            return {
                seconds, isolated: self.crossOriginIsolated,
                threads: c.ort.env.wasm.numThreads,
                rows: rows.map((r) => Array.from(r)),
            };
        }""",
        texts,
    )
    context.close()
    return {
        "threads": run["threads"],
        "cross_origin_isolated": run["isolated"],
        "ready_s": ready,
        "first_answer_s": first,
        "sentences_per_s": len(texts) / run["seconds"],
        "rows": run["rows"],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, help="A model folder (default: train one).")
    parser.add_argument("--n-train", type=int, help="Training rows when training (default all).")
    parser.add_argument("--n", type=int, default=500, help="SST-2 test sentences (default 500).")
    parser.add_argument("--out", default=str(RESULTS), help="JSON results file, or - for none.")
    args = parser.parse_args()

    from playwright.sync_api import sync_playwright

    from bertprobe import Classifier, EncoderOptions, train
    from bertprobe.data.files import LabelledTexts
    from bertprobe.datasets import load_sst2
    from bertprobe.export import ExportedClassifier
    from bertprobe.web import PACKAGES, WebOptions, export_web
    from browser import open_browser, static_server

    texts = load_sst2("test").texts[: args.n]
    if args.model is not None:
        model = Classifier.load(args.model)
    else:
        full = load_sst2("train")
        n = args.n_train or len(full.texts)
        data = LabelledTexts(
            full.texts[:n], full.labels[:n], full.source, full.sha256, full.line_numbers[:n]
        )
        model = train(data, encoding=EncoderOptions("minilm", pooling="mean")).model
    reference = model.predict_proba(texts)
    expected = reference.argmax(axis=1)

    files: dict[str, dict[str, int]] = {}
    python: dict[str, dict] = {}
    page_rows: dict[str, dict] = {}
    with tempfile.TemporaryDirectory() as scratch, sync_playwright() as p:
        browser = open_browser(p)
        version = browser.version
        # int8 (the default) on one thread and with threads; fp32 on one thread, for fidelity.
        for graph, modes in (("int8", (False, True)), ("fp32", (False,))):
            folder = export_web(model, Path(scratch) / graph, WebOptions(fp32=graph == "fp32"))
            files[graph] = {
                str(f.relative_to(folder)): f.stat().st_size
                for f in sorted(folder.rglob("*"))
                if f.is_file()
            }
            python_proba = None
            for threads in (1, os.cpu_count() or 1) if graph == "int8" else (1,):
                exported = ExportedClassifier(folder, threads=threads)
                exported.predict_proba(texts[:32], 32)
                start = time.perf_counter()
                python_proba = exported.predict_proba(texts, 32)
                python[f"Python export {graph}, {threads} thread{'s' if threads > 1 else ''}"] = {
                    "sentences_per_s": len(texts) / (time.perf_counter() - start)
                }
            for isolate in modes:
                with static_server(folder, isolate) as url:
                    row = measure_page(browser, url, texts)
                proba = np.array(row.pop("rows"))
                row["agreement_with_predict"] = float(np.mean(proba.argmax(1) == expected))
                row["max_difference_from_predict_proba"] = float(np.abs(proba - reference).max())
                # The same graph in Python: what the page adds to quantization's changes.
                row["agreement_with_python_export"] = float(
                    np.mean(proba.argmax(1) == python_proba.argmax(1))
                )
                row["max_difference_from_python_export"] = float(np.abs(proba - python_proba).max())
                page_rows[f"page {graph}, wasm, {'threads' if isolate else '1 thread'}"] = row
        browser.close()

    for graph, sizes in files.items():
        print(f"\nthe page's folder, {graph}: {sum(sizes.values()) / 1e6:.1f} MB")
        for name, size in sorted(sizes.items(), key=lambda kv: -kv[1])[:3]:
            print(f"  {name}: {size / 1e6:.1f} MB")
    print(f"\nSST-2 test, {len(texts)} sentences, batches of 32, Chromium {version}\n")
    print(
        "| | threads | ready | first answer | sentences/s | labels as predict "
        "(max prob diff) | as the Python export (max prob diff) |"
    )
    print("|---|---|---|---|---|---|---|")
    for name, row in page_rows.items():
        print(
            f"| {name} | {row['threads']} | {row['ready_s']:.2f} s | "
            f"{row['first_answer_s']:.2f} s | {row['sentences_per_s']:.1f} | "
            f"{100 * row['agreement_with_predict']:.1f}% "
            f"({row['max_difference_from_predict_proba']:.1g}) | "
            f"{100 * row['agreement_with_python_export']:.1f}% "
            f"({row['max_difference_from_python_export']:.1g}) |"
        )
    for name, row in python.items():
        print(f"| {name} | | | | {row['sentences_per_s']:.1f} | | |")
    if args.out != "-":
        record = {
            "date": datetime.now(UTC).isoformat(timespec="seconds"),
            "machine": {
                "cpus": os.cpu_count(),
                "platform": platform.platform(),
                "note": "shared with other work while it ran; rates are indicative",
            },
            "chromium": version,
            "packages": PACKAGES,
            "model": str(args.model) if args.model else "minilm mean, trained here",
            "n_train": None if args.model else (args.n_train or "all"),
            "n_test": len(texts),
            "folder_mb": {g: sum(sizes.values()) / 1e6 for g, sizes in files.items()},
            "files_mb": {
                g: {k: round(v / 1e6, 3) for k, v in sizes.items()} for g, sizes in files.items()
            },
            "page": page_rows,
            "python_export": python,
            "git": subprocess.run(
                ["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, cwd=ROOT
            ).stdout.strip(),
        }
        Path(args.out).write_text(json.dumps(record, indent=2) + "\n", encoding="utf-8")
        print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
