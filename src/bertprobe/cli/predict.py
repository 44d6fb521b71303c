"""``bertprobe evaluate``, ``predict`` and ``embed``: use a model, or an encoder alone, on texts."""

from __future__ import annotations

import json
import sys
from dataclasses import replace
from pathlib import Path
from typing import Annotated, Any

import typer

from bertprobe.cli.inputs import gather_texts, read_labels_for
from bertprobe.cli.options import (
    ENCODING,
    FROM_FLAGS,
    LABELS,
    RUN,
    TEXTS,
    ActorCpusOpt,
    ActorsOpt,
    JsonOpt,
    ModelOpt,
    RayOpt,
    ThresholdOpt,
    ray_options,
    shared,
)
from bertprobe.cli.printing import (
    echo_lines,
    encoder_line,
    evaluation_lines,
    long_texts,
    note,
    report_dropped,
)
from bertprobe.core.errors import BadInputError
from bertprobe.core.tables import jsonl_lines, prediction_table, python_value, write_tables
from bertprobe.data.files import ReadOptions, check_output_path
from bertprobe.encoders.features import write_features
from bertprobe.encoders.options import EncoderOptions, RunOptions
from bertprobe.heads.decision import Decision
from bertprobe.model.classifier import Classifier
from bertprobe.ray_engine import RayOptions, ray_embed, ray_predict

EvaluateDataOpt = Annotated[Path, typer.Argument(help="Labelled file to evaluate on.")]
TeacherOpt = Annotated[
    Path | None,
    typer.Option(
        metavar="DIR",
        help="Another model folder (a distilled model's teacher): how often the model decides "
        "as it does, beside the accuracy.",
    ),
]
TextsOpt = Annotated[
    list[str] | None,
    typer.Argument(help="Texts to classify; '-' reads one text a line from stdin."),
]
InputOpt = Annotated[
    Path | None,
    typer.Option("--input", "-i", help="File of texts: one a line, or a table with a text column."),
]
OutputOpt = Annotated[
    Path | None,
    typer.Option(
        "--output",
        "-o",
        help="Write here instead of stdout: CSV if the name ends in .csv, Parquet in "
        ".parquet, else JSON Lines. With --input, a chunk at a time, resumably.",
    ),
]
PredictChunkOpt = Annotated[
    int,
    typer.Option(
        min=1,
        help="With --input and --output: texts read, labelled and stored at a time (with "
        "--ray: rows a batch).",
    ),
]
EmbedDataOpt = Annotated[
    Path, typer.Argument(help="Texts: one a line, or a table with a text column.")
]
EmbedOutOpt = Annotated[
    Path,
    typer.Option(help="Where to write the vectors: .npy, or .parquet (id and vector columns)."),
]
EmbedChunkOpt = Annotated[
    int,
    typer.Option(
        min=1,
        help="Texts read, embedded and written at a time; memory stays flat in file size "
        "(with --ray: rows a batch).",
    ),
]


@shared(run=RUN, reading=LABELS)
def evaluate(
    data: EvaluateDataOpt,
    model_dir: ModelOpt,
    run: RunOptions,
    reading: ReadOptions,
    threshold: ThresholdOpt = None,
    teacher: TeacherOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Accuracy, per-class precision/recall/F1 and the confusion matrix on a labelled file.

    A multi-label model: micro and macro F1 and per-label precision/recall/F1. With --teacher,
    also how often the model decides as that model does (a distilled student and its teacher).
    """
    model = Classifier.load(model_dir)
    model.decision_for(threshold)  # checked before the file is read
    teacher_model = Classifier.load(teacher) if teacher is not None else None
    test_set = read_labels_for(model, data, reading)
    report_dropped(test_set)
    result = model.evaluate(
        test_set.texts, test_set.labels or [], run, source=str(data), threshold=threshold
    )
    if result.unknown_labels:
        note(f"note: {data} {result.unknown_note()}")
    agreement = (
        model.agreement(teacher_model, test_set.texts, run) if teacher_model is not None else None
    )
    if as_json:
        record = result.to_dict()
        if agreement is not None:
            record["teacher_agreement"] = agreement
        typer.echo(json.dumps(record))
        return
    typer.echo(f"model     {model_dir} ({model.id})")
    encoder = encoder_line(model)
    if encoder is not None:  # a hub encoder: the commit it was trained on
        typer.echo(encoder)
    typer.echo(f"data      {data}: {len(test_set):,} texts")
    echo_lines(evaluation_lines(result))
    if agreement is not None:
        typer.echo(f"teacher   {teacher}: the model decides as it on {100 * agreement:.2f}%")


@shared(run=RUN, reading=TEXTS)
def predict(
    texts: TextsOpt = None,
    model_dir: ModelOpt = Path("."),
    input_file: InputOpt = None,
    output: OutputOpt = None,
    chunk_size: PredictChunkOpt = 4096,
    ray: RayOpt = None,
    actors: ActorsOpt = None,
    actor_cpus: ActorCpusOpt = 1.0,
    threshold: ThresholdOpt = None,
    run: RunOptions = FROM_FLAGS,
    reading: ReadOptions = FROM_FLAGS,
) -> None:
    """Label texts with probabilities, as JSON Lines ({"text", "label", "probabilities"}).

    --input FILE --output OUT streams: memory stays flat in the file's size, and an interrupted
    run resumes after its last stored chunk when the same command is run again.
    """
    on_ray = ray_options(ray, actors, actor_cpus, chunk_size)
    if on_ray is not None:
        if input_file is None or texts or output is None:
            raise BadInputError(
                "--ray labels files: give --input (a file, a folder or a glob) and --output "
                "(a file, or a folder for Parquet shards), and no text arguments"
            )
        check_output_path(output, what="--output", folder=not output.suffix)
    elif output is not None:
        check_output_path(output, what="--output", folder=False)
    model = Classifier.load(model_dir)  # a bad folder fails here, before Ray starts a task
    decision = model.decision_for(threshold)
    if on_ray is not None and input_file is not None and output is not None:
        found = ray_predict(
            model,
            str(input_file),
            output,
            run=run,
            reading=reading,
            ray=on_ray,
            threshold=threshold,
        )
        note(
            f"wrote {found.n_texts:,} predictions from {found.n_files} files to {output} with "
            f"{found.actors} Ray actors in {found.seconds:.1f} s"
        )
    elif input_file is not None and output is not None and str(input_file) != "-":
        if texts:
            raise BadInputError("give texts as arguments or with --input, not both")
        _predict_file(model, input_file, output, run, reading, chunk_size, threshold)
    else:
        _predict_texts(model, texts or [], input_file, output, run, reading, decision)


def _predict_file(
    model: Classifier,
    input_file: Path,
    output: Path,
    run: RunOptions,
    reading: ReadOptions,
    chunk_size: int,
    threshold: float | str | None,
) -> None:
    """Label a file into a file, a chunk at a time (resumable)."""
    stats = model.predict_file(
        input_file,
        output,
        replace(run, progress=True),
        reading=reading,
        chunk_size=chunk_size,
        threshold=threshold,
    )
    if stats.dropped_empty:
        note(f"note: {input_file}: skipped {stats.dropped_empty:,} rows with empty text")
    resumed = f" (resumed after {stats.n_resumed:,})" if stats.n_resumed else ""
    note(f"wrote {stats.n_texts:,} predictions to {output}{resumed}")


def _predict_texts(
    model: Classifier,
    texts: list[str],
    input_file: Path | None,
    output: Path | None,
    run: RunOptions,
    reading: ReadOptions,
    decision: Decision,
) -> None:
    """Label texts held in memory: arguments, standard input, or a file written to stdout."""
    items = gather_texts(texts, input_file, reading)
    probabilities = model.predict_proba(items, replace(run, progress=output is not None))
    classes = [python_value(c) for c in model.classes]
    labels = decision.labels(probabilities)
    table = prediction_table(items, probabilities, classes, labels, label_sets=decision.label_sets)
    if output is None:
        sys.stdout.writelines(jsonl_lines(table, classes))
        return
    n = write_tables([table], output, classes)
    note(f"wrote {n:,} predictions to {output}")


@shared(encoding=ENCODING, reading=TEXTS)
def embed(
    data: EmbedDataOpt,
    out: EmbedOutOpt,
    chunk_size: EmbedChunkOpt = 4096,
    ray: RayOpt = None,
    actors: ActorsOpt = None,
    actor_cpus: ActorCpusOpt = 1.0,
    as_json: JsonOpt = False,
    encoding: EncoderOptions = FROM_FLAGS,
    reading: ReadOptions = FROM_FLAGS,
) -> None:
    """Write one vector per text to a .npy or Parquet file (rows in input order), a chunk at a time.

    An interrupted run keeps every chunk written; the same command resumes it.
    """
    on_ray = ray_options(ray, actors, actor_cpus, chunk_size)
    if on_ray is not None:
        _embed_on_ray(data, out, encoding, reading, on_ray, as_json)
        return
    if out.suffix.lower() not in (".npy", ".parquet", ".pq"):
        raise BadInputError(
            f"--out {out}: vectors are written as a NumPy array or a Parquet table; name the "
            "file *.npy or *.parquet"
        )
    if str(data) == "-":
        raise BadInputError(
            "embed reads its texts twice (check, then embed); give a file, not standard input"
        )
    check_output_path(out, what="--out", folder=False)
    stats = write_features(data, out, encoding=encoding, reading=reading, chunk_size=chunk_size)
    if stats.dropped_empty:
        note(f"note: {data}: skipped {stats.dropped_empty:,} rows with empty text")
    result = {
        "out": str(out),
        "n": stats.n_texts,
        "dim": stats.dim,
        "encoder": encoding.encoder,
        "pooling": encoding.pooling,
        "layer": list(encoding.layers),
        "backend": encoding.backend,
        "seconds": stats.seconds,
        "n_resumed": stats.n_resumed,
        "n_cached": stats.n_cached,
        "n_truncated": stats.n_truncated,
        "long": encoding.long,
        "n_windows": stats.n_windows,
        "texts_per_second": stats.n_texts / stats.seconds if stats.seconds else None,
    }
    if as_json:
        typer.echo(json.dumps(result))
        return
    resumed = f", resumed after {stats.n_resumed:,}" if stats.n_resumed else ""
    typer.echo(
        f"wrote {out}: {stats.n_texts:,} x {stats.dim} float32 in "
        f"{stats.seconds:.1f} s ({stats.n_cached:,} from cache, "
        f"{long_texts(encoding.long, stats.n_truncated, stats.n_windows, stats.n_computed)}"
        f"{resumed})"
    )


def _embed_on_ray(
    data: Path,
    out: Path,
    encoding: EncoderOptions,
    reading: ReadOptions,
    on_ray: RayOptions,
    as_json: bool,
) -> None:
    """``embed --ray``: into a file, or a folder of Parquet shards."""
    if out.suffix and out.suffix.lower() not in (".npy", ".parquet", ".pq"):
        raise BadInputError(
            f"--out {out}: name the file *.npy or *.parquet, or give a folder for Parquet shards"
        )
    check_output_path(out, what="--out", folder=not out.suffix)
    found = ray_embed(str(data), out, encoding=encoding, reading=reading, ray=on_ray)
    summary: dict[str, Any] = {
        "out": str(out),
        "n": found.n_texts,
        "files": found.n_files,
        "actors": found.actors,
        "seconds": found.seconds,
        "check_seconds": found.check_seconds,
        "connect_seconds": found.connect_seconds,
        "texts_per_second": found.n_texts / found.seconds if found.seconds else None,
    }
    if as_json:
        typer.echo(json.dumps(summary))
        return
    typer.echo(
        f"wrote {out}: {found.n_texts:,} vectors from {found.n_files} files with "
        f"{found.actors} Ray actors in {found.seconds:.1f} s"
    )
