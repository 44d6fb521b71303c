"""Contrastive tuning: the encoder taught which texts belong together, before the probe.

With a few dozen labels, fine-tuning a classification head on them moves the encoder too little
or too far. SetFit's recipe (Tunstall et al., 2022) works better there: make many *pairs* of
training texts, same label or not, and tune the encoder so that the cosine similarity of a
pair's pooled vectors approaches 1 for a same-label pair and 0 for another; then fit the usual
probe on the tuned features. ``n`` labelled texts give about ``n^2 / 2`` pairs, so 16 labels
already give hundreds of training signals.

What bertprobe takes and what it adds:

* The loss is sentence-transformers' (:class:`~sentence_transformers.losses.CoSENTLoss`, the
  library's recommendation for scored pairs: it ranks every pair of the batch against the
  others, a stronger signal than :class:`~sentence_transformers.losses.CosineSimilarityLoss`'s
  squared error, which is the other choice, ``loss="cosine"``, SetFit's). Only their
  ``compute_loss_from_embeddings`` is used: the embeddings are bertprobe's own pooling of the
  body's last hidden state (``EncoderOptions.pooling``), so what is tuned is what the probe
  reads, and no sentence-transformers model folder is written.
* The pairs are SetFit's sampler's: for every text, ``pairs_per_text`` times, one partner of its
  label and one of another (SetFit's ``num_iterations``); for label sets (several labels per
  text) one partner sharing a label and one drawn at random, each pair scored by the Jaccard
  similarity of the two label sets. ``max_pairs`` caps a large set's pairs (a uniform sample):
  contrastive tuning is for few labels; with thousands, ``finetune`` is the better tool.
* The training is the transformers :class:`~transformers.Trainer`, as for fine-tuning, with the
  same Ctrl-C checkpoint and resume, progress bars and folder layout (see
  :mod:`bertprobe.training.finetune`); the tuned encoder is written as a plain Hugging Face
  folder that every backend (torch, onnx, onnx-int8) and every other stage reads.
* No dev rows are split off by default: with 8 labels a class each one counts, and SetFit does
  not hold any out either. With ``dev=`` a labelled file, its pairs are scored after each epoch
  (pair accuracy: cosine above 0.5 for a same-label pair, below for another) and the best
  epoch is kept.
* Long texts (``EncoderOptions(long="chunk")``): every window is a text of the pairs, with its
  text's label, as fine-tuning does.

Example:
    >>> from bertprobe import ContrastiveOptions, EncoderOptions, train
    >>> result = train("few.tsv", encoding=EncoderOptions("minilm", pooling="mean"),
    ...                contrastive=ContrastiveOptions(), out="models/few")  # doctest: +SKIP
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, Literal

import numpy as np

from bertprobe.core.errors import BadInputError
from bertprobe.data.files import LabelledTexts
from bertprobe.encoders.backends import check_device
from bertprobe.encoders.options import EncoderOptions
from bertprobe.training.callbacks import TrainingCallback
from bertprobe.training.finetune import (
    FinetuneResult,
    check_patience,
    common_arguments,
    finished_or_ready,
    job_options,
    load_base,
    loss_history,
    record_finished,
    save_tuned,
    stopped_early,
    train_resumably,
)
from bertprobe.training.target import ONE_LABEL, Target

__all__ = ["PAIR_LOSSES", "ContrastiveOptions", "contrastive_tune", "sample_pairs"]

PAIR_LOSSES = ("cosent", "cosine")


@dataclass(frozen=True)
class ContrastiveOptions:
    """How the encoder is tuned on pairs of texts. Built once; checked when built.

    The batch size (pairs a step) and the maximum length are the encoder options'
    (``EncoderOptions.run.batch_size``, ``max_length``), the pooling tuned is
    ``EncoderOptions.pooling``.

    Parameters
    ----------
    pairs_per_text : int
        For each training text, this many same-label and this many other-label pairs (SetFit's
        ``num_iterations``; its docs use 20).
    min_pairs : int
        At least this many pairs (more partners a text) when the texts are few: 8 labels a
        class at 20 partners make 640 pairs, 20 steps of 32, too few to move the encoder (on
        SST-2 dev, 40 partners a text did better than 20 at 8 labels a class).
    max_pairs : int
        At most this many pairs in all (a uniform sample of them); 0 for no cap.
    epochs : int
        Passes over the pairs.
    lr : float
        Peak learning rate of AdamW (SetFit's body learning rate is 2e-5 for batches of 16
        pairs; the batches here are ``EncoderOptions.run.batch_size``, 32 by default, so half
        as many steps).
    loss : {"cosent", "cosine"}
        sentence-transformers' ``CoSENTLoss`` or ``CosineSimilarityLoss`` (SetFit's).
    seed : int
        Seeds the pairs, dropout and the batch order.
    dev : str or Path, optional
        A labelled file whose pairs score each epoch (the best is kept); default: none, every
        labelled text is trained on.
    warmup : float
        Share of the steps over which the learning rate rises from 0.
    weight_decay : float
        AdamW's decoupled weight decay.
    bf16 : bool
        Mixed precision with bfloat16 (see :class:`~bertprobe.training.finetune.FinetuneOptions`).
    patience : int, optional
        With ``dev``: stop once this many epochs in a row have not beaten the best dev score
        (the best epoch's weights are kept either way).

    Examples
    --------
    >>> ContrastiveOptions(pairs_per_text=10, min_pairs=0).n_pairs(16)
    320
    >>> ContrastiveOptions().n_pairs(16), ContrastiveOptions().n_pairs(128)
    (2016, 5120)
    >>> ContrastiveOptions(max_pairs=100).n_pairs(16)
    100
    """

    pairs_per_text: int = 20
    min_pairs: int = 2_000
    max_pairs: int = 20_000
    epochs: int = 1
    lr: float = 5e-5
    loss: Literal["cosent", "cosine"] = "cosent"
    seed: int = 0
    dev: str | Path | None = None
    warmup: float = 0.1
    weight_decay: float = 0.01
    bf16: bool = False
    patience: int | None = None

    def __post_init__(self) -> None:
        check_patience(self.patience)
        if self.patience is not None and self.dev is None:
            raise BadInputError(
                f"patience={self.patience} stops when the dev score stops improving, and "
                "contrastive tuning scores nothing without a dev file: add dev=, or leave "
                "patience out",
                param=("patience", "dev"),
            )
        if self.pairs_per_text < 1:
            raise BadInputError(
                f"pairs_per_text={self.pairs_per_text}: give 1 or more", param="pairs_per_text"
            )
        if self.min_pairs < 0:
            raise BadInputError(
                f"min_pairs={self.min_pairs}: give 0 or more pairs", param="min_pairs"
            )
        if self.max_pairs < 0:
            raise BadInputError(
                f"max_pairs={self.max_pairs}: give 0 (no cap) or more pairs", param="max_pairs"
            )
        if self.epochs < 1:
            raise BadInputError(f"epochs={self.epochs}: train for at least 1 epoch", param="epochs")
        if not (math.isfinite(self.lr) and self.lr > 0):
            raise BadInputError(
                f"lr={self.lr}: give a positive learning rate, such as 2e-05", param="lr"
            )
        if self.loss not in PAIR_LOSSES:
            raise BadInputError(
                f"loss={self.loss!r}: choose one of {', '.join(PAIR_LOSSES)}", param="loss"
            )
        if not 0 <= self.warmup < 1:
            raise BadInputError(
                f"warmup={self.warmup}: give a share of the steps, 0 to 1", param="warmup"
            )
        if not (math.isfinite(self.weight_decay) and self.weight_decay >= 0):
            raise BadInputError(
                f"weight_decay={self.weight_decay}: give 0 or more", param="weight_decay"
            )

    def rounds(self, n_texts: int) -> int:
        """Partners of each kind a text gets: ``pairs_per_text``, or more to reach
        ``min_pairs``."""
        return max(self.pairs_per_text, math.ceil(self.min_pairs / max(1, 2 * n_texts)))

    def n_pairs(self, n_texts: int) -> int:
        """How many pairs ``n_texts`` training texts of two labels or more make (two a text a
        round, capped)."""
        pairs = 2 * self.rounds(n_texts) * n_texts
        return min(pairs, self.max_pairs) if self.max_pairs else pairs

    # --- the encoder-tuning protocol the pipeline's adapt stage calls -------------------------

    def split(
        self,
        train_set: LabelledTexts,
        dev: LabelledTexts | None,
        target: Target = ONE_LABEL,
        classes: Sequence[Any] = (),
    ) -> tuple[LabelledTexts, LabelledTexts | None]:
        """The rows to tune on and the dev rows: all of ``train_set``, and ``dev`` if given
        (its labels must be the training set's)."""
        if dev is not None:
            from bertprobe.training.finetune import FinetuneOptions

            target.split_dev(train_set, FinetuneOptions(), dev, classes)  # checks the labels
        return train_set, dev

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
        """:func:`contrastive_tune` with these options (``pool``: not read)."""
        return contrastive_tune(
            train_rows,
            dev_rows,
            encoding=encoding,
            options=self,
            workdir=workdir,
            target=target,
            callbacks=callbacks,
        )

    #: The card's key for this tuning's record, and how the tuned encoder is named.
    card_key: ClassVar[str] = "contrastive"
    tuned_as: ClassVar[str] = "contrastive-tuned"

    def job_record(self) -> dict[str, str]:
        """What tells this tuning's job folder apart (see
        :func:`~bertprobe.training.finetune.workdir_for`)."""
        return job_options(self)

    def card_record(self, tuned: FinetuneResult) -> dict[str, Any]:
        """What the card says of the tuning: the options, the pairs, the dev scores, the time."""
        return {
            "objective": "contrastive",
            "pairs_per_text": self.pairs_per_text,
            "min_pairs": self.min_pairs,
            "max_pairs": self.max_pairs,
            "epochs": self.epochs,
            "lr": self.lr,
            "loss": self.loss,
            "seed": self.seed,
            "warmup": self.warmup,
            "weight_decay": self.weight_decay,
            "bf16": self.bf16,
            "patience": self.patience,
            "stopped_early": tuned.stopped_early,
            "dev": str(self.dev) if self.dev is not None else None,
            "n_train": tuned.n_train,
            "n_dev": tuned.n_dev,
            "n_pairs": tuned.n_pairs,
            **(
                {"n_train_windows": tuned.n_train_windows}
                if tuned.n_train_windows is not None
                else {}
            ),
            "epochs_run": tuned.epochs_run,
            "best_epoch": tuned.best_epoch,
            "dev_pair_accuracy": tuned.dev_accuracy,
            "dev_history": tuned.dev_history,
            "loss_history": tuned.loss_history,
            "seconds": tuned.seconds,
        }


def sample_pairs(
    labels: Sequence[Any],
    options: ContrastiveOptions,
    *,
    label_sets: bool = False,
) -> list[tuple[int, int, float]]:
    """Pairs of rows ``(i, j, score)`` to tune on: SetFit's sampler.

    For each row, ``options.rounds(len(labels))`` times (``pairs_per_text``, or more to make
    ``min_pairs``): a partner of the same label (score 1; the
    row itself when it is its label's only one) and one of another label (score 0), drawn
    at random. ``label_sets``: each label is a set of names; the first partner shares a name
    (when one does), the second is any other row, and a pair's score is the Jaccard similarity
    of the two sets (two empty sets: 1). At most ``options.max_pairs`` pairs (a uniform
    sample), in random order. Seeded by ``options.seed``.

    Examples
    --------
    >>> options = ContrastiveOptions(pairs_per_text=1, min_pairs=0)
    >>> pairs = sample_pairs(["a", "a", "b", "b"], options)
    >>> len(pairs), sorted({score for _, _, score in pairs})
    (8, [0.0, 1.0])
    """
    rng = np.random.default_rng(options.seed)
    n = len(labels)
    anchors = np.tile(np.arange(n), options.rounds(n))
    if options.max_pairs and 2 * len(anchors) > options.max_pairs:  # capped: fewer anchors
        anchors = rng.choice(anchors, size=max(1, options.max_pairs // 2), replace=False)
    pairs: list[tuple[int, int, float]] = []
    if label_sets:
        sets = [frozenset(map(str, y)) for y in labels]
        rows_of: dict[str, list[int]] = {}
        for i, names in enumerate(sets):
            for name in names:
                rows_of.setdefault(name, []).append(i)
        for i in map(int, anchors):
            sharing = {j for name in sets[i] for j in rows_of[name]} - {i}
            j = int(rng.choice(sorted(sharing))) if sharing else i
            k = int(rng.integers(n - 1)) if n > 1 else i
            k += k >= i and n > 1  # any row but i
            pairs += [(i, j, _jaccard(sets[i], sets[j])), (i, k, _jaccard(sets[i], sets[k]))]
    else:
        keys = np.array([str(y) for y in labels])
        same_rows = {key: np.flatnonzero(keys == key) for key in np.unique(keys)}
        other_rows = {key: np.flatnonzero(keys != key) for key in same_rows}
        for i in map(int, anchors):
            same = same_rows[keys[i]]
            same = same[same != i]
            pairs.append((i, int(rng.choice(same)) if len(same) else i, 1.0))
            others = other_rows[keys[i]]
            if len(others):
                pairs.append((i, int(rng.choice(others)), 0.0))
    return [pairs[k] for k in rng.permutation(len(pairs))]


def _jaccard(a: frozenset[str], b: frozenset[str]) -> float:
    return len(a & b) / len(a | b) if a | b else 1.0


def contrastive_tune(
    train_rows: LabelledTexts,
    dev_rows: LabelledTexts | None,
    *,
    encoding: EncoderOptions,
    options: ContrastiveOptions = ContrastiveOptions(),
    workdir: str | Path,
    target: Target = ONE_LABEL,
    callbacks: Sequence[TrainingCallback] = (),
) -> FinetuneResult:
    """Tune ``encoding.encoder`` on pairs of ``train_rows`` (see the module's docstring).

    Checkpoints go under ``workdir``; a call that finds one there (an earlier run interrupted
    with Ctrl-C) resumes from it, and one that finds a finished run uses it. ``target``: what a
    label is (label sets pair by the Jaccard similarity of two texts' sets). Returns the record
    of the run (``objective`` is ``"contrastive"``, ``n_pairs`` the pairs trained on; with no
    ``dev_rows``, no dev scores).
    """
    workdir = Path(workdir)
    done = finished_or_ready(workdir)
    if done is not None:
        return done
    import torch

    from bertprobe.training._tuning import PairedEncoder

    start = time.perf_counter()
    device = check_device(encoding.run.device)
    torch.manual_seed(options.seed)
    base = load_base(encoding)
    label_sets = target.label_sets

    def pairs_of(data: LabelledTexts) -> tuple[_PairRows, int]:
        ids, owner = base.units(data.texts)
        labels = list(data.labels or [])
        unit_labels = labels if owner is None else [labels[t] for t in owner]
        return _PairRows(ids, sample_pairs(unit_labels, options, label_sets=label_sets)), len(ids)

    train_pairs, n_units = pairs_of(train_rows)
    dev_pairs = pairs_of(dev_rows)[0] if dev_rows is not None else None
    if not any(score < 1 for _, _, score in train_pairs.pairs):
        raise BadInputError(
            f"{train_rows.source}: every pair of texts has the same label; contrastive tuning "
            "needs texts of at least two labels"
        )
    model = PairedEncoder(base.body, encoding.pooling, options.loss)
    steps_per_epoch = math.ceil(len(train_pairs) / encoding.run.batch_size)
    args = _arguments(
        workdir / "checkpoints", options, encoding, device, dev_pairs is not None, steps_per_epoch
    )
    trainer, resumed = train_resumably(
        model,
        args,
        train_pairs,
        dev_pairs,
        collator=_PairCollator(base.tokenizer),
        scores=_pair_scores if dev_pairs is not None else None,
        encoding=encoding,
        what="contrastive tuning",
        tuning="contrastive",
        callbacks=callbacks,
        patience=options.patience,
    )
    folder = save_tuned(model.body, base.tokenizer, workdir)
    history = [e["eval_accuracy"] for e in trainer.state.log_history if "eval_accuracy" in e]
    epochs = [round(e["epoch"]) for e in trainer.state.log_history if "eval_accuracy" in e]
    best = int(np.argmax(history)) if history else None
    result = FinetuneResult(
        encoder_folder=folder,
        epochs_run=round(trainer.state.epoch or 0),
        best_epoch=epochs[best] if best is not None else options.epochs,
        dev_accuracy=history[best] if best is not None else None,
        dev_history=history,
        dev_epochs=epochs,
        n_train=len(train_rows),
        n_dev=len(dev_rows) if dev_rows is not None else 0,
        seconds=time.perf_counter() - start,
        resumed_from_step=resumed,
        workdir=workdir,
        n_train_windows=n_units if base.stride is not None else None,
        # Label sets: no dev F1 here (pairs, not labels, are scored), the sets made the pairs.
        objective="contrastive",
        n_pairs=len(train_pairs),
        stopped_early=stopped_early(trainer, options.epochs),
        loss_history=loss_history(trainer.state.log_history),
    )
    return record_finished(result)


def _arguments(
    checkpoints: Path,
    options: ContrastiveOptions,
    encoding: EncoderOptions,
    device: Any,
    scored: bool,
    steps_per_epoch: int,
) -> Any:
    """The Trainer's arguments: one checkpoint kept; with dev pairs, scored every epoch and the
    best epoch's weights kept."""
    from transformers import TrainingArguments

    per_epoch: dict[str, Any] = {
        "eval_strategy": "epoch" if scored else "no",
        "save_strategy": "epoch",
    }
    return TrainingArguments(
        **common_arguments(
            checkpoints, options, encoding.run.batch_size, options.epochs, device, steps_per_epoch
        ),
        **per_epoch,
        load_best_model_at_end=scored,
        metric_for_best_model="selection" if scored else None,
    )


class _PairRows:
    """Pairs of token-id rows and their scores, as the Trainer's data loader takes them."""

    def __init__(self, ids: list[list[int]], pairs: list[tuple[int, int, float]]) -> None:
        self.ids, self.pairs = ids, pairs

    def __len__(self) -> int:
        return len(self.pairs)

    def __getitem__(self, k: int) -> dict[str, Any]:
        i, j, score = self.pairs[k]
        return {"input_ids": self.ids[i], "input_ids_b": self.ids[j], "labels": score}


class _PairCollator:
    """Pads the two sides of a batch of pairs, each to its own longest row."""

    def __init__(self, tokenizer: Any) -> None:
        self.tokenizer = tokenizer

    def __call__(self, rows: list[dict[str, Any]]) -> dict[str, Any]:
        import torch

        a = self.tokenizer.pad([{"input_ids": r["input_ids"]} for r in rows], return_tensors="pt")
        b = self.tokenizer.pad([{"input_ids": r["input_ids_b"]} for r in rows], return_tensors="pt")
        return {
            "input_ids": a["input_ids"],
            "attention_mask": a["attention_mask"],
            "input_ids_b": b["input_ids"],
            "attention_mask_b": b["attention_mask"],
            "labels": torch.tensor([r["labels"] for r in rows], dtype=torch.float32),
        }


def _pair_scores(prediction: Any) -> dict[str, float]:
    """Dev pair accuracy (cosine above 0.5 for a pair scored above 0.5, below for another) and
    the score that keeps an epoch: the accuracy, ties broken by the lower squared error."""
    cosine = np.asarray(prediction.predictions, dtype=np.float64).reshape(-1)
    target = np.asarray(prediction.label_ids, dtype=np.float64).reshape(-1)
    accuracy = float(np.mean((cosine > 0.5) == (target > 0.5)))
    error = float(np.mean((cosine - target) ** 2))
    return {"accuracy": accuracy, "selection": accuracy - np.tanh(error) / (len(target) + 1)}
