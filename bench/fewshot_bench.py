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
  self-training, not the tuning again;
- ``zero-shot-prior``: the labels and the classes' descriptions (``--zero-shot`` with the
  ``review`` set of :data:`DESCRIPTIONS`) with that pool: the labels train beside the zero-shot
  head's surest quarter of the pool (``--per-class 0.25``, one round), a probe (these rows
  share one embedding cache across draws, so the pool and the test set are embedded once);
- ``zero-shot-prior-contrastive``: the same with ``--contrastive`` on the 64 surest pool texts a
  class (``--per-class 64``).

``--active``: choosing the labels. For each seed, 200 labels chosen by ``suggest`` (a cold start
of 50, then batches of 50 with the model so far: bench/active_learning_bench.py's procedure) and
200 drawn at random, each then trained with ``--contrastive``.

``--zero-shot``: no labels at all. The classes are described (three sets of descriptions:
the names alone, the names in a sentence, several phrases a class; see :data:`DESCRIPTIONS`)
and the pool is the 6,920 training texts without their labels:

- ``zero-shot/<descriptions>``: the zero-shot head alone (``train --zero-shot``);
- ``self-train-probe/<descriptions>``: three rounds of self-training, a probe on the surest
  quarter of the pool each round (``--rounds 3 --per-class 0.25``);
- ``self-train-contrastive/<descriptions>``: one round, contrastive tuning on the 64 surest
  texts of each class (``--rounds 1 --per-class 64 --contrastive``, the cost of 64 labels a
  class).

The ``--finetune`` and SetFit rows are not run again here (about 4 and 9 minutes a run): the
table shows them from bench/results/finetune_bench.json, whose draws are the same.

``--data fortunes``: the same rows on a task that is not sentiment, five topics of fortune-cookie
texts (bench/data/fortunes, made by bench/make_fortunes.py from Debian's ``fortunes`` package:
2,000 training and 500 test texts), the classes described by their names
(:data:`FORTUNE_DESCRIPTIONS`); results in bench/results/fewshot_fortunes.json and
zeroshot_fortunes.json.

Results are saved after every run to bench/results/fewshot.json, and a run already there is not
run again (so an interrupted benchmark resumes; ``--fresh`` starts over). Prints a markdown
table.

    .venv/bin/python bench/fewshot_bench.py [--sizes 8,64] [--seeds 5] [--active] [--zero-shot]
        [--data sst2|fortunes]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from finetune_bench import BIN, RESULTS, per_class_rows, timed  # noqa: E402

ROWS = (
    "probe", "contrastive", "contrastive-unlabelled", "zero-shot-prior",
    "zero-shot-prior-contrastive",
)  # fmt: skip
FLAGS = {
    "probe": ["--auto"],
    "contrastive": ["--pooling", "mean", "--contrastive"],
    "contrastive-unlabelled": ["--pooling", "mean", "--contrastive"],
    "zero-shot-prior": ["--pooling", "mean", "--per-class", "0.25"],
    "zero-shot-prior-contrastive": ["--pooling", "mean", "--per-class", "64", "--contrastive"],
}
# The rows that learn from the pool too (those that describe the classes as well: see
# BenchData.prior).
POOL_ROWS = ("contrastive-unlabelled", "zero-shot-prior", "zero-shot-prior-contrastive")


# Each set of descriptions: a class (as SST-2's files name it) to its descriptions, and the
# template they are put in.
DESCRIPTIONS: dict[str, tuple[dict[str, list[str]], str]] = {
    "names": ({"0": ["negative"], "1": ["positive"]}, "{}"),
    "review": ({"0": ["negative"], "1": ["positive"]}, "This is a {} review."),
    "phrases": (
        {
            "0": ["negative", "This is a negative review.", "a bad movie", "the film is terrible"],
            "1": ["positive", "This is a positive review.", "a good movie", "the film is great"],
        },
        "{}",
    ),
}
# The fortune topics, by the labels bench/make_fortunes.py gives them.
FORTUNE_DESCRIPTIONS: dict[str, tuple[dict[str, list[str]], str]] = {
    "names": ({t: [t] for t in ("computers", "politics", "science", "poetry", "work")}, "{}"),
    "quote": (
        {t: [t] for t in ("computers", "politics", "science", "poetry", "work")},
        "A quote about {}.",
    ),
    "phrases": (
        {
            "computers": ["computers", "programming and software", "a joke about computers"],
            "politics": ["politics", "government and politicians", "a quote about politics"],
            "science": ["science", "mathematics and physics", "a joke about scientists"],
            "poetry": ["poetry", "a song or a poem", "verses that rhyme"],
            "work": ["work", "jobs and the office", "a joke about bosses and employees"],
        },
        "{}",
    ),
}


@dataclass(frozen=True)
class BenchData:
    """A data set the benchmark runs on: where its results go, how its classes are described
    (``prior``: the descriptions the zero-shot-prior rows give)."""

    name: str
    out: Path
    zero_shot_out: Path  # the runs with no labels: their own date and command
    descriptions: dict[str, tuple[dict[str, list[str]], str]]
    prior: str

    def splits(self):
        """The training and test splits (texts and labels)."""
        if self.name == "sst2":
            from bertprobe.datasets import load_sst2

            return load_sst2("train"), load_sst2("test")
        from bertprobe.data.files import read_labelled

        folder = Path(__file__).resolve().parent / "data" / self.name
        return read_labelled(folder / "train.tsv"), read_labelled(folder / "test.tsv")


DATA_SETS = {
    "sst2": BenchData(
        "sst2", RESULTS / "fewshot.json", RESULTS / "zeroshot.json", DESCRIPTIONS, "review"
    ),
    "fortunes": BenchData(
        "fortunes", RESULTS / "fewshot_fortunes.json", RESULTS / "zeroshot_fortunes.json",
        FORTUNE_DESCRIPTIONS, "quote",
    ),
}  # fmt: skip


ZERO_SHOT_ROWS = {
    "zero-shot": [],
    "self-train-probe": ["--rounds", "3", "--per-class", "0.25"],
    "self-train-contrastive": ["--rounds", "1", "--per-class", "64", "--contrastive"],
}


def run_zero_shot(
    row: str, described: str, pool: Path, test: Path, work: Path, data: BenchData
) -> dict:
    """One ``bertprobe train --zero-shot`` process (no labels): test accuracy, time, memory,
    and what each self-training round did. A cache of its own: its time includes embedding
    the pool and the test set, as a user's first run does."""
    env = {**os.environ, "BERTPROBE_CACHE_DIR": str(work / f"cache-{row}-{described}")}
    command = [str(BIN / "bertprobe"), "train", "--unlabelled", str(pool), "--test", str(test)]
    command += [*described_flags(data.descriptions[described])]
    command += ["--encoder", "minilm", "--pooling", "mean", "--json"]
    cost, printed = timed([*command, *ZERO_SHOT_ROWS[row]], env)
    summary = json.loads(printed)
    result = {"accuracy": summary["test_accuracy"], **cost}
    if summary.get("zero_shot_rounds"):
        result["rounds"] = summary["zero_shot_rounds"]["rounds"]
    return result


def described_flags(described: tuple[dict[str, list[str]], str]) -> list[str]:
    """The ``--zero-shot`` and ``--template`` flags of a set of descriptions."""
    descriptions, template = described
    flags = [
        f
        for label, texts in descriptions.items()
        for t in texts
        for f in ("--zero-shot", f"{label}={t}")
    ]
    return [*flags, "--template", template]


def zero_shot_runs(
    pool_texts: list[str], test: Path, tmp: Path, fresh: bool, data: BenchData, rows: list[str]
) -> None:
    """Every zero-shot row for every set of descriptions, saved to ``data.zero_shot_out``
    after each run (a run already there is not run again)."""
    out = data.zero_shot_out
    saved = {} if fresh or not out.exists() else json.loads(out.read_text())
    results: dict = saved.get("results", {})
    work = tmp / "zero-shot"
    work.mkdir()
    pool = write_rows(work / "pool.txt", pool_texts)
    for row in rows:
        for described in data.descriptions:
            done = results.setdefault(row, {})
            if described in done:
                continue
            done[described] = run_zero_shot(row, described, pool, test, work, data)
            print(f"{row:<24} {described:<8}: {done[described]}", file=sys.stderr)
            record = {
                "date": datetime.now(UTC).isoformat(timespec="seconds"),
                "machine": f"{platform.machine()}, {os.cpu_count()} cores",
                "command": "python bench/fewshot_bench.py " + " ".join(sys.argv[1:]),
                "note": "one run a cell (no labels are drawn); each run from an empty cache",
                "results": results,
            }
            out.write_text(json.dumps(record, indent=1) + "\n", encoding="utf-8")


def write_rows(path: Path, texts: list[str], labels: list | None = None) -> Path:
    if labels is None:
        path.write_text("".join(f"{t}\n" for t in texts), encoding="utf-8")
    else:
        path.write_text(
            "".join(f"{t}\t{y}\n" for t, y in zip(texts, labels, strict=True)), encoding="utf-8"
        )
    return path


def run_train(
    row: str, train: Path, test: Path, work: Path, pool: Path | None, data: BenchData
) -> dict:
    """One ``bertprobe train`` process: test accuracy, time, memory, what tuning did."""
    # The rows with descriptions share one cache across draws: the pool's and the test set's
    # frozen vectors are embedded once (their time is the training, not that embedding).
    cache = work.parent / "cache-prior" if row.startswith("zero-shot-prior") else work / "cache"
    env = {**os.environ, "BERTPROBE_CACHE_DIR": str(cache)}
    command = [str(BIN / "bertprobe"), "train", str(train), "--test", str(test)]
    command += ["--encoder", "minilm", "--json", *FLAGS[row]]
    if row in POOL_ROWS:
        assert pool is not None
        command += ["--unlabelled", str(pool)]
    if row.startswith("zero-shot-prior"):
        command += described_flags(data.descriptions[data.prior])
    cost, printed = timed(command, env)
    summary = json.loads(printed)
    result = {"accuracy": summary["test_accuracy"], "cv_accuracy": summary["cv_accuracy"], **cost}
    if summary.get("self_training"):
        result["self_training"] = summary["self_training"]
    if summary.get("zero_shot_rounds"):
        result["rounds"] = summary["zero_shot_rounds"]["rounds"]
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
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="8,16,32,64")
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--rows", default=",".join(ROWS))
    parser.add_argument("--active", action="store_true", help="also the 200-label runs")
    parser.add_argument("--active-seeds", type=int, default=3)
    parser.add_argument("--zero-shot", action="store_true", help="also the runs with no labels")
    parser.add_argument("--zero-shot-rows", default=",".join(ZERO_SHOT_ROWS))
    parser.add_argument("--fresh", action="store_true", help="forget earlier results")
    parser.add_argument("--data", choices=sorted(DATA_SETS), default="sst2")
    args = parser.parse_args()
    data = DATA_SETS[args.data]
    out = data.out
    saved = {} if args.fresh or not out.exists() else json.loads(out.read_text())
    results: dict = saved.get("results", {})
    train_split, test_split = data.splits()
    labels = list(train_split.labels or [])

    def save() -> None:
        out.write_text(
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
                    result = {**run_train(row, train, test, work, pool, data), "seed": seed}
                    done.append(result)
                    print(f"{row:<24} {size:>3} seed {seed}: {result}", file=sys.stderr)
                    save()
        if args.zero_shot:
            rows = args.zero_shot_rows.split(",")
            zero_shot_runs(train_split.texts, test, Path(tmp), args.fresh, data, rows)
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
                    result = {
                        **run_train("contrastive", train, test, work, None, data),
                        "seed": seed,
                    }
                    done.append(result)
                    print(f"200 {strategy} + contrastive seed {seed}: {result}", file=sys.stderr)
                    save()
    from tables import fewshot

    print(fewshot(data.out.name))


if __name__ == "__main__":
    main()
