"""Multi-label benchmark: a two-label SST-2 with the bundled encoder (minilm, mean pooling).

Each sentence of the bundled SST-2 splits gets two labels, so a text has both, one or none:

- ``positive``: the sentence's sentiment is positive (SST-2's own label);
- ``people``: the sentence mentions a person, i.e. holds one of the words in ``PEOPLE``
  (actor, director, cast, performance, he, she, character, ...; 22% of the training sentences,
  23% of the test ones). A property of the words, so learnable from the text.

The probe is trained on the train split (``bertprobe train --multi-label``: one LinearProbe
per label, C by 5-fold CV) and scored on the test split: F1 micro / macro, every label right
(subset accuracy) and per-label precision / recall / F1, with thresholds 0.5 and with
``--tune-thresholds`` (per-label thresholds that maximize out-of-fold F1), and with 0.5 after
``--class-weight balanced`` (each label's texts with and without it weighted alike).

Prints a markdown table; writes bench/results/multilabel_bench.json.

    .venv/bin/python bench/multilabel_bench.py            # the full run (train 6,920, test 1,821)
    .venv/bin/python bench/multilabel_bench.py --n 300 --n-test 200 --cv 3   # a smoke run
"""

from __future__ import annotations

import argparse
import json
import platform
import re
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results"
PEOPLE = frozenset(
    [
        "actor",
        "actors",
        "actress",
        "actresses",
        "director",
        "directors",
        "cast",
        "performance",
        "performances",
        "star",
        "stars",
        "he",
        "she",
        "his",
        "her",
        "him",
        "filmmaker",
        "filmmakers",
        "writer",
        "writers",
        "screenwriter",
        "character",
        "characters",
        "man",
        "woman",
        "people",
        "hero",
        "villain",
    ]
)


def two_labels(text: str, sentiment: int) -> list[str]:
    """The labels of one SST-2 sentence: ``positive`` and/or ``people``."""
    words = set(re.findall(r"\w+", text.lower()))
    return [name for name, on in (("positive", sentiment == 1), ("people", PEOPLE & words)) if on]


def write_split(split: str, path: Path, n: int | None) -> int:
    """The split as ``text<TAB>label|label`` lines (the first ``n`` rows); returns the rows."""
    from bertprobe.datasets import load_sst2

    data = load_sst2(split)
    rows = list(zip(data.texts, data.labels or [], strict=True))[:n]
    path.write_text(
        "".join(f"{t}\t{'|'.join(two_labels(t, int(y)))}\n" for t, y in rows), encoding="utf-8"
    )
    return len(rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=None, help="training rows (default: all)")
    parser.add_argument("--n-test", type=int, default=None, help="test rows (default: all)")
    parser.add_argument("--cv", type=int, default=5)
    parser.add_argument("--jobs", type=int, default=-1)
    parser.add_argument("--out", type=Path, default=RESULTS / "multilabel_bench.json")
    args = parser.parse_args()

    from bertprobe import EncoderOptions, ReadOptions, TrainOptions, train

    results = []
    with tempfile.TemporaryDirectory() as tmp:
        train_file, test_file = Path(tmp) / "train.tsv", Path(tmp) / "test.tsv"
        n_train = write_split("train", train_file, args.n)
        n_test = write_split("test", test_file, args.n_test)
        # Thresholds 0.5, tuned, and 0.5 with each label's texts weighted balanced.
        for tuned, weights in ((False, None), (True, None), (False, "balanced")):
            start = time.perf_counter()
            result = train(
                train_file,
                test=test_file,
                encoding=EncoderOptions("minilm", pooling="mean"),
                options=TrainOptions(
                    multi_label=True,
                    tune_thresholds=tuned,
                    class_weight=weights,
                    cv=args.cv,
                    n_jobs=args.jobs,
                ),
                reading=ReadOptions(label_sep="|"),
            )
            summary = result.to_dict()
            results.append(
                {
                    "rule": "tuned (max out-of-fold F1)"
                    if tuned
                    else "0.5, --class-weight balanced"
                    if weights
                    else "0.5",
                    "seconds": time.perf_counter() - start,
                    **{
                        k: summary[k]
                        for k in (
                            "test_f1_micro",
                            "test_f1_macro",
                            "test_subset_accuracy",
                            "test_per_label",
                            "thresholds",
                            "C",
                            "label_counts",
                            "embed_seconds",
                            "fit_seconds",
                        )
                    },
                }
            )
    record = {
        "bench": "multilabel",
        "data": "SST-2 (bundled) with labels positive (sentiment) and people (mentions a person)",
        "encoder": "minilm",
        "pooling": "mean",
        "n_train": n_train,
        "n_test": n_test,
        "cv": args.cv,
        "smoke": args.n is not None or args.n_test is not None,
        "machine": f"{platform.machine()}, {platform.system()}, Python {platform.python_version()}",
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "results": results,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(record, indent=2) + "\n", encoding="utf-8")

    print(f"two-label SST-2, minilm mean: train {n_train:,}, test {n_test:,}, {args.cv}-fold CV")
    print()
    print("| thresholds | F1 micro | F1 macro | all right | F1 positive | F1 people | fit s |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    for row in results:
        per = row["test_per_label"]
        print(
            f"| {row['rule']} | {row['test_f1_micro']:.3f} | {row['test_f1_macro']:.3f} | "
            f"{100 * row['test_subset_accuracy']:.1f}% | {per['positive']['f1-score']:.3f} | "
            f"{per['people']['f1-score']:.3f} | {row['fit_seconds']:.1f} |"
        )
    if record["smoke"]:
        print("\n(a smoke run on a subset: not the benchmark's figures)")
    print(f"\nwrote {args.out}")


if __name__ == "__main__":
    main()
