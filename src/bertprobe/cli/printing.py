"""What the commands print without ``--json``: results on standard output, notes on standard
error.

These only format text for the terminal; the numbers come from the library's result objects,
whose ``to_dict`` is what ``--json`` prints.
"""

from __future__ import annotations

from collections import Counter
from functools import singledispatch
from pathlib import Path
from typing import Any

import typer

from bertprobe.data.files import LabelledTexts
from bertprobe.model.classifier import Classifier
from bertprobe.model.train import TrainResult
from bertprobe.training.evaluation import Evaluation, MultiLabelEvaluation
from bertprobe.training.finetune import FinetuneResult
from bertprobe.training.sweep import SweepResult
from bertprobe.training.target import LabelSets, Target


def note(message: str) -> None:
    """Print a note (progress, a skipped row, a warning) on standard error."""
    typer.echo(message, err=True)


def echo_lines(lines: list[str]) -> None:
    """Print each of ``lines`` on standard output."""
    for line in lines:
        typer.echo(line)


def percent(x: float | None) -> str:
    """``x`` as a percentage with two decimals, or ``n/a``.

    Examples
    --------
    >>> percent(0.91234), percent(None)
    ('91.23%', 'n/a')
    """
    return "n/a" if x is None else f"{100 * x:.2f}%"


def long_texts(long: str, n_truncated: int, n_windows: int, n_computed: int) -> str:
    """What became of long texts: how many were truncated, or the windows per text.

    Examples
    --------
    >>> long_texts("truncate", 1200, 0, 5000)
    '1,200 truncated'
    >>> long_texts("chunk", 0, 7500, 5000)
    '7,500 windows, 1.50 per text'
    """
    if long == "truncate":
        return f"{n_truncated:,} truncated"
    if not n_computed:
        return "no windows computed"
    return f"{n_windows:,} windows, {n_windows / n_computed:.2f} per text"


def report_dropped(*sets: LabelledTexts | None) -> None:
    """Note how many rows with empty text each of ``sets`` skipped (``--drop-empty``)."""
    for s in sets:
        if s is not None and s.dropped_empty:
            note(f"note: {s.source}: skipped {s.dropped_empty:,} rows with empty text")


# --- train -------------------------------------------------------------------------------------


def print_training(result: TrainResult, data: Path | None, test: Path | None) -> None:
    """What ``bertprobe train`` prints: the encoders compared, the tunings, the sweep, the data
    and features, the head, then what the model's target measured on the test set."""
    summary = result.to_dict()
    if result.comparison is not None:
        found = result.comparison
        typer.echo(
            f"encoders  {len(found.rows)} compared on {found.n_train:,} training texts; chose "
            f"{found.recommended}"
        )
        for reason in found.reasons:
            typer.echo(f"          - {reason}")
    report_dropped(result.train_data, result.test_data)
    for tuned in result.tunings:
        _print_finetune(tuned)
    if result.sweep is not None:
        print_sweep(result.sweep)
    _print_features(result, data, summary)
    _print_head(result, summary)
    echo_lines(target_lines(result.model.target, result, summary, test))
    if result.out is not None:
        typer.echo(f"saved     {result.out}")
    else:
        note("note: no --out given, so the model was not saved")


def _print_finetune(tuned: FinetuneResult) -> None:
    if tuned.objective == "contrastive":
        dev = (
            f"; dev pair accuracy {100 * tuned.dev_accuracy:.2f}% ({tuned.n_dev:,} texts)"
            if tuned.dev_accuracy is not None
            else ""
        )
        typer.echo(
            f"contrast  {tuned.n_pairs:,} pairs of {tuned.n_train:,} texts, "
            f"{tuned.epochs_run} epoch(s) in {tuned.seconds:.0f} s{dev}"
        )
        return
    # Several labels a text: the epoch was kept by dev micro F1, so that is what is shown.
    scores, what = (
        (tuned.dev_f1_history, "dev micro F1")
        if tuned.label_sets and tuned.dev_f1_history
        else (tuned.dev_history, "dev accuracy")
    )
    history = ", ".join(
        f"{epoch}: {100 * x:.2f}%" for epoch, x in zip(tuned.dev_epochs, scores, strict=True)
    )
    if tuned.n_taught is not None:  # distilled: what the teacher labelled, how alike they are
        copies = f" ({tuned.n_augmented:,} altered copies)" if tuned.n_augmented else ""
        teacher = (
            f"the teacher took {tuned.teacher_seconds:.0f} s"
            if tuned.teacher_seconds
            else "the teacher's probabilities came from the cache"
        )
        typer.echo(f"distill   {tuned.n_taught:,} texts taught{copies}; {teacher}")
        if tuned.teacher_test_agreement is not None:
            typer.echo(
                f"          the student decides as the teacher on "
                f"{100 * tuned.teacher_test_agreement:.2f}% of the test texts"
            )
    typer.echo(
        f"{'distill' if tuned.n_taught is not None else 'finetune':<9} {tuned.epochs_run} epochs "
        f"on {tuned.n_train:,} texts in {tuned.seconds:.0f} s; {what} by epoch "
        f"({tuned.n_dev:,} texts): {history}; kept epoch {tuned.best_epoch}"
    )


def commit_words(model: Classifier) -> str:
    """Which hub commit ``model``'s encoder came from, as words to append to its name:
    ``", commit HASH"`` (the full hash, to paste into ``--revision``), ``", tuned from commit
    HASH"`` for one fine-tuned from a hub encoder, or nothing for a local encoder."""
    if model.encoder.revision:
        return f", commit {model.encoder.revision}"
    base = model.card.get("encoder", {}).get("base", {}).get("revision")
    return f", tuned from commit {base}" if base else ""


def encoder_line(model: Classifier) -> str | None:
    """``evaluate``'s header line naming the hub commit the model's encoder came from; ``None``
    for a local encoder (the header is then as it always was)."""
    words = commit_words(model)
    return f"encoder   {model.encoder.name}{words}" if words else None


def _print_features(result: TrainResult, data: Path | None, summary: dict[str, Any]) -> None:
    """The training set's classes, the encoder and what embedding it took."""
    model = result.model
    layers = ",".join(str(x) for x in model.spec.layers)
    encoder = (
        f"encoder   {model.encoder.name} ({model.encoder.fingerprint[:19]}"
        f"{commit_words(model)}), pooling {model.spec.pooling}, layer {layers}"
    )
    if data is None:  # from descriptions
        pool = (result.self_trained or {}).get("n_pool") or summary.get("n_pool", 0)
        typer.echo(f"train     no labels: {len(model.classes)} classes described, {pool:,} texts")
        typer.echo(encoder)
        if result.train_data is not None:
            typer.echo(f"          last round: {_label_counts(result)} pseudo-labelled")
        return
    if result.train_data is None:  # out of core: the labels were streamed, not kept
        typer.echo(
            f"train     {data}: {result.n_train:,} texts, out of core; features in "
            f"{result.feature_dir}"
        )
        typer.echo(encoder)
        typer.echo(f"embedded  in {result.embed_seconds:.1f} s, streamed to disk")
        return
    typer.echo(f"train     {data}: {result.n_train:,} texts, {_label_counts(result)}")
    typer.echo(f"{encoder}, max length {summary['max_length']}")
    embedded = [s for s in (result.train_stats, result.test_stats) if s is not None]
    total = sum(s.n_texts for s in embedded)
    long = long_texts(
        model.spec.long,
        summary["n_truncated"],
        summary["n_windows"],
        sum(s.n_computed for s in embedded),
    )
    typer.echo(
        f"embedded  {total:,} texts in {result.embed_seconds:.1f} s "
        f"({summary['n_cached']:,} from cache, {long})"
    )


def _label_counts(result: TrainResult) -> str:
    """How many training texts each class has (each label, and how many have none)."""
    target = result.model.target
    rows: list[Any] = list(result.train_data.labels or []) if result.train_data else []
    counts = Counter(label for labels in target.as_tuples(rows) for label in labels or ("",))
    none = counts.pop("", 0)
    what = "labels" if target.label_sets else "classes"
    return (
        f"{len(counts)} {what} ("
        + ", ".join(f"{k}: {v:,}" for k, v in sorted(counts.items(), key=lambda kv: str(kv[0])))
        + (f"; {none:,} with none" if none else "")
        + ")"
    )


def _print_head(result: TrainResult, summary: dict[str, Any]) -> None:
    """How the head was chosen (its own words), and what the run added to it: self-training,
    the metric, class weights, the decision threshold, the TF-IDF vote."""
    head = result.probe
    described = head.describe() if hasattr(head, "describe") else type(head).__name__
    typer.echo(f"probe     {described}, fit in {result.fit_seconds:.1f} s")
    trained = summary.get("self_training")
    if trained:
        verdict = "kept" if trained["kept"] else "not kept (CV prefers the labelled rows alone)"
        counts = ", ".join(f"{k}: {v:,}" for k, v in trained.get("pseudo_labels", {}).items())
        typer.echo(
            f"unlabelled {trained['n_pseudo_labelled']:,} of {trained['n_unlabelled']:,} texts "
            f"pseudo-labelled, the surest of each class ({counts}): CV "
            f"{100 * trained['cv_score_self_trained']:.2f}% against "
            f"{100 * trained['cv_score_labelled_only']:.2f}% without; {verdict}"
        )
    for round_ in (result.self_trained or {}).get("rounds", []):
        if "stopped" in round_:
            typer.echo(f"round {round_['round']:<3} stopped: {round_['stopped']}")
            continue
        tested = round_.get("test_accuracy")
        typer.echo(
            f"round {round_['round']:<3} learned from the surest "
            + ", ".join(f"{k}: {v:,}" for k, v in round_["pseudo_labels"].items())
            + f"; it changed {100 * round_['changed']:.1f}% of the pool's labels"
            + (f"; test {100 * tested:.2f}% (scored only)" if tested is not None else "")
        )
    if result.tunings and "cv_accuracy" in summary:  # the folds' rows taught the encoder
        note(
            "note: the encoder was tuned on every training label, so the CV accuracy is "
            "optimistic; judge the model by --test or --dev"
        )
    cv_score = summary.get(f"cv_{result.metric}")
    if result.metric != "accuracy" and cv_score is not None:
        typer.echo(
            f"metric    C chosen by {result.metric}: CV {cv_score:.4f}"
            + (f", test {result.test_score:.4f}" if result.test_score is not None else "")
        )
    if summary.get("class_weight") is not None:
        typer.echo(f"weights   class_weight={summary['class_weight']}")
    if result.decision_threshold is not None:
        found = result.decision_threshold
        typer.echo(
            f"threshold {found['value']:.4f} on P({found['positive_label']}) maximizes "
            f"out-of-fold {found['metric']} ({found['oof_score']:.4f}, "
            f"{found['oof_score_argmax']:.4f} at argmax); used with --threshold auto"
        )
    voter = result.model.text_model
    if voter is not None and result.sweep is not None:
        typer.echo(
            f"vote      with TF-IDF + LR (C = {voter[-1].C_:.3g}): CV accuracy "
            f"{percent(result.sweep.vote_cv_accuracy)} against "
            f"{percent(summary.get('cv_accuracy'))} alone"
        )


# How a head's summary figures are headed in train's per-label table.
FIGURE_NAMES = {"cv_accuracy": "CV acc", "holdout_accuracy": "held out"}


def _figure(key: str, value: float) -> str:
    """A head's figure in the per-label table: accuracies as percentages."""
    return f"{100 * value:>8.2f}%" if key.endswith("accuracy") else f"{value:>9.3g}"


@singledispatch
def target_lines(
    target: Target, result: TrainResult, summary: dict[str, Any], test: Path | None
) -> list[str]:
    """What the target measured on the test set: accuracy (one label a text)."""
    if result.test_accuracy is None:
        return []
    return [f"test      {test}: {result.n_test:,} texts, accuracy {percent(result.test_accuracy)}"]


@target_lines.register
def _(target: LabelSets, result: TrainResult, summary: dict[str, Any], test: Path | None):
    """Label sets: each label's head figures, threshold and test F1, then the F1 scores."""
    names = [str(c) for c in result.model.classes]
    head = result.probe
    figures = head.summary_record() if hasattr(head, "summary_record") else {}
    shown = list(figures)[:2]  # by label: how each label's head was chosen (CV accuracy, C)
    per_label = summary["test_per_label"]
    lines = [
        f"{'label':>14} "
        + " ".join(f"{FIGURE_NAMES.get(k, k)[:9]:>9}" for k in shown)
        + f" {'threshold':>10}"
        + (f" {'test F1':>8}" if per_label else "")
    ]
    for name in names:
        row = f"{name:>14} " + " ".join(_figure(k, figures[k][name]) for k in shown)
        row += f" {summary['thresholds'][name]:>10.3f}"
        if per_label:
            row += f" {per_label[name]['f1-score']:>8.3f}"
        lines.append(row)
    if summary["test_f1_micro"] is not None:
        lines.append(
            f"test      {test}: {result.n_test:,} texts, F1 micro "
            f"{summary['test_f1_micro']:.3f}, macro {summary['test_f1_macro']:.3f}, every label "
            f"right on {100 * summary['test_subset_accuracy']:.2f}%"
        )
    return lines


# --- sweep -------------------------------------------------------------------------------------


def print_sweep(result: SweepResult) -> None:
    """The sweep's table: every candidate's screen score, and CV scores of the finalists."""
    best = result.best
    typer.echo(
        f"sweep     {result.n_train:,} texts, {result.cv}-fold CV accuracy on training "
        f"data ({result.seconds:.0f} s)"
    )
    screened = any(row.screen_score is not None for row in result.rows)
    ranked = result.metric != "accuracy"  # then a column of the metric, ranked by it
    if screened:
        typer.echo(
            f"          every candidate screened by ridge leave-one-out {result.metric} "
            f"({result.screen_seconds:.0f} s), the best {len(result.finalists)} by CV"
        )
    metric_head = f" {result.metric[:12]:>12}" if ranked else ""
    typer.echo(
        f"{'features':<22} {'width':>6} {'screen':>8} {'CV acc':>8}{metric_head} {'± std':>7} "
        f"{'C':>9}"
    )
    for row in result.rows:
        mark = "  <- best" if row is best else ""
        screen = (
            "-" if row.screen_score is None
            else percent(row.screen_score) if not ranked
            else f"{row.screen_score:.4f}"
        )  # fmt: skip
        score = f" {row.rank_score or 0:>12.4f}" if ranked else ""
        scored = (
            f"{percent(row.cv_accuracy):>8}{score} {100 * (row.cv_std or 0):>6.2f} "
            f"{row.C or 0:>9.3g}"
            if row.finalist
            else f"{'-':>8}{' ' * len(score)} {'':>6} {'':>9}"
        )
        typer.echo(f"{row.name:<22} {row.dim:>6} {screen:>8} {scored}{mark}")
    if result.tfidf_cv_accuracy is not None:
        typer.echo(f"{'TF-IDF + LR baseline':<22} {'':>6} {100 * result.tfidf_cv_accuracy:>7.2f}%")
    if result.vote_cv_accuracy is not None:
        mark = "  <- chosen" if result.vote_wins else ""
        typer.echo(
            f"{'best + TF-IDF vote':<22} {'':>6} {100 * result.vote_cv_accuracy:>7.2f}%{mark}"
        )


# --- evaluate ----------------------------------------------------------------------------------


@singledispatch
def evaluation_lines(result: Evaluation | MultiLabelEvaluation) -> list[str]:
    """What ``bertprobe evaluate`` prints after the model and data (one function a kind of
    evaluation, registered below)."""
    raise TypeError(f"no printing for a {type(result).__name__}")


@evaluation_lines.register
def _(result: Evaluation) -> list[str]:
    """One label a text: accuracy, the metric, the decision threshold, and precision / recall
    / F1 by class."""
    lines = [f"accuracy  {percent(result.accuracy)}"]
    if result.score is not None:
        lines.append(f"{result.metric}  {result.score:.4f}")
    if result.threshold is not None:
        positive = result.labels[1] if len(result.labels) > 1 else "the second class"
        lines.append(f"threshold {result.threshold:.4f} on P({positive})")
    lines.append(f"{'label':>12} {'precision':>10} {'recall':>10} {'f1':>10} {'support':>8}")
    for label, row in result.per_class.items():
        lines.append(
            f"{label:>12} {row['precision']:>10.3f} {row['recall']:>10.3f} "
            f"{row['f1-score']:>10.3f} {int(row['support']):>8}"
        )
    return lines


@evaluation_lines.register
def _(result: MultiLabelEvaluation) -> list[str]:
    """Label sets: micro and macro F1, exact matches, and each label's scores and threshold."""
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
