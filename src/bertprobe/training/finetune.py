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

With ``EncoderOptions(long="chunk")`` the encoder is tuned on what the probe will read: every
window of a text (the same windows as embedding makes: ``max_length``, ``stride``), each with
its text's label. The dev rows are still split off by text, so a text's windows are all on one
side, and dev accuracy is per text: the mean of its windows' predicted probabilities (the
probe's default ``window_pool="mean"`` pools vectors, not probabilities, but both weigh every
window alike; the mean of probabilities, unlike the max, is a calibrated text prediction for the
log-loss that breaks ties between epochs).

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

from bertprobe.core.errors import BadInputError, EncoderNotFoundError
from bertprobe.core.extras import needs_extra, require_extra
from bertprobe.data.files import LabelledTexts, align_labels
from bertprobe.encoders.encode import (
    EncoderOptions,
    check_device,
    default_stride,
    resolve_encoder,
    token_limit,
)
from bertprobe.encoders.tokens import check_stride, token_windows, truncated_ids

# Chosen on SST-2 dev (bench/finetune_fewshot_dev.py); the README gives the figures.
DEFAULT_EPOCHS = 4
MIN_STEPS = 250
# Past this many epochs, the dev rows are scored every few epochs (each score saves a checkpoint).
MOST_EVALUATIONS = 25


@dataclass(frozen=True)
class FinetuneOptions:
    """How the encoder is fine-tuned. Built once; checked when built.

    The batch size and the maximum length are the encoder options' (``EncoderOptions.run``
    and ``max_length``), the pooling the head reads is ``EncoderOptions.pooling``; with
    ``EncoderOptions.long="chunk"`` the encoder is tuned on windows of ``stride`` overlap, each
    with its text's label, and dev accuracy is per text (see :func:`finetune`).

    Parameters
    ----------
    epochs : int, optional
        Most passes over the training rows; the dev score after each picks the epoch kept.
        Default: 4, or more when the training rows are few, so that training takes at least
        ``min_steps`` optimizer steps.
    min_steps : int
        With ``epochs`` left to its default: the fewest optimizer steps a run takes (on
        SST-2 dev, 128 sentences made 16 steps in 4 epochs, too few to move the encoder).
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

    epochs: int | None = None
    min_steps: int = MIN_STEPS
    lr: float = 8e-5
    seed: int = 0
    dev: str | Path | None = None
    dev_share: float = 0.1
    warmup: float = 0.1
    weight_decay: float = 0.01
    bf16: bool = False

    def epochs_for(self, n_train: int, batch_size: int) -> int:
        """The epochs a run over ``n_train`` rows takes: ``epochs`` when given, else
        ``DEFAULT_EPOCHS`` or as many more as ``min_steps`` needs.

        >>> FinetuneOptions().epochs_for(6228, 32), FinetuneOptions().epochs_for(115, 32)
        (4, 63)
        """
        if self.epochs is not None:
            return self.epochs
        steps_per_epoch = math.ceil(n_train / batch_size)
        return max(DEFAULT_EPOCHS, math.ceil(self.min_steps / steps_per_epoch))

    def __post_init__(self) -> None:
        if self.epochs is not None and self.epochs < 1:
            raise BadInputError(f"epochs={self.epochs}: train for at least 1 epoch")
        if self.min_steps < 0:
            raise BadInputError(f"min_steps={self.min_steps}: give 0 or more steps")
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
    n_train: int  # texts
    n_dev: int  # texts
    seconds: float
    resumed_from_step: int | None = None
    dev_epochs: list[int] = field(default_factory=list)  # the epoch of each dev score
    # long="chunk": the windows trained on and scored (None: one truncated row per text)
    n_train_windows: int | None = None
    n_dev_windows: int | None = None
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

    ``encoding.long="chunk"``: every window of a text (``max_length``, ``stride``: the windows
    embedding makes) is a training row with its text's label; ``dev_rows`` are split by text,
    so a text's windows are all on one side, and the dev accuracy that picks the epoch is per
    text, from the mean of its windows' predicted probabilities. ``n_train`` and ``n_dev``
    count texts; ``n_train_windows`` and ``n_dev_windows`` the windows.
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

    from bertprobe.training._tuning import EpochBars, PooledClassifier, StopOnInterrupt

    hf_logging.set_verbosity_error()
    start = time.perf_counter()
    device = check_device(encoding.run.device)
    checkpoints = workdir / "checkpoints"
    classes = sorted(set(train_rows.labels or []), key=str)
    index = {str(c): i for i, c in enumerate(classes)}
    base = resolve_encoder(encoding.encoder)
    torch.manual_seed(options.seed)  # the head's initialization
    try:
        tokenizer = AutoTokenizer.from_pretrained(base.path, use_fast=True)
        body = AutoModel.from_pretrained(base.path)
    except (OSError, ValueError, KeyError) as exc:
        raise EncoderNotFoundError(
            f"encoder folder {base.path} could not be loaded ({str(exc).splitlines()[0][:160]})"
        ) from None
    limit = token_limit(body.config, tokenizer)
    max_length = encoding.max_length or limit
    if max_length > limit:
        raise BadInputError(
            f"max length {max_length} exceeds what {base.name} takes ({limit} tokens); "
            "use a smaller max_length="
        )
    chunking = encoding.long == "chunk"
    stride = default_stride(max_length) if encoding.stride is None else encoding.stride
    if chunking:
        check_stride(tokenizer, base.name, max_length, stride)
    model = PooledClassifier(body, encoding.pooling, len(classes))

    def rows(data: LabelledTexts) -> _Rows:
        labels = [index[str(y)] for y in data.labels or []]
        if not chunking:  # the text as the encoder reads it when truncating
            return _Rows(truncated_ids(tokenizer, data.texts, max_length)[0], labels)
        ids, owner = token_windows(tokenizer, data.texts, max_length, stride)
        return _Rows(ids, [labels[t] for t in owner], owner)

    train_data, dev_data = rows(train_rows), rows(dev_rows)
    batch_size = encoding.run.batch_size
    steps_per_epoch = math.ceil(len(train_data) / batch_size)
    epochs = options.epochs_for(len(train_data), batch_size)
    every = math.ceil(epochs / MOST_EVALUATIONS)
    epochs = every * math.ceil(epochs / every)  # the last epoch is evaluated too
    args = TrainingArguments(
        output_dir=str(checkpoints),
        num_train_epochs=epochs,
        learning_rate=options.lr,
        weight_decay=options.weight_decay,
        lr_scheduler_type="linear",
        max_grad_norm=1.0,
        per_device_train_batch_size=batch_size,
        per_device_eval_batch_size=2 * batch_size,
        # every epoch, or every few when they are many, since each evaluation saves a checkpoint
        eval_strategy="steps",
        eval_steps=every * steps_per_epoch,
        save_strategy="steps",
        save_steps=every * steps_per_epoch,
        save_total_limit=1,
        save_only_model=False,
        load_best_model_at_end=True,
        metric_for_best_model="selection",
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
        # windows: each row's text index rides along as a second label (see _dev_scores)
        label_names=["labels", "text"] if chunking else None,
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
        compute_metrics=_dev_scores,
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
    evaluations = [entry for entry in trainer.state.log_history if "eval_accuracy" in entry]
    history = [float(entry["eval_accuracy"]) for entry in evaluations]
    best = int(np.argmax([entry["eval_selection"] for entry in evaluations]))
    folder = workdir / "encoder"
    if folder.exists():
        shutil.rmtree(folder)
    model.body.save_pretrained(folder, safe_serialization=True)
    tokenizer.save_pretrained(folder)
    shutil.rmtree(checkpoints, ignore_errors=True)  # the tuned weights are in encoder/ now
    result = FinetuneResult(
        encoder_folder=folder,
        epochs_run=round(trainer.state.epoch or 0),
        best_epoch=round(evaluations[best]["epoch"]),
        dev_accuracy=history[best],
        dev_history=history,
        dev_epochs=[round(entry["epoch"]) for entry in evaluations],
        n_train=len(train_rows),
        n_dev=len(dev_rows),
        seconds=time.perf_counter() - start,
        resumed_from_step=resumed,
        workdir=workdir,
        n_train_windows=len(train_data) if chunking else None,
        n_dev_windows=len(dev_data) if chunking else None,
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
        "encoder": resolve_encoder(encoding.encoder).fingerprint,
        "pooling": encoding.pooling,
        "max_length": encoding.max_length,
        "batch_size": encoding.run.batch_size,
        "options": {k: str(v) for k, v in asdict(options).items()},
    }
    if encoding.long == "chunk":  # only then: truncating jobs keep the folders they had
        job.update(long=encoding.long, stride=encoding.stride)
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
    """Token ids and label indices, as the Trainer's data loader takes them; with ``owner``
    (windows), the index of the text each row is of, as ``text``."""

    def __init__(
        self, ids: list[list[int]], labels: list[int], owner: list[int] | None = None
    ) -> None:
        self.ids, self.labels, self.owner = ids, labels, owner

    def __len__(self) -> int:
        return len(self.ids)

    def __getitem__(self, i: int) -> dict[str, Any]:
        row = {"input_ids": self.ids[i], "labels": self.labels[i]}
        if self.owner is not None:
            row["text"] = self.owner[i]
        return row


def _dev_scores(prediction: Any) -> dict[str, float]:
    """Dev accuracy, and the score that picks the epoch kept: the accuracy, ties broken by the
    lower log-loss (a few dev rows tie often, and the Trainer would keep the earliest epoch).

    Rows that are windows come with their text's index (``label_ids`` is then ``(labels,
    texts)``, in whatever order the Trainer evaluated them): each text is scored once, by the
    mean of its windows' predicted probabilities.
    """
    from scipy.special import log_softmax

    logits = prediction.predictions
    logits = logits[0] if isinstance(logits, tuple) else logits
    if isinstance(prediction.label_ids, tuple | list):
        window_labels, texts = (np.asarray(a) for a in prediction.label_ids)
        _, text_of = np.unique(texts, return_inverse=True)
        probabilities = np.zeros((int(text_of.max()) + 1, logits.shape[-1]))
        np.add.at(probabilities, text_of, np.exp(log_softmax(logits, axis=-1)))
        probabilities /= np.bincount(text_of)[:, None]
        labels = np.zeros(len(probabilities), dtype=int)
        labels[text_of] = window_labels  # a text's windows share its label
        log_probabilities = np.log(np.clip(probabilities, 1e-12, None))
    else:
        labels = np.asarray(prediction.label_ids)
        log_probabilities = log_softmax(logits, axis=-1)
    accuracy = float(np.mean(np.argmax(log_probabilities, axis=-1) == labels))
    log_loss = float(-np.mean(log_probabilities[np.arange(len(labels)), labels]))
    # tanh(loss) < 1, over (rows + 1): less than one row's worth of accuracy, so it only
    # orders epochs of equal accuracy
    return {"accuracy": accuracy, "selection": accuracy - np.tanh(log_loss) / (len(labels) + 1)}
