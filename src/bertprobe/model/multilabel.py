"""Training and evaluating a multi-label model (see :mod:`bertprobe.heads.multilabel`)."""

from __future__ import annotations

from dataclasses import replace
from typing import TYPE_CHECKING, Any

from bertprobe.core.errors import BadInputError
from bertprobe.data.files import (
    LabelledTexts,
    ReadOptions,
)
from bertprobe.data.multilabel import DEFAULT_LABEL_SEP
from bertprobe.heads.multilabel import MultiLabelProbe
from bertprobe.training.inputs import label_sets_of

if TYPE_CHECKING:
    from bertprobe.model.classifier import Classifier
    from bertprobe.model.train import TrainResult


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
        **dict(reversed(probe.label_scores().items())),  # cv_accuracy, C (or held out)
        "thresholds": dict(zip(names, probe.thresholds_.tolist(), strict=True)),
        "n_train": result.n_train,
        "n_test": result.n_test,
        "labels": names,
        "label_counts": label_counts(result.train_data),
        "encoder": result.model.encoder.name,
        "encoder_fingerprint": result.model.encoder.fingerprint,
        "encoder_revision": result.model.encoder.revision,
        "pooling": spec.pooling,
        "layer": list(spec.layers) if len(spec.layers) > 1 else spec.layers[0],
        "backend": result.model.backend,
        "max_length": result.train_stats.max_length if result.train_stats else spec.max_length,
        "n_cached": sum(s.n_cached for s in stats),
        "n_truncated": sum(s.n_truncated for s in stats),
        "embed_seconds": result.embed_seconds,
        "fit_seconds": result.fit_seconds,
        "model_dir": str(result.out) if result.out is not None else None,
        **({"auto": result.sweep.choice} if result.sweep is not None else {}),
        **(
            {
                "epochs_run": result.finetune.epochs_run,
                "finetune_seconds": result.finetune.seconds,
                "dev_f1_micro": result.finetune.dev_f1_micro,
            }
            if result.finetune is not None
            else {}
        ),
    }


def label_counts(data: LabelledTexts | None) -> dict[str, int]:
    """How many texts carry each label (and ``""``: how many carry none)."""
    counts: dict[str, int] = {}
    for labels in label_sets_of(data) if data is not None else []:
        for label in labels or ("",):
            counts[label] = counts.get(label, 0) + 1
    return dict(sorted(counts.items()))
