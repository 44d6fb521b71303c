"""``bertprobe compare``: which encoder for this data (:func:`bertprobe.compare`)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from bertprobe.cli.options import (
    ENCODING,
    FROM_FLAGS,
    READING,
    CvOpt,
    FinalistsOpt,
    JobsOpt,
    JsonOpt,
    SweepMetricOpt,
    SweepPoolingsOpt,
    TfidfOpt,
    shared,
)
from bertprobe.cli.printing import note, report_dropped
from bertprobe.cli.tracking import (
    ExperimentOpt,
    TrackOpt,
    print_tracking,
    tracked,
    tracking_summary,
)
from bertprobe.core.extras import require_extra
from bertprobe.data.files import ReadOptions, check_output_path
from bertprobe.encoders.options import EncoderOptions
from bertprobe.training.compare import Comparison, EncoderRow, compare_encoders, show_score
from bertprobe.training.inputs import read_training_set
from bertprobe.training.options import TrainOptions
from bertprobe.training.sweep import FINALISTS

DataOpt = Annotated[Path, typer.Argument(help="Labelled training file.")]
EncodersOpt = Annotated[
    str,
    typer.Option(
        "--encoders",
        help="Encoders to compare, comma separated: hub names, local folders or minilm "
        "(--encoder is not used).",
    ),
]
PlotOpt = Annotated[
    Path | None,
    typer.Option(
        "--plot", metavar="PNG", help="Also plot CV score against seconds per 1,000 texts."
    ),
]


@shared(encoding=ENCODING, reading=READING)
def compare(
    data: DataOpt,
    encoders: EncodersOpt,
    poolings: SweepPoolingsOpt = "cls,mean,max",
    cv: CvOpt = 5,
    finalists: FinalistsOpt = FINALISTS,
    metric: SweepMetricOpt = "accuracy",
    jobs: JobsOpt = -1,
    tfidf: TfidfOpt = True,
    plot: PlotOpt = None,
    track: TrackOpt = None,
    experiment: ExperimentOpt = None,
    as_json: JsonOpt = False,
    encoding: EncoderOptions = FROM_FLAGS,
    reading: ReadOptions = FROM_FLAGS,
) -> None:
    """Which encoder reads these labels best, and at what cost: each encoder's sweep (the best
    layer x pooling by CV, as train --auto), its speed and size, and a recommendation.

    --pooling and --layer are not used: each sweep tries them all.
    """
    if plot is not None:
        check_output_path(plot, what="--plot", folder=False)
        require_extra("report")  # fail now, not after the forward passes
    options = TrainOptions(
        Cs="coarse", cv=cv, n_jobs=jobs, poolings=poolings, finalists=finalists, metric=metric
    )
    train_set = read_training_set(data, reading, cv)
    report_dropped(train_set)
    with tracked(track, kind="compare", experiment=experiment) as tracker:
        found = compare_encoders(
            train_set.texts,
            train_set.labels or [],
            encoders.split(","),
            encoding=encoding,
            options=options,
            tfidf=tfidf,
            on_encoder=None if as_json else _print_progress,
        )
        if tracker is not None:
            tracker.log_comparison(found)
    summary = {**found.to_dict(), **tracking_summary(tracker)}
    if plot is not None:
        from bertprobe.report import plot_comparison

        summary["plot"] = str(plot_comparison(found, plot))
    if as_json:
        typer.echo(json.dumps(summary))
        return
    _print(found)
    print_tracking(tracker)
    if plot is not None:
        typer.echo(f"wrote {plot}")


def _print_progress(row: EncoderRow) -> None:
    score = show_score(row.score, row.sweep.metric)
    note(f"{row.encoder}: {row.best.name}, CV {score} ({row.sweep.seconds:.0f} s)")


def _print(found: Comparison) -> None:
    """The table, best CV score first, then the recommendation and its reasons."""
    typer.echo(
        f"compare   {len(found.rows)} encoders on {found.n_train:,} texts, {found.cv}-fold CV "
        f"{found.metric} of each one's best layer x pooling ({found.seconds:.0f} s)"
    )
    typer.echo(
        f"{'encoder':<28} {'best features':<20} {'CV':>8} {'± se':>6} {'width':>6} "
        f"{'params':>8} {'MB':>7} {'s/1k texts':>10}"
    )
    for row in sorted(found.rows, key=lambda r: -r.score):
        mark = "  <- recommended" if row.encoder == found.recommended else ""
        name = row.encoder if len(row.encoder) <= 28 else "..." + row.encoder[-25:]
        typer.echo(
            f"{name:<28} {row.best.name:<20} {show_score(row.score, found.metric):>8} "
            f"{100 * row.spread:>6.2f} "
            f"{row.hidden_size:>6} {row.parameters / 1e6:>7.1f}M {row.size_mb:>7.1f} "
            f"{row.seconds_per_1000:>10.2f}{mark}"
        )
    if found.tfidf_cv_accuracy is not None:
        typer.echo(
            f"{'TF-IDF + LR (no encoder)':<28} {'':<20} {100 * found.tfidf_cv_accuracy:>7.2f}%"
        )
    typer.echo(f"recommend {found.recommended}")
    for reason in found.reasons:
        typer.echo(f"  - {reason}")
