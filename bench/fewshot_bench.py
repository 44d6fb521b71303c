"""Few labels: the probe, contrastive tuning and self-training on SST-2 with the bundled encoder.

Every run is its own process (its wall time, CPU seconds and peak RSS are its own), one after
another, on SST-2's sentence split with all-MiniLM-L6-v2, scored on the 1,821 test sentences:

- sizes ``8``, ``16``, ``32``, ``64`` training sentences per class, drawn with seeds 0..4 by
  bench/finetune_bench.py's ``per_class_rows`` (the same draws as its rows);
- ``probe``: ``bertprobe train --auto``;
- ``contrastive``: ``bertprobe train --pooling mean --contrastive`` (the defaults);
- ``contrastive-unlabelled``: the same with ``--unlabelled``: the rest of the training split,
  labels removed (about 6,900 texts). It runs after ``contrastive`` with the same cache folder,
  so it reuses that run's tuned encoder: its time is the embedding of the pool and the
  self-training, not the tuning again.

``--active``: choosing the labels. For each seed, 200 labels chosen by ``suggest`` (a cold start
of 50, then batches of 50 with the model so far: bench/active_learning_bench.py's procedure) and
200 drawn at random, each then trained with ``--contrastive``.

The ``--finetune`` and SetFit rows are not run again here (about 4 and 9 minutes a run): the
table shows them from bench/results/finetune_bench.json, whose draws are the same.

Results are saved after every run to bench/results/fewshot.json, and a run already there is not
run again (so an interrupted benchmark resumes; ``--fresh`` starts over). Prints a markdown
table.

    .venv/bin/python bench/fewshot_bench.py [--sizes 8,64] [--seeds 5] [--active]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
from datetime import UTC, datetime
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from finetune_bench import BIN, RESULTS, per_class_rows, timed  # noqa: E402

OUT = RESULTS / "fewshot.json"
ROWS = ("probe", "contrastive", "contrastive-unlabelled")
FLAGS = {
    "probe": ["--auto"],
    "contrastive": ["--pooling", "mean", "--contrastive"],
    "contrastive-unlabelled": ["--pooling", "mean", "--contrastive"],
}


def write_rows(path: Path, texts: list[str], labels: list | None = None) -> Path:
    if labels is None:
        path.write_text("".join(f"{t}\n" for t in texts), encoding="utf-8")
    else:
        path.write_text(
            "".join(f"{t}\t{y}\n" for t, y in zip(texts, labels, strict=True)), encoding="utf-8"
        )
    return path


def run_train(row: str, train: Path, test: Path, work: Path, pool: Path | None) -> dict:
    """One ``bertprobe train`` process: test accuracy, time, memory, what tuning did."""
    env = {**os.environ, "BERTPROBE_CACHE_DIR": str(work / "cache")}
    command = [str(BIN / "bertprobe"), "train", str(train), "--test", str(test)]
    command += ["--encoder", "minilm", "--json", *FLAGS[row]]
    if row == "contrastive-unlabelled":
        assert pool is not None
        command += ["--unlabelled", str(pool)]
    cost, printed = timed(command, env)
    summary = json.loads(printed)
    result = {"accuracy": summary["test_accuracy"], "cv_accuracy": summary["cv_accuracy"], **cost}
    if summary.get("self_training"):
        result["self_training"] = summary["self_training"]
    return result


def suggested_rows(pool, seed: int, budget: int, start: int = 50, batch: int = 50) -> list[int]:
    """The rows ``suggest`` picks up to ``budget`` labels (cold start, then the model so far)."""
    from bertprobe import Classifier, EncoderOptions, TrainOptions
    from bertprobe.model.suggest import suggest

    encoding = EncoderOptions("minilm", pooling="mean")
    picked = [s.row for s in suggest(pool.texts, n=start, encoding=encoding, seed=seed)]
    while len(picked) < budget:
        texts = [pool.texts[i] for i in picked]
        labels = [pool.labels[i] for i in picked]
        model = Classifier.fit(
            texts, labels, encoding=encoding, options=TrainOptions(cv=3, n_jobs=1)
        )
        more = suggest(pool.texts, n=batch, model=model, labelled=texts, seed=seed)
        picked += [s.row for s in more]
    return picked[:budget]


def main() -> None:
    from bertprobe.datasets import load_sst2

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="8,16,32,64")
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--rows", default=",".join(ROWS))
    parser.add_argument("--active", action="store_true", help="also the 200-label runs")
    parser.add_argument("--active-seeds", type=int, default=3)
    parser.add_argument("--fresh", action="store_true", help="forget earlier results")
    args = parser.parse_args()
    saved = {} if args.fresh or not OUT.exists() else json.loads(OUT.read_text())
    results: dict = saved.get("results", {})
    train_split, test_split = load_sst2("train"), load_sst2("test")
    labels = list(train_split.labels or [])

    def save() -> None:
        OUT.write_text(
            json.dumps(
                {
                    "date": datetime.now(UTC).isoformat(timespec="seconds"),
                    "machine": f"{platform.machine()}, {os.cpu_count()} cores",
                    "command": "python bench/fewshot_bench.py " + " ".join(sys.argv[1:]),
                    "note": "a shared machine: CPU seconds compare runs, wall seconds vary",
                    "results": results,
                },
                indent=1,
            )
            + "\n",
            encoding="utf-8",
        )

    with tempfile.TemporaryDirectory() as tmp:
        test = write_rows(Path(tmp) / "test.tsv", test_split.texts, test_split.labels)
        for size in args.sizes.split(","):
            for seed in range(args.seeds):
                work = Path(tmp) / f"{size}-{seed}"
                work.mkdir()
                rows = per_class_rows(labels, int(size), seed)
                train = write_rows(
                    work / "train.tsv",
                    [train_split.texts[i] for i in rows],
                    [labels[i] for i in rows],
                )
                rest = sorted(set(range(len(labels))) - set(rows))
                pool = write_rows(work / "pool.txt", [train_split.texts[i] for i in rest])
                for row in args.rows.split(","):
                    done = results.setdefault(row, {}).setdefault(size, [])
                    if any(r["seed"] == seed for r in done):
                        continue
                    result = {**run_train(row, train, test, work, pool), "seed": seed}
                    done.append(result)
                    print(f"{row:<24} {size:>3} seed {seed}: {result}", file=sys.stderr)
                    save()
        if args.active:
            for strategy in ("suggest", "random"):
                for seed in range(args.active_seeds):
                    done = results.setdefault(f"200-{strategy}-contrastive", [])
                    if any(r["seed"] == seed for r in done):
                        continue
                    work = Path(tmp) / f"active-{strategy}-{seed}"
                    work.mkdir()
                    picked = (
                        suggested_rows(train_split, seed, 200)
                        if strategy == "suggest"
                        else np.random.default_rng(seed).permutation(len(labels))[:200].tolist()
                    )
                    train = write_rows(
                        work / "train.tsv",
                        [train_split.texts[i] for i in picked],
                        [labels[i] for i in picked],
                    )
                    result = {**run_train("contrastive", train, test, work, None), "seed": seed}
                    done.append(result)
                    print(f"200 {strategy} + contrastive seed {seed}: {result}", file=sys.stderr)
                    save()
    from tables import fewshot

    print(fewshot())


if __name__ == "__main__":
    main()
