"""Distillation benchmark: all-mpnet-base-v2's accuracy at the bundled MiniLM's speed?

The teacher is a frozen all-mpnet-base-v2 with ``train --auto`` on the SST-2 training split
(``--teacher DIR`` for one already trained; else it is trained here first, and that time is
not the distillation's). The student is the bundled MiniLM (mean pooling), distilled with
``train --distill`` (:mod:`bertprobe.training.distill`); every student row starts from a cold
cache of its own, so its time includes the teacher's labelling of every text it teaches.

Rows:

- ``finetune``: the student fine-tuned on the gold labels only (``--finetune``, the
  baseline); run only when asked (``--rows finetune``, 8 minutes), else its figure is read from
  ``bench/results/finetune_full.json``, where ``make bench-finetune`` put it;
- ``distill``: distilled on the training texts (the teacher's probabilities mixed half and half
  with the gold labels, 4 epochs);
- ``distill-augment``: the same, with ``--augment`` altered copies of each training text
  (masked, replaced and cut words: Tang et al. 2019) labelled by the teacher too, for
  ``--augment-epochs`` epochs; no dev or test text is ever altered or taught;
- ``int8``: the last student row's model with ``--backend onnx-int8`` (export time apart);
- ``rate``: texts a second, on the test set with the cache off, of that student in int8
  against the teacher (torch, its own default), in one process, one after the other;
- ``multilabel``: a label-set teacher (mpnet, two labels a text as in
  ``bench/multilabel_bench.py``) on ``--ml-train`` training sentences, its student, and their
  agreement (the same label set) on ``--ml-test`` test sentences.

Prints a markdown table; writes bench/results/distill.json.

    .venv/bin/python bench/distill_bench.py [--teacher models/mpnet] [--augment 3]
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

sys.path.insert(0, str(Path(__file__).resolve().parent))
from encoders_bench import fetch_mpnet  # noqa: E402
from multilabel_bench import two_labels  # noqa: E402

from bertprobe import (  # noqa: E402
    Classifier,
    DistillOptions,
    EncoderOptions,
    FinetuneOptions,
    RunOptions,
    TrainOptions,
    train,
)
from bertprobe.data.files import LabelledTexts  # noqa: E402
from bertprobe.datasets import load_sst2  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results"
ROWS = ("finetune", "distill", "distill-augment", "int8", "rate", "multilabel")
DEFAULT_ROWS = ("distill", "distill-augment", "int8", "rate", "multilabel")


def student_encoding(cache: Path) -> EncoderOptions:
    return EncoderOptions("minilm", pooling="mean", run=RunOptions(cache_dir=cache))


def teacher_model(given: str | None, mpnet: str, work: Path) -> tuple[Classifier, dict]:
    """The SST-2 teacher: the folder given, or mpnet --auto trained now."""
    if given:
        model = Classifier.load(given)
        return model, {"folder": given, "trained_here": False}
    start = time.perf_counter()
    result = train(
        str(ROOT / "data/sst2/train.tsv"),
        test=str(ROOT / "data/sst2/test.tsv"),
        encoding=EncoderOptions(mpnet, run=RunOptions(cache_dir=work / "cache-teacher")),
        options=TrainOptions(auto=True),
        out=work / "teacher",
    )
    return result.model, {
        "folder": str(work / "teacher"),
        "trained_here": True,
        "seconds": time.perf_counter() - start,
    }


def student_row(name: str, teacher: Classifier, work: Path, **options) -> dict:
    """One student, from a cold cache: its test accuracy, agreement and times."""
    out = work / name
    start = time.perf_counter()
    tuning = options.pop("tuning", FinetuneOptions())
    result = train(
        str(ROOT / "data/sst2/train.tsv"),
        test=str(ROOT / "data/sst2/test.tsv"),
        encoding=student_encoding(work / f"cache-{name}"),
        distill=DistillOptions(teacher=teacher, tuning=tuning, **options),
        out=out,
    )
    seconds = time.perf_counter() - start
    record = result.model.card["distill"]
    row = {
        "row": name,
        "folder": str(out),
        "test_accuracy": result.test_accuracy,
        "teacher_test_agreement": record["teacher_test_agreement"],
        "n_taught": record["n_taught"],
        "n_augmented": record["n_augmented"],
        "epochs": record["epochs_run"],
        "best_epoch": record["best_epoch"],
        "dev_accuracy": record["dev_accuracy"],
        "teacher_seconds": record["teacher_seconds"],
        "student_seconds": record["seconds"],
        "seconds": seconds,
    }
    print(json.dumps(row), flush=True)
    return row


def finetune_row(work: Path) -> dict:
    start = time.perf_counter()
    result = train(
        str(ROOT / "data/sst2/train.tsv"),
        test=str(ROOT / "data/sst2/test.tsv"),
        encoding=student_encoding(work / "cache-finetune"),
        finetune=FinetuneOptions(),
    )
    return {
        "row": "finetune",
        "test_accuracy": result.test_accuracy,
        "seconds": time.perf_counter() - start,
        "source": "this run",
    }


def finetune_from_results() -> dict:
    recorded = json.loads((RESULTS / "finetune_full.json").read_text())
    first = recorded["rows"][0]
    return {
        "row": "finetune",
        "test_accuracy": first["test_correct"] / recorded["n_test"],
        "seconds": first["seconds"],
        "source": f"bench/results/finetune_full.json ({recorded['date']})",
    }


def int8_row(student: Path) -> dict:
    model = Classifier.load(student)
    test = load_sst2("test")
    int8 = RunOptions(backend="onnx-int8", use_cache=False)
    start = time.perf_counter()
    model.predict_proba(test.texts[:8], int8)  # exports and quantizes once
    export_seconds = time.perf_counter() - start
    evaluation = model.evaluate(test.texts, test.labels or [], int8)
    return {
        "row": "int8",
        "folder": str(student),
        "test_accuracy": evaluation.accuracy,
        "export_seconds": export_seconds,
    }


def rate_row(student: Path, teacher: Classifier) -> dict:
    """Texts a second of the student in int8 and of the teacher, same texts, cache off."""
    model = Classifier.load(student)
    texts = load_sst2("test").texts
    rates = {}
    for who, m, run in (
        ("student_int8", model, RunOptions(backend="onnx-int8", use_cache=False)),
        ("teacher", teacher, RunOptions(use_cache=False)),
    ):
        m.predict_proba(texts[:32], run)  # loaded, warm
        start = time.perf_counter()
        m.predict_proba(texts, run)
        rates[who] = len(texts) / (time.perf_counter() - start)
    return {
        "row": "rate",
        "n_texts": len(texts),
        "student_int8_texts_per_s": rates["student_int8"],
        "teacher_texts_per_s": rates["teacher"],
        "speedup": rates["student_int8"] / rates["teacher"],
    }


def two_label_set(split: str, n: int) -> LabelledTexts:
    data = load_sst2(split)
    texts = data.texts[:n]
    labels = [
        tuple(two_labels(t, int(y))) for t, y in zip(texts, (data.labels or [])[:n], strict=True)
    ]
    return LabelledTexts.from_lists(texts, labels, source=f"sst2 {split} (two labels)")


def multilabel_row(mpnet: str, work: Path, n_train: int, n_test: int) -> dict:
    train_set, test_set = two_label_set("train", n_train), two_label_set("test", n_test)
    options = TrainOptions(multi_label=True)
    teacher = train(
        train_set,
        test=test_set,
        encoding=EncoderOptions(
            mpnet, pooling="mean", run=RunOptions(cache_dir=work / "cache-ml-teacher")
        ),
        options=options,
        out=work / "ml-teacher",
    )
    start = time.perf_counter()
    student = train(
        train_set,
        test=test_set,
        encoding=student_encoding(work / "cache-ml-student"),
        options=options,
        distill=DistillOptions(teacher=teacher.model, augment=2),
        out=work / "ml-student",
    )
    plain = train(
        train_set,
        test=test_set,
        encoding=student_encoding(work / "cache-ml-student"),
        options=options,
    )
    return {
        "row": "multilabel",
        "n_train": n_train,
        "n_test": n_test,
        "teacher_subset_accuracy": teacher.test_accuracy,
        "student_subset_accuracy": student.test_accuracy,
        "probe_subset_accuracy": plain.test_accuracy,
        "teacher_test_agreement": student.model.card["distill"]["teacher_test_agreement"],
        "probe_teacher_agreement": plain.model.agreement(teacher.model, test_set.texts),
        "seconds": time.perf_counter() - start,
    }


def save(record: dict) -> None:
    """Write what is measured so far (each row as it ends: an interrupted run keeps them)."""
    (RESULTS / "distill.json").write_text(json.dumps(record, indent=2) + "\n")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", default=",".join(DEFAULT_ROWS))
    parser.add_argument("--teacher", help="an SST-2 teacher's model folder (else trained here)")
    parser.add_argument("--mpnet", help="all-mpnet-base-v2's folder (else fetched)")
    parser.add_argument("--augment", type=int, default=3)
    parser.add_argument("--augment-epochs", type=int, default=2)
    parser.add_argument("--ml-train", type=int, default=1000)
    parser.add_argument("--ml-test", type=int, default=500)
    parser.add_argument("--work", help="folder for the models (default: a temporary one)")
    args = parser.parse_args()
    rows = args.rows.split(",")
    unknown = set(rows) - set(ROWS)
    if unknown:
        raise SystemExit(f"--rows: unknown {sorted(unknown)}; choose from {', '.join(ROWS)}")
    mpnet = args.mpnet or str(fetch_mpnet())
    out: list[dict] = []
    record = {
        "date": datetime.now(UTC).date().isoformat(),
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, {platform.system()}",
        "command": "python bench/distill_bench.py " + " ".join(sys.argv[1:]),
        "augment": args.augment,
        "augment_epochs": args.augment_epochs,
        "rows": out,
    }
    with tempfile.TemporaryDirectory() as scratch:
        work = Path(args.work or scratch)
        work.mkdir(parents=True, exist_ok=True)
        teacher, teacher_record = teacher_model(args.teacher, mpnet, work)
        teacher_record["test_accuracy"] = teacher.card["metrics"].get("test_accuracy")
        record["teacher"] = teacher_record
        out.append(finetune_row(work) if "finetune" in rows else finetune_from_results())
        last_student = None
        if "distill" in rows:
            out.append(student_row("distill", teacher, work))
            last_student = Path(out[-1]["folder"])
            save(record)
        if "distill-augment" in rows:
            tuning = FinetuneOptions(epochs=args.augment_epochs)
            out.append(
                student_row("distill-augment", teacher, work, augment=args.augment, tuning=tuning)
            )
            last_student = Path(out[-1]["folder"])
            save(record)
        if last_student is not None and "int8" in rows:
            out.append(int8_row(last_student))
            print(json.dumps(out[-1]), flush=True)
            save(record)
        if last_student is not None and "rate" in rows:
            out.append(rate_row(last_student, teacher))
            print(json.dumps(out[-1]), flush=True)
            save(record)
        if "multilabel" in rows:
            out.append(multilabel_row(mpnet, work, args.ml_train, args.ml_test))
            print(json.dumps(out[-1]), flush=True)
    save(record)
    print(json.dumps(record, indent=2))


if __name__ == "__main__":
    main()
