"""Several labels per text: a multi-label probe, its files, its scores and its report.

A text may carry any number of labels (a film that is ``comedy`` and ``drama``, or none).
Labels are read from one column joined by a separator (``comedy|drama``, ``label_sep``) or from
one 0/1 column per label (``label_cols``), and become a 0/1 matrix (scikit-learn's
:class:`~sklearn.preprocessing.MultiLabelBinarizer`). :class:`MultiLabelProbe` fits one
:class:`~bertprobe.heads.probe.LinearProbe` per label (scikit-learn's
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

import warnings
from collections.abc import Iterator, Sequence
from functools import partial
from typing import Any

import numpy as np
from sklearn.base import BaseEstimator, ClassifierMixin
from sklearn.exceptions import ConvergenceWarning
from sklearn.utils.metaestimators import available_if
from sklearn.utils.validation import check_is_fitted, validate_data
from threadpoolctl import threadpool_limits

from bertprobe.core.errors import BadInputError
from bertprobe.data.multilabel import LabelSet, as_label_sets, check_label_counts
from bertprobe.heads.base import register_head
from bertprobe.heads.decision import SETS_KEY, Decision
from bertprobe.heads.linear import LinearHead, stacked_readout
from bertprobe.heads.probe import LinearProbe, parse_c_grid

DEFAULT_THRESHOLD = 0.5


def _label_heads_have(method: str) -> Any:
    """``available_if``'s check: every label's fitted head (or, unfitted, the head each label
    gets) has ``method``."""

    def check(probe: Any) -> bool:
        fitted = getattr(probe, "estimator_", None)
        if fitted is None:
            fitted = getattr(probe, "estimators_", None)
        if fitted is not None:
            heads = getattr(fitted, "estimators_", fitted)
            return all(hasattr(head, method) for head in heads)
        return hasattr(LinearProbe, method)

    return check


# --- the probe -------------------------------------------------------------------------------


@register_head
class MultiLabelProbe(ClassifierMixin, BaseEstimator):
    """One :class:`~bertprobe.heads.probe.LinearProbe` per label (one-vs-rest), each label predicted
    when its probability reaches its threshold.

    Parameters
    ----------
    Cs : str or tuple of float, default="default"
        The C grid each label's probe searches (see :class:`~bertprobe.heads.probe.LinearProbe`).
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
        (``"balanced"``), as :class:`~bertprobe.heads.probe.LinearProbe` does for classes: most
        labels
        are rare, and unweighted they are learned as "never". The threshold tuning uses it too.
    scoring : {"accuracy", "balanced_accuracy", "f1_macro", "roc_auc"}, default="accuracy"
        What each label's C search maximizes (see :class:`~bertprobe.heads.probe.LinearProbe`).
    n_jobs : int or None, default=None
        Processes for each probe's folds (see :class:`~bertprobe.heads.probe.LinearProbe`).
    random_state : int or None, default=0
        Seeds the folds.
    estimator : scikit-learn classifier, optional
        The head each label gets (cloned: scikit-learn's one-vs-rest), instead of a
        :class:`~bertprobe.heads.probe.LinearProbe` made of the parameters above. What the
        label heads can do, this head can (``linear_readout``, ``out_of_fold_proba``: gated by
        ``available_if``); threshold tuning needs their ``fixed_estimator``.

    Attributes
    ----------
    classes_ : ndarray of str, shape (n_labels,)
        The label names; the columns of :meth:`predict_proba` and :meth:`predict`.
    estimator_ : OneVsRestClassifier
        The fitted probes, one a label (``estimator_.estimators_``).
    thresholds_ : ndarray of shape (n_labels,)
        Each label's decision threshold on its probability.
    C_ : ndarray of shape (n_labels,)
        Each label's chosen C (NaN for a label head without one).
    cv_accuracy_ : ndarray of shape (n_labels,)
        Each label's mean cross-validated accuracy at its C (NaN likewise).
    cv_score_ : ndarray of shape (n_labels,)
        Each label's mean cross-validated ``scoring`` at its C (NaN likewise).
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
        estimator: Any = None,
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
        self.estimator = estimator

    def fit(self, X, y, unlabelled=None) -> MultiLabelProbe:
        """Fit one probe per label.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)
            Features.
        y : sequence of label sets, or 0/1 array of shape (n_samples, n_labels)
            Each text's labels (a list or tuple of names, possibly empty), or the indicator
            matrix whose columns are ``classes`` (default names: ``"0"``, ``"1"``, ...).
        unlabelled : array-like of shape (n_unlabelled, n_features), optional
            Vectors of texts without labels: each label's probe self-trains on them (see
            :meth:`LinearProbe.fit <bertprobe.heads.probe.LinearProbe.fit>`), kept for the
            labels whose cross-validation says it helps.

        Returns
        -------
        self : MultiLabelProbe
            The fitted probe.
        """
        from sklearn.multiclass import OneVsRestClassifier

        if not 0 < self.threshold < 1:
            raise BadInputError(
                f"threshold={self.threshold}: give a probability between 0 and 1", param="threshold"
            )
        X = validate_data(self, X, dtype=[np.float32, np.float64])
        Y, classes = self._indicator(y)
        if len(Y) != len(X):
            raise BadInputError(f"{len(X)} rows of features but {len(Y)} label sets")
        check_label_counts(Y, classes, self.cv)
        grid = parse_c_grid(self.Cs) if isinstance(self.Cs, str) else tuple(self.Cs)
        if self.class_weight not in (None, "balanced"):
            # A dict would name classes, and each label's probe has only 0 and 1.
            raise BadInputError(
                f"class_weight={self.class_weight!r}: give 'balanced' or None for multi-label",
                param="class_weight",
            )
        probe = self._label_head(grid)
        if unlabelled is None:
            self.estimator_ = OneVsRestClassifier(probe).fit(X, Y)
        else:  # routed to each label's probe (scikit-learn's metadata routing)
            import sklearn

            with sklearn.config_context(enable_metadata_routing=True):
                requested = probe.set_fit_request(unlabelled=True)
                self.estimator_ = OneVsRestClassifier(requested).fit(X, Y, unlabelled=unlabelled)
            for fitted in [probe, *self.estimator_.estimators_]:  # not saved with the model
                fitted.__dict__.pop("_metadata_request", None)
        self.classes_ = np.asarray(classes, dtype=str)
        fitted = self.estimator_.estimators_
        self.C_, self.cv_accuracy_, self.cv_score_ = (
            np.asarray([getattr(p, name, np.nan) for p in fitted], dtype=float)
            for name in ("C_", "cv_accuracy_", "cv_score_")
        )
        self.cv_f1_ = None
        if self.tune_thresholds:
            tuned = [self._tuned(X, Y[:, j], p) for j, p in enumerate(fitted)]
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
                    f"classes= names {len(names)} labels for {array.shape[1]} columns of y",
                    param="classes",
                )
            return array.astype(int), names
        sets = as_label_sets(y)
        seen = sorted({label for labels in sets for label in labels})
        names = [str(c) for c in self.classes] if self.classes is not None else seen
        unknown = sorted(set(seen) - set(names))
        if unknown:
            raise BadInputError(
                f"labels {', '.join(map(repr, unknown[:5]))} are not in classes=; add them",
                param="classes",
            )
        return MultiLabelBinarizer(classes=names).fit_transform(sets), names

    def _label_head(self, grid: tuple[float, ...]) -> Any:
        """The unfitted head each label gets: ``estimator``, or the linear probe."""
        from sklearn.base import clone

        if self.estimator is not None:
            return clone(self.estimator)
        return LinearProbe(
            grid,
            cv=self.cv,
            class_weight=self.class_weight,
            scoring=self.scoring,
            n_jobs=self.n_jobs,
            random_state=self.random_state,
        )

    def _tuned(self, X: np.ndarray, y: np.ndarray, label_head: Any) -> tuple[float, float]:
        """The threshold with the best mean out-of-fold F1 for one label, and that F1: the
        label's head with what its fit chose held fixed (``fixed_estimator``: the probe's
        scaler and regression at its C), refitted on each fold."""
        from sklearn.model_selection import StratifiedKFold, TunedThresholdClassifierCV

        if not hasattr(label_head, "fixed_estimator"):
            raise BadInputError(
                f"tune_thresholds=True refits each label's head on folds, and a "
                f"{type(label_head).__name__} has no fixed_estimator(); leave it out",
                param="tune_thresholds=True",
            )
        folds = StratifiedKFold(n_splits=self.cv, shuffle=True, random_state=self.random_state)
        model = label_head.fixed_estimator()
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

    def decision(self) -> Decision:
        """How this head's probabilities become label sets: each label at its threshold."""
        check_is_fitted(self, "thresholds_")
        return Decision.per_label(self.classes_.tolist(), self.thresholds_.tolist())

    @available_if(_label_heads_have("linear_readout"))
    def linear_readout(self) -> LinearHead:
        """Each label's probe's scaler and regression, one row a label (see
        :class:`~bertprobe.heads.linear.LinearHead`, link ``"multi-label"``)."""
        return stacked_readout(self.classes_.tolist(), self.label_probes())

    @available_if(_label_heads_have("out_of_fold_proba"))
    def out_of_fold_proba(self, X, Y) -> np.ndarray:
        """Each training row's probability of each label from its label's probe's folds,
        never from a model that saw the row: shape (n_rows, n_labels), columns ``classes_``
        (``Y``: the 0/1 label matrix fitted on)."""
        Y = np.asarray(Y)
        return np.column_stack(
            [
                probe.out_of_fold_proba(X, Y[:, j])[:, 1]
                for j, probe in enumerate(self.label_probes())
            ]
        )

    @available_if(_label_heads_have("summary_record"))
    def summary_record(self) -> dict[str, Any]:
        """Each label's probe's figures (see its ``summary_record``), by figure then label."""
        names = self.classes_.tolist()
        records = [probe.summary_record() for probe in self.label_probes()]
        return {key: {n: r[key] for n, r in zip(names, records, strict=True)} for key in records[0]}

    def cv_summary(self) -> tuple[float, float, float, float]:
        """The labels' cross-validations, as :meth:`LinearProbe.cv_summary
        <bertprobe.heads.probe.LinearProbe.cv_summary>` gives one: each figure the mean over
        labels (the spread: of each label's scores over its folds; ``C``: the median)."""
        spreads = [probe.cv_summary()[1] for probe in self.label_probes()]
        return (
            float(np.mean(self.cv_accuracy_)),
            float(np.mean(spreads)),
            float(np.median(self.C_)),
            float(np.mean(self.cv_score_)),
        )

    def describe(self) -> str:
        """How the probes were chosen, in words (``train`` prints it)."""
        return f"one probe a label ({len(self.classes_)} labels), thresholds on the card"

    def label_probes(self) -> list[Any]:
        """Each label's fitted binary probe, in the order of ``classes_``."""
        check_is_fitted(self, "estimator_")
        return list(self.estimator_.estimators_)

    def label_scores(self) -> dict[str, dict[str, float]]:
        """How each label's probe was chosen, by name: its C and CV accuracy."""
        names = self.classes_.tolist()
        return {
            "C": dict(zip(names, self.C_.tolist(), strict=True)),
            "cv_accuracy": dict(zip(names, self.cv_accuracy_.tolist(), strict=True)),
        }

    def card_record(self) -> dict[str, Any]:
        """What the model card says of the probes: each label's C, CV accuracy, threshold."""
        names = self.classes_.tolist()
        first = self.estimator_.estimators_[0]
        decided = {
            "thresholds": dict(zip(names, self.thresholds_.tolist(), strict=True)),
            "threshold_rule": (
                "max F1 on out-of-fold probabilities"
                if self.tune_thresholds
                else f"{self.threshold:g} for every label"
            ),
        }
        if not hasattr(first, "Cs_"):  # another head a label: each says what it is
            return {
                "solver": f"{type(first).__name__} one-vs-rest",
                SETS_KEY: True,
                "labels": {
                    n: p.card_record() for n, p in zip(names, self.label_probes(), strict=True)
                },
                **decided,
            }
        return {
            "solver": "lbfgs-cv one-vs-rest",
            SETS_KEY: True,
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


@register_head
class StreamingMultiLabelProbe(MultiLabelProbe):
    """Several labels a text, learned a chunk at a time: one
    :class:`~bertprobe.heads.probe.OutOfCoreProbe` per label (one-vs-rest), each label
    predicted when its probability reaches ``threshold``.

    :meth:`fit_chunks` takes chunks of ``(X, Y)`` with ``Y`` the 0/1 label matrix (columns
    ``classes``); each label's probe streams the chunks itself (``epochs + 2`` passes a label),
    so memory holds one chunk and the models whatever the number of rows. Each label's alpha is
    chosen on its held-out rows (see :class:`~bertprobe.heads.probe.OutOfCoreProbe`).

    Parameters
    ----------
    classes : sequence of str, optional
        The label names, the columns of ``Y``; default ``"0"``, ``"1"``, ...
    threshold : float, default=0.5
        Every label's decision threshold.
    class_weight : "balanced" or None, default=None
        Each label's probe weighs its texts with and without the label alike in total.
    alphas, epochs, holdout, random_state
        Each label's :class:`~bertprobe.heads.probe.OutOfCoreProbe`'s.
    estimator : streaming head, optional
        The head each label gets instead (cloned; it needs ``fit_chunks``).

    Attributes
    ----------
    classes_ : ndarray of str
        The label names.
    estimators_ : list of OutOfCoreProbe
        Each label's fitted probe.
    thresholds_ : ndarray of shape (n_labels,)
    alpha_, holdout_accuracy_ : ndarray of shape (n_labels,)
        Each label's chosen alpha and its accuracy on the held-out rows.

    Examples
    --------
    >>> rng = np.random.default_rng(0)
    >>> X = rng.normal(size=(600, 5))
    >>> Y = np.column_stack([X[:, 0] > 0, X[:, 1] > 0]).astype(int)
    >>> probe = StreamingMultiLabelProbe(classes=["a", "b"]).fit_chunks(
    ...     lambda: ((X[i : i + 200], Y[i : i + 200]) for i in range(0, 600, 200)))
    >>> probe.predict(X[:2]).shape, bool((probe.holdout_accuracy_ > 0.8).all())
    ((2, 2), True)
    """

    def __init__(
        self,
        *,
        classes: Sequence[str] | None = None,
        threshold: float = DEFAULT_THRESHOLD,
        class_weight: str | None = None,
        alphas: tuple[float, ...] = (1e-5, 1e-4, 1e-3, 1e-2),
        epochs: int = 5,
        holdout: float = 0.1,
        random_state: int = 0,
        estimator: Any = None,
    ) -> None:
        # Not MultiLabelProbe's parameters: no C grid or folds, alphas on held-out rows.
        self.classes = classes
        self.threshold = threshold
        self.class_weight = class_weight
        self.alphas = alphas
        self.epochs = epochs
        self.holdout = holdout
        self.random_state = random_state
        self.estimator = estimator

    def fit(self, X, y, unlabelled=None) -> StreamingMultiLabelProbe:
        """Fit on arrays (label sets or a 0/1 matrix), streamed 8,192 rows at a time.
        ``unlabelled`` is refused: see :meth:`OutOfCoreProbe.fit
        <bertprobe.heads.probe.OutOfCoreProbe.fit>`."""
        from bertprobe.heads.probe import refuse_unlabelled

        refuse_unlabelled(unlabelled)
        X = np.asarray(X)
        Y, names = self._indicator(y)
        self.classes = names
        step = 8192
        return self.fit_chunks(
            lambda: ((X[i : i + step], Y[i : i + step]) for i in range(0, len(X), step))
        )

    def fit_chunks(self, chunks: Any) -> StreamingMultiLabelProbe:
        """Fit each label's probe from ``chunks()``: a fresh iterable of ``(X, Y)`` pairs, the
        same rows in the same chunks on every call."""
        from sklearn.base import clone

        from bertprobe.heads.probe import OutOfCoreProbe

        if not 0 < self.threshold < 1:
            raise BadInputError(
                f"threshold={self.threshold}: give a probability between 0 and 1", param="threshold"
            )
        first = next(iter(chunks()), None)
        if first is None:
            raise BadInputError("no training rows; check the training file")
        n_labels = np.asarray(first[1]).shape[1]
        names = [str(c) for c in self.classes] if self.classes is not None else None
        names = names or [str(j) for j in range(n_labels)]
        self.estimators_ = []
        for j, name in enumerate(names):
            probe = (
                clone(self.estimator)
                if self.estimator is not None
                else OutOfCoreProbe(
                    alphas=self.alphas,
                    epochs=self.epochs,
                    holdout=self.holdout,
                    class_weight=self.class_weight,
                    random_state=int(self.random_state or 0),
                )
            )
            try:
                probe.fit_chunks(partial(_label_column, chunks, j))
            except BadInputError as exc:
                raise exc.about(f"label {name!r}") from None
            self.estimators_.append(probe)
        self.classes_ = np.asarray(names, dtype=str)
        self.n_features_in_ = self.estimators_[0].n_features_in_
        self.thresholds_ = np.full(len(names), float(self.threshold))
        self.alpha_, self.holdout_accuracy_ = (
            np.asarray([getattr(p, name, np.nan) for p in self.estimators_], dtype=float)
            for name in ("alpha_", "holdout_accuracy_")
        )
        return self

    def predict_proba(self, X) -> np.ndarray:
        """Each label's probability, shape (n_samples, n_labels), columns ``classes_``."""
        check_is_fitted(self, "estimators_")
        return np.column_stack([p.predict_proba(X)[:, 1] for p in self.estimators_])

    def label_probes(self) -> list[Any]:
        check_is_fitted(self, "estimators_")
        return list(self.estimators_)

    def label_scores(self) -> dict[str, dict[str, float]]:
        """How each label's probe was chosen, by name: its alpha and held-out accuracy."""
        names = self.classes_.tolist()
        return {
            "alpha": dict(zip(names, self.alpha_.tolist(), strict=True)),
            "holdout_accuracy": dict(zip(names, self.holdout_accuracy_.tolist(), strict=True)),
        }

    def card_record(self) -> dict[str, Any]:
        """What the model card says of the probes: each label's alpha, held-out scores and
        threshold."""
        names = self.classes_.tolist()
        return {
            "solver": "sgd-out-of-core one-vs-rest",
            SETS_KEY: True,
            **self.label_scores(),
            "labels": {
                name: p.card_record() for name, p in zip(names, self.estimators_, strict=True)
            },
            "class_weight": self.class_weight,
            "thresholds": dict(zip(names, self.thresholds_.tolist(), strict=True)),
            "threshold_rule": f"{self.threshold:g} for every label",
        }


def _label_column(chunks: Any, j: int) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """``chunks()``'s ``(X, Y)`` pairs as ``(X, Y[:, j])``: one label's rows, 0 or 1."""
    for X, Y in chunks():
        yield X, np.asarray(Y)[:, j].astype(int)


def cv_probe(y: Any, **params: Any) -> Any:
    """The unfitted cross-validated probe for targets ``y``: a
    :class:`~bertprobe.heads.probe.LinearProbe` of ``params`` for labels, one a label
    (:class:`MultiLabelProbe`) for a 0/1 label matrix (scikit-learn's multilabel-indicator
    target), which takes no ``patience``."""
    if np.ndim(y) == 2:
        params.pop("patience", None)
        return MultiLabelProbe(params.pop("Cs"), **params)
    return LinearProbe(**params)


def one_head_a_label(*, streaming: bool = False, **params: Any) -> Any:
    """The unfitted head that gives label sets: one head a label (one-vs-rest), each label at
    its threshold; ``streaming``: one that learns a chunk at a time
    (:class:`StreamingMultiLabelProbe`), else :class:`MultiLabelProbe`. ``params`` are the
    chosen class's."""
    return (StreamingMultiLabelProbe if streaming else MultiLabelProbe)(**params)
