"""``bertprobe report``: an HTML page of plots for a model on a labelled test file."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from bertprobe.cli.errors import in_cli_words
from bertprobe.cli.inputs import read_labels_for
from bertprobe.cli.options import FROM_FLAGS, LABELS, RUN, JobsOpt, JsonOpt, ModelOpt, shared
from bertprobe.cli.printing import note, percent
from bertprobe.core.extras import require_extra
from bertprobe.core.tables import python_value
from bertprobe.data.files import ReadOptions, check_output_path
from bertprobe.encoders.options import RunOptions
from bertprobe.model.classifier import Classifier
from bertprobe.report import write_multilabel_report

DataOpt = Annotated[Path, typer.Argument(help="Labelled test file.")]
OutOpt = Annotated[Path, typer.Option(help="Folder for report.html and the PNGs.")]
TrainFileOpt = Annotated[
    Path | None,
    typer.Option(
        "--train",
        help="Training file for the learning curve and the TF-IDF baseline "
        "(default: the one recorded in the model card, if unchanged).",
    ),
]

ExplainOpt = Annotated[
    bool,
    typer.Option(
        "--explain/--no-explain",
        help='"Why these labels": the most confident errors and a sample of correct answers '
        "with their words shaded (10 + 10 texts explained); --no-explain leaves it out.",
    ),
]


@shared(run=RUN, reading=LABELS)
def report(
    data: DataOpt,
    model_dir: ModelOpt,
    out: OutOpt = Path("report"),
    train_file: TrainFileOpt = None,
    jobs: JobsOpt = -1,
    explain: ExplainOpt = True,
    as_json: JsonOpt = False,
    run: RunOptions = FROM_FLAGS,
    reading: ReadOptions = FROM_FLAGS,
) -> None:
    """Write an HTML report with plots: errors, calibration, C search, sweep, learning curve."""
    require_extra("report")
    from bertprobe.report import build_report, write_report

    check_output_path(out, what="--out", folder=True)
    model = Classifier.load(model_dir)
    if model.multi_label or reading.multi_label:
        _multilabel_report(model, data, out, run, reading, as_json)
        return
    found = build_report(
        model, data, train=train_file, run=run, reading=reading, n_jobs=jobs, explain=explain
    )
    page = write_report(found, out)
    if as_json:
        typer.echo(json.dumps({"report": str(page), **found.summary()}, default=python_value))
        return
    for line in found.notes:
        note(f"note: {in_cli_words(line)}")
    baseline = found.tfidf_accuracy
    typer.echo(
        f"accuracy  {percent(found.accuracy)} on {data}"
        + (f" (TF-IDF + LR baseline {percent(baseline)})" if baseline is not None else "")
    )
    typer.echo(f"report    {page}")


def _multilabel_report(
    model: Classifier,
    data: Path,
    out: Path,
    run: RunOptions,
    reading: ReadOptions,
    as_json: bool,
) -> None:
    """``report`` for a multi-label model: the per-label scores table and F1 bar chart."""
    test_set = read_labels_for(model, data, reading)
    page, found = write_multilabel_report(model, test_set, out, run=run, reading=reading)
    if as_json:
        typer.echo(json.dumps({"report": str(page), **found}))
        return
    typer.echo(
        f"F1        micro {found['test_f1_micro']:.3f}, macro {found['test_f1_macro']:.3f} "
        f"on {data}"
    )
    typer.echo(f"report    {page}")
