"""Start-up of an ONNX run whose graph is cached: whole processes, this tree against a baseline.

``bertprobe embed data/sst2/train.tsv --backend onnx-int8 --no-cache`` (6,920 sentences, the
bundled MiniLM) as a whole process, its int8 graph already exported into the cache folder; the
baseline is the package as it was at ``--baseline`` (a commit, extracted with ``git archive``)
run from the same virtual environment. Runs alternate (baseline, this tree, ...) ``--repeats``
times; the table gives the medians of the wall time and of the peak memory (RSS), and a
second figure without the forward pass (``embed`` of one sentence) isolates the start-up.

Prints a markdown table; writes bench/results/startup.json.

    .venv/bin/python bench/startup_bench.py --baseline 5cc3d31
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tarfile
import tempfile
import time
from datetime import UTC, datetime
from io import BytesIO
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results"
ONE = "a gorgeous, witty, seductive movie\n"


def extract(commit: str) -> Path:
    """The package's source at ``commit``, in a scratch folder (its ``src``)."""
    archive = subprocess.run(
        ["git", "archive", commit, "src"], cwd=ROOT, check=True, capture_output=True
    ).stdout
    folder = Path(tempfile.mkdtemp(prefix="startup-baseline-"))
    with tarfile.open(fileobj=BytesIO(archive)) as tar:
        tar.extractall(folder, filter="data")
    return folder / "src"


# Runs the CLI and, at exit, writes the process's peak RSS (KB on Linux) where PEAK_FILE says.
WRAPPED = (
    "import atexit, os, resource, sys\n"
    "atexit.register(lambda: open(os.environ['PEAK_FILE'], 'w').write(\n"
    "    str(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)))\n"
    "from bertprobe.cli import main\n"
    "sys.argv[0] = 'bertprobe'\n"
    "main()\n"
)


def run(src: Path, args: list[str], env: dict[str, str], out: Path) -> tuple[float, float]:
    """One ``bertprobe embed`` process from ``src``: wall seconds and its peak RSS in MB."""
    peak = out.with_suffix(".peak")
    command = [sys.executable, "-c", WRAPPED, "embed", *args, "--encoder", "minilm",
               "--pooling", "mean", "--backend", "onnx-int8", "--no-cache",
               "--out", str(out)]  # fmt: skip
    start = time.perf_counter()
    subprocess.run(
        command,
        cwd=ROOT,
        env={**env, "PYTHONPATH": str(src), "PEAK_FILE": str(peak)},
        check=True,
        capture_output=True,
        text=True,
    )
    seconds = time.perf_counter() - start
    return seconds, int(peak.read_text()) / 1024


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--baseline", required=True, help="the commit to compare against")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    scratch = Path(tempfile.mkdtemp(prefix="startup-bench-"))
    env = {**os.environ, "BERTPROBE_CACHE_DIR": str(scratch / "cache")}
    trees = {"baseline": extract(args.baseline), "this tree": ROOT / "src"}
    one = scratch / "one.txt"
    one.write_text(ONE, encoding="utf-8")
    jobs = {
        "SST-2 train (6,920 sentences)": ["data/sst2/train.tsv"],
        "one sentence (the start-up alone)": [str(one)],
    }
    # the int8 graph exported once, into the cache folder both read
    run(trees["this tree"], [str(one)], env, scratch / "warm.npy")
    rows = []
    for job, job_args in jobs.items():
        found: dict[str, list[tuple[float, float]]] = {name: [] for name in trees}
        for _ in range(args.repeats):
            for name, src in trees.items():
                found[name].append(run(src, job_args, env, scratch / "out.npy"))
        row = {"job": job}
        for name, runs in found.items():
            row[name] = {
                "seconds": statistics.median(s for s, _ in runs),
                "rss_mb": statistics.median(m for _, m in runs),
                "runs": [s for s, _ in runs],
            }
        rows.append(row)
        print(
            f"{job}: baseline {row['baseline']['seconds']:.2f} s, "
            f"this tree {row['this tree']['seconds']:.2f} s",
            file=sys.stderr,
        )
    results = {
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, {platform.system()}",
        "command": f"python bench/startup_bench.py --baseline {args.baseline}",
        "baseline": args.baseline,
        "repeats": args.repeats,
        "rows": rows,
    }
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "startup.json").write_text(json.dumps(results, indent=2) + "\n")
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from tables import startup

    print(startup())


if __name__ == "__main__":
    main()
