"""Choosing what to label: `suggest` against random picks, on SST-2 with the bundled encoder.

The pool is SST-2's training split with its labels hidden; an oracle gives a text's label when it
is picked. Each strategy starts from ``--start`` texts (``suggest`` at a cold start: the texts
nearest the pool's k-means centres; random: a seeded draw), then adds ``--batch`` texts at a
time (``suggest`` with the model trained so far: uncertain, then diverse; random: a seeded
draw; ``uncertain``, a reference: a random start, then the batch the model is least sure
of, with no diversity step; ``typical``: ``suggest(strategy="typical")``, TypiClust, at the
start and for every batch; ``zero-shot``: the start chosen by the zero-shot model's
uncertainty, ``Classifier.from_descriptions`` with "This is a negative/positive review." on the
pool, then as ``suggest``), and a model (`Classifier.fit`: MiniLM, mean pooling, the linear
probe with C by 3-fold CV) is scored on SST-2's test split at each of ``--budgets``.
``--seeds`` runs, mean and standard deviation. The full training split (6,920 labels) is the
ceiling, scored the same way.

Prints a markdown table; writes bench/results/active_learning.json (``--out`` elsewhere). The
vectors come from the embedding cache after the first pass, so the time is the probes' and the
selection's.

    .venv/bin/python bench/active_learning_bench.py
    .venv/bin/python bench/active_learning_bench.py --seeds 1 --budgets 50,100   # a smoke run
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

import numpy as np

from bertprobe import Classifier, EncoderOptions, TrainOptions
from bertprobe.datasets import load_sst2
from bertprobe.model.suggest import suggest, uncertainty

ROOT = Path(__file__).resolve().parents[1]
ENCODING = EncoderOptions("minilm", pooling="mean")
OPTIONS = TrainOptions(cv=3, n_jobs=1)


def accuracy_on(model: Classifier, test) -> float:
    predicted = model.predict(test.texts)
    return float(np.mean([str(p) == str(y) for p, y in zip(predicted, test.labels, strict=True)]))


def curve(strategy: str, seed: int, pool, test, start: int, batch: int, budgets: list[int]):
    """Test accuracy at each budget for one strategy and seed."""
    rng = np.random.default_rng(seed)
    if strategy in ("random", "uncertain"):
        picked = rng.permutation(len(pool))[:start].tolist()
    elif strategy == "typical":
        picks = suggest(pool.texts, n=start, encoding=ENCODING, seed=seed, strategy="typical")
        picked = [s.row for s in picks]
    elif strategy == "zero-shot":
        zero_shot = Classifier.from_descriptions(
            {"0": "negative", "1": "positive"}, pool.texts, encoding=ENCODING,
            template="This is a {} review.",
        )  # fmt: skip
        picked = [s.row for s in suggest(pool.texts, n=start, model=zero_shot, seed=seed)]
    else:
        picked = [s.row for s in suggest(pool.texts, n=start, encoding=ENCODING, seed=seed)]
    scores = {}
    while True:
        texts = [pool.texts[i] for i in picked]
        labels = [pool.labels[i] for i in picked]
        # random needs a model only to be scored; suggest needs one to choose the next batch
        model = None
        if len(picked) in budgets or strategy not in ("random", "typical"):
            model = Classifier.fit(texts, labels, encoding=ENCODING, options=OPTIONS)
        if len(picked) in budgets:
            assert model is not None
            scores[len(picked)] = accuracy_on(model, test)
        if len(picked) >= max(budgets):
            return scores
        if strategy == "random":
            rest = np.setdiff1d(np.arange(len(pool)), picked)
            picked += rng.permutation(rest)[:batch].tolist()
        elif strategy == "uncertain":  # uncertainty alone, no diversity step: a reference
            assert model is not None
            unsure = uncertainty(model.predict_proba(pool.texts))
            unsure[picked] = -1.0
            picked += np.argsort(-unsure, kind="stable")[:batch].tolist()
        elif strategy == "typical":
            more = suggest(
                pool.texts, n=batch, encoding=ENCODING, labelled=texts, seed=seed,
                strategy="typical",
            )  # fmt: skip
            picked += [s.row for s in more]
        else:
            assert model is not None
            more = suggest(pool.texts, n=batch, model=model, labelled=texts, seed=seed)
            picked += [s.row for s in more]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--start", type=int, default=50)
    parser.add_argument("--batch", type=int, default=50)
    parser.add_argument("--budgets", default="50,100,200,500")
    parser.add_argument("--out", type=Path, default=ROOT / "bench/results/active_learning.json")
    args = parser.parse_args()
    budgets = sorted(int(b) for b in args.budgets.split(","))
    pool, test = load_sst2("train"), load_sst2("test")
    start_time = time.perf_counter()
    ceiling = accuracy_on(
        Classifier.fit(pool.texts, pool.labels, encoding=ENCODING, options=OPTIONS), test
    )
    rows: dict[str, dict[int, list[float]]] = {}
    for strategy in ("random", "uncertain", "suggest", "typical", "zero-shot"):
        rows[strategy] = {b: [] for b in budgets}
        for seed in range(args.seeds):
            found = curve(strategy, seed, pool, test, args.start, args.batch, budgets)
            for budget, score in found.items():
                rows[strategy][budget].append(score)
            print(f"{strategy} seed {seed}: {json.dumps(found)}", file=sys.stderr, flush=True)
    seconds = time.perf_counter() - start_time
    print("\n| labels | " + " | ".join(rows) + " |")
    print("| --- | " + " | ".join("---" for _ in rows) + " |")
    for budget in budgets:
        cells = [
            f"{100 * np.mean(rows[s][budget]):.1f}% ± {100 * np.std(rows[s][budget]):.1f}"
            for s in rows
        ]
        print(f"| {budget} | " + " | ".join(cells) + " |")
    print(f"| {len(pool):,} (all) | " + " | ".join(f"{100 * ceiling:.1f}%" for _ in rows) + " |")
    args.out.write_text(
        json.dumps(
            {
                "date": datetime.now(UTC).date().isoformat(),
                "machine": f"{platform.machine()}, {os.cpu_count()} cores",
                "command": "python bench/active_learning_bench.py " + " ".join(sys.argv[1:]),
                "encoder": "minilm, mean pooling, linear probe (C by 3-fold CV)",
                "pool": f"SST-2 train ({len(pool):,}), labels hidden",
                "test": f"SST-2 test ({len(test):,})",
                "start": args.start,
                "batch": args.batch,
                "seeds": args.seeds,
                "accuracy": {s: {str(b): rows[s][b] for b in budgets} for s in rows},
                "all_labels_accuracy": ceiling,
                "seconds": round(seconds, 1),
            },
            indent=2,
        )
        + "\n",
        encoding="utf-8",
    )


if __name__ == "__main__":
    main()
