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

With the label-set target (several labels per text: see :func:`finetune` and
:mod:`bertprobe.training.target`), the head has one sigmoid output per label, trained with binary
cross-entropy, and the epoch is chosen by the dev micro F1 at threshold 0.5, ties broken by the
lower mean binary cross-entropy. The dev rows are a seeded shuffle of the texts (label sets cannot
be stratified in general), and with ``long="chunk"`` every window carries its text's label set and
dev texts are scored by the mean of their windows' probabilities, label by label.

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
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from bertprobe.core.errors import BadInputError, EncoderNotFoundError
from bertprobe.core.extras import needs_extra, require_extra
from bertprobe.data.files import LabelledTexts
from bertprobe.encoders.backends import check_device
from bertprobe.encoders.encoder import token_limit
from bertprobe.encoders.options import EncoderOptions, default_stride
from bertprobe.encoders.tokens import check_stride, token_windows, truncated_ids
from bertprobe.heads.decision import SETS_KEY
from bertprobe.training.callbacks import TrainingCallback
from bertprobe.training.target import ONE_LABEL, Target

# Chosen on SST-2 dev (bench/finetune_fewshot_dev.py); docs/benchmarks.md gives the figures.
DEFAULT_EPOCHS = 4
MIN_STEPS = 250
# Past this many epochs, the dev rows are scored every few epochs (each score saves a checkpoint).
MOST_EVALUATIONS = 25


def check_patience(patience: int | None) -> None:
    """``patience`` is None (no early stopping) or at least one evaluation."""
    if patience is not None and patience < 1:
        raise BadInputError(
            f"patience={patience}: give 1 or more evaluations without improvement, or leave "
            "it out to run every epoch",
            param="patience",
        )


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
        Share of the training rows held out when no ``dev`` is given: stratified by label, or
        for label sets (several labels per text) a seeded shuffle of the texts.
    warmup : float
        Share of the training steps over which the learning rate rises from 0.
    weight_decay : float
        AdamW's decoupled weight decay.
    bf16 : bool
        Mixed precision with bfloat16 (autocast). Faster only on hardware with bf16 arithmetic
        (recent GPUs; CPUs with AVX-512 BF16 or AMX).
    patience : int, optional
        Stop once this many dev evaluations in a row have not beaten the best one (early
        stopping); the best epoch's weights are kept either way. Default: run every epoch.

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
    patience: int | None = None

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
            raise BadInputError(f"epochs={self.epochs}: train for at least 1 epoch", param="epochs")
        if self.min_steps < 0:
            raise BadInputError(
                f"min_steps={self.min_steps}: give 0 or more steps", param="min_steps"
            )
        if not (math.isfinite(self.lr) and self.lr > 0):
            raise BadInputError(
                f"lr={self.lr}: give a positive learning rate, such as 5e-05", param="lr"
            )
        if not 0 < self.dev_share < 1:
            raise BadInputError(
                f"dev_share={self.dev_share}: give a share between 0 and 1", param="dev_share"
            )
        if not 0 <= self.warmup < 1:
            raise BadInputError(
                f"warmup={self.warmup}: give a share of the steps, 0 to 1", param="warmup"
            )
        if not (math.isfinite(self.weight_decay) and self.weight_decay >= 0):
            raise BadInputError(
                f"weight_decay={self.weight_decay}: give 0 or more", param="weight_decay"
            )
        check_patience(self.patience)

    # --- the encoder-tuning protocol the pipeline's adapt stage calls -------------------------
    # (:class:`~bertprobe.training.contrastive.ContrastiveOptions` answers the same three)

    def split(
        self,
        train_set: LabelledTexts,
        dev: LabelledTexts | None,
        target: Target = ONE_LABEL,
        classes: Sequence[Any] = (),
    ) -> tuple[LabelledTexts, LabelledTexts | None]:
        """The rows to tune on and the dev rows that choose the epoch (the target's split:
        stratified by label, or a shuffle of label sets)."""
        return target.split_dev(train_set, self, dev, classes)

    def tune(
        self,
        train_rows: LabelledTexts,
        dev_rows: LabelledTexts | None,
        *,
        encoding: EncoderOptions,
        workdir: Path,
        target: Target = ONE_LABEL,
        classes: Sequence[Any] = (),
        pool: LabelledTexts | None = None,
        callbacks: Sequence[TrainingCallback] = (),
    ) -> FinetuneResult:
        """:func:`finetune` with these options (``pool``, texts without labels: not read)."""
        assert dev_rows is not None  # split() always makes dev rows
        return finetune(
            train_rows,
            dev_rows,
            encoding=encoding,
            options=self,
            workdir=workdir,
            target=target,
            classes=classes,
            callbacks=callbacks,
        )

    #: The card's key for this tuning's record, and how the tuned encoder is named.
    card_key: ClassVar[str] = "finetune"
    tuned_as: ClassVar[str] = "fine-tuned"

    def job_record(self) -> dict[str, str]:
        """What tells this tuning's job folder apart (see :func:`workdir_for`)."""
        return job_options(self)

    def card_record(self, tuned: FinetuneResult) -> dict[str, Any]:
        """What the card says of the fine-tuning: the options, the dev scores, the time."""
        return {
            "epochs": self.epochs,
            "min_steps": self.min_steps,
            "lr": self.lr,
            "seed": self.seed,
            "warmup": self.warmup,
            "weight_decay": self.weight_decay,
            "bf16": self.bf16,
            "patience": self.patience,
            "stopped_early": tuned.stopped_early,
            "dev": str(self.dev) if self.dev is not None else f"{self.dev_share} of train",
            "n_train": tuned.n_train,
            "n_dev": tuned.n_dev,
            # Long texts in windows: each window was a training row with its text's label.
            **(
                {"n_train_windows": tuned.n_train_windows, "n_dev_windows": tuned.n_dev_windows}
                if tuned.n_train_windows is not None
                else {}
            ),
            "epochs_run": tuned.epochs_run,
            "best_epoch": tuned.best_epoch,
            "dev_accuracy": tuned.dev_accuracy,
            "dev_history": tuned.dev_history,
            "dev_epochs": tuned.dev_epochs,
            "loss_history": tuned.loss_history,
            **(
                {
                    SETS_KEY: True,
                    "dev_f1_micro": tuned.dev_f1_micro,
                    "dev_f1_history": tuned.dev_f1_history,
                }
                if tuned.label_sets
                else {}
            ),
            "seconds": tuned.seconds,
        }


@dataclass
class FinetuneResult:
    """What :func:`finetune` did.

    ``dev_accuracy`` and ``dev_history`` (one score per ``dev_epochs``) are the share of dev
    texts predicted right; for label sets (``label_sets``) that is the exact-match (subset)
    accuracy, and the epoch kept is the one of the best ``dev_f1_history`` (micro F1 at 0.5).
    """

    encoder_folder: Path
    epochs_run: int
    best_epoch: int
    dev_accuracy: float | None  # None: no dev rows (contrastive tuning without a dev file)
    dev_history: list[float]
    n_train: int  # texts
    n_dev: int  # texts
    seconds: float
    resumed_from_step: int | None = None
    dev_epochs: list[int] = field(default_factory=list)  # the epoch of each dev score
    # long="chunk": the windows trained on and scored (None: one truncated row per text)
    n_train_windows: int | None = None
    n_dev_windows: int | None = None
    # label sets: one sigmoid output per label; the dev micro F1 at 0.5 chose the epoch
    dev_f1_micro: float | None = None
    dev_f1_history: list[float] | None = None
    # what the encoder was tuned for: "classification" (a head on the labels, this module) or
    # "contrastive" (pairs of texts, :mod:`bertprobe.training.contrastive`: no head, and dev
    # scores only with a dev file)
    objective: str = "classification"
    n_pairs: int | None = None  # contrastive: the pairs trained on
    # distillation (bertprobe.training.distill): the texts the teacher labelled, the altered
    # copies among them, the teacher's time (0 when read from the cache), and the student's
    # agreement with the teacher on the test set (set once the test set is scored)
    n_taught: int | None = None
    n_augmented: int | None = None
    teacher_seconds: float | None = None
    teacher_test_agreement: float | None = None
    # early stopping: whether patience ran out before the last epoch planned (None: not known,
    # a record written before 0.3)
    stopped_early: bool | None = None
    # the mean training loss of each epoch, in order (what the report's curve plots)
    loss_history: list[float] = field(default_factory=list)
    workdir: Path | None = field(default=None, repr=False)

    @property
    def label_sets(self) -> bool:
        """Whether the encoder was tuned on label sets (the dev F1 chose the epoch)."""
        return self.dev_f1_history is not None


class FinetuneInterrupted(KeyboardInterrupt):
    """Ctrl-C during fine-tuning: a checkpoint was saved; the same call resumes from it."""


def finetune(
    train_rows: LabelledTexts,
    dev_rows: LabelledTexts,
    *,
    encoding: EncoderOptions,
    options: FinetuneOptions = FinetuneOptions(),
    workdir: str | Path,
    target: Target = ONE_LABEL,
    classes: Sequence[Any] = (),
    taught: Taught | None = None,
    callbacks: Sequence[TrainingCallback] = (),
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

    ``target`` (:mod:`bertprobe.training.target`) says what a label is. One label a text (the
    default): a softmax head over the labels the rows hold. Label sets
    (:data:`~bertprobe.training.target.LABEL_SETS`): ``classes`` are the label names in the
    order of the head's outputs (the multi-label probe's columns); the head has one sigmoid
    output per label, trained with binary cross-entropy, and the epoch kept has the best dev
    micro F1 at threshold 0.5, ties broken by the lower mean binary cross-entropy (see
    :func:`~bertprobe.training.target.dev_set_scores`); windows carry their text's label set.

    ``taught`` (distillation, :mod:`bertprobe.training.distill`): each row of ``train_rows`` is
    trained on the soft target it gives (a row of probabilities over ``taught.outputs``) at
    ``taught.temperature`` instead of its label; ``dev_rows`` keep their labels, so the epoch
    is still chosen by dev accuracy (or micro F1).

    ``callbacks`` (:mod:`bertprobe.training.callbacks`) hear the losses and dev scores as they
    come; with ``options.patience``, training stops once the dev score has not improved for
    that many evaluations (``stopped_early`` in the result).
    """
    workdir = Path(workdir)
    done = finished_or_ready(workdir)
    if done is not None:
        return done
    import torch
    from transformers import DataCollatorWithPadding

    from bertprobe.training._tuning import PooledClassifier

    start = time.perf_counter()
    device = check_device(encoding.run.device)
    checkpoints = workdir / "checkpoints"
    outputs = taught.outputs if taught is not None else target.tuning_outputs(train_rows, classes)
    torch.manual_seed(options.seed)  # the head's initialization
    base = load_base(encoding)
    tokenizer, chunking = base.tokenizer, base.stride is not None
    model = PooledClassifier(
        base.body,
        encoding.pooling,
        len(outputs),
        loss=target.tuning_loss,
        temperature=taught.temperature if taught is not None else 1.0,
    )

    def rows(data: LabelledTexts, given: list | None = None) -> _Rows:
        labels = given if given is not None else target.tuning_labels(data, outputs)
        ids, owner = base.units(data.texts)
        if owner is None:  # one truncated row per text
            return _Rows(ids, labels)
        return _Rows(ids, [labels[t] for t in owner], owner)

    train_data = rows(train_rows, taught.targets.tolist() if taught is not None else None)
    dev_data = rows(dev_rows)
    batch_size = encoding.run.batch_size
    steps_per_epoch = math.ceil(len(train_data) / batch_size)
    epochs = options.epochs_for(len(train_data), batch_size)
    every = math.ceil(epochs / MOST_EVALUATIONS)
    epochs = every * math.ceil(epochs / every)  # the last epoch is evaluated too
    args = _training_arguments(
        checkpoints,
        options,
        batch_size,
        epochs,
        every * steps_per_epoch,
        chunking,
        device,
        steps_per_epoch,
    )
    trainer, resumed = train_resumably(
        model,
        args,
        train_data,
        dev_data,
        collator=DataCollatorWithPadding(tokenizer),
        scores=target.dev_scores,
        encoding=encoding,
        what="distillation" if taught is not None else "fine-tuning",
        tuning="distill" if taught is not None else "finetune",
        callbacks=callbacks,
        patience=options.patience,
    )
    folder = save_tuned(model.body, tokenizer, workdir)
    result = FinetuneResult(
        encoder_folder=folder,
        epochs_run=round(trainer.state.epoch or 0),
        n_train=len(train_rows),
        n_dev=len(dev_rows),
        seconds=time.perf_counter() - start,
        resumed_from_step=resumed,
        workdir=workdir,
        n_train_windows=len(train_data) if chunking else None,
        n_dev_windows=len(dev_data) if chunking else None,
        stopped_early=stopped_early(trainer, epochs),
        loss_history=loss_history(trainer.state.log_history),
        **target.dev_record(trainer.state.log_history),
    )
    if taught is not None:
        result.objective = "distillation"
    return record_finished(result)


@dataclass(frozen=True)
class Taught:
    """What a teacher says of each training row (see :mod:`bertprobe.training.distill`): its
    soft target, a row of probabilities over ``outputs`` (already at ``temperature``, mixed with
    the row's own label where it has one), and the temperature the student's logits are read
    at in the loss."""

    outputs: list
    targets: np.ndarray
    temperature: float = 1.0


@dataclass
class TuningBase:
    """The encoder a tuning run starts from, loaded for training: its tokenizer and torch body,
    the token limit it is read at, and ``stride`` when long texts are read in windows
    (``long="chunk"``; None: truncated)."""

    ref: Any  # EncoderRef: the encoder as resolved (a hub one at its revision)
    tokenizer: Any
    body: Any
    max_length: int
    stride: int | None

    def units(self, texts: Sequence[str]) -> tuple[list[list[int]], list[int] | None]:
        """The rows the encoder is tuned on: each text's token ids as the encoder reads it when
        truncating (owner None), or every window of every text and the text each is of."""
        if self.stride is None:
            return truncated_ids(self.tokenizer, texts, self.max_length)[0], None
        return token_windows(self.tokenizer, texts, self.max_length, self.stride)


def load_base(encoding: EncoderOptions) -> TuningBase:
    """``encoding``'s encoder as a torch body to tune, with its tokenizer, its maximum length
    checked against what the model takes and, for ``long="chunk"``, the windows' stride."""
    from transformers import AutoModel, AutoTokenizer

    ref = encoding.resolve()  # a hub encoder at encoding.revision
    # ref.path is a local folder, already resolved at the pinned revision: these read files
    # and download nothing, so revision= has no place here.
    try:
        tokenizer = AutoTokenizer.from_pretrained(ref.path, use_fast=True)  # nosec B615
        body = AutoModel.from_pretrained(ref.path)  # nosec B615
    except (OSError, ValueError, KeyError) as exc:
        raise EncoderNotFoundError(
            f"encoder folder {ref.path} could not be loaded ({str(exc).splitlines()[0][:160]})"
        ) from None
    limit = token_limit(body.config, tokenizer)
    max_length = encoding.max_length or limit
    if max_length > limit:
        raise BadInputError(
            f"max length {max_length} exceeds what {ref.name} takes ({limit} tokens); "
            "use a smaller max_length=",
            param="max_length",
        )
    stride = None
    if encoding.long == "chunk":
        stride = default_stride(max_length) if encoding.stride is None else encoding.stride
        check_stride(tokenizer, ref.name, max_length, stride)
    return TuningBase(ref, tokenizer, body, max_length, stride)


def finished_or_ready(workdir: Path) -> FinetuneResult | None:
    """The record of a tuning run that finished in ``workdir``; else None, once the tools a run
    needs are checked (the finetune extra: the Trainer needs accelerate) and transformers'
    logging is quieted."""
    done = finished_run(workdir)
    if done is not None:
        return done
    require_extra("finetune")
    with needs_extra("finetune"):
        import accelerate  # noqa: F401  (the Trainer needs it; fail now with the extra's name)
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()
    return None


def train_resumably(
    model: Any,
    args: Any,
    train_data: Any,
    dev_data: Any,
    *,
    collator: Any,
    scores: Any,
    encoding: EncoderOptions,
    what: str,
    tuning: str,
    callbacks: Sequence[TrainingCallback] = (),
    patience: int | None = None,
) -> tuple[Any, int | None]:
    """Train ``model`` with the transformers Trainer (a progress bar an epoch, no log dicts on
    stdout), resuming from the last checkpoint under ``args.output_dir`` if an earlier run left
    one; Ctrl-C saves a checkpoint and raises :class:`FinetuneInterrupted`. Returns the trainer
    and the step resumed from.

    ``callbacks`` hear what the Trainer logs and scores, as the tuning ``tuning``; one may stop
    it. ``patience``: stop once that many evaluations in a row did not beat the best dev score
    (transformers' EarlyStoppingCallback; the best checkpoint is the one kept either way)."""
    from transformers import EarlyStoppingCallback, Trainer
    from transformers.trainer_callback import PrinterCallback, ProgressCallback
    from transformers.trainer_utils import get_last_checkpoint

    from bertprobe.training._tuning import (
        MIN_IMPROVEMENT,
        EpochBars,
        StopOnInterrupt,
        ToCallbacks,
    )

    stop = StopOnInterrupt()
    told: list[Any] = [
        stop,
        EpochBars(encoding.run.batch_size, enabled=encoding.run.progress, patience=patience),
    ]
    if patience is not None:
        told.append(
            EarlyStoppingCallback(
                early_stopping_patience=patience, early_stopping_threshold=MIN_IMPROVEMENT
            )
        )
    if callbacks:
        told.append(ToCallbacks(tuning, callbacks))
    trainer = Trainer(
        model=model,
        args=args,
        train_dataset=train_data,
        eval_dataset=dev_data,
        data_collator=collator,
        compute_metrics=scores,
        callbacks=told,
    )
    trainer.remove_callback(PrinterCallback)  # it prints log dicts on stdout
    trainer.remove_callback(ProgressCallback)  # EpochBars shows one bar per epoch instead
    checkpoints = Path(args.output_dir)
    last = get_last_checkpoint(str(checkpoints)) if checkpoints.is_dir() else None
    resumed = int(Path(last).name.split("-")[-1]) if last else None
    if last and encoding.run.progress:
        print(f"resuming {what} from {last}", file=sys.stderr)
    with stop.catching_ctrl_c():
        trainer.train(resume_from_checkpoint=last)
    if stop.requested:
        raise FinetuneInterrupted(
            f"{what} interrupted; a checkpoint is in {checkpoints}, and the same command "
            "resumes from it"
        )
    return trainer, resumed


def job_options(options: Any) -> dict[str, str]:
    """A tuning's options as its job folder's record: every option as text, ``patience`` only
    when set (so jobs from before it existed keep their folders)."""
    return {k: str(v) for k, v in asdict(options).items() if not (k == "patience" and v is None)}


def stopped_early(trainer: Any, epochs: int) -> bool:
    """Whether training ended before the epochs planned (patience ran out, or a callback
    asked)."""
    return round(trainer.state.epoch or 0) < epochs


def loss_history(log_history: Sequence[dict[str, Any]]) -> list[float]:
    """The mean training loss of each epoch from the Trainer's log (logged every few steps)."""
    by_epoch: dict[int, list[float]] = {}
    for entry in log_history:
        if "loss" in entry and "epoch" in entry:
            epoch = max(1, math.ceil(entry["epoch"] - 1e-9))
            by_epoch.setdefault(epoch, []).append(float(entry["loss"]))
    return [sum(losses) / len(losses) for _, losses in sorted(by_epoch.items())]


# The Trainer logs the training loss every this many steps (callbacks and tracking hear it).
LOG_EVERY = 10


def common_arguments(
    checkpoints: Path,
    options: Any,
    batch_size: int,
    epochs: int,
    device: Any,
    steps_per_epoch: int = LOG_EVERY,
) -> dict[str, Any]:
    """The Trainer arguments every tuning shares: AdamW at ``options.lr`` with a linear
    schedule and ``options.warmup``, clipped gradients, one checkpoint kept, quiet logs (the
    loss every :data:`LOG_EVERY` steps, or every epoch's last step when epochs are shorter:
    each epoch has a loss to plot), seeded; ``options`` is a FinetuneOptions or a
    ContrastiveOptions."""
    from transformers import TrainingArguments

    return dict(
        output_dir=str(checkpoints),
        num_train_epochs=epochs,
        learning_rate=options.lr,
        weight_decay=options.weight_decay,
        lr_scheduler_type="linear",
        max_grad_norm=1.0,
        per_device_train_batch_size=batch_size,
        per_device_eval_batch_size=2 * batch_size,
        save_total_limit=1,
        greater_is_better=True,
        logging_strategy="steps",
        logging_steps=max(1, min(LOG_EVERY, steps_per_epoch)),
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


def save_tuned(body: Any, tokenizer: Any, workdir: Path) -> Path:
    """Write the tuned body and its tokenizer to ``workdir/encoder`` (a plain Hugging Face
    folder) and drop the checkpoints, whose weights it now holds."""
    folder = workdir / "encoder"
    if folder.exists():
        shutil.rmtree(folder)
    body.save_pretrained(folder, safe_serialization=True)
    tokenizer.save_pretrained(folder)
    shutil.rmtree(workdir / "checkpoints", ignore_errors=True)
    return folder


def record_finished(result: FinetuneResult) -> FinetuneResult:
    """Write the record of a finished tuning run beside its encoder (see :func:`finished_run`)."""
    assert result.workdir is not None
    record = {k: v for k, v in asdict(result).items() if k not in ("encoder_folder", "workdir")}
    (result.workdir / FINISHED).write_text(json.dumps(record), encoding="utf-8")
    return result


def _training_arguments(
    checkpoints: Path,
    options: FinetuneOptions,
    batch_size: int,
    epochs: int,
    evaluate_every: int,
    chunking: bool,
    device: Any,
    steps_per_epoch: int = LOG_EVERY,
) -> Any:
    """The Trainer's arguments: evaluated and saved every ``evaluate_every`` steps, the best
    dev score kept (``selection``, see :func:`~bertprobe.training.target.dev_scores`)."""
    from transformers import TrainingArguments

    return TrainingArguments(
        **common_arguments(checkpoints, options, batch_size, epochs, device, steps_per_epoch),
        # every epoch, or every few when they are many, since each evaluation saves a checkpoint
        eval_strategy="steps",
        eval_steps=evaluate_every,
        save_strategy="steps",
        save_steps=evaluate_every,
        save_only_model=False,
        load_best_model_at_end=True,
        metric_for_best_model="selection",
        # windows: each row's text index rides along as a second label (see dev_scores)
        label_names=["labels", "text"] if chunking else None,
    )


# Written beside the tuned encoder once fine-tuning has finished: the run's record.
FINISHED = "finetuned.json"


def finished_run(workdir: Path) -> FinetuneResult | None:
    """The record of a fine-tuning run that finished in ``workdir``, if there is one."""
    try:
        record = json.loads((workdir / FINISHED).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if not (workdir / "encoder" / "config.json").is_file():
        return None
    record.pop(SETS_KEY, None)  # written before 0.2; dev_f1_history says it now
    return FinetuneResult(**record, encoder_folder=workdir / "encoder", workdir=workdir)


def workdir_for(
    cache_dir: Path,
    train_rows: LabelledTexts,
    dev_rows: LabelledTexts | None,
    encoding: EncoderOptions,
    options: Any,
    target: Target = ONE_LABEL,
    classes: Sequence[Any] = (),
) -> Path:
    """Where a fine-tuning job keeps its checkpoints: one folder per job, so the same command
    finds (and resumes) its own and never another's. A label-set job (``target``,
    ``classes``: see :func:`finetune`) has other outputs and targets than a single-label one."""
    digest = hashlib.sha256()
    for data in (train_rows, dev_rows):
        if data is None:  # contrastive tuning without dev rows
            continue
        digest.update(json.dumps([data.texts, data.labels], default=str).encode())
    job: dict[str, Any] = {
        "encoder": encoding.resolve().fingerprint,
        "pooling": encoding.pooling,
        "max_length": encoding.max_length,
        "batch_size": encoding.run.batch_size,
        "options": options.job_record(),
    }
    if encoding.long == "chunk":  # only then: truncating jobs keep the folders they had
        job.update(long=encoding.long, stride=encoding.stride)
    job.update(target.tuning_job(classes))  # label sets: the outputs and their order
    if not isinstance(options, FinetuneOptions):  # another objective (contrastive, distilled)
        job.update(objective=type(options).__name__)
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
    """Token ids and label indices (or, for label sets, 0/1 rows over the classes), as the
    Trainer's data loader takes them; with ``owner`` (windows), the index of the text each row
    is of, as ``text``."""

    def __init__(
        self, ids: list[list[int]], labels: list[Any], owner: list[int] | None = None
    ) -> None:
        self.ids, self.labels, self.owner = ids, labels, owner

    def __len__(self) -> int:
        return len(self.ids)

    def __getitem__(self, i: int) -> dict[str, Any]:
        row = {"input_ids": self.ids[i], "labels": self.labels[i]}
        if self.owner is not None:
            row["text"] = self.owner[i]
        return row
