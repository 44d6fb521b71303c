"""Benchmark tables, generated from bench/results/*.json: the one place a figure is written.

Markdown files hold a table between two markers::

    <!-- table: fewshot -->
    ...generated...
    <!-- end table -->

``python bench/tables.py FILE...`` rewrites each marked region from the results; ``--check``
changes nothing and fails (exit 1) when a region differs from what the results give, so a test
catches a table copied by hand or left behind by a new run. A table says where its figures come
from (file, date, machine, command).

    .venv/bin/python bench/tables.py README.md docs/guides/few-labels.md
    .venv/bin/python bench/tables.py --check README.md docs/guides/*.md
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from collections.abc import Callable
from pathlib import Path

import numpy as np

RESULTS = Path(__file__).resolve().parent / "results"
REGION = re.compile(r"(<!-- table: ([\w-]+) -->\n)(.*?)(<!-- end table -->)", re.DOTALL)


def _load(name: str) -> dict:
    return json.loads((RESULTS / name).read_text(encoding="utf-8"))


def _source(name: str, data: dict) -> str:
    return (
        f"_From `bench/results/{name}` ({str(data.get('date', '?'))[:10]}, "
        f"{data.get('machine', '?')}): `{data.get('command', '?').strip()}`._"
    )


def _cell(runs: list[dict], cost: bool = True) -> str:
    if not runs:
        return ""
    accuracy = [r["accuracy"] for r in runs]
    text = f"{100 * np.mean(accuracy):.1f}% ± {100 * np.std(accuracy):.1f}"
    if cost:
        cpu = np.mean([r.get("cpu_seconds", r["seconds"]) for r in runs])
        text += f" ({cpu:.0f} CPU s, {max(r['rss_mb'] for r in runs):.0f} MB)"
    return text


def fewshot() -> str:
    """Few labels: rows by method, columns by labels per class (SST-2 test accuracy)."""
    data = _load("fewshot.json")
    earlier = _load("finetune_bench.json")
    rows = {k: v for k, v in data["results"].items() if isinstance(v, dict)}
    for name in ("finetune", "setfit"):
        rows[f"{name} ¹"] = {
            k: v for k, v in earlier["results"].get(name, {}).items() if k != "full"
        }
    sizes = sorted({s for by in rows.values() for s in by}, key=int)
    lines = [
        "| labels per class | " + " | ".join(sizes) + " |",
        "| --- | " + " | ".join("---" for _ in sizes) + " |",
    ]
    for row, by in rows.items():
        lines.append(f"| {row} | " + " | ".join(_cell(by.get(s, [])) for s in sizes) + " |")
    draws = sorted(
        {
            len(runs)
            for by in data["results"].values()
            if isinstance(by, dict)
            for runs in by.values()
        }
    )
    active = {k: v for k, v in data["results"].items() if isinstance(v, list)}
    lines.append("")
    lines.append(
        f"Mean ± standard deviation over draws ({'/'.join(map(str, draws))} per cell here), "
        "scored on SST-2's 1,821 test sentences; CPU seconds and peak RSS of the whole "
        "`bertprobe train` process."
    )
    lines.append(
        "¹ From `bench/results/finetune_bench.json` "
        f"({earlier['date'][:10]}; 3 draws, the same draws): not run again here."
    )
    for row, runs in active.items():
        lines.append(f"- {row}: {_cell(runs)} over {len(runs)} seeds")
    lines.append("")
    lines.append(_source("fewshot.json", data))
    return "\n".join(lines)


def active_learning() -> str:
    """Choosing what to label: test accuracy by labels for each strategy."""
    data = _load("active_learning.json")
    by = data["accuracy"]
    budgets = sorted({b for s in by.values() for b in s}, key=int)
    lines = [
        "| labels | " + " | ".join(by) + " |",
        "| --- | " + " | ".join("---" for _ in by) + " |",
    ]
    for b in budgets:
        cells = [f"{100 * np.mean(by[s][b]):.1f}% ± {100 * np.std(by[s][b]):.1f}" for s in by]
        lines.append(f"| {b} | " + " | ".join(cells) + " |")
    ceiling = f"{100 * data['all_labels_accuracy']:.1f}%"
    lines.append("| 6,920 (all) | " + " | ".join(ceiling for _ in by) + " |")
    lines.append("")
    lines.append(
        f"{data['seeds']} seeds; pool: {data['pool']}; {data['encoder']}; test: {data['test']}."
    )
    lines.append("")
    lines.append(_source("active_learning.json", data))
    return "\n".join(lines)


def explain() -> str:
    """Explanations: faithfulness (ERASER AOPC against random words) and speed, per method."""
    data = _load("explain.json")
    lines = [
        "| model | method | texts | comprehensiveness AOPC ↑ (random) "
        "| sufficiency AOPC ↓ (random) | texts/s | time against `predict` |",
        "| --- | --- | --- | --- | --- | --- | --- |",
    ]
    for r in data["results"]:
        delta = f"; mean abs delta {r['mean_abs_delta']:.3f}" if "mean_abs_delta" in r else ""
        model = r.get("model", r["pooling"])
        if model == "auto":
            vote = ", TF-IDF vote" if r.get("vote") else ""
            model = f"`--auto` ({r['pooling']} pooling{vote})"
        else:
            model = f"probe on {'[CLS]' if r['pooling'] == 'cls' else r['pooling'] + ' pooling'}"
        lines.append(
            f"| {model} | {r['method']}{delta} | {r['n']} "
            f"| {r['aopc_comprehensiveness']:.3f} ({r['random_aopc_comprehensiveness']:.3f}) "
            f"| {r['aopc_sufficiency']:.3f} ({r['random_aopc_sufficiency']:.3f}) "
            f"| {r['texts_per_second']:.1f} "
            f"| {r['predict_texts_per_second'] / r['texts_per_second']:.1f}x |"
        )
    occlusion = [r for r in data["results"] if r["method"].startswith("occlusion")]
    if occlusion and "passes_per_second" in occlusion[0]:
        passes = np.mean([r["passes_per_text"] for r in occlusion])
        rate = np.mean([r["passes_per_second"] / r["predict_texts_per_second"] for r in occlusion])
        lines.append("")
        lines.append(
            f"Occlusion runs each text {passes:.1f} times on average (once whole, once without "
            f"each word); those shorter passes run at {rate:.1f}x `predict`'s texts per second, "
            "so its cost against `predict` is about the count of words."
        )
    lines.append("")
    lines.append(f"{data['encoder']}; trained on {data['train']}; explained: {data['test']}.")
    lines.append("")
    lines.append(_source("explain.json", data))
    return "\n".join(lines)


TABLES: dict[str, Callable[[], str]] = {
    "fewshot": fewshot,
    "active-learning": active_learning,
    "explain": explain,
}


def render(text: str) -> str:
    """``text`` with every marked region regenerated."""

    def table(match: re.Match) -> str:
        name = match.group(2)
        if name not in TABLES:
            raise SystemExit(f"unknown table {name!r}; known: {', '.join(TABLES)}")
        return f"{match.group(1)}{TABLES[name]()}\n{match.group(4)}"

    return REGION.sub(table, text)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("files", nargs="+", type=Path)
    parser.add_argument("--check", action="store_true", help="fail if a table is stale")
    args = parser.parse_args(argv)
    stale = []
    for path in args.files:
        text = path.read_text(encoding="utf-8")
        fresh = render(text)
        if fresh != text:
            stale.append(path)
            if not args.check:
                path.write_text(fresh, encoding="utf-8")
    if args.check and stale:
        names = " ".join(map(str, stale))
        print(f"stale tables in {names}; run: python bench/tables.py {names}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
