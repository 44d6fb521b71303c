"""Benchmark tables, generated from bench/results/*.json: the one place a figure is written.

Markdown files hold a table between two markers::

    <!-- table: fewshot -->
    ...generated...
    <!-- end table -->

``python bench/tables.py FILE...`` rewrites each marked region from the results; ``--check``
changes nothing and fails (exit 1) when a region differs from what the results give, so a test
catches a table copied by hand or left behind by a new run. A table says where its figures come
from (file, date, machine, command).

    .venv/bin/python bench/tables.py README.md docs/*.md docs/*/*.md
    .venv/bin/python bench/tables.py --check README.md docs/*.md docs/*/*.md

``make docs`` fails on a page whose tables are stale, and ``python bench/tables.py --list``
prints every table's name.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from collections.abc import Callable
from functools import partial
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


def selftrain_ceiling() -> str:
    """Why self-training from zero stops short: noise against selection, per descriptions."""
    data = _load("selftrain_ceiling.json")
    lines = [
        "| descriptions | surest texts a class | pseudo-labels right | probe on them "
        "| same texts, true labels | random texts, true labels |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    for name, by in data["results"].items():
        for k, cell in by.items():
            figures = (
                cell[key]
                for key in (
                    "pseudo_labels_right", "pseudo_labels", "same_texts_true_labels",
                    "random_texts_true_labels",
                )
            )  # fmt: skip
            cells = " | ".join(f"{100 * f:.1f}%" for f in figures)
            lines.append(f"| {name} | {int(k):,} | {cells} |")
    lines.append("")
    lines.append(
        "SST-2 test accuracy of a frozen probe (MiniLM, mean pooling, C by 5-fold CV) trained on "
        "the zero-shot head's surest texts of each class of the 6,920 training texts."
    )
    lines.append("")
    lines.append(_source("selftrain_ceiling.json", data))
    return "\n".join(lines)


# What each few-labels benchmark scores on, by its results file.
_TEST_SETS = {
    "fewshot.json": "SST-2's 1,821 test sentences",
    "zeroshot.json": "SST-2's 1,821 test sentences",
    "fewshot_fortunes.json": "the fortunes topic set's 500 test texts (5 topics)",
    "zeroshot_fortunes.json": "the fortunes topic set's 500 test texts (5 topics)",
}


def fewshot(results: str = "fewshot.json") -> str:
    """Few labels: rows by method, columns by labels per class (test accuracy); SST-2's
    table adds the fine-tuning and SetFit rows of bench/results/finetune_bench.json."""
    data = _load(results)
    sst2 = results == "fewshot.json"
    earlier = _load("finetune_bench.json") if sst2 else None
    rows = {k: v for k, v in data["results"].items() if isinstance(v, dict) and k != "zero-shot"}
    for name in ("finetune", "setfit") if earlier else ():
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
        {len(runs) for row, by in rows.items() if "¹" not in row for runs in by.values()}
    )
    active = {k: v for k, v in data["results"].items() if isinstance(v, list)}
    lines.append("")
    lines.append(
        f"Mean ± standard deviation over draws ({'/'.join(map(str, draws))} per cell here), "
        f"scored on {_TEST_SETS[results]}; CPU seconds and peak RSS of the whole "
        "`bertprobe train` process."
    )
    if earlier:
        lines.append(
            "¹ From `bench/results/finetune_bench.json` "
            f"({earlier['date'][:10]}; 3 draws, the same draws): not run again here."
        )
    for row, runs in active.items():
        lines.append(f"- {row}: {_cell(runs)} over {len(runs)} seeds")
    lines.append("")
    lines.append(_source(results, data))
    return "\n".join(lines)


def zero_shot(results: str = "zeroshot.json") -> str:
    """No labels: rows by method, columns by the classes' descriptions (test accuracy)."""
    data = _load(results)
    runs = data["results"]
    if not runs:
        return "_No zero-shot runs yet: `python bench/fewshot_bench.py --zero-shot`._"
    described = list(dict.fromkeys(d for by in runs.values() for d in by))
    lines = [
        "| no labels | " + " | ".join(described) + " |",
        "| --- | " + " | ".join("---" for _ in described) + " |",
    ]
    for row, by in runs.items():
        cells = [
            f"{100 * r['accuracy']:.1f}% ({r['seconds']:.0f} s, {r['rss_mb']:.0f} MB)"
            if (r := by.get(d))
            else ""
            for d in described
        ]
        lines.append(f"| {row} | " + " | ".join(cells) + " |")
    lines.append("")
    lines.append(
        f"One run each (no labels are drawn), scored on {_TEST_SETS[results]}; wall "
        "seconds and peak RSS of the whole `bertprobe train` process, from an empty cache "
        "(the pool, the training split without its labels, and the test set embedded in each)."
    )
    lines.append("")
    lines.append(_source(results, data))
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
        delta = f" (mean abs delta {r['mean_abs_delta']:.1e})" if "mean_abs_delta" in r else ""
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
    dated = sorted({r["date"] for r in data["results"] if "date" in r})
    for date in dated:
        methods = sorted({r["method"] for r in data["results"] if r.get("date") == date})
        lines.append("")
        lines.append(
            f"Rows of {', '.join(methods)}: measured {date}, the other rows before; times from "
            "different runs compare only through their `time against predict`."
        )
    lines.append("")
    lines.append(f"{data['encoder']}; trained on {data['train']}; explained: {data['test']}.")
    lines.append("")
    lines.append(_source("explain.json", data))
    return "\n".join(lines)


def _pct(x: float, digits: int = 2) -> str:
    return f"{100 * x:.{digits}f}%"


def _seconds(s: float) -> str:
    return f"{s:.1f} s" if s < 60 else f"{int(s // 60)} min {round(s % 60):02d} s"


def demo() -> str:
    """`make demo`: the recipe's [CLS], masked mean and --auto on SST-2 (the headline)."""
    data = _load("demo.json")
    n = data["n_test"]
    lines = [
        "| pooling | C (by CV) | CV accuracy (train) | test accuracy | embed, cold cache "
        "(train + test) | fit (C search) |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    for r in data["runs"]:
        cv = _pct(r["cv_accuracy"]) + (f" ({r['cv_note']})" if "cv_note" in r else "")
        if "seconds" in r:
            embed, fit = "one pass, all layers", f"{_seconds(r['seconds'])} with the sweep"
        else:
            embed, fit = _seconds(r["embed_seconds"]), _seconds(r["fit_seconds"])
        lines.append(
            f"| {r['label']} | {r['C']:.3g} | {cv} | **{_pct(r['test_correct'] / n)}** "
            f"| {embed} | {fit} |"
        )
    lines.append("")
    demo_s = " and ".join(_seconds(s) for s in data["demo_seconds_after_install"])
    warm = " to ".join(f"{s:g}" for s in data["warm_rerun_seconds"])
    lines.append(
        f"{data['data']}; {data['encoder']}. A warm re-run reads every vector from the cache "
        f"({warm} s of embedding); the whole `make demo` after the install took {demo_s} in "
        "two fresh clones."
    )
    lines.append("")
    lines.append(_source("demo.json", data))
    return "\n".join(lines)


def sweep() -> str:
    """The --auto sweep of `make demo`: ridge screen and CV per candidate, then test scores."""
    data = _load("demo.json")
    sweep = data["sweep"]
    lines = [
        "| features (MiniLM, 6 layers + embeddings) | ridge screen (leave-one-out) | CV accuracy |",
        "| --- | --- | --- |",
    ]
    for c in sweep["candidates"]:
        screen = _pct(c["screen"]) if "screen" in c else ""
        cv = f"({_pct(c['cv'])} exhaustive)" if c.get("exhaustive") else _pct(c["cv"])
        name = c["features"]
        if c.get("chosen"):
            name, screen = f"**{name} (chosen by `--auto`)**", screen and f"**{screen}**"
            cv = f"**{cv}**"
        lines.append(f"| {name} | {screen} | {cv} |")
    lines.append("")
    scores = "; ".join(f"{k}: {_pct(v / data['n_test'])}" for k, v in sweep["test_correct"].items())
    lines.append(f"SST-2 test accuracy: {scores}. {sweep['note']}.")
    lines.append("")
    lines.append(_source("demo.json", data))
    return "\n".join(lines)


def auto_bench() -> str:
    """`train --auto` timed whole, and its screened choice against the exhaustive sweep."""
    data = _load("auto_bench.json")
    lines = [
        "| training set | cold (embedding included) | embeddings cached | exhaustive, cached "
        "| chosen (exhaustive CV) | exhaustive best | gap |",
        "| --- | --- | --- | --- | --- | --- | --- |",
    ]
    for r in data["rows"]:
        lines.append(
            f"| {r['set']}, {r['n_train']:,} | {r['cold_seconds']:.0f} s "
            f"| {r['cached_seconds']:.0f} s | {r['exhaustive_cached_seconds']:.0f} s "
            f"| {r['chosen']} ({_pct(r['chosen_exhaustive_cv'])}) "
            f"| {r['exhaustive_best']} ({_pct(r['exhaustive_best_cv'])}) "
            f"| {r['gap_points']:.2f} points |"
        )
    lines.append("")
    lines.append(
        f"_From `bench/results/auto_bench.json` ({data['date']}, {data['machine']}): "
        "`python bench/auto_bench.py` (in `make bench`)._"
    )
    return "\n".join(lines)


EMBED_ROWS = {
    "recipe": "the recipe: one padded batch, no attention mask, [CLS]",
    "pipeline": 'Hugging Face `pipeline("feature-extraction")`, batch 64',
    "sentence-transformers": "sentence-transformers `encode`, batch 64",
    "bertprobe": "bertprobe, torch fp32",
    "bertprobe-onnx": "bertprobe, `--backend onnx`",
    "bertprobe-onnx-int8": "bertprobe, `--backend onnx-int8`",
    "bertprobe-warm": "bertprobe, warm re-run from the cache",
}


def embed() -> str:
    """`make bench`: embedding rate, memory and probe accuracy against the recipe and peers."""
    data = _load("embed_bench.json")
    rows = {r["row"]: r for r in data["rows"]}
    lines = [
        "| row | sentences/s | peak RSS | SST-2 test accuracy | measured |",
        "| --- | --- | --- | --- | --- |",
    ]
    for key, name in EMBED_ROWS.items():
        r = rows[key]
        lines.append(
            f"| {name} | {r['sentences_per_second']:,.0f} | {r['peak_rss_mb']:,.0f} MB "
            f"| {_pct(r['test_accuracy'])} | {r['date'][:10]} |"
        )
    c = rows["classifier"]
    lines.append("")
    lines.append(
        f"The classifier stage on the same 2,000 x 384 features: the "
        f"recipe's `GridSearchCV` takes {c['recipe_seconds']:.1f} s for "
        f"{_pct(c['recipe_test_accuracy'])}; bertprobe's C search "
        f"{c['bertprobe_sequential_seconds']:.2f} s in one process "
        f"({c['sequential_speedup']:.0f}x faster) for {_pct(c['bertprobe_test_accuracy'])}, "
        f"{c['bertprobe_seconds']:.2f} s once its worker processes run ({c['speedup']:.0f}x), "
        f"{c['bertprobe_cold_seconds']:.2f} s when the first parallel fit also starts them "
        f"({c['cold_speedup']:.0f}x)."
    )
    lines.append("")
    lines.append(
        f"_From `bench/results/embed_bench.json` (rows dated as shown; {data['machine']}, "
        f"{data['cpu_count']} cores): `make bench` (`python bench/embed_bench.py`)._"
    )
    return "\n".join(lines)


def memory() -> str:
    """`make bench`'s streaming rows: embed a file to disk, then the out-of-core probe."""
    data = _load("embed_bench.json")
    lines = [
        "| sentences | sentences/s | features on disk | peak RSS, embedding "
        "| peak RSS, with the probe | probe fit | held-out accuracy |",
        "| --- | --- | --- | --- | --- | --- | --- |",
    ]
    for r in data["rows"]:
        if not r["row"].startswith("stream-"):
            continue
        lines.append(
            f"| {r['sentences']:,} | {r['sentences_per_second']:,.0f} "
            f"| {r['features_mb']:,.0f} MB | {r['peak_rss_mb_embed']:,.0f} MB "
            f"| {r['peak_rss_mb']:,.0f} MB | {r['fit_seconds']:.1f} s "
            f"| {_pct(r['holdout_accuracy'])} |"
        )
    dates = sorted({r["date"][:10] for r in data["rows"] if r["row"].startswith("stream-")})
    lines.append("")
    lines.append(
        f"_From `bench/results/embed_bench.json` ({', '.join(dates)}, {data['machine']}, "
        f"{data['cpu_count']} cores): `make bench`'s last three rows._"
    )
    return "\n".join(lines)


def int8_profile() -> str:
    """Where the onnx-int8 encoder's time goes: stages outside the graph, operators inside."""
    data = _load("int8_profile.json")
    stages = data["stages_s"]
    total = sum(stages.values())
    ops = data["ops_s"]
    op_total = sum(ops.values())
    lines = [
        "| | int8 | fp32 |",
        "| --- | --- | --- |",
        f"| GEMM ceiling (GOP/s) | {data['gemm_gops']['int8']:,.0f} "
        f"| {data['gemm_gops']['fp32']:,.0f} |",
        f"| sentences/s the products alone would allow "
        f"| {data['ceiling_sentences_per_s']['int8']:,.0f} "
        f"| {data['ceiling_sentences_per_s']['fp32']:,.0f} |",
        "",
        "| stage (outside the graph) | share of the time |",
        "| --- | --- |",
    ]
    lines += [f"| {k} | {_pct(v / total, 1)} |" for k, v in stages.items()]
    lines += ["", "| operator (inside the graph) | share of `session.run` |", "| --- | --- |"]
    top = sorted(ops.items(), key=lambda kv: -kv[1])[:9]
    lines += [f"| `{k}` | {_pct(v / op_total, 1)} |" for k, v in top]
    lines.append("")
    lines.append(
        f"{data['sentences']:,} SST-2 test sentences ({data['mean_tokens']:.1f} tokens on "
        f"average), batches of {data['batch_size']}, {data['threads']} threads: "
        f"{data['sentences_per_s']:,.0f} sentences/s in this run."
    )
    lines.append("")
    lines.append(
        f"_From `bench/results/int8_profile.json` ({data['date'][:10]}, {data['machine']}): "
        "`python bench/int8_profile.py` (in `make bench-int8`)._"
    )
    return "\n".join(lines)


INT8_VARIANTS = {
    "fp32": "fp32 (`onnx`)",
    "shipped": "**shipped: dynamic, int8 weights per channel**",
    "per-tensor": "per tensor",
    "reduce-range": "reduce range (7-bit weights)",
    "fused + shipped": "transformer optimizer's fusions (attention, bias GELU), then shipped",
    "static QDQ": "static QDQ (activations calibrated on 512 training sentences)",
    "static QOperator": "static QOperator",
}


def int8_variants() -> str:
    """Each quantization choice against the shipped one: speed and cosine to fp32."""
    data = _load("int8_variants.json")
    lines = [
        "| variant | sentences/s (`session.run` only) | cosine to fp32, min | mean |",
        "| --- | --- | --- | --- |",
    ]
    for r in data["rows"]:
        lines.append(
            f"| {INT8_VARIANTS.get(r['variant'], r['variant'])} "
            f"| {r['sentences_per_s']:,.0f} | {r['cosine_min']:.4f} | {r['cosine_mean']:.5f} |"
        )
    lines.append("")
    lines.append(
        f"_From `bench/results/int8_variants.json` ({data['date']}, {data['machine']}): "
        "`python bench/int8_variants.py` (in `make bench-int8`)._"
    )
    return "\n".join(lines)


def long_text() -> str:
    """Long reviews: truncating at 256 tokens against reading every token in windows."""
    data = _load("long_text.json")
    s, tok = data["settings"], data["tokens"]
    lines = [
        "| mode | test accuracy | CV accuracy | embedding | windows |",
        "| --- | --- | --- | --- | --- |",
    ]
    for r in data["rows"]:
        if r["mode"] == "truncate":
            mode = f"`--long truncate` ({r['n_truncated']} texts cut at {s['max_length']} tokens)"
            windows = "-"
        else:
            mode = f"`--long chunk` (`--window-pool {r['window_pool']}`)"
            per = r["n_windows"] / (s["train_docs"] + s["test_docs"])
            windows = f"{r['n_windows']:,} ({per:.1f} a text)"
        lines.append(
            f"| {mode} | {_pct(r['test_accuracy'])} | {_pct(r['cv_accuracy'])} "
            f"| {r['embed_seconds']:.1f} s | {windows} |"
        )
    lines.append("")
    lines.append(
        f"{s['train_docs']} training and {s['test_docs']} test reviews, each "
        f"{s['sentences_per_review'][0]} to {s['sentences_per_review'][1]} SST-2 sentences of "
        f"one label joined ({tok['min']} to {tok['max']} tokens, {tok['mean']:.0f} on average); "
        f"{s['encoder']}, {s['pooling']} pooling, `--max-length {s['max_length']}`."
    )
    lines.append("")
    m = data["machine"]
    lines.append(
        f"_From `bench/results/long_text.json` ({data['created'][:10]}, {m['cpus']} cores, "
        f"Python {m['python']}): `python bench/long_text_bench.py`._"
    )
    return "\n".join(lines)


SKEW_ROWS = {
    "plain": ("plain (C by accuracy, no weights)", "argmax"),
    "balanced": ("`--class-weight balanced`", "argmax"),
    "metric": ("`--metric balanced_accuracy`", "argmax"),
    "metric --threshold auto": ("`--metric balanced_accuracy`", "`--threshold auto` ({t})"),
    "balanced+metric": ("both", "argmax"),
    "balanced+metric --threshold auto": ("both", "`--threshold auto` ({t})"),
}


def real_data() -> str:
    """Skewed classes (1:9) with and without the options; label issues with 5% flipped."""
    data = _load("real_data.json")
    lines = [
        "| training | decision | SST-2 test | 1:9 test subset |",
        "| --- | --- | --- | --- |",
    ]
    for r in data["skew"]:
        training, decision = SKEW_ROWS[r["row"]]
        if r["threshold"] is not None:
            decision = decision.format(t=f"{r['threshold']:.3f}")
        lines.append(
            f"| {training} | {decision} | {r['test balanced accuracy']:.3f} "
            f"| {r['test 1:9 balanced accuracy']:.3f} |"
        )
    first = data["skew"][0]
    lines.append("")
    lines.append(
        f"Balanced accuracy; trained on {first['n_train']:,} sentences of SST-2's training "
        f"split ({first['n_positive']} positive: every negative, a ninth as many positives), "
        f"scored on the test split ({first['test n']:,}) and on a 1:9 subset of it "
        f"({first['test 1:9 n']:,}); {data['encoder']}."
    )
    lines += [
        "",
        "| label issues, 5% of the labels flipped | precision at k | flips in the top 2k "
        "| rows flagged | flips among them |",
        "| --- | --- | --- | --- | --- |",
    ]
    for r in data["label_issues"]:
        lines.append(
            f"| {r['row']} | {r['precision_at_k']:.2f} (chance {r['chance']:.2f}) "
            f"| {_pct(r['recall_at_2k'], 0)} | {r['n_flagged']:,} "
            f"| {_pct(r['recall_of_flagged'], 0)} |"
        )
    r = data["label_issues"][0]
    lines.append("")
    lines.append(
        f"The whole training split ({r['n']:,} sentences) with {r['n_flipped']} labels flipped; "
        f"k = {r['n_flipped']}."
    )
    lines.append("")
    lines.append(
        f"_From `bench/results/real_data.json` ({data['date']}, {data['machine']}): "
        "`python bench/real_data_bench.py`._"
    )
    return "\n".join(lines)


def multilabel() -> str:
    """A two-label SST-2 (positive, people): thresholds 0.5, tuned, and balanced weights."""
    data = _load("multilabel_bench.json")
    lines = [
        "| thresholds | F1 micro | F1 macro | every label right | F1 `positive` "
        "| F1 `people` (precision / recall) |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    names = {"tuned (max out-of-fold F1)": "tuned (`--tune-thresholds`)"}
    for r in data["results"]:
        pos, ppl = r["test_per_label"]["positive"], r["test_per_label"]["people"]
        rule = names.get(r["rule"], r["rule"]).replace(
            "--class-weight balanced", "`--class-weight balanced`"
        )
        lines.append(
            f"| {rule} | {r['test_f1_micro']:.3f} | {r['test_f1_macro']:.3f} "
            f"| {_pct(r['test_subset_accuracy'], 1)} | {pos['f1-score']:.3f} "
            f"| {ppl['f1-score']:.3f} ({ppl['precision']:.3f} / {ppl['recall']:.3f}) |"
        )
    lines.append("")
    lines.append(
        f"{data['data']}; {data['n_train']:,} training and {data['n_test']:,} test sentences; "
        f"`--encoder {data['encoder']} --pooling {data['pooling']}`, {data['cv']}-fold CV."
    )
    lines.append("")
    lines.append(
        f"_From `bench/results/multilabel_bench.json` ({data['date'][:10]}, "
        f"{data['machine']}): `python bench/multilabel_bench.py`._"
    )
    return "\n".join(lines)


SCALE_ROWS = {
    "single": "one process, 2 threads",
    "ray": "`--ray local`, 2 actors x 1 thread, one `.npy`",
    "ray-shards": "the same, Parquet shards in a folder",
}


def scale() -> str:
    """100k sentences with onnx-int8: one process against --ray local; a projection."""
    data = _load("scale_bench.json")
    lines = [
        "| row | wall | s in bertprobe | s starting Ray | sentences/s | after Ray's start |",
        "| --- | ---: | ---: | ---: | ---: | ---: |",
    ]
    for r in data["rows"]:
        start = f"{r['connect_seconds']:.1f}" if "connect_seconds" in r else ""
        lines.append(
            f"| {SCALE_ROWS.get(r['row'], r['row'])} | {r['wall']:.1f} s | {r['seconds']:.1f} "
            f"| {start} | {r['rate']:,.0f} | {r['rate_after_start']:,.0f} |"
        )
    p = data["projection"]
    c = p["cpu_cluster"]
    lines.append("")
    lines.append(
        f"{data['n']:,} short sentences. Parquet writes: {data['parquet_write_rate']:,.0f} "
        f"vectors/s. Projected from these rates ({p['per_actor_rate']:,.0f} sentences/s an "
        f"actor; {c['actors']} actors on {c['nodes']} nodes, assuming linear scaling and cores "
        f"as fast as these): 100M sentences in {c['hours_100m']:.1f} h."
    )
    lines.append("")
    lines.append(
        f"_From `bench/results/scale_bench.json` ({data['date']}, {data['machine']}): "
        "`make bench-scale` (`python bench/scale_bench.py`)._"
    )
    return "\n".join(lines)


def finetune() -> str:
    """Fine-tuning on all of SST-2's training split: dev, test, time, memory; SetFit beside."""
    data = _load("finetune_full.json")
    setfit = _load("finetune_bench.json")["results"]["setfit"]["full"][0]
    n = data["n_test"]
    lines = [
        "| run | dev accuracy (best epoch) | test accuracy | time | peak RSS |",
        "| --- | --- | --- | --- | --- |",
    ]
    for r in data["rows"]:
        dev = f"{_pct(r['dev_accuracy'])} (epoch {r['epoch']})" if "dev_accuracy" in r else ""
        if "seconds" in r:
            time = f"{_seconds(r['seconds'])} (fine-tuning {_seconds(r['finetune_seconds'])})"
        elif "evaluate_seconds" in r:
            time = f"{r['evaluate_seconds']} s to evaluate"
        else:
            time = f"{r['cpu_seconds']:,} CPU seconds (a shared machine)"
        lines.append(
            f"| {r['run']} | {dev} | {_pct(r['test_correct'] / n)} | {time} "
            f"| {r['peak_rss_gb']:.1f} GB |"
        )
    lines.append(
        f"| SetFit, same body, its logistic-regression head, {setfit['budget_cpu_s']:,.0f} CPU "
        f"seconds of contrastive training ({setfit['steps']} steps) | "
        f"| {_pct(setfit['accuracy'])} | {setfit['cpu_seconds']:,.0f} CPU seconds "
        f"| {setfit['rss_mb'] / 1000:.1f} GB |"
    )
    b = data["bf16"]
    choice = data["min_steps_choice"]
    scores = "; ".join(
        f"{r['run']}: {_pct(r['mean'])} ± {100 * r['std']:.2f}" for r in choice["rows"]
    )
    lines.append("")
    lines.append(f"Small training sets, {choice['note']}: {scores} (`{choice['command']}`).")
    lines.append("")
    lines.append(
        f"`--bf16` on this CPU: {b['seconds_bf16']} s against {b['seconds_fp32']} s ({b['note']})."
    )
    lines.append("")
    lines.append(_source("finetune_full.json", data))
    return "\n".join(lines)


def distill() -> str:
    """Distillation: the student's accuracy, agreement and cost against its teacher."""
    data = _load("distill.json")
    rows = {r["row"]: r for r in data["rows"]}
    teacher = data.get("teacher", {})
    lines = [
        "| model | test accuracy | decides as the teacher (test) | texts taught | time |",
        "| --- | --- | --- | --- | --- |",
    ]
    if teacher.get("test_accuracy") is not None:
        lines.append(
            f"| teacher: all-mpnet-base-v2 frozen, `--auto` | {_pct(teacher['test_accuracy'])} "
            "| | | |"
        )
    if "finetune" in rows:
        r = rows["finetune"]
        lines.append(
            f"| student on the gold labels only (`--finetune`; {r['source']}) "
            f"| {_pct(r['test_accuracy'])} | | | {_seconds(r['seconds'])} |"
        )
    names = {
        "distill": "student distilled on the training texts",
        "distill-augment": (
            f"student distilled with `--augment {data.get('augment')}` "
            f"({data.get('augment_epochs')} epochs)"
        ),
    }
    notes: list[str] = []
    for key, words in names.items():
        if key not in rows:
            continue
        r = rows[key]
        if "note" in r:
            notes.append(f"{words[0].upper()}{words[1:]}: {r['note']}.")
            words += f" ({len(notes)})"
        lines.append(
            f"| {words} | {_pct(r['test_accuracy'])} | {_pct(r['teacher_test_agreement'])} "
            f"| {r['n_taught']:,} ({r['n_augmented']:,} altered) | {_seconds(r['seconds'])} "
            f"(the teacher's labels {_seconds(r['teacher_seconds'])}) |"
        )
    if "int8" in rows:
        r = rows["int8"]
        lines.append(
            f"| the last student, `--backend onnx-int8` | {_pct(r['test_accuracy'])} | | | |"
        )
    lines.append("")
    for k, note in enumerate(notes, 1):
        lines.append(f"({k}) {note}")
        lines.append("")
    if "rate" in rows:
        r = rows["rate"]
        lines.append(
            f"Predicting {r['n_texts']:,} test sentences, cache off, one process: the student in "
            f"int8 {r['student_int8_texts_per_s']:,.0f} texts/s, the teacher "
            f"{r['teacher_texts_per_s']:,.0f} texts/s ({r['speedup']:.1f}x)."
        )
        lines.append("")
    if "multilabel" in rows:
        r = rows["multilabel"]
        lines.append(
            f"Label sets (SST-2 with two labels, {r['n_train']:,} training and {r['n_test']:,} "
            f"test sentences): every label right on {_pct(r['teacher_subset_accuracy'])} "
            f"(teacher, mpnet), {_pct(r['student_subset_accuracy'])} (distilled MiniLM, "
            f"`--augment 2`), {_pct(r['probe_subset_accuracy'])} (MiniLM's probe alone); the "
            f"same label set as the teacher on {_pct(r['teacher_test_agreement'])} (distilled) "
            f"and {_pct(r['probe_teacher_agreement'])} (probe alone)."
        )
        lines.append("")
    lines.append(_source("distill.json", data))
    return "\n".join(lines)


def serve() -> str:
    """The service under wrk: requests/s and latency by backend, batching and connections."""
    data = _load("serve_bench.json")
    lines = [
        "| backend | batching | connections | requests/s | p50 | p99 | errors, non-2xx |",
        "| --- | --- | --- | --- | --- | --- | --- |",
    ]
    main = [r for r in data["results"] if r.get("section", "main") == "main"]
    groups: dict[tuple, list[dict]] = {}
    for r in main:
        if not r.get("overload"):
            groups.setdefault((r["backend"], r["batching"]), []).append(r)
    for (backend, batching), rows in groups.items():

        def joined(key: str, fmt: str, rows: list[dict] = rows) -> str:
            return " / ".join(format(r[key], fmt) for r in rows)

        lines.append(
            f"| {backend} | {'on' if batching else 'off'} | {joined('connections', 'd')} "
            f"| {joined('requests_per_second', ',.0f')} | {joined('p50_ms', '.0f')} ms "
            f"| {joined('p99_ms', '.0f')} ms "
            f"| {sum(r['socket_errors'] + r['non_2xx'] for r in rows)} |"
        )
    for r in main:
        if not r.get("overload"):
            continue
        refused = f"{_pct(r.get('share_503', 0), 0)} 503" if r.get("share_503") else "no 503"
        accepted = ""
        if r.get("accepted_p99_ms"):
            accepted = f" (accepted p99 {r['accepted_p99_ms']:.0f} ms)"
        lines.append(
            f"| {r['backend']}, on | overload | {r['connections']} "
            f"| {r['requests_per_second']:,.0f} | {r['p50_ms']:.0f} ms | {r['p99_ms']:.0f} ms "
            f"| {r['socket_errors']}; {refused}{accepted} |"
        )
    hosts = {r.get("host", "thread") for r in main}
    lines.append("")
    lines.append(
        f"wrk {data['seconds']:.0f} s a row over loopback, the same one-sentence request "
        f"({data['sentence']!r}); `make demo`'s mean-pooling model, "
        + (
            "in its own process (`serve`'s default); "
            if hosts == {"process"}
            else "in a thread of the server; "
        )
        + f"wrk shares the {data['cpu_count']} cores with the service."
    )
    lines.append("")
    lines.append(_serve_source(data, main))
    return "\n".join(lines)


def _serve_source(data: dict, rows: list[dict]) -> str:
    dates = sorted({str(r.get("date", data["date"]))[:10] for r in rows}) or [data["date"][:10]]
    return (
        f"_From `bench/results/serve_bench.json` ({', '.join(dates)}, {data['machine']}, "
        f"{data['cpu_count']} cores): `make bench-serve` (`python bench/serve_bench.py`)._"
    )


def _cores(row: dict) -> str:
    if "cores_server" not in row:
        return "-"
    model = f"{row['cores_model']:.2f}" if row["host"] == "process" else "(in the server)"
    return f"{row['cores_server']:.2f} / {model}"


def serve_scale() -> str:
    """Past one process: the overload row with the model in a thread and in its own process,
    --workers 1 and 2, Ray Serve with 1 and 2 replicas, and the projection for a cluster."""
    data = _load("serve_bench.json")
    results = data["results"]
    lines = [
        "| the model in | connections: calm / overload | accepted p99: calm / overload "
        "| ratio | 503 share | accepted/s | cores: server / model | other errors |",
        "| --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    shed = [r for r in results if r.get("section") == "shed" and r.get("calm_p99_ms")]
    for r in shed:
        accepted_p99 = r.get("accepted_p99_ms") or float("nan")
        others = r["socket_errors"] + sum(
            n for status, n in r["statuses"].items() if status not in ("200", "503")
        )
        lines.append(
            f"| {r['backend']}: {'its own process' if r['host'] == 'process' else 'a thread'} "
            f"| {r['max_queue']} / {r['connections']} "
            f"| {r['calm_p99_ms']:.0f} / {accepted_p99:.0f} ms "
            f"| {accepted_p99 / r['calm_p99_ms']:.1f}x | {_pct(r['share_503'], 0)} "
            f"| {r['accepted'] / data['seconds']:,.0f} "
            f"| {_cores(r)} | {others} |"
        )
    lines.append("")
    lines.append(
        "Shedding: a queue of a quarter of the overload connections; calm is as many "
        "connections as the queue holds; accepted p99 from the server's access log (the "
        "time a request let in took in the server); cores: the CPU each process used under "
        "the storm (/proc). The goal: overload within 2x calm."
    )
    for r in (r for r in results if r.get("section") == "long"):
        statuses = sorted(r["statuses"].items())
        counts = ", ".join(f"{n:,} answered {status}" for status, n in statuses)
        p99 = f"; accepted p99 {r['accepted_p99_ms']:,.0f} ms" if r.get("accepted_p99_ms") else ""
        lines.append("")
        lines.append(
            f"Long texts: {r['connections']} clients each posting {r['texts_per_request']} "
            f"texts of {r['chars_per_text']:,} characters for {r['seconds']:.0f} s, waiting as "
            f"`Retry-After` says, at the default queue: {counts}{p99}; "
            f"{r['socket_errors']} connection errors."
        )
    lines.append("")
    lines.append(
        "| layout | connections | requests/s | p50 | p99 | errors, non-2xx |",
    )
    lines.append("| --- | --- | --- | --- | --- | --- |")
    layouts: dict[str, list[dict]] = {}
    for r in results:
        if r.get("section") == "workers":
            thread = " --no-model-process" if r.get("host") == "thread" else ""
            layouts.setdefault(f"`--workers {r['workers']}{thread}`", []).append(r)
        elif r.get("section") == "ray":
            n = r["replicas"]
            layouts.setdefault(f"Ray Serve, {n} replica{'s' * (n > 1)}", []).append(r)
    for name, rows in layouts.items():

        def joined(key: str, fmt: str, rows: list[dict] = rows) -> str:
            return " / ".join(format(r[key], fmt) for r in rows)

        lines.append(
            f"| {name} | {joined('connections', 'd')} "
            f"| {joined('requests_per_second', ',.0f')} | {joined('p50_ms', '.0f')} ms "
            f"| {joined('p99_ms', '.0f')} ms "
            f"| {sum(r['socket_errors'] + r['non_2xx'] for r in rows)} |"
        )
    one = [r for r in results if r.get("section") == "ray" and r["replicas"] == 1]
    if one:
        best = max(r["requests_per_second"] for r in one)
        projected = ", ".join(f"{n} replicas ~{n * best:,.0f}" for n in (4, 16, 64))
        lines.append("")
        lines.append(
            f"Projection for a cluster, one replica a node of this machine's size: a replica "
            f"answers at most {best:,.0f} requests/s here, so {projected} requests/s, if the "
            "proxies keep up (Ray Serve runs one on every node) and the replicas' requests are "
            "spread evenly; measured on one machine, not on a cluster."
        )
    lines.append("")
    scaled = [r for r in results if r.get("section") in ("shed", "workers", "ray")]
    lines.append(_serve_source(data, scaled))
    return "\n".join(lines)


def serve_load() -> str:
    """Dynamic batching on against off, from a Python client."""
    data = _load("serve_load.json")
    lines = ["| batching | requests/s | p50 | p99 | errors |", "| --- | --- | --- | --- | --- |"]
    for name, r in data["results"].items():
        lines.append(
            f"| {name} | {r['requests_per_second']:,.0f} | {r['p50_ms']:.0f} ms "
            f"| {r['p99_ms']:.0f} ms | {r['errors']} |"
        )
    lines.append("")
    lines.append(
        f"{data['requests']:,} requests from {data['concurrency']} concurrent Python clients "
        f"(batching: {data['speedup']:.2f}x the requests/s)."
    )
    lines.append("")
    lines.append(
        f"_From `bench/results/serve_load.json` ({data['date'][:10]}, {data['machine']}, "
        f"{data['cpu_count']} cores): `python bench/serve_load.py` (in `make bench-serve`)._"
    )
    return "\n".join(lines)


def export() -> str:
    """The exported ONNX classifier (fp32, int8) against `predict` on SST-2's test split."""
    data = _load("export_bench.json")
    lines = [
        "| | accuracy | labels as `predict` | largest probability difference | sentences/s "
        "| `model.onnx` |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    for name, r in data["rows"].items():
        agree = _pct(r["agreement_with_predict"]) if "agreement_with_predict" in r else ""
        diff = f"{r['max_probability_difference']:.2g}" if "model_onnx_mb" in r else ""
        size = f"{r['model_onnx_mb']:.1f} MB" if "model_onnx_mb" in r else ""
        rate = f"{r['sentences_per_s']:,.0f}" if "model_onnx_mb" in r else ""
        label = {
            "export int8": "export, `--int8`",
            "export fp32": "export, fp32",
            "predict (torch)": "`predict` (torch)",
        }.get(name, name)
        lines.append(f"| {label} | {_pct(r['accuracy'])} | {agree} | {diff} | {rate} | {size} |")
    lines.append("")
    lines.append(
        f"`make demo`'s mean-pooling model; the SST-2 test split ({data['n_test']:,} "
        f"sentences), batches of {data['batch_size']} in file order through "
        "`ExportedClassifier`, tokenizing included."
    )
    lines.append("")
    m = data["machine"]
    lines.append(
        f"_From `bench/results/export_bench.json` ({data['date'][:10]}, {m['cpus']} cores): "
        "`make bench-export` (`python bench/export_bench.py`)._"
    )
    return "\n".join(lines)


def long_line() -> str:
    """Peak memory of `train` on a file with one 6 MB line, before and after bounded tokenizing."""
    data = _load("long_line_memory.json")
    lines = [
        "| code | `--long` | peak RSS | time | windows |",
        "| --- | --- | --- | --- | --- |",
    ]
    for r in data["results"]:
        lines.append(
            f"| {r['src']} | {r['long']} | {r['peak_rss_mb']:,} MB | {r['seconds']:.0f} s "
            f"| {r['n_windows']:,} |"
        )
    lines.append("")
    lines.append(
        f"{data['rows']} rows, one of them {data['chars']:,} characters; "
        f"`--max-length {data['max_length']}`."
    )
    lines.append("")
    lines.append(_source("long_line_memory.json", data))
    return "\n".join(lines)


def encoders() -> str:
    """Which encoder: MiniLM against all-mpnet-base-v2, frozen (mean, --auto), compare."""
    data = _load("encoders.json")
    rows = {r["row"]: r for r in data["results"]}
    lines = [
        "| encoder | mode | SST-2 test | CV (train) | features chosen | wall time "
        "| of which embedding the training set |",
        "| --- | --- | --- | --- | --- | --- | --- |",
    ]
    for name in ("minilm-mean", "minilm-auto", "mpnet-mean", "mpnet-auto"):
        r = rows.get(name)
        if r is None:
            continue
        embed = r.get("sweep_embed_seconds", r["embed_seconds"])
        over = f" ({r['auto_over_embed']:.1f}x it)" if "auto_over_embed" in r else ""
        mode = "`--auto`" if "auto" in name else "`--pooling mean`"
        lines.append(
            f"| {r['encoder']} | {mode} | **{_pct(r['test_accuracy'])}** "
            f"| {_pct(r['cv_accuracy'])} | {r['choice']} | {_seconds(r['seconds'])}{over} "
            f"| {_seconds(embed)} |"
        )
    tuned = _load("finetune_full.json")
    first = tuned["rows"][0]
    lines.append(
        f"| minilm | {first['run']} | {_pct(first['test_correct'] / tuned['n_test'])} | | "
        f"| {_seconds(first['seconds'])} | (from `finetune_full.json`, {tuned['date'][:10]}) |"
    )
    lines.append("")
    if "mpnet-auto" in rows and "screen_seconds" in rows["mpnet-auto"]:
        r = rows["mpnet-auto"]
        lines.append(
            f"mpnet's `--auto` sweep: embedding {_seconds(r['sweep_embed_seconds'])}, screen "
            f"{_seconds(r['screen_seconds'])}, the whole sweep {_seconds(r['sweep_seconds'])}."
        )
    check = rows.get("screen-check")
    if check:
        s, f = check["sampled"], check["every_row"]
        verdict = "the same choice" if check["same_choice"] else "**another choice**"
        lines.append(
            f"Its screen on {s['screen_rows']:,} sampled rows ({_seconds(s['screen_seconds'])}) "
            f"against every row ({_seconds(f['screen_seconds'])}): {verdict} ({s['best']}, CV "
            f"{_pct(s['cv_accuracy'])}; every row: {f['best']}, {_pct(f['cv_accuracy'])})."
        )
    found = rows.get("compare")
    if found:
        lines.append(
            f"`bertprobe compare` of {' and '.join(found['encoders'])}: "
            f"{_seconds(found['seconds'])}, of which the two forward passes "
            f"{_seconds(found['forward_pass_seconds'])} and the rest "
            f"{_seconds(found['beyond_forward_passes'])}; it recommends "
            f"{Path(found['recommended']).name}: "
            + "; ".join(
                r.replace(found["recommended"], Path(found["recommended"]).name)
                for r in found.get("reasons") or []
            )
            + "."
        )
    if "note" in data:
        lines.append("")
        lines.append(f"Note: {data['note']}.")
    lines.append("")
    lines.append(_source("encoders.json", data))
    return "\n".join(lines)


def web() -> str:
    """export --web's page in Chromium beside the Python export: readiness, rate, agreement."""
    data = _load("web.json")
    lines = [
        "| | threads | ready | first answer | sentences/s | labels as `predict` (max prob. diff.) "
        "| as the Python export of the same graph |",
        "| --- | --- | --- | --- | --- | --- | --- |",
    ]
    for name, r in data["page"].items():
        label = name.replace(", wasm", "").replace(", 1 thread", "").replace(", threads", "")
        label += ", cross-origin isolated" if r["cross_origin_isolated"] else ""
        lines.append(
            f"| {label} | {r['threads']} | {r['ready_s']:.1f} s | {r['first_answer_s']:.1f} s "
            f"| {r['sentences_per_s']:.1f} | {100 * r['agreement_with_predict']:.1f}% "
            f"({r['max_difference_from_predict_proba']:.1g}) "
            f"| {100 * r['agreement_with_python_export']:.1f}% "
            f"({r['max_difference_from_python_export']:.1g}) |"
        )
    for name, r in data["python_export"].items():
        kind, threads = name.removeprefix("Python export ").split(", ")
        lines.append(
            f"| Python export, {kind} | {threads.split()[0]} | | | {r['sentences_per_s']:.1f} | | |"
        )
    size = data["folder_mb"]
    files = data["files_mb"]
    lines.append("")
    lines.append(
        f"The folder: {size['int8']:.1f} MB with the int8 graph (`model.onnx` "
        f"{files['int8']['model.onnx']:.1f} MB, onnxruntime's WASM "
        f"{files['int8']['vendor/ort-wasm-simd-threaded.wasm']:.1f} MB), {size['fp32']:.1f} MB "
        f"with fp32 (`model.onnx` {files['fp32']['model.onnx']:.1f} MB). {data['n_test']} SST-2 "
        f"test sentences, Chromium {data['chromium'].split('.')[0]}, `{data['model']}`; "
        f"{data['machine']['note']}."
    )
    lines.append("")
    machine = f"{data['machine']['cpus']} cores"
    lines.append(
        f"_From `bench/results/web.json` ({data['date'][:10]}, {machine}): `make bench-web`._"
    )
    return "\n".join(lines)


def tracking() -> str:
    name = "tracking.json"
    data = _load(name)
    lines = [
        "| `make demo`'s run | untracked | tracked (`--track sqlite:///...`) | difference "
        "| in the tracker (MLflow's calls, the report) |",
        "| --- | --- | --- | --- | --- |",
    ]
    for row in data["rows"]:
        share = row["overhead_seconds"] / row["untracked_seconds"]
        lines.append(
            f"| `{row['flags']}` ({_pct(row['test_accuracy'])}) | "
            f"{row['untracked_seconds']:.1f} s | {row['tracked_seconds']:.1f} s | "
            f"{row['overhead_seconds']:+.1f} s ({100 * share:+.0f}%) | "
            f"{row['tracking_seconds']:.1f} s |"
        )
    note = (
        f"Medians of {data['repeats']} pairs of whole processes, each pair one after the other "
        "on a warm embedding cache; the store existed already (a new one first creates "
        "MLflow's tables)."
    )
    return "\n".join([*lines, "", note, "", _source(name, data)])


def startup() -> str:
    name = "startup.json"
    data = _load(name)
    lines = [
        "| `embed --backend onnx-int8 --no-cache`, graph cached | before (time, peak RSS) "
        "| after: no torch weights (time, peak RSS) |",
        "| --- | --- | --- |",
    ]
    for row in data["rows"]:
        before, after = row["baseline"], row["this tree"]
        lines.append(
            f"| {row['job']} | {before['seconds']:.2f} s, {before['rss_mb']:.0f} MB | "
            f"{after['seconds']:.2f} s, {after['rss_mb']:.0f} MB |"
        )
    note = (
        f"Whole processes, medians of {data['repeats']} runs each, alternating; before is "
        f"commit {data['baseline']}."
    )
    return "\n".join([*lines, "", note, "", _source(name, data)])


def serve_memory() -> str:
    name = "serve_memory.json"
    data = _load(name)
    lines = [
        "| `bertprobe serve` | before: each process, total | after: each process, total |",
        "| --- | --- | --- |",
    ]
    for row in data["rows"]:
        cells = [
            ", ".join(f"{mb:.0f}" for mb in row[side]["processes_mb"])
            + f" MB; **{row[side]['total_mb']:.0f} MB**"
            for side in ("baseline", "this tree")
        ]
        lines.append(f"| {row['service']} | {cells[0]} | {cells[1]} |")
    note = (
        f"Resident memory (VmRSS) of every process of the service once it has answered, "
        f"largest first; {data['model']}; before is commit {data['baseline']}."
    )
    return "\n".join([*lines, "", note, "", _source(name, data)])


TABLES: dict[str, Callable[[], str]] = {
    "fewshot": fewshot,
    "zero-shot": zero_shot,
    "fewshot-fortunes": partial(fewshot, "fewshot_fortunes.json"),
    "selftrain-ceiling": selftrain_ceiling,
    "zero-shot-fortunes": partial(zero_shot, "zeroshot_fortunes.json"),
    "active-learning": active_learning,
    "explain": explain,
    "demo": demo,
    "sweep": sweep,
    "auto-bench": auto_bench,
    "embed": embed,
    "memory": memory,
    "int8-profile": int8_profile,
    "int8-variants": int8_variants,
    "long-text": long_text,
    "real-data": real_data,
    "multilabel": multilabel,
    "scale": scale,
    "finetune": finetune,
    "distill": distill,
    "serve": serve,
    "serve-scale": serve_scale,
    "serve-load": serve_load,
    "export": export,
    "long-line": long_line,
    "encoders": encoders,
    "web": web,
    "tracking": tracking,
    "startup": startup,
    "serve-memory": serve_memory,
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
    parser.add_argument("files", nargs="*", type=Path)
    parser.add_argument("--check", action="store_true", help="fail if a table is stale")
    parser.add_argument("--list", action="store_true", help="print the tables' names")
    args = parser.parse_args(argv)
    if args.list:
        print("\n".join(TABLES))
        return 0
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
