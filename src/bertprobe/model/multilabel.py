"""Training and evaluating a multi-label model (see :mod:`bertprobe.heads.multilabel`)."""

from __future__ import annotations

import time
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from bertprobe.core.errors import BadInputError
from bertprobe.data.files import (
    LabelledTexts,
    ReadOptions,
)
from bertprobe.data.multilabel import _read_multilabel, as_label_sets, check_label_counts
from bertprobe.heads.multilabel import MultiLabelProbe, indicator, multilabel_scores

if TYPE_CHECKING:
    from bertprobe.encoders.encode import EncoderOptions
    from bertprobe.model.classifier import Classifier
    from bertprobe.model.train import TrainOptions, TrainResult

# The separator assumed for a multi-label file when neither label_sep nor label_cols is given,
# and the one that joins a CSV prediction's labels.
DEFAULT_LABEL_SEP = "|"
DEFAULT_THRESHOLD = 0.5
_TRUE = {"1", "1.0", "true"}
_FALSE = {"0", "0.0", "false"}

LabelSet = tuple[str, ...]


def reading_for(model: Classifier, reading: ReadOptions = ReadOptions()) -> ReadOptions:
    """``reading``, or, when it says nothing of how labels are given, the way the model's
    training file gave them (its card's ``multi_label`` record): ``evaluate`` and ``report``
    read a test file like the training file without the flags again."""
    record = model.card.get("multi_label") or {}
    if reading.multi_label or not record:
        return reading
    if record.get("label_cols") and reading.label_col is None:
        return replace(reading, label_cols=tuple(record["label_cols"]))
    return replace(reading, label_sep=record.get("label_sep") or DEFAULT_LABEL_SEP)


def _probe_of(model: Classifier) -> MultiLabelProbe:
    if not isinstance(model.probe, MultiLabelProbe):
        raise BadInputError(f"model {model.card.get('id', '')} is single-label, not multi-label")
    return model.probe


# --- training --------------------------------------------------------------------------------


def read_multilabel_set(data: str | Path | LabelledTexts, reading: ReadOptions) -> LabelledTexts:
    """A multi-label set from a file (:func:`read_multilabel`) or from memory (labels as
    lists of names or ``label_sep``-joined strings)."""
    return _multilabel_set(data, reading)[0]


def _multilabel_set(
    data: str | Path | LabelledTexts, reading: ReadOptions
) -> tuple[LabelledTexts, list[str] | None]:
    if isinstance(data, LabelledTexts):
        sets = as_label_sets(data.labels or [], reading.label_sep or DEFAULT_LABEL_SEP)
        in_memory = LabelledTexts(
            texts=data.texts,
            labels=sets,  # type: ignore[arg-type]  # label sets
            source=data.source,
            sha256=data.sha256,
            line_numbers=data.line_numbers,
            dropped_empty=data.dropped_empty,
        )
        return in_memory, None
    return _read_multilabel(data, reading)


def train_multilabel(
    data: str | Path | LabelledTexts,
    *,
    test: str | Path | LabelledTexts | None,
    encoding: EncoderOptions,
    options: TrainOptions,
    reading: ReadOptions,
    out: Path | None,
) -> TrainResult:
    """What :func:`bertprobe.train` does with ``TrainOptions(multi_label=True)``: read the
    label sets, embed, fit one probe per label, score ``test``, save to ``out``."""
    from bertprobe.model.classifier import Classifier
    from bertprobe.model.persist import data_records, save_model
    from bertprobe.model.train import TrainResult, _with_card, embed_sets

    if not options.multi_label:
        raise BadInputError(
            "label_sep= and label_cols= read several labels per text; add multi_label=True, "
            "or leave them out for one label per text"
        )
    from sklearn.preprocessing import MultiLabelBinarizer

    train_set, columns = _multilabel_set(data, reading)
    sets = typing_sets(train_set)
    # With label_cols every column is a label, even one never 1 (refused just below).
    classes = columns or sorted({label for labels in sets for label in labels})
    try:
        Y = MultiLabelBinarizer(classes=classes).fit_transform(sets)
        check_label_counts(Y, classes, options.cv)
    except BadInputError as exc:
        raise BadInputError(f"{train_set.source}: {exc}") from None
    test_set = read_multilabel_set(test, reading) if test is not None else None
    if test_set is not None:  # before any work: a test file with other labels is refused now
        indicator(typing_sets(test_set), classes, test_set.source)

    encoder = encoding.load()
    spec = encoding.spec
    with encoding.open_cache() as cache:
        X_train, train_stats, X_test, test_stats = embed_sets(
            encoder, spec, encoding.run, cache, train_set, test_set
        )
    fit_start = time.perf_counter()
    probe = MultiLabelProbe(
        options.Cs,
        cv=options.cv,
        classes=classes,
        tune_thresholds=options.tune_thresholds,
        class_weight=options.class_weight,
        scoring=options.metric,
        n_jobs=options.n_jobs,
    ).fit(X_train, sets)
    fit_seconds = time.perf_counter() - fit_start
    model = Classifier(
        card={}, probe=probe, encoder=encoder.ref, spec=spec, backend=encoding.backend
    )
    test_scores = None
    if test_set is not None and X_test is not None:
        Y_test, _ = indicator(typing_sets(test_set), classes, test_set.source)
        test_scores = multilabel_scores(Y_test, probe.predict(X_test), classes)
    result = TrainResult(
        model=model,
        n_train=len(train_set),
        n_test=len(test_set) if test_set is not None else 0,
        test_accuracy=test_scores["subset_accuracy"] if test_scores else None,
        embed_seconds=train_stats.seconds + (test_stats.seconds if test_stats else 0.0),
        fit_seconds=fit_seconds,
        out=out,
        train_data=train_set,
        test_data=test_set,
        train_stats=train_stats,
        test_stats=test_stats,
    )
    result.test_scores = test_scores
    if out is not None:
        records = data_records(train_set, test_set)
        summary = training_summary(result)
        metrics = {
            k: summary[k]
            for k in ("test_f1_micro", "test_f1_macro", "test_subset_accuracy", "n_train", "n_test")
        }
        metrics["test_per_label"] = summary["test_per_label"]
        reading_record = {
            "label_sep": reading.label_sep or (None if reading.label_cols else DEFAULT_LABEL_SEP),
            "label_cols": list(map(str, reading.label_cols)) if reading.label_cols else None,
        }
        save_model(
            out,
            probe,
            encoder.ref,
            spec,
            max_length=train_stats.max_length,
            backend=encoding.backend,
            metrics=metrics,
            data=records,
            extra={"multi_label": {"labels": classes, **reading_record}},
        )
        result.model = _with_card(out, model)
    return result


def typing_sets(data: LabelledTexts) -> list[LabelSet]:
    """The label sets of a multi-label set (its ``labels``, typed)."""
    return [tuple(labels) for labels in (data.labels or [])]  # type: ignore[arg-type]


def training_summary(result: TrainResult) -> dict[str, Any]:
    """``train --json`` for a multi-label model."""
    probe = result.model.probe
    assert isinstance(probe, MultiLabelProbe)
    names = probe.classes_.tolist()
    scores = result.test_scores or {}
    spec = result.model.spec
    stats = [s for s in (result.train_stats, result.test_stats) if s is not None]
    return {
        "multi_label": True,
        "test_f1_micro": scores.get("f1_micro"),
        "test_f1_macro": scores.get("f1_macro"),
        "test_subset_accuracy": scores.get("subset_accuracy"),
        "test_per_label": scores.get("per_label"),
        "cv_accuracy": dict(zip(names, probe.cv_accuracy_.tolist(), strict=True)),
        "C": dict(zip(names, probe.C_.tolist(), strict=True)),
        "thresholds": dict(zip(names, probe.thresholds_.tolist(), strict=True)),
        "n_train": result.n_train,
        "n_test": result.n_test,
        "labels": names,
        "label_counts": label_counts(result.train_data),
        "encoder": result.model.encoder.name,
        "encoder_fingerprint": result.model.encoder.fingerprint,
        "pooling": spec.pooling,
        "layer": list(spec.layers) if len(spec.layers) > 1 else spec.layers[0],
        "backend": result.model.backend,
        "max_length": result.train_stats.max_length if result.train_stats else spec.max_length,
        "n_cached": sum(s.n_cached for s in stats),
        "n_truncated": sum(s.n_truncated for s in stats),
        "embed_seconds": result.embed_seconds,
        "fit_seconds": result.fit_seconds,
        "model_dir": str(result.out) if result.out is not None else None,
    }


def label_counts(data: LabelledTexts | None) -> dict[str, int]:
    """How many texts carry each label (and ``""``: how many carry none)."""
    counts: dict[str, int] = {}
    for labels in typing_sets(data) if data is not None else []:
        for label in labels or ("",):
            counts[label] = counts.get(label, 0) + 1
    return dict(sorted(counts.items()))
