"""Several labels per text: a multi-label probe, its files, its scores and its report.

A text may carry any number of labels (a film that is ``comedy`` and ``drama``, or none).
Labels are read from one column joined by a separator (``comedy|drama``, ``label_sep``) or from
one 0/1 column per label (``label_cols``), and become a 0/1 matrix (scikit-learn's
:class:`~sklearn.preprocessing.MultiLabelBinarizer`). :class:`MultiLabelProbe` fits one
:class:`~bertprobe.probe.LinearProbe` per label (scikit-learn's
:class:`~sklearn.multiclass.OneVsRestClassifier`; each label's C chosen by its own
cross-validation) and predicts a label when its probability reaches the label's threshold:
0.5, or with ``tune_thresholds`` the threshold that maximizes the label's F1 on out-of-fold
probabilities (:class:`~sklearn.model_selection.TunedThresholdClassifierCV`).

Decisions, documented for users:

- A row with an empty label cell (``label_sep``) or all-0 columns (``label_cols``) is a text
  with no label: a valid example for every label's "no" side, not an error.
- Labels are text: ``1|2`` reads as the labels ``"1"`` and ``"2"``.
- A TSV file without a header names its 0/1 columns by their 0-based index (``--label-cols
  1,2`` gives the labels ``"1"`` and ``"2"``); with a header (or CSV, JSON Lines, Parquet) by
  the header's names.
- The 0/1 cells may read ``0``/``1``, ``0.0``/``1.0`` or ``false``/``true`` (any case).
- In JSON Lines and Parquet the label column may also hold a list (``"labels": ["comedy",
  "drama"]``).

Example:
    >>> from bertprobe import EncoderOptions, ReadOptions, TrainOptions, train
    >>> result = train("films.tsv", encoding=EncoderOptions("minilm", pooling="mean"),
    ...                options=TrainOptions(multi_label=True, cv=3),
    ...                reading=ReadOptions(label_sep="|"), out="models/genres")  # doctest: +SKIP
    >>> result.model.predict_labels(["a warm, funny family film"])  # doctest: +SKIP
    [['comedy']]
"""

from __future__ import annotations

import ast
import base64
import time
import warnings
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from sklearn.base import BaseEstimator, ClassifierMixin
from sklearn.exceptions import ConvergenceWarning
from sklearn.utils.validation import check_is_fitted, validate_data
from threadpoolctl import threadpool_limits

from bertprobe.data import (
    LABEL_COLUMN_NAMES,
    TEXT_COLUMN_NAMES,
    LabelledTexts,
    ReadOptions,
    _column_index,
    _Reader,
    format_lines,
)
from bertprobe.errors import BadInputError
from bertprobe.probe import LinearProbe, parse_c_grid

if TYPE_CHECKING:
    from bertprobe.encode import EncoderOptions, RunOptions
    from bertprobe.model import Classifier, TrainOptions, TrainResult

# The separator assumed for a multi-label file when neither label_sep nor label_cols is given,
# and the one that joins a CSV prediction's labels.
DEFAULT_LABEL_SEP = "|"
DEFAULT_THRESHOLD = 0.5
_TRUE = {"1", "1.0", "true"}
_FALSE = {"0", "0.0", "false"}

LabelSet = tuple[str, ...]


# --- reading ---------------------------------------------------------------------------------


def read_multilabel(path: str | Path, reading: ReadOptions = ReadOptions()) -> LabelledTexts:
    """The texts of a multi-label file with their label sets (``labels[i]``: a sorted tuple of
    label names, empty for a text with no label).

    ``reading.label_cols`` reads one 0/1 column per label; otherwise the label column (the
    recognised name, ``reading.label_col`` or the last column) holds the labels joined by
    ``reading.label_sep`` (default ``"|"``). Every row is checked; a problem names its lines.
    """
    return _read_multilabel(path, reading)[0]


def _read_multilabel(
    path: str | Path, reading: ReadOptions
) -> tuple[LabelledTexts, list[str] | None]:
    """The file's multi-label rows and, with ``label_cols``, the labels the columns name."""
    reader = _Reader(path, reading.max_field_chars)
    source = reader.source
    label_cols = tuple(reading.label_cols or ())
    requested = (reading.text_col, reading.label_col, *label_cols)
    rows, columns, unit = reader.table(reading.header, requested, want_labels=True)
    first = next(rows, None)
    if first is None:
        raise BadInputError(f"{source}: no texts left to read; check the file and its columns")
    text_idx = _column_index(
        columns, first, reading.text_col, TEXT_COLUMN_NAMES, 0, "text_col", source
    )
    assert text_idx is not None  # the default, 0, always exists
    if label_cols:
        label_idx = [
            _column_index(columns, first, col, (), None, "label_cols", source) for col in label_cols
        ]
        indexes = [i for i in label_idx if i is not None]
        names = [columns[i] if columns is not None else str(i) for i in indexes]
        if text_idx in indexes:
            raise BadInputError(
                f"{source}: label_cols= names the text column ({names[indexes.index(text_idx)]}); "
                "set text_col= to the texts and label_cols= to the 0/1 columns"
            )
    else:
        one = _column_index(
            columns,
            first,
            reading.label_col,
            LABEL_COLUMN_NAMES,
            None if len(first[1]) < 2 else -1,
            "label_col",
            source,
        )
        if one is None:
            raise BadInputError(
                f"{source}: no label column ({unit[:-1]} {first[0]} has one column); expected "
                "text<TAB>labels, or name the column with label_col="
            )
        if one == text_idx:
            raise BadInputError(
                f"{source}: the text and label columns are the same column; set text_col= and "
                "label_col="
            )
        indexes = [one]
    sep = reading.label_sep or DEFAULT_LABEL_SEP
    texts: list[str] = []
    labels: list[LabelSet] = []
    line_numbers: list[int] = []
    short: list[int] = []
    empty: list[int] = []
    not_binary: list[tuple[int, str]] = []
    for line_no, cells in _chain(first, rows):
        if max(text_idx, *indexes) >= len(cells):
            short.append(line_no)
            continue
        if not cells[text_idx].strip():
            empty.append(line_no)
            continue
        if label_cols:
            found = []
            for name, i in zip(names, indexes, strict=True):
                value = cells[i].strip().lower()
                if value in _TRUE:
                    found.append(name)
                elif value not in _FALSE:
                    not_binary.append((line_no, name))
            label_set = tuple(sorted(set(found)))
        else:
            label_set = tuple(sorted(_cell_labels(cells[indexes[0]], sep) - {""}))
        texts.append(cells[text_idx].strip())
        labels.append(label_set)
        line_numbers.append(line_no)
    if short:
        raise BadInputError(
            f"{source}: too few columns on {unit} {format_lines(short)}; every row needs the "
            "text and label columns"
        )
    if empty and not reading.drop_empty:
        raise BadInputError(
            f"{source}: empty text on {unit} {format_lines(empty)}; fill them in or pass "
            "drop_empty=True to skip them"
        )
    if not_binary:
        lines = format_lines([n for n, _ in not_binary])
        raise BadInputError(
            f"{source}: label column {not_binary[0][1]!r} holds a value other than 0 or 1 on "
            f"{unit} {lines}; label_cols= columns hold 0/1 (or false/true)"
        )
    if not texts:
        raise BadInputError(f"{source}: no texts left to read; check the file and its columns")
    read = LabelledTexts(
        texts=texts,
        labels=labels,  # type: ignore[arg-type]  # label sets, not single labels
        source=source,
        sha256=reader.sha256,
        line_numbers=line_numbers,
        dropped_empty=len(empty),
    )
    return read, (names if label_cols else None)


def _cell_labels(cell: str, sep: str) -> set[str]:
    """The labels in one cell: ``sep``-joined text, or a list (a JSON Lines or Parquet list
    value, which the readers hand over as Python's text of the list)."""
    text = cell.strip()
    if text.startswith("[") and text.endswith("]"):
        try:
            value = ast.literal_eval(text)
        except (ValueError, SyntaxError):
            value = None
        if isinstance(value, list):
            return {str(x).strip() for x in value}
    return {x.strip() for x in text.split(sep)}


def _chain(first: Any, rest: Iterable[Any]) -> Iterable[Any]:
    yield first
    yield from rest


def as_label_sets(labels: Iterable[Any], sep: str = DEFAULT_LABEL_SEP) -> list[LabelSet]:
    """Each text's labels as a sorted tuple of names: a string is split on ``sep``, any other
    iterable taken as the labels themselves (``["comedy", "drama"]``)."""
    sets = []
    for value in labels:
        if isinstance(value, str):
            found = {x.strip() for x in value.split(sep)}
        elif isinstance(value, Iterable):
            found = {str(x).strip() for x in value}
        else:
            raise BadInputError(
                f"multi-label labels: {value!r} is not a label set; give each text a list of "
                f"labels or a {sep!r}-joined string"
            )
        sets.append(tuple(sorted(found - {""})))
    return sets


def check_label_counts(Y: np.ndarray, classes: Sequence[str], n_folds: int) -> None:
    """Refuse label sets one probe per label cannot learn: each label needs ``n_folds`` texts
    with it and as many without, for its cross-validation."""
    if len(classes) < 2:
        only = f" ({classes[0]!r})" if classes else ""
        raise BadInputError(
            f"the training data holds {len(classes)} label{only}; multi-label training needs two "
            "or more (for one yes/no label, train without multi_label=True)"
        )
    positives = Y.sum(axis=0)
    rare = [
        (name, int(n))
        for name, n in zip(classes, positives, strict=True)
        if n < n_folds or len(Y) - n < n_folds
    ]
    if rare:
        listed = ", ".join(f"{name!r} (on {n} of {len(Y)})" for name, n in rare[:5])
        raise BadInputError(
            f"label {listed}: {n_folds}-fold cross-validation needs at least {n_folds} texts "
            f"with each label and {n_folds} without; add examples, drop the label, or lower cv="
        )


# --- the probe -------------------------------------------------------------------------------


class MultiLabelProbe(ClassifierMixin, BaseEstimator):
    """One :class:`~bertprobe.probe.LinearProbe` per label (one-vs-rest), each label predicted
    when its probability reaches its threshold.

    Parameters
    ----------
    Cs : str or tuple of float, default="default"
        The C grid each label's probe searches (see :class:`~bertprobe.probe.LinearProbe`).
    cv : int, default=5
        Stratified folds of each label's C search (and of the threshold tuning).
    classes : sequence of str, optional
        The label names, in order (as :class:`~sklearn.preprocessing.MultiLabelBinarizer`'s
        ``classes``); default: every label seen in :meth:`fit`, sorted.
    tune_thresholds : bool, default=False
        Choose each label's threshold to maximize its F1 on out-of-fold probabilities
        (:class:`~sklearn.model_selection.TunedThresholdClassifierCV` over the label's scaler
        and logistic regression at its chosen C); else every threshold is ``threshold``.
    threshold : float, default=0.5
        The threshold of every label when not tuned.
    class_weight : "balanced" or None, default=None
        Each label's probe weighs its texts with and without the label alike in total
        (``"balanced"``), as :class:`~bertprobe.probe.LinearProbe` does for classes: most labels
        are rare, and unweighted they are learned as "never". The threshold tuning uses it too.
    scoring : {"accuracy", "balanced_accuracy", "f1_macro", "roc_auc"}, default="accuracy"
        What each label's C search maximizes (see :class:`~bertprobe.probe.LinearProbe`).
    n_jobs : int or None, default=None
        Processes for each probe's folds (see :class:`~bertprobe.probe.LinearProbe`).
    random_state : int or None, default=0
        Seeds the folds.

    Attributes
    ----------
    classes_ : ndarray of str, shape (n_labels,)
        The label names; the columns of :meth:`predict_proba` and :meth:`predict`.
    estimator_ : OneVsRestClassifier
        The fitted probes, one a label (``estimator_.estimators_``).
    thresholds_ : ndarray of shape (n_labels,)
        Each label's decision threshold on its probability.
    C_ : ndarray of shape (n_labels,)
        Each label's chosen C.
    cv_accuracy_ : ndarray of shape (n_labels,)
        Each label's mean cross-validated accuracy at its C.
    cv_score_ : ndarray of shape (n_labels,)
        Each label's mean cross-validated ``scoring`` at its C.
    cv_f1_ : ndarray of shape (n_labels,) or None
        With ``tune_thresholds``: each label's mean out-of-fold F1 at its threshold.
    n_features_in_ : int
        Number of features seen in :meth:`fit`.

    Examples
    --------
    >>> rng = np.random.default_rng(0)
    >>> X = rng.normal(size=(120, 6))
    >>> y = [tuple(n for n, on in (("a", x[0] > 0), ("b", x[1] > 0)) if on) for x in X]
    >>> probe = MultiLabelProbe(cv=3).fit(X, y)
    >>> probe.classes_.tolist(), probe.thresholds_.tolist()
    (['a', 'b'], [0.5, 0.5])
    >>> probe.predict(X[:2]).shape
    (2, 2)
    """

    def __init__(
        self,
        Cs: tuple[float, ...] | str = "default",
        *,
        cv: int = 5,
        classes: Sequence[str] | None = None,
        tune_thresholds: bool = False,
        threshold: float = DEFAULT_THRESHOLD,
        class_weight: str | None = None,
        scoring: str = "accuracy",
        n_jobs: int | None = None,
        random_state: int | None = 0,
    ) -> None:
        self.Cs = Cs
        self.cv = cv
        self.classes = classes
        self.tune_thresholds = tune_thresholds
        self.threshold = threshold
        self.class_weight = class_weight
        self.scoring = scoring
        self.n_jobs = n_jobs
        self.random_state = random_state

    def fit(self, X, y) -> MultiLabelProbe:
        """Fit one probe per label.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)
            Features.
        y : sequence of label sets, or 0/1 array of shape (n_samples, n_labels)
            Each text's labels (a list or tuple of names, possibly empty), or the indicator
            matrix whose columns are ``classes`` (default names: ``"0"``, ``"1"``, ...).

        Returns
        -------
        self : MultiLabelProbe
            The fitted probe.
        """
        from sklearn.multiclass import OneVsRestClassifier

        if not 0 < self.threshold < 1:
            raise BadInputError(f"threshold={self.threshold}: give a probability between 0 and 1")
        X = validate_data(self, X, dtype=[np.float32, np.float64])
        Y, classes = self._indicator(y)
        if len(Y) != len(X):
            raise BadInputError(f"{len(X)} rows of features but {len(Y)} label sets")
        check_label_counts(Y, classes, self.cv)
        grid = parse_c_grid(self.Cs) if isinstance(self.Cs, str) else tuple(self.Cs)
        if self.class_weight not in (None, "balanced"):
            # A dict would name classes, and each label's probe has only 0 and 1.
            raise BadInputError(
                f"class_weight={self.class_weight!r}: give 'balanced' or None for multi-label"
            )
        probe = LinearProbe(
            grid,
            cv=self.cv,
            class_weight=self.class_weight,
            scoring=self.scoring,
            n_jobs=self.n_jobs,
            random_state=self.random_state,
        )
        self.estimator_ = OneVsRestClassifier(probe).fit(X, Y)
        self.classes_ = np.asarray(classes, dtype=str)
        fitted = self.estimator_.estimators_
        self.C_ = np.asarray([p.C_ for p in fitted])
        self.cv_accuracy_ = np.asarray([p.cv_accuracy_ for p in fitted])
        self.cv_score_ = np.asarray([p.cv_score_ for p in fitted])
        self.cv_f1_ = None
        if self.tune_thresholds:
            tuned = [self._tuned(X, Y[:, j], C) for j, C in enumerate(self.C_)]
            self.thresholds_ = np.asarray([t for t, _ in tuned])
            self.cv_f1_ = np.asarray([f1 for _, f1 in tuned])
        else:
            self.thresholds_ = np.full(len(classes), float(self.threshold))
        return self

    def _indicator(self, y: Any) -> tuple[np.ndarray, list[str]]:
        from sklearn.preprocessing import MultiLabelBinarizer

        array = np.asarray(y, dtype=object) if not isinstance(y, np.ndarray) else y
        if array.ndim == 2 and array.dtype != object and np.isin(array, (0, 1)).all():
            names = (
                [str(c) for c in self.classes]
                if self.classes is not None
                else [str(j) for j in range(array.shape[1])]
            )
            if len(names) != array.shape[1]:
                raise BadInputError(
                    f"classes= names {len(names)} labels for {array.shape[1]} columns of y"
                )
            return array.astype(int), names
        sets = as_label_sets(y)
        seen = sorted({label for labels in sets for label in labels})
        names = [str(c) for c in self.classes] if self.classes is not None else seen
        unknown = sorted(set(seen) - set(names))
        if unknown:
            raise BadInputError(
                f"labels {', '.join(map(repr, unknown[:5]))} are not in classes=; add them"
            )
        return MultiLabelBinarizer(classes=names).fit_transform(sets), names

    def _tuned(self, X: np.ndarray, y: np.ndarray, C: float) -> tuple[float, float]:
        """The threshold with the best mean out-of-fold F1 for one label, and that F1."""
        from sklearn.linear_model import LogisticRegression
        from sklearn.model_selection import StratifiedKFold, TunedThresholdClassifierCV
        from sklearn.pipeline import make_pipeline
        from sklearn.preprocessing import StandardScaler

        folds = StratifiedKFold(n_splits=self.cv, shuffle=True, random_state=self.random_state)
        # The label's own C: the same model as its probe, refitted on each fold.
        model = make_pipeline(
            StandardScaler(),
            LogisticRegression(C=C, max_iter=1000, class_weight=self.class_weight),
        )
        search = TunedThresholdClassifierCV(
            model, scoring="f1", cv=folds, refit=True, random_state=self.random_state
        )
        with warnings.catch_warnings(), threadpool_limits(limits=1, user_api="blas"):
            warnings.simplefilter("ignore", ConvergenceWarning)
            search.fit(X, y)
        return float(search.best_threshold_), float(search.best_score_)

    def predict_proba(self, X) -> np.ndarray:
        """Each label's probability, shape (n_samples, n_labels), columns ``classes_``; the
        rows need not sum to 1."""
        check_is_fitted(self, "estimator_")
        X = validate_data(self, X, reset=False, dtype=[np.float32, np.float64])
        return self.estimator_.predict_proba(X)

    def predict(self, X) -> np.ndarray:
        """The 0/1 indicator matrix of predicted labels, columns ``classes_``."""
        return (self.predict_proba(X) >= self.thresholds_).astype(int)

    def label_sets(self, proba: np.ndarray) -> list[list[str]]:
        """The labels whose probability reaches their threshold, per row of ``proba``."""
        return label_sets(proba, self.classes_.tolist(), self.thresholds_)

    def card_record(self) -> dict[str, Any]:
        """What the model card says of the probes: each label's C, CV accuracy, threshold."""
        names = self.classes_.tolist()
        first = self.estimator_.estimators_[0]
        return {
            "solver": "lbfgs-cv one-vs-rest",
            "multi_label": True,
            "C": dict(zip(names, self.C_.tolist(), strict=True)),
            "c_grid": first.Cs_.tolist(),
            "cv_folds": self.cv,
            "cv_accuracy": dict(zip(names, self.cv_accuracy_.tolist(), strict=True)),
            "scoring": self.scoring,
            "class_weight": self.class_weight,
            **(
                {"cv_score": dict(zip(names, self.cv_score_.tolist(), strict=True))}
                if self.scoring != "accuracy"
                else {}
            ),
            "thresholds": dict(zip(names, self.thresholds_.tolist(), strict=True)),
            "threshold_rule": (
                "max F1 on out-of-fold probabilities"
                if self.tune_thresholds
                else f"{self.threshold:g} for every label"
            ),
            **(
                {"cv_f1": dict(zip(names, self.cv_f1_.tolist(), strict=True))}
                if self.cv_f1_ is not None
                else {}
            ),
        }


def label_sets(
    proba: np.ndarray, classes: Sequence[Any], thresholds: np.ndarray
) -> list[list[str]]:
    """The labels whose probability reaches their threshold, per row of ``proba``."""
    on = np.asarray(proba) >= np.asarray(thresholds)
    return [[str(classes[int(j)]) for j in np.flatnonzero(row)] for row in on]


# --- scores ----------------------------------------------------------------------------------


def multilabel_scores(Y_true: np.ndarray, Y_pred: np.ndarray, classes: Sequence[str]) -> dict:
    """Micro and macro F1, subset accuracy (every label right) and per-label precision, recall,
    F1 and support, as JSON-ready numbers."""
    from sklearn.metrics import accuracy_score, classification_report, f1_score

    report = classification_report(
        Y_true,
        Y_pred,
        labels=list(range(len(classes))),
        target_names=[str(c) for c in classes],
        output_dict=True,
        zero_division=0,
    )
    return {
        "f1_micro": float(f1_score(Y_true, Y_pred, average="micro", zero_division=0)),
        "f1_macro": float(f1_score(Y_true, Y_pred, average="macro", zero_division=0)),
        "subset_accuracy": float(accuracy_score(Y_true, Y_pred)),
        "per_label": {
            str(c): {
                k: float(report[str(c)][k]) for k in ("precision", "recall", "f1-score", "support")
            }
            for c in classes
        },
    }


def indicator(
    sets: Sequence[LabelSet], classes: Sequence[str], source: str
) -> tuple[np.ndarray, list[str]]:
    """Label sets as the 0/1 matrix over ``classes`` (a model's labels), and the labels of
    ``sets`` the model does not know (left out of the matrix). A file that shares no label
    with the model while holding labels is refused: every score would be 0 for no fault of it."""
    from sklearn.preprocessing import MultiLabelBinarizer

    seen = {label for labels in sets for label in labels}
    unknown = sorted(seen - {str(c) for c in classes})
    if seen and not seen & {str(c) for c in classes}:
        raise BadInputError(
            f"{source}: none of its labels ({', '.join(sorted(seen)[:8])}) is one of the model's "
            f"({', '.join(map(str, classes))}); relabel the file or use a model trained on these "
            "labels"
        )
    known = [tuple(x for x in labels if x not in unknown) for labels in sets]
    return MultiLabelBinarizer(classes=[str(c) for c in classes]).fit_transform(known), unknown


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
            "multi_label": True,
            "embed_seconds": self.embed_seconds,
            "n_truncated": self.n_truncated,
        }


def evaluate(
    model: Classifier,
    texts: Sequence[str],
    labels: Sequence[Any],
    run: RunOptions,
    *,
    source: str = "the labels",
) -> MultiLabelEvaluation:
    """Score a multi-label model on texts and their label sets (see :meth:`Classifier.evaluate`)."""
    probe = _probe_of(model)
    classes = probe.classes_.tolist()
    Y_true, unknown = indicator(as_label_sets(labels), classes, source)
    X, stats = model.embed(texts, run)
    Y_pred = probe.predict(X)
    scores = multilabel_scores(Y_true, Y_pred, classes)
    return MultiLabelEvaluation(
        f1_micro=scores["f1_micro"],
        f1_macro=scores["f1_macro"],
        subset_accuracy=scores["subset_accuracy"],
        per_label=scores["per_label"],
        n=len(texts),
        model=model.card.get("id"),
        labels=classes,
        thresholds=dict(zip(classes, probe.thresholds_.tolist(), strict=True)),
        embed_seconds=stats.seconds,
        n_truncated=stats.n_truncated,
        unknown_labels=unknown,
    )


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
    from bertprobe.model import Classifier, TrainResult, _with_card, embed_sets
    from bertprobe.persist import data_records, save_model

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


def training_lines(result: TrainResult, data: Path, test: Path | None) -> list[str]:
    """What ``bertprobe train`` prints for a multi-label model."""
    summary = training_summary(result)
    counts = summary["label_counts"]
    none = counts.pop("", 0)
    lines = [
        f"train     {data}: {result.n_train:,} texts, {len(summary['labels'])} labels ("
        + ", ".join(f"{k}: {v:,}" for k, v in counts.items())
        + (f"; {none:,} with none" if none else "")
        + ")",
        f"encoder   {result.model.encoder.name}, pooling {result.model.spec.pooling}, max "
        f"length {summary['max_length']}",
        f"embedded  in {result.embed_seconds:.1f} s ({summary['n_cached']:,} from cache, "
        f"{summary['n_truncated']:,} truncated); fit {len(summary['labels'])} probes in "
        f"{result.fit_seconds:.1f} s",
        f"{'label':>14} {'C':>9} {'CV acc':>8} {'threshold':>10}"
        + (f" {'test F1':>8}" if summary["test_per_label"] else ""),
    ]
    for name in summary["labels"]:
        row = (
            f"{name:>14} {summary['C'][name]:>9.3g} {100 * summary['cv_accuracy'][name]:>7.2f}% "
            f"{summary['thresholds'][name]:>10.3f}"
        )
        if summary["test_per_label"]:
            row += f" {summary['test_per_label'][name]['f1-score']:>8.3f}"
        lines.append(row)
    if summary["test_f1_micro"] is not None:
        lines.append(
            f"test      {test}: {result.n_test:,} texts, F1 micro "
            f"{summary['test_f1_micro']:.3f}, macro {summary['test_f1_macro']:.3f}, every label "
            f"right on {100 * summary['test_subset_accuracy']:.2f}%"
        )
    return lines


def evaluation_lines(result: MultiLabelEvaluation) -> list[str]:
    """What ``bertprobe evaluate`` prints for a multi-label model (after the model and data)."""
    lines = [
        f"F1        micro {result.f1_micro:.3f}, macro {result.f1_macro:.3f}; every label right "
        f"on {100 * result.subset_accuracy:.2f}%",
        f"{'label':>12} {'precision':>10} {'recall':>10} {'f1':>10} {'support':>8} "
        f"{'threshold':>10}",
    ]
    for label, row in result.per_label.items():
        lines.append(
            f"{label:>12} {row['precision']:>10.3f} {row['recall']:>10.3f} "
            f"{row['f1-score']:>10.3f} {int(row['support']):>8} "
            f"{result.thresholds[label]:>10.3f}"
        )
    return lines


# --- report ----------------------------------------------------------------------------------


def plot_per_label_f1(per_label: dict[str, dict[str, float]]):
    """A bar per label: its F1 (precision and recall beside it)."""
    from bertprobe.report import _pyplot

    plt = _pyplot()
    names = list(per_label)
    x = np.arange(len(names))
    fig, ax = plt.subplots(figsize=(max(4.0, 0.9 * len(names) + 2), 3.6))
    width = 0.27
    for k, (key, title) in enumerate(
        (("precision", "precision"), ("recall", "recall"), ("f1-score", "F1"))
    ):
        values = [per_label[n][key] for n in names]
        bars = ax.bar(x + (k - 1) * width, values, width, label=title)
        if key == "f1-score":
            ax.bar_label(bars, fmt="%.2f", fontsize=8)
    ax.set_xticks(x, names, rotation=30 if len(names) > 6 else 0, ha="right")
    ax.set_ylim(0, 1.25)
    ax.set_ylabel("score on the test data")
    ax.set_title("Per-label scores")
    ax.legend(loc="upper center", ncols=3, fontsize=8, frameon=False)
    fig.tight_layout()
    return fig


def write_multilabel_report(
    model: Classifier,
    test: str | Path | LabelledTexts,
    out: str | Path,
    *,
    run: RunOptions,
    reading: ReadOptions = ReadOptions(),
) -> tuple[Path, dict[str, Any]]:
    """``report`` for a multi-label model: ``report.html`` with the per-label scores table and
    ``per_label_f1.png``; returns the page and the scores (``report --json``)."""
    from bertprobe.report import figure_png, page_templates, report_folder

    templates = page_templates()
    test_set = read_multilabel_set(test, reading_for(model, reading))
    result = evaluate(model, test_set.texts, typing_sets(test_set), run, source=test_set.source)
    out = report_folder(out)
    png = figure_png(plot_per_label_f1(result.per_label))
    (out / "per_label_f1.png").write_bytes(png)
    page = templates.get_template("multilabel_report.html").render(
        model_id=model.id,
        encoder=model.encoder.name,
        pooling=model.spec.pooling,
        source=test_set.source,
        result=result,
        figure_src="data:image/png;base64," + base64.b64encode(png).decode("ascii"),
    )
    path = out / "report.html"
    path.write_text(page, encoding="utf-8")
    return path, {"test": test_set.source, **result.to_dict()}


__all__ = [
    "DEFAULT_LABEL_SEP",
    "MultiLabelEvaluation",
    "MultiLabelProbe",
    "as_label_sets",
    "check_label_counts",
    "evaluate",
    "label_sets",
    "multilabel_scores",
    "read_multilabel",
    "train_multilabel",
    "write_multilabel_report",
]
