"""What a text's label is: one label (:data:`ONE_LABEL`) or a label set (:data:`LABEL_SETS`).

A :class:`Target` is the one object that knows what differs between the two, so that the
training stages, fine-tuning, the model's evaluation and its card ask it instead of testing a
flag: how a labelled file is read and checked, what a head fits on (labels, or a 0/1 label
matrix), which head wraps the probe, what the out-of-fold pass yields (a decision threshold,
label issues), how test rows are scored, what fine-tuning trains (softmax and cross-entropy,
or a sigmoid a label and binary cross-entropy) and what the card records.

:func:`target_for` picks one, in the one place that does: from the training options' label-set
flag
when training, from a model's :class:`~bertprobe.heads.decision.Decision` when evaluating.

Example:
    >>> from bertprobe.data.files import LabelledTexts
    >>> data = LabelledTexts.from_lists(["a", "b", "c"], [("x",), ("x", "y"), ()])
    >>> LABEL_SETS.targets(data, ["x", "y"]).tolist()
    [[1, 0], [1, 1], [0, 0]]
    >>> target_for(label_sets=False) is ONE_LABEL
    True
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from collections import Counter
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np

from bertprobe.core.errors import BadInputError
from bertprobe.core.tables import python_value
from bertprobe.data.files import FileSummary, LabelledTexts, ReadOptions, align_labels, scan_labels
from bertprobe.data.multilabel import (
    DEFAULT_LABEL_SEP,
    _multilabel_set,
    as_label_sets,
    read_multilabel_set,
    scan_label_sets,
)
from bertprobe.heads.decision import SETS_KEY, Decision
from bertprobe.heads.multilabel import indicator, multilabel_scores, one_head_a_label
from bertprobe.heads.probe import (
    LinearProbe,
    OutOfCoreProbe,
    VotingProbe,
    best_threshold,
    check_trainable,
    metric_score,
)
from bertprobe.heads.tfidf import TFIDF_C_GRID, tfidf_pipeline
from bertprobe.training.evaluation import Evaluation, MultiLabelEvaluation
from bertprobe.training.inputs import (
    _labelled,
    check_label_sets,
    label_set_sample,
    label_sets_of,
    read_training_set,
    reservoir_sample,
)
from bertprobe.training.label_issues import LabelIssue, find_label_issues
from bertprobe.training.options import TrainOptions
from bertprobe.training.sweep import SweepResult
from bertprobe.training.zeroshot import ZeroShot, surest

# What a test (or any scored) set's figures come to: accuracy (for label sets, every label of
# a text right), the run's metric (one label) and the label-set scores (label sets).
TestScores = tuple[float, float | None, dict[str, Any] | None]


class Target(ABC):
    """What differs between one label a text and a label set a text; see the module."""

    #: Whether a text's label is a set of labels (several, or none).
    label_sets: bool

    # --- reading and checking ------------------------------------------------------------

    @abstractmethod
    def read(self, data: str | Path | LabelledTexts, reading: ReadOptions) -> LabelledTexts:
        """A labelled set (a test or dev set), read from a file or taken from memory."""

    @abstractmethod
    def read_training(
        self, data: str | Path | LabelledTexts, reading: ReadOptions, cv: int
    ) -> tuple[LabelledTexts, list]:
        """The training set, checked for ``cv`` folds before anything is embedded, and its
        classes (the head's columns, in order)."""

    @abstractmethod
    def check_against(self, data: LabelledTexts, classes: Sequence[Any]) -> None:
        """Refuse a set (a test set) that shares no label with the training ``classes``."""

    def described(self, data: LabelledTexts, classes: Sequence[Any]) -> LabelledTexts:
        """A labelled set (a test set) checked against classes named by descriptions, its
        labels as those names (a file's ``1`` is the class ``"1"``)."""
        self.check_against(data, classes)
        return data

    @abstractmethod
    def pseudo_labels(
        self, proba: np.ndarray, classes: Sequence[Any], zero_shot: ZeroShot
    ) -> tuple[np.ndarray, list]:
        """Self-training's pick from a pool's probabilities ``proba``: the rows it learns
        from and their labels (see :mod:`bertprobe.training.zeroshot`)."""

    @abstractmethod
    def as_tuples(self, labels: Sequence[Any]) -> list[tuple]:
        """Labels as given (one a text, or label sets) as a tuple a text."""

    @abstractmethod
    def targets(self, data: LabelledTexts, classes: Sequence[Any]) -> Any:
        """What a head (and the sweep) fits on: the labels, or the 0/1 label matrix."""

    @abstractmethod
    def scan(
        self, path: Path, reading: ReadOptions, classes: Sequence[Any] | None
    ) -> tuple[np.ndarray, FileSummary, list]:
        """A file's targets read a chunk at a time (texts checked, not kept), what the pass
        found, and the classes: the file's own when ``classes`` is None (a training file,
        checked for two folds), else ``classes`` (the file checked against them)."""

    @abstractmethod
    def sample(
        self, path: Path, reading: ReadOptions, n: int, cv: int
    ) -> tuple[LabelledTexts, list]:
        """A uniform sample of ``n`` rows of a training file too large to hold, checked for
        ``cv`` folds, and the file's classes."""

    # --- heads -----------------------------------------------------------------------------

    @abstractmethod
    def head(self, options: TrainOptions, classes: Sequence[Any], swept: SweepResult | None) -> Any:
        """The unfitted head an in-memory run fits (a :class:`VotingProbe` when the sweep
        preferred the TF-IDF vote)."""

    @abstractmethod
    def streaming_head(self, options: TrainOptions, classes: Sequence[Any]) -> Any:
        """The unfitted head an out-of-core run streams its chunks into."""

    @abstractmethod
    def out_of_fold(
        self, head: Any, X: np.ndarray, y: Any, options: TrainOptions, voted: bool
    ) -> tuple[dict[str, Any] | None, list[LabelIssue] | None]:
        """One out-of-fold pass of a fitted head over its training rows: the decision
        threshold the card keeps (or None) and the label issues (with
        ``options.label_issues``, else None)."""

    @abstractmethod
    def label_issues(self, y: Any, oof: np.ndarray, classes: Sequence[Any]) -> list[LabelIssue]:
        """The rows whose label out-of-fold probabilities ``oof`` doubt, most doubted first."""

    # --- scores ----------------------------------------------------------------------------

    @abstractmethod
    def test_scores(self, y: Any, proba: np.ndarray, decision: Decision, metric: str) -> TestScores:
        """Accuracy, the metric's score and the label-set scores of ``proba`` against ``y``
        (as :meth:`targets` or :meth:`scan` give them)."""

    @abstractmethod
    def evaluation(
        self,
        labels: Sequence[Any],
        proba: np.ndarray,
        decision: Decision,
        *,
        source: str,
        metric: str,
        record: dict[str, Any],
    ) -> Evaluation | MultiLabelEvaluation:
        """What :meth:`Classifier.evaluate <bertprobe.model.classifier.Classifier.evaluate>`
        measured: ``labels`` as a user gives them (compared as text; labels the model never
        saw count as errors), ``record`` the run's ``n``, ``model``, ``embed_seconds`` and
        ``n_truncated``."""

    # --- what the card and the summary say ---------------------------------------------------

    @abstractmethod
    def summary(self, result: Any) -> dict[str, Any]:
        """The test figures of ``train --json`` (``result``: a
        :class:`~bertprobe.model.train.TrainResult`), by what this target measures."""

    def card_record(self, reading: ReadOptions, classes: Sequence[Any]) -> dict[str, Any]:
        """The card's sections beside the metrics that this target adds (none by default)."""
        return {}

    def check_training_reading(self, reading: ReadOptions) -> None:
        """Refuse reading options that contradict this target, before anything is read."""
        return None  # every reading suits label sets; one label a text refuses some

    @abstractmethod
    def reading_for(self, card: dict[str, Any], reading: ReadOptions) -> ReadOptions:
        """``reading`` checked for this target, completed with how the model's training file
        gave its labels (from ``card``), so that a test file reads like the training file
        without the flags again."""

    # --- fine-tuning -------------------------------------------------------------------------

    #: The loss of the tuned head (:class:`~bertprobe.training._tuning.PooledClassifier`).
    tuning_loss: str

    @abstractmethod
    def split_dev(
        self,
        train_set: LabelledTexts,
        options: Any,
        dev: LabelledTexts | None,
        classes: Sequence[Any],
    ) -> tuple[LabelledTexts, LabelledTexts]:
        """The rows to tune on and the dev rows that choose the epoch."""

    @abstractmethod
    def tuning_outputs(self, rows: LabelledTexts, classes: Sequence[Any]) -> list:
        """The tuned head's outputs, in order."""

    @abstractmethod
    def tuning_labels(self, data: LabelledTexts, outputs: Sequence[Any]) -> list:
        """Each row's training target: its output's index, or its 0/1 row over outputs."""

    @abstractmethod
    def dev_scores(self, prediction: Any) -> dict[str, float]:
        """The Trainer's ``compute_metrics``: the dev scores and the epoch's ``selection``."""

    @abstractmethod
    def dev_record(self, log_history: list[dict[str, Any]]) -> dict[str, Any]:
        """What the Trainer's evaluations say, as :class:`FinetuneResult` fields."""

    def tuning_job(self, classes: Sequence[Any]) -> dict[str, Any]:
        """What a tuning job's folder name must tell apart beyond the options (nothing for
        one label a text, so that such jobs keep the folders they had)."""
        return {}

    # --- distillation ------------------------------------------------------------------------

    @abstractmethod
    def soften(self, proba: np.ndarray, temperature: float) -> np.ndarray:
        """A teacher's probabilities at ``temperature`` (above 1: flatter, the teacher's
        second choices weigh more), as the student's soft targets."""

    def label_matrix(self, data: LabelledTexts, outputs: Sequence[Any]) -> np.ndarray:
        """Each row's label as a row of probabilities over ``outputs``: one-hot, or for label
        sets the 0/1 row of its labels (what a soft target mixes the label in as)."""
        labels = self.tuning_labels(data, outputs)
        if self.label_sets:
            return np.asarray(labels, dtype=np.float64).reshape(len(labels), len(outputs))
        return np.eye(len(outputs))[np.asarray(labels, dtype=int)]


class OneLabel(Target):
    """One label a text: a probe over classes (voting with TF-IDF where the sweep says so),
    argmax or a decision threshold, accuracy and the run's metric."""

    label_sets = False
    tuning_loss = "cross-entropy"

    def read(self, data: str | Path | LabelledTexts, reading: ReadOptions) -> LabelledTexts:
        return _labelled(data, reading)

    def read_training(
        self, data: str | Path | LabelledTexts, reading: ReadOptions, cv: int
    ) -> tuple[LabelledTexts, list]:
        train_set = read_training_set(data, reading, cv)
        return train_set, sorted(set(train_set.labels or []), key=str)

    def check_against(self, data: LabelledTexts, classes: Sequence[Any]) -> None:
        align_labels(data.labels or [], list(classes), data.source)

    def described(self, data: LabelledTexts, classes: Sequence[Any]) -> LabelledTexts:
        return replace(data, labels=align_labels(data.labels or [], list(classes), data.source))

    def pseudo_labels(
        self, proba: np.ndarray, classes: Sequence[Any], zero_shot: ZeroShot
    ) -> tuple[np.ndarray, list]:
        rows = surest(proba, zero_shot)
        return rows, [classes[k] for k in proba[rows].argmax(axis=1)]

    def as_tuples(self, labels: Sequence[Any]) -> list[tuple]:
        return [(label,) for label in labels]

    def targets(self, data: LabelledTexts, classes: Sequence[Any]) -> list:
        return list(data.labels or [])

    def scan(
        self, path: Path, reading: ReadOptions, classes: Sequence[Any] | None
    ) -> tuple[np.ndarray, FileSummary, list]:
        labels, summary = scan_labels(
            path,
            text_col=reading.text_col,
            label_col=reading.label_col,
            drop_empty=reading.drop_empty,
            max_field_chars=reading.max_field_chars,
        )
        if classes is None:
            try:
                check_trainable(labels, 2)
            except BadInputError as exc:
                raise exc.about(str(path)) from None
            classes = sorted(set(labels), key=str)
        else:
            align_labels(labels, list(classes), str(path))
        return np.asarray(labels), summary, list(classes)

    def sample(
        self, path: Path, reading: ReadOptions, n: int, cv: int
    ) -> tuple[LabelledTexts, list]:
        sample = reservoir_sample(path, reading, n)
        try:
            check_trainable(sample.labels or [], cv)
        except BadInputError as exc:
            raise exc.about(f"{path} (a sample of {n:,} rows)") from None
        return sample, sorted(set(sample.labels or []), key=str)

    def head(self, options: TrainOptions, classes: Sequence[Any], swept: SweepResult | None) -> Any:
        """The probe (``options.head`` when given), its C grid narrowed to the sweep's
        choice, voting with the TF-IDF model when the sweep preferred the vote."""
        probe = probe_for(options, swept)
        if swept is None or not swept.vote_wins:
            return probe
        # The sweep chose the voter's C by the same folds: the final fit keeps it.
        chosen = (swept.tfidf_C,) if swept.tfidf_C is not None else TFIDF_C_GRID
        voter = tfidf_pipeline(cv=options.cv, Cs=chosen, n_jobs=options.n_jobs)
        return VotingProbe(probe, text_model=voter)

    def streaming_head(self, options: TrainOptions, classes: Sequence[Any]) -> Any:
        if options.head is not None:  # checked by TrainOptions: it has fit_chunks
            from sklearn.base import clone

            return clone(options.head)
        return OutOfCoreProbe(class_weight=options.class_weight)

    def out_of_fold(
        self, head: Any, X: np.ndarray, y: Any, options: TrainOptions, voted: bool
    ) -> tuple[dict[str, Any] | None, list[LabelIssue] | None]:
        """Two classes and no vote (a vote's probabilities are not the head's): the decision
        threshold; with ``options.label_issues``, the issues; one pass serves both."""
        classes = head.classes_.tolist()
        wants_threshold = len(classes) == 2 and not voted
        if not (wants_threshold or options.label_issues) or not hasattr(head, "out_of_fold_proba"):
            return None, None
        oof = head.out_of_fold_proba(X, y)
        threshold = threshold_record(y, oof, classes, options.metric) if wants_threshold else None
        issues = self.label_issues(y, oof, classes) if options.label_issues else None
        return threshold, issues

    def label_issues(self, y: Any, oof: np.ndarray, classes: Sequence[Any]) -> list[LabelIssue]:
        return find_label_issues(y, oof, list(classes))

    def test_scores(self, y: Any, proba: np.ndarray, decision: Decision, metric: str) -> TestScores:
        classes = list(decision.classes)
        predicted = decision.labels(proba)
        return accuracy(y, predicted), metric_score(metric, y, proba, classes, predicted), None

    def evaluation(
        self,
        labels: Sequence[Any],
        proba: np.ndarray,
        decision: Decision,
        *,
        source: str,
        metric: str,
        record: dict[str, Any],
    ) -> Evaluation:
        from sklearn.metrics import classification_report, confusion_matrix

        classes = list(decision.classes)
        y_true = align_labels(labels, classes, source)
        unknown = sorted({str(y) for y in y_true} - {str(c) for c in classes})
        predicted = decision.labels(proba)
        # ROC AUC over more than two classes has no column for a label the model never saw.
        scorable = metric != "accuracy" and not (unknown and metric == "roc_auc")
        score = metric_score(metric, y_true, proba, classes, predicted) if scorable else None
        if unknown:  # y_true is text then (align_labels): compare like with like
            predicted = [str(p) for p in predicted]
        known = [str(c) if unknown else c for c in classes]
        names = sorted(set(predicted) | set(y_true) | set(known), key=str)
        report = classification_report(
            y_true, predicted, labels=names, output_dict=True, zero_division=0
        )
        return Evaluation(
            accuracy=accuracy(y_true, predicted),
            labels=[python_value(x) for x in names],
            per_class={
                str(x): {
                    k: report[str(x)][k] for k in ("precision", "recall", "f1-score", "support")
                }
                for x in names
            },
            confusion_matrix=confusion_matrix(y_true, predicted, labels=names).tolist(),
            unknown_labels=unknown,
            metric=metric,
            score=score,
            threshold=decision.thresholds[0] if decision.rule == "threshold" else None,
            **record,
        )

    def check_training_reading(self, reading: ReadOptions) -> None:
        if reading.label_sets:
            raise BadInputError(
                "label_sep= and label_cols= read several labels per text; add multi_label=True, "
                "or leave them out for one label per text",
                param=("label_sep", "label_cols", "multi_label=True"),
            )

    def reading_for(self, card: dict[str, Any], reading: ReadOptions) -> ReadOptions:
        if reading.label_sets:
            raise BadInputError(
                "label_sep= and label_cols= read several labels per text; the model "
                f"{card.get('id', '')} gives one label per text, so leave them out",
                param=("label_sep", "label_cols"),
            )
        return reading

    def summary(self, result: Any) -> dict[str, Any]:
        metric = result.metric
        figures: dict[str, Any] = {"test_accuracy": result.test_accuracy, "metric": metric}
        if metric != "accuracy":
            figures[f"cv_{metric}"] = getattr(result.probe, "cv_score_", None)
            figures[f"test_{metric}"] = result.test_score
        figures["decision_threshold"] = result.decision_threshold
        return figures

    def split_dev(
        self,
        train_set: LabelledTexts,
        options: Any,
        dev: LabelledTexts | None,
        classes: Sequence[Any],
    ) -> tuple[LabelledTexts, LabelledTexts]:
        return split_dev(train_set, options, dev)

    def tuning_outputs(self, rows: LabelledTexts, classes: Sequence[Any]) -> list:
        if any(isinstance(y, tuple | list) for y in rows.labels or []):
            raise BadInputError(
                f"{rows.source}: the labels are label sets; tune with the label-set target "
                "(LABEL_SETS, with the label names as classes) to fine-tune on several labels"
            )
        return sorted(set(rows.labels or []), key=str)

    def tuning_labels(self, data: LabelledTexts, outputs: Sequence[Any]) -> list:
        index = {str(c): i for i, c in enumerate(outputs)}
        return [index[str(y)] for y in data.labels or []]

    def dev_scores(self, prediction: Any) -> dict[str, float]:
        return dev_scores(prediction)

    def dev_record(self, log_history: list[dict[str, Any]]) -> dict[str, Any]:
        return dev_record(log_history)

    def soften(self, proba: np.ndarray, temperature: float) -> np.ndarray:
        # softmax(log p / T): the teacher's distribution over classes, flattened for T > 1
        logits = np.log(np.clip(proba, 1e-12, 1.0)) / temperature
        logits -= logits.max(axis=1, keepdims=True)
        softened = np.exp(logits)
        return softened / softened.sum(axis=1, keepdims=True)


class LabelSets(Target):
    """A label set a text (several labels, or none): one probe a label (one-vs-rest), each
    label at its threshold, F1 micro and macro and exact-match accuracy."""

    label_sets = True
    tuning_loss = "binary-cross-entropy"

    def read(self, data: str | Path | LabelledTexts, reading: ReadOptions) -> LabelledTexts:
        return read_multilabel_set(data, reading)

    def read_training(
        self, data: str | Path | LabelledTexts, reading: ReadOptions, cv: int
    ) -> tuple[LabelledTexts, list]:
        train_set, columns = _multilabel_set(data, reading)
        classes = check_label_sets(label_sets_of(train_set), columns, cv, train_set.source)
        return train_set, classes

    def check_against(self, data: LabelledTexts, classes: Sequence[Any]) -> None:
        indicator(label_sets_of(data), [str(c) for c in classes], data.source)

    def pseudo_labels(
        self, proba: np.ndarray, classes: Sequence[Any], zero_shot: ZeroShot
    ) -> tuple[np.ndarray, list]:
        # Which texts are surest to have no label, or some labels but not others, is a
        # question of thresholds the pool cannot answer without labels; not built.
        raise BadInputError(
            "rounds: self-training from descriptions takes the surest texts of each class, one "
            "label a text; for label sets train the zero-shot head alone (rounds=0)",
            param="rounds",
        )

    def as_tuples(self, labels: Sequence[Any]) -> list[tuple]:
        return list(as_label_sets(labels))

    def targets(self, data: LabelledTexts, classes: Sequence[Any]) -> np.ndarray:
        Y, _ = indicator(label_sets_of(data), [str(c) for c in classes], data.source)
        return Y

    def scan(
        self, path: Path, reading: ReadOptions, classes: Sequence[Any] | None
    ) -> tuple[np.ndarray, FileSummary, list]:
        sets, columns, summary = scan_label_sets(path, reading)
        if classes is None:
            classes = check_label_sets(sets, columns, 2, str(path))
        Y, _ = indicator(sets, [str(c) for c in classes], str(path))
        return Y, summary, list(classes)

    def sample(
        self, path: Path, reading: ReadOptions, n: int, cv: int
    ) -> tuple[LabelledTexts, list]:
        return label_set_sample(path, reading, n)

    def head(self, options: TrainOptions, classes: Sequence[Any], swept: SweepResult | None) -> Any:
        """One probe a label (``options.head`` when given), each label's C by its own CV; no
        TF-IDF vote (the vote is for one label a text)."""
        return one_head_a_label(
            Cs=options.Cs,
            cv=options.cv,
            classes=list(classes),
            tune_thresholds=options.tune_thresholds,
            class_weight=options.class_weight,
            scoring=options.metric,
            n_jobs=options.n_jobs,
            estimator=options.head,
        )

    def streaming_head(self, options: TrainOptions, classes: Sequence[Any]) -> Any:
        return one_head_a_label(
            streaming=True,
            classes=list(classes),
            class_weight=options.class_weight,
            estimator=options.head,
        )

    def out_of_fold(
        self, head: Any, X: np.ndarray, y: Any, options: TrainOptions, voted: bool
    ) -> tuple[dict[str, Any] | None, list[LabelIssue] | None]:
        """Label issues, label by label (each label's threshold is the head's own)."""
        if not options.label_issues or not hasattr(head, "out_of_fold_proba"):
            return None, None
        return None, self.label_issues(y, head.out_of_fold_proba(X, y), head.classes_.tolist())

    def label_issues(self, y: Any, oof: np.ndarray, classes: Sequence[Any]) -> list[LabelIssue]:
        """Rows doubted for a label as a single-label row would be, from each label's
        out-of-fold probability (``oof[:, j]``); ``label`` and ``suggested`` read ``"+name"``
        (the label is there) or ``"-name"`` (it is not). Most doubted first, any label."""
        Y = np.asarray(y)
        issues: list[LabelIssue] = []
        for j, name in enumerate(classes):
            both = np.column_stack([1 - oof[:, j], oof[:, j]])
            for issue in find_label_issues(Y[:, j], both, [0, 1]):
                issues.append(
                    replace(
                        issue,
                        label=("+" if issue.label else "-") + str(name),
                        suggested=("+" if issue.suggested else "-") + str(name),
                    )
                )
        return sorted(issues, key=lambda issue: issue.label_probability)

    def test_scores(self, y: Any, proba: np.ndarray, decision: Decision, metric: str) -> TestScores:
        scores = multilabel_scores(np.asarray(y), decision.indicator(proba), decision.classes)
        return scores["subset_accuracy"], None, scores

    def evaluation(
        self,
        labels: Sequence[Any],
        proba: np.ndarray,
        decision: Decision,
        *,
        source: str,
        metric: str,
        record: dict[str, Any],
    ) -> MultiLabelEvaluation:
        classes = [str(c) for c in decision.classes]
        Y_true, unknown = indicator(as_label_sets(labels), classes, source)
        scores = multilabel_scores(Y_true, decision.indicator(proba), classes)
        return MultiLabelEvaluation(
            f1_micro=scores["f1_micro"],
            f1_macro=scores["f1_macro"],
            subset_accuracy=scores["subset_accuracy"],
            per_label=scores["per_label"],
            labels=classes,
            thresholds=dict(zip(classes, decision.thresholds, strict=True)),
            unknown_labels=unknown,
            **record,
        )

    def summary(self, result: Any) -> dict[str, Any]:
        scores = result.test_scores or {}
        decision = result.model.decision
        return {
            SETS_KEY: True,
            "test_f1_micro": scores.get("f1_micro"),
            "test_f1_macro": scores.get("f1_macro"),
            "test_subset_accuracy": scores.get("subset_accuracy"),
            "test_per_label": scores.get("per_label"),
            "thresholds": dict(zip(map(str, decision.classes), decision.thresholds, strict=True)),
            "label_counts": label_counts(result.train_data),
        }

    def card_record(self, reading: ReadOptions, classes: Sequence[Any]) -> dict[str, Any]:
        """How the training file gave its label sets, for :meth:`reading_for`."""
        return {
            SETS_KEY: {
                "labels": list(classes),
                "label_sep": reading.label_sep
                or (None if reading.label_cols else DEFAULT_LABEL_SEP),
                "label_cols": list(map(str, reading.label_cols)) if reading.label_cols else None,
            }
        }

    def reading_for(self, card: dict[str, Any], reading: ReadOptions) -> ReadOptions:
        record = card.get(SETS_KEY) or {}
        if reading.label_sets or not record:
            return reading
        if record.get("label_cols") and reading.label_col is None:
            return replace(reading, label_cols=tuple(record["label_cols"]))
        return replace(reading, label_sep=record.get("label_sep") or DEFAULT_LABEL_SEP)

    def split_dev(
        self,
        train_set: LabelledTexts,
        options: Any,
        dev: LabelledTexts | None,
        classes: Sequence[Any],
    ) -> tuple[LabelledTexts, LabelledTexts]:
        return split_label_sets(train_set, options, dev, [str(c) for c in classes])

    def tuning_outputs(self, rows: LabelledTexts, classes: Sequence[Any]) -> list:
        if not classes:
            raise BadInputError("classes=[]: give the label names to fine-tune on", param="classes")
        return [str(c) for c in classes]

    def tuning_labels(self, data: LabelledTexts, outputs: Sequence[Any]) -> list:
        return label_set_matrix(data, outputs).tolist()

    def dev_scores(self, prediction: Any) -> dict[str, float]:
        return dev_set_scores(prediction)

    def dev_record(self, log_history: list[dict[str, Any]]) -> dict[str, Any]:
        return dev_record(log_history, f1="eval_f1_micro")

    def tuning_job(self, classes: Sequence[Any]) -> dict[str, Any]:
        return {SETS_KEY: True, "classes": [str(c) for c in classes]}

    def soften(self, proba: np.ndarray, temperature: float) -> np.ndarray:
        # each label on its own: sigmoid(logit(p) / T)
        p = np.clip(proba, 1e-12, 1 - 1e-12)
        return 1.0 / (1.0 + np.exp(-np.log(p / (1 - p)) / temperature))


# --- what fine-tuning does differently for each --------------------------------------------


def split_dev(
    train_set: LabelledTexts, options: Any, dev: LabelledTexts | None = None
) -> tuple[LabelledTexts, LabelledTexts]:
    """The rows to train on and the dev rows that choose the epoch (never the test rows):
    ``dev`` checked against the training labels, or a share of ``train_set``.
    """
    labels = list(train_set.labels or [])
    if dev is not None:
        align_labels(
            dev.labels or [], sorted(set(labels), key=str), dev.source
        )  # refuses a dev file sharing no label with the training data
        unknown = {str(y) for y in dev.labels or []} - {str(y) for y in labels}
        if unknown:
            raise BadInputError(
                f"{dev.source}: dev labels the training data lacks: "
                f"{', '.join(sorted(unknown))}; use dev rows of the training labels only"
            )
        return train_set, dev
    from sklearn.model_selection import train_test_split

    counts = Counter(labels)
    n_dev = math.ceil(options.dev_share * len(labels))
    if min(counts.values()) < 2 or n_dev < len(counts) or len(labels) - n_dev < len(counts):
        raise BadInputError(
            f"{train_set.source}: {len(labels)} rows are too few for a dev share of "
            f"{options.dev_share} (every class needs rows on both sides); add rows, raise "
            "dev_share=, or pass dev= a labelled file",
            param=("dev_share", "dev"),
        )
    rows = np.arange(len(labels))
    train_rows, dev_rows = train_test_split(
        rows, test_size=n_dev, stratify=labels, random_state=options.seed
    )
    return _subset(train_set, sorted(train_rows), "train"), _subset(
        train_set, sorted(dev_rows), "dev"
    )


def split_label_sets(
    train_set: LabelledTexts,
    options: Any,
    dev: LabelledTexts | None,
    classes: Sequence[str],
) -> tuple[LabelledTexts, LabelledTexts]:
    """The dev split for label sets. A text's label set is one row, so a text is whole on
    one side. Stratifying by label set is not possible in general (most sets are rare or
    unique), so the share is a plain seeded shuffle of the texts: a rare label can then land
    on one side only, which costs the dev score that label's share of the decisions (micro F1
    pools them) and leaves the head's bias for it to learn "no" (the probe fitted afterwards
    sees every training text). Iterative stratification (Sechidis et al., 2011) would even the
    labels out but is left out: the dev rows only pick an epoch."""
    label_set_matrix(train_set, classes)  # label sets of known labels, or refused
    if dev is not None:
        label_set_matrix(dev, classes, "dev labels the training data lacks", "dev rows of")
        return train_set, dev
    n = len(train_set.texts)
    n_dev = math.ceil(options.dev_share * n)
    if n - n_dev < 1:
        raise BadInputError(
            f"{train_set.source}: {n} rows are too few for a dev share of {options.dev_share} "
            "(both sides need rows); add rows, lower dev_share=, or pass dev= a labelled file",
            param=("dev_share", "dev"),
        )
    order = np.random.default_rng(options.seed).permutation(n)
    dev_rows = sorted(order[:n_dev].tolist())
    train_rows = sorted(order[n_dev:].tolist())
    return _subset(train_set, train_rows, "train"), _subset(train_set, dev_rows, "dev")


def label_set_matrix(
    data: LabelledTexts,
    classes: Sequence[str],
    problem: str = "labels not among the classes given",
    advice: str = "label sets of",
) -> np.ndarray:
    """The 0/1 matrix (texts x ``classes``, float32: the binary cross-entropy's targets) of
    ``data``'s label sets; a label that is not a set of names, or names a label outside
    ``classes``, is refused in one line."""
    index = {str(c): j for j, c in enumerate(classes)}
    Y = np.zeros((len(data.texts), len(index)), dtype=np.float32)
    unknown: set[str] = set()
    for i, labels in enumerate(data.labels or []):
        if isinstance(labels, str) or not isinstance(labels, Sequence | set | frozenset):
            raise BadInputError(
                f"{data.source}: label {labels!r} is not a label set; read the file with "
                "label_sep= or label_cols= (multi-label), or fine-tune without classes=",
                param=("label_sep", "label_cols", "classes"),
            )
        for label in labels:
            if str(label) in index:
                Y[i, index[str(label)]] = 1
            else:
                unknown.add(str(label))
    if unknown:
        raise BadInputError(
            f"{data.source}: {problem}: {', '.join(sorted(unknown))}; use {advice} the "
            "training labels only"
        )
    return Y


def _subset(data: LabelledTexts, rows: Sequence[int], part: str) -> LabelledTexts:
    labels = data.labels or []
    return LabelledTexts(
        texts=[data.texts[i] for i in rows],
        labels=[labels[i] for i in rows],
        source=f"{data.source} ({part} share)",
        sha256=data.sha256,
        line_numbers=[data.line_numbers[i] for i in rows],
    )


def dev_record(log_history: list[dict[str, Any]], f1: str | None = None) -> dict[str, Any]:
    """What the Trainer's evaluations say, as :class:`~bertprobe.training.finetune.
    FinetuneResult` fields: each evaluated epoch's dev scores and the kept one (the best
    ``selection``); ``f1``: the logged key of a dev F1 that is kept too (label sets)."""
    evaluations = [entry for entry in log_history if "eval_accuracy" in entry]
    history = [float(entry["eval_accuracy"]) for entry in evaluations]
    f1_history = [float(entry[f1]) for entry in evaluations] if f1 is not None else None
    best = int(np.argmax([entry["eval_selection"] for entry in evaluations]))
    return {
        "best_epoch": round(evaluations[best]["epoch"]),
        "dev_accuracy": history[best],
        "dev_history": history,
        "dev_epochs": [round(entry["epoch"]) for entry in evaluations],
        "dev_f1_micro": f1_history[best] if f1_history is not None else None,
        "dev_f1_history": f1_history,
    }


def dev_scores(prediction: Any) -> dict[str, float]:
    """Dev accuracy, and the score that picks the epoch kept: the accuracy, ties broken by the
    lower log-loss (a few dev rows tie often, and the Trainer would keep the earliest epoch).

    Rows that are windows come with their text's index (``label_ids`` is then ``(labels,
    texts)``, in whatever order the Trainer evaluated them): each text is scored once, by the
    mean of its windows' predicted probabilities.
    """
    from scipy.special import log_softmax

    logits = prediction.predictions
    logits = logits[0] if isinstance(logits, tuple) else logits
    if isinstance(prediction.label_ids, tuple | list):
        window_labels, texts = (np.asarray(a) for a in prediction.label_ids)
        _, text_of = np.unique(texts, return_inverse=True)
        probabilities = np.zeros((int(text_of.max()) + 1, logits.shape[-1]))
        np.add.at(probabilities, text_of, np.exp(log_softmax(logits, axis=-1)))
        probabilities /= np.bincount(text_of)[:, None]
        labels = np.zeros(len(probabilities), dtype=int)
        labels[text_of] = window_labels  # a text's windows share its label
        log_probabilities = np.log(np.clip(probabilities, 1e-12, None))
    else:
        labels = np.asarray(prediction.label_ids)
        log_probabilities = log_softmax(logits, axis=-1)
    accuracy = float(np.mean(np.argmax(log_probabilities, axis=-1) == labels))
    log_loss = float(-np.mean(log_probabilities[np.arange(len(labels)), labels]))
    # tanh(loss) < 1, over (rows + 1): less than one row's worth of accuracy, so it only
    # orders epochs of equal accuracy
    return {"accuracy": accuracy, "selection": accuracy - np.tanh(log_loss) / (len(labels) + 1)}


def dev_set_scores(prediction: Any) -> dict[str, float]:
    """:func:`dev_scores` for label sets: the dev micro F1 at threshold 0.5, the exact-match
    accuracy, the mean binary cross-entropy, and the score that picks the epoch kept.

    Micro F1 picks the epoch: it pools every (text, label) decision, so it stays steady with
    few dev texts and rare labels (a macro F1 swings on a label with one dev positive), and,
    unlike the exact-match accuracy, credits a text mostly right. Threshold 0.5: the decision
    the head's binary cross-entropy is trained for, and the multi-label probe's default.
    Ties (frequent with few dev texts) go to the lower mean binary cross-entropy, the
    analogue of the log-loss that breaks single-label ties.

    Windows (``label_ids`` is then ``(labels, texts)``): each text is scored once, by the
    mean of its windows' probabilities, label by label.
    """
    from scipy.special import expit

    logits = prediction.predictions
    logits = np.asarray(logits[0] if isinstance(logits, tuple) else logits, dtype=np.float64)
    probabilities = expit(logits)
    if isinstance(prediction.label_ids, tuple | list):
        window_labels, texts = (np.asarray(a) for a in prediction.label_ids)
        _, text_of = np.unique(texts, return_inverse=True)
        pooled = np.zeros((int(text_of.max()) + 1, logits.shape[-1]))
        np.add.at(pooled, text_of, probabilities)
        probabilities = pooled / np.bincount(text_of)[:, None]
        Y = np.zeros_like(probabilities)
        Y[text_of] = window_labels  # a text's windows share its label set
    else:
        Y = np.asarray(prediction.label_ids, dtype=np.float64)
    truth, predicted = Y > 0.5, probabilities >= 0.5
    tp = int(np.sum(truth & predicted))
    fp, fn = int(np.sum(~truth & predicted)), int(np.sum(truth & ~predicted))
    f1 = 2 * tp / (2 * tp + fp + fn) if tp + fp + fn else 0.0
    p = np.clip(probabilities, 1e-12, 1 - 1e-12)
    bce = float(-np.mean(Y * np.log(p) + (1 - Y) * np.log(1 - p)))
    # Micro F1 is 2tp / (tp + fp + positives): a fraction whose denominator is at most
    # cells + positives = D, so two different F1s differ by at least 1 / D^2; tanh(bce) < 1
    # over (D^2 + 1) therefore only orders epochs of equal F1.
    most = Y.size + int(truth.sum())
    return {
        "accuracy": float(np.mean(np.all(truth == predicted, axis=1))),
        "f1_micro": f1,
        "bce": bce,
        "selection": f1 - float(np.tanh(bce)) / (most**2 + 1),
    }


ONE_LABEL: Target = OneLabel()
LABEL_SETS: Target = LabelSets()


def target_for(*, label_sets: bool) -> Target:
    """The target of a run or a model: label sets, or one label a text."""
    return LABEL_SETS if label_sets else ONE_LABEL


def label_counts(data: LabelledTexts | None) -> dict[str, int]:
    """How many texts carry each label (and ``""``: how many carry none)."""
    counts: dict[str, int] = {}
    for labels in label_sets_of(data) if data is not None else []:
        for label in labels or ("",):
            counts[label] = counts.get(label, 0) + 1
    return dict(sorted(counts.items()))


def threshold_record(
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


def accuracy(y_true: Any, predicted: Any) -> float:
    """Share of equal labels, compared by text (see :func:`~bertprobe.data.files.align_labels`:
    a file's ``"1"`` and a model's ``1`` are one label)."""
    return float(np.mean([str(p) == str(y) for p, y in zip(predicted, y_true, strict=True)]))


def near_grid(grid: Sequence[float], chosen: float | None) -> tuple[float, ...]:
    """The grid's values next to ``chosen`` (the sweep's C on the coarse grid): the final
    search refines the sweep's choice instead of repeating it, and skips the weakest
    regularization when the sweep did not want it (those fits run longest)."""
    ordered = tuple(sorted(grid))
    if chosen is None:
        return ordered
    at = int(np.argmin(np.abs(np.log(ordered) - np.log(chosen))))
    return ordered[max(0, at - 1) : at + 2]


def probe_for(options: TrainOptions, swept: SweepResult | None) -> Any:
    """The unfitted probe of one label a text: ``options.head`` (cloned) when given, else the
    linear probe, its C grid narrowed to the sweep's choice (:func:`near_grid`)."""
    from sklearn.base import clone

    if options.head is not None:
        return clone(options.head)
    return LinearProbe(
        Cs=options.grid if swept is None else near_grid(options.grid, swept.best.C),
        cv=options.cv,
        n_jobs=options.n_jobs,
        class_weight=options.class_weight,
        scoring=options.metric,
    )


__all__ = [
    "LABEL_SETS",
    "ONE_LABEL",
    "LabelSets",
    "OneLabel",
    "Target",
    "probe_for",
    "accuracy",
    "target_for",
    "threshold_record",
]
