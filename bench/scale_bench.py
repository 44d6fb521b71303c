"""Scale benchmark: `bertprobe embed` in one process against `embed --ray` on this machine.

N short synthetic sentences (3 to 7 of SST-2's 2,000 most common words; default 100k) are
embedded with the bundled encoder, onnx-int8, mean pooling, no cache:

- single: one process, 2 threads, one file (`bertprobe embed all.txt --out X.npy`);
- ray: a local Ray instance, 2 actors x 1 thread (`--ray local --actors 2 --actor-cpus 1`),
  the same sentences split over 4 files, written back as one .npy in input order;
- ray-shards: the same, left as Parquet shards in a folder (what a cluster run writes).

Each row runs in its own process; "s in bertprobe" leaves out the Python start and (single
row) the encoder's load, "wall" is the whole command. The Ray rows also report the part spent
starting Ray (`connect_seconds`); sentences/s are over the whole run and over the run less
that start (a fixed cost a long job pays once). The .npy of the ray row is compared with the
single row's (max abs difference). Also measured: the Parquet write rate of 384-d float32
vectors. From these, a projection to 100M sentences on a 16-node CPU cluster is printed, with
what it assumes (a GPU projection needs a rate measured on a GPU, which this machine has not).

Prints a markdown table; writes bench/results/scale_bench.json.

    .venv/bin/python bench/scale_bench.py [--n 100000] [--rows single,ray,ray-shards]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import subprocess
import sys
import tempfile
import time
from collections import Counter
from datetime import UTC, datetime
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results"
ROWS = ("single", "ray", "ray-shards")
COMMON = ["--encoder", "minilm", "--pooling", "mean", "--backend", "onnx-int8", "--no-cache"]


def synthetic_sentences(n: int, seed: int = 0) -> list[str]:
    from bertprobe.datasets import load_sst2

    words = Counter(w for t in load_sst2("train").texts for w in t.split())
    vocab = [w for w, _ in words.most_common(2000)]
    draw = random.Random(seed)
    return [" ".join(draw.choices(vocab, k=draw.randint(3, 7))) for _ in range(n)]


def write_inputs(texts: list[str], folder: Path) -> tuple[Path, Path]:
    """One file of every text, and a folder of the same texts over 4 files (in name order)."""
    single = folder / "all.txt"
    single.write_text("\n".join(texts) + "\n", encoding="utf-8")
    parts = folder / "parts"
    parts.mkdir()
    step = -(-len(texts) // 4)
    for i in range(4):
        chunk = texts[i * step : (i + 1) * step]
        (parts / f"part-{i}.txt").write_text("\n".join(chunk) + "\n", encoding="utf-8")
    return single, parts


def run_cli(args: list[str], threads: int) -> tuple[dict, float]:
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "TOKENIZERS_PARALLELISM": "false"}
    start = time.perf_counter()
    proc = subprocess.run(
        [sys.executable, "-m", "bertprobe", *args, "--json"],
        capture_output=True,
        text=True,
        env=env,
        check=False,
    )
    wall = time.perf_counter() - start
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(args)} failed:\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1]), wall


def parquet_write_rate(n: int, folder: Path) -> float:
    """Rows/s of writing n 384-d float32 vectors as one Parquet file (id, vector)."""
    from bertprobe.encoders.features import write_vectors_parquet

    rows = np.random.default_rng(0).standard_normal((n, 384)).astype(np.float32)
    start = time.perf_counter()
    write_vectors_parquet((rows[i : i + 8192] for i in range(0, n, 8192)), folder / "w.parquet")
    return n / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=100_000, help="sentences (default 100k)")
    parser.add_argument("--rows", default=",".join(ROWS))
    parser.add_argument("--chunk-size", type=int, default=2048)
    args = parser.parse_args()
    rows = args.rows.split(",")
    results: list[dict] = []
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        single_file, parts = write_inputs(synthetic_sentences(args.n), folder)
        # The int8 export is made once, before any timed row, into a shared cache folder.
        warm = folder / "warm.txt"
        warm.write_text("warm up\n", encoding="utf-8")
        cache = ["--cache-dir", str(folder / "cache")]
        run_cli(["embed", str(warm), "--out", str(folder / "w.npy"), *COMMON, *cache], 2)
        chunk = ["--chunk-size", str(args.chunk_size)]
        if "single" in rows:
            out, wall = run_cli(
                [
                    "embed",
                    str(single_file),
                    "--out",
                    str(folder / "X.npy"),
                    *COMMON,
                    *cache,
                    *chunk,
                ],
                2,
            )
            results.append(
                {
                    "row": "single",
                    "n": out["n"],
                    "seconds": out["seconds"],
                    "wall": wall,
                    "rate": out["n"] / out["seconds"],
                    "rate_after_start": out["n"] / out["seconds"],
                }
            )
        for row, target in (("ray", folder / "Xray.npy"), ("ray-shards", folder / "shards")):
            if row not in rows:
                continue
            out, wall = run_cli(
                [
                    "embed",
                    str(parts),
                    "--out",
                    str(target),
                    *COMMON,
                    *cache,
                    *chunk,
                    "--ray",
                    "local",
                    "--actors",
                    "2",
                    "--actor-cpus",
                    "1",
                ],
                1,
            )
            working = out["seconds"] - out["connect_seconds"]
            record = {
                "row": row,
                "n": out["n"],
                "seconds": out["seconds"],
                "wall": wall,
                "connect_seconds": out["connect_seconds"],
                "rate": out["n"] / out["seconds"],
                "rate_after_start": out["n"] / working,
                "actors": out["actors"],
            }
            if row == "ray" and (folder / "X.npy").exists():
                record["max_abs_diff"] = float(
                    np.max(np.abs(np.load(folder / "Xray.npy") - np.load(folder / "X.npy")))
                )
            results.append(record)
        write_rate = parquet_write_rate(min(args.n, 100_000), folder)

    by_row = {r["row"]: r for r in results}
    print(
        "| row | sentences | wall s | s in bertprobe | s starting Ray | sentences/s | after start |"
    )
    print("|---|---:|---:|---:|---:|---:|---:|")
    for r in results:
        print(
            f"| {r['row']} | {r['n']:,} | {r['wall']:.1f} | {r['seconds']:.1f} "
            f"| {r.get('connect_seconds', 0):.1f} | {r['rate']:,.0f} "
            f"| {r['rate_after_start']:,.0f} |"
        )
    print(f"\nParquet write: {write_rate:,.0f} vectors/s (384-d float32)")
    projection = {}
    if "single" in by_row and "ray" in by_row:
        single, ray = by_row["single"], by_row["ray"]
        print(
            f"ray / single: {ray['rate'] / single['rate']:.2f}x over the whole run, "
            f"{ray['rate_after_start'] / single['rate']:.2f}x after Ray's start "
            f"({ray['connect_seconds']:.1f} s); wall {ray['wall'] / single['wall']:.2f}x as long; "
            f"max |difference| of the vectors {ray.get('max_abs_diff')} (onnx-int8 quantizes "
            "activations per batch, so its vectors depend on which texts share a batch; the "
            "torch backend agrees to 1e-5, as the tests check)"
        )
        per_actor = ray["rate_after_start"] / ray["actors"]
        # A 16-node cluster of 16-core machines, one single-thread actor a core, scaling
        # linearly (embarrassingly parallel rows); the Parquet shards are written by the
        # actors' nodes in parallel, so the write rate is per node.
        actors = 16 * 16
        rate = min(per_actor * actors, write_rate * 16)
        projection = {
            "per_actor_rate": per_actor,
            "cpu_cluster": {
                "nodes": 16,
                "actors": actors,
                "rate": rate,
                "hours_100m": 1e8 / rate / 3600,
            },
        }
        print(
            f"projection: {per_actor:,.0f} sentences/s per actor x {actors} actors (16 nodes x "
            f"16 cores) = {rate:,.0f}/s, 100M sentences in {1e8 / rate / 3600:.1f} h "
            "(assumes linear scaling, cores as fast as these, shards written on each node)"
        )
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "scale_bench.json").write_text(
        json.dumps(
            {
                "date": datetime.now(UTC).strftime("%Y-%m-%d"),
                "machine": f"{platform.machine()}, {os.cpu_count()} cores, {platform.system()}",
                "n": args.n,
                "rows": results,
                "parquet_write_rate": write_rate,
                "projection": projection,
            },
            indent=2,
        )
        + "\n",
        encoding="utf-8",
    )


if __name__ == "__main__":
    main()
