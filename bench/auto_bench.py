"""`train --auto` benchmark: the screened sweep against the exhaustive one.

For SST-2's training split (6,920 sentences) and the recipe's 2,000-sentence subset of it (the
first 2,000 rows), with the bundled encoder:

- cold: `bertprobe train FILE --auto` with an empty cache folder (embedding included);
- cached: the same command again, every vector in the cache;
- exhaustive: the same with `--finalists 0` (every candidate scored by the probe's CV, the
  sweep before the screen) on the warm cache: the previous figure, and the reference the
  screened choice is judged by: the chosen candidate's CV accuracy in the exhaustive sweep
  against the best CV accuracy there (the goal: within 0.2 points).

Each command runs in its own process and is timed whole (wall seconds, Python start
included). Prints a table; writes bench/results/auto_bench.json.

    .venv/bin/python bench/auto_bench.py [--sets sst2,sst2-2k]
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

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results"
TRAIN = ROOT / "data" / "sst2" / "train.tsv"
SETS = {"sst2": None, "sst2-2k": 2000}


def train_auto(data: Path, cache: Path, out: Path, *extra: str) -> tuple[dict, float]:
    command = [
        sys.executable, "-m", "bertprobe", "train", str(data), "--encoder", "minilm", "--auto",
        "--cache-dir", str(cache), "--out", str(out), "--json", *extra,
    ]  # fmt: skip
    start = time.perf_counter()
    done = subprocess.run(command, capture_output=True, text=True, check=False)
    seconds = time.perf_counter() - start
    if done.returncode != 0:
        raise SystemExit(f"{' '.join(command)} failed:\n{done.stderr}")
    return json.loads(done.stdout), seconds


def sweep_of(out: Path) -> dict:
    return json.loads((out / "card.json").read_text())["sweep"]


def run_set(name: str, rows: int | None, work: Path) -> dict:
    data = TRAIN
    if rows is not None:
        data = work / f"{name}.tsv"
        lines = TRAIN.read_text(encoding="utf-8").splitlines(keepends=True)[:rows]
        data.write_text("".join(lines), encoding="utf-8")
    cache = work / f"cache-{name}"
    _, cold = train_auto(data, cache, work / f"{name}-cold")
    fast, cached = train_auto(data, cache, work / f"{name}-cached")
    slow, exhaustive = train_auto(data, cache, work / f"{name}-exhaustive", "--finalists", "0")
    screened, every = sweep_of(work / f"{name}-cached"), sweep_of(work / f"{name}-exhaustive")
    by_name = {r["name"]: r["cv_accuracy"] for r in every["rows"]}
    best_name = max(by_name, key=lambda n: by_name[n])
    return {
        "set": name,
        "n_train": fast["n_train"],
        "cold_seconds": cold,
        "cached_seconds": cached,
        "exhaustive_cached_seconds": exhaustive,
        "screen_seconds": screened["screen_seconds"],
        "sweep_seconds": screened["seconds"],
        "exhaustive_sweep_seconds": every["seconds"],
        "chosen": screened["best"],
        "chosen_exhaustive_cv": by_name[screened["best"]],
        "exhaustive_best": best_name,
        "exhaustive_best_cv": by_name[best_name],
        "gap_points": 100 * (by_name[best_name] - by_name[screened["best"]]),
        "finalists": [r["name"] for r in screened["rows"] if r["cv_accuracy"] is not None],
        "choice": fast["auto"],
        "exhaustive_choice": slow["auto"],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sets", default=",".join(SETS))
    args = parser.parse_args()
    load = os.getloadavg()[0]  # others' work on the same cores slows every row
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        for name in args.sets.split(","):
            results.append(run_set(name, SETS[name], Path(tmp)))
            print(json.dumps(results[-1]), flush=True)
    print()
    print(
        "| set | rows | cold s | cached s | exhaustive cached s | chosen (its CV) | "
        "exhaustive best (CV) | gap, points |"
    )
    print("|---|---:|---:|---:|---:|---|---|---:|")
    for r in results:
        print(
            f"| {r['set']} | {r['n_train']:,} | {r['cold_seconds']:.0f} | "
            f"{r['cached_seconds']:.0f} | {r['exhaustive_cached_seconds']:.0f} | "
            f"{r['chosen']} ({100 * r['chosen_exhaustive_cv']:.2f}%) | "
            f"{r['exhaustive_best']} ({100 * r['exhaustive_best_cv']:.2f}%) | "
            f"{r['gap_points']:.2f} |"
        )
    RESULTS.mkdir(parents=True, exist_ok=True)
    record = {
        "date": datetime.now(UTC).strftime("%Y-%m-%d"),
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, {platform.system()}",
        "load_average_at_start": load,
        "rows": results,
    }
    (RESULTS / "auto_bench.json").write_text(json.dumps(record, indent=2) + "\n")


if __name__ == "__main__":
    main()
