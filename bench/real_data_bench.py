"""Real-world data benchmark (issue #13): skewed classes and wrong labels, on SST-2.

Bundled encoder (``minilm``), mean pooling, the library's own calls (what ``bertprobe train``
and ``evaluate`` run), embeddings cached between the rows.

(a) Skewed classes. Training set: every negative sentence of SST-2 train and a ninth as many
positives (1 positive to 9 negatives). Scored by balanced accuracy (the mean of the recalls)
on the SST-2 test split as it is (about half positive) and on a 1:9 subset of it (every
negative, a ninth as many positives). Rows:

- ``plain``: C by accuracy, no class weights, argmax;
- ``balanced``: ``--class-weight balanced``;
- ``metric``: ``--metric balanced_accuracy`` (C chosen by it), argmax and ``--threshold auto``
  (the threshold that maximizes out-of-fold balanced accuracy, stored at training time);
- ``balanced+metric``: both, argmax and ``--threshold auto``.

(b) Wrong labels. SST-2 train (or its first ``--flip-rows`` rows), 5% of the labels flipped
(seeded); ``train --label-issues`` ranks the rows; precision at k = the number flipped, with
cleanlab (when installed) and with the numpy method (chance: 0.05).

Prints a markdown table; writes bench/results/real_data.json (or ``--out``).

    .venv/bin/python bench/real_data_bench.py                    # the full run
    .venv/bin/python bench/real_data_bench.py --small --out /tmp/real_data.json  # smoke run

``--small`` (600 training sentences before skewing, 400 test, 400 for the flips) proves the
script works in a few minutes on a laptop; its numbers are noise, not the benchmark.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results"


def skewed(data, n: int | None, ratio: int = 9):
    """Every negative of the first ``n`` rows and a ``ratio``-th as many positives."""
    from bertprobe.data.files import LabelledTexts

    texts, labels = data.texts[:n], list(data.labels[:n])
    negatives = [i for i, y in enumerate(labels) if y == 0]
    positives = [i for i, y in enumerate(labels) if y == 1][: len(negatives) // ratio]
    keep = sorted(negatives + positives)
    return LabelledTexts.from_lists([texts[i] for i in keep], [labels[i] for i in keep])


def balanced_accuracy(evaluation) -> float:
    """The mean of the per-class recalls of an Evaluation."""
    return float(np.mean([row["recall"] for row in evaluation.per_class.values()]))


def skew_rows(n_train: int | None, n_test: int | None, encoding) -> list[dict]:
    from bertprobe import TrainOptions, train
    from bertprobe.data.files import LabelledTexts
    from bertprobe.datasets import load_sst2

    train_set = skewed(load_sst2("train"), n_train)
    sst2_test = load_sst2("test")
    tests = {
        "test": LabelledTexts.from_lists(sst2_test.texts[:n_test], sst2_test.labels[:n_test]),
        "test 1:9": skewed(sst2_test, n_test),
    }
    variants = {
        "plain": TrainOptions(),
        "balanced": TrainOptions(class_weight="balanced"),
        "metric": TrainOptions(metric="balanced_accuracy"),
        "balanced+metric": TrainOptions(class_weight="balanced", metric="balanced_accuracy"),
    }
    rows = []
    for name, options in variants.items():
        start = time.perf_counter()
        with tempfile.TemporaryDirectory() as folder:
            result = train(train_set, encoding=encoding, options=options, out=Path(folder) / "m")
            model = result.model
            thresholds = [None, "auto"] if options.metric != "accuracy" else [None]
            for threshold in thresholds:
                row = {
                    "row": name + (" --threshold auto" if threshold else ""),
                    "n_train": len(train_set),
                    "n_positive": sum(1 for y in train_set.labels or [] if y == 1),
                    "C": result.probe.C_,
                    "threshold": (model.decision_for(threshold).thresholds or (None,))[0],
                }
                for split, data in tests.items():
                    found = model.evaluate(
                        data.texts, data.labels or [], encoding.run, threshold=threshold
                    )
                    row[f"{split} balanced accuracy"] = balanced_accuracy(found)
                    row[f"{split} accuracy"] = found.accuracy
                    row[f"{split} n"] = len(data)
                row["seconds"] = time.perf_counter() - start
                rows.append(row)
                print(json.dumps(row), flush=True)
    return rows


def flip_rows(n_rows: int | None, encoding, share: float = 0.05, seed: int = 0) -> list[dict]:
    from bertprobe import TrainOptions, train
    from bertprobe.data.files import LabelledTexts
    from bertprobe.datasets import load_sst2
    from bertprobe.training.label_issues import cleanlab_available, find_label_issues

    data = load_sst2("train")
    texts, labels = data.texts[:n_rows], list(data.labels[:n_rows])
    n_flip = round(share * len(texts))
    flipped = set(np.random.default_rng(seed).choice(len(texts), n_flip, replace=False).tolist())
    noisy = [1 - y if i in flipped else y for i, y in enumerate(labels)]
    start = time.perf_counter()
    result = train(
        LabelledTexts.from_lists(texts, noisy),
        encoding=encoding,
        options=TrainOptions(label_issues=True),
    )
    X, _ = result.model.embed(texts, encoding.run)  # from the cache
    oof = result.probe.out_of_fold_proba(X, noisy)
    rows = []
    methods = (["cleanlab"] if cleanlab_available() else []) + ["numpy"]
    for method in methods:
        issues = find_label_issues(noisy, oof, [0, 1], use_cleanlab=method == "cleanlab")
        top = {issue.index for issue in issues[:n_flip]}
        rows.append(
            {
                "row": f"label issues ({method})",
                "n": len(texts),
                "n_flipped": n_flip,
                "n_flagged": len(issues),
                "precision_at_k": len(top & flipped) / n_flip,
                # How deep a reviewer must read to find most flips: the share of them in the
                # top 2k and 4k rows of the ranking.
                "recall_at_2k": len({i.index for i in issues[: 2 * n_flip]} & flipped) / n_flip,
                "recall_at_4k": len({i.index for i in issues[: 4 * n_flip]} & flipped) / n_flip,
                "recall_of_flagged": len({i.index for i in issues} & flipped) / n_flip,
                "chance": n_flip / len(texts),
                "seconds": time.perf_counter() - start,
            }
        )
        print(json.dumps(rows[-1]), flush=True)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n-train", type=int, default=None, help="SST-2 train rows to skew")
    parser.add_argument("--n-test", type=int, default=None, help="SST-2 test rows")
    parser.add_argument("--flip-rows", type=int, default=None, help="SST-2 train rows for (b)")
    parser.add_argument("--small", action="store_true", help="smoke run: 600 / 400 / 400")
    parser.add_argument("--cache-dir", type=Path, default=None)
    parser.add_argument("--out", type=Path, default=RESULTS / "real_data.json")
    args = parser.parse_args()
    if args.small:
        args.n_train, args.n_test, args.flip_rows = 600, 400, 400
    from bertprobe import EncoderOptions
    from bertprobe.encoders.options import RunOptions

    encoding = EncoderOptions(
        "minilm", pooling="mean", run=RunOptions(cache_dir=args.cache_dir, progress=False)
    )
    start = time.perf_counter()
    skew = skew_rows(args.n_train, args.n_test, encoding)
    flips = flip_rows(args.flip_rows, encoding)
    summary = {
        "date": datetime.now(UTC).date().isoformat(),
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, {platform.system()}",
        "setting": "small (smoke run, not the benchmark)" if args.small else "full",
        "encoder": "minilm, mean pooling",
        "n_train": args.n_train,
        "n_test": args.n_test,
        "flip_rows": args.flip_rows,
        "skew": skew,
        "label_issues": flips,
        "seconds": time.perf_counter() - start,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(summary, indent=2) + "\n", encoding="utf-8")
    print()
    print("| row | train (pos) | threshold | test bal. acc | 1:9 test bal. acc |")
    print("|---|---|---|---|---|")
    for row in skew:
        cut = "argmax" if row["threshold"] is None else f"{row['threshold']:.3f}"
        print(
            f"| {row['row']} | {row['n_train']} ({row['n_positive']}) | {cut} | "
            f"{row['test balanced accuracy']:.3f} | {row['test 1:9 balanced accuracy']:.3f} |"
        )
    print()
    print(
        "| label issues | rows | flipped | flagged | precision at k | recall at 2k | "
        "recall at 4k | recall of flagged | chance |"
    )
    print("|---|---|---|---|---|---|---|---|---|")
    for row in flips:
        print(
            f"| {row['row']} | {row['n']} | {row['n_flipped']} | {row['n_flagged']} | "
            f"{row['precision_at_k']:.2f} | {row['recall_at_2k']:.2f} | "
            f"{row['recall_at_4k']:.2f} | {row['recall_of_flagged']:.2f} | {row['chance']:.2f} |"
        )
    print(f"\nwrote {args.out}")


if __name__ == "__main__":
    main()
