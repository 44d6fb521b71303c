"""Where a model is loaded from: a model folder, or a model in MLflow.

Every command and call that takes a model folder also takes an MLflow model URI
(``models:/NAME@ALIAS``, ``models:/NAME/VERSION``, ``runs:/RUN_ID/model``) of a model logged
with the bertprobe flavour (:mod:`bertprobe.mlflow`). The URI names a registry or run on the
tracking server MLflow's own settings name (``MLFLOW_TRACKING_URI``, ``MLFLOW_REGISTRY_URI``
and the credentials' variables); the model is downloaded once per version into the cache
folder (``BERTPROBE_CACHE_DIR``) and loaded from there with every check a folder gets (the
sealed card, the files' hashes, the encoder's fingerprint).

An alias is read when the model is loaded: a service started from ``models:/NAME@champion``
reloads (``POST /admin/reload``, SIGHUP) whatever version the alias names by then.

Example:
    >>> is_model_uri("models:/sentiment@champion"), is_model_uri("models/sst2")
    (True, False)
"""

from __future__ import annotations

import hashlib
import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from bertprobe.core.errors import BadInputError, ModelFolderError
from bertprobe.core.extras import needs_extra, require_extra
from bertprobe.encoders.cache import default_cache_dir

#: The URI schemes of an MLflow model this module resolves.
MODEL_URI_SCHEMES = ("models:/", "runs:/")
#: The flavour's name in an MLmodel file, and its key naming the model folder inside.
FLAVOR = "bertprobe"
FOLDER_KEY = "data"
# Written into a downloaded version's folder once it is complete.
_COMPLETE = ".bertprobe-complete"

# MLflow's settings a command changes unless the user set them: MLflow retries an unanswered
# HTTP request 7 times with a growing backoff (minutes in all), where a command should say in
# seconds that the server is not there; a download's progress bar a file, and the run's URL
# on standard output, would flood a command's output (and break --json). MLflow 3.x refuses
# a folder as a tracking store unless told (it recommends sqlite): a user who names a folder
# has told it.
MLFLOW_DEFAULTS = {
    "MLFLOW_ALLOW_FILE_STORE": "true",
    "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "1",
    "MLFLOW_HTTP_REQUEST_TIMEOUT": "15",
    "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR": "false",
    "MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT": "true",
}


def is_model_uri(source: str | Path) -> bool:
    """Whether ``source`` names a model in MLflow rather than a folder."""
    return str(source).startswith(MODEL_URI_SCHEMES)


@contextmanager
def mlflow_defaults() -> Iterator[None]:
    """Inside the block, MLflow's HTTP requests give up within seconds and it prints nothing
    on standard output (:data:`MLFLOW_DEFAULTS`, where the user did not set them)."""
    added = {k: v for k, v in MLFLOW_DEFAULTS.items() if k not in os.environ}
    os.environ.update(added)
    try:
        yield
    finally:
        for key in added:
            os.environ.pop(key, None)


def local_folder(source: str | Path) -> Path:
    """The model folder ``source`` names: itself, or for an MLflow model URI the folder of the
    version it names now, downloaded into the cache (once a version)."""
    if not is_model_uri(source):
        return Path(source)
    uri = str(source)
    require_extra("mlflow")
    with needs_extra("mlflow"):
        import mlflow
        from mlflow.exceptions import MlflowException
    try:
        with mlflow_defaults():
            return _downloaded(uri)
    except MlflowException as exc:
        raise ModelFolderError(
            f"{uri}: {first_line(exc)} (the registry at {mlflow.get_registry_uri()}; "
            "MLFLOW_TRACKING_URI names it)"
        ) from None
    except OSError as exc:  # the server did not answer (requests' errors are OSErrors)
        raise ModelFolderError(
            f"{uri}: the MLflow server at {mlflow.get_registry_uri()} cannot be reached "
            f"({first_line(exc)}); start it, or set MLFLOW_TRACKING_URI"
        ) from None


def _downloaded(uri: str) -> Path:
    """The bertprobe folder inside the downloaded MLflow model ``uri`` names now."""
    import mlflow
    from mlflow.models import Model

    pinned = _pinned(uri)  # an alias read now: models:/NAME/VERSION
    place = _cache_place(pinned)
    if not (place / _COMPLETE).is_file():
        place.parent.mkdir(parents=True, exist_ok=True)
        scratch = Path(tempfile.mkdtemp(dir=place.parent, prefix=".download-"))
        try:
            mlflow.artifacts.download_artifacts(artifact_uri=pinned, dst_path=str(scratch))
            (scratch / _COMPLETE).write_text(pinned, encoding="utf-8")
            shutil.rmtree(place, ignore_errors=True)
            scratch.rename(place)  # whole or not at all: another process may read it
        finally:
            shutil.rmtree(scratch, ignore_errors=True)
    try:
        flavours = Model.load(str(place)).flavors
    except (OSError, ValueError) as exc:
        raise ModelFolderError(f"{uri} holds no MLmodel file ({first_line(exc)})") from None
    if FLAVOR not in flavours:
        raise ModelFolderError(
            f"{uri} is not a bertprobe model (its flavours: {', '.join(sorted(flavours))}); "
            "log it with bertprobe.mlflow.log_model"
        )
    return place / flavours[FLAVOR][FOLDER_KEY]


def _pinned(uri: str) -> str:
    """``uri`` with a registered model's alias replaced by the version it names now."""
    if not uri.startswith("models:/") or "@" not in uri:
        return uri
    from mlflow import MlflowClient

    name, alias = uri[len("models:/") :].split("@", 1)
    version = MlflowClient().get_model_version_by_alias(name, alias.strip("/"))
    return f"models:/{name}/{version.version}"


def _cache_place(pinned: str) -> Path:
    """Where a version of a model is kept: by its registry and its URI."""
    import mlflow

    if not pinned.startswith(MODEL_URI_SCHEMES):
        raise BadInputError(f"{pinned}: give models:/NAME@ALIAS, models:/NAME/VERSION or runs:/")
    key = f"{mlflow.get_registry_uri()}|{pinned}"
    digest = hashlib.sha256(key.encode()).hexdigest()[:24]
    return default_cache_dir() / "mlflow" / digest


def first_line(exc: BaseException) -> str:
    """An exception's first line, for a one-line message (a connection refused, as such)."""
    if any(sign in str(exc) for sign in ("Max retries exceeded", "Connection refused")):
        return "nothing answers there (connection refused)"
    text = str(exc).strip().splitlines()
    return (text[0] if text else type(exc).__name__)[:200]
