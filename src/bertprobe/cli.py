"""The ``bertprobe`` command line: train, evaluate, predict, embed, sweep, report, serve,
export.

Each command parses its flags into the library's option objects, makes one library call
(:func:`bertprobe.train`, :class:`bertprobe.Classifier`, :func:`bertprobe.sweep`,
:func:`bertprobe.report.build_report`, ...) and prints what came back. Results go to standard
output (``--json`` for one JSON object); progress and notes go to standard error. A problem with
the input is one line on standard error and exit status 2.
"""

from __future__ import annotations

import functools
import inspect
import json
import math
import os
import re
import sys
import typing
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Annotated, Any

import typer

from bertprobe import __version__
from bertprobe.core.errors import BadInputError, BertprobeError
from bertprobe.core.extras import require_extra
from bertprobe.core.tables import jsonl_lines, prediction_table, python_value, write_tables
from bertprobe.data.files import (
    MAX_FIELD_CHARS,
    LabelledTexts,
    ReadOptions,
    check_output_path,
    read_texts,
)
from bertprobe.data.multilabel import read_multilabel
from bertprobe.encoders.encode import (
    DEFAULT_ENCODER,
    POOLINGS,
    EncoderOptions,
    RunOptions,
    check_long_mode,
    check_pooling,
    check_window_pool,
    parse_layers,
)
from bertprobe.encoders.features import write_features
from bertprobe.encoders.onnx import check_backend
from bertprobe.heads.multilabel import MultiLabelProbe
from bertprobe.heads.probe import OutOfCoreProbe
from bertprobe.model.classifier import Classifier
from bertprobe.model.evaluation import MultiLabelEvaluation
from bertprobe.model.multilabel import reading_for, training_summary
from bertprobe.model.train import TrainOptions, TrainResult, read_training_set
from bertprobe.model.train import sweep as sweep_layers
from bertprobe.model.train import train as train_model
from bertprobe.ray_engine import RayOptions, ray_embed, ray_predict
from bertprobe.report import write_multilabel_report
from bertprobe.training.finetune import FinetuneOptions
from bertprobe.training.label_issues import write_label_issues
from bertprobe.training.sweep import FINALISTS, SweepResult

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


# --- options -------------------------------------------------------------------------------
# Numeric options declare their ranges, so a bad value is a usage error (exit 2) before any
# work starts, and --help shows the range.

_CPUS = os.cpu_count() or 1


def _nonzero(value: int) -> int:
    if value == 0:
        raise typer.BadParameter("0 processes cannot run anything; use 1, or -1 for one per core")
    return value


def _finite(value: float) -> float:
    if not math.isfinite(value):
        raise typer.BadParameter(f"{value} is not a finite number")
    return value


def _positive(value: float | None) -> float | None:
    if value is not None and not (math.isfinite(value) and value > 0):
        raise typer.BadParameter(f"{value} is not a positive number")
    return value


def _share(value: float | None) -> float | None:
    if value is not None and not 0 < value < 1:
        raise typer.BadParameter(f"{value} is not a share between 0 and 1")
    return value


ModelOpt = Annotated[Path, typer.Option("--model", "-m", help="Model folder.")]
DeviceOpt = Annotated[str, typer.Option(help="Torch device: cpu, cuda, cuda:1, mps.")]
BackendOpt = Annotated[
    str | None,
    typer.Option(
        "--backend",
        help="Forward pass: torch (fp32), onnx (fp32 via ONNX Runtime) or onnx-int8 (quantized, "
        "fastest on CPU); default: a model's own, or torch when training.",
    ),
]
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
ThresholdOpt = Annotated[
    str | None,
    typer.Option(
        "--threshold",
        help="Two classes: label the second class where its probability reaches this; 'auto' "
        "is the threshold chosen at training time (default: the most probable label).",
    ),
]


RayOpt = Annotated[
    str | None,
    typer.Option(
        "--ray",
        metavar="ADDRESS",
        help="Run on Ray (bertprobe[ray]): 'local' starts a local instance, 'auto' joins the "
        "cluster this machine belongs to, 'ray://host:10001' a remote one. Input: a file, a "
        "folder or a glob; output: a file, or a folder for Parquet shards.",
    ),
]
ActorsOpt = Annotated[
    int | None,
    typer.Option(
        min=1, help="--ray: actors, each with one copy of the model (default: CPUs / --actor-cpus)."
    ),
]
ActorCpusOpt = Annotated[
    float,
    typer.Option(callback=_positive, help="--ray: CPUs (and torch threads) of each actor."),
]


def _option(name: str, annotation: Any, default: Any) -> inspect.Parameter:
    return inspect.Parameter(
        name, inspect.Parameter.POSITIONAL_OR_KEYWORD, default=default, annotation=annotation
    )


_RUN = (
    _option("batch_size", Annotated[int, typer.Option(min=1, help="Texts per forward pass.")], 32),
    _option(
        "max_tokens",
        Annotated[
            int | None,
            typer.Option(
                min=1,
                help="Also cap a batch at this many padded tokens (long texts get smaller "
                "batches).",
            ),
        ],
        None,
    ),
    _option(
        "cache_dir",
        Annotated[
            Path | None,
            typer.Option(
                help="Embedding cache folder (default: $BERTPROBE_CACHE_DIR or the user cache "
                "folder)."
            ),
        ],
        None,
    ),
    _option(
        "no_cache",
        Annotated[bool, typer.Option("--no-cache", help="Neither read nor write the cache.")],
        False,
    ),
    _option("device", DeviceOpt, "cpu"),
    _option("backend", BackendOpt, None),
)
_FEATURES = (
    _option(
        "encoder",
        Annotated[
            str,
            typer.Option(
                "--encoder",
                "-e",
                help="Hugging Face hub name, local model folder, or 'minilm' (bundled, offline).",
            ),
        ],
        DEFAULT_ENCODER,
    ),
    _option(
        "pooling",
        Annotated[str, typer.Option(help=f"How token vectors become one: {', '.join(POOLINGS)}.")],
        "cls",
    ),
    _option(
        "layer",
        Annotated[
            str,
            typer.Option(
                "--layer",
                help="Hidden state: 0 = embeddings, -1 = last; a comma list is concatenated.",
            ),
        ],
        "-1",
    ),
    _option(
        "max_length",
        Annotated[
            int | None,
            typer.Option(
                min=2, help="Truncate texts at this many tokens (default: the encoder's maximum)."
            ),
        ],
        None,
    ),
    _option(
        "long",
        Annotated[
            str,
            typer.Option(
                help="Texts over --max-length: 'truncate', or 'chunk' into overlapping windows "
                "whose vectors are pooled into one."
            ),
        ],
        "truncate",
    ),
    _option(
        "stride",
        Annotated[
            int | None,
            typer.Option(
                min=0,
                help="--long chunk: tokens shared by consecutive windows (default: a quarter of "
                "--max-length).",
            ),
        ],
        None,
    ),
    _option(
        "window_pool",
        Annotated[
            str,
            typer.Option(help="--long chunk: how window vectors become one: mean or max."),
        ],
        "mean",
    ),
)
_TEXT_COL = _option(
    "text_col", Annotated[str | None, typer.Option(help="Text column, by name or index.")], None
)
_LABEL_COL = _option(
    "label_col", Annotated[str | None, typer.Option(help="Label column, by name or index.")], None
)
_DROP_EMPTY = _option(
    "drop_empty", Annotated[bool, typer.Option(help="Skip rows whose text is empty.")], False
)
_LABEL_SEP = _option(
    "label_sep",
    Annotated[
        str | None,
        typer.Option(
            help="Multi-label: the label column joins each text's labels with this (comedy|drama;"
            " an empty cell is no label). Default with --multi-label: '|'.",
        ),
    ],
    None,
)
_LABEL_COLS = _option(
    "label_cols",
    Annotated[
        str | None,
        typer.Option(
            help="Multi-label: one 0/1 column per label, a comma list of names or indexes "
            "(a TSV without header names its labels by column index).",
        ),
    ],
    None,
)
_MAX_TEXT_CHARS = _option(
    "max_text_chars",
    Annotated[
        int,
        typer.Option(min=1, help="Most characters in one CSV/TSV cell; a longer one is refused."),
    ],
    MAX_FIELD_CHARS,
)


def _column(value: str | None) -> str | int | None:
    return int(value) if value is not None and value.lstrip("-").isdigit() else value


def _run_options(values: dict[str, Any], progress: bool) -> RunOptions:
    backend = values["backend"]
    return RunOptions(
        batch_size=values["batch_size"],
        max_tokens=values["max_tokens"],
        device=values["device"],
        backend=check_backend(backend) if backend is not None else None,
        cache_dir=values["cache_dir"],
        use_cache=not values["no_cache"],
        progress=progress,
    )


def _encoder_options(values: dict[str, Any], progress: bool) -> EncoderOptions:
    return EncoderOptions(
        values["encoder"],
        pooling=check_pooling(values["pooling"]),
        layers=parse_layers(values["layer"]),
        max_length=values["max_length"],
        long=check_long_mode(values["long"]),
        stride=values["stride"],
        window_pool=check_window_pool(values["window_pool"]),
        run=_run_options(values, progress),
    )


def _read_options(values: dict[str, Any], progress: bool) -> ReadOptions:
    return ReadOptions(
        text_col=_column(values.get("text_col")),
        label_col=_column(values.get("label_col")),
        drop_empty=values.get("drop_empty", False),
        label_sep=values.get("label_sep"),
        label_cols=values.get("label_cols"),
        max_field_chars=values.get("max_text_chars", MAX_FIELD_CHARS),
    )


@dataclass(frozen=True)
class _Group:
    """Options declared once, shared by commands, and built into one option object."""

    options: tuple[inspect.Parameter, ...]
    build: Callable[[dict[str, Any], bool], Any]


RUN = _Group(_RUN, _run_options)
ENCODING = _Group(_FEATURES + _RUN, _encoder_options)
READING = _Group((_TEXT_COL, _LABEL_COL, _DROP_EMPTY, _MAX_TEXT_CHARS), _read_options)
TEXTS = _Group((_TEXT_COL, _DROP_EMPTY, _MAX_TEXT_CHARS), _read_options)
# Commands that read labels of a multi-label model or for one (train, evaluate, report).
LABELS = _Group(
    (_TEXT_COL, _LABEL_COL, _DROP_EMPTY, _LABEL_SEP, _LABEL_COLS, _MAX_TEXT_CHARS), _read_options
)


# The default of a command's option-object parameters, which _shared replaces by flags.
_FROM_FLAGS: Any = None


def _shared(**groups: _Group) -> Callable[[Callable[..., None]], Callable[..., None]]:
    """Give a command a group's flags in place of its parameter of that name.

    ``@_shared(run=RUN)`` on ``def evaluate(data, ..., run: RunOptions)`` makes ``evaluate``
    take ``--batch-size``, ``--device``, ``--cache-dir``, ... and receive them as one
    :class:`RunOptions`. Progress bars show unless the command prints ``--json``.
    """

    def decorate(command: Callable[..., None]) -> Callable[..., None]:
        hints = typing.get_type_hints(command, include_extras=True)
        options: list[inspect.Parameter] = []
        for param in inspect.signature(command).parameters.values():
            if param.name in groups:
                options.extend(groups[param.name].options)
            else:
                options.append(param.replace(annotation=hints[param.name]))

        @functools.wraps(command)
        def with_option_objects(**values: Any) -> None:
            progress = not values.get("as_json", False)
            for name, group in groups.items():
                given = {option.name: values.pop(option.name) for option in group.options}
                values[name] = group.build(given, progress)
            command(**values)

        # The CLI library reads the flags from the signature and the annotations.
        with_option_objects.__signature__ = inspect.Signature(options)  # type: ignore[attr-defined]
        with_option_objects.__annotations__ = {p.name: p.annotation for p in options}
        return with_option_objects

    return decorate


def _note(message: str) -> None:
    typer.echo(message, err=True)


def _percent(x: float | None) -> str:
    return "n/a" if x is None else f"{100 * x:.2f}%"


def _long_texts(long: str, n_truncated: int, n_windows: int, n_computed: int) -> str:
    """What became of long texts: how many were truncated, or the windows per text."""
    if long == "truncate":
        return f"{n_truncated:,} truncated"
    if not n_computed:
        return "no windows computed"
    return f"{n_windows:,} windows, {n_windows / n_computed:.2f} per text"


# Library errors name parameters as a Python caller writes them ("Cs='x' is not ...", "pass
# drop_empty=True"); the CLI user knows flags. This is the one table from one to the other.
_FLAGS = {
    "Cs": "--c-grid",
    "cv": "--cv",
    "n_jobs": "--jobs",
    "poolings": "--poolings",
    "encoder": "--encoder",
    "layers": "--layer",
    "max_length": "--max-length",
    "long": "--long",
    "stride": "--stride",
    "window_pool": "--window-pool",
    "max_field_chars": "--max-text-chars",
    "batch_size": "--batch-size",
    "max_tokens": "--max-tokens",
    "device": "--device",
    "backend": "--backend",
    "cache_dir": "--cache-dir",
    "text_col": "--text-col",
    "chunk_size": "--chunk-size",
    "batch_rows": "--chunk-size",
    "actors": "--actors",
    "cpus_per_actor": "--actor-cpus",
    "label_col": "--label-col",
    "train": "--train",
    "finetune": "--finetune",
    "epochs": "--epochs",
    "lr": "--lr",
    "seed": "--seed",
    "dev": "--dev",
    "dev_share": "--dev-share",
    "features": "--features",
    "finalists": "--finalists",
    "class_weight": "--class-weight",
    "metric": "--metric",
    "threshold": "--threshold",
    "label_sep": "--label-sep",
    "label_cols": "--label-cols",
}
_SWITCHES = {
    "label_issues=True": "--label-issues",
    "drop_empty=True": "--drop-empty",
    "use_cache=False": "--no-cache",
    "auto=True": "--auto",
    "out_of_core=True": "--out-of-core",
    "multi_label=True": "--multi-label",
    "tune_thresholds=True": "--tune-thresholds",
}
_PARAMETER = re.compile(r"(?<![\w./\\-])(" + "|".join(_FLAGS) + r")= ?")


def _in_cli_words(message: str) -> str:
    """``message`` with the library's parameter words as the CLI's flags."""
    for words, switch in _SWITCHES.items():
        message = message.replace(words, switch)

    def as_flag(match: re.Match[str]) -> str:
        ends = match.end() == len(message) or message[match.end()] in ",;:)"
        return _FLAGS[match[1]] + ("" if ends else " ")

    return _PARAMETER.sub(as_flag, message)


def _ray_options(
    address: str | None, actors: int | None, actor_cpus: float, chunk_size: int
) -> RayOptions | None:
    """The --ray flags as RayOptions (None without --ray); 'local' is a new local instance."""
    if address is None:
        if actors is not None or actor_cpus != 1.0:
            raise BadInputError("--actors and --actor-cpus apply to --ray only; add --ray local")
        return None
    if not address.strip():
        raise BadInputError("--ray needs an address: local, auto or ray://host:10001")
    require_extra("ray")
    return RayOptions(
        address=None if address == "local" else address,
        actors=actors,
        cpus_per_actor=actor_cpus,
        batch_rows=chunk_size,
    )


FinalistsOpt = Annotated[
    int,
    typer.Option(
        min=0,
        help="Candidates, ranked by a cheap ridge screen, that get the full CV; 0: all of them.",
    ),
]


def _train_options(c_grid: str, cv: int, jobs: int, **more: Any) -> TrainOptions:
    return TrainOptions(Cs=c_grid, cv=cv, n_jobs=jobs, **more)


# --- commands ------------------------------------------------------------------------------


@app.command()
@_shared(encoding=ENCODING, reading=LABELS)
def train(
    data: Annotated[Path, typer.Argument(help="Labelled training file (TSV, CSV or JSON Lines).")],
    test: Annotated[Path | None, typer.Option(help="Labelled test file to evaluate on.")] = None,
    out: Annotated[Path | None, typer.Option(help="Model folder to write.")] = None,
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
    finalists: FinalistsOpt = FINALISTS,
    jobs: JobsOpt = -1,
    out_of_core: Annotated[
        bool,
        typer.Option(
            "--out-of-core",
            help="For training sets larger than memory: stream features to disk "
            "and fit by SGD a chunk at a time (no --auto).",
        ),
    ] = False,
    features: Annotated[
        Path | None,
        typer.Option(
            help="--out-of-core: the training file's vectors from `embed FILE --out X.parquet` "
            "(or --ray), used instead of embedding it again.",
        ),
    ] = None,
    finetune: Annotated[
        bool,
        typer.Option(
            "--finetune",
            help="Fine-tune the encoder's weights first (a head on --pooling, the epoch chosen "
            "on dev rows); the probe is then fitted on the tuned features.",
        ),
    ] = False,
    epochs: Annotated[
        int | None,
        typer.Option(
            min=1,
            max=50,
            help="--finetune: most epochs (default 4, more for a small training set).",
        ),
    ] = None,
    lr: Annotated[
        float | None,
        typer.Option(callback=_positive, help="--finetune: peak learning rate (default 8e-05)."),
    ] = None,
    seed: Annotated[
        int | None, typer.Option(help="--finetune: seed of the dev split and training (0).")
    ] = None,
    dev: Annotated[
        Path | None,
        typer.Option(help="--finetune: labelled dev file (default: a share of the training rows)."),
    ] = None,
    dev_share: Annotated[
        float | None,
        typer.Option(callback=_share, help="--finetune: share of the rows held out (0.1)."),
    ] = None,
    bf16: Annotated[
        bool | None,
        typer.Option("--bf16/--no-bf16", help="--finetune: bfloat16 autocast (default: off)."),
    ] = None,
    class_weight: Annotated[
        str | None,
        typer.Option(
            help="'balanced': weigh each class inversely to its frequency (skewed classes)."
        ),
    ] = None,
    metric: Annotated[
        str,
        typer.Option(
            help="What C is chosen (and --auto ranks) by: accuracy, balanced_accuracy, "
            "f1_macro or roc_auc; reported beside accuracy."
        ),
    ] = "accuracy",
    label_issues: Annotated[
        Path | None,
        typer.Option(
            "--label-issues",
            metavar="OUT.csv",
            help="Write the training rows whose label the model doubts (out-of-fold, "
            "cleanlab when installed), most doubtful first.",
        ),
    ] = None,
    multi_label: Annotated[
        bool,
        typer.Option(
            "--multi-label",
            help="Several labels per text (or none): --label-sep or --label-cols says how the "
            "file gives them; one probe per label.",
        ),
    ] = False,
    tune_thresholds: Annotated[
        bool,
        typer.Option(
            "--tune-thresholds",
            help="--multi-label: each label's threshold maximizes its F1 on out-of-fold "
            "probabilities (default: 0.5).",
        ),
    ] = False,
    as_json: JsonOpt = False,
    encoding: EncoderOptions = _FROM_FLAGS,
    reading: ReadOptions = _FROM_FLAGS,
) -> None:
    """Embed a labelled file, choose C by cross-validation, fit the probe, save the model."""
    options = _train_options(
        c_grid,
        cv,
        jobs,
        auto=auto,
        poolings=poolings,
        finalists=finalists,
        out_of_core=out_of_core,
        features=features,
        class_weight=class_weight,
        metric=metric,
        label_issues=label_issues is not None,
        multi_label=multi_label,
        tune_thresholds=tune_thresholds,
    )
    if label_issues is not None:
        check_output_path(label_issues, what="--label-issues", folder=False)
    tuning: dict[str, Any] = dict(
        epochs=epochs, lr=lr, seed=seed, dev=dev, dev_share=dev_share, bf16=bf16
    )
    given = {name: value for name, value in tuning.items() if value is not None}
    if given and not finetune:
        flags = ", ".join(f"--{name.replace('_', '-')}" for name in given)
        raise BadInputError(f"{flags} apply to fine-tuning only; add --finetune or leave them out")
    result = train_model(
        data,
        test=test,
        encoding=encoding,
        options=options,
        reading=reading,
        finetune=FinetuneOptions(**given) if finetune else None,
        out=out,
    )
    if label_issues is not None and result.train_data is not None:
        write_label_issues(
            result.label_issues or [],
            result.train_data.texts,
            result.train_data.line_numbers,
            label_issues,
        )
    if as_json:
        summary = result.to_dict()
        if label_issues is not None:
            summary["label_issues"] = str(label_issues)
        typer.echo(json.dumps(summary))
    else:
        _print_training(result, data, test)
        if label_issues is not None:
            typer.echo(
                f"labels    {len(result.label_issues or []):,} training rows whose label the "
                f"model doubts, most doubtful first: {label_issues}"
            )


@app.command()
@_shared(run=RUN, reading=LABELS)
def evaluate(
    data: Annotated[Path, typer.Argument(help="Labelled file to evaluate on.")],
    model_dir: ModelOpt,
    run: RunOptions,
    reading: ReadOptions,
    threshold: ThresholdOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Accuracy, per-class precision/recall/F1 and the confusion matrix on a labelled file.

    A multi-label model: micro and macro F1 and per-label precision/recall/F1.
    """
    model = Classifier.load(model_dir)
    cut = model.threshold(threshold)  # checked before the file is read
    test_set = _read_labels_for(model, data, reading)
    _report_dropped(test_set)
    result = model.evaluate(
        test_set.texts, test_set.labels or [], run, source=str(data), threshold=cut
    )
    if isinstance(result, MultiLabelEvaluation):
        if result.unknown_labels:
            _note(
                f"note: {data} has labels the model never saw, left out of the scores: "
                + ", ".join(result.unknown_labels)
            )
        if as_json:
            typer.echo(json.dumps(result.to_dict()))
            return
        typer.echo(f"model     {model_dir} ({model.id})")
        typer.echo(f"data      {data}: {len(test_set):,} texts")
        for line in evaluation_lines(result):
            typer.echo(line)
        return
    if result.unknown_labels:
        _note(f"note: {data} has labels the model never saw: {', '.join(result.unknown_labels)}")
    if as_json:
        typer.echo(json.dumps(result.to_dict()))
        return
    typer.echo(f"model     {model_dir} ({model.id})")
    typer.echo(f"data      {data}: {len(test_set):,} texts")
    typer.echo(f"accuracy  {_percent(result.accuracy)}")
    if result.score is not None:
        typer.echo(f"{result.metric}  {result.score:.4f}")
    if result.threshold is not None:
        typer.echo(f"threshold {result.threshold:.4f} on P({model.classes[1]})")
    typer.echo(f"{'label':>12} {'precision':>10} {'recall':>10} {'f1':>10} {'support':>8}")
    for label, row in result.per_class.items():
        typer.echo(
            f"{label:>12} {row['precision']:>10.3f} {row['recall']:>10.3f} "
            f"{row['f1-score']:>10.3f} {int(row['support']):>8}"
        )


@app.command()
@_shared(run=RUN, reading=TEXTS)
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
            "--output",
            "-o",
            help="Write here instead of stdout: CSV if the name ends in .csv, Parquet in "
            ".parquet, else JSON Lines. With --input, a chunk at a time, resumably.",
        ),
    ] = None,
    chunk_size: Annotated[
        int,
        typer.Option(
            min=1,
            help="With --input and --output: texts read, labelled and stored at a time (with "
            "--ray: rows a batch).",
        ),
    ] = 4096,
    ray: RayOpt = None,
    actors: ActorsOpt = None,
    actor_cpus: ActorCpusOpt = 1.0,
    threshold: ThresholdOpt = None,
    run: RunOptions = _FROM_FLAGS,
    reading: ReadOptions = _FROM_FLAGS,
) -> None:
    """Label texts with probabilities, as JSON Lines ({"text", "label", "probabilities"}).

    --input FILE --output OUT streams: memory stays flat in the file's size, and an interrupted
    run resumes after its last stored chunk when the same command is run again.
    """
    ray_options = _ray_options(ray, actors, actor_cpus, chunk_size)
    if ray_options is not None:
        if input_file is None or texts or output is None:
            raise BadInputError(
                "--ray labels files: give --input (a file, a folder or a glob) and --output "
                "(a file, or a folder for Parquet shards), and no text arguments"
            )
        check_output_path(output, what="--output", folder=not output.suffix)
    elif output is not None:
        check_output_path(output, what="--output", folder=False)
    model = Classifier.load(model_dir)  # a bad folder fails here, before Ray starts a task
    cut = model.threshold(threshold)
    if ray_options is not None and input_file is not None and output is not None:
        found = ray_predict(
            model, str(input_file), output, run=run, reading=reading, ray=ray_options, threshold=cut
        )
        _note(
            f"wrote {found.n_texts:,} predictions from {found.n_files} files to {output} with "
            f"{found.actors} Ray actors in {found.seconds:.1f} s"
        )
        return
    if input_file is not None and output is not None and str(input_file) != "-":
        if texts:
            raise BadInputError("give texts as arguments or with --input, not both")
        stats = model.predict_file(
            input_file,
            output,
            replace(run, progress=True),
            reading=reading,
            chunk_size=chunk_size,
            threshold=cut,
        )
        if stats.dropped_empty:
            _note(f"note: {input_file}: skipped {stats.dropped_empty:,} rows with empty text")
        resumed = f" (resumed after {stats.n_resumed:,})" if stats.n_resumed else ""
        _note(f"wrote {stats.n_texts:,} predictions to {output}{resumed}")
        return
    items = _gather_texts(texts or [], input_file, reading)
    probabilities = model.predict_proba(items, replace(run, progress=output is not None))
    classes = [python_value(c) for c in model.classes]
    labels = model.decide(probabilities, cut) if cut is not None else None
    table = prediction_table(items, probabilities, classes, labels, thresholds=model.thresholds)
    if output is None:
        sys.stdout.writelines(jsonl_lines(table, classes))
        return
    n = write_tables([table], output, classes)
    _note(f"wrote {n:,} predictions to {output}")


@app.command("embed")
@_shared(encoding=ENCODING, reading=TEXTS)
def embed_command(
    data: Annotated[Path, typer.Argument(help="Texts: one a line, or a table with a text column.")],
    out: Annotated[
        Path,
        typer.Option(help="Where to write the vectors: .npy, or .parquet (id and vector columns)."),
    ],
    chunk_size: Annotated[
        int,
        typer.Option(
            min=1,
            help="Texts read, embedded and written at a time; memory stays flat in file size "
            "(with --ray: rows a batch).",
        ),
    ] = 4096,
    ray: RayOpt = None,
    actors: ActorsOpt = None,
    actor_cpus: ActorCpusOpt = 1.0,
    as_json: JsonOpt = False,
    encoding: EncoderOptions = _FROM_FLAGS,
    reading: ReadOptions = _FROM_FLAGS,
) -> None:
    """Write one vector per text to a .npy or Parquet file (rows in input order), a chunk at a time.

    An interrupted run keeps every chunk written; the same command resumes it.
    """
    ray_options = _ray_options(ray, actors, actor_cpus, chunk_size)
    if ray_options is not None:
        if out.suffix and out.suffix.lower() not in (".npy", ".parquet", ".pq"):
            raise BadInputError(
                f"--out {out}: name the file *.npy or *.parquet, or give a folder for "
                "Parquet shards"
            )
        check_output_path(out, what="--out", folder=not out.suffix)
        found = ray_embed(str(data), out, encoding=encoding, reading=reading, ray=ray_options)
        summary = {
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
        else:
            typer.echo(
                f"wrote {out}: {found.n_texts:,} vectors from {found.n_files} files with "
                f"{found.actors} Ray actors in {found.seconds:.1f} s"
            )
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
        _note(f"note: {data}: skipped {stats.dropped_empty:,} rows with empty text")
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
        f"{_long_texts(encoding.long, stats.n_truncated, stats.n_windows, stats.n_computed)}"
        f"{resumed})"
    )


@app.command("sweep")
@_shared(encoding=ENCODING, reading=READING)
def sweep_command(
    data: Annotated[Path, typer.Argument(help="Labelled training file.")],
    poolings: Annotated[
        str, typer.Option(help="Poolings to try, comma separated.")
    ] = "cls,mean,max",
    out: Annotated[Path | None, typer.Option(help="Folder for sweep.json and sweep.png.")] = None,
    cv: CvOpt = 5,
    c_grid: Annotated[str, typer.Option(help="C values for each finalist.")] = "coarse",
    finalists: FinalistsOpt = FINALISTS,
    jobs: JobsOpt = -1,
    tfidf: Annotated[bool, typer.Option(help="Also score the TF-IDF + LR baseline.")] = True,
    metric: Annotated[
        str,
        typer.Option(
            help="What the candidates are ranked (and C chosen) by: accuracy, "
            "balanced_accuracy, f1_macro or roc_auc."
        ),
    ] = "accuracy",
    as_json: JsonOpt = False,
    encoding: EncoderOptions = _FROM_FLAGS,
    reading: ReadOptions = _FROM_FLAGS,
) -> None:
    """Score every hidden layer x pooling (and concatenations) by CV on the training data.

    --pooling and --layer are not used: the sweep tries them all.
    """
    if out is not None:
        check_output_path(out, what="--out", folder=True)
        require_extra("report")  # for sweep.png: fail now, not after the sweep
    options = _train_options(
        c_grid, cv, jobs, poolings=poolings, finalists=finalists, metric=metric
    )
    train_set = read_training_set(data, reading, cv)
    _report_dropped(train_set)
    result = sweep_layers(train_set, encoding=encoding, options=options)
    summary = result.to_dict()
    if out is not None:
        from bertprobe.report import write_sweep

        write_sweep(result, out)
        summary["out"] = str(out)
    if as_json:
        typer.echo(json.dumps(summary))
        return
    _print_sweep(result)
    if out is not None:
        typer.echo(f"wrote {out / 'sweep.json'} and {out / 'sweep.png'}")


@app.command()
@_shared(run=RUN, reading=LABELS)
def report(
    data: Annotated[Path, typer.Argument(help="Labelled test file.")],
    model_dir: ModelOpt,
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
    as_json: JsonOpt = False,
    run: RunOptions = _FROM_FLAGS,
    reading: ReadOptions = _FROM_FLAGS,
) -> None:
    """Write an HTML report with plots: errors, calibration, C search, sweep, learning curve."""
    require_extra("report")
    from bertprobe.report import build_report, write_report

    check_output_path(out, what="--out", folder=True)
    model = Classifier.load(model_dir)
    if model.multi_label or reading.multi_label:
        _multilabel_report(model, data, out, run, reading, as_json)
        return
    found = build_report(model, data, train=train_file, run=run, reading=reading, n_jobs=jobs)
    page = write_report(found, out)
    if as_json:
        typer.echo(json.dumps({"report": str(page), **found.summary()}, default=python_value))
        return
    for line in found.notes:
        _note(f"note: {_in_cli_words(line)}")
    baseline = found.tfidf_accuracy
    typer.echo(
        f"accuracy  {_percent(found.accuracy)} on {data}"
        + (f" (TF-IDF + LR baseline {_percent(baseline)})" if baseline is not None else "")
    )
    typer.echo(f"report    {page}")


@app.command("serve")
def serve_command(
    model_dir: ModelOpt,
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
    max_chars: Annotated[
        int | None,
        typer.Option(
            min=1,
            help="Most characters in one text. Default: 2,000, or 100,000 for a model trained "
            "with --long chunk.",
        ),
    ] = None,
    max_body_bytes: Annotated[
        int, typer.Option(min=1, help="Largest request body, in bytes.")
    ] = 1_000_000,
    max_queue: Annotated[
        int | None,
        typer.Option(
            min=1,
            help="Most texts waiting for the encoder; past it, 503 with Retry-After. Default: "
            "the encoder rate measured at start-up times --latency-budget.",
        ),
    ] = None,
    latency_budget: Annotated[
        float,
        typer.Option(
            min=0.001,
            max=3600,
            callback=_finite,
            help="Seconds a text may wait for the encoder; sizes the default --max-queue.",
        ),
    ] = 1.0,
    request_timeout: Annotated[
        float,
        typer.Option(
            min=0.001,
            max=3600,
            callback=_finite,
            help="Seconds before an unanswered request gets 504 (its work is dropped).",
        ),
    ] = 30.0,
    api_key: Annotated[
        str | None,
        typer.Option(
            envvar="BERTPROBE_API_KEY",
            show_envvar=True,
            metavar="KEY",
            help="Require Authorization: Bearer KEY on /v1/* (admin routes need it always).",
        ),
    ] = None,
    cors_origin: Annotated[
        list[str] | None,
        typer.Option(
            metavar="ORIGIN", help="Allow browser pages from this origin (repeatable; * for any)."
        ),
    ] = None,
    device: DeviceOpt = "cpu",
    backend: BackendOpt = None,
    threshold: ThresholdOpt = None,
) -> None:
    """Serve the model over HTTP (FastAPI on uvicorn), with a try-it page at /.

    /metrics (Prometheus) and /healthz are open; SIGHUP or POST /v1/admin/reload swaps in the
    model folder again (or another), checked, without dropping requests."""
    require_extra("serve")
    from bertprobe.serve import BatchingConfig, ServeLimits, ServeSecurity, listen_socket, serve

    security = ServeSecurity(api_key=api_key, cors_origins=tuple(cors_origin or ()))
    model = Classifier.load(model_dir)  # a bad folder fails here, before the server starts
    model.threshold(threshold)  # checked before the server starts (and at each reload)
    if backend is not None:
        model.backend = check_backend(backend)
    RunOptions(device=device).load(model.encoder, model.backend)  # loaded before listening
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
        backend=model.backend if backend is not None else None,
        limits=ServeLimits(
            max_texts,
            max_chars,
            max_body_bytes,
            max_queue=max_queue,
            latency_budget_s=latency_budget,
            request_timeout_s=request_timeout,
        ),
        batching=BatchingConfig(batching, max_batch, max_wait_ms, batch_size),
        threshold=threshold,
        security=security,
    )


@app.command("export")
def export_command(
    model_dir: ModelOpt,
    out: Annotated[
        Path,
        typer.Option(help="Folder to write: model.onnx, tokenizer.json and card.json."),
    ],
    int8: Annotated[
        bool,
        typer.Option(
            "--int8", help="Quantize the graph's weights to int8 (smaller, faster on CPUs)."
        ),
    ] = False,
    as_json: JsonOpt = False,
) -> None:
    """Write the whole classifier as one ONNX graph (token ids to probabilities), to run with
    onnxruntime and tokenizers alone."""
    require_extra("onnx")
    from bertprobe.export import export_classifier

    folder = export_classifier(model_dir, out, int8=int8)
    card = json.loads((folder / "card.json").read_text(encoding="utf-8"))
    if as_json:
        typer.echo(json.dumps({"out": str(folder), **card}))
        return
    size = (folder / "model.onnx").stat().st_size / 1e6
    typer.echo(
        f"wrote     {folder / 'model.onnx'} ({size:.1f} MB, {'int8' if int8 else 'fp32'}), "
        "tokenizer.json, card.json"
    )
    typer.echo(f"classes   {', '.join(str(c) for c in card['classes'])}")
    typer.echo(
        f"graph     {', '.join(card['inputs'])} (int64 [batch, seq]) -> {card['output']} "
        "(float32 [batch, class])"
    )


def _read_labels_for(model: Classifier, data: Path, reading: ReadOptions) -> LabelledTexts:
    """A labelled file read as the model needs it: label sets for a multi-label model."""
    if model.multi_label:
        return read_multilabel(data, reading_for(model, reading))
    if reading.multi_label:
        raise BadInputError(
            "--label-sep and --label-cols read several labels per text; the model "
            f"{model.id} gives one label per text, so leave them out"
        )
    return reading.read_labelled(data)


def _multilabel_report(
    model: Classifier,
    data: Path,
    out: Path,
    run: RunOptions,
    reading: ReadOptions,
    as_json: bool,
) -> None:
    """``report`` for a multi-label model: the per-label scores table and F1 bar chart."""
    test_set = _read_labels_for(model, data, reading)
    page, found = write_multilabel_report(model, test_set, out, run=run, reading=reading)
    if as_json:
        typer.echo(json.dumps({"report": str(page), **found}))
        return
    typer.echo(
        f"F1        micro {found['test_f1_micro']:.3f}, macro {found['test_f1_macro']:.3f} "
        f"on {data}"
    )
    typer.echo(f"report    {page}")


# --- printing ------------------------------------------------------------------------------


def _print_training(result: TrainResult, data: Path, test: Path | None) -> None:
    summary, model, probe = result.to_dict(), result.model, result.probe
    if isinstance(probe, MultiLabelProbe):
        _report_dropped(result.train_data, result.test_data)
        for line in training_lines(result, data, test):
            typer.echo(line)
    elif isinstance(probe, OutOfCoreProbe):
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
        tuned = result.finetune
        if tuned is not None:
            history = ", ".join(
                f"{epoch}: {100 * x:.2f}%"
                for epoch, x in zip(tuned.dev_epochs, tuned.dev_history, strict=True)
            )
            typer.echo(
                f"finetune  {tuned.epochs_run} epochs on {tuned.n_train:,} texts in "
                f"{tuned.seconds:.0f} s; dev accuracy by epoch ({tuned.n_dev:,} texts): "
                f"{history}; kept epoch {tuned.best_epoch}"
            )
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
        embedded = [s for s in (result.train_stats, result.test_stats) if s is not None]
        total = sum(s.n_texts for s in embedded)
        long_texts = _long_texts(
            model.spec.long,
            summary["n_truncated"],
            summary["n_windows"],
            sum(s.n_computed for s in embedded),
        )
        typer.echo(
            f"embedded  {total:,} texts in {result.embed_seconds:.1f} s "
            f"({summary['n_cached']:,} from cache, {long_texts})"
        )
        typer.echo(
            f"probe     C = {probe.C_:.4g} by {probe.cv}-fold CV (CV accuracy "
            f"{_percent(probe.cv_accuracy_)}), fit in {result.fit_seconds:.1f} s"
        )
        if result.metric != "accuracy":
            typer.echo(
                f"metric    C chosen by {result.metric}: CV {probe.cv_score_:.4f}"
                + (f", test {result.test_score:.4f}" if result.test_score is not None else "")
            )
        if probe.class_weight is not None:
            typer.echo(f"weights   class_weight={probe.class_weight}")
        if result.decision_threshold is not None:
            found = result.decision_threshold
            typer.echo(
                f"threshold {found['value']:.4f} on P({found['positive_label']}) maximizes "
                f"out-of-fold {found['metric']} ({found['oof_score']:.4f}, "
                f"{found['oof_score_argmax']:.4f} at argmax); used with --threshold auto"
            )
        voter = model.text_model
        if voter is not None and result.sweep is not None:
            typer.echo(
                f"vote      with TF-IDF + LR (C = {voter[-1].C_:.3g}): CV accuracy "
                f"{_percent(result.sweep.vote_cv_accuracy)} against "
                f"{_percent(probe.cv_accuracy_)} alone"
            )
    if result.test_accuracy is not None and not isinstance(probe, MultiLabelProbe):
        typer.echo(
            f"test      {test}: {result.n_test:,} texts, accuracy {_percent(result.test_accuracy)}"
        )
    if result.out is not None:
        typer.echo(f"saved     {result.out}")
    else:
        _note("note: no --out given, so the model was not saved")


def _print_sweep(result: SweepResult) -> None:
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
            else _percent(row.screen_score) if not ranked
            else f"{row.screen_score:.4f}"
        )  # fmt: skip
        score = f" {row.rank_score or 0:>12.4f}" if ranked else ""
        scored = (
            f"{_percent(row.cv_accuracy):>8}{score} {100 * (row.cv_std or 0):>6.2f} "
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


def _report_dropped(*sets: LabelledTexts | None) -> None:
    for s in sets:
        if s is not None and s.dropped_empty:
            _note(f"note: {s.source}: skipped {s.dropped_empty:,} rows with empty text")


def _gather_texts(args: list[str], input_file: Path | None, reading: ReadOptions) -> list[str]:
    if input_file is not None and args:
        raise BadInputError("give texts as arguments or with --input, not both")
    source = input_file if input_file is not None else ("-" if args == ["-"] else None)
    if source is not None:
        return read_texts(
            source,
            text_col=reading.text_col,
            drop_empty=reading.drop_empty,
            max_field_chars=reading.max_field_chars,
        ).texts
    if not args:
        raise BadInputError(
            "no texts to classify; pass them as arguments, with --input FILE, or '-' to read stdin"
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
        _note(f"bertprobe: error: {_one_line(_in_cli_words(str(exc)))}")
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
