"""How many epochs when there are few examples: --finetune on 8 and 64 SST-2 training sentences
per class, scored on the SST-2 **dev** split (872 sentences; the test split is never read).

With the default 4 epochs, 128 sentences make 16 optimizer steps: too few to move the encoder.
This measures more epochs (and the probe alone, for reference) so that the default for small
training sets is chosen on dev data. Prints one line per run and a summary table.

    .venv/bin/python bench/finetune_fewshot_dev.py [--epochs 4,16,48] [--seeds 3]
    .venv/bin/python bench/finetune_fewshot_dev.py --epochs auto --min-steps 200
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time

import numpy as np
from finetune_bench import per_class_rows  # the same draw as the benchmark's

from bertprobe import (
    Classifier,
    EncoderOptions,
    FinetuneOptions,
    RunOptions,
    TrainOptions,
    train,
)
from bertprobe.data.files import LabelledTexts, read_labelled
from bertprobe.datasets import load_sst2


def subset(data: LabelledTexts, per_class: int, seed: int) -> LabelledTexts:
    labels = list(data.labels or [])
    rows = per_class_rows(labels, per_class, seed)
    return LabelledTexts.from_lists([data.texts[i] for i in rows], [labels[i] for i in rows])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--epochs", default="4,16,48", help="epoch counts; 'auto': the default")
    parser.add_argument("--min-steps", type=int, default=None, help="with --epochs auto")
    parser.add_argument("--shots", default="64,8")
    parser.add_argument("--seeds", type=int, default=3)
    args = parser.parse_args()
    full = load_sst2("train")
    dev = read_labelled("data/sst2/dev.tsv")
    scores: dict[tuple[int, str], list[float]] = {}
    for shots in (int(s) for s in args.shots.split(",")):
        for seed in range(args.seeds):
            data = subset(full, shots, seed)
            for epochs in ["probe", *args.epochs.split(",")]:
                with tempfile.TemporaryDirectory() as cache:
                    run = RunOptions(cache_dir=cache)
                    encoding = EncoderOptions("minilm", pooling="mean", run=run)
                    start = time.perf_counter()
                    result = train(
                        data,
                        encoding=encoding,
                        options=TrainOptions(cv=min(5, shots)),
                        finetune=None
                        if epochs == "probe"
                        else FinetuneOptions(
                            epochs=None if epochs == "auto" else int(epochs),
                            seed=seed,
                            **({} if args.min_steps is None else {"min_steps": args.min_steps}),
                        ),
                    )
                    model: Classifier = result.model
                    accuracy = model.evaluate(dev.texts, dev.labels or [], run).accuracy
                scores.setdefault((shots, epochs), []).append(accuracy)
                print(
                    f"{shots:>3} per class, seed {seed}, epochs {epochs:>5}: dev {accuracy:.4f} "
                    f"({time.perf_counter() - start:.0f} s)",
                    file=sys.stderr,
                    flush=True,
                )
    print("| per class | epochs | SST-2 dev accuracy (mean ± std over seeds) |")
    print("|---|---|---|")
    for (shots, epochs), values in scores.items():
        acc = 100 * np.array(values)
        print(f"| {shots} | {epochs} | {acc.mean():.2f}% ± {acc.std():.2f} |")


if __name__ == "__main__":
    main()
