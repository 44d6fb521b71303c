"""Training: one entry point from labelled data to a fitted, saved model.

:func:`train` does what ``bertprobe train`` does, as a library call: read (or take) the data,
optionally sweep layers x poolings first (``auto``), embed, choose C by cross-validation, fit,
score the test data, save the model folder. It returns a :class:`TrainResult`, whose
``to_dict()`` is what ``bertprobe train --json`` prints. The CLI only parses and prints.

Example:
    >>> from bertprobe import EncoderOptions, TrainOptions, train
    >>> result = train("data/sst2/train.tsv", test="data/sst2/test.tsv",
    ...                encoding=EncoderOptions("minilm", pooling="mean"),
    ...                options=TrainOptions(cv=5), out="models/sst2")  # doctest: +SKIP
    >>> round(result.test_accuracy, 3)  # doctest: +SKIP
    0.814
"""

from __future__ import annotations

import shutil
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bertprobe.core.tables import python_value
from bertprobe.data.files import LabelledTexts, ReadOptions
from bertprobe.encoders.encode import EmbedStats
from bertprobe.encoders.options import EncoderOptions
from bertprobe.model.classifier import Classifier, Probe, with_teacher
from bertprobe.model.persist import (
    card_encoder,
    check_model_destination,
    data_records,
    file_record,
    read_card,
    save_model,
)
from bertprobe.training.callbacks import TrainingCallback
from bertprobe.training.compare import Comparison
from bertprobe.training.contrastive import ContrastiveOptions
from bertprobe.training.distill import DistillOptions
from bertprobe.training.finetune import FinetuneOptions, FinetuneResult
from bertprobe.training.inputs import read_training_set
from bertprobe.training.label_issues import LabelIssue
from bertprobe.training.options import TrainOptions
from bertprobe.training.pipeline import (
    StageHooks,
    TrainingRun,
    run_stages,
    stages_for,
    start_run,
    sweep_features,
)
from bertprobe.training.selftrain import self_train
from bertprobe.training.sweep import SweepResult
from bertprobe.training.zeroshot import ZeroShot


@dataclass
class TrainResult:
    """What :func:`train` did: the model, its scores, and what it took."""

    model: Classifier
    n_train: int
    n_test: int
    test_accuracy: float | None
    embed_seconds: float
    fit_seconds: float
    out: Path | None = None
    train_data: LabelledTexts | None = None
    test_data: LabelledTexts | None = None
    train_stats: EmbedStats | None = None
    test_stats: EmbedStats | None = None
    sweep: SweepResult | None = None
    feature_dir: Path | None = None
    finetune: FinetuneResult | None = None  # the last tuning's record (see ``tunings``)
    # contrastive, distillation, fine-tuning, in the order they ran
    tunings: list[FinetuneResult] = field(default_factory=list)
    metric: str = "accuracy"
    test_score: float | None = None  # test_<metric>
    decision_threshold: dict[str, Any] | None = None
    label_issues: list[LabelIssue] | None = None
    test_scores: dict[str, Any] | None = None  # multi-label: F1 micro / macro, per label
    comparison: Comparison | None = None  # --encoders: how the encoder was chosen
    # from descriptions: what self-training did, round by round (None: no rounds)
    self_trained: dict[str, Any] | None = None

    @property
    def probe(self) -> Probe:
        return self.model.probe

    @property
    def cv_accuracy(self) -> float | None:
        return getattr(self.probe, "cv_accuracy_", None)

    def to_dict(self) -> dict[str, Any]:
        """The JSON-ready summary ``bertprobe train --json`` prints: how the head was chosen
        (its ``summary_record``), the test figures the model's target measures, then what
        every run records (data, encoder, features, timings, the tunings)."""
        head = self.probe
        summary = {
            **(head.summary_record() if hasattr(head, "summary_record") else {}),
            **self.model.target.summary(self),
            **self._common(),
            **self._tuning(),
        }
        if self.comparison is not None:
            summary["compare"] = self.comparison.summary()
        return summary

    def _common(self) -> dict[str, Any]:
        model, spec = self.model, self.model.spec
        stats = [s for s in (self.train_stats, self.test_stats) if s is not None]
        sweep = self.sweep
        return {
            "class_weight": getattr(self.probe, "class_weight", None),
            "n_label_issues": len(self.label_issues) if self.label_issues is not None else None,
            "n_train": self.n_train,
            "n_test": self.n_test,
            "labels": [python_value(c) for c in self.probe.classes_],
            "encoder": model.encoder.name,
            "encoder_fingerprint": model.encoder.fingerprint,
            # A hub encoder's commit; null for a local or fine-tuned one (the card keeps the
            # base's commit under encoder.base).
            "encoder_revision": model.encoder.revision,
            "pooling": spec.pooling,
            "layer": list(spec.layers) if len(spec.layers) > 1 else spec.layers[0],
            "backend": model.backend,
            "max_length": self.train_stats.max_length if self.train_stats else spec.max_length,
            "n_cached": sum(s.n_cached for s in stats),
            "n_truncated": sum(s.n_truncated for s in stats),
            "long": spec.long,
            "n_windows": sum(s.n_windows for s in stats),
            "embed_seconds": self.embed_seconds,
            "fit_seconds": self.fit_seconds,
            "model_dir": str(self.out) if self.out is not None else None,
            # --unlabelled: what self-training did and whether CV kept it
            "self_training": getattr(self.probe, "self_training_", None),
            # from descriptions: self-training's rounds on the pool
            **({"zero_shot_rounds": self.self_trained} if self.self_trained else {}),
            "auto": sweep.choice if sweep is not None else None,
            "vote_cv_accuracy": sweep.vote_cv_accuracy if sweep is not None else None,
            "sweep_seconds": sweep.seconds if sweep is not None else None,
        }

    def _tuning(self) -> dict[str, Any]:
        tuned = self.finetune
        if tuned is None:
            return {}
        taught = [t for t in self.tunings if t.n_taught is not None]
        return {
            **(
                {
                    "n_taught": taught[-1].n_taught,
                    "teacher_test_agreement": taught[-1].teacher_test_agreement,
                }
                if taught
                else {}
            ),
            "epochs_run": tuned.epochs_run,
            "finetune_seconds": tuned.seconds,
            "dev_accuracy": tuned.dev_accuracy,
            **({"dev_f1_micro": tuned.dev_f1_micro} if tuned.label_sets else {}),
        }


def train(
    data: str | Path | LabelledTexts | None,
    *,
    test: str | Path | LabelledTexts | None = None,
    encoding: EncoderOptions = EncoderOptions(),
    options: TrainOptions = TrainOptions(),
    reading: ReadOptions = ReadOptions(),
    finetune: FinetuneOptions | None = None,
    contrastive: ContrastiveOptions | None = None,
    unlabelled: str | Path | Sequence[str] | None = None,
    out: str | Path | None = None,
    hooks: StageHooks | None = None,
    zero_shot: ZeroShot | None = None,
    distill: DistillOptions | None = None,
    callbacks: Sequence[TrainingCallback] = (),
) -> TrainResult:
    """Train a model on labelled data; save it to ``out`` when given.

    The preset over :mod:`bertprobe.training.pipeline`'s stages that the options ask for
    (``hooks`` are called around each stage), then the model folder.

    ``callbacks`` (:class:`~bertprobe.training.callbacks.TrainingCallback`) are told of each
    stage, of each tuning's losses and dev scores (and may stop a tuning), and at the end of
    the result, its folder saved: tracking (:mod:`bertprobe.mlflow`) is one.

    With ``finetune``, the encoder's weights are first fine-tuned on the training data (see
    :mod:`bertprobe.training.finetune`); the probe is then fitted on the tuned encoder's features,
    and
    the model folder holds the tuned encoder. With ``contrastive``, the encoder is first tuned on
    pairs of training texts (see :mod:`bertprobe.training.contrastive`: the tool for a few
    labelled texts); with both, contrastive tuning runs first and fine-tuning starts from it.

    With ``distill``, the encoder is first taught by a teacher model (a model folder or a
    loaded model, see :mod:`bertprobe.training.distill`): trained on the teacher's
    probabilities for the training texts, their altered copies and the ``unlabelled`` texts;
    the probe is then fitted on the student's features, and the card names the teacher.

    ``unlabelled`` (a file, read as the training file is, or a list of texts): texts without
    labels the probe self-trains on (:meth:`~bertprobe.heads.probe.LinearProbe.fit`), kept only
    when cross-validation on the labelled rows says it helps; texts of the training or test
    set are set aside, and no reported score is computed on an unlabelled text.

    With no labels (``data`` None), ``zero_shot`` gives each class's descriptions and
    ``unlabelled`` the pool of texts: the model is the zero-shot head (see
    :mod:`bertprobe.heads.zeroshot`), or with ``zero_shot.rounds`` the model self-training on
    the pool made of it, trained as the other options say (see
    :mod:`bertprobe.training.zeroshot`).

    ``data`` and ``test`` are files (read with ``reading``) or :class:`LabelledTexts`. Every
    check that can be made before the encoder runs is made first: the data, the test labels
    against the training labels, the output folder. ``test`` is only scored, never used to
    choose anything.

    Examples
    --------
    >>> result = train("train.tsv", encoding=EncoderOptions("minilm", pooling="mean"),
    ...                options=TrainOptions(cv=3))  # doctest: +SKIP
    >>> result.model.predict(["a gorgeous, witty film"])  # doctest: +SKIP
    array([1])
    """
    out = check_model_destination(out) if out is not None else None
    run = start_run(
        data,
        test=test,
        encoding=encoding,
        options=options,
        reading=reading,
        finetune=finetune,
        contrastive=contrastive,
        unlabelled=unlabelled,
        zero_shot=zero_shot,
        distill=with_teacher(distill),
    )
    run.callbacks = tuple(callbacks)
    run_stages(run, stages_for(options, finetune, zero_shot=zero_shot), hooks)
    run = self_train(run, hooks)
    result = _train_result(run, out, options.metric)
    if out is not None:
        _save_run(run, result, out)
    for callback in run.callbacks:
        callback.on_train_end(result)
    return result


def _train_result(run: TrainingRun, out: Path | None, metric: str) -> TrainResult:
    """What the stages of ``run`` made and measured, as :func:`train` returns it.

    The model is :meth:`~bertprobe.model.classifier.Classifier.from_run`'s, still without a
    card: :func:`_save_run` gives it the one it saves.
    """
    return TrainResult(
        model=Classifier.from_run(run),
        n_train=_rows(run, "train"),
        n_test=_rows(run, "test"),
        test_accuracy=run.test_accuracy,
        embed_seconds=run.embed_seconds,
        fit_seconds=run.fit_seconds,
        out=out,
        train_data=run.train_set,
        test_data=run.test_set,
        train_stats=run.train_stats,
        test_stats=run.test_stats,
        sweep=run.swept,
        feature_dir=run.feature_dir,
        finetune=run.tuned,
        tunings=[record for _, record in run.adapted],
        metric=metric,
        test_score=run.test_score,
        decision_threshold=run.threshold,
        label_issues=run.label_issues,
        test_scores=run.test_scores,
        comparison=run.compared,
        self_trained=run.self_trained,
    )


def _save_run(run: TrainingRun, result: TrainResult, out: Path) -> None:
    """Save ``result.model`` to the model folder ``out``, then make it the model as saved.

    The card records the model's figures and how it was made (:func:`_card_record`), its data
    files (:func:`_data_record`) and the max length its training texts were cut at (else the
    model's or the encoder's). A fine-tuned encoder is copied into the folder, so its work
    folder is removed after.
    """
    model = result.model
    metrics, extra = _card_record(run, result)
    assert run.encoder is not None
    save_model(
        out,
        model.probe,
        model.encoder,
        model.spec,
        max_length=(
            run.train_stats.max_length
            if run.train_stats is not None
            else model.spec.max_length or run.encoder.max_length
        ),
        backend=run.encoding.backend,
        metrics=metrics,
        data=_data_record(run),
        extra=extra or None,
        text_model=model.text_model,
        encoder_folder=run.tuned.encoder_folder if run.tuned is not None else None,
        base_encoder=run.base,
    )
    result.model = _with_card(out, model)
    if run.tuned is not None and run.tuned.workdir is not None:  # the folder has a copy
        shutil.rmtree(run.tuned.workdir, ignore_errors=True)


def _rows(run: TrainingRun, split: str) -> int:
    data = run.train_set if split == "train" else run.test_set
    if data is not None:
        return len(data)
    source = run.chunk_sources.get(split)
    return len(source[1]) if source is not None else 0


def _data_record(run: TrainingRun) -> dict[str, Any]:
    """The card's ``data``: each file's path, rows and SHA-256."""
    if run.train_path is None:  # in memory (from descriptions: no training set)
        records = data_records(run.train_set, run.test_set)
        if run.unlabelled is not None:
            pool = run.unlabelled
            records["unlabelled"] = file_record(pool.source, len(pool), pool.sha256)
        return records
    assert run.train_path is not None
    records = {
        "train": file_record(run.train_path, _rows(run, "train"), run.chunk_sources["train"][2])
    }
    if run.test_path is not None:
        records["test"] = file_record(
            run.test_path, _rows(run, "test"), run.chunk_sources["test"][2]
        )
    return records


# The summary's figures the card keeps under "metrics" (those the run has): how the head was
# chosen, the test scores, the metric, the tunings' dev scores.
METRIC_KEYS = (
    "cv_accuracy",
    "holdout_accuracy",
    "test_accuracy",
    "test_f1_micro",
    "test_f1_macro",
    "test_subset_accuracy",
    "test_per_label",
    "n_train",
    "n_test",
    "metric",
    "vote_cv_accuracy",
    "dev_accuracy",
    "dev_f1_micro",
    "teacher_test_agreement",
)


def _card_record(run: TrainingRun, result: TrainResult) -> tuple[dict[str, Any], dict[str, Any]]:
    """The card's ``metrics`` and the records beside them (the encoders compared, the sweep,
    the decision threshold, the tunings, what the target adds), from what the stages did."""
    summary = result.to_dict()
    metric = summary.get("metric", "accuracy")
    keys = [*METRIC_KEYS, f"cv_{metric}", f"test_{metric}"] if metric != "accuracy" else METRIC_KEYS
    # Scores by label (a label-set head's CV accuracy, say) stay in the probe's record; the
    # test scores by label are the one table kept here.
    metrics = {
        k: summary[k]
        for k in keys
        if k in summary and (k == "test_per_label" or not isinstance(summary[k], dict))
    }
    if run.text_model is None:  # the vote's CV figure, for a model that votes
        metrics.pop("vote_cv_accuracy", None)
    assert run.classes is not None
    extra: dict[str, Any] = run.target.card_record(run.reading, run.classes)
    if run.swept is not None:
        extra["sweep"] = run.swept.to_dict()
    if run.threshold is not None:
        extra["decision_threshold"] = run.threshold
    if run.compared is not None:
        extra["compare"] = run.compared.summary()
    extra.update(_tuning_records(run))
    if run.zero_shot is not None:
        extra["zero_shot"] = {**run.zero_shot.record(), "self_training": run.self_trained}
    return metrics, extra


def _tuning_records(run: TrainingRun) -> dict[str, Any]:
    """What the card says of each tuning of the encoder, under its ``card_key``
    (``contrastive``, ``distill``, ``finetune``)."""
    return {tuning.card_key: tuning.card_record(record) for tuning, record in run.adapted}


def sweep(
    data: str | Path | LabelledTexts,
    *,
    encoding: EncoderOptions = EncoderOptions(),
    options: TrainOptions = TrainOptions(Cs="coarse"),
    reading: ReadOptions = ReadOptions(),
    tfidf: bool = True,
) -> SweepResult:
    """Score every hidden layer x pooling (and concatenations) by cross-validation on
    labelled data: what ``train(..., options=TrainOptions(auto=True))`` does first.

    ``options`` gives the folds, the C values, the processes and the poolings tried;
    ``tfidf`` also scores the TF-IDF baseline and its vote with the best candidate.
    """
    train_set = read_training_set(data, reading, options.cv)
    with encoding.open_cache() as cache:
        return sweep_features(train_set, encoding, options, options.grid, cache=cache, tfidf=tfidf)


def _with_card(folder: Path, trained: Classifier) -> Classifier:
    """The model as saved (its card, its encoder as loading finds it: a fine-tuned one in the
    folder), keeping the fitted objects already in memory."""
    trained.card = read_card(folder)
    trained.encoder = card_encoder(folder, trained.card)
    trained.folder = folder
    return trained
