"""The ``bertprobe`` command line: train, evaluate, predict, embed, sweep, report, serve.

Results go to standard output (``--json`` for one JSON object); progress and notes go to standard
error. A problem with the input is one line on standard error and exit status 2.
"""

from __future__ import annotations

import csv
import json
import math
import os
import sys
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Annotated, Any

import numpy as np
import typer

from bertprobe import __version__
from bertprobe.cache import EmbeddingCache, open_cache
from bertprobe.data import (
    LabelledTexts,
    ReadOptions,
    check_output_path,
    read_labelled,
    read_texts,
)
from bertprobe.encode import (
    DEFAULT_ENCODER,
    POOLINGS,
    EncoderOptions,
    FeatureSpec,
    check_pooling,
    load_encoder,
    parse_layers,
)
from bertprobe.errors import BadInputError, BertprobeError
from bertprobe.export import check_backend
from bertprobe.features import embed_file
from bertprobe.model import TrainOptions, TrainResult, accuracy, read_training_set
from bertprobe.model import train as train_model
from bertprobe.persist import (
    Classifier,
    load_model,
)
from bertprobe.probe import LinearProbe, OutOfCoreProbe, parse_c_grid
from bertprobe.sweep import SweepResult, parse_poolings, run_sweep, tfidf_pipeline

app = typer.Typer(
    name="bertprobe",
    help="Sentence classifiers from a frozen transformer encoder and a linear probe.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
    # Plain click formatting: usage errors are the usage line and one error line, whether or
    # not rich happens to be installed.
    rich_markup_mode=None,
)


def _print_version(value: bool) -> None:
    if value:
        typer.echo(f"bertprobe {__version__}")
        raise typer.Exit()


@app.callback()
def _options(
    version: Annotated[
        bool,
        typer.Option(
            "--version", callback=_print_version, is_eager=True, help="Print the version and exit."
        ),
    ] = False,
) -> None:
    """Sentence classifiers from a frozen transformer encoder and a linear probe."""


# --- shared options ------------------------------------------------------------------------
# Numeric options declare their ranges here, so a bad value is a usage error (exit 2) before
# any work starts, and --help shows the range.

_CPUS = os.cpu_count() or 1


def _nonzero(value: int) -> int:
    if value == 0:
        raise typer.BadParameter("0 processes cannot run anything; use 1, or -1 for one per core")
    return value


def _finite(value: float) -> float:
    if not math.isfinite(value):
        raise typer.BadParameter(f"{value} is not a finite number")
    return value


EncoderOpt = Annotated[
    str,
    typer.Option(
        "--encoder",
        "-e",
        help="Hugging Face hub name, local model folder, or 'minilm' (bundled, offline).",
    ),
]
PoolingOpt = Annotated[
    str, typer.Option(help=f"How token vectors become one: {', '.join(POOLINGS)}.")
]
LayerOpt = Annotated[
    str,
    typer.Option(
        "--layer", help="Hidden state: 0 = embeddings, -1 = last; a comma list is concatenated."
    ),
]
MaxLengthOpt = Annotated[
    int | None,
    typer.Option(
        min=2, help="Truncate texts at this many tokens (default: the encoder's maximum)."
    ),
]
BatchSizeOpt = Annotated[int, typer.Option(min=1, help="Texts per forward pass.")]
MaxTokensOpt = Annotated[
    int | None,
    typer.Option(
        min=1, help="Also cap a batch at this many padded tokens (long texts get smaller batches)."
    ),
]
CacheDirOpt = Annotated[
    Path | None,
    typer.Option(
        help="Embedding cache folder (default: $BERTPROBE_CACHE_DIR or the user cache folder)."
    ),
]
NoCacheOpt = Annotated[bool, typer.Option("--no-cache", help="Neither read nor write the cache.")]
DeviceOpt = Annotated[str, typer.Option(help="Torch device: cpu, cuda, cuda:1, mps.")]
BackendOpt = Annotated[
    str,
    typer.Option(
        help="Forward pass: torch (fp32), onnx (fp32 via ONNX Runtime) or onnx-int8 (quantized, "
        "fastest on CPU)."
    ),
]
BackendOverrideOpt = Annotated[
    str | None,
    typer.Option("--backend", help="Forward pass (torch, onnx, onnx-int8); default: the model's."),
]
TextColOpt = Annotated[str | None, typer.Option(help="Text column, by name or 0-based index.")]
LabelColOpt = Annotated[str | None, typer.Option(help="Label column, by name or 0-based index.")]
DropEmptyOpt = Annotated[bool, typer.Option(help="Skip rows whose text is empty.")]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print one JSON object on stdout.")]
JobsOpt = Annotated[
    int,
    typer.Option(
        "--jobs",
        "-j",
        min=-_CPUS,
        max=_CPUS,
        callback=_nonzero,
        help="Processes for cross-validation folds (-1: one per CPU core, -2: all but one).",
    ),
]
CvOpt = Annotated[int, typer.Option(min=2, help="Cross-validation folds for choosing C.")]


def _note(message: str) -> None:
    typer.echo(message, err=True)


def _cache(stack: ExitStack, cache_dir: Path | None, no_cache: bool) -> EmbeddingCache | None:
    return None if no_cache else stack.enter_context(open_cache(cache_dir))


def _column(value: str | None) -> str | int | None:
    return int(value) if value is not None and value.lstrip("-").isdigit() else value


def _percent(x: float | None) -> str:
    return "n/a" if x is None else f"{100 * x:.2f}%"


def _jsonable(value: Any) -> Any:
    return value.item() if isinstance(value, np.generic) else value


# --- commands ------------------------------------------------------------------------------


@app.command()
def train(
    data: Annotated[Path, typer.Argument(help="Labelled training file (TSV, CSV or JSON Lines).")],
    test: Annotated[Path | None, typer.Option(help="Labelled test file to evaluate on.")] = None,
    out: Annotated[Path | None, typer.Option(help="Model folder to write.")] = None,
    encoder: EncoderOpt = DEFAULT_ENCODER,
    pooling: PoolingOpt = "cls",
    layer: LayerOpt = "-1",
    max_length: MaxLengthOpt = None,
    c_grid: Annotated[
        str,
        typer.Option(
            help="C values to search: 'default' (log-spaced), 'coarse', 'seed' (the recipe's "
            "linspace(0.0001, 100, 20)) or a comma list."
        ),
    ] = "default",
    cv: CvOpt = 5,
    auto: Annotated[
        bool,
        typer.Option(
            "--auto",
            help="Choose layer(s) and pooling by a CV sweep on the training data first "
            "(overrides --pooling and --layer).",
        ),
    ] = False,
    poolings: Annotated[
        str, typer.Option(help="Poolings the --auto sweep tries.")
    ] = "cls,mean,max",
    jobs: JobsOpt = -1,
    batch_size: BatchSizeOpt = 32,
    max_tokens: MaxTokensOpt = None,
    cache_dir: CacheDirOpt = None,
    no_cache: NoCacheOpt = False,
    device: DeviceOpt = "cpu",
    backend: BackendOpt = "torch",
    text_col: TextColOpt = None,
    label_col: LabelColOpt = None,
    drop_empty: DropEmptyOpt = False,
    out_of_core: Annotated[
        bool,
        typer.Option(
            "--out-of-core",
            help="For training sets larger than memory: stream features to disk "
            "and fit by SGD a chunk at a time (no --auto).",
        ),
    ] = False,
    as_json: JsonOpt = False,
) -> None:
    """Embed a labelled file, choose C by cross-validation, fit the probe, save the model."""
    with _in_cli_words({"auto and out_of_core": "--auto and --out-of-core", "Cs=": "--c-grid "}):
        options = TrainOptions(
            Cs=c_grid, cv=cv, n_jobs=jobs, auto=auto, poolings=poolings, out_of_core=out_of_core
        )
    encoding = EncoderOptions(
        encoder,
        pooling=check_pooling(pooling),
        layers=parse_layers(layer),
        max_length=max_length,
        batch_size=batch_size,
        max_tokens=max_tokens,
        device=device,
        backend=check_backend(backend),
        cache_dir=cache_dir,
        use_cache=not no_cache,
        progress=not as_json,
    )
    reading = ReadOptions(
        text_col=_column(text_col), label_col=_column(label_col), drop_empty=drop_empty
    )
    result = train_model(
        data, test=test, encoding=encoding, options=options, reading=reading, out=out
    )
    if as_json:
        typer.echo(json.dumps(result.to_dict()))
        return
    _print_training(result, data, test)


def _print_training(result: TrainResult, data: Path, test: Path | None) -> None:
    summary, model, probe = result.to_dict(), result.model, result.probe
    if isinstance(probe, OutOfCoreProbe):
        typer.echo(
            f"train     {data}: {result.n_train:,} texts, out of core; features in "
            f"{result.feature_dir}"
        )
        typer.echo(
            f"embedded  in {result.embed_seconds:.1f} s; fit by SGD in {result.fit_seconds:.1f} "
            f"s, alpha = {probe.alpha_:.3g} (held-out accuracy "
            f"{_percent(probe.holdout_accuracy_)})"
        )
    else:
        _report_dropped(result.train_data, result.test_data)
        if result.sweep is not None:
            _print_sweep(result.sweep)
        counts = Counter(result.train_data.labels if result.train_data else [])
        typer.echo(
            f"train     {data}: {result.n_train:,} texts, {len(counts)} classes ("
            + ", ".join(f"{k}: {v:,}" for k, v in sorted(counts.items(), key=str))
            + ")"
        )
        layers = ",".join(str(x) for x in model.spec.layers)
        typer.echo(
            f"encoder   {model.encoder.name} ({model.encoder.fingerprint[:19]}), pooling "
            f"{model.spec.pooling}, layer {layers}, max length {summary['max_length']}"
        )
        total = sum(s.n_texts for s in (result.train_stats, result.test_stats) if s is not None)
        typer.echo(
            f"embedded  {total:,} texts in {result.embed_seconds:.1f} s "
            f"({summary['n_cached']:,} from cache, {summary['n_truncated']:,} truncated)"
        )
        typer.echo(
            f"probe     C = {probe.C_:.4g} by {probe.cv}-fold CV (CV accuracy "
            f"{_percent(probe.cv_accuracy_)}), fit in {result.fit_seconds:.1f} s"
        )
        voter = model.text_model
        if voter is not None and result.sweep is not None:
            typer.echo(
                f"vote      with TF-IDF + LR (C = {voter[-1].C_:.3g}): CV accuracy "
                f"{_percent(result.sweep.vote_cv_accuracy)} against "
                f"{_percent(probe.cv_accuracy_)} alone"
            )
    if result.test_accuracy is not None:
        typer.echo(
            f"test      {test}: {result.n_test:,} texts, accuracy {_percent(result.test_accuracy)}"
        )
    if result.out is not None:
        typer.echo(f"saved     {result.out}")
    else:
        _note("note: no --out given, so the model was not saved")


@contextmanager
def _in_cli_words(flags: dict[str, str]) -> Iterator[None]:
    """Library errors name parameters (``Cs=``); the CLI user knows flags (``--c-grid``)."""
    try:
        yield
    except BadInputError as exc:
        message = str(exc)
        for words, flag in flags.items():
            message = message.replace(words, flag)
        raise BadInputError(message) from None


@app.command()
def evaluate(
    data: Annotated[Path, typer.Argument(help="Labelled file to evaluate on.")],
    model_dir: Annotated[Path, typer.Option("--model", "-m", help="Model folder.")],
    batch_size: BatchSizeOpt = 32,
    cache_dir: CacheDirOpt = None,
    no_cache: NoCacheOpt = False,
    device: DeviceOpt = "cpu",
    backend: BackendOverrideOpt = None,
    text_col: TextColOpt = None,
    label_col: LabelColOpt = None,
    drop_empty: DropEmptyOpt = False,
    as_json: JsonOpt = False,
) -> None:
    """Accuracy, per-class precision/recall/F1 and the confusion matrix on a labelled file."""
    from sklearn.metrics import classification_report, confusion_matrix

    model = load_model(model_dir)
    test_set = _labelled(data, text_col, label_col, drop_empty)
    y_true = model.align_labels(test_set.labels or [], str(data))
    _report_dropped(test_set)
    unknown = sorted({str(y) for y in y_true} - {str(c) for c in model.classes})
    if unknown:
        _note(f"note: {data} has labels the model never saw: {', '.join(unknown)}")
    with ExitStack() as stack:
        X, stats = model.embed(
            test_set.texts,
            cache=_cache(stack, cache_dir, no_cache),
            batch_size=batch_size,
            device=device,
            backend=backend,
            progress=not as_json,
        )
    predicted = model.predict_from(X, test_set.texts).tolist()
    if unknown:  # y_true is text then (align_labels): compare like with like
        predicted = [str(p) for p in predicted]
    labels = sorted(
        set(predicted) | set(y_true) | set(str(c) if unknown else c for c in model.classes), key=str
    )
    report = classification_report(
        y_true, predicted, labels=labels, output_dict=True, zero_division=0
    )
    result = {
        "accuracy": accuracy(y_true, predicted),
        "n": len(test_set),
        "model": model.id,
        "labels": [_jsonable(x) for x in labels],
        "per_class": {
            str(x): {k: report[str(x)][k] for k in ("precision", "recall", "f1-score", "support")}
            for x in labels
        },
        "confusion_matrix": confusion_matrix(y_true, predicted, labels=labels).tolist(),
        "embed_seconds": stats.seconds,
        "n_truncated": stats.n_truncated,
    }
    if as_json:
        typer.echo(json.dumps(result))
        return
    typer.echo(f"model     {model_dir} ({model.id})")
    typer.echo(f"data      {data}: {len(test_set):,} texts")
    typer.echo(f"accuracy  {_percent(result['accuracy'])}")
    typer.echo(f"{'label':>12} {'precision':>10} {'recall':>10} {'f1':>10} {'support':>8}")
    for label, row in result["per_class"].items():
        typer.echo(
            f"{label:>12} {row['precision']:>10.3f} {row['recall']:>10.3f} "
            f"{row['f1-score']:>10.3f} {int(row['support']):>8}"
        )


@app.command()
def predict(
    texts: Annotated[
        list[str] | None,
        typer.Argument(help="Texts to classify; '-' reads one text a line from stdin."),
    ] = None,
    model_dir: Annotated[Path, typer.Option("--model", "-m", help="Model folder.")] = Path("."),
    input_file: Annotated[
        Path | None,
        typer.Option(
            "--input", "-i", help="File of texts: one a line, or a table with a text column."
        ),
    ] = None,
    output: Annotated[
        Path | None,
        typer.Option(
            "--output", "-o", help="Write here instead of stdout; CSV if the name ends in .csv."
        ),
    ] = None,
    batch_size: BatchSizeOpt = 32,
    cache_dir: CacheDirOpt = None,
    no_cache: NoCacheOpt = False,
    device: DeviceOpt = "cpu",
    backend: BackendOverrideOpt = None,
    text_col: TextColOpt = None,
) -> None:
    """Label texts with probabilities, as JSON Lines ({"text", "label", "probabilities"})."""
    if output is not None:
        check_output_path(output, what="--output", folder=False)
    model = load_model(model_dir)
    items = _gather_texts(texts or [], input_file, text_col)
    with ExitStack() as stack:
        X, _ = model.embed(
            items,
            cache=_cache(stack, cache_dir, no_cache),
            batch_size=batch_size,
            device=device,
            backend=backend,
            progress=output is not None,
        )
    probabilities = model.proba_from(X, items)
    classes = [_jsonable(c) for c in model.probe.classes_]
    rows = [
        {
            "text": text,
            "label": classes[int(np.argmax(p))],
            "probabilities": {str(c): round(float(q), 6) for c, q in zip(classes, p, strict=True)},
        }
        for text, p in zip(items, probabilities, strict=True)
    ]
    _write_predictions(rows, classes, output)


@app.command("embed")
def embed_command(
    data: Annotated[Path, typer.Argument(help="Texts: one a line, or a table with a text column.")],
    out: Annotated[Path, typer.Option(help="Where to write the vectors (.npy).")],
    encoder: EncoderOpt = DEFAULT_ENCODER,
    pooling: PoolingOpt = "cls",
    layer: LayerOpt = "-1",
    max_length: MaxLengthOpt = None,
    batch_size: BatchSizeOpt = 32,
    max_tokens: MaxTokensOpt = None,
    chunk_size: Annotated[
        int,
        typer.Option(
            min=1,
            help="Texts read, embedded and written at a time; memory stays flat in file size.",
        ),
    ] = 4096,
    cache_dir: CacheDirOpt = None,
    no_cache: NoCacheOpt = False,
    device: DeviceOpt = "cpu",
    backend: BackendOpt = "torch",
    text_col: TextColOpt = None,
    drop_empty: DropEmptyOpt = False,
    as_json: JsonOpt = False,
) -> None:
    """Write one vector per text to a .npy file (rows in input order), a chunk at a time.

    An interrupted run keeps every chunk written; the same command resumes it.
    """
    if out.suffix != ".npy":
        raise BadInputError(
            f"--out {out}: vectors are written as NumPy arrays; name the file *.npy"
        )
    if str(data) == "-":
        raise BadInputError(
            "embed reads its texts twice (check, then embed); give a file, not standard input"
        )
    check_output_path(out, what="--out", folder=False)
    spec = FeatureSpec(pooling, parse_layers(layer), max_length)
    model = load_encoder(encoder, device, backend, cache_dir)
    with ExitStack() as stack:
        stats = embed_file(
            data,
            out,
            model,
            spec,
            chunk_size=chunk_size,
            batch_size=batch_size,
            max_tokens=max_tokens,
            cache=_cache(stack, cache_dir, no_cache),
            text_col=_column(text_col),
            drop_empty=drop_empty,
            progress=not as_json,
        )
    if stats.dropped_empty:
        _note(f"note: {data}: skipped {stats.dropped_empty:,} rows with empty text")
    result = {
        "out": str(out),
        "n": stats.n_texts,
        "dim": stats.dim,
        "encoder": encoder,
        "pooling": spec.pooling,
        "layer": list(spec.layers),
        "backend": backend,
        "seconds": stats.seconds,
        "n_resumed": stats.n_resumed,
        "n_cached": stats.n_cached,
        "n_truncated": stats.n_truncated,
        "texts_per_second": stats.n_texts / stats.seconds if stats.seconds else None,
    }
    if as_json:
        typer.echo(json.dumps(result))
    else:
        resumed = f", resumed after {stats.n_resumed:,}" if stats.n_resumed else ""
        typer.echo(
            f"wrote {out}: {stats.n_texts:,} x {stats.dim} float32 in "
            f"{stats.seconds:.1f} s ({stats.n_cached:,} from cache, "
            f"{stats.n_truncated:,} truncated{resumed})"
        )


@app.command("sweep")
def sweep_command(
    data: Annotated[Path, typer.Argument(help="Labelled training file.")],
    encoder: EncoderOpt = DEFAULT_ENCODER,
    poolings: Annotated[
        str, typer.Option(help="Poolings to try, comma separated.")
    ] = "cls,mean,max",
    out: Annotated[Path | None, typer.Option(help="Folder for sweep.json and sweep.png.")] = None,
    cv: CvOpt = 5,
    c_grid: Annotated[str, typer.Option(help="C values for each candidate.")] = "coarse",
    max_length: MaxLengthOpt = None,
    jobs: JobsOpt = -1,
    batch_size: BatchSizeOpt = 32,
    cache_dir: CacheDirOpt = None,
    no_cache: NoCacheOpt = False,
    device: DeviceOpt = "cpu",
    backend: BackendOpt = "torch",
    text_col: TextColOpt = None,
    label_col: LabelColOpt = None,
    drop_empty: DropEmptyOpt = False,
    tfidf: Annotated[bool, typer.Option(help="Also score the TF-IDF + LR baseline.")] = True,
    as_json: JsonOpt = False,
) -> None:
    """Score every hidden layer x pooling (and concatenations) by CV on the training data."""
    if out is not None:
        check_output_path(out, what="--out", folder=True)
    chosen_poolings = parse_poolings(poolings)
    grid = parse_c_grid(c_grid)
    train_set = _training_set(data, text_col, label_col, drop_empty, cv)
    _report_dropped(train_set)
    model = load_encoder(encoder, device, backend, cache_dir)
    with ExitStack() as stack:
        result = run_sweep(
            train_set.texts,
            train_set.labels or [],
            model,
            poolings=chosen_poolings,
            cv=cv,
            Cs=grid,
            max_length=max_length,
            cache=_cache(stack, cache_dir, no_cache),
            batch_size=batch_size,
            n_jobs=jobs,
            tfidf=tfidf,
            progress=not as_json,
        )
    summary = result.to_dict()
    if out is not None:
        from bertprobe.report import figure_png, plot_sweep

        out.mkdir(parents=True, exist_ok=True)
        (out / "sweep.json").write_text(json.dumps(summary, indent=2) + "\n", encoding="utf-8")
        (out / "sweep.png").write_bytes(figure_png(plot_sweep(summary)))
        summary["out"] = str(out)
    if as_json:
        typer.echo(json.dumps(summary))
        return
    _print_sweep(result)
    if out is not None:
        typer.echo(f"wrote {out / 'sweep.json'} and {out / 'sweep.png'}")


@app.command()
def report(
    data: Annotated[Path, typer.Argument(help="Labelled test file.")],
    model_dir: Annotated[Path, typer.Option("--model", "-m", help="Model folder.")],
    out: Annotated[Path, typer.Option(help="Folder for report.html and the PNGs.")] = Path(
        "report"
    ),
    train_file: Annotated[
        Path | None,
        typer.Option(
            "--train",
            help="Training file for the learning curve and the TF-IDF baseline "
            "(default: the one recorded in the model card, if unchanged).",
        ),
    ] = None,
    jobs: JobsOpt = -1,
    batch_size: BatchSizeOpt = 32,
    cache_dir: CacheDirOpt = None,
    no_cache: NoCacheOpt = False,
    device: DeviceOpt = "cpu",
    backend: BackendOverrideOpt = None,
    text_col: TextColOpt = None,
    label_col: LabelColOpt = None,
    drop_empty: DropEmptyOpt = False,
    as_json: JsonOpt = False,
) -> None:
    """Write an HTML report with plots: errors, calibration, C search, sweep, learning curve."""
    from bertprobe.report import ReportData, learning_curve_scores, write_report

    check_output_path(out, what="--out", folder=True)
    model = load_model(model_dir)
    test_set = _labelled(data, text_col, label_col, drop_empty)
    if isinstance(model.probe, LinearProbe):
        train_set, note = _training_data_of(
            model.card,
            train_file,
            lambda path: _training_set(path, text_col, label_col, drop_empty, model.probe.cv),
        )
    else:  # an out-of-core training set is too large to hold for the learning curve
        train_set, note = (
            None,
            (
                "trained out of core: the learning curve and TF-IDF baseline, "
                "which hold the training data in memory, are left out"
            ),
        )
    # Plots per class (calibration, confusion) need labels the model knows: others are left out.
    test_texts, y_true, left_out = _rows_with_model_labels(model, test_set)
    notes = [note] if note else []
    if left_out:
        notes.append(f"{data}: left out {left_out:,} rows whose labels the model never saw")
    if train_set is not None:
        train_texts, y_train, train_left_out = _rows_with_model_labels(model, train_set)
        if train_left_out:
            notes.append(
                f"{train_set.source}: left out {train_left_out:,} rows whose labels "
                "the model never saw"
            )
    with ExitStack() as stack:
        cache = _cache(stack, cache_dir, no_cache)

        def vectors(texts: list[str]) -> np.ndarray:
            return model.embed(
                texts,
                cache=cache,
                batch_size=batch_size,
                device=device,
                backend=backend,
                progress=not as_json,
            )[0]

        X_test = vectors(test_texts)
        X_train = vectors(train_texts) if train_set is not None else None
    proba = model.proba_from(X_test, test_texts)
    report_data = ReportData(
        model_id=model.id,
        card=model.card,
        texts=test_texts,
        y_true=y_true,
        y_pred=model.probe.classes_[proba.argmax(axis=1)],
        proba=proba,
        classes=model.classes,
        features=X_test,
        test_source=str(data),
        notes=notes,
    )
    if train_set is not None and X_train is not None:
        report_data.learning_curve = learning_curve_scores(
            X_train, y_train, C=model.probe.C_, cv=model.probe.cv, n_jobs=jobs
        )
        baseline = tfidf_pipeline(cv=model.probe.cv, n_jobs=jobs).fit(train_texts, y_train)
        report_data.tfidf_accuracy = float(baseline.score(test_texts, y_true))
    page = write_report(report_data, out)
    if as_json:
        typer.echo(json.dumps({"report": str(page), **report_data.summary()}, default=_jsonable))
        return
    for line in notes:
        _note(f"note: {line}")
    typer.echo(
        f"accuracy  {_percent(report_data.accuracy)} on {data}"
        + (
            f" (TF-IDF + LR baseline {_percent(report_data.tfidf_accuracy)})"
            if report_data.tfidf_accuracy is not None
            else ""
        )
    )
    typer.echo(f"report    {page}")


@app.command("serve")
def serve_command(
    model_dir: Annotated[Path, typer.Option("--model", "-m", help="Model folder.")],
    host: Annotated[str, typer.Option(help="Address to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(min=1, max=65535, help="Port to listen on.")] = 8000,
    batching: Annotated[
        bool, typer.Option(help="Gather concurrent requests into one encoder batch.")
    ] = True,
    max_batch: Annotated[int, typer.Option(min=1, help="Most texts gathered from requests.")] = 64,
    max_wait_ms: Annotated[
        float,
        typer.Option(
            min=0,
            max=60_000,
            callback=_finite,
            help="Longest wait for more requests after the first, in milliseconds.",
        ),
    ] = 5.0,
    batch_size: Annotated[
        int,
        typer.Option(
            min=1, help="Texts per forward pass, length-sorted, within what was gathered."
        ),
    ] = 8,
    max_texts: Annotated[int, typer.Option(min=1, help="Most texts in one request.")] = 256,
    max_chars: Annotated[int, typer.Option(min=1, help="Most characters in one text.")] = 2000,
    max_body_bytes: Annotated[
        int, typer.Option(min=1, help="Largest request body, in bytes.")
    ] = 1_000_000,
    device: DeviceOpt = "cpu",
    backend: BackendOverrideOpt = None,
) -> None:
    """Serve the model over HTTP (FastAPI on uvicorn), with a try-it page at /."""
    from bertprobe.serve import BatchingConfig, ServeLimits, listen_socket, serve

    model = load_model(model_dir)  # a bad folder fails here, before the server starts
    if backend is not None:
        model.backend = backend
    load_encoder(model.encoder, device, model.backend)
    sock = listen_socket(host, port)
    _note(
        f"serving {model.id} on http://{host}:{port} (batching "
        f"{'on' if batching else 'off'}); Ctrl-C stops after requests in flight"
    )
    serve(
        model,
        host=host,
        port=port,
        device=device,
        sock=sock,
        limits=ServeLimits(max_texts, max_chars, max_body_bytes),
        batching=BatchingConfig(batching, max_batch, max_wait_ms, batch_size),
    )


# --- helpers -------------------------------------------------------------------------------


def _print_sweep(result: SweepResult) -> None:
    best = result.best
    typer.echo(
        f"sweep     {result.n_train:,} texts, {result.cv}-fold CV accuracy on training "
        f"data ({result.seconds:.0f} s)"
    )
    typer.echo(f"{'features':<22} {'width':>6} {'CV acc':>8} {'± std':>7} {'C':>9}")
    for row in result.rows:
        mark = "  <- best" if row is best else ""
        typer.echo(
            f"{row.name:<22} {row.dim:>6} {100 * row.cv_accuracy:>7.2f}% "
            f"{100 * row.cv_std:>6.2f} {row.C:>9.3g}{mark}"
        )
    if result.tfidf_cv_accuracy is not None:
        typer.echo(f"{'TF-IDF + LR baseline':<22} {'':>6} {100 * result.tfidf_cv_accuracy:>7.2f}%")
    if result.vote_cv_accuracy is not None:
        mark = "  <- chosen" if result.vote_wins else ""
        typer.echo(
            f"{'best + TF-IDF vote':<22} {'':>6} {100 * result.vote_cv_accuracy:>7.2f}%{mark}"
        )


def _training_data_of(
    card: dict,
    train_file: Path | None,
    read: Callable[[Path], LabelledTexts],
) -> tuple[LabelledTexts | None, str | None]:
    """The model's training data, if it can be had unchanged; else None and why not."""
    if train_file is not None:
        return read(train_file), None
    record = card.get("data", {}).get("train")
    if not record:
        return None, "no training file recorded; pass --train for the learning curve and baseline"
    path = Path(record["path"])
    if not path.is_file():
        return None, (
            f"training file {path} not found; pass --train for the learning curve and "
            "the TF-IDF baseline"
        )
    train_set = read(path)
    if train_set.sha256 != record["sha256"]:
        return None, (
            f"training file {path} changed since training; pass --train for the "
            "learning curve and the TF-IDF baseline"
        )
    return train_set, None


def _rows_with_model_labels(
    model: Classifier,
    labelled: LabelledTexts,
) -> tuple[list[str], np.ndarray, int]:
    """The texts and labels (as the model's values) of the rows whose label the model knows,
    and how many rows were left out."""
    labels = model.align_labels(labelled.labels or [], labelled.source)  # refuses no overlap
    by_text = {str(c): c for c in model.classes}
    keep = [i for i, y in enumerate(labels) if str(y) in by_text]
    return (
        [labelled.texts[i] for i in keep],
        np.asarray([by_text[str(labels[i])] for i in keep]),
        len(labels) - len(keep),
    )


def _labelled(
    path: Path, text_col: str | None, label_col: str | None, drop_empty: bool
) -> LabelledTexts:
    return read_labelled(
        path, text_col=_column(text_col), label_col=_column(label_col), drop_empty=drop_empty
    )


def _training_set(
    path: Path, text_col: str | None, label_col: str | None, drop_empty: bool, cv: int
) -> LabelledTexts:
    reading = ReadOptions(_column(text_col), _column(label_col), drop_empty=drop_empty)
    return read_training_set(path, reading, cv)


def _report_dropped(*sets: LabelledTexts | None) -> None:
    for s in sets:
        if s is not None and s.dropped_empty:
            _note(f"note: {s.source}: skipped {s.dropped_empty:,} rows with empty text")


def _gather_texts(args: list[str], input_file: Path | None, text_col: str | None) -> list[str]:
    if input_file is not None and args:
        raise BadInputError("give texts as arguments or with --input, not both")
    source = input_file if input_file is not None else ("-" if args == ["-"] else None)
    if source is None:
        if not args:
            raise BadInputError(
                "no texts to classify; pass them as arguments, with --input FILE, "
                "or '-' to read stdin"
            )
        empty = [i + 1 for i, t in enumerate(args) if not t.strip()]
        if empty:
            raise BadInputError(f"text argument {empty[0]} is empty; give non-empty texts")
        for i, text in enumerate(args, start=1):
            try:
                text.encode("utf-8")
            except UnicodeEncodeError:  # bytes the shell passed that were not UTF-8
                raise BadInputError(
                    f"text argument {i} is not valid UTF-8; pass UTF-8 text, or "
                    "put the texts in a UTF-8 file and use --input"
                ) from None
        return list(args)
    return read_texts(source, text_col=_column(text_col)).texts


def _write_predictions(rows: list[dict], classes: list, output: Path | None) -> None:
    if output is not None and output.suffix.lower() == ".csv":
        with open(output, "w", newline="", encoding="utf-8") as fh:
            writer = csv.writer(fh)
            writer.writerow(["text", "label", *(f"p_{c}" for c in classes)])
            for row in rows:
                writer.writerow(
                    [row["text"], row["label"], *(row["probabilities"][str(c)] for c in classes)]
                )
    else:
        lines = "".join(json.dumps(row, ensure_ascii=False) + "\n" for row in rows)
        if output is None:
            sys.stdout.write(lines)
        else:
            output.write_text(lines, encoding="utf-8")
    if output is not None:
        _note(f"wrote {len(rows):,} predictions to {output}")


# Characters that end a line somewhere (str.splitlines): a path or value holding one is shown
# escaped, so the error stays one line whatever the user typed.
_LINE_BREAKS = {ord(c): repr(c)[1:-1] for c in "\n\r\x0b\x0c\x1c\x1d\x1e\x85\u2028\u2029"}


def _one_line(message: str) -> str:
    return message.translate(_LINE_BREAKS)


def main(argv: list[str] | None = None) -> None:
    """Entry point: run the CLI; input problems become one line on stderr and exit 2.

    Usage errors (an unknown option or command, a missing argument, a value out of range) are
    left to the CLI library in its standalone mode: it prints the usage and one error line and
    exits 2. Catching its exception classes here instead broke when typer began raising its own
    vendored copies of click's; the standalone contract is the public one.
    """
    try:
        app(args=argv, prog_name="bertprobe")
    except BertprobeError as exc:
        _note(f"bertprobe: error: {_one_line(str(exc))}")
        sys.exit(2)
    except BrokenPipeError:
        sys.exit(0)  # `bertprobe predict ... | head` closed the pipe: not an error
    except OSError as exc:
        if exc.filename is None:
            raise
        # A path the user named that the system refuses (too long, no permission, disk full):
        # their input or their machine, not a bug; the readers say more where they can.
        _note(
            f"bertprobe: error: {_one_line(str(exc.filename))}: {exc.strerror}; check the "
            "path, its permissions and the free space"
        )
        sys.exit(2)
    except SystemExit as exc:
        if exc.code == 130:  # the library's exit status for Ctrl-C
            _note(
                "bertprobe: interrupted; finished batches are in the embedding cache, run the "
                "same command again to resume"
            )
        raise
