"""Load benchmark for `bertprobe serve`: dynamic batching on against off.

Starts the server in its own process on loopback (127.0.0.1) for each mode, sends a bounded
number of single-sentence requests from a fixed number of concurrent clients, and prints
requests/s, p50 and p99 latency and errors as a markdown table; JSON goes to bench/results/.

    .venv/bin/python bench/serve_load.py [--model models/sst2-minilm-mean] [--requests 2000]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import signal
import socket
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

import httpx
import numpy as np

from bertprobe.datasets import load_sst2

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def ensure_model(path: Path) -> Path:
    """The SST-2 model from `make demo`; trained here (bundled encoder, mean) if missing."""
    if (path / "card.json").is_file():
        return path
    print(f"training {path} (bundled encoder, mean pooling) ...", file=sys.stderr)
    subprocess.run(
        [
            sys.executable,
            "-m",
            "bertprobe",
            "train",
            str(ROOT / "data/sst2/train.tsv"),
            "--encoder",
            "minilm",
            "--pooling",
            "mean",
            "--out",
            str(path),
        ],
        check=True,
    )
    return path


def start_server(
    model: Path,
    port: int,
    batching: bool,
    backend: str | None,
    log: Path | None = None,
    extra: tuple[str, ...] = (),
) -> subprocess.Popen:
    """`bertprobe serve` in its own process (``extra``: more of its options), once its health
    route answers; its standard error (an access log line per request) goes to ``log``, or to
    a temporary file."""
    command = [
        sys.executable,
        "-m",
        "bertprobe",
        "serve",
        "--model",
        str(model),
        "--port",
        str(port),
        "--batching" if batching else "--no-batching",
    ]
    if backend:
        command += ["--backend", backend]
    command += extra
    # To a file, since a pipe nobody reads fills up and stops the server.
    errors = open(log, "w+b") if log else tempfile.TemporaryFile()  # noqa: SIM115 - server's
    server = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=errors)
    deadline = time.monotonic() + 300  # onnx-int8 exports and quantizes on first use
    while time.monotonic() < deadline:
        if server.poll() is not None:
            errors.seek(0)
            raise SystemExit(f"server exited: {errors.read().decode()[-1000:]}")
        try:
            if httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=1).status_code == 200:
                return server
        except httpx.HTTPError:
            time.sleep(0.2)
    server.kill()
    raise SystemExit("server did not start within 300 s")


async def load(
    url: str, texts: list[str], n_requests: int, concurrency: int, time_limit: float
) -> dict:
    latencies: list[float] = []
    errors = 0
    next_index = 0
    stop_at = time.monotonic() + time_limit

    async def client_loop(client: httpx.AsyncClient) -> None:
        nonlocal next_index, errors
        while next_index < n_requests and time.monotonic() < stop_at:
            i = next_index
            next_index += 1
            start = time.perf_counter()
            try:
                response = await client.post(url, json={"texts": [texts[i % len(texts)]]})
                if response.status_code != 200:
                    errors += 1
                    continue
            except httpx.HTTPError:
                errors += 1
                continue
            latencies.append(time.perf_counter() - start)

    limits = httpx.Limits(max_connections=concurrency)
    async with httpx.AsyncClient(timeout=30, limits=limits) as client:
        # A warm-up request so model loading is not timed.
        await client.post(url, json={"texts": ["warm up"]})
        start = time.perf_counter()
        await asyncio.gather(*(client_loop(client) for _ in range(concurrency)))
        elapsed = time.perf_counter() - start
    ms = np.asarray(latencies) * 1000
    return {
        "requests": len(latencies) + errors,
        "ok": len(latencies),
        "errors": errors,
        "seconds": elapsed,
        "requests_per_second": len(latencies) / elapsed,
        "p50_ms": float(np.percentile(ms, 50)) if len(ms) else None,
        "p99_ms": float(np.percentile(ms, 99)) if len(ms) else None,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, default=ROOT / "models" / "sst2-minilm-mean")
    parser.add_argument("--requests", type=int, default=2000)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--backend", help="Serve with this backend instead of the model's.")
    parser.add_argument(
        "--time-limit",
        type=float,
        default=240.0,
        help="Stop each mode after this many seconds, whatever is left.",
    )
    args = parser.parse_args()

    model = ensure_model(args.model)
    texts = load_sst2("test").texts
    rows = {}
    for batching in (True, False):
        port = free_port()
        server = start_server(model, port, batching, args.backend)
        try:
            rows["on" if batching else "off"] = asyncio.run(
                load(
                    f"http://127.0.0.1:{port}/v1/predict",
                    texts,
                    args.requests,
                    args.concurrency,
                    args.time_limit,
                )
            )
        finally:
            server.send_signal(signal.SIGTERM)
            server.wait(timeout=60)

    speedup = rows["on"]["requests_per_second"] / rows["off"]["requests_per_second"]
    backend = args.backend or "as trained"
    print(
        f"\n{args.requests:,} single-sentence requests, {args.concurrency} concurrent clients, "
        f"model {model.name}, backend {backend}, {os.cpu_count()} CPU "
        f"cores, {datetime.now(UTC):%Y-%m-%d}\n"
    )
    print("| dynamic batching | requests/s | p50 latency | p99 latency | errors |")
    print("| --- | --- | --- | --- | --- |")
    for mode, r in rows.items():
        print(
            f"| {mode} | {r['requests_per_second']:.1f} | {r['p50_ms']:.1f} ms | "
            f"{r['p99_ms']:.1f} ms | {r['errors']} |"
        )
    print(f"\nbatching on / off: {speedup:.2f}x requests/s")
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "serve_load.json").write_text(
        json.dumps(
            {
                "date": datetime.now(UTC).isoformat(timespec="seconds"),
                "machine": platform.machine(),
                "cpu_count": os.cpu_count(),
                "model": str(model),
                "backend": args.backend,
                "requests": args.requests,
                "concurrency": args.concurrency,
                "results": rows,
                "speedup": speedup,
            },
            indent=2,
        )
        + "\n"
    )


if __name__ == "__main__":
    main()
