"""Fine-tuning: the encoder's own weights trained with a classification head on the chosen
pooling, past what a probe on frozen features can reach.

The transformers :class:`~transformers.Trainer` does the training: AdamW, a linear schedule with
warmup, gradient clipping, length-grouped batches (little padding), an evaluation on the dev
rows after every epoch, checkpoints, and the best epoch's weights at the end. This module adds
what bertprobe needs around it: a dev share split off the training data (seeded, stratified),
a progress bar per epoch with the loss and texts per second, Ctrl-C that saves a checkpoint the
same command resumes from, and the tuned encoder written as a plain Hugging Face folder, which
the rest of bertprobe loads like any other encoder. :func:`bertprobe.train` with
``finetune=FinetuneOptions(...)`` then fits the usual probe on the tuned features.

Example:
    >>> from bertprobe import EncoderOptions, FinetuneOptions, train
    >>> result = train("data/sst2/train.tsv",
    ...                encoding=EncoderOptions("minilm", pooling="mean"),
    ...                finetune=FinetuneOptions(epochs=4),
    ...                out="models/sst2-tuned")  # doctest: +SKIP
    >>> result.finetune.dev_accuracy  # doctest: +SKIP
    0.9...
"""

from __future__ import annotations

import hashlib
import json
import math
import shutil
import sys
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from bertprobe.data import LabelledTexts, align_labels
from bertprobe.encode import EncoderOptions, check_device
from bertprobe.errors import BadInputError
from bertprobe.extras import needs_extra, require_extra


@dataclass(frozen=True)
class FinetuneOptions:
    """How the encoder is fine-tuned. Built once; checked when built.

    The batch size and the maximum length are the encoder options' (``EncoderOptions.run``
    and ``max_length``), the pooling the head reads is ``EncoderOptions.pooling``.

    Parameters
    ----------
    epochs : int
        Most passes over the training rows; the dev score after each picks the epoch kept.
    lr : float
        Peak learning rate of AdamW (reached after the warmup, then decayed linearly to 0).
    seed : int
        Seeds the dev split, the head's initialization, dropout and the batch order.
    dev : str or Path, optional
        A labelled file of dev rows; default: ``dev_share`` of the training rows.
    dev_share : float
        Share of the training rows held out (stratified by label) when no ``dev`` is given.
    warmup : float
        Share of the training steps over which the learning rate rises from 0.
    weight_decay : float
        AdamW's decoupled weight decay.
    bf16 : bool
        Mixed precision with bfloat16 (autocast). Faster only on hardware with bf16 arithmetic
        (recent GPUs; CPUs with AVX-512 BF16 or AMX).

    Examples
    --------
    >>> FinetuneOptions(epochs=2, lr=5e-5).lr
    5e-05
    """

    epochs: int = 4
    lr: float = 8e-5
    seed: int = 0
    dev: str | Path | None = None
    dev_share: float = 0.1
    warmup: float = 0.1
    weight_decay: float = 0.01
    bf16: bool = False

    def __post_init__(self) -> None:
        if self.epochs < 1:
            raise BadInputError(f"epochs={self.epochs}: train for at least 1 epoch")
        if not (math.isfinite(self.lr) and self.lr > 0):
            raise BadInputError(f"lr={self.lr}: give a positive learning rate, such as 5e-05")
        if not 0 < self.dev_share < 1:
            raise BadInputError(f"dev_share={self.dev_share}: give a share between 0 and 1")
        if not 0 <= self.warmup < 1:
            raise BadInputError(f"warmup={self.warmup}: give a share of the steps, 0 to 1")
        if not (math.isfinite(self.weight_decay) and self.weight_decay >= 0):
            raise BadInputError(f"weight_decay={self.weight_decay}: give 0 or more")


@dataclass
class FinetuneResult:
    """What :func:`finetune` did."""

    encoder_folder: Path
    epochs_run: int
    best_epoch: int
    dev_accuracy: float
    dev_history: list[float]
    n_train: int
    n_dev: int
    seconds: float
    resumed_from_step: int | None = None
    workdir: Path | None = field(default=None, repr=False)


class FinetuneInterrupted(KeyboardInterrupt):
    """Ctrl-C during fine-tuning: a checkpoint was saved; the same call resumes from it."""


def split_dev(
    train_set: LabelledTexts, options: FinetuneOptions, dev: LabelledTexts | None = None
) -> tuple[LabelledTexts, LabelledTexts]:
    """The rows to train on and the dev rows that choose the epoch (never the test rows):
    ``dev`` checked against the training labels, or a share of ``train_set``."""
    labels = list(train_set.labels or [])
    if dev is not None:
        align_labels(
            dev.labels or [], sorted(set(labels), key=str), dev.source
        )  # refuses a dev file sharing no label with the training data
        unknown = {str(y) for y in dev.labels or []} - {str(y) for y in labels}
        if unknown:
            raise BadInputError(
                f"{dev.source}: dev labels the training data lacks: "
                f"{', '.join(sorted(unknown))}; use dev rows of the training labels only"
            )
        return train_set, dev
    from sklearn.model_selection import train_test_split

    counts = Counter(labels)
    n_dev = math.ceil(options.dev_share * len(labels))
    if min(counts.values()) < 2 or n_dev < len(counts) or len(labels) - n_dev < len(counts):
        raise BadInputError(
            f"{train_set.source}: {len(labels)} rows are too few for a dev share of "
            f"{options.dev_share} (every class needs rows on both sides); add rows, raise "
            "dev_share=, or pass dev= a labelled file"
        )
    rows = np.arange(len(labels))
    train_rows, dev_rows = train_test_split(
        rows, test_size=n_dev, stratify=labels, random_state=options.seed
    )
    return _subset(train_set, sorted(train_rows), "train"), _subset(
        train_set, sorted(dev_rows), "dev"
    )


def _subset(data: LabelledTexts, rows: Sequence[int], part: str) -> LabelledTexts:
    labels = data.labels or []
    return LabelledTexts(
        texts=[data.texts[i] for i in rows],
        labels=[labels[i] for i in rows],
        source=f"{data.source} ({part} share)",
        sha256=data.sha256,
        line_numbers=[data.line_numbers[i] for i in rows],
    )


def finetune(
    train_rows: LabelledTexts,
    dev_rows: LabelledTexts,
    *,
    encoding: EncoderOptions,
    options: FinetuneOptions = FinetuneOptions(),
    workdir: str | Path,
) -> FinetuneResult:
    """Fine-tune ``encoding.encoder`` on ``train_rows``, choosing the epoch on ``dev_rows``.

    Checkpoints go under ``workdir``; a call that finds one there (an earlier run interrupted
    with Ctrl-C) resumes from it. The tuned encoder is written to ``workdir/encoder`` with a
    record of the run beside it; a call that finds both (the probe's training was interrupted
    after fine-tuning ended) uses them instead of fine-tuning again.
    """
    workdir = Path(workdir)
    done = _finished(workdir)
    if done is not None:
        return done
    require_extra("finetune")
    with needs_extra("finetune"):
        import accelerate  # noqa: F401  (the Trainer needs it; fail now with the extra's name)
    import torch
    from transformers import (
        AutoModel,
        AutoTokenizer,
        DataCollatorWithPadding,
        Trainer,
        TrainingArguments,
    )
    from transformers.trainer_callback import PrinterCallback, ProgressCallback
    from transformers.trainer_utils import get_last_checkpoint
    from transformers.utils import logging as hf_logging

    from bertprobe._tuning import EpochBars, PooledClassifier, StopOnInterrupt

    hf_logging.set_verbosity_error()
    start = time.perf_counter()
    device = check_device(encoding.run.device)
    checkpoints = workdir / "checkpoints"
    classes = sorted(set(train_rows.labels or []), key=str)
    index = {str(c): i for i, c in enumerate(classes)}
    base = encoding.load()  # resolves the name, checks the folder, gives the max length
    max_length = encoding.max_length or base.max_length
    tokenizer = AutoTokenizer.from_pretrained(base.ref.path, use_fast=True)
    torch.manual_seed(options.seed)
    body = AutoModel.from_pretrained(base.ref.path)
    model = PooledClassifier(body, encoding.pooling, len(classes))

    def rows(data: LabelledTexts) -> _Rows:
        ids = tokenizer(list(data.texts), truncation=True, max_length=max_length, padding=False)[
            "input_ids"
        ]
        return _Rows(ids, [index[str(y)] for y in data.labels or []])

    train_data, dev_data = rows(train_rows), rows(dev_rows)
    batch_size = encoding.run.batch_size
    args = TrainingArguments(
        output_dir=str(checkpoints),
        num_train_epochs=options.epochs,
        learning_rate=options.lr,
        weight_decay=options.weight_decay,
        lr_scheduler_type="linear",
        max_grad_norm=1.0,
        per_device_train_batch_size=batch_size,
        per_device_eval_batch_size=2 * batch_size,
        eval_strategy="epoch",
        save_strategy="epoch",
        save_total_limit=1,
        save_only_model=False,
        load_best_model_at_end=True,
        metric_for_best_model="accuracy",
        greater_is_better=True,
        logging_strategy="steps",
        logging_steps=10,
        report_to="none",
        seed=options.seed,
        data_seed=options.seed,
        bf16=options.bf16,
        use_cpu=device.type == "cpu",
        disable_tqdm=True,
        dataloader_num_workers=0,
        remove_unused_columns=False,
        **_across_releases(TrainingArguments, options.warmup),
    )
    stop = StopOnInterrupt()
    bars = EpochBars(batch_size, enabled=encoding.run.progress)
    trainer = Trainer(
        model=model,
        args=args,
        train_dataset=train_data,
        eval_dataset=dev_data,
        data_collator=DataCollatorWithPadding(tokenizer),
        compute_metrics=_accuracy,
        callbacks=[stop, bars],
    )
    trainer.remove_callback(PrinterCallback)  # it prints log dicts on stdout
    trainer.remove_callback(ProgressCallback)  # EpochBars shows one bar per epoch instead
    last = get_last_checkpoint(str(checkpoints)) if checkpoints.is_dir() else None
    resumed = int(Path(last).name.split("-")[-1]) if last else None
    if last and encoding.run.progress:
        print(f"resuming fine-tuning from {last}", file=sys.stderr)
    with stop.catching_ctrl_c():
        trainer.train(resume_from_checkpoint=last)
    if stop.requested:
        raise FinetuneInterrupted(
            f"fine-tuning interrupted; a checkpoint is in {checkpoints}, and the same command "
            "resumes from it"
        )
    history = [
        float(entry["eval_accuracy"])
        for entry in trainer.state.log_history
        if "eval_accuracy" in entry
    ]
    best = trainer.state.best_metric
    best_epoch = 1 + int(np.argmax(history)) if history else options.epochs
    folder = workdir / "encoder"
    if folder.exists():
        shutil.rmtree(folder)
    model.body.save_pretrained(folder, safe_serialization=True)
    tokenizer.save_pretrained(folder)
    shutil.rmtree(checkpoints, ignore_errors=True)  # the tuned weights are in encoder/ now
    result = FinetuneResult(
        encoder_folder=folder,
        epochs_run=len(history),
        best_epoch=best_epoch,
        dev_accuracy=float(best) if best is not None else float("nan"),
        dev_history=history,
        n_train=len(train_rows),
        n_dev=len(dev_rows),
        seconds=time.perf_counter() - start,
        resumed_from_step=resumed,
        workdir=workdir,
    )
    record = {k: v for k, v in asdict(result).items() if k not in ("encoder_folder", "workdir")}
    (workdir / FINISHED).write_text(json.dumps(record), encoding="utf-8")
    return result


# Written beside the tuned encoder once fine-tuning has finished: the run's record.
FINISHED = "finetuned.json"


def _finished(workdir: Path) -> FinetuneResult | None:
    """The record of a fine-tuning run that finished in ``workdir``, if there is one."""
    try:
        record = json.loads((workdir / FINISHED).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if not (workdir / "encoder" / "config.json").is_file():
        return None
    return FinetuneResult(**record, encoder_folder=workdir / "encoder", workdir=workdir)


def workdir_for(
    cache_dir: Path,
    train_rows: LabelledTexts,
    dev_rows: LabelledTexts,
    encoding: EncoderOptions,
    options: FinetuneOptions,
) -> Path:
    """Where a fine-tuning job keeps its checkpoints: one folder per job, so the same command
    finds (and resumes) its own and never another's."""
    digest = hashlib.sha256()
    for data in (train_rows, dev_rows):
        digest.update(json.dumps([data.texts, data.labels], default=str).encode())
    job = {
        "encoder": encoding.load().ref.fingerprint,
        "pooling": encoding.pooling,
        "max_length": encoding.max_length,
        "batch_size": encoding.run.batch_size,
        "options": {k: str(v) for k, v in asdict(options).items()},
    }
    digest.update(json.dumps(job, sort_keys=True).encode())
    return cache_dir / "finetune" / digest.hexdigest()[:24]


def _across_releases(arguments: type, warmup: float) -> dict[str, Any]:
    """The two options whose names changed in transformers 5: length-grouped batches (less
    padding) and the warmup as a share of the steps."""
    import inspect

    accepted = inspect.signature(arguments).parameters
    grouped = (
        {"train_sampling_strategy": "group_by_length"}
        if "train_sampling_strategy" in accepted
        else {"group_by_length": True}
    )
    ramp = {"warmup_ratio": warmup} if "warmup_ratio" in accepted else {"warmup_steps": warmup}
    return {**grouped, **ramp}


class _Rows:
    """Token ids and label indices, as the Trainer's data loader takes them."""

    def __init__(self, ids: list[list[int]], labels: list[int]) -> None:
        self.ids, self.labels = ids, labels

    def __len__(self) -> int:
        return len(self.ids)

    def __getitem__(self, i: int) -> dict[str, Any]:
        return {"input_ids": self.ids[i], "labels": self.labels[i]}


def _accuracy(prediction: Any) -> dict[str, float]:
    logits = prediction.predictions
    logits = logits[0] if isinstance(logits, tuple) else logits
    return {"accuracy": float(np.mean(np.argmax(logits, axis=-1) == prediction.label_ids))}
