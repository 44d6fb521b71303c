"""The flags that several commands take, each declared once.

Two kinds of declaration live here:

* ``Annotated`` aliases (:data:`ModelOpt`, :data:`JsonOpt`, :data:`ThresholdOpt`, ...) for a
  flag a command takes as one parameter: ``model_dir: ModelOpt``.
* Groups (:data:`RUN`, :data:`ENCODING`, :data:`READING`, :data:`TEXTS`, :data:`LABELS`) for
  flags that together make one of the library's option objects. ``@shared(run=RUN)`` gives a
  command ``--batch-size``, ``--device``, ``--cache-dir``, ... in place of its parameter
  ``run: RunOptions``, and calls it with the :class:`RunOptions` they make.

Numeric options declare their ranges, so a bad value is a usage error (exit 2) before any work
starts, and ``--help`` shows the range.
"""

from __future__ import annotations

import functools
import inspect
import math
import os
import typing
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any

import typer

from bertprobe.core.errors import BadInputError
from bertprobe.core.extras import require_extra
from bertprobe.data.files import MAX_FIELD_CHARS, ReadOptions
from bertprobe.encoders.backends import check_backend
from bertprobe.encoders.hub import DEFAULT_ENCODER
from bertprobe.encoders.options import (
    EncoderOptions,
    RunOptions,
    check_long_mode,
    check_window_pool,
    parse_layers,
)
from bertprobe.encoders.pooling import POOLINGS, check_pooling
from bertprobe.ray_engine import RayOptions

_CPUS = os.cpu_count() or 1


def nonzero(value: int) -> int:
    """``--jobs``: refuse 0, which would run nothing."""
    if value == 0:
        raise typer.BadParameter("0 processes cannot run anything; use 1, or -1 for one per core")
    return value


def finite(value: float) -> float:
    """Refuse nan and inf, which pass typer's min/max checks."""
    if not math.isfinite(value):
        raise typer.BadParameter(f"{value} is not a finite number")
    return value


def positive(value: float | None) -> float | None:
    """Refuse a value that is not a finite number above 0 (None: not given)."""
    if value is not None and not (math.isfinite(value) and value > 0):
        raise typer.BadParameter(f"{value} is not a positive number")
    return value


def share(value: float | None) -> float | None:
    """Refuse a value outside (0, 1) (None: not given)."""
    if value is not None and not 0 < value < 1:
        raise typer.BadParameter(f"{value} is not a share between 0 and 1")
    return value


# --- flags a command takes as one parameter ----------------------------------------------------

ModelOpt = Annotated[
    Path,
    typer.Option("--model", "-m", help="Model folder, or an MLflow model: models:/NAME@ALIAS."),
]
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
        callback=nonzero,
        help="Processes for cross-validation folds (-1: one per CPU core, -2: all but one).",
    ),
]
CvOpt = Annotated[int, typer.Option(min=2, help="Cross-validation folds for choosing C.")]
FinalistsOpt = Annotated[
    int,
    typer.Option(
        min=0,
        help="Candidates, ranked by a cheap ridge screen, that get the full CV; 0: all of them.",
    ),
]
# The sweep's flags, for `sweep` and `compare` (each encoder's sweep).
SweepPoolingsOpt = Annotated[str, typer.Option(help="Poolings to try, comma separated.")]
TfidfOpt = Annotated[bool, typer.Option(help="Also score the TF-IDF + LR baseline.")]
SweepMetricOpt = Annotated[
    str,
    typer.Option(
        help="What the candidates are ranked (and C chosen) by: accuracy, "
        "balanced_accuracy, f1_macro or roc_auc."
    ),
]
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
    typer.Option(callback=positive, help="--ray: CPUs (and torch threads) of each actor."),
]


def ray_options(
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


# --- flags that make one option object ---------------------------------------------------------


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
        "revision",
        Annotated[
            str | None,
            typer.Option(
                help="A hub encoder's branch, tag or commit hash (default: main); the commit "
                "it resolves to is recorded in the model card.",
            ),
        ],
        None,
    ),
    _option(
        "pooling",
        Annotated[
            str,
            typer.Option(
                help=f"How token vectors become one: {', '.join(POOLINGS)} (the recipe's is "
                "cls; mean scores 3-5 points more on SST-2)."
            ),
        ],
        "mean",
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
        revision=values["revision"],
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
class Group:
    """Options declared once, shared by commands, and built into one option object."""

    options: tuple[inspect.Parameter, ...]
    build: Callable[[dict[str, Any], bool], Any]


RUN = Group(_RUN, _run_options)
ENCODING = Group(_FEATURES + _RUN, _encoder_options)
READING = Group((_TEXT_COL, _LABEL_COL, _DROP_EMPTY, _MAX_TEXT_CHARS), _read_options)
TEXTS = Group((_TEXT_COL, _DROP_EMPTY, _MAX_TEXT_CHARS), _read_options)
# Commands that read labels of a multi-label model or for one (train, evaluate, report).
LABELS = Group(
    (_TEXT_COL, _LABEL_COL, _DROP_EMPTY, _LABEL_SEP, _LABEL_COLS, _MAX_TEXT_CHARS), _read_options
)

# The default of a command's option-object parameters, which shared() replaces by flags.
FROM_FLAGS: Any = None


def shared(**groups: Group) -> Callable[[Callable[..., None]], Callable[..., None]]:
    """Give a command a group's flags in place of its parameter of that name.

    ``@shared(run=RUN)`` on ``def evaluate(data, ..., run: RunOptions)`` makes ``evaluate``
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
