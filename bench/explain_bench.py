"""Token attributions on SST-2: how faithful each method's word ranking is, and how fast.

Models (``--models``), each trained on SST-2's training split (``--train-rows`` of it) with the
bundled MiniLM: ``mean`` (a probe on mean-pooled states: the exact read-out decomposition
applies), ``cls`` (a probe on [CLS]: only occlusion, and integrated gradients, apply) and
``auto`` (``train --auto``: what bertprobe picks on SST-2, a probe voting with TF-IDF, which
only occlusion can explain). ``--n`` test sentences are explained by each method the model
allows (exact; occlusion deleting the word; occlusion masking it; integrated gradients on the
first ``--ig-n`` of them, where Captum is installed and the model allows it). For each:
ERASER's comprehensiveness and sufficiency (top 1, 5, 10, 20, 50% of the words removed or
kept; AOPC) against a random ranking of the same texts, and texts per second against
``predict_proba`` on the same texts (the embedding cache off, so both run the encoder; each
timed twice in a row, the faster kept).

Occlusion scores a text by running it once more per word; ``passes_per_text`` and
``passes_per_second`` say how much of its cost is that count (the floor of its time against
``predict``) and how much the passes themselves cost.

Prints a markdown table; writes bench/results/explain.json (``--out`` elsewhere).

    .venv/bin/python bench/explain_bench.py                 # make bench-explain
    .venv/bin/python bench/explain_bench.py --n 20 --ig-n 5 --train-rows 300 \
        --out /tmp/explain.json                             # smoke
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

from bertprobe import Classifier, EncoderOptions, RunOptions, TrainOptions
from bertprobe.datasets import load_sst2
from bertprobe.model.explain import METHODS, erasure_scores, why_not_exact
from bertprobe.model.gradients import DEFAULT_STEPS

ROOT = Path(__file__).resolve().parents[1]
RUN = RunOptions(use_cache=False)
MODELS = {
    "mean": (EncoderOptions("minilm", pooling="mean"), TrainOptions(cv=3, n_jobs=1)),
    "cls": (EncoderOptions("minilm", pooling="cls"), TrainOptions(cv=3, n_jobs=1)),
    "auto": (EncoderOptions("minilm"), TrainOptions(cv=3, n_jobs=1, auto=True)),
}


def timed(fn, repeats: int = 1):
    """``fn()``'s result and its fastest time over ``repeats`` calls."""
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        result = fn()
        best = min(best, time.perf_counter() - start)
    return result, best


def methods_for(model: Classifier) -> list[tuple[str, str]]:
    """(method, occlusion) pairs the model allows."""
    found = [("exact", "delete")] if why_not_exact(model) is None else []
    found += [("occlusion", "delete"), ("occlusion", "mask")]
    if "integrated-gradients" in METHODS and model.text_model is None:
        found.append(("integrated-gradients", "delete"))
    return found


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=500, help="test sentences explained")
    parser.add_argument("--ig-n", type=int, default=100, help="of them, by integrated gradients")
    parser.add_argument("--train-rows", type=int, default=None, help="default: all")
    parser.add_argument("--models", default="mean,cls,auto", help=f"of {', '.join(MODELS)}")
    parser.add_argument("--out", type=Path, default=ROOT / "bench/results/explain.json")
    parser.add_argument(
        "--methods",
        default="",
        help="only these (comma list of exact, occlusion, integrated-gradients): their rows "
        "replace the same rows of --out, the others are kept with their own date",
    )
    args = parser.parse_args()
    train, test = load_sst2("train"), load_sst2("test")
    rows = args.train_rows or len(train)
    texts = test.texts[: args.n]
    start_time = time.perf_counter()
    results = []
    for name in args.models.split(","):
        encoding, options = MODELS[name]
        model = Classifier.fit(
            train.texts[:rows], train.labels[:rows], encoding=encoding, options=options
        )
        model.predict_proba(texts[:2], RUN)  # the encoder loaded before anything is timed
        for method, occlude in methods_for(model):
            if args.methods and method not in args.methods.split(","):
                continue
            subset = texts[: args.ig_n] if method == "integrated-gradients" else texts
            _, predict_seconds = timed(lambda m=model, s=subset: m.predict_proba(s, RUN), 2)
            found, seconds = timed(
                lambda m=model, a=method, o=occlude, s=subset: m.explain(
                    s, RUN, method=a, occlude=o
                )
            )
            ranked = erasure_scores(model, found, run=RUN)
            chance = erasure_scores(model, found, ranking="random", run=RUN)
            words = sum(len(e.words) for e in found) / len(found)
            passes = 1 + words if method == "occlusion" else 1.0
            row = {
                "model": name,
                "pooling": model.spec.pooling,
                "vote": model.text_model is not None,
                "method": found[0].method,
                "n": len(subset),
                "aopc_comprehensiveness": ranked["aopc_comprehensiveness"],
                "aopc_sufficiency": ranked["aopc_sufficiency"],
                "random_aopc_comprehensiveness": chance["aopc_comprehensiveness"],
                "random_aopc_sufficiency": chance["aopc_sufficiency"],
                "comprehensiveness": ranked["comprehensiveness"],
                "sufficiency": ranked["sufficiency"],
                "random_comprehensiveness": chance["comprehensiveness"],
                "random_sufficiency": chance["sufficiency"],
                "texts_per_second": len(subset) / seconds,
                "predict_texts_per_second": len(subset) / predict_seconds,
                "time_vs_predict": seconds / predict_seconds,
                "mean_words": words,
                "passes_per_text": passes,
                "passes_per_second": passes * len(subset) / seconds,
                "date": datetime.now(UTC).date().isoformat(),
            }
            deltas = [e.delta for e in found]  # integrated gradients' convergence deltas
            if all(d is not None for d in deltas):
                row["mean_abs_delta"] = float(sum(deltas) / len(deltas))
                # A forward and a backward pass per step, for each score explained.
                one = found[0].score == "log-odds" and not model.decision.label_sets
                scores = 1 if one else None
                row["passes_per_text"] = DEFAULT_STEPS * (scores or len(model.classes))
                row["passes_per_second"] = row["passes_per_text"] * len(subset) / seconds
            results.append(row)
            print(json.dumps(row), file=sys.stderr, flush=True)
    seconds = time.perf_counter() - start_time
    print(
        "\n| model | method | comprehensiveness AOPC (random) | sufficiency AOPC (random) "
        "| texts/s (predict) | time vs predict |"
    )
    print("| --- | --- | --- | --- | --- | --- |")
    for r in results:
        print(
            f"| {r['model']} | {r['method']} | {r['aopc_comprehensiveness']:.3f} "
            f"({r['random_aopc_comprehensiveness']:.3f}) | {r['aopc_sufficiency']:.3f} "
            f"({r['random_aopc_sufficiency']:.3f}) | {r['texts_per_second']:.1f} "
            f"({r['predict_texts_per_second']:.1f}) | {r['time_vs_predict']:.1f}x |"
        )
    command = "python bench/explain_bench.py " + " ".join(sys.argv[1:])
    if args.methods and args.out.is_file():  # the other methods' rows stay, with their dates
        earlier = json.loads(args.out.read_text(encoding="utf-8"))
        fresh = {(r["model"], r["method"]) for r in results}
        kept = [r for r in earlier["results"] if (r["model"], r["method"]) not in fresh]
        order = {name: k for k, name in enumerate(MODELS)}
        results = sorted(kept + results, key=lambda r: order.get(r["model"], len(order)))
        command = f"{earlier['command'].strip()}; then {command}"
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(
        json.dumps(
            {
                "date": datetime.now(UTC).date().isoformat(),
                "machine": f"{platform.machine()}, {os.cpu_count()} cores",
                "command": command,
                "encoder": "minilm; probes with C by 3-fold CV; auto: train --auto",
                "train": f"SST-2 train, first {rows:,} rows",
                "test": f"SST-2 test, first {len(texts):,} sentences",
                "ks": [1, 5, 10, 20, 50],
                "results": results,
                "seconds": round(seconds, 1),
            },
            indent=2,
        )
        + "\n",
        encoding="utf-8",
    )


if __name__ == "__main__":
    main()
