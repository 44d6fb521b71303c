"""Peak memory of `bertprobe train` on a training file that holds one huge line.

The file is the first ``--rows`` rows of data/sst2/train.tsv plus one review of
``--chars`` characters (SST-2 sentences repeated until the length is reached). Each mode
(``--long truncate`` and ``--long chunk`` at ``--max-length``) runs `bertprobe train` with the
bundled encoder and mean pooling in a fresh process, with a fresh cache folder, and reads that
process's peak resident memory (``ru_maxrss`` of the child). Given ``--src`` folders, the same
runs use each checkout's ``src`` (for before / after in one run); by default this checkout.

Prints a markdown table; writes bench/results/long_line_memory.json (``--out`` elsewhere).

    .venv/bin/python bench/long_line_memory.py
    .venv/bin/python bench/long_line_memory.py --src /tmp/old/src --src src   # before / after
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
from functools import partial
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def training_file(folder: Path, rows: int, chars: int) -> Path:
    lines = (ROOT / "data/sst2/train.tsv").read_text(encoding="utf-8").splitlines()[:rows]
    sentences = [line.split("\t")[0] for line in lines]
    parts, size = [], 0
    while size < chars:
        for sentence in sentences:
            parts.append(sentence)
            size += len(sentence) + 1
            if size >= chars:
                break
    path = folder / "train.tsv"
    path.write_text("\n".join([*lines, " ".join(parts)[:chars] + "\t1"]) + "\n", encoding="utf-8")
    return path


def peak_of_train(src: Path, data: Path, long: str, max_length: int, folder: Path) -> dict:
    """Run `bertprobe train` in a child process and return its peak RSS and time."""
    cache = Path(tempfile.mkdtemp(dir=folder))
    code = (
        "import resource, sys; from bertprobe.cli import main\n"
        "try:\n    main()\nexcept SystemExit as e:\n    code = e.code\nelse:\n    code = 0\n"
        "print('PEAK', resource.getrusage(resource.RUSAGE_SELF).ru_maxrss, file=sys.stderr)\n"
        "sys.exit(code)\n"
    )
    argv = [
        sys.executable, "-c", code, "train", str(data), "--encoder", "minilm", "--pooling",
        "mean", "--long", long, "--max-length", str(max_length), "--cache-dir", str(cache),
        "--out", str(cache / "model"), "--json",
    ]  # fmt: skip
    env = {**os.environ, "PYTHONPATH": str(src.resolve()), "HF_HUB_OFFLINE": "1"}
    start = time.perf_counter()
    done = subprocess.run(argv, env=env, capture_output=True, text=True, check=False)
    seconds = time.perf_counter() - start
    if done.returncode != 0:
        raise SystemExit(f"{src} {long}: exit {done.returncode}\n{done.stderr[-2000:]}")
    peak_kb = int(done.stderr.rsplit("PEAK", 1)[1].split()[0])
    result = json.loads(done.stdout.strip().splitlines()[-1])
    return {
        "peak_rss_mb": round(peak_kb / 1024),
        "seconds": round(seconds, 1),
        "n_truncated": result.get("n_truncated"),
        "n_windows": result.get("n_windows"),
    }


def _commit(src: Path) -> str:
    """The commit a source folder's checkout is at (``+`` when its tree has changes)."""
    run = partial(subprocess.run, capture_output=True, text=True, check=False, cwd=src)
    head = run(["git", "rev-parse", "--short", "HEAD"]).stdout.strip()
    dirty = run(["git", "status", "--porcelain", "."]).stdout.strip()
    return head + ("+" if dirty else "")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=200)
    parser.add_argument("--chars", type=int, default=6_000_000)
    parser.add_argument("--max-length", type=int, default=128)
    parser.add_argument("--src", type=Path, action="append", default=None)
    parser.add_argument("--modes", default="truncate,chunk")
    parser.add_argument("--out", type=Path, default=ROOT / "bench/results/long_line_memory.json")
    args = parser.parse_args()
    sources = args.src or [ROOT / "src"]
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        data = training_file(folder, args.rows, args.chars)
        rows = []
        for src in sources:
            for long in args.modes.split(","):
                found = peak_of_train(src, data, long, args.max_length, folder)
                rows.append({"src": str(src), "commit": _commit(src), "long": long, **found})
                print(json.dumps(rows[-1]), flush=True)
    print("\n| src | long | peak RSS (MB) | seconds | truncated | windows |")
    print("| --- | --- | --- | --- | --- | --- |")
    for row in rows:
        print(
            f"| {row['src']} | {row['long']} | {row['peak_rss_mb']:,} | {row['seconds']} | "
            f"{row['n_truncated']} | {row['n_windows']} |"
        )
    args.out.write_text(
        json.dumps(
            {
                "date": datetime.now(UTC).date().isoformat(),
                "machine": f"{platform.machine()}, {os.cpu_count()} cores",
                "command": "python bench/long_line_memory.py " + " ".join(sys.argv[1:]),
                "rows": args.rows,
                "chars": args.chars,
                "max_length": args.max_length,
                "results": rows,
            },
            indent=2,
        )
        + "\n",
        encoding="utf-8",
    )


if __name__ == "__main__":
    main()
