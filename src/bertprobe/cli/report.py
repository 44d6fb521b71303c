"""``bertprobe report``: an HTML page of plots for a model on a labelled test file."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from bertprobe.cli.errors import in_cli_words
from bertprobe.cli.options import FROM_FLAGS, LABELS, RUN, JobsOpt, JsonOpt, ModelOpt, shared
from bertprobe.cli.printing import note
from bertprobe.core.extras import require_extra
from bertprobe.core.tables import python_value
from bertprobe.data.files import ReadOptions, check_output_path
from bertprobe.encoders.options import RunOptions
from bertprobe.model.classifier import Classifier

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
    from bertprobe.report import write_model_report

    check_output_path(out, what="--out", folder=True)
    model = Classifier.load(model_dir)
    written = write_model_report(
        model, data, out, train=train_file, run=run, reading=reading, n_jobs=jobs, explain=explain
    )
    if as_json:
        summary = {"report": str(written.page), **written.summary}
        typer.echo(json.dumps(summary, default=python_value))
        return
    for line in written.notes:
        note(f"note: {in_cli_words(line)}")
    typer.echo(written.headline)
    typer.echo(f"report    {written.page}")
