"""Embedding and classifier benchmark: bertprobe against the recipe and its peers.

Every row runs in its own Python process (so its peak RSS is its own), one after another on this
machine, on the same sentences with the bundled encoder (all-MiniLM-L6-v2):

- embedding rows embed the recipe's 2,000 SST-2 training sentences plus the 1,821 test
  sentences; sentences/s is over all of them, and a LinearProbe trained on the 2,000 is scored
  on the test split;
- the classifier row compares the recipe's GridSearchCV (LogisticRegression,
  C = linspace(0.0001, 100, 20), 5-fold) with bertprobe's C search on the same features;
- the memory rows stream 10k, 100k and 1M short synthetic sentences (3 to 7 of SST-2's 2,000
  most common words) from a file through `embed_file` (onnx-int8, no cache) into a .npy on disk,
  then train the out-of-core probe on those features against a synthetic label (does the
  sentence hold one of 20 "positive" words); peak RSS should not grow with the count.

Prints a markdown table; writes bench/results/embed_bench.json.

    .venv/bin/python bench/embed_bench.py [--rows recipe,pipeline,...]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results"
N_TRAIN = 2000  # the recipe's subset
STREAM_SIZES = {"stream-10k": 10_000, "stream-100k": 100_000, "stream-1m": 1_000_000}
ROWS = (
    "recipe",
    "pipeline",
    "sentence-transformers",
    "bertprobe",
    "bertprobe-onnx",
    "bertprobe-onnx-int8",
    "bertprobe-warm",
    "classifier",
    *STREAM_SIZES,
)


def sentences() -> tuple[list[str], list[int], list[str], list[int]]:
    from bertprobe.datasets import load_sst2

    train, test = load_sst2("train"), load_sst2("test")
    return train.texts[:N_TRAIN], train.labels[:N_TRAIN], test.texts, test.labels


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


def probe_accuracy(X_train, y_train, X_test, y_test) -> float:
    from bertprobe.heads.probe import LinearProbe

    return float(LinearProbe(n_jobs=-1).fit(X_train, y_train).score(X_test, y_test))


# --- one row each, run in a child process ------------------------------------------------------


def embed_recipe(texts: list[str]) -> np.ndarray:
    """The notebook as written: one padded batch, no attention mask, [CLS] of the last layer."""
    import torch
    from transformers import AutoModel, AutoTokenizer

    from bertprobe.encoders.hub import ALIASES

    path = ALIASES["minilm"]()
    tokenizer, model = AutoTokenizer.from_pretrained(path), AutoModel.from_pretrained(path)
    tokenized = [tokenizer.encode(t, add_special_tokens=True) for t in texts]
    longest = max(len(ids) for ids in tokenized)
    padded = torch.tensor([ids + [0] * (longest - len(ids)) for ids in tokenized])
    with torch.no_grad():
        last_hidden_states = model(padded)
    return last_hidden_states[0][:, 0, :].numpy()


def embed_pipeline(texts: list[str]) -> np.ndarray:
    """Hugging Face pipeline("feature-extraction"), batch 64; token vectors mean-pooled."""
    from transformers import pipeline

    from bertprobe.encoders.hub import ALIASES

    extract = pipeline(
        "feature-extraction", model=str(ALIASES["minilm"]()), framework="pt", device="cpu"
    )
    return np.stack([np.asarray(out[0]).mean(axis=0) for out in extract(texts, batch_size=64)])


def embed_sentence_transformers(texts: list[str]) -> np.ndarray:
    """sentence-transformers encode, batch 64 (mean pooling and normalization, as shipped)."""
    from sentence_transformers import SentenceTransformer

    from bertprobe.encoders.hub import ALIASES

    model = SentenceTransformer(str(ALIASES["minilm"]()), device="cpu")
    return model.encode(texts, batch_size=64, convert_to_numpy=True)


def embed_bertprobe(texts: list[str], cache_dir: str | None, backend: str = "torch") -> np.ndarray:
    """bertprobe: masked mean of the last layer, length-sorted batches of 64."""
    from bertprobe.encoders.cache import open_cache
    from bertprobe.encoders.encode import embed
    from bertprobe.encoders.options import FeatureSpec, RunOptions

    cache = open_cache(cache_dir) if cache_dir else None
    X, _ = embed(
        texts,
        "minilm",
        FeatureSpec("mean"),
        RunOptions(batch_size=64, backend=backend),
        cache=cache,
    )
    return X


def synthetic_file(path: Path, n: int, seed: int = 0) -> np.ndarray:
    """Write n short sentences, one a line; return their synthetic labels (1 byte each)."""
    import random
    from collections import Counter

    from bertprobe.datasets import load_sst2

    counts = Counter(w for t in load_sst2("train").texts for w in t.split() if w.isalpha())
    words = [w for w, _ in counts.most_common(2000)]
    positive = set(words[100:120])
    rng = random.Random(seed)
    labels = np.zeros(n, dtype=np.int8)
    with open(path, "w", encoding="utf-8") as fh:
        for i in range(n):
            sentence = rng.choices(words, k=rng.randint(3, 7))
            labels[i] = any(w in positive for w in sentence)
            fh.write(" ".join(sentence) + "\n")
    return labels


def stream_row(row: str, workdir: str) -> dict:
    from bertprobe.encoders.encoder import load_encoder
    from bertprobe.encoders.features import embed_file, iter_feature_rows
    from bertprobe.encoders.options import FeatureSpec, RunOptions
    from bertprobe.heads.probe import OutOfCoreProbe

    n = STREAM_SIZES[row]
    texts, features = Path(workdir) / f"{row}.txt", Path(workdir) / f"{row}.npy"
    labels = synthetic_file(texts, n)
    model = load_encoder("minilm", backend="onnx-int8")
    rss_before = peak_rss_mb()
    start = time.perf_counter()
    embed_file(
        texts, features, model, FeatureSpec("mean"), RunOptions(batch_size=256), chunk_size=4096
    )
    seconds = time.perf_counter() - start
    rss_embed = peak_rss_mb()

    def chunks(rows: int = 16384):
        return (
            (X, labels[i : i + len(X)])
            for X, i in zip(iter_feature_rows(features, rows), range(0, n, rows), strict=True)
        )

    start = time.perf_counter()
    probe = OutOfCoreProbe(epochs=2).fit_chunks(chunks)
    fit_seconds = time.perf_counter() - start
    result = {
        "row": row,
        "sentences": n,
        "seconds": seconds,
        "sentences_per_second": n / seconds,
        "features_mb": features.stat().st_size / 2**20,
        "peak_rss_mb_after_load": rss_before,
        "peak_rss_mb_embed": rss_embed,
        "fit_seconds": fit_seconds,
        "holdout_accuracy": probe.holdout_accuracy_,
        "peak_rss_mb": peak_rss_mb(),
    }
    texts.unlink()
    features.unlink()
    return result


def run_row(row: str, cache_dir: str) -> dict:
    if row in STREAM_SIZES:
        return stream_row(row, cache_dir)
    train_texts, y_train, test_texts, y_test = sentences()
    texts = train_texts + test_texts
    if row == "classifier":
        return classifier_row(cache_dir, y_train, y_test)
    embedders = {
        "recipe": embed_recipe,
        "pipeline": embed_pipeline,
        "sentence-transformers": embed_sentence_transformers,
        "bertprobe": lambda t: embed_bertprobe(t, None),
        "bertprobe-onnx": lambda t: embed_bertprobe(t, None, "onnx"),
        "bertprobe-onnx-int8": lambda t: embed_bertprobe(t, None, "onnx-int8"),
        "bertprobe-warm": lambda t: embed_bertprobe(t, cache_dir),
    }
    if row == "bertprobe-warm":
        embed_bertprobe(texts, cache_dir)  # fill the cache, untimed: the row times the re-run
    if row.startswith("bertprobe-onnx"):
        # The export is built once per encoder and kept; building it is not what is timed.
        from bertprobe.encoders.encoder import load_encoder

        load_encoder("minilm", backend=row.removeprefix("bertprobe-"))
    start = time.perf_counter()
    X = embedders[row](texts)
    seconds = time.perf_counter() - start
    return {
        "row": row,
        "sentences": len(texts),
        "seconds": seconds,
        "sentences_per_second": len(texts) / seconds,
        "peak_rss_mb": peak_rss_mb(),
        "test_accuracy": probe_accuracy(X[:N_TRAIN], y_train, X[N_TRAIN:], y_test),
    }


def classifier_row(cache_dir: str, y_train, y_test) -> dict:
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import GridSearchCV

    from bertprobe.heads.probe import SEED_C_GRID, LinearProbe

    train_texts, _, test_texts, _ = sentences()
    X = embed_bertprobe(train_texts + test_texts, cache_dir)
    X_train, X_test = X[:N_TRAIN], X[N_TRAIN:]
    start = time.perf_counter()
    recipe = GridSearchCV(LogisticRegression(), {"C": list(SEED_C_GRID)}, cv=5)
    recipe.fit(X_train, y_train)
    recipe_seconds = time.perf_counter() - start
    # In one process, no workers to start: what a single small fit costs.
    start = time.perf_counter()
    LinearProbe(n_jobs=None).fit(X_train, y_train)
    sequential_seconds = time.perf_counter() - start
    # The first parallel fit in a process also starts the worker processes (cold); later fits
    # reuse them (warm). Both are reported.
    start = time.perf_counter()
    LinearProbe(n_jobs=-1).fit(X_train, y_train)
    cold_seconds = time.perf_counter() - start
    start = time.perf_counter()
    probe = LinearProbe(n_jobs=-1).fit(X_train, y_train)
    probe_seconds = time.perf_counter() - start
    return {
        "row": "classifier",
        "recipe_seconds": recipe_seconds,
        "bertprobe_cold_seconds": cold_seconds,
        "bertprobe_sequential_seconds": sequential_seconds,
        "sequential_speedup": recipe_seconds / sequential_seconds,
        "cold_speedup": recipe_seconds / cold_seconds,
        "recipe_test_accuracy": float(recipe.score(X_test, y_test)),
        "recipe_C": float(recipe.best_params_["C"]),
        "bertprobe_seconds": probe_seconds,
        "bertprobe_test_accuracy": float(probe.score(X_test, y_test)),
        "bertprobe_C": probe.C_,
        "speedup": recipe_seconds / probe_seconds,
        "peak_rss_mb": peak_rss_mb(),
    }


# --- the parent: run each row in a child, print the table ------------------------------------


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", default=",".join(ROWS))
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--cache-dir", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(run_row(args.child, args.cache_dir)))
        return

    results = []
    with tempfile.TemporaryDirectory() as cache_dir:
        for row in args.rows.split(","):
            print(f"running {row} ...", file=sys.stderr, flush=True)
            child = subprocess.run(
                [sys.executable, __file__, "--child", row, "--cache-dir", cache_dir],
                capture_output=True,
                text=True,
                check=False,
            )
            if child.returncode != 0:
                raise SystemExit(f"row {row} failed:\n{child.stderr[-2000:]}")
            results.append(json.loads(child.stdout.strip().splitlines()[-1]))

    print(
        f"\nSST-2 with all-MiniLM-L6-v2 on {os.cpu_count()} CPU cores, "
        f"{datetime.now(UTC):%Y-%m-%d}\n"
    )
    print("| row | sentences/s | peak RSS | SST-2 test accuracy |")
    print("| --- | --- | --- | --- |")
    for r in results:
        if r["row"] == "classifier" or r["row"] in STREAM_SIZES:
            continue
        print(
            f"| {r['row']} | {r['sentences_per_second']:.0f} | {r['peak_rss_mb']:.0f} MB | "
            f"{100 * r['test_accuracy']:.2f}% |"
        )
    for r in results:
        if r["row"] == "classifier":
            print(
                f"\nclassifier stage on {N_TRAIN:,} x 384 features: recipe GridSearchCV "
                f"{r['recipe_seconds']:.1f} s ({100 * r['recipe_test_accuracy']:.2f}%); "
                f"bertprobe {r['bertprobe_seconds']:.2f} s with its worker processes running, "
                f"{r['speedup']:.1f}x faster ({r['bertprobe_cold_seconds']:.2f} s, "
                f"{r['cold_speedup']:.1f}x, when the first fit also starts them), "
                f"{r['bertprobe_sequential_seconds']:.2f} s in one process "
                f"({r['sequential_speedup']:.1f}x) "
                f"({100 * r['bertprobe_test_accuracy']:.2f}%)"
            )
    streamed = [r for r in results if r["row"] in STREAM_SIZES]
    if streamed:
        print(
            "\nmemory: short synthetic sentences streamed from a file to a .npy (onnx-int8, "
            "no cache), then the out-of-core probe (2 epochs) on those features\n"
        )
        print(
            "| sentences | sentences/s | features on disk | peak RSS embedding | "
            "peak RSS with probe | probe fit | held-out accuracy |"
        )
        print("| --- | --- | --- | --- | --- | --- | --- |")
        for r in streamed:
            print(
                f"| {r['sentences']:,} | {r['sentences_per_second']:.0f} | "
                f"{r['features_mb']:.0f} MB | {r['peak_rss_mb_embed']:.0f} MB | "
                f"{r['peak_rss_mb']:.0f} MB | {r['fit_seconds']:.1f} s | "
                f"{100 * r['holdout_accuracy']:.2f}% |"
            )
    # A run of some rows (--rows) replaces those rows in the results file and keeps the rest.
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / "embed_bench.json"
    kept = json.loads(path.read_text())["rows"] if path.is_file() else []
    now = datetime.now(UTC).isoformat(timespec="seconds")
    fresh = {r["row"] for r in results}
    merged = [r for r in kept if r["row"] not in fresh] + [{**r, "date": now} for r in results]
    merged.sort(key=lambda r: ROWS.index(r["row"]) if r["row"] in ROWS else len(ROWS))
    path.write_text(
        json.dumps(
            {
                "date": now,
                "machine": platform.machine(),
                "cpu_count": os.cpu_count(),
                "rows": merged,
            },
            indent=2,
        )
        + "\n"
    )


if __name__ == "__main__":
    main()
