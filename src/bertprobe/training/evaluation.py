"""What evaluating a model measured: :class:`Evaluation` (one label per text) and
:class:`MultiLabelEvaluation` (label sets); ``to_dict()`` of each is ``evaluate --json``."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from bertprobe.heads.decision import SETS_KEY


@dataclass
class Evaluation:
    """What :meth:`Classifier.evaluate` measured; ``to_dict()`` is ``evaluate --json``."""

    accuracy: float
    n: int
    model: str | None
    labels: list
    per_class: dict[str, dict[str, float]]
    confusion_matrix: list[list[int]]
    embed_seconds: float
    n_truncated: int
    unknown_labels: list[str] = field(default_factory=list)
    metric: str = "accuracy"
    score: float | None = None  # of metric, when it is not accuracy
    threshold: float | None = None  # the decision threshold used (None: argmax)

    def unknown_note(self) -> str:
        """What :attr:`unknown_labels` mean for these figures (``evaluate`` notes it)."""
        return f"has labels the model never saw: {', '.join(self.unknown_labels)}"

    def to_dict(self) -> dict[str, Any]:
        return {
            "accuracy": self.accuracy,
            **({self.metric: self.score} if self.metric != "accuracy" else {}),
            "threshold": self.threshold,
            "n": self.n,
            "model": self.model,
            "labels": self.labels,
            "per_class": self.per_class,
            "confusion_matrix": self.confusion_matrix,
            "embed_seconds": self.embed_seconds,
            "n_truncated": self.n_truncated,
        }


@dataclass
class MultiLabelEvaluation:
    """What :meth:`bertprobe.Classifier.evaluate` measured for a multi-label model;
    ``to_dict()`` is ``evaluate --json``."""

    f1_micro: float
    f1_macro: float
    subset_accuracy: float
    per_label: dict[str, dict[str, float]]
    n: int
    model: str | None
    labels: list[str]
    thresholds: dict[str, float]
    embed_seconds: float
    n_truncated: int
    unknown_labels: list[str] = field(default_factory=list)

    @property
    def accuracy(self) -> float:
        """The share of texts whose every label is right (the subset accuracy): what
        accuracy is for label sets, so that every evaluation has one."""
        return self.subset_accuracy

    def unknown_note(self) -> str:
        """What :attr:`unknown_labels` mean for these figures (``evaluate`` notes it)."""
        return "has labels the model never saw, left out of the scores: " + ", ".join(
            self.unknown_labels
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            "test_f1_micro": self.f1_micro,
            "test_f1_macro": self.f1_macro,
            "subset_accuracy": self.subset_accuracy,
            "per_label": self.per_label,
            "n": self.n,
            "model": self.model,
            "labels": self.labels,
            "thresholds": self.thresholds,
            SETS_KEY: True,
            "embed_seconds": self.embed_seconds,
            "n_truncated": self.n_truncated,
        }
