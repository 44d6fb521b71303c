"""The tracking flags (``--track``, ``--experiment``, ``--register``, ``--alias``) and the
MLflow run they open around a command (see :mod:`bertprobe.mlflow.tracking`).

MLflow is imported only when a command is tracked: the other commands start as fast without
it, and a missing extra is one line naming it.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Annotated, Any

import typer

from bertprobe.core.errors import BadInputError
from bertprobe.core.extras import needs_extra, require_extra

TrackOpt = Annotated[
    str | None,
    typer.Option(
        "--track",
        metavar="URI",
        help="Record this run in MLflow: a folder, sqlite:///runs.db or http://host:5000 "
        "(MLFLOW_EXPERIMENT_NAME and MLflow's credentials variables apply).",
    ),
]
ExperimentOpt = Annotated[
    str | None,
    typer.Option(help="--track: the MLflow experiment (default: MLFLOW_EXPERIMENT_NAME, else "
                 "'bertprobe')."),
]  # fmt: skip
RegisterOpt = Annotated[
    str | None,
    typer.Option(
        metavar="NAME",
        help="--track: register the model as a new version of NAME in MLflow's registry "
        "(then load it as models:/NAME/VERSION).",
    ),
]
AliasOpt = Annotated[
    str | None,
    typer.Option(
        metavar="ALIAS",
        help="--register: point ALIAS (champion, say) at the new version (models:/NAME@ALIAS).",
    ),
]


@contextmanager
def tracked(
    track: str | None,
    *,
    kind: str,
    experiment: str | None = None,
    register: str | None = None,
    alias: str | None = None,
    run_name: str | None = None,
) -> Iterator[Any]:
    """An MLflow tracker around the block when ``track`` is given (else None); the tracking
    server is checked before the block runs. ``run_name``: the run's (the model folder's
    name, say; default: MLflow's)."""
    if track is None:
        for name, value in (("experiment", experiment), ("register", register), ("alias", alias)):
            if value is not None:
                raise BadInputError(f"--{name} applies to a tracked run only; add --track URI")
        yield None
        return
    require_extra("mlflow")
    with needs_extra("mlflow"):
        from bertprobe.mlflow import MlflowTracker, Tracking

    tracking = Tracking(
        uri=track, experiment=experiment, register=register, alias=alias, run_name=run_name
    )
    with MlflowTracker(tracking, kind=kind) as tracker:
        yield tracker


def tracking_summary(tracker: Any) -> dict[str, Any]:
    """What ``--json`` adds for a tracked run: its id, and the version registered."""
    if tracker is None:
        return {}
    return {
        "mlflow_run_id": tracker.run_id,
        "mlflow_registered_version": tracker.registered_version,
        "mlflow_complete": tracker.broken is None,
        "mlflow_seconds": tracker.seconds,
    }


def print_tracking(tracker: Any) -> None:
    """One line on where the run went (on standard error: the result's lines stay as they
    were)."""
    if tracker is None:
        return
    line = f"tracked   MLflow run {tracker.run_id}"
    if tracker.registered_version is not None:
        line += f"; registered {tracker.tracking.register} version {tracker.registered_version}"
        if tracker.tracking.alias is not None:
            line += f" (@{tracker.tracking.alias})"
    if tracker.broken is not None:
        line += " (incomplete: tracking stopped)"
    typer.echo(line, err=True)
