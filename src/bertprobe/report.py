"""Evaluation reports: plots (matplotlib, Agg) and one self-contained HTML page.

``bertprobe report --model DIR test.tsv --out report/`` writes ``report.html`` (images embedded,
so the one file can be mailed or attached) and each plot as a PNG:

- ``confusion_matrix.png``: counts of true against predicted labels;
- ``cv_vs_c.png``: CV accuracy against C with the spread over folds, the chosen C marked;
- ``layer_sweep.png``: CV accuracy by layer and pooling, when the model was trained ``--auto``;
- ``learning_curve.png``: accuracy against training-set size (needs the training file);
- ``reliability.png``: confidence against accuracy, with the expected calibration error;
- ``precision_recall.png``: a precision-recall curve per class on the test data, with the
  decision threshold chosen at training time marked (two classes);
- ``projection.png``: the test vectors in 2-D (PCA), coloured by true label, errors marked.

The page adds precision, recall and F1 per class, the metric the model was trained for, the
most confident errors, "Why these labels" (the most confident errors and a seeded sample of
correct answers, their words shaded by :meth:`~bertprobe.model.classifier.Classifier.explain`;
``build_report(explain=False)`` leaves it out), a TF-IDF + logistic regression baseline
trained and tested on the same split, and the training rows whose label the model doubts
(:mod:`bertprobe.training.label_issues`, from out-of-fold probabilities; needs the training
file).
"""

from __future__ import annotations

import base64
import io
import json
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import cached_property, singledispatch
from pathlib import Path
from typing import Any, cast

import numpy as np

from bertprobe.core.errors import BadInputError, Message
from bertprobe.core.extras import needs_extra
from bertprobe.core.tables import python_value
from bertprobe.data.files import LabelledTexts, ReadOptions
from bertprobe.encoders.options import RunOptions
from bertprobe.heads.probe import metric_score
from bertprobe.heads.tfidf import tfidf_pipeline
from bertprobe.model.classifier import Classifier
from bertprobe.model.explain import Explanation
from bertprobe.training.compare import Comparison
from bertprobe.training.evaluation import MultiLabelEvaluation
from bertprobe.training.inputs import read_training_set
from bertprobe.training.label_issues import N_SHOWN, find_label_issues
from bertprobe.training.sweep import SweepResult
from bertprobe.training.target import LabelSets, Target

N_CONFIDENT_ERRORS = 12
# "Why these labels": the most confident errors and a seeded sample of correct answers, each
# explained (the report's one cost that grows per text shown, so a bounded few).
N_EXPLAINED = 10
CALIBRATION_BINS = 10


def _pyplot():
    with needs_extra("report"):
        import matplotlib

        matplotlib.use("Agg")  # files only, never a window
        import matplotlib.pyplot as plt

    return plt


# --- numbers ---------------------------------------------------------------------------------


def calibration_bins(
    confidence: np.ndarray, correct: np.ndarray, n_bins: int = CALIBRATION_BINS
) -> tuple[list[dict], float]:
    """Equal-width confidence bins (count, mean confidence, accuracy) and the expected
    calibration error: the count-weighted mean gap between confidence and accuracy."""
    edges = np.linspace(0.0, 1.0, n_bins + 1)
    which = np.clip(np.digitize(confidence, edges[1:-1], right=True), 0, n_bins - 1)
    bins, ece = [], 0.0
    for b in range(n_bins):
        inside = which == b
        if not inside.any():
            continue
        conf, acc = float(confidence[inside].mean()), float(correct[inside].mean())
        bins.append(
            {
                "low": edges[b],
                "high": edges[b + 1],
                "count": int(inside.sum()),
                "confidence": conf,
                "accuracy": acc,
            }
        )
        ece += inside.mean() * abs(conf - acc)
    return bins, float(ece)


@dataclass
class ReportData:
    """Everything a report shows, computed once; plots and the page only draw it.

    The derived numbers (confidence, calibration, per-class metrics) are computed on first use
    and kept: change no field after that.
    """

    model_id: str
    card: dict[str, Any]
    texts: list[str]
    y_true: np.ndarray
    y_pred: np.ndarray
    proba: np.ndarray
    classes: list
    features: np.ndarray
    test_source: str
    learning_curve: dict[str, Any] | None = None
    tfidf_accuracy: float | None = None
    notes: list[str] = field(default_factory=list)
    # The training rows whose label the model doubts, most doubtful first (the first N_SHOWN
    # of them, with text and line), and how many were found; None without the training file.
    label_issues: list[dict[str, Any]] | None = None
    n_label_issues: int | None = None
    # "Why these labels": the texts explained, each {"kind": "error" or "correct", "true":
    # its label, "explanation": Explanation}; None when left out (build_report(explain=False)).
    explained: list[dict[str, Any]] | None = None
    # How the head was chosen, in its own words, and its training-data score (name, value).
    head_words: str = ""
    head_score: tuple[str, float] | None = None

    @property
    def metric(self) -> str:
        """The metric the model was trained for (its card's), accuracy by default."""
        return self.card.get("metrics", {}).get("metric", "accuracy")

    @cached_property
    def metric_score(self) -> float:
        """:attr:`metric` on the test data (argmax labels)."""
        return metric_score(self.metric, self.y_true, self.proba, self.classes)

    @property
    def accuracy(self) -> float:
        return float(np.mean(self.y_true == self.y_pred))

    @cached_property
    def confidence(self) -> np.ndarray:
        return self.proba.max(axis=1)

    @cached_property
    def calibration(self) -> tuple[list[dict], float]:
        """Confidence bins and the expected calibration error (see :func:`calibration_bins`)."""
        return calibration_bins(self.confidence, self.y_true == self.y_pred)

    @cached_property
    def _per_class(self) -> dict[str, dict[str, float]]:
        from sklearn.metrics import classification_report

        report = classification_report(
            self.y_true, self.y_pred, labels=self.classes, output_dict=True, zero_division=0
        )
        return {str(c): report[str(c)] for c in self.classes}

    def per_class(self) -> dict[str, dict[str, float]]:
        """Precision, recall, F1 and support by class label (as text)."""
        return self._per_class

    def confident_errors(self, n: int = N_CONFIDENT_ERRORS) -> list[dict[str, Any]]:
        wrong = np.flatnonzero(self.y_true != self.y_pred)
        order = wrong[np.argsort(-self.confidence[wrong])][:n]
        return [
            {
                "text": self.texts[i],
                "true": self.y_true[i],
                "predicted": self.y_pred[i],
                "confidence": float(self.confidence[i]),
            }
            for i in order
        ]

    def explained_rows(self, n: int = N_EXPLAINED, seed: int = 0) -> list[tuple[str, int]]:
        """The texts "Why these labels" explains, as ``(kind, row)``: the ``n`` most confident
        errors (``"error"``), then ``n`` correct answers drawn at random (``"correct"``,
        seeded, in the test file's order)."""
        wrong = np.flatnonzero(self.y_true != self.y_pred)
        errors = wrong[np.argsort(-self.confidence[wrong], kind="stable")][:n]
        right = np.flatnonzero(self.y_true == self.y_pred)
        rng = np.random.default_rng(seed)
        correct = np.sort(rng.choice(right, size=min(n, len(right)), replace=False))
        return [("error", int(i)) for i in errors] + [("correct", int(i)) for i in correct]

    def summary(self) -> dict[str, Any]:
        """The report's numbers as plain JSON-ready values."""
        _, ece = self.calibration
        return {
            "model": self.model_id,
            "test": self.test_source,
            "n_test": len(self.texts),
            "accuracy": self.accuracy,
            "expected_calibration_error": ece,
            "tfidf_accuracy": self.tfidf_accuracy,
            "per_class": self.per_class(),
            "n_errors": int(np.sum(self.y_true != self.y_pred)),
            "metric": self.metric,
            **({self.metric: self.metric_score} if self.metric != "accuracy" else {}),
            "decision_threshold": self.card.get("decision_threshold"),
            "n_label_issues": self.n_label_issues,
        }


# --- plots -----------------------------------------------------------------------------------


def plot_confusion_matrix(data: ReportData):
    from sklearn.metrics import ConfusionMatrixDisplay

    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(4.6, 4.0), layout="constrained")
    ConfusionMatrixDisplay.from_predictions(
        data.y_true, data.y_pred, labels=data.classes, ax=ax, colorbar=False, cmap="Blues"
    )
    ax.set_title(f"Confusion matrix (accuracy {100 * data.accuracy:.1f}%)")
    return fig


def plot_cv_vs_c(probe_card: dict[str, Any]):
    plt = _pyplot()
    Cs = np.asarray(probe_card["c_grid"])
    scores = np.asarray(probe_card["cv_scores"])  # (folds, Cs)
    mean, std = scores.mean(axis=0), scores.std(axis=0)
    fig, ax = plt.subplots(figsize=(6.0, 3.8), layout="constrained")
    ax.plot(Cs, 100 * mean, marker="o", color="C0", label="mean over folds")
    ax.fill_between(
        Cs,
        100 * (mean - std),
        100 * (mean + std),
        color="C0",
        alpha=0.2,
        label="± 1 std over folds",
    )
    ax.axvline(
        probe_card["C"], color="C3", linestyle="--", label=f"chosen C = {probe_card['C']:.3g}"
    )
    ax.set_xscale("log")
    ax.set(
        xlabel="C (inverse regularization strength)",
        ylabel="CV accuracy (%)",
        title=f"{probe_card['cv_folds']}-fold CV accuracy against C",
    )
    ax.legend(loc="lower right")
    ax.grid(alpha=0.3)
    return fig


def plot_sweep(sweep: dict[str, Any]):
    """Accuracy against layer, one line per pooling; concatenations as diamonds at the right.

    A screened sweep draws every candidate's ridge screen accuracy and marks the finalists'
    probe CV accuracy with stars; an exhaustive sweep (or a card from before the screen) draws
    the CV accuracy of every candidate.
    """
    plt = _pyplot()
    rows = sweep["rows"]
    screened = any(r.get("screen_score") is not None for r in rows)
    score = "screen_score" if screened else "cv_accuracy"
    fig, ax = plt.subplots(figsize=(7.4, 4.2), layout="constrained")
    n_layers = 1 + max(r["layers"][0] for r in rows if len(r["layers"]) == 1)
    # Each concatenation (e.g. layers 3-6) gets a slot right of the single layers.
    groups = list(dict.fromkeys(tuple(r["layers"]) for r in rows if len(r["layers"]) > 1))
    slot = {g: n_layers + 0.6 + 1.2 * j for j, g in enumerate(groups)}

    def x_of(r: dict[str, Any]) -> float:
        return r["layers"][0] if len(r["layers"]) == 1 else slot[tuple(r["layers"])]

    for k, pooling in enumerate(dict.fromkeys(r["pooling"] for r in rows)):
        single = sorted(
            (r for r in rows if r["pooling"] == pooling and len(r["layers"]) == 1),
            key=lambda r: r["layers"][0],
        )
        ax.plot(
            [r["layers"][0] for r in single],
            [100 * r[score] for r in single],
            marker="o",
            color=f"C{k}",
            label=f"{pooling} (ridge screen)" if screened else pooling,
        )
        multi = [r for r in rows if r["pooling"] == pooling and len(r["layers"]) > 1]
        ax.scatter(
            [slot[tuple(r["layers"])] for r in multi],
            [100 * r[score] for r in multi],
            marker="D",
            s=40,
            color=f"C{k}",
            zorder=3,
        )
    finalists = [r for r in rows if r["cv_accuracy"] is not None]
    if screened:
        ax.scatter(
            [x_of(r) for r in finalists],
            [100 * r["cv_accuracy"] for r in finalists],
            marker="*",
            s=140,
            color="black",
            zorder=4,
            label="finalists: probe CV",
        )
    if groups:
        ax.axvline(n_layers - 0.2, color="lightgrey", linewidth=1)
    if sweep.get("tfidf_cv_accuracy") is not None:
        ax.axhline(
            100 * sweep["tfidf_cv_accuracy"],
            color="grey",
            linestyle="--",
            label="TF-IDF + LR (no transformer)",
        )
    if sweep.get("vote_cv_accuracy") is not None:
        ax.axhline(
            100 * sweep["vote_cv_accuracy"],
            color="C3",
            linestyle=":",
            label="best + TF-IDF, voting",
        )
    best = max(finalists, key=lambda r: r["cv_accuracy"])
    ax.set_xticks(list(range(n_layers)) + list(slot.values()))
    ax.set_xticklabels([str(i) for i in range(n_layers)] + [f"{g[0]}-{g[-1]}" for g in groups])
    ax.set(
        xlabel="hidden layer (0 = embeddings); right of the line: layers concatenated",
        ylabel="accuracy on training data, held out (%)",
        title=f"Layer x pooling sweep on training data\n(best: {best['name']}, "
        f"{100 * best['cv_accuracy']:.1f}%)",
    )
    ax.legend(loc="lower right", fontsize="small")
    ax.grid(alpha=0.3)
    return fig


def plot_comparison(found: Comparison, out: str | Path) -> Path:
    """``bertprobe compare``'s picture, written as a PNG to ``out``: each encoder's CV score
    (with two standard errors) against its seconds per 1,000 texts (log scale), the
    recommendation starred, the TF-IDF floor as a line."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(7.4, 4.2), layout="constrained")
    for k, row in enumerate(found.rows):
        chosen = row.encoder == found.recommended
        ax.errorbar(
            row.seconds_per_1000,
            100 * row.score,
            yerr=200 * row.spread,
            marker="*" if chosen else "o",
            markersize=14 if chosen else 8,
            color=f"C{k}",
            capsize=3,
            label=f"{Path(row.encoder).name}: {row.best.name}"
            + (" (recommended)" if chosen else ""),
        )
    if found.tfidf_cv_accuracy is not None and found.metric == "accuracy":
        ax.axhline(100 * found.tfidf_cv_accuracy, color="grey", linestyle="--", label="TF-IDF + LR")
    ax.set_xscale("log")
    ax.set(
        xlabel="seconds to embed 1,000 of these texts (log scale)",
        ylabel=f"CV {found.metric} on training data (%)",
        title=f"Which encoder: {found.n_train:,} texts, {found.cv}-fold CV of each one's best "
        "features",
    )
    ax.legend(loc="lower right", fontsize="small")
    ax.grid(alpha=0.3, which="both")
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_bytes(figure_png(fig))
    return out


def plot_learning_curve(curve: dict[str, Any]):
    plt = _pyplot()
    sizes = np.asarray(curve["sizes"])
    fig, ax = plt.subplots(figsize=(6.0, 3.8), layout="constrained")
    for key, label, color in (
        ("train", "training accuracy", "C1"),
        ("cv", "cross-validation accuracy", "C0"),
    ):
        scores = 100 * np.asarray(curve[key])
        ax.plot(sizes, scores.mean(axis=1), marker="o", color=color, label=label)
        ax.fill_between(
            sizes,
            scores.mean(axis=1) - scores.std(axis=1),
            scores.mean(axis=1) + scores.std(axis=1),
            color=color,
            alpha=0.2,
        )
    ax.set(
        xlabel="training sentences",
        ylabel="accuracy (%)",
        title=(
            f"Learning curve at C = {curve['C']:.3g}"
            if curve.get("C") is not None
            else "Learning curve"
        ),
    )
    ax.legend(loc="lower right")
    ax.grid(alpha=0.3)
    return fig


# The card's tuning records (contrastive, distillation, fine-tuning), in the order they ran.
TUNINGS = ("contrastive", "distill", "finetune")


def tuning_curves(card: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    """The card's tunings that scored dev rows or logged a loss, each by name with its record."""
    return [
        (name, card[name])
        for name in TUNINGS
        if isinstance(card.get(name), dict)
        and (card[name].get("dev_history") or card[name].get("loss_history"))
    ]


def plot_training_curve(card: dict[str, Any]):
    """Each tuning's mean training loss and dev score by epoch (the best epoch, the one kept,
    marked; early stopping said in the title)."""
    plt = _pyplot()
    curves = tuning_curves(card)
    fig, axes = plt.subplots(
        1, len(curves), figsize=(4.2 * len(curves) + 1.6, 3.6), layout="constrained", squeeze=False
    )
    for ax, (name, record) in zip(axes[0], curves, strict=True):
        losses = record.get("loss_history") or []
        if losses:
            ax.plot(range(1, len(losses) + 1), losses, marker="o", color="C1", label="train loss")
            ax.set_ylabel("training loss")
        dev = record.get("dev_history") or []
        if dev:
            scores = ax.twinx() if losses else ax
            epochs = record.get("dev_epochs") or list(range(1, len(dev) + 1))
            scores.plot(epochs, 100 * np.asarray(dev), marker="s", color="C0", label="dev score")
            best = record.get("best_epoch")
            if best in epochs:
                scores.plot(best, 100 * dev[epochs.index(best)], "*", color="C3", markersize=14)
            scores.set_ylabel("dev score (%)")
        stopped = " (stopped early)" if record.get("stopped_early") else ""
        ax.set(xlabel="epoch", title=f"{name}{stopped}")
        ax.grid(alpha=0.3)
    return fig


def plot_reliability(data: ReportData):
    plt = _pyplot()
    bins, ece = data.calibration
    fig, ax = plt.subplots(figsize=(4.8, 4.4), layout="constrained")
    floor = 1.0 / len(data.classes)
    ax.plot([floor, 1], [floor, 1], linestyle="--", color="grey", label="perfect calibration")
    ax.bar(
        [b["low"] for b in bins],
        [b["accuracy"] for b in bins],
        width=1 / CALIBRATION_BINS,
        align="edge",
        alpha=0.35,
        color="C0",
        edgecolor="C0",
        label="accuracy in bin",
    )
    ax.plot([b["confidence"] for b in bins], [b["accuracy"] for b in bins], marker="o", color="C0")
    ax.set(
        xlim=(floor - 0.02, 1.0),
        ylim=(0, 1.02),
        xlabel="confidence (top probability)",
        ylabel="accuracy",
        title=f"Reliability (ECE = {ece:.3f})",
    )
    ax.legend(loc="upper left")
    ax.grid(alpha=0.3)
    return fig


def plot_precision_recall(data: ReportData):
    """One precision-recall curve per class (that class against the rest) on the test data;
    for two classes, the decision threshold the card keeps is marked on the second's."""
    from sklearn.metrics import PrecisionRecallDisplay

    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6.0, 4.4), layout="constrained")
    for k, label in enumerate(data.classes):
        truth = data.y_true == label
        if truth.all() or not truth.any():  # no curve for a class absent (or alone) here
            continue
        PrecisionRecallDisplay.from_predictions(
            truth, data.proba[:, k], ax=ax, name=f"class {label}", curve_kwargs={"color": f"C{k}"}
        )
    stored = data.card.get("decision_threshold")
    if stored and len(data.classes) == 2:
        positive = data.y_true == data.classes[1]
        chosen = data.proba[:, 1] >= stored["value"]
        if chosen.any() and positive.any():
            precision = float(np.mean(positive[chosen]))
            recall = float(np.mean(chosen[positive]))
            ax.scatter(
                [recall],
                [precision],
                marker="*",
                s=160,
                color="C3",
                zorder=4,
                label=f"threshold {stored['value']:.3f} (chosen on training data)",
            )
    ax.set(xlim=(0, 1.01), ylim=(0, 1.02), title="Precision-recall by class (test data)")
    if ax.get_legend_handles_labels()[0]:
        ax.legend(loc="lower left", fontsize="small")
    else:  # every class is absent or alone in the test data: say so instead of an empty plot
        ax.text(
            0.5,
            0.5,
            "no curve: a class needs texts of its own\nand of other classes in the test data",
            ha="center",
            va="center",
            transform=ax.transAxes,
        )
    ax.grid(alpha=0.3)
    return fig


def plot_projection(data: ReportData):
    from sklearn.decomposition import PCA
    from sklearn.preprocessing import StandardScaler

    plt = _pyplot()
    points = PCA(n_components=2, random_state=0).fit_transform(
        StandardScaler().fit_transform(data.features)
    )
    wrong = data.y_true != data.y_pred
    fig, ax = plt.subplots(figsize=(6.0, 4.8), layout="constrained")
    for k, label in enumerate(data.classes):
        mine = data.y_true == label
        ax.scatter(
            points[mine & ~wrong, 0],
            points[mine & ~wrong, 1],
            s=8,
            alpha=0.45,
            color=f"C{k}",
            label=f"true {label}",
        )
        ax.scatter(
            points[mine & wrong, 0],
            points[mine & wrong, 1],
            s=22,
            marker="x",
            color=f"C{k}",
            linewidths=1.0,
        )
    ax.scatter([], [], marker="x", color="black", label="misclassified (x)")
    ax.set(
        xlabel="first principal component",
        ylabel="second principal component",
        title="Test sentences, PCA of the probe's input features",
    )
    ax.legend(loc="best", fontsize="small")
    return fig


def figure_png(fig) -> bytes:
    plt = _pyplot()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=110)
    plt.close(fig)
    return buffer.getvalue()


# --- assembling a report ----------------------------------------------------------------------


def build_report(
    model: Classifier,
    test: str | Path | LabelledTexts,
    *,
    train: str | Path | LabelledTexts | None = None,
    run: RunOptions = RunOptions(),
    reading: ReadOptions = ReadOptions(),
    n_jobs: int | None = -1,
    explain: bool = True,
) -> ReportData:
    """Everything a report on ``model`` over the labelled ``test`` data shows.

    ``train`` (default: the training file recorded in the model card, if it is unchanged)
    adds the learning curve and the TF-IDF baseline. ``explain`` adds "Why these labels": the
    most confident errors and a sample of correct answers with their words shaded
    (:meth:`~bertprobe.model.classifier.Classifier.explain`, for those texts only). Rows whose
    labels the model never saw are left out of the plots, and ``notes`` says so, as it says
    what else was left out and why.

    Example:
        >>> data = build_report(Classifier.load("models/sst2"), "test.tsv")  # doctest: +SKIP
        >>> write_report(data, "report/")  # doctest: +SKIP
    """
    decision = model.decision
    if decision.label_sets:
        raise BadInputError(
            f"model {model.id} gives label sets: its report is "
            "bertprobe.report.write_model_report (per-label scores and F1 chart)"
        )
    test_set = test if isinstance(test, LabelledTexts) else reading.read_labelled(test)
    notes: list[str] = []
    train_set = None
    head = model.probe
    if hasattr(head, "fixed_estimator") or hasattr(head, "out_of_fold_proba"):
        train_set, note = _training_data_of(model, train, reading)
        notes += [note] if note else []
    else:  # a head that cannot refit on the training rows (one trained out of core, say)
        notes.append(
            f"the head ({type(head).__name__}) cannot be refitted on the training data (no "
            "fixed_estimator or out_of_fold_proba; a head trained out of core, say): the "
            "learning curve, TF-IDF baseline and label issues are left out"
        )
    test_texts, y_true, left_out, _ = _rows_with_model_labels(model, test_set)
    if left_out:
        notes.append(
            f"{test_set.source}: left out {left_out:,} rows whose labels the model never saw"
        )
    X_test, _ = model.embed(test_texts, run)
    proba = model.head.predict_proba(X_test, texts=test_texts)
    data = ReportData(
        model_id=model.id,
        card=model.card,
        texts=test_texts,
        y_true=y_true,
        y_pred=np.asarray(decision.labels(proba)) if len(proba) else np.asarray([]),
        proba=proba,
        classes=model.classes,
        features=X_test,
        test_source=test_set.source,
        notes=notes,
        head_words=head.describe() if hasattr(head, "describe") else f"a {type(head).__name__}",
        head_score=_training_score(head),
    )
    if explain and len(test_texts):
        chosen = data.explained_rows()
        found = model.explain([test_texts[i] for _, i in chosen], run)
        data.explained = [
            {"kind": kind, "true": y_true[i], "explanation": e}
            for (kind, i), e in zip(chosen, found, strict=True)
        ]
    if train_set is not None:
        train_texts, y_train, train_left_out, kept = _rows_with_model_labels(model, train_set)
        if train_left_out:
            notes.append(
                f"{train_set.source}: left out {train_left_out:,} rows whose labels "
                "the model never saw"
            )
        X_train, _ = model.embed(train_texts, run)
        cv = _folds_of(model)
        if hasattr(head, "fixed_estimator"):
            data.learning_curve = learning_curve_scores(
                head.fixed_estimator(), X_train, y_train, cv=cv, n_jobs=n_jobs
            )
            data.learning_curve["C"] = getattr(head, "C_", None)
        baseline = tfidf_pipeline(cv=cv, n_jobs=n_jobs).fit(train_texts, y_train)
        data.tfidf_accuracy = float(baseline.score(test_texts, y_true))
        if hasattr(head, "out_of_fold_proba"):
            issues = find_label_issues(
                y_train, head.out_of_fold_proba(X_train, y_train), model.classes
            )
            data.n_label_issues = len(issues)
            data.label_issues = [
                {
                    **issue.to_dict(),
                    "line": train_set.line_numbers[kept[issue.index]],
                    "text": train_texts[issue.index],
                }
                for issue in issues[:N_SHOWN]
            ]
    return data


# A head's summary figures the report's first cards show, by name (the first found).
SCORE_NAMES = {"cv_accuracy": "CV accuracy", "holdout_accuracy": "Held-out accuracy"}


def _training_score(head: Any) -> tuple[str, float] | None:
    """The head's score on its training data as it reports it (its ``summary_record``)."""
    figures = head.summary_record() if hasattr(head, "summary_record") else {}
    found = [(SCORE_NAMES[k], float(v)) for k, v in figures.items() if k in SCORE_NAMES]
    return found[0] if found else None


def _folds_of(model: Classifier) -> int:
    """The folds the model's head was chosen with (5 when it says none)."""
    return int(getattr(model.probe, "cv", 5) or 5)


def _training_data_of(
    model: Classifier, train: str | Path | LabelledTexts | None, reading: ReadOptions
) -> tuple[LabelledTexts | None, Message | None]:
    """The model's training data, if it can be had unchanged; else None and why not."""
    cv = _folds_of(model)
    if train is not None:
        return read_training_set(train, reading, cv), None
    record = model.card.get("data", {}).get("train")
    path = Path(record["path"]) if record else None
    if path is None:
        why = "no training file recorded"
    elif not path.is_file():
        why = f"training file {path} not found"
    else:
        train_set = read_training_set(path, reading, cv)
        if train_set.sha256 == record["sha256"]:
            return train_set, None
        why = f"training file {path} changed since training"
    return None, Message(
        f"{why}; pass train= for the learning curve and the TF-IDF baseline", param="train"
    )


def _rows_with_model_labels(
    model: Classifier, labelled: LabelledTexts
) -> tuple[list[str], np.ndarray, int, list[int]]:
    """The texts and labels (as the model's values) of the rows whose label the model knows,
    how many rows were left out, and the kept rows' indices in ``labelled``."""
    labels = model.align_labels(labelled.labels or [], labelled.source)  # refuses no overlap
    by_text = {str(c): c for c in model.classes}
    keep = [i for i, y in enumerate(labels) if str(y) in by_text]
    return (
        [labelled.texts[i] for i in keep],
        np.asarray([by_text[str(labels[i])] for i in keep]),
        len(labels) - len(keep),
        keep,
    )


def write_sweep(result: SweepResult, out: str | Path) -> dict[str, Any]:
    """Write ``sweep.json`` and ``sweep.png`` into ``out``; returns the summary written."""
    out = Path(out)
    summary = result.to_dict()
    png = figure_png(plot_sweep(summary))
    out.mkdir(parents=True, exist_ok=True)
    (out / "sweep.json").write_text(json.dumps(summary, indent=2) + "\n", encoding="utf-8")
    (out / "sweep.png").write_bytes(png)
    return summary


# --- learning curve and baseline (need the training file) ------------------------------------


def learning_curve_scores(
    estimator: Any, X_train: np.ndarray, y_train, cv: int = 5, n_jobs: int | None = None
) -> dict[str, Any]:
    """Train and CV accuracy at growing training sizes of ``estimator`` (a head's
    ``fixed_estimator()``: what fitting chose, its C say, held fixed)."""
    from sklearn.exceptions import FitFailedWarning
    from sklearn.model_selection import StratifiedKFold, learning_curve

    with warnings.catch_warnings():
        # A small share of a tiny training set can hold one class: that point is left out
        # (NaN, not plotted) instead of printing the failed fits' tracebacks.
        warnings.simplefilter("ignore", FitFailedWarning)
        sizes, train, test = learning_curve(
            estimator,
            X_train,
            y_train,
            train_sizes=np.linspace(0.1, 1.0, 6),
            cv=StratifiedKFold(cv, shuffle=True, random_state=0),
            n_jobs=n_jobs,
            # Prefixes of a shuffled split: a file sorted by label would give one-class prefixes.
            shuffle=True,
            random_state=0,
            error_score=np.nan,
        )
    return {"sizes": sizes.tolist(), "train": train.tolist(), "cv": test.tolist()}


# --- the page --------------------------------------------------------------------------------


def report_folder(out: str | Path) -> Path:
    """``out``, created if need be; a one-line error if it cannot be."""
    out = Path(out)
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise BadInputError(
            f"--out {out}: cannot create the folder ({exc.strerror}); choose a writable place"
        ) from None
    return out


def page_templates():
    """The package's HTML templates (Jinja2, autoescaped); call before any work, since it is
    where a missing ``report`` extra is found."""
    with needs_extra("report"):
        from jinja2 import Environment, PackageLoader, select_autoescape

    return Environment(
        loader=PackageLoader("bertprobe", "templates"), autoescape=select_autoescape(["html"])
    )


def write_report(data: ReportData, out: str | Path) -> Path:
    """Write the PNGs and ``report.html`` into ``out``; returns the page's path."""
    templates = page_templates()
    out = report_folder(out)
    figures: list[tuple[str, str, bytes]] = [
        ("confusion_matrix", "Confusion matrix", figure_png(plot_confusion_matrix(data))),
    ]
    if "c_grid" in data.card["probe"]:  # an out-of-core probe has no C search to show
        figures.append(("cv_vs_c", "Choosing C", figure_png(plot_cv_vs_c(data.card["probe"]))))
    if data.card.get("sweep"):
        figures.append(
            ("layer_sweep", "Layer and pooling sweep", figure_png(plot_sweep(data.card["sweep"])))
        )
    if data.learning_curve is not None:
        figures.append(
            (
                "learning_curve",
                "Learning curve",
                figure_png(plot_learning_curve(data.learning_curve)),
            )
        )
    if tuning_curves(data.card):
        figures.append(
            ("training_curve", "Training curve", figure_png(plot_training_curve(data.card)))
        )
    figures.append(("reliability", "Calibration", figure_png(plot_reliability(data))))
    figures.append(
        ("precision_recall", "Precision and recall", figure_png(plot_precision_recall(data)))
    )
    if len(data.texts) >= 2:  # a 2-D projection (PCA) needs two points at least
        figures.append(("projection", "Where the errors are", figure_png(plot_projection(data))))
    else:
        data.notes.append("one test text only: the 2-D projection of the test vectors is left out")
    for name, _, png in figures:
        (out / f"{name}.png").write_bytes(png)

    summary = data.summary()
    page = templates.get_template("report.html").render(
        data=data,
        card=data.card,
        summary=summary,
        ece=summary["expected_calibration_error"],
        per_class=summary["per_class"],
        errors=data.confident_errors(),
        why=_why_these_labels(data),
        figures=[
            {
                "name": n,
                "title": t,
                "src": "data:image/png;base64," + base64.b64encode(png).decode("ascii"),
            }
            for n, t, png in figures
        ],
        sweep_rows=sorted(
            data.card.get("sweep", {}).get("rows", []),
            key=lambda r: (-(r["cv_accuracy"] or -1.0), -(r.get("screen_score") or 0.0)),
        )[:10],
    )
    path = out / "report.html"
    path.write_text(page, encoding="utf-8")
    return path


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
    test_set = model.read_labelled(test, reading)
    result = cast(
        MultiLabelEvaluation,
        model.evaluate(test_set.texts, test_set.labels or [], run, source=test_set.source),
    )
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
        distill=model.card.get("distill"),
    )
    path = out / "report.html"
    path.write_text(page, encoding="utf-8")
    return path, {"test": test_set.source, **result.to_dict()}


@dataclass
class WrittenReport:
    """What :func:`write_model_report` wrote: the page, its figures (``report --json``), the
    notes on what was left out and why, and one line that sums it up."""

    page: Path
    summary: dict[str, Any]
    notes: list[str]
    headline: str


def write_model_report(
    model: Classifier,
    test: str | Path | LabelledTexts,
    out: str | Path,
    *,
    train: str | Path | LabelledTexts | None = None,
    run: RunOptions = RunOptions(),
    reading: ReadOptions = ReadOptions(),
    n_jobs: int | None = -1,
    explain: bool = True,
) -> WrittenReport:
    """The report that suits the model (what ``bertprobe report`` writes): for one label a
    text, :func:`build_report` and :func:`write_report` (``train``, ``n_jobs`` and ``explain``
    are theirs); for label sets, :func:`write_multilabel_report`. ``test`` is read as the
    model's labels are (:meth:`~bertprobe.model.classifier.Classifier.read_labelled`)."""
    test_set = model.read_labelled(test, reading)
    options = {"train": train, "run": run, "reading": reading, "n_jobs": n_jobs, "explain": explain}
    return _report_for(model.target, model, test_set, Path(out), options)


@singledispatch
def _report_for(
    target: Target, model: Classifier, test: LabelledTexts, out: Path, options: dict[str, Any]
) -> WrittenReport:
    found = build_report(model, test, **options)
    page = write_report(found, out)
    baseline = found.tfidf_accuracy
    headline = f"accuracy  {100 * found.accuracy:.2f}% on {test.source}" + (
        f" (TF-IDF + LR baseline {100 * baseline:.2f}%)" if baseline is not None else ""
    )
    return WrittenReport(page, found.summary(), found.notes, headline)


@_report_for.register
def _(
    target: LabelSets, model: Classifier, test: LabelledTexts, out: Path, options: dict[str, Any]
) -> WrittenReport:
    page, found = write_multilabel_report(
        model, test, out, run=options["run"], reading=options["reading"]
    )
    headline = (
        f"F1        micro {found['test_f1_micro']:.3f}, macro {found['test_f1_macro']:.3f} "
        f"on {test.source}"
    )
    return WrittenReport(page, found, [], headline)


# --- explanations ----------------------------------------------------------------------------


def explanation_segments(explanation: Explanation) -> list[dict[str, Any]]:
    """``explanation``'s text as pieces in order: words (with their score per class) and the
    text between them (``scores`` None), so the page shows the text as written."""
    pieces: list[dict[str, Any]] = []
    at = 0
    text = explanation.text
    for word, row in zip(explanation.words, explanation.scores, strict=True):
        if word.start > at:
            pieces.append({"text": text[at : word.start], "scores": None})
        pieces.append({"text": word.text, "scores": [round(float(s), 6) for s in row]})
        at = word.end
    if at < len(text):
        pieces.append({"text": text[at:], "scores": None})
    return pieces


def shaded_row(explanation: Explanation) -> dict[str, Any]:
    """What a page shows of an explanation (templates/_shading.html): its pieces, the class
    whose scores shade them (the predicted one), the scale (largest absolute score), the
    labels given and the probability of the class shown, the method."""
    e = explanation
    return {
        "labels": ", ".join(str(python_value(y)) for y in e.labels) or "(none)",
        "column": e.column,
        "proba": float(e.proba[e.column]),
        "pieces": explanation_segments(e),
        "method": e.method,
        "scale": float(np.abs(e.scores).max()) if e.scores.size else 0.0,
    }


def _why_these_labels(data: ReportData) -> dict[str, Any] | None:
    """The report's "Why these labels" section: the rows of errors and of correct answers,
    the methods and notes (each once), the classes; None when the report has none."""
    if not data.explained:
        return None
    found = [row["explanation"] for row in data.explained]
    rows = [
        {**shaded_row(row["explanation"]), "kind": row["kind"], "true": python_value(row["true"])}
        for row in data.explained
    ]
    return {
        "errors": [r for r in rows if r["kind"] == "error"],
        "correct": [r for r in rows if r["kind"] == "correct"],
        "methods": sorted({e.method for e in found}),
        "notes": sorted({e.note for e in found}),
        "score": found[0].score,
        "classes": [str(python_value(c)) for c in data.classes],
    }


def write_explanation_page(
    model: Classifier, explanations: Sequence[Explanation], out: str | Path
) -> Path:
    """One HTML page for many texts (``explain --html OUT``): a table of the texts with their
    words shaded by score (green: evidence for the class shown, red: against; each text scaled
    to its largest score), the label and its probability, and with more than two classes a
    selector of the class whose scores are shown (default: each text's predicted class)."""
    templates = page_templates()
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    classes = [str(python_value(c)) for c in model.classes]
    rows = [{"n": i + 1, **shaded_row(e)} for i, e in enumerate(explanations)]
    notes = sorted({e.note for e in explanations})
    page = templates.get_template("explain.html").render(
        model_id=model.card.get("id", "(not saved)"),
        encoder=model.encoder.name,
        pooling=model.spec.pooling,
        classes=classes,
        selector=len(classes) > 2,
        score=explanations[0].score if explanations else "log-odds",
        rows=rows,
        notes=notes,
    )
    out.write_text(page, encoding="utf-8")
    return out
