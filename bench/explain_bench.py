"""Token attributions on SST-2: how faithful each method's word ranking is, and how fast.

A MiniLM probe per pooling (``--poolings``: mean, where the exact read-out decomposition
applies, and [CLS], where only occlusion does) is trained on SST-2's training split
(``--train-rows`` of it), then ``--n`` test sentences are explained by each method the model
allows (exact; occlusion deleting the word; occlusion masking it). For each: ERASER's
comprehensiveness and sufficiency (top 1, 5, 10, 20, 50% of the words removed or kept; AOPC),
against a random ranking of the same texts, and texts per second against ``predict_proba``
on the same texts (the embedding cache off, so both run the encoder).

Prints a markdown table; writes bench/results/explain.json (``--out`` elsewhere).

    .venv/bin/python bench/explain_bench.py
    .venv/bin/python bench/explain_bench.py --n 20 --train-rows 300 --out /tmp/explain.json  # smoke
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
from bertprobe.model.explain import erasure_scores

ROOT = Path(__file__).resolve().parents[1]
RUN = RunOptions(use_cache=False)


def timed(fn):
    start = time.perf_counter()
    result = fn()
    return result, time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=200, help="test sentences explained")
    parser.add_argument("--train-rows", type=int, default=None, help="default: all")
    parser.add_argument("--poolings", default="mean,cls")
    parser.add_argument("--out", type=Path, default=ROOT / "bench/results/explain.json")
    args = parser.parse_args()
    train, test = load_sst2("train"), load_sst2("test")
    rows = args.train_rows or len(train)
    texts = test.texts[: args.n]
    start_time = time.perf_counter()
    results = []
    for pooling in args.poolings.split(","):
        model = Classifier.fit(
            train.texts[:rows],
            train.labels[:rows],
            encoding=EncoderOptions("minilm", pooling=pooling),
            options=TrainOptions(cv=3, n_jobs=1),
        )
        model.predict_proba(texts[:2], RUN)  # the encoder loaded before anything is timed
        _, predict_seconds = timed(lambda m=model: m.predict_proba(texts, RUN))
        methods = [("exact", "delete")] if pooling == "mean" else []
        methods += [("occlusion", "delete"), ("occlusion", "mask")]
        for method, occlude in methods:
            found, seconds = timed(
                lambda m=model, a=method, o=occlude: m.explain(texts, RUN, method=a, occlude=o)
            )
            ranked = erasure_scores(model, found, run=RUN)
            chance = erasure_scores(model, found, ranking="random", run=RUN)
            row = {
                "pooling": pooling,
                "method": found[0].method,
                "n": len(texts),
                "aopc_comprehensiveness": ranked["aopc_comprehensiveness"],
                "aopc_sufficiency": ranked["aopc_sufficiency"],
                "random_aopc_comprehensiveness": chance["aopc_comprehensiveness"],
                "random_aopc_sufficiency": chance["aopc_sufficiency"],
                "comprehensiveness": ranked["comprehensiveness"],
                "sufficiency": ranked["sufficiency"],
                "random_comprehensiveness": chance["comprehensiveness"],
                "random_sufficiency": chance["sufficiency"],
                "texts_per_second": len(texts) / seconds,
                "predict_texts_per_second": len(texts) / predict_seconds,
                "mean_words": sum(len(e.words) for e in found) / len(found),
            }
            results.append(row)
            print(json.dumps(row), file=sys.stderr, flush=True)
    seconds = time.perf_counter() - start_time
    print(
        "\n| pooling | method | comprehensiveness AOPC (random) | sufficiency AOPC (random) "
        "| texts/s (predict) |"
    )
    print("| --- | --- | --- | --- | --- |")
    for r in results:
        print(
            f"| {r['pooling']} | {r['method']} | {r['aopc_comprehensiveness']:.3f} "
            f"({r['random_aopc_comprehensiveness']:.3f}) | {r['aopc_sufficiency']:.3f} "
            f"({r['random_aopc_sufficiency']:.3f}) | {r['texts_per_second']:.1f} "
            f"({r['predict_texts_per_second']:.1f}) |"
        )
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(
        json.dumps(
            {
                "date": datetime.now(UTC).date().isoformat(),
                "machine": f"{platform.machine()}, {os.cpu_count()} cores",
                "command": "python bench/explain_bench.py " + " ".join(sys.argv[1:]),
                "encoder": "minilm, linear probe (C by 3-fold CV)",
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
