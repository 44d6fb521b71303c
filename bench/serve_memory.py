"""The memory of ``bertprobe serve``: this tree against a baseline commit, process by process.

``bertprobe serve --model MODEL`` (the model in a process of its own, the CLI's default; and
with ``--workers 2``), started from the package at ``--baseline`` (extracted with ``git
archive``, as bench/startup_bench.py does) and from this tree, in the same virtual
environment; once it answers ``/healthz`` and one prediction, the resident memory (VmRSS) of
every process of the service is read from /proc. One row a service: each process's RSS and
the sum, before and after.

Prints a markdown table; writes bench/results/serve_memory.json.

    .venv/bin/python bench/serve_memory.py --baseline 765e519 --model models/sst2-minilm-mean
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import signal
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

import httpx
from startup_bench import extract

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results"
SHAPES = {"one worker": [], "two workers": ["--workers", "2"]}


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def tree(pid: int) -> list[int]:
    """``pid`` and every process below it."""
    found, queue = [], [pid]
    while queue:
        current = queue.pop()
        found.append(current)
        children = Path(f"/proc/{current}/task/{current}/children")
        if children.exists():
            queue += [int(c) for c in children.read_text().split()]
    return found


def measure(src: Path, model: Path, flags: list[str], port: int) -> dict:
    """One service from ``src``: each of its processes' RSS once it has answered."""
    server = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "bertprobe",
            "serve",
            "--model",
            str(model),
            "--port",
            str(port),
            *flags,
        ],  # fmt: skip
        env={**os.environ, "PYTHONPATH": str(src)},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 300
        while True:
            assert server.poll() is None and time.monotonic() < deadline, "serve did not start"
            try:
                if httpx.get(url + "/healthz", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                time.sleep(0.5)
        for _ in range(4):  # every worker warm and answering
            httpx.post(url + "/v1/predict", json={"texts": ["fine"]}, timeout=60).raise_for_status()
        time.sleep(2)
        processes = {pid: rss_mb(pid) for pid in tree(server.pid)}
        return {"processes_mb": sorted(processes.values(), reverse=True)}
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        server.wait(timeout=60)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--baseline", required=True)
    parser.add_argument("--model", type=Path, required=True)
    parser.add_argument("--port", type=int, default=8731)
    args = parser.parse_args()
    trees = {"baseline": extract(args.baseline), "this tree": ROOT / "src"}
    rows = []
    for shape, flags in SHAPES.items():
        row: dict = {"service": shape}
        for name, src in trees.items():
            found = measure(src, args.model, flags, args.port)
            row[name] = {**found, "total_mb": sum(found["processes_mb"])}
        rows.append(row)
        print(
            f"{shape}: baseline {row['baseline']['total_mb']:.0f} MB, "
            f"this tree {row['this tree']['total_mb']:.0f} MB",
            file=sys.stderr,
        )
    results = {
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, {platform.system()}",
        "command": f"python bench/serve_memory.py --baseline {args.baseline} --model MODEL",
        "model": "all-MiniLM-L6-v2 (bundled), mean pooling, torch backend",
        "baseline": args.baseline,
        "rows": rows,
    }
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "serve_memory.json").write_text(json.dumps(results, indent=2) + "\n")
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from tables import serve_memory

    print(serve_memory())


if __name__ == "__main__":
    main()
