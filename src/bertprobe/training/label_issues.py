"""Training rows whose label the model doubts: confident learning on out-of-fold probabilities.

Every training row gets class probabilities from a probe that never saw it
(:meth:`~bertprobe.heads.probe.LinearProbe.out_of_fold_proba`); a row whose given label is
improbable
there, while another label is confidently probable, is probably mislabelled. With the
``cleanlab`` extra installed, :func:`find_label_issues` asks ``cleanlab.filter.
find_label_issues`` (ranked by self-confidence, the out-of-fold probability of the given label);
without it, the same idea on numpy: confident learning's per-class thresholds (the mean
probability of class ``j`` over the rows labelled ``j``) flag a row labelled ``y`` when its
probability of ``y`` is under ``y``'s threshold and another class ``k`` reaches ``k``'s.

``bertprobe train --label-issues OUT.csv`` writes the ranked rows, ``bertprobe report`` shows
the first ones; both call :func:`find_label_issues`.

Example:
    >>> import numpy as np
    >>> proba = np.array([[0.9, 0.1], [0.8, 0.2], [0.1, 0.9], [0.2, 0.8], [0.95, 0.05]])
    >>> issues = find_label_issues([0, 0, 1, 1, 1], proba, [0, 1], use_cleanlab=False)
    >>> [(i.index, i.label, i.suggested) for i in issues]
    [(4, 1, 0)]
"""

from __future__ import annotations

import csv
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from bertprobe.core.errors import BadInputError
from bertprobe.core.extras import EXTRAS
from bertprobe.core.tables import python_value

# Rows shown in a report; the CSV holds them all.
N_SHOWN = 20


@dataclass(frozen=True)
class LabelIssue:
    """One doubted row: where it is, its label, the label the model suggests, and how sure."""

    index: int  # row in the training set, 0-based
    label: Any
    suggested: Any
    label_probability: float  # out-of-fold probability of the given label (self-confidence)
    confidence: float  # out-of-fold probability of the suggested label

    def to_dict(self) -> dict[str, Any]:
        return {
            "index": self.index,
            "label": python_value(self.label),
            "suggested": python_value(self.suggested),
            "label_probability": self.label_probability,
            "confidence": self.confidence,
        }


def cleanlab_available() -> bool:
    """Whether the ``cleanlab`` extra is installed (checked without importing it)."""
    import importlib.util

    return all(importlib.util.find_spec(m) is not None for m in EXTRAS["cleanlab"])


def find_label_issues(
    labels: Sequence[Any] | np.ndarray,
    pred_probs: np.ndarray,
    classes: Sequence[Any],
    *,
    use_cleanlab: bool | None = None,
) -> list[LabelIssue]:
    """The rows whose given label the out-of-fold probabilities doubt, most doubtful first.

    Parameters
    ----------
    labels : sequence
        The given label of each row, values of ``classes`` (compared as text).
    pred_probs : ndarray of shape (n_rows, n_classes)
        Out-of-fold probabilities, columns in the order of ``classes``.
    classes : sequence
        The labels, in the order of the columns.
    use_cleanlab : bool or None
        ``None``: cleanlab when installed, else the numpy method; ``True`` needs it.

    Returns
    -------
    list of LabelIssue
        Ranked by self-confidence (the probability of the given label), lowest first.
    """
    proba = np.asarray(pred_probs, dtype=np.float64)
    names = [str(c) for c in classes]
    position = {name: j for j, name in enumerate(names)}
    try:
        given = np.asarray([position[str(y)] for y in labels], dtype=np.int64)
    except KeyError as exc:
        raise BadInputError(f"label {exc.args[0]!r} is not one of the classes {names}") from None
    if proba.shape != (len(given), len(names)):
        raise BadInputError(
            f"pred_probs has shape {proba.shape}; expected ({len(given)}, {len(names)})"
        )
    if use_cleanlab is None:
        use_cleanlab = cleanlab_available()
    ranked = _cleanlab_ranked(given, proba) if use_cleanlab else _numpy_ranked(given, proba)
    rows = np.arange(len(given))
    self_confidence = proba[rows, given]
    # Suggest the most probable label other than the given one.
    others = proba.copy()
    others[rows, given] = -1.0
    suggested = others.argmax(axis=1)
    return [
        LabelIssue(
            index=int(i),
            label=classes[given[i]],
            suggested=classes[suggested[i]],
            label_probability=float(self_confidence[i]),
            confidence=float(proba[i, suggested[i]]),
        )
        for i in ranked
    ]


def _cleanlab_ranked(given: np.ndarray, proba: np.ndarray) -> np.ndarray:
    from bertprobe.core.extras import needs_extra

    with needs_extra("cleanlab"):
        from cleanlab.filter import find_label_issues as cleanlab_find

    return np.asarray(
        cleanlab_find(given, proba, return_indices_ranked_by="self_confidence"), dtype=np.int64
    )


def _numpy_ranked(given: np.ndarray, proba: np.ndarray) -> np.ndarray:
    """Confident learning without cleanlab: per-class thresholds, ranked by self-confidence."""
    n_classes = proba.shape[1]
    thresholds = np.array(
        [proba[given == j, j].mean() if np.any(given == j) else 1.0 for j in range(n_classes)]
    )
    rows = np.arange(len(given))
    confident = proba >= thresholds  # (rows, classes): where each class is confidently probable
    confident[rows, given] = False
    doubted = (proba[rows, given] < thresholds[given]) & confident.any(axis=1)
    flagged = np.flatnonzero(doubted)
    return flagged[np.argsort(proba[flagged, given[flagged]], kind="stable")]


def write_label_issues(
    issues: Sequence[LabelIssue],
    texts: Sequence[str],
    line_numbers: Sequence[int],
    out: str | Path,
) -> Path:
    """Write the ranked issues as CSV: rank, line (in the training file), text, label,
    suggested label, the given label's probability, the suggested label's probability."""
    out = Path(out)
    with open(out, "w", encoding="utf-8", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(
            ["rank", "line", "text", "label", "suggested", "label_probability", "confidence"]
        )
        for rank, issue in enumerate(issues, start=1):
            writer.writerow(
                [
                    rank,
                    line_numbers[issue.index],
                    texts[issue.index],
                    python_value(issue.label),
                    python_value(issue.suggested),
                    f"{issue.label_probability:.6f}",
                    f"{issue.confidence:.6f}",
                ]
            )
    return out


__all__ = [
    "N_SHOWN",
    "LabelIssue",
    "cleanlab_available",
    "find_label_issues",
    "write_label_issues",
]
