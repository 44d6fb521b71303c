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

import hashlib
import json
import shutil
import time
import typing
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, replace
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np

from bertprobe.core.errors import BadInputError, BertprobeError
from bertprobe.core.tables import python_value
from bertprobe.data.files import (
    FileSummary,
    LabelledTexts,
    ReadOptions,
    align_labels,
    is_parquet,
    scan_labels,
)
from bertprobe.encoders.cache import EmbeddingCache, default_cache_dir
from bertprobe.encoders.encode import (
    POOLINGS,
    EmbedStats,
    EncoderOptions,
    FeatureSpec,
    LoadedEncoder,
    Pooling,
    RunOptions,
    check_pooling,
    embed,
    resolve_encoder,
)
from bertprobe.encoders.features import (
    iter_feature_rows,
    iter_parquet_vectors,
    parquet_job,
    parquet_rows,
    vectors_job,
    write_features,
)
from bertprobe.heads.multilabel import MultiLabelProbe
from bertprobe.heads.probe import (
    COARSE_C_GRID,
    LinearProbe,
    OutOfCoreProbe,
    VotingProbe,
    best_threshold,
    check_class_weight,
    check_metric,
    check_trainable,
    metric_score,
    parse_c_grid,
)
from bertprobe.heads.tfidf import TFIDF_C_GRID, tfidf_pipeline
from bertprobe.model.classifier import Classifier, Probe, accuracy
from bertprobe.model.persist import (
    card_encoder,
    check_model_destination,
    data_records,
    file_record,
    read_card,
    save_model,
)
from bertprobe.training.finetune import FinetuneOptions, FinetuneResult, split_dev, workdir_for
from bertprobe.training.finetune import finetune as run_finetune
from bertprobe.training.label_issues import LabelIssue, find_label_issues
from bertprobe.training.sweep import FINALISTS, SweepResult, parse_poolings, run_sweep


@dataclass(frozen=True)
class TrainOptions:
    """How the probe is chosen and fitted. Built once; checked when built.

    Parameters
    ----------
    Cs : str or tuple of float
        C values to search: ``"default"`` (log-spaced 1e-4 .. 100), ``"coarse"``, ``"seed"``
        (the recipe's ``linspace(0.0001, 100, 20)``), a comma list, or a tuple of floats.
    cv : int
        Stratified cross-validation folds for choosing C (at least 2).
    n_jobs : int
        Processes for the folds; -1 is one per CPU core. Not 0.
    auto : bool
        Choose layer(s) and pooling by a CV sweep on the training data first, and add the
        TF-IDF voter when CV prefers the vote (the encoder options' pooling and layers are
        then replaced by the sweep's choice).
    poolings : tuple of str or str
        The poolings the ``auto`` sweep tries.
    finalists : int
        How many of the ``auto`` sweep's candidates, ranked by a cheap ridge screen, get the
        full CV of the probe (see :mod:`bertprobe.training.sweep`); 0 scores every candidate by CV
        (the exhaustive sweep: several times slower, rarely a better choice). With ``auto``,
        the final probe searches the C values of ``Cs`` next to the one the sweep chose.
    out_of_core : bool
        For training sets larger than memory: features streamed to disk, the probe fitted by
        SGD a chunk at a time (:class:`~bertprobe.heads.probe.OutOfCoreProbe`). Not with ``auto``.
    features : path, optional
        With ``out_of_core``: the training file's vectors, already computed by ``bertprobe
        embed FILE --out X.parquet`` (or ``embed --ray``), used instead of embedding it again.
        The file must say it holds the vectors of this very training file (by SHA-256) made
        with these encoder options; only the labels are read from the training file.
    class_weight : None or "balanced"
        ``"balanced"`` weighs each class inversely to its frequency in the loss, so a rare
        class is not outvoted (both probes; out of core, from the label counts). With
        ``multi_label``: each label's texts with and without it.
    metric : {"accuracy", "balanced_accuracy", "f1_macro", "roc_auc"}
        What C is chosen by, what the ``auto`` sweep ranks candidates by, and what the
        decision threshold (two classes) maximizes; reported as ``cv_<metric>`` and
        ``test_<metric>`` beside accuracy. With ``multi_label``: what each label's C is
        chosen by (its thresholds are 0.5, or tuned for F1).
    label_issues : bool
        Also find the training rows whose label the model doubts (from the out-of-fold
        probabilities; see :mod:`bertprobe.training.label_issues`), in
        :attr:`TrainResult.label_issues`.
        Not with ``out_of_core``. With ``finetune`` the encoder has seen every training label,
        so the probabilities are out of fold for the probe only, and flips it learned are missed.

    Examples
    --------
    >>> TrainOptions(Cs="0.1,1", cv=3).Cs
    (0.1, 1.0)
    """

    Cs: tuple[float, ...] | str = "default"
    cv: int = 5
    n_jobs: int = -1
    auto: bool = False
    poolings: tuple[Pooling, ...] | str = POOLINGS
    finalists: int = FINALISTS
    out_of_core: bool = False
    features: str | Path | None = None
    class_weight: str | None = None
    metric: str = "accuracy"
    label_issues: bool = False
    multi_label: bool = False
    tune_thresholds: bool = False

    @property
    def grid(self) -> tuple[float, ...]:
        """The C values, as numbers (``Cs`` after parsing)."""
        return typing.cast(tuple[float, ...], self.Cs)

    def __post_init__(self) -> None:
        grid = parse_c_grid(self.Cs) if isinstance(self.Cs, str) else tuple(self.Cs)
        if not grid or any(not c > 0 for c in grid):
            raise BadInputError(f"Cs={self.Cs!r}: give positive C values")
        object.__setattr__(self, "Cs", grid)
        if isinstance(self.poolings, str):
            object.__setattr__(self, "poolings", parse_poolings(self.poolings))
        if self.cv < 2:
            raise BadInputError(f"cv={self.cv}: cross-validation needs at least 2 folds")
        if self.n_jobs == 0:
            raise BadInputError("n_jobs=0 runs nothing; use 1, or -1 for one per CPU core")
        if self.finalists < 0:
            raise BadInputError(
                f"finalists={self.finalists}: give how many screened candidates get the full "
                "CV (3 is the default), or 0 for all of them"
            )
        check_metric(self.metric)
        if isinstance(self.class_weight, dict):
            raise BadInputError("class_weight: give 'balanced' or None (LinearProbe takes a dict)")
        check_class_weight(self.class_weight)
        if self.label_issues and self.out_of_core:
            raise BadInputError(
                "label_issues=True and out_of_core=True do not combine (the out-of-fold pass "
                "holds the training vectors in memory); train in memory"
            )
        if self.auto and self.out_of_core:
            raise BadInputError(
                "auto=True and out_of_core=True do not combine (the sweep holds every layer of the "
                "training set in memory); choose the pooling and layers, or train in memory"
            )
        if self.multi_label and (self.auto or self.out_of_core):
            raise BadInputError(
                "multi_label=True trains in memory on the pooling and layers given; leave out "
                + ("auto=True" if self.auto else "out_of_core=True")
            )
        if self.multi_label and self.label_issues:
            raise BadInputError(
                "multi_label=True does not look for label issues yet; leave out label_issues=True"
            )
        if self.tune_thresholds and not self.multi_label:
            raise BadInputError(
                "tune_thresholds=True tunes the per-label thresholds of a multi-label model; "
                "add multi_label=True or leave it out"
            )
        if self.features is not None and not self.out_of_core:
            raise BadInputError(
                "features= (precomputed training vectors) is for out_of_core=True training; "
                "add it, or leave the features out"
            )


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
    finetune: FinetuneResult | None = None
    metric: str = "accuracy"
    test_score: float | None = None  # test_<metric>
    decision_threshold: dict[str, Any] | None = None
    label_issues: list[LabelIssue] | None = None
    test_scores: dict[str, Any] | None = None  # multi-label: F1 micro / macro, per label

    @property
    def probe(self) -> Probe:
        return self.model.probe

    @property
    def cv_accuracy(self) -> float | None:
        return getattr(self.probe, "cv_accuracy_", None)

    def to_dict(self) -> dict[str, Any]:
        """The JSON-ready summary ``bertprobe train --json`` prints."""
        probe, spec = self.probe, self.model.spec
        if isinstance(probe, MultiLabelProbe):
            from bertprobe.model.multilabel import training_summary

            return training_summary(self)
        metric = self.metric
        scores: dict[str, Any] = {"metric": metric}
        if metric != "accuracy":
            scores[f"cv_{metric}"] = getattr(probe, "cv_score_", None)
            scores[f"test_{metric}"] = self.test_score
        common = {
            "test_accuracy": self.test_accuracy,
            **scores,
            "class_weight": getattr(probe, "class_weight", None),
            "decision_threshold": self.decision_threshold,
            "n_label_issues": len(self.label_issues) if self.label_issues is not None else None,
            "n_train": self.n_train,
            "n_test": self.n_test,
            "labels": [python_value(c) for c in probe.classes_],
            "encoder": self.model.encoder.name,
            "pooling": spec.pooling,
            "backend": self.model.backend,
            "embed_seconds": self.embed_seconds,
            "fit_seconds": self.fit_seconds,
            "model_dir": str(self.out) if self.out is not None else None,
        }
        if isinstance(probe, OutOfCoreProbe):
            return {
                "holdout_accuracy": probe.holdout_accuracy_,
                "alpha": probe.alpha_,
                **common,
                "layer": list(spec.layers),
            }
        stats = [s for s in (self.train_stats, self.test_stats) if s is not None]
        sweep, tuned = self.sweep, self.finetune
        tuning = (
            {
                "epochs_run": tuned.epochs_run,
                "finetune_seconds": tuned.seconds,
                "dev_accuracy": tuned.dev_accuracy,
            }
            if tuned is not None
            else {}
        )
        return {
            "cv_accuracy": probe.cv_accuracy_,
            "C": probe.C_,
            **common,
            "encoder_fingerprint": self.model.encoder.fingerprint,
            "layer": list(spec.layers) if len(spec.layers) > 1 else spec.layers[0],
            "max_length": self.train_stats.max_length if self.train_stats else spec.max_length,
            "n_cached": sum(s.n_cached for s in stats),
            "n_truncated": sum(s.n_truncated for s in stats),
            "long": spec.long,
            "n_windows": sum(s.n_windows for s in stats),
            "auto": sweep.choice if sweep is not None else None,
            "vote_cv_accuracy": sweep.vote_cv_accuracy if sweep is not None else None,
            "sweep_seconds": sweep.seconds if sweep is not None else None,
            **tuning,
        }


def train(
    data: str | Path | LabelledTexts,
    *,
    test: str | Path | LabelledTexts | None = None,
    encoding: EncoderOptions = EncoderOptions(),
    options: TrainOptions = TrainOptions(),
    reading: ReadOptions = ReadOptions(),
    finetune: FinetuneOptions | None = None,
    out: str | Path | None = None,
) -> TrainResult:
    """Train a model on labelled data; save it to ``out`` when given.

    With ``finetune``, the encoder's weights are first fine-tuned on the training data (see
    :mod:`bertprobe.training.finetune`); the probe is then fitted on the tuned encoder's features,
    and
    the model folder holds the tuned encoder.

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
    if options.multi_label or reading.multi_label:
        from bertprobe.model.multilabel import train_multilabel

        if finetune is not None:
            raise BadInputError(
                "finetune= and multi_label=True do not combine (fine-tuning learns one label "
                "per text); train the multi-label probe on the frozen encoder"
            )
        return train_multilabel(
            data, test=test, encoding=encoding, options=options, reading=reading, out=out
        )
    if finetune is not None and options.out_of_core:
        raise BadInputError(
            "finetune= and out_of_core=True do not combine (fine-tuning holds the training "
            "set in memory); train in memory"
        )
    if options.out_of_core:
        if isinstance(data, LabelledTexts) or isinstance(test, LabelledTexts):
            raise BadInputError("out_of_core trains from files, a chunk at a time; pass paths")
        return _train_out_of_core(
            Path(data),
            Path(test) if test is not None else None,
            out,
            encoding,
            reading,
            Path(options.features) if options.features is not None else None,
            class_weight=options.class_weight,
            metric=options.metric,
        )

    train_set = read_training_set(data, reading, options.cv)
    test_set = _labelled(test, reading) if test is not None else None
    if test_set is not None:  # before any work: a test file with other labels is refused now
        align_labels(
            test_set.labels or [], sorted(set(train_set.labels or []), key=str), test_set.source
        )
    train_labels = list(train_set.labels or [])

    tuned, base = None, None
    if finetune is not None:
        # The dev rows are checked (read, labels, enough rows) before the encoder loads.
        dev = _labelled(finetune.dev, reading) if finetune.dev is not None else None
        train_rows, dev_rows = split_dev(train_set, finetune, dev)
        base = resolve_encoder(encoding.encoder)  # the tuned folder is named after it
        cache_dir = Path(encoding.run.cache_dir or default_cache_dir())
        workdir = workdir_for(cache_dir, train_rows, dev_rows, encoding, finetune)
        tuned = run_finetune(
            train_rows, dev_rows, encoding=encoding, options=finetune, workdir=workdir
        )
        encoding = replace(encoding, encoder=str(tuned.encoder_folder))
    encoder = encoding.load()
    encoder_ref = replace(encoder.ref, name=f"{base.name} (fine-tuned)") if base else encoder.ref
    swept: SweepResult | None = None
    with encoding.open_cache() as cache:
        if options.auto:
            swept = _sweep(train_set, encoding, options, COARSE_C_GRID, cache=cache)
            best = swept.best
            encoding = replace(
                encoding, pooling=check_pooling(best.pooling), layers=tuple(best.layers)
            )
        spec = encoding.spec
        X_train, train_stats, X_test, test_stats = embed_sets(
            encoder, spec, encoding.run, cache, train_set, test_set
        )

    fit_start = time.perf_counter()
    voter = None
    if swept is not None and swept.vote_wins:
        # The sweep chose the voter's C by the same folds: the final fit keeps it.
        chosen = (swept.tfidf_C,) if swept.tfidf_C is not None else TFIDF_C_GRID
        voter = tfidf_pipeline(cv=options.cv, Cs=chosen, n_jobs=options.n_jobs)
    Cs = options.grid if swept is None else _near(options.grid, swept.best.C)
    probe = LinearProbe(
        Cs=Cs,
        cv=options.cv,
        n_jobs=options.n_jobs,
        class_weight=options.class_weight,
        scoring=options.metric,
    )
    head = VotingProbe(probe, text_model=voter)
    head.fit(X_train, train_labels, texts=train_set.texts)
    classes = head.classes_.tolist()
    # One out-of-fold pass serves both: the threshold (two classes, the probe alone: a vote's
    # probabilities are not the probe's) and the label issues.
    wants_threshold = len(classes) == 2 and voter is None
    threshold, issues = None, None
    if wants_threshold or options.label_issues:
        oof = head.probe_.out_of_fold_proba(X_train, train_labels)
        if wants_threshold:
            threshold = _threshold_record(train_labels, oof, classes, options.metric)
        if options.label_issues:
            issues = find_label_issues(train_labels, oof, classes)
    fit_seconds = time.perf_counter() - fit_start
    model = Classifier(
        # Unsaved, the card holds only the threshold (for predict(threshold="auto")); saving
        # writes the whole card, the threshold with it.
        card={"decision_threshold": threshold} if threshold is not None else {},
        probe=head.probe_,
        encoder=encoder_ref,
        spec=spec,
        backend=encoding.backend,
        text_model=head.text_model_,
    )
    test_accuracy, test_score = None, None
    if test_set is not None and X_test is not None:
        test_proba = head.predict_proba(X_test, texts=test_set.texts)
        predicted = head.classes_[test_proba.argmax(axis=1)]
        test_accuracy = accuracy(test_set.labels or [], predicted)
        test_score = metric_score(options.metric, test_set.labels or [], test_proba, classes)

    result = TrainResult(
        model=model,
        n_train=len(train_set),
        n_test=len(test_set) if test_set is not None else 0,
        test_accuracy=test_accuracy,
        embed_seconds=train_stats.seconds + (test_stats.seconds if test_stats else 0.0),
        fit_seconds=fit_seconds,
        out=out,
        train_data=train_set,
        test_data=test_set,
        train_stats=train_stats,
        test_stats=test_stats,
        sweep=swept,
        finetune=tuned,
        metric=options.metric,
        test_score=test_score,
        decision_threshold=threshold,
        label_issues=issues,
    )
    if out is not None:
        records = data_records(train_set, test_set)
        summary = result.to_dict()
        metrics = {k: summary[k] for k in ("cv_accuracy", "test_accuracy", "n_train", "n_test")}
        metrics.update(_metric_record(summary))
        if model.text_model is not None and swept is not None:
            metrics["vote_cv_accuracy"] = swept.vote_cv_accuracy
        if tuned is not None:
            metrics["dev_accuracy"] = tuned.dev_accuracy
        extra: dict[str, Any] = {"sweep": swept.to_dict()} if swept is not None else {}
        if threshold is not None:
            extra["decision_threshold"] = threshold
        if tuned is not None and finetune is not None:
            extra["finetune"] = _finetune_record(tuned, finetune)
        save_model(
            out,
            model.probe,
            encoder_ref,
            spec,
            max_length=train_stats.max_length,
            backend=encoding.backend,
            metrics=metrics,
            data=records,
            extra=extra or None,
            text_model=model.text_model,
            encoder_folder=tuned.encoder_folder if tuned is not None else None,
            base_encoder=base,
        )
        result.model = _with_card(out, model)
        if tuned is not None and tuned.workdir is not None:  # the folder holds its own copy
            shutil.rmtree(tuned.workdir, ignore_errors=True)
    return result


def _near(grid: Sequence[float], chosen: float | None) -> tuple[float, ...]:
    """The grid's values next to ``chosen`` (the sweep's C on the coarse grid): the final
    search refines the sweep's choice instead of repeating it, and skips the weakest
    regularization when the sweep did not want it (those fits run longest)."""
    ordered = sorted(grid)
    if chosen is None:
        return tuple(ordered)
    at = int(np.argmin(np.abs(np.log(ordered) - np.log(chosen))))
    return tuple(ordered[max(0, at - 1) : at + 2])


def _metric_record(summary: dict[str, Any]) -> dict[str, Any]:
    """The chosen metric and its scores, as the card's metrics record them."""
    metric = summary["metric"]
    keys = [f"cv_{metric}", f"test_{metric}"] if metric != "accuracy" else []
    return {"metric": metric, **{k: summary[k] for k in keys if k in summary}}


def _threshold_record(
    labels: Sequence[Any], oof: np.ndarray, classes: list, metric: str
) -> dict[str, Any]:
    """The decision threshold the card keeps: on the probability of ``classes[1]``, chosen on
    out-of-fold probabilities to maximize ``metric``, with that metric there and at 0.5."""
    value, score = best_threshold(labels, oof, classes, metric)
    by = "balanced_accuracy" if metric == "roc_auc" else metric
    return {
        "value": value,
        "positive_label": python_value(classes[1]),
        "metric": by,
        "oof_score": score,
        "oof_score_argmax": metric_score(by, labels, oof, classes),
    }


def embed_sets(
    encoder: LoadedEncoder,
    spec: FeatureSpec,
    run: RunOptions,
    cache: EmbeddingCache | None,
    train_set: LabelledTexts,
    test_set: LabelledTexts | None,
) -> tuple[np.ndarray, EmbedStats, np.ndarray | None, EmbedStats | None]:
    """The training set's vectors and, when there is a test set, its vectors: one encoder,
    one way of running it."""
    options: dict[str, Any] = dict(
        batch_size=run.batch_size, max_tokens=run.max_tokens, cache=cache, progress=run.progress
    )
    X_train, train_stats = embed(train_set.texts, encoder, spec, **options)
    if test_set is None:
        return X_train, train_stats, None, None
    X_test, test_stats = embed(test_set.texts, encoder, spec, **options)
    return X_train, train_stats, X_test, test_stats


def _finetune_record(tuned: FinetuneResult, options: FinetuneOptions) -> dict[str, Any]:
    """What the card says of the fine-tuning: the options, the dev scores, the time."""
    return {
        "epochs": options.epochs,
        "min_steps": options.min_steps,
        "lr": options.lr,
        "seed": options.seed,
        "warmup": options.warmup,
        "weight_decay": options.weight_decay,
        "bf16": options.bf16,
        "dev": str(options.dev) if options.dev is not None else f"{options.dev_share} of train",
        "n_train": tuned.n_train,
        "n_dev": tuned.n_dev,
        "epochs_run": tuned.epochs_run,
        "best_epoch": tuned.best_epoch,
        "dev_accuracy": tuned.dev_accuracy,
        "dev_history": tuned.dev_history,
        "dev_epochs": tuned.dev_epochs,
        "seconds": tuned.seconds,
    }


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
        return _sweep(train_set, encoding, options, options.grid, cache=cache, tfidf=tfidf)


def _sweep(
    train_set: LabelledTexts,
    encoding: EncoderOptions,
    options: TrainOptions,
    Cs: Sequence[float],
    *,
    cache: EmbeddingCache | None,
    tfidf: bool = True,
) -> SweepResult:
    return run_sweep(
        train_set.texts,
        train_set.labels or [],
        encoding.load(),
        poolings=tuple(options.poolings),
        cv=options.cv,
        Cs=Cs,
        finalists=options.finalists,
        max_length=encoding.max_length,
        long=encoding.long,
        stride=encoding.stride,
        window_pool=encoding.window_pool,
        cache=cache,
        batch_size=encoding.run.batch_size,
        n_jobs=options.n_jobs,
        tfidf=tfidf,
        progress=encoding.run.progress,
        metric=options.metric,
        class_weight=options.class_weight,
    )


def _train_out_of_core(
    data: Path,
    test: Path | None,
    out: Path | None,
    encoding: EncoderOptions,
    reading: ReadOptions,
    train_features: Path | None = None,
    *,
    class_weight: str | None = None,
    metric: str = "accuracy",
) -> TrainResult:
    """File -> features on disk (resumable) -> OutOfCoreProbe, a chunk at a time.

    ``train_features``: the training file's vectors from ``embed --out X.parquet``, checked
    against the file and the encoder options, instead of embedding the file here.
    """
    encoder = encoding.load()
    spec = encoding.spec
    feature_dir = Path(encoding.run.cache_dir or default_cache_dir()) / "features"
    start = time.perf_counter()
    # Labels first: this pass checks every row, so embedding starts only on sound files.
    scanned = {
        split: scan_labels(
            path,
            text_col=reading.text_col,
            label_col=reading.label_col,
            drop_empty=reading.drop_empty,
            max_field_chars=reading.max_field_chars,
        )
        for split, path in (("train", data), ("test", test))
        if path is not None
    }
    labels_of = {split: np.asarray(labels) for split, (labels, _) in scanned.items()}
    try:
        check_trainable(labels_of["train"].tolist(), 2)
    except BadInputError as exc:
        raise BadInputError(f"{data}: {exc}") from None
    if test is not None:
        known = sorted(set(labels_of["train"].tolist()), key=str)
        align_labels(labels_of["test"].tolist(), known, str(test))
    if train_features is not None:
        _check_features_match(train_features, data, scanned["train"][1], encoder, spec, reading)
    # split -> (rows of vectors a chunk at a time, labels, the source file's SHA-256)
    splits: dict[str, tuple[Callable[[int], Iterator[np.ndarray]], np.ndarray, str]] = {}
    for split, path in (("train", data), ("test", test)):
        if path is None:
            continue
        labels = labels_of[split]
        if split == "train" and train_features is not None:
            splits[split] = (
                partial(iter_parquet_vectors, train_features),
                labels,
                scanned[split][1].sha256,
            )
            continue
        job = json.dumps(
            [
                str(path.resolve()),
                encoder.ref.fingerprint,
                encoding.backend,
                spec.pooling,
                spec.layers,
                spec.max_length,
                None if reading.text_col is None else str(reading.text_col),
                reading.drop_empty,
                *([spec.long_record()] if spec.long != "truncate" else []),
            ]
        )
        features = feature_dir / f"{hashlib.sha256(job.encode()).hexdigest()[:24]}.npy"
        stats = write_features(path, features, encoding=encoding, reading=reading)
        if stats.n_texts != len(labels):  # both passes skip the same rows; guard the pairing
            raise BertprobeError(f"{path}: {stats.n_texts} vectors for {len(labels)} labels")
        splits[split] = (
            partial(iter_feature_rows, features),
            labels,
            stats.source_sha256,
        )
    embed_seconds = time.perf_counter() - start

    def chunks(split: str, rows: int = 8192) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        vectors, labels, _ = splits[split]
        done = 0
        for X in vectors(rows):  # Parquet batches may be shorter than asked: count, not step
            yield X, labels[done : done + len(X)]
            done += len(X)
        if done != len(labels):
            raise BertprobeError(f"{split}: {done} vectors for {len(labels)} labels")

    fit_start = time.perf_counter()
    probe = OutOfCoreProbe(class_weight=class_weight).fit_chunks(lambda: chunks("train"))
    fit_seconds = time.perf_counter() - fit_start
    test_accuracy, test_score = None, None
    if "test" in splits:
        # One row of probabilities a test row: small beside the vectors (classes, not dims).
        test_proba = np.concatenate([probe.predict_proba(X) for X, _ in chunks("test")])
        truth = splits["test"][1]
        test_accuracy = accuracy(truth, probe.classes_[test_proba.argmax(axis=1)])
        test_score = metric_score(metric, truth, test_proba, probe.classes_.tolist())
    n_train = len(splits["train"][1])
    n_test = len(splits["test"][1]) if "test" in splits else 0
    model = Classifier(
        card={}, probe=probe, encoder=encoder.ref, spec=spec, backend=encoding.backend
    )
    if out is not None:
        records = {"train": file_record(data, n_train, splits["train"][2])}
        if test is not None:
            records["test"] = file_record(test, n_test, splits["test"][2])
        metrics = {
            "holdout_accuracy": probe.holdout_accuracy_,
            "test_accuracy": test_accuracy,
            "n_train": n_train,
            "n_test": n_test,
            "metric": metric,
            **({f"test_{metric}": test_score} if metric != "accuracy" else {}),
        }
        save_model(
            out,
            probe,
            encoder.ref,
            spec,
            max_length=spec.max_length or encoder.max_length,
            backend=encoding.backend,
            metrics=metrics,
            data=records,
        )
        model = _with_card(out, model)
    return TrainResult(
        model=model,
        n_train=n_train,
        n_test=n_test,
        test_accuracy=test_accuracy,
        embed_seconds=embed_seconds,
        fit_seconds=fit_seconds,
        out=out,
        feature_dir=feature_dir,
        metric=metric,
        test_score=test_score,
    )


def _check_features_match(
    features: Path,
    data: Path,
    scanned: FileSummary,
    encoder: LoadedEncoder,
    spec: FeatureSpec,
    reading: ReadOptions,
) -> None:
    """Refuse precomputed vectors that are not those of ``data`` under these options: paired
    with the wrong labels they would train a model that looks fine and is not."""
    if not is_parquet(features):
        raise BadInputError(
            f"--features {features}: give the Parquet file `bertprobe embed {data} --out "
            "X.parquet` wrote"
        )
    job = parquet_job(features)
    if job is None:
        raise BadInputError(
            f"--features {features}: the file does not say how its vectors were made; write it "
            f"with `bertprobe embed {data} --out X.parquet`"
        )
    sources = job.get("sources") or []
    if [s.get("sha256") for s in sources] != [scanned.sha256]:
        made_from = ", ".join(str(s.get("path")) for s in sources) or "no file"
        raise BadInputError(
            f"--features {features}: holds the vectors of {made_from}, not of {data} as it "
            f"is now; embed {data} again"
        )
    rows = parquet_rows(features)
    if rows != scanned.n:
        raise BadInputError(
            f"--features {features}: {rows:,} vectors for the {scanned.n:,} rows of {data}; "
            "the file was cut short or changed, embed again"
        )
    expected = vectors_job(encoder, spec, reading.text_col, reading.drop_empty)
    differ = [key for key, value in expected.items() if job.get(key) != value]
    if differ:
        found = ", ".join(f"{key} {job.get(key)!r} (here {expected[key]!r})" for key in differ)
        raise BadInputError(
            f"--features {features}: made with other options: {found}; embed again with the "
            "options given here, or give those options"
        )


def read_training_set(
    data: str | Path | LabelledTexts, reading: ReadOptions, cv: int
) -> LabelledTexts:
    """A labelled set checked for cross-validated training before anything is embedded."""
    train_set = _labelled(data, reading)
    try:
        check_trainable(train_set.labels or [], cv)
    except BadInputError as exc:
        raise BadInputError(f"{train_set.source}: {exc}") from None
    return train_set


def _labelled(data: str | Path | LabelledTexts, reading: ReadOptions) -> LabelledTexts:
    return data if isinstance(data, LabelledTexts) else reading.read_labelled(data)


def _with_card(folder: Path, trained: Classifier) -> Classifier:
    """The model as saved (its card, its encoder as loading finds it: a fine-tuned one in the
    folder), keeping the fitted objects already in memory."""
    trained.card = read_card(folder)
    trained.encoder = card_encoder(folder, trained.card)
    trained.folder = folder
    return trained
