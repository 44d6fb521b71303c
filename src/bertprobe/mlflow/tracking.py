"""Tracking: each training, sweep or comparison as an MLflow run.

:class:`Tracking` says where runs go (a tracking URI: a folder, ``sqlite:///runs.db``, or a
server's ``http://host:5000``; by default MLflow's own settings, ``MLFLOW_TRACKING_URI``,
``MLFLOW_EXPERIMENT_NAME`` and the credentials' variables) and what they keep.
:class:`MlflowTracker` is a :class:`~bertprobe.training.callbacks.TrainingCallback`: passed
to :func:`~bertprobe.model.train.train` it records, in one run,

* as parameters, the model card's options (encoder, pooling, layers, C, each tuning's
  options, the data files), flattened to ``section.key``;
* as metrics, every figure of the card (CV, test, dev), each C's CV score (step: its rank in
  the grid), each sweep candidate's score, each tuning's loss and dev scores as it trains
  (step: the optimizer step) and each stage's seconds;
* as tags, the encoder's fingerprint and revision, the model's id and kind, bertprobe's
  version;
* as artifacts, the report (HTML and plots, when the run had a test set), the sweep and the
  CV tables, and the model in the bertprobe flavour (:mod:`bertprobe.mlflow.flavor`), which
  ``register`` makes a version of a registered model (``alias`` then names it).

The tracking server is checked before any work: one that does not answer is one line. One that
stops answering during a run costs the run's later records, never the model: a warning line,
and training goes on to save its folder.

Example:
    >>> with MlflowTracker(Tracking(uri="sqlite:///runs.db", register="sentiment",
    ...                             alias="champion")) as tracker:
    ...     result = train("train.tsv", test="test.tsv", out="models/a",
    ...                    callbacks=[tracker])  # doctest: +SKIP
"""

from __future__ import annotations

import contextlib
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np

from bertprobe import __version__
from bertprobe.core.errors import BadInputError
from bertprobe.core.extras import needs_extra
from bertprobe.model.sources import first_line, mlflow_defaults
from bertprobe.model.train import TrainResult
from bertprobe.training.callbacks import TrainingCallback
from bertprobe.training.compare import Comparison
from bertprobe.training.sweep import SweepResult

with needs_extra("mlflow"):
    import mlflow
    from mlflow import MlflowClient

#: The experiment runs go to when neither ``experiment`` nor MLFLOW_EXPERIMENT_NAME says.
DEFAULT_EXPERIMENT = "bertprobe"
# Card sections that are not options: figures (logged as metrics), hashes and versions (tags),
# and long tables (artifacts).
_NOT_PARAMS = ("metrics", "seal", "files", "versions", "sweep", "compare", "format", "created")
_TABLES = ("rows", "cv_scores", "dev_history", "loss_history", "dev_epochs", "dev_f1_history")
_MAX_PARAM = 500  # MLflow keeps 6,000 characters a value; a long list says little in a table


@dataclass(frozen=True)
class Tracking:
    """Where a run is tracked and what it keeps. Built once; checked when built.

    Parameters
    ----------
    uri : str, optional
        The tracking URI: a folder (``./mlruns``), ``sqlite:///runs.db``, or a tracking
        server (``http://127.0.0.1:5000``). Default: MLflow's (``MLFLOW_TRACKING_URI``).
    experiment : str, optional
        The experiment's name. Default: ``MLFLOW_EXPERIMENT_NAME``, else ``"bertprobe"``.
    run_name : str, optional
        The run's name (default: MLflow's, or the model folder's name).
    register : str, optional
        Register the model logged as a new version of this registered model.
    alias : str, optional
        With ``register``: point this alias (``"champion"``) at the new version.
    log_model : bool
        Log the model (the bertprobe flavour, with its pyfunc face).
    report : bool
        Write the report for the test set and log it (HTML and plots).
    tags : mapping
        More tags for the run.

    Examples
    --------
    >>> Tracking(uri="sqlite:///runs.db", register="sentiment", alias="champion").alias
    'champion'
    """

    uri: str | None = None
    experiment: str | None = None
    run_name: str | None = None
    register: str | None = None
    alias: str | None = None
    log_model: bool = True
    report: bool = True
    tags: Mapping[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.alias is not None and self.register is None:
            raise BadInputError(
                f"alias={self.alias!r} names a version of a registered model; add register=NAME",
                param=("alias", "register"),
            )
        if self.register is not None and not self.log_model:
            raise BadInputError(
                "register= makes the model logged a version: leave log_model on",
                param="register",
            )


class TrackingUnreachable(BadInputError):
    """The tracking server did not answer before the work began."""


class MlflowTracker(TrainingCallback):
    """One MLflow run, as a context manager; a training callback that fills it.

    Entering checks the tracking URI (one line if it does not answer) and starts the run
    (nested, under a run already active); leaving ends it, FAILED on an exception. Any MLflow
    call that fails once the run has begun prints one warning and turns the tracker off: the
    work it records goes on.
    """

    def __init__(self, tracking: Tracking = Tracking(), *, kind: str = "train") -> None:
        self.tracking, self.kind = tracking, kind
        self.run_id: str | None = None
        self.broken: str | None = None
        self.model_info: Any = None
        self.registered_version: str | None = None
        self._previous_uri: str | None = None
        self._http: contextlib.ExitStack | None = None
        #: seconds spent tracking (MLflow's calls, the report written for it): its own cost
        self.seconds = 0.0

    # --- the run ----------------------------------------------------------------------------

    def __enter__(self) -> MlflowTracker:
        start = time.perf_counter()
        try:
            return self._start()
        finally:
            self.seconds += time.perf_counter() - start

    def _start(self) -> MlflowTracker:
        self._http = contextlib.ExitStack()
        self._http.enter_context(mlflow_defaults())
        self._previous_uri = mlflow.get_tracking_uri()
        if self.tracking.uri is not None:
            mlflow.set_tracking_uri(self.tracking.uri)
        uri = mlflow.get_tracking_uri()
        try:
            # by id, not mlflow.set_experiment: that would stay set in the process after
            name = self.tracking.experiment or _env_experiment() or DEFAULT_EXPERIMENT
            client = MlflowClient()
            found = client.get_experiment_by_name(name)
            experiment = found.experiment_id if found else client.create_experiment(name)
            active = mlflow.active_run()
            run = mlflow.start_run(
                experiment_id=experiment,
                run_name=self.tracking.run_name,
                nested=active is not None,
            )
        except Exception as exc:  # noqa: BLE001 - any failure to reach it: one line, exit 2
            self._restore()
            raise TrackingUnreachable(
                f"tracking URI {uri}: {first_line(exc)}; start the tracking server, or give "
                "another --track",
                param="track",
            ) from None
        self.run_id = run.info.run_id
        self._safely(
            "tags",
            lambda: mlflow.set_tags(
                {"bertprobe.version": __version__, "bertprobe.kind": self.kind,
                 **self.tracking.tags}
            ),
        )  # fmt: skip
        return self

    def __exit__(self, kind: Any, exc: Any, tb: Any) -> None:
        status = "FINISHED" if exc is None else "KILLED" if kind is KeyboardInterrupt else "FAILED"
        if self.broken is None:
            self._safely("the run's end", lambda: mlflow.end_run(status=status))
        else:  # the server is gone: end_run still takes the run off this process's stack
            with contextlib.suppress(Exception):
                mlflow.end_run(status="FAILED")
        self._restore()

    def _restore(self) -> None:
        if self._previous_uri is not None:
            mlflow.set_tracking_uri(self._previous_uri)
        if self._http is not None:
            self._http.close()

    def _safely(self, what: str, call: Callable[[], Any]) -> Any:
        """Make an MLflow call; the first failure is one warning, and nothing more is tried."""
        if self.broken is not None:
            return None
        start = time.perf_counter()
        try:
            return call()
        except Exception as exc:  # noqa: BLE001 - tracking never stops the work it records
            self.broken = f"{what}: {first_line(exc)}"
            print(
                f"warning: tracking stopped ({self.broken}); the work goes on and its results "
                "are kept, but this MLflow run is incomplete",
                file=sys.stderr,
            )
            return None
        finally:
            self.seconds += time.perf_counter() - start

    # --- training callbacks -------------------------------------------------------------------

    def on_stage_end(self, stage: str, run: Any, seconds: float) -> None:
        self._safely("a stage's time", lambda: mlflow.log_metric(f"seconds/{stage}", seconds))

    def on_tuning_log(
        self, tuning: str, step: int, epoch: float, logs: Mapping[str, float]
    ) -> None:
        figures = {f"{tuning}/{key}": value for key, value in logs.items() if np.isfinite(value)}
        figures[f"{tuning}/epoch"] = epoch
        self._safely("a tuning's figures", lambda: mlflow.log_metrics(figures, step=step))

    def on_train_end(self, result: Any) -> None:
        self.log_training(result)

    # --- what each job records ---------------------------------------------------------------

    def log_training(self, result: TrainResult) -> None:
        """The card's options, figures and tags, the tables, the report and the model."""
        with _saved_somewhere(result) as model:
            card = model.card
            self._safely("parameters", lambda: mlflow.log_params(card_params(card)))
            self._safely("metrics", lambda: mlflow.log_metrics(card_metrics(card)))
            self._safely("tags", lambda: mlflow.set_tags(card_tags(card)))
            self._log_cv(card.get("probe", {}))
            if "sweep" in card:
                self._log_sweep_rows(card["sweep"])
            if result.comparison is not None:
                self.log_comparison(result.comparison, nested=True)
            if self.tracking.report and result.test_data is not None:
                self._log_report(model, result.test_data)
            if self.tracking.log_model:
                self._log_model(model)

    def log_sweep(self, result: SweepResult) -> None:
        """A sweep: its settings, each candidate's score and the table."""
        found = result.to_dict()
        settings = {k: found[k] for k in ("encoder", "n_train", "cv", "metric", "choice")}
        self._safely("parameters", lambda: mlflow.log_params(settings))
        self._log_sweep_rows(found)

    def log_comparison(self, found: Comparison, *, nested: bool = False) -> None:
        """A comparison: the recommendation here, and a nested run for each encoder."""
        summary = found.summary()
        settings = {
            "compare.encoders": ",".join(r.encoder for r in found.rows),
            "compare.recommended": found.recommended,
            "compare.cv": found.cv,
            "compare.metric": found.metric,
        }

        def log() -> None:
            mlflow.log_params(settings)
            mlflow.log_dict(summary, "compare.json")

        self._safely("the comparison", log)
        for row in found.rows:
            self._safely("an encoder's run", partial(_log_encoder_row, row, found))

    def _log_cv(self, probe: Mapping[str, Any]) -> None:
        grid, scores = probe.get("c_grid"), probe.get("cv_scores")
        if not grid or not scores:
            return
        means = np.asarray(scores, dtype=float).mean(axis=0)
        if len(means) != len(grid):  # a layout this table does not know: keep the card's
            return
        name = f"cv_{probe.get('scoring', 'accuracy')}_by_C"
        table = {"C": list(map(float, grid)), name: means.tolist()}

        def log() -> None:
            for step, mean in enumerate(means):
                mlflow.log_metric(name, float(mean), step=step)
            mlflow.log_table(table, "tables/cv_by_C.json")

        self._safely("the CV table", log)

    def _log_sweep_rows(self, sweep: Mapping[str, Any]) -> None:
        rows = sweep.get("rows") or []
        scored = {
            f"sweep/{row['name']}": row["cv_accuracy"]
            for row in rows
            if row.get("cv_accuracy") is not None
        }
        columns = ("name", "pooling", "dim", "screen_score", "cv_accuracy", "cv_std", "C")
        table = {c: [row.get(c) for row in rows] for c in columns}

        def log() -> None:
            if scored:
                mlflow.log_metrics(scored)
            mlflow.log_table(table, "tables/sweep.json")

        self._safely("the sweep", log)

    def _log_report(self, model: Any, test: Any) -> None:
        from bertprobe.report import write_model_report

        with tempfile.TemporaryDirectory(prefix="bertprobe-report-") as scratch:
            start = time.perf_counter()
            try:
                write_model_report(model, test, scratch, explain=False)
            except Exception as exc:  # noqa: BLE001 - the report is a record, not the result
                print(f"warning: no report for tracking ({first_line(exc)})", file=sys.stderr)
                return
            finally:
                self.seconds += time.perf_counter() - start
            self._safely("the report", lambda: mlflow.log_artifacts(scratch, "report"))

    def _log_model(self, model: Any) -> None:
        from bertprobe.mlflow.flavor import log_model

        register = self.tracking.register
        self.model_info = self._safely(
            "the model",
            lambda: log_model(model, name="model", registered_model_name=register),
        )
        version = getattr(self.model_info, "registered_model_version", None)
        if register is None or version is None:
            return
        self.registered_version = str(version)
        alias = self.tracking.alias
        if alias is not None:
            self._safely(
                "the alias",
                lambda: MlflowClient().set_registered_model_alias(register, alias, str(version)),
            )


def card_params(card: Mapping[str, Any]) -> dict[str, str]:
    """The card's options as MLflow parameters, ``section.key`` (lists as text, long ones cut)."""
    params: dict[str, str] = {}

    def walk(prefix: str, value: Any) -> None:
        if isinstance(value, Mapping):
            for key, inner in value.items():
                if key not in _TABLES:
                    walk(f"{prefix}.{key}" if prefix else str(key), inner)
            return
        text = str(value)
        params[prefix] = text if len(text) <= _MAX_PARAM else text[: _MAX_PARAM - 3] + "..."

    for section, value in card.items():
        if section not in _NOT_PARAMS:
            walk(section, value)
    return params


def card_metrics(card: Mapping[str, Any]) -> dict[str, float]:
    """The card's figures as MLflow metrics: ``metrics`` (a per-label table as
    ``test_per_label/LABEL/f1``) and each tuning's dev score and seconds."""
    found: dict[str, float] = {}

    def walk(prefix: str, value: Any) -> None:
        if isinstance(value, Mapping):
            for key, inner in value.items():
                walk(f"{prefix}/{key}", inner)
        elif isinstance(value, int | float) and not isinstance(value, bool) and np.isfinite(value):
            found[prefix] = float(value)

    for key, value in card.get("metrics", {}).items():
        walk(key, value)
    for tuning in ("contrastive", "distill", "finetune"):
        record = card.get(tuning) or {}
        for key in ("dev_accuracy", "dev_pair_accuracy", "dev_f1_micro", "seconds", "epochs_run"):
            if isinstance(record.get(key), int | float):
                found[f"{tuning}/{key}"] = float(record[key])
    return found


def card_tags(card: Mapping[str, Any]) -> dict[str, str]:
    """What names the model and its encoder: the id, the kind, the encoder's fingerprint and
    revision (the base's, for a tuned encoder), the versions it was made with."""
    encoder = card.get("encoder", {})
    base = encoder.get("base") or {}
    tags = {
        "bertprobe.model_id": card.get("id"),
        "bertprobe.model_kind": card.get("kind"),
        "encoder": encoder.get("name"),
        "encoder.fingerprint": encoder.get("fingerprint"),
        "encoder.revision": encoder.get("revision") or base.get("revision"),
        "encoder.base_fingerprint": base.get("fingerprint"),
    }
    tags.update({f"version.{k}": v for k, v in card.get("versions", {}).items()})
    return {k: str(v) for k, v in tags.items() if v is not None}


def _log_encoder_row(row: Any, found: Comparison) -> None:
    """One encoder of a comparison as a nested run: its options, scores and costs."""
    parent = mlflow.active_run()
    experiment = parent.info.experiment_id if parent is not None else None
    with mlflow.start_run(run_name=row.encoder, nested=True, experiment_id=experiment):
        mlflow.log_params({"encoder": row.encoder, "best": row.best.name, "C": row.best.C})
        figures = {
            "cv_score": row.score,
            "cv_std": row.best.cv_std,
            "spread": row.spread,
            "seconds_per_1000": row.seconds_per_1000,
            "size_mb": row.size_mb,
            "parameters": row.parameters,
            "hidden_size": row.hidden_size,
        }
        mlflow.log_metrics({k: float(v) for k, v in figures.items() if v is not None})
        mlflow.set_tags(
            {
                "encoder.fingerprint": row.fingerprint,
                "recommended": str(row.encoder == found.recommended).lower(),
            }
        )


@contextlib.contextmanager
def _saved_somewhere(result: TrainResult) -> Iterator[Any]:
    """The trained model as saved: its folder, or (trained without ``out``) a scratch one."""
    if result.model.folder is not None and result.model.card.get("files"):
        yield result.model
        return
    from bertprobe.model.classifier import Classifier

    with tempfile.TemporaryDirectory(prefix="bertprobe-tracked-") as scratch:
        folder = result.model.save(Path(scratch) / "model")
        yield Classifier.load(folder)


def _env_experiment() -> str | None:
    from mlflow.environment_variables import MLFLOW_EXPERIMENT_NAME

    return MLFLOW_EXPERIMENT_NAME.get()
