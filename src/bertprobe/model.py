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
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from bertprobe.cache import default_cache_dir
from bertprobe.data import LabelledTexts, ReadOptions, align_labels, iter_chunks
from bertprobe.encode import (
    POOLINGS,
    EmbedStats,
    EncoderOptions,
    Pooling,
    check_pooling,
    embed,
)
from bertprobe.errors import BadInputError, BertprobeError
from bertprobe.features import embed_file, iter_feature_rows
from bertprobe.persist import (
    Classifier,
    check_model_destination,
    file_record,
    read_card,
    save_model,
)
from bertprobe.probe import LinearProbe, OutOfCoreProbe, check_trainable, parse_c_grid
from bertprobe.sweep import SweepResult, parse_poolings, run_sweep, tfidf_pipeline


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
    out_of_core : bool
        For training sets larger than memory: features streamed to disk, the probe fitted by
        SGD a chunk at a time (:class:`~bertprobe.probe.OutOfCoreProbe`). Not with ``auto``.

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
    out_of_core: bool = False

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
        if self.auto and self.out_of_core:
            raise BadInputError(
                "auto and out_of_core do not combine (the sweep holds every layer of the "
                "training set in memory); choose the pooling and layers, or train in memory"
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

    @property
    def probe(self) -> LinearProbe | OutOfCoreProbe:
        return self.model.probe

    @property
    def cv_accuracy(self) -> float | None:
        return getattr(self.probe, "cv_accuracy_", None)

    def to_dict(self) -> dict[str, Any]:
        """The JSON-ready summary ``bertprobe train --json`` prints."""
        probe, spec = self.probe, self.model.spec
        common = {
            "test_accuracy": self.test_accuracy,
            "n_train": self.n_train,
            "n_test": self.n_test,
            "labels": [_jsonable(c) for c in probe.classes_],
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
        sweep = self.sweep
        return {
            "cv_accuracy": probe.cv_accuracy_,
            "C": probe.C_,
            **common,
            "encoder_fingerprint": self.model.encoder.fingerprint,
            "layer": list(spec.layers) if len(spec.layers) > 1 else spec.layers[0],
            "max_length": self.train_stats.max_length if self.train_stats else spec.max_length,
            "n_cached": sum(s.n_cached for s in stats),
            "n_truncated": sum(s.n_truncated for s in stats),
            "auto": sweep.choice if sweep is not None else None,
            "vote_cv_accuracy": sweep.vote_cv_accuracy if sweep is not None else None,
            "sweep_seconds": sweep.seconds if sweep is not None else None,
        }


def train(
    data: str | Path | LabelledTexts,
    *,
    test: str | Path | LabelledTexts | None = None,
    encoding: EncoderOptions = EncoderOptions(),
    options: TrainOptions = TrainOptions(),
    reading: ReadOptions = ReadOptions(),
    out: str | Path | None = None,
) -> TrainResult:
    """Train a model on labelled data; save it to ``out`` when given.

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
    if options.out_of_core:
        if isinstance(data, LabelledTexts) or isinstance(test, LabelledTexts):
            raise BadInputError("out_of_core trains from files, a chunk at a time; pass paths")
        return _train_out_of_core(
            Path(data), Path(test) if test is not None else None, out, encoding, reading
        )

    train_set = read_training_set(data, reading, options.cv)
    test_set = _labelled(test, reading) if test is not None else None
    if test_set is not None:  # before any work: a test file with other labels is refused now
        align_labels(
            test_set.labels or [], sorted(set(train_set.labels or []), key=str), test_set.source
        )
    train_labels = list(train_set.labels or [])

    encoder = encoding.load()
    sweep: SweepResult | None = None
    with encoding.open_cache() as cache:
        if options.auto:
            sweep = run_sweep(
                train_set.texts,
                train_labels,
                encoder,
                poolings=tuple(options.poolings),
                cv=options.cv,
                max_length=encoding.max_length,
                cache=cache,
                batch_size=encoding.batch_size,
                n_jobs=options.n_jobs,
                progress=encoding.progress,
            )
            best = sweep.best
            encoding = replace(
                encoding, pooling=check_pooling(best.pooling), layers=tuple(best.layers)
            )
        spec = encoding.spec
        embed_options: dict[str, Any] = dict(
            batch_size=encoding.batch_size,
            max_tokens=encoding.max_tokens,
            cache=cache,
            progress=encoding.progress,
        )
        X_train, train_stats = embed(train_set.texts, encoder, spec, **embed_options)
        X_test, test_stats = (
            embed(test_set.texts, encoder, spec, **embed_options)
            if test_set is not None
            else (None, None)
        )

    fit_start = time.perf_counter()
    probe = LinearProbe(Cs=options.Cs, cv=options.cv, n_jobs=options.n_jobs)
    probe.fit(X_train, train_labels)
    voter = None
    if sweep is not None and sweep.vote_wins:
        voter = tfidf_pipeline(cv=options.cv, n_jobs=options.n_jobs)
        voter.fit(train_set.texts, train_labels)
    fit_seconds = time.perf_counter() - fit_start
    model = Classifier(
        card={},
        probe=probe,
        encoder=encoder.ref,
        spec=spec,
        backend=encoding.backend,
        text_model=voter,
    )
    test_accuracy = None
    if test_set is not None and X_test is not None:
        predicted = model.predict_from(X_test, test_set.texts)
        test_accuracy = accuracy(test_set.labels or [], predicted)

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
        sweep=sweep,
    )
    if out is not None:
        data_records = {"train": file_record(train_set.source, len(train_set), train_set.sha256)}
        if test_set is not None:
            data_records["test"] = file_record(test_set.source, len(test_set), test_set.sha256)
        summary = result.to_dict()
        metrics = {k: summary[k] for k in ("cv_accuracy", "test_accuracy", "n_train", "n_test")}
        if voter is not None and sweep is not None:
            metrics["vote_cv_accuracy"] = sweep.vote_cv_accuracy
        save_model(
            out,
            probe,
            encoder.ref,
            spec,
            max_length=train_stats.max_length,
            backend=encoding.backend,
            metrics=metrics,
            data=data_records,
            extra={"sweep": sweep.to_dict()} if sweep is not None else None,
            text_model=voter,
        )
        result.model = _with_card(out, model)
    return result


def _train_out_of_core(
    data: Path,
    test: Path | None,
    out: Path | None,
    encoding: EncoderOptions,
    reading: ReadOptions,
) -> TrainResult:
    """File -> features on disk (resumable) -> OutOfCoreProbe, a chunk at a time."""
    encoder = encoding.load()
    spec = encoding.spec
    feature_dir = Path(encoding.cache_dir or default_cache_dir()) / "features"
    start = time.perf_counter()
    # Labels first: this pass checks every row, so embedding starts only on sound files.
    labels_of = {
        split: np.asarray(
            [
                y
                for chunk in iter_chunks(
                    path,
                    want_labels=True,
                    text_col=reading.text_col,
                    label_col=reading.label_col,
                    drop_empty=reading.drop_empty,
                )
                for y in chunk.labels or []
            ]
        )
        for split, path in (("train", data), ("test", test))
        if path is not None
    }
    try:
        check_trainable(labels_of["train"].tolist(), 2)
    except BadInputError as exc:
        raise BadInputError(f"{data}: {exc}") from None
    if test is not None:
        known = sorted(set(labels_of["train"].tolist()), key=str)
        align_labels(labels_of["test"].tolist(), known, str(test))
    splits: dict[str, tuple[Path, np.ndarray, str]] = {}
    for split, path in (("train", data), ("test", test)):
        if path is None:
            continue
        labels = labels_of[split]
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
            ]
        )
        features = feature_dir / f"{hashlib.sha256(job.encode()).hexdigest()[:24]}.npy"
        with encoding.open_cache() as cache:
            stats = embed_file(
                path,
                features,
                encoder,
                spec,
                batch_size=encoding.batch_size,
                max_tokens=encoding.max_tokens,
                cache=cache,
                text_col=reading.text_col,
                drop_empty=reading.drop_empty,
                progress=encoding.progress,
            )
        if stats.n_texts != len(labels):  # both passes skip the same rows; guard the pairing
            raise BertprobeError(f"{path}: {stats.n_texts} vectors for {len(labels)} labels")
        splits[split] = features, labels, stats.source_sha256
    embed_seconds = time.perf_counter() - start

    def chunks(split: str, rows: int = 8192) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        features, labels, _ = splits[split]
        return (
            (X, labels[i : i + len(X)])
            for X, i in zip(
                iter_feature_rows(features, rows), range(0, len(labels), rows), strict=True
            )
        )

    fit_start = time.perf_counter()
    probe = OutOfCoreProbe().fit_chunks(lambda: chunks("train"))
    fit_seconds = time.perf_counter() - fit_start
    test_accuracy = None
    if "test" in splits:
        correct = sum(
            int(np.sum(probe.predict(X).astype(str) == y.astype(str))) for X, y in chunks("test")
        )
        test_accuracy = correct / len(splits["test"][1])
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
    )


def accuracy(y_true: Iterable[Any], predicted: Iterable[Any]) -> float:
    """Share of equal labels, compared by text (see :func:`~bertprobe.data.align_labels`:
    a file's ``"1"`` and a model's ``1`` are one label)."""
    return float(np.mean([str(p) == str(y) for p, y in zip(predicted, y_true, strict=True)]))


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
    """The model as saved (its card), keeping the fitted objects already in memory."""
    trained.card = read_card(folder)
    trained.folder = folder
    return trained


def _jsonable(value: Any) -> Any:
    return value.item() if isinstance(value, np.generic) else value


__all__ = ["TrainOptions", "TrainResult", "accuracy", "read_training_set", "train"]
