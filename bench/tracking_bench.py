"""What tracking costs: `make demo`'s three training runs with and without ``--track``.

Each of the demo's runs (``--auto``; ``--pooling cls --layer -1``, the recipe; ``--pooling mean
--layer -1``) on SST-2 train and test, as a whole ``bertprobe train`` process, first untracked
and then tracked into a sqlite store (``--track sqlite:///...``: the options, figures, tables,
the report and the model logged), one after the other on a warm embedding cache (a first
tracked ``--auto`` run, not counted, fills it and creates the store), so the difference is
tracking's cost; ``--repeats`` pairs, the medians. One row a run: both times, the difference,
and the seconds the tracker itself counted (MLflow's calls and the report it logs).

Prints a markdown table; writes bench/results/tracking.json.

    .venv/bin/python bench/tracking_bench.py
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results"
DATA = ["data/sst2/train.tsv", "--test", "data/sst2/test.tsv", "--encoder", "minilm"]
RUNS = {
    "auto": ["--auto"],
    "cls": ["--pooling", "cls", "--layer", "-1"],
    "mean": ["--pooling", "mean", "--layer", "-1"],
}


def train(flags: list[str], out: Path, env: dict[str, str], track: str | None) -> dict:
    """One ``bertprobe train`` process: its wall time and its --json summary."""
    command = [sys.executable, "-m", "bertprobe", "train", *DATA, *flags, "--out", str(out)]
    if track is not None:
        command += ["--track", track, "--experiment", "tracking-bench"]
    start = time.perf_counter()
    done = subprocess.run(
        [*command, "--json"], cwd=ROOT, env=env, check=True, capture_output=True, text=True
    )
    return {"seconds": time.perf_counter() - start, **json.loads(done.stdout)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", default=",".join(RUNS), help="which of the demo's runs")
    parser.add_argument("--repeats", type=int, default=2, help="pairs of runs (the median)")
    args = parser.parse_args()
    scratch = Path(tempfile.mkdtemp(prefix="tracking-bench-"))
    env = {**os.environ, "BERTPROBE_CACHE_DIR": str(scratch / "cache")}
    store = f"sqlite:///{scratch / 'mlflow.db'}"
    # With a sqlite store MLflow writes artifacts under ./mlruns of the working folder (the
    # repository, here): the experiment's artifact location keeps them in the scratch folder.
    import mlflow

    mlflow.MlflowClient(store).create_experiment(
        "tracking-bench", artifact_location=(scratch / "artifacts").as_uri()
    )
    # The warm-up fills the embedding cache and, tracked, creates the store's tables (MLflow's
    # schema migrations: a one-time cost of a new store, not a run's).
    warm = train(RUNS["auto"], scratch / "warm-up", env, store)
    print(f"warm-up --auto, tracked: {warm['seconds']:.1f} s", file=sys.stderr)
    rows = []
    for name in args.runs.split(","):
        pairs = []
        for repeat in range(args.repeats):
            plain = train(RUNS[name], scratch / f"{name}-plain-{repeat}", env, None)
            tracked = train(RUNS[name], scratch / f"{name}-tracked-{repeat}", env, store)
            assert tracked["test_accuracy"] == plain["test_accuracy"], "tracking changed it"
            assert tracked["mlflow_complete"], "the tracked run is incomplete"
            pairs.append((plain, tracked))
            print(
                f"{name}: {plain['seconds']:.1f} s untracked, {tracked['seconds']:.1f} s "
                f"tracked ({tracked['mlflow_seconds']:.1f} s in tracking)",
                file=sys.stderr,
            )
        untracked = [p["seconds"] for p, _ in pairs]
        with_tracking = [t["seconds"] for _, t in pairs]
        rows.append(
            {
                "run": name,
                "flags": " ".join(RUNS[name]),
                "untracked_seconds": statistics.median(untracked),
                "tracked_seconds": statistics.median(with_tracking),
                "overhead_seconds": statistics.median(with_tracking) - statistics.median(untracked),
                "tracking_seconds": statistics.median(t["mlflow_seconds"] for _, t in pairs),
                "untracked_runs": untracked,
                "tracked_runs": with_tracking,
                "test_accuracy": pairs[0][0]["test_accuracy"],
            }
        )
    results = {
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, {platform.system()}",
        "command": "python bench/tracking_bench.py",
        "store": "sqlite (a local file, created by the warm-up), report and model logged",
        "repeats": args.repeats,
        "rows": rows,
    }
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "tracking.json").write_text(json.dumps(results, indent=2) + "\n")
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from tables import tracking

    print(tracking())


if __name__ == "__main__":
    main()
