"""Long texts: truncate against chunk-then-pool, on long reviews built from SST-2.

A "review" joins 12 to 20 SST-2 sentences of one label (drawn with a fixed seed; training
reviews from data/sst2/train.tsv, test reviews from data/sst2/test.tsv, a sentence used once
until its split's pool of that label runs out, then the pool is reshuffled and reused). The
bundled encoder (all-MiniLM-L6-v2) has 512 positions, but sentence-transformers runs it at 256
tokens (its ``max_seq_length``), the length it is meant for: ``--max-length 256`` by default, and
most reviews run past it (the script counts how many). For each mode a probe is trained on the
training reviews with the bundled encoder and mean pooling (C by 5-fold CV in this process, no
embedding cache, so the time is the work's; the encoder is loaded and warmed up before either is
timed) and scored on the test reviews:

- ``truncate``: the first ``--max-length`` tokens of each review (the default);
- ``chunk``: windows of ``--max-length`` tokens overlapping by the default stride (a quarter of
  it), each mean-pooled, then the windows' vectors averaged (``--window-pool mean``) or, with
  ``--window-pool max``, their element-wise maximum.

Prints a markdown table; writes bench/results/long_text.json (``--out`` elsewhere).

    .venv/bin/python bench/long_text_bench.py                          # the full run
    .venv/bin/python bench/long_text_bench.py --docs 40 --test-docs 20 --out /tmp/x.json
                                                                       # a smoke run

The smoke run proves the script works; its accuracies, on 40 reviews, mean little.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

from bertprobe import EncoderOptions, RunOptions, TrainOptions, train
from bertprobe.data.files import LabelledTexts, read_labelled
from bertprobe.encoders.encode import embed
from bertprobe.encoders.encoder import load_encoder

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results"


def long_reviews(
    path: Path, n_docs: int, rng: random.Random, sentences: tuple[int, int]
) -> LabelledTexts:
    """``n_docs`` reviews of one label each (half of each label), sentences joined by spaces."""
    data = read_labelled(path)
    pools: dict[int, list[str]] = {}
    for text, label in zip(data.texts, data.labels or [], strict=True):
        pools.setdefault(int(label), []).append(text)
    queues: dict[int, list[str]] = {label: [] for label in pools}

    def draw(label: int) -> str:
        if not queues[label]:  # used up: reshuffle the pool and reuse it
            queues[label] = rng.sample(pools[label], len(pools[label]))
        return queues[label].pop()

    texts, labels = [], []
    for i in range(n_docs):
        label = sorted(pools)[i % len(pools)]
        texts.append(" ".join(draw(label) for _ in range(rng.randint(*sentences))))
        labels.append(label)
    order = rng.sample(range(n_docs), n_docs)
    return LabelledTexts(
        [texts[i] for i in order],
        [labels[i] for i in order],
        f"{path.name} ({n_docs} long reviews)",
        data.sha256,
        list(range(1, n_docs + 1)),
    )


def token_counts(texts: list[str]) -> list[int]:
    tokenizer = load_encoder("minilm").tokenizer
    return [len(ids) for ids in tokenizer(texts, add_special_tokens=True)["input_ids"]]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--docs", type=int, default=400, help="training reviews (default 400)")
    parser.add_argument("--test-docs", type=int, default=100, help="test reviews (default 100)")
    parser.add_argument("--min-sentences", type=int, default=12)
    parser.add_argument("--max-sentences", type=int, default=20)
    parser.add_argument("--window-pool", choices=("mean", "max"), default="mean")
    parser.add_argument("--max-length", type=int, default=256, help="tokens a window (256)")
    parser.add_argument("--cv", type=int, default=5)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=RESULTS / "long_text.json")
    args = parser.parse_args()

    rng = random.Random(args.seed)
    sentences = (args.min_sentences, args.max_sentences)
    train_set = long_reviews(ROOT / "data/sst2/train.tsv", args.docs, rng, sentences)
    test_set = long_reviews(ROOT / "data/sst2/test.tsv", args.test_docs, rng, sentences)
    limit = args.max_length
    tokens = token_counts(train_set.texts + test_set.texts)
    over = sum(n > limit for n in tokens)
    print(
        f"{len(train_set)} training and {len(test_set)} test reviews; tokens per review "
        f"{min(tokens)}-{max(tokens)} (mean {sum(tokens) / len(tokens):.0f}); {over} of "
        f"{len(tokens)} over --max-length {limit}",
        file=sys.stderr,
    )
    warm = EncoderOptions("minilm", pooling="mean", run=RunOptions(use_cache=False))
    warm.load()  # the first forward passes are slower: neither mode pays for them
    embed(train_set.texts[:16], warm.load(), warm.spec)

    rows = []
    for long in ("truncate", "chunk"):
        encoding = EncoderOptions(
            "minilm",
            pooling="mean",
            max_length=args.max_length,
            long=long,
            window_pool=args.window_pool,
            run=RunOptions(use_cache=False),
        )
        start = time.perf_counter()
        result = train(
            train_set, test=test_set, encoding=encoding, options=TrainOptions(cv=args.cv, n_jobs=1)
        )
        seconds = time.perf_counter() - start
        summary = result.to_dict()
        rows.append(
            {
                "mode": long,
                "window_pool": args.window_pool if long == "chunk" else None,
                "test_accuracy": result.test_accuracy,
                "cv_accuracy": result.cv_accuracy,
                "seconds": seconds,
                "embed_seconds": result.embed_seconds,
                "n_truncated": summary["n_truncated"],
                "n_windows": summary["n_windows"],
            }
        )
        print(f"{long}: done in {seconds:.1f} s", file=sys.stderr)

    print("| mode | test accuracy | CV accuracy | seconds | embedding s | truncated | windows |")
    print("|---|---|---|---|---|---|---|")
    for row in rows:
        print(
            f"| {row['mode']} | {100 * row['test_accuracy']:.2f}% | "
            f"{100 * row['cv_accuracy']:.2f}% | {row['seconds']:.1f} | "
            f"{row['embed_seconds']:.1f} | {row['n_truncated']} | {row['n_windows']} |"
        )
    record = {
        "created": datetime.now(UTC).isoformat(timespec="seconds"),
        "settings": {
            "encoder": "minilm",
            "pooling": "mean",
            "max_length": limit,
            "train_docs": args.docs,
            "test_docs": args.test_docs,
            "sentences_per_review": list(sentences),
            "window_pool": args.window_pool,
            "cv": args.cv,
            "seed": args.seed,
            "smoke_run": args.docs < 200,
        },
        "tokens": {
            "min": min(tokens),
            "max": max(tokens),
            "mean": sum(tokens) / len(tokens),
            "over_limit": over,
            "reviews": len(tokens),
        },
        "machine": {
            "platform": platform.platform(),
            "python": platform.python_version(),
            "cpus": os.cpu_count(),
        },
        "rows": rows,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(record, indent=2) + "\n", encoding="utf-8")
    print(f"wrote {args.out}", file=sys.stderr)


if __name__ == "__main__":
    main()
