"""Distillation: a smaller encoder taught to say what a bigger model says.

A frozen all-mpnet-base-v2 with ``--auto`` is 3-6 points more accurate on SST-2 than the
bundled MiniLM, at five times the parameters and a fifth of the speed. Distillation (Hinton et
al., 2015; for classifiers over BERT, Tang et al., 2019 and Turc et al., 2019) trains the small
encoder, with a classification head, on the big model's *probabilities*: a teacher's 0.62 says
more than the label "positive", and a teacher can label any text, so the student may learn
from far more text than anyone labelled.

What this module adds to fine-tuning (:mod:`bertprobe.training.finetune`, whose Trainer path,
checkpoints, Ctrl-C and resume it shares):

* the teacher is any bertprobe model (:class:`Teacher`: any head, the TF-IDF vote, label sets,
  windows, a tuned encoder); its probabilities for every text are computed once and kept in
  the cache folder (:func:`teacher_probabilities`, a part file every few thousand texts, so
  an interrupted pass keeps what it computed), so a second student, or a resumed run, does not
  pay the teacher again;
* the texts taught are the training texts (not the dev rows, which choose the epoch by their
  labels), altered copies of them (``augment``: :mod:`bertprobe.training.augment`) and any
  unlabelled texts the run has (``unlabelled=``);
* a training text's target mixes its own label (``gold_weight``) with the teacher's
  probabilities at ``temperature``; other texts have the teacher's alone. Softmax targets for
  one label a text, one sigmoid target a label for label sets (the run's
  :class:`~bertprobe.training.target.Target` says which);
* then, as after fine-tuning, the usual probe is fitted on the student's features: the model
  is an ordinary model folder whose card names the teacher (:meth:`DistillOptions.card_record`).

Example:
    >>> from bertprobe import DistillOptions, EncoderOptions, load_model, train
    >>> result = train("data/sst2/train.tsv", encoding=EncoderOptions("minilm"),
    ...                distill=DistillOptions(teacher=load_model("models/mpnet"), augment=4),
    ...                out="models/student")  # doctest: +SKIP
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, ClassVar, Protocol, get_args

import numpy as np

from bertprobe.core.errors import BadInputError
from bertprobe.data.files import LabelledTexts
from bertprobe.encoders.backends import Backend
from bertprobe.encoders.cache import default_cache_dir
from bertprobe.encoders.options import EncoderOptions, RunOptions
from bertprobe.training.augment import augment_texts
from bertprobe.training.callbacks import TrainingCallback
from bertprobe.training.finetune import (
    FinetuneOptions,
    FinetuneResult,
    Taught,
    finetune,
    finished_run,
    record_finished,
)
from bertprobe.training.target import ONE_LABEL, Target

__all__ = ["DistillOptions", "Teacher", "distill", "teacher_probabilities"]

# Texts a part file of the teacher's probabilities holds (see teacher_probabilities).
TEACHER_PART = 4096


class Teacher(Protocol):
    """What distillation asks of a teacher: a bertprobe model
    (:class:`~bertprobe.model.classifier.Classifier`), saved (its card's file hashes name it)."""

    card: dict[str, Any]

    @property
    def classes(self) -> list: ...

    @property
    def target(self) -> Target: ...

    @property
    def decision(self) -> Any: ...

    def predict_proba(self, texts: Sequence[str], run: RunOptions = ...) -> np.ndarray: ...


@dataclass(frozen=True)
class DistillOptions:
    """How a student encoder learns from a teacher model. Built once; checked when built.

    The student is the run's encoder (``EncoderOptions.encoder``, read at its pooling and
    maximum length); the training is fine-tuning's (``tuning``: epochs, learning rate, seed,
    dev rows), on soft targets.

    Parameters
    ----------
    teacher : Teacher or str or Path
        The model to learn from, or its model folder (loaded by :func:`bertprobe.train`).
    augment : int
        Altered copies of each training text the teacher labels too (Tang et al.'s masking,
        word replacement and n-gram sampling: :mod:`bertprobe.training.augment`); 0 for none.
    temperature : float
        The teacher's probabilities are read at it (above 1: flatter, its second choices weigh
        more), and so are the student's logits in the loss.
    gold_weight : float
        The share of a training text's target that is its own label (the rest is the
        teacher's probabilities); 0 learns from the teacher alone.
    teacher_backend : str, optional
        How the teacher's encoder runs while it labels (``torch``, ``onnx``, ``onnx-int8``);
        default: the teacher's own.
    tuning : FinetuneOptions
        The training: epochs (by default 4, or more for few texts), learning rate, seed, the
        dev rows that choose the epoch (by their labels).

    Examples
    --------
    >>> DistillOptions(teacher="models/mpnet", augment=4).temperature
    1.0
    >>> DistillOptions(teacher="models/mpnet", gold_weight=2)
    Traceback (most recent call last):
    ...
    bertprobe.core.errors.BadInputError: gold_weight=2: give a share of the target, 0 to 1
    """

    teacher: Any
    augment: int = 0
    temperature: float = 1.0
    gold_weight: float = 0.5
    teacher_backend: Backend | None = None
    tuning: FinetuneOptions = FinetuneOptions()

    #: The card's key for this tuning's record, and how the tuned encoder is named.
    card_key: ClassVar[str] = "distill"
    tuned_as: ClassVar[str] = "distilled"

    def __post_init__(self) -> None:
        if self.augment < 0:
            raise BadInputError(
                f"augment={self.augment}: give 0 or more copies a text", param="augment"
            )
        if not (np.isfinite(self.temperature) and self.temperature > 0):
            raise BadInputError(
                f"temperature={self.temperature}: give a positive temperature, such as 2",
                param="temperature",
            )
        if self.teacher_backend not in (None, *get_args(Backend)):
            raise BadInputError(
                f"teacher_backend={self.teacher_backend!r}: give one of "
                f"{', '.join(get_args(Backend))}, or leave it out for the teacher's own",
                param="teacher_backend",
            )
        if not 0 <= self.gold_weight <= 1:
            raise BadInputError(
                f"gold_weight={self.gold_weight}: give a share of the target, 0 to 1",
                param="gold_weight",
            )

    # --- the encoder-tuning protocol the pipeline's adapt stage calls -------------------------

    @property
    def dev(self) -> str | Path | None:
        return self.tuning.dev

    def split(
        self,
        train_set: LabelledTexts,
        dev: LabelledTexts | None,
        target: Target = ONE_LABEL,
        classes: Sequence[Any] = (),
    ) -> tuple[LabelledTexts, LabelledTexts | None]:
        """The rows to teach and the dev rows that choose the epoch (fine-tuning's split)."""
        return target.split_dev(train_set, self.tuning, dev, classes)

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
        """:func:`distill` with these options."""
        assert dev_rows is not None  # split() always makes dev rows
        return distill(
            train_rows,
            dev_rows,
            encoding=encoding,
            options=self,
            workdir=workdir,
            target=target,
            pool=pool,
            callbacks=callbacks,
        )

    def job_record(self) -> dict[str, str]:
        """What tells this tuning's job folder apart: the options, the teacher by its files."""
        return {
            "teacher": teacher_fingerprint(self.teacher),
            "augment": str(self.augment),
            "temperature": str(self.temperature),
            "gold_weight": str(self.gold_weight),
            "teacher_backend": str(self.teacher_backend),
            **{f"tuning.{k}": v for k, v in self.tuning.job_record().items()},
        }

    def card_record(self, tuned: FinetuneResult) -> dict[str, Any]:
        """What the card says of the distillation: the teacher (its id and fingerprint), the
        texts taught, the options, the dev scores and, with a test set, the student's
        agreement with the teacher there."""
        card = getattr(self.teacher, "card", {})
        return {
            "teacher": {
                "id": card.get("id"),
                "fingerprint": teacher_fingerprint(self.teacher),
                "encoder": card.get("encoder", {}).get("name"),
                "test_accuracy": card.get("metrics", {}).get("test_accuracy"),
            },
            "augment": self.augment,
            "temperature": self.temperature,
            "gold_weight": self.gold_weight,
            "teacher_backend": self.teacher_backend,
            "n_taught": tuned.n_taught,
            "n_augmented": tuned.n_augmented,
            "teacher_seconds": tuned.teacher_seconds,
            "teacher_test_agreement": tuned.teacher_test_agreement,
            **self.tuning.card_record(tuned),
        }


def teacher_fingerprint(teacher: Any) -> str:
    """A saved teacher's name for caches and cards: a hash of its card's file hashes (its
    probe, its vote, a tuned encoder's files) and its encoder's fingerprint."""
    card = getattr(teacher, "card", None) or {}
    if "files" not in card:
        raise BadInputError(
            "distill: the teacher is not a saved model (its card names no files); save it "
            "first (Classifier.save) or give its model folder",
            param="teacher",
        )
    named = {"files": card["files"], "encoder": card.get("encoder", {}).get("fingerprint")}
    return hashlib.sha256(json.dumps(named, sort_keys=True).encode()).hexdigest()[:24]


def teacher_probabilities(
    teacher: Teacher,
    texts: Sequence[str],
    *,
    run: RunOptions = RunOptions(),
    cache_dir: str | Path | None = None,
) -> tuple[np.ndarray, bool]:
    """The teacher's probabilities for ``texts`` (columns in the order of its classes), and
    whether they were read from the cache.

    Kept under ``cache_dir/teacher`` (default: the run's cache folder), named by the teacher's
    fingerprint, the backend it runs on and the texts: a second student of the same teacher on
    the same texts reads them. The pass is made :data:`TEACHER_PART` texts at a time, each
    part written as it ends, so an interrupted pass resumes at its first missing part.
    """
    folder = Path(cache_dir or run.cache_dir or default_cache_dir()) / "teacher"
    digest = hashlib.sha256(
        json.dumps([teacher_fingerprint(teacher), run.backend, list(texts)]).encode()
    ).hexdigest()[:24]
    whole = folder / f"{digest}.npy"
    if whole.is_file():
        return np.load(whole), True
    folder.mkdir(parents=True, exist_ok=True)
    parts = []
    for k, start in enumerate(range(0, len(texts), TEACHER_PART)):
        part = folder / f"{digest}.part{k}.npy"
        if not part.is_file():
            proba = teacher.predict_proba(list(texts[start : start + TEACHER_PART]), run)
            _save_atomically(part, np.asarray(proba, dtype=np.float64))
        parts.append(part)
    proba = np.concatenate([np.load(p) for p in parts]) if parts else np.zeros((0, 0))
    _save_atomically(whole, proba)
    for part in parts:
        part.unlink(missing_ok=True)
    return proba, False


def _save_atomically(path: Path, array: np.ndarray) -> None:
    staged = path.with_name(path.name + ".tmp")
    with staged.open("wb") as f:
        np.save(f, array)
    staged.replace(path)


def distill(
    train_rows: LabelledTexts,
    dev_rows: LabelledTexts,
    *,
    encoding: EncoderOptions,
    options: DistillOptions,
    workdir: str | Path,
    target: Target = ONE_LABEL,
    pool: LabelledTexts | None = None,
    callbacks: Sequence[TrainingCallback] = (),
) -> FinetuneResult:
    """Teach ``encoding.encoder`` (the student) what ``options.teacher`` says of
    ``train_rows``, their altered copies and the ``pool`` (see the module); the epoch is chosen
    by the labels of ``dev_rows``. Checkpoints, Ctrl-C and resume are fine-tuning's
    (:func:`~bertprobe.training.finetune.finetune`); the record's ``objective`` is
    ``"distillation"``, with ``n_taught`` texts taught, ``n_augmented`` of them altered copies.
    """
    workdir = Path(workdir)
    done = finished_run(workdir)
    if done is not None:
        return done
    teacher = options.teacher
    outputs = check_teacher(teacher, train_rows, target)
    taught_texts, n_augmented = texts_to_teach(train_rows, dev_rows, pool, options, encoding)
    start = time.perf_counter()
    teacher_run = replace(encoding.run, backend=options.teacher_backend)
    proba, cached = teacher_probabilities(teacher, taught_texts, run=teacher_run)
    teacher_seconds = time.perf_counter() - start
    targets = target.soften(proba, options.temperature)
    labelled = len(train_rows)  # the first rows are the training texts: mix their labels in
    gold = target.label_matrix(train_rows, outputs)
    w = options.gold_weight
    targets[:labelled] = w * gold + (1 - w) * targets[:labelled]
    result = finetune(
        LabelledTexts.from_lists(taught_texts, None, source=f"{train_rows.source} (taught)"),
        dev_rows,
        encoding=encoding,
        options=options.tuning,
        workdir=workdir,
        target=target,
        classes=outputs,
        taught=Taught(outputs, targets, options.temperature),
        callbacks=callbacks,
    )
    result.n_taught = len(taught_texts)
    result.n_augmented = n_augmented
    result.teacher_seconds = 0.0 if cached else teacher_seconds
    return record_finished(result)


def check_teacher(teacher: Any, train_rows: LabelledTexts, target: Target) -> list:
    """The teacher's classes (the student head's outputs), once the teacher is checked: a
    saved model of the run's kind (one label a text, or label sets) that knows every label of
    the training rows."""
    for needed in ("predict_proba", "classes", "target"):
        if not hasattr(teacher, needed):
            raise BadInputError(
                f"distill: the teacher ({type(teacher).__name__}) is not a bertprobe model; "
                "give a model folder or a loaded Classifier",
                param="teacher",
            )
    teacher_fingerprint(teacher)  # saved?
    if teacher.target.label_sets != target.label_sets:
        kinds = {True: "label sets (several labels a text)", False: "one label a text"}
        raise BadInputError(
            f"distill: the teacher predicts {kinds[teacher.target.label_sets]} and the run "
            f"trains {kinds[target.label_sets]}; "
            f"{'add' if teacher.target.label_sets else 'leave out'} multi_label=True",
            param=("teacher", "multi_label=True"),
        )
    outputs = [str(c) for c in teacher.classes] if target.label_sets else list(teacher.classes)
    known = {str(c) for c in outputs}
    named = {str(y) for labels in target.as_tuples(train_rows.labels or []) for y in labels}
    unknown = sorted(named - known)
    if unknown:
        raise BadInputError(
            f"{train_rows.source}: the label{'s' if len(unknown) > 1 else ''} "
            f"{', '.join(unknown[:5])} {'are' if len(unknown) > 1 else 'is'} not among the "
            f"teacher's classes ({', '.join(sorted(known)[:10])}); distill from a teacher "
            "trained on these labels",
            param="teacher",
        )
    return outputs


def texts_to_teach(
    train_rows: LabelledTexts,
    dev_rows: LabelledTexts,
    pool: LabelledTexts | None,
    options: DistillOptions,
    encoding: EncoderOptions,
) -> tuple[list[str], int]:
    """The training texts, then ``options.augment`` altered copies of each (masked with the
    student tokenizer's mask token), then the pool's texts; never a dev text. Returns the
    texts and how many are copies."""
    dev = set(dev_rows.texts)
    copies = augment_texts(
        train_rows.texts,
        options.augment,
        seed=options.tuning.seed,
        mask_token=_mask_token(encoding) if options.augment else "[MASK]",
    )
    copies = [text for text in copies if text not in dev]
    pooled = [text for text in (pool.texts if pool is not None else []) if text not in dev]
    return [*train_rows.texts, *copies, *pooled], len(copies)


def _mask_token(encoding: EncoderOptions) -> str:
    """The student tokenizer's mask token (read as one token), else its unknown token."""
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(encoding.resolve().path)  # nosec B615 (local)
    return str(tokenizer.mask_token or tokenizer.unk_token or "[MASK]")
