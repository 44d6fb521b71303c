"""Load benchmark for `bertprobe serve` with wrk, the C load generator: requests/s and latency
by backend, dynamic batching on and off, and number of connections; plus an overload row.

Each (backend, batching) pair gets its own server process on loopback (127.0.0.1). wrk sends
single-sentence POST /v1/predict requests (a small Lua script sets the body) for a bounded
time at each connection count, and reports requests/s, p50, p99, socket errors and non-2xx
answers. The overload row (batching on) uses many more connections than the largest count
(wrk2, which holds a fixed rate, is not packaged here): it reports the share answered 503 and
the p99 of the requests let in, from the server's own access log (wrk's latency mixes in the
fast 503s). A markdown table goes to stdout, JSON to bench/results/serve_bench.json.

    .venv/bin/python bench/serve_bench.py [--model models/sst2-minilm-mean]
    .venv/bin/python bench/serve_bench.py --quick   # 1 backend, 2 connection counts, 3 s

Needs wrk (`apt-get install wrk`). The full run takes about
backends x 2 x (connection counts + 1) x duration, plus server start-ups: ~6 minutes at the
defaults; run it on a quiet machine.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

import httpx
import numpy as np
from serve_load import ensure_model, free_port, start_server

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results"
SENTENCE = "a gorgeous, witty, seductive movie ."

# wrk runs this in each of its threads; done() runs once, with every thread's counts.
LUA = """
wrk.method = "POST"
wrk.body = '%(body)s'
wrk.headers["Content-Type"] = "application/json"
local threads = {}
function setup(thread) table.insert(threads, thread) end
function init(args) statuses = {} end
function response(status, headers, body)
  statuses[status] = (statuses[status] or 0) + 1
end
function done(summary, latency, requests)
  local counts = {}
  for _, thread in ipairs(threads) do
    for status, n in pairs(thread:get("statuses")) do
      counts[tostring(status)] = (counts[tostring(status)] or 0) + n
    end
  end
  local parts = {}
  for status, n in pairs(counts) do table.insert(parts, string.format('"%%s": %%d', status, n)) end
  local e = summary.errors
  io.write(string.format(
    'WRK_JSON {"requests": %%d, "seconds": %%.3f, "p50_us": %%d, "p99_us": %%d, ' ..
    '"socket_errors": %%d, "non_2xx": %%d, "statuses": {%%s}}\\n',
    summary.requests, summary.duration / 1e6, latency:percentile(50), latency:percentile(99),
    e.connect + e.read + e.write + e.timeout, e.status, table.concat(parts, ", ")))
end
"""


def run_wrk(url: str, script: Path, connections: int, seconds: float) -> dict:
    threads = max(1, min(connections, os.cpu_count() or 1))
    done = subprocess.run(
        [
            "wrk",
            f"-t{threads}",
            f"-c{connections}",
            f"-d{seconds:g}s",
            "--timeout",
            "60s",
            "-s",
            str(script),
            url,
        ],
        capture_output=True,
        text=True,
        timeout=seconds + 120,
        check=True,
    )
    line = next(x for x in done.stdout.splitlines() if x.startswith("WRK_JSON "))
    found = json.loads(line.removeprefix("WRK_JSON "))
    return {
        "connections": connections,
        "requests_per_second": found["requests"] / found["seconds"],
        "p50_ms": found["p50_us"] / 1000,
        "p99_ms": found["p99_us"] / 1000,
        "socket_errors": found["socket_errors"],
        "non_2xx": found["non_2xx"],
        "statuses": found["statuses"],
        "requests": found["requests"],
    }


def long_texts_row(url: str, texts: list[str], clients: int, seconds: float) -> dict:
    """``clients`` threads posting ``texts`` in a loop for ``seconds``, each waiting as a
    503's Retry-After says: the statuses (socket errors counted apart)."""
    import threading
    from collections import Counter

    statuses: Counter[str] = Counter()
    errors = 0
    lock = threading.Lock()
    stop_at = time.monotonic() + seconds

    def client() -> None:
        nonlocal errors
        with httpx.Client(timeout=120) as session:
            while time.monotonic() < stop_at:
                try:
                    answer = session.post(url, json={"texts": texts})
                except httpx.HTTPError:
                    with lock:
                        errors += 1
                    continue
                with lock:
                    statuses[str(answer.status_code)] += 1
                if answer.status_code == 503:
                    wait = float(answer.headers.get("retry-after", "1"))
                    time.sleep(min(wait, max(0.0, stop_at - time.monotonic())))

    threads = [threading.Thread(target=client) for _ in range(clients)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    requests = sum(statuses.values())
    return {
        "connections": clients,
        "seconds": seconds,
        "requests": requests,
        "statuses": dict(statuses),
        "socket_errors": errors,
        "non_2xx": requests - statuses["200"],
        "requests_per_second": requests / seconds,
        "p50_ms": float("nan"),
        "p99_ms": float("nan"),
    }


def cpu_seconds(pid: int) -> dict[str, float]:
    """CPU seconds (user + system) used so far by the server process and by its model process
    (its child that has used the most; Linux /proc)."""

    def used(process: int) -> float:
        fields = Path(f"/proc/{process}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
    model = max((used(int(c)) for c in children), default=0.0)
    return {"server": used(pid), "model": model}


def accepted_p99_ms(log: Path, start_line: int) -> tuple[float | None, int]:
    """p99 of the 200s the server logged after line ``start_line`` (server-side time)."""
    lines = log.read_text().splitlines()[start_line:]
    ms = [
        row["duration_ms"]
        for row in (json.loads(x) for x in lines if x.startswith("{"))
        if row["status"] == 200 and row["path"] == "/v1/predict"
    ]
    return (float(np.percentile(ms, 99)) if ms else None), len(ms)


def overload_row(
    url: str,
    script: Path,
    connections: int,
    seconds: float,
    log: Path,
    backend: str,
    max_queue: int | None = None,
) -> dict:
    """One wrk run at ``connections`` against a batching server, with the 503 share and the
    p99 of the accepted requests (server-side, from the access log)."""
    start_line = len(log.read_text().splitlines())
    row = run_wrk(url, script, connections, seconds)
    p99, accepted = accepted_p99_ms(log, start_line)
    refused = int(row["statuses"].get("503", 0))
    found = {
        "backend": backend,
        "batching": True,
        "overload": True,
        "max_queue": max_queue,
        **row,
        "share_503": refused / max(1, row["requests"]),
        "accepted": accepted,
        "accepted_p99_ms": p99,
    }
    print(f"done: {found}", file=sys.stderr)
    return found


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, default=ROOT / "models" / "sst2-minilm-mean")
    parser.add_argument("--backends", default="torch,onnx-int8")
    parser.add_argument("--connections", default="1,4,16,64")
    parser.add_argument("--seconds", type=float, default=10.0, help="Length of each wrk run.")
    parser.add_argument("--overload-connections", type=int, default=256)
    parser.add_argument(
        "--sections",
        default="main,shed,workers,ray,long",
        help="main: backends x batching x connections (the model in its own process); shed: "
        "the overload row with the model in a thread and in its own process; workers: "
        "--workers 1 with the model in a thread, 1 and 2 with it in its own process, at "
        "1/16/64/256 connections; ray: Ray Serve (a local Ray) with 1 and 2 "
        "replicas of one CPU each, the same connections; long: 48 connections each posting "
        "256 texts of about 2,000 characters, waiting as Retry-After says (admission by cost: "
        "200 and 503, no 504). Rows of "
        "sections not run are kept from the results file, each with its date.",
    )
    parser.add_argument(
        "--quick",
        action="store_true",
        help="Prove it works: the first backend, batching on, 1 and 4 connections, 3 s each, "
        "overload at 32 connections.",
    )
    args = parser.parse_args()
    if shutil.which("wrk") is None:
        print("wrk is not installed; install it: apt-get install wrk", file=sys.stderr)
        raise SystemExit(1)

    backends = args.backends.split(",")
    connections = [int(c) for c in args.connections.split(",")]
    modes = [True, False]
    seconds, overload = args.seconds, args.overload_connections
    if args.quick:
        backends, connections, modes, seconds, overload = backends[:1], [1, 4], [True], 3.0, 32
    model = ensure_model(args.model)
    sections = set(args.sections.split(","))
    today = datetime.now(UTC).isoformat(timespec="seconds")

    rows: list[dict] = []
    with tempfile.TemporaryDirectory() as scratch:
        script = Path(scratch) / "post.lua"
        body = json.dumps({"texts": [SENTENCE]})
        script.write_text(LUA % {"body": body})
        for backend in backends if "main" in sections else []:
            for batching in modes:
                port = free_port()
                log = Path(scratch) / f"{backend}-{batching}.log"
                server = start_server(model, port, batching, backend, log)
                url = f"http://127.0.0.1:{port}/v1/predict"
                try:
                    run_wrk(url, script, 1, 1)  # warm-up, not reported
                    for count in connections:
                        row = run_wrk(url, script, count, seconds)
                        rows.append({"backend": backend, "batching": batching, **row})
                        print(f"done: {rows[-1]}", file=sys.stderr)
                    if batching:
                        rows.append(overload_row(url, script, overload, seconds, log, backend))
                finally:
                    server.send_signal(signal.SIGTERM)
                    server.wait(timeout=60)
        for backend in backends if "shed" in sections else []:
            # The default queue (about a second of the encoder's work) is larger than the
            # overload connections, each with one request in flight: a closed-loop load
            # generator never fills it. A queue a quarter of the connections does.
            queue = max(1, overload // 4)
            for host in ("thread", "process"):
                port = free_port()
                log = Path(scratch) / f"{backend}-{host}-shed.log"
                extra = ("--max-queue", str(queue), f"--{'no-' * (host == 'thread')}model-process")
                server = start_server(model, port, True, backend, log, extra)
                url = f"http://127.0.0.1:{port}/v1/predict"
                try:
                    run_wrk(url, script, 1, 1)
                    calm = run_wrk(url, script, queue, seconds)  # as many as the queue holds
                    before, start = cpu_seconds(server.pid), time.monotonic()
                    row = overload_row(url, script, overload, seconds, log, backend, queue)
                    used = cpu_seconds(server.pid)
                    wall = time.monotonic() - start
                    rows.append(
                        {
                            **row,
                            "host": host,
                            "calm_p99_ms": calm["p99_ms"],
                            # Cores each process used under the storm: where the CPU went.
                            "cores_server": (used["server"] - before["server"]) / wall,
                            "cores_model": (used["model"] - before["model"]) / wall,
                        }
                    )
                finally:
                    server.send_signal(signal.SIGTERM)
                    server.wait(timeout=60)
        layouts = [(1, "thread"), (1, "process"), (2, "process")]
        for workers, host in layouts if "workers" in sections else ():
            port = free_port()
            log = Path(scratch) / f"workers-{workers}-{host}.log"
            extra = ("--workers", str(workers), f"--{'no-' * (host == 'thread')}model-process")
            server = start_server(model, port, True, backends[0], log, extra)
            url = f"http://127.0.0.1:{port}/v1/predict"
            try:
                run_wrk(url, script, 1, 1)
                for count in [1, 16, 64, overload]:
                    row = run_wrk(url, script, count, seconds)
                    rows.append(
                        {
                            "backend": backends[0],
                            "batching": True,
                            "workers": workers,
                            "host": host,
                            **row,
                        }
                    )
                    print(f"done: {rows[-1]}", file=sys.stderr)
            finally:
                server.send_signal(signal.SIGTERM)
                server.wait(timeout=60)
        for replicas in (1, 2) if "ray" in sections else ():
            port = free_port()
            log = Path(scratch) / f"ray-{replicas}.log"
            extra = ("--ray", "local", "--replicas", str(replicas), "--replica-cpus", "1")
            server = start_server(model, port, True, backends[0], log, extra)
            url = f"http://127.0.0.1:{port}/v1/predict"
            try:
                run_wrk(url, script, 1, 1)
                for count in [1, 16, 64, overload]:
                    row = run_wrk(url, script, count, seconds)
                    rows.append(
                        {"backend": backends[0], "batching": True, "replicas": replicas, **row}
                    )
                    print(f"done: {rows[-1]}", file=sys.stderr)
            finally:
                server.send_signal(signal.SIGINT)  # removes the deployment, stops its Ray
                server.wait(timeout=120)
        if "long" in sections:
            # The case: 48 clients posting 256 long texts each at a service with the
            # default queue (which once let them in by count, ran them, and answered 504).
            # Python clients that wait as Retry-After says: wrk cannot, and its storm of
            # 500 KB bodies re-sent at once starves the encoder of CPU on 2 cores.
            long_text = " ".join([SENTENCE.rstrip(" .")] * 60)[:2000]
            port = free_port()
            log = Path(scratch) / "long.log"
            server = start_server(model, port, True, backends[0], log)
            url = f"http://127.0.0.1:{port}/v1/predict"
            try:
                start_line = len(log.read_text().splitlines())
                found = long_texts_row(url, [long_text] * 256, 48, 6 * seconds)
                p99, accepted = accepted_p99_ms(log, start_line)
                rows.append(
                    {
                        "backend": backends[0],
                        "batching": True,
                        "long": True,
                        "texts_per_request": 256,
                        "chars_per_text": len(long_text),
                        **found,
                        "accepted": accepted,
                        "accepted_p99_ms": p99,
                    }
                )
                print(f"done: {rows[-1]}", file=sys.stderr)
            finally:
                server.send_signal(signal.SIGTERM)
                server.wait(timeout=120)
    for row in rows:
        section = (
            "long"
            if row.get("long")
            else "ray"
            if "replicas" in row
            else "workers"
            if "workers" in row
            else "shed"
            if "host" in row
            else "main"
        )
        row.setdefault("section", section)
        row.setdefault("host", "process")
        row["date"] = today
    kept = []
    if (RESULTS / "serve_bench.json").is_file() and not args.quick:
        earlier = json.loads((RESULTS / "serve_bench.json").read_text())
        for row in earlier["results"]:
            row.setdefault("date", earlier["date"])
            # Before the model process existed every row ran the model in a thread.
            row.setdefault("host", "thread")
            row.setdefault("section", "main" if not row.get("max_queue") else "shed")
            if row["section"] not in sections:
                kept.append(row)
    rows = kept + rows

    print(
        f"\nsingle-sentence requests, wrk {seconds:g} s a row, model {model.name}, "
        f"{os.cpu_count()} CPU cores, {datetime.now(UTC):%Y-%m-%d}"
        + (" (--quick: a proof that the script works, not a measurement)" if args.quick else "")
        + "\n"
    )
    print(
        "| backend | model in | workers | batching | connections | requests/s | p50 | p99 "
        "| socket errors | non-2xx | 503 share | accepted p99 |"
    )
    print("| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |")
    for r in rows:
        over = r.get("overload", False)
        print(
            f"| {r['backend']} | {r['host'] if 'replicas' not in r else 'ray'} | "
            f"{r.get('workers', r.get('replicas', 1))} | "
            f"{'on' if r['batching'] else 'off'} | "
            f"{r['connections']}{' (overload)' if over else ''}"
            f"{', queue ' + str(r['max_queue']) if r.get('max_queue') else ''} | "
            f"{r['requests_per_second']:.1f} | {r['p50_ms']:.1f} ms | {r['p99_ms']:.1f} ms | "
            f"{r['socket_errors']} | {r['non_2xx']} | "
            + (
                f"{r['share_503']:.0%} | "
                + (f"{r['accepted_p99_ms']:.1f} ms |" if r["accepted_p99_ms"] else "- |")
                if over
                else "- | - |"
            )
        )
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "serve_bench.json").write_text(
        json.dumps(
            {
                "date": today,
                "machine": platform.machine(),
                "cpu_count": os.cpu_count(),
                "model": str(model),
                "seconds": seconds,
                "quick": args.quick,
                "sentence": SENTENCE,
                "results": rows,
            },
            indent=2,
        )
        + "\n"
    )


if __name__ == "__main__":
    main()
