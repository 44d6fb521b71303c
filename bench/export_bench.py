"""The exported classifier (`bertprobe export`, fp32 and --int8) against `bertprobe predict`.

A model trained on SST-2 with the bundled encoder (all-MiniLM-L6-v2, mean pooling, the default
probe) is exported twice; the SST-2 test split is labelled by `Classifier.predict` (what
`bertprobe predict` does, torch) and by each export through `ExportedClassifier` (onnxruntime +
tokenizers, batches of --batch-size in file order, as a deployment would run it). Prints
accuracy, label agreement with predict, the largest probability difference, sentences/s of the
exported graph (tokenizing included) and the file sizes; writes bench/results/export_bench.json.

    .venv/bin/python bench/export_bench.py                       # the full run: all 6,920
                                                                 # training and 1,821 test rows
    .venv/bin/python bench/export_bench.py --model models/sst2   # an existing model folder
    .venv/bin/python bench/export_bench.py --n-train 300 --n-test 100 --out -   # smoke run

Accuracy is the issue's check: the int8 export may lose at most 0.5 points against predict.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results" / "export_bench.json"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, help="A model folder (default: train one).")
    parser.add_argument("--n-train", type=int, help="Training rows when training (default all).")
    parser.add_argument("--n-test", type=int, help="Test rows (default: the whole split).")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--threads", type=int, help="ONNX Runtime threads (default: all).")
    parser.add_argument("--out", default=str(RESULTS), help="JSON results file, or - for none.")
    args = parser.parse_args()

    from bertprobe import Classifier, EncoderOptions, train
    from bertprobe.data.files import LabelledTexts
    from bertprobe.datasets import load_sst2
    from bertprobe.export import ExportedClassifier, export_classifier
    from bertprobe.training.target import accuracy

    test = load_sst2("test")
    texts, labels = test.texts[: args.n_test], test.labels[: args.n_test]
    with tempfile.TemporaryDirectory() as scratch:
        if args.model is not None:
            model = Classifier.load(args.model)
        else:
            full = load_sst2("train")
            n = args.n_train or len(full.texts)
            data = LabelledTexts(
                full.texts[:n], full.labels[:n], full.source, full.sha256, full.line_numbers[:n]
            )
            start = time.perf_counter()
            model = train(data, encoding=EncoderOptions("minilm", pooling="mean")).model
            print(f"trained on {n:,} rows in {time.perf_counter() - start:.0f} s", file=sys.stderr)

        start = time.perf_counter()
        reference = model.predict_proba(texts)
        predict_seconds = time.perf_counter() - start
        predicted = [model.classes[i] for i in reference.argmax(axis=1)]
        rows = {
            "predict (torch)": {
                "accuracy": accuracy(labels, predicted),
                "sentences_per_s": len(texts) / predict_seconds,
            }
        }
        for name, int8 in (("export fp32", False), ("export int8", True)):
            start = time.perf_counter()
            folder = export_classifier(model, Path(scratch) / name.replace(" ", "-"), int8=int8)
            export_seconds = time.perf_counter() - start
            exported = ExportedClassifier(folder, threads=args.threads)
            exported.predict_proba(texts[: args.batch_size], args.batch_size)  # warm-up
            start = time.perf_counter()
            proba = exported.predict_proba(texts, args.batch_size)
            seconds = time.perf_counter() - start
            labelled = [exported.classes[i] for i in proba.argmax(axis=1)]
            rows[name] = {
                "accuracy": accuracy(labels, labelled),
                "agreement_with_predict": float(np.mean(proba.argmax(1) == reference.argmax(1))),
                "max_probability_difference": float(np.abs(proba - reference).max()),
                "sentences_per_s": len(texts) / seconds,
                "model_onnx_mb": (folder / "model.onnx").stat().st_size / 1e6,
                "export_seconds": export_seconds,
            }

    base = rows["predict (torch)"]["accuracy"]
    print(f"\nSST-2 test, {len(texts):,} sentences, batches of {args.batch_size}\n")
    print("| | accuracy | vs predict | agreement | max prob diff | sentences/s | model.onnx |")
    print("|---|---|---|---|---|---|---|")
    for name, row in rows.items():
        print(
            f"| {name} | {100 * row['accuracy']:.2f}% | "
            f"{100 * (row['accuracy'] - base):+.2f} points | "
            f"{100 * row.get('agreement_with_predict', 1.0):.2f}% | "
            f"{row.get('max_probability_difference', 0.0):.2g} | "
            f"{row['sentences_per_s']:.0f} | "
            + (f"{row['model_onnx_mb']:.1f} MB |" if "model_onnx_mb" in row else "|")
        )
    loss = base - rows["export int8"]["accuracy"]
    verdict = "within" if loss <= 0.005 else "OVER"
    print(f"\nint8 accuracy loss {100 * loss:+.2f} points: {verdict} the 0.5-point budget")
    if args.out != "-":
        record = {
            "date": datetime.now(UTC).isoformat(timespec="seconds"),
            "machine": {"cpus": os.cpu_count(), "platform": platform.platform()},
            "model": str(args.model) if args.model else "minilm mean, trained here",
            "n_train": None if args.model else (args.n_train or "all"),
            "n_test": len(texts),
            "batch_size": args.batch_size,
            "rows": rows,
        }
        Path(args.out).write_text(json.dumps(record, indent=2) + "\n", encoding="utf-8")
        print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
