"""The bertprobe flavour of an MLflow model, with its ``python_function`` (pyfunc) face.

An MLflow model of this flavour is a folder holding ``MLmodel`` and the bertprobe model folder
(under ``bertprobe/``, copied as saved: its sealed card and hashes travel with it). Loaded as
a pyfunc, it takes a DataFrame with a ``text`` column (or a list of texts) and answers a
DataFrame of probabilities, a column a class, equal to
:meth:`~bertprobe.model.classifier.Classifier.predict_proba`'s; every check a model folder
gets runs when it loads.

Example:
    >>> import mlflow, pandas as pd
    >>> info = log_model(model, name="model")  # doctest: +SKIP
    >>> mlflow.pyfunc.load_model(info.model_uri).predict(pd.DataFrame({"text": ["fine"]}))
    ... # doctest: +SKIP
              0         1
    0  0.091742  0.908258
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import numpy as np

from bertprobe import __version__
from bertprobe.core.errors import BadInputError, ModelFolderError
from bertprobe.core.extras import needs_extra
from bertprobe.model.classifier import Classifier
from bertprobe.model.sources import FLAVOR, FOLDER_KEY, is_model_uri

with needs_extra("mlflow"):
    import mlflow
    from mlflow.models import Model, ModelSignature
    from mlflow.models.model import MLMODEL_FILE_NAME
    from mlflow.models.utils import _save_example
    from mlflow.types.schema import ColSpec, Schema

#: Where the bertprobe folder goes inside the MLflow model.
MODEL_SUBPATH = "bertprobe"
#: The input column the pyfunc reads.
TEXT_COLUMN = "text"
_EXAMPLE = ["a gorgeous, witty, seductive movie", "the plot is a mess and the jokes fall flat"]
# What the pyfunc needs installed where it is served (pinned to the versions here).
_REQUIREMENTS = ("torch", "transformers", "tokenizers", "scikit-learn", "skops", "pandas")


def signature_of(model: Classifier) -> Any:
    """The pyfunc's signature: one column of strings in (unnamed: a list of texts, or a
    DataFrame's ``text`` column), a probability a class out."""
    classes = [str(c) for c in model.probe.classes_]
    return ModelSignature(
        inputs=Schema([ColSpec("string")]),
        outputs=Schema([ColSpec("double", c) for c in classes]),
    )


def _saved(model: Classifier | str | Path) -> Classifier:
    """``model`` as a saved, checked model (a folder or URI is loaded)."""
    if not isinstance(model, Classifier):
        return Classifier.load(model)
    if model.folder is None or not model.card.get("files"):
        raise BadInputError(
            "log_model: the model is not saved; save it first (model.save(folder)) so its "
            "folder, sealed card and hashes are what MLflow keeps",
            param="model",
        )
    return model


def save_model(
    model: Classifier | str | Path,
    path: str | Path,
    *,
    mlflow_model: Any = None,
    signature: Any = None,
    input_example: Any = None,
    pip_requirements: list[str] | None = None,
    extra_pip_requirements: list[str] | None = None,
    metadata: dict[str, Any] | None = None,
) -> None:
    """Write ``model`` (a saved model, its folder or URI) as an MLflow model at ``path``: the
    folder copied under ``bertprobe/``, ``MLmodel`` with this flavour and the pyfunc's, the
    signature and an input example, and the requirements to serve it."""
    import pandas as pd
    import yaml
    from mlflow.utils.environment import (
        _CONDA_ENV_FILE_NAME,
        _PYTHON_ENV_FILE_NAME,
        _REQUIREMENTS_FILE_NAME,
        _process_pip_requirements,
        _PythonEnv,
    )

    saved = _saved(model)
    assert saved.folder is not None
    path = Path(path)
    if path.exists() and any(path.iterdir()):
        raise BadInputError(f"{path} exists and is not empty; give a new folder", param="path")
    path.mkdir(parents=True, exist_ok=True)
    shutil.copytree(saved.folder, path / MODEL_SUBPATH)
    mlflow_model = mlflow_model if mlflow_model is not None else Model()
    example = input_example if input_example is not None else pd.DataFrame({TEXT_COLUMN: _EXAMPLE})
    _save_example(mlflow_model, example, str(path))
    mlflow_model.signature = signature if signature is not None else signature_of(saved)
    if metadata is not None:
        mlflow_model.metadata = metadata
    mlflow.pyfunc.add_to_model(
        mlflow_model,
        loader_module="bertprobe.mlflow.flavor",
        data=MODEL_SUBPATH,
        conda_env=_CONDA_ENV_FILE_NAME,
        python_env=_PYTHON_ENV_FILE_NAME,
    )
    mlflow_model.add_flavor(
        FLAVOR,
        **{FOLDER_KEY: MODEL_SUBPATH},
        bertprobe_version=__version__,
        model_id=saved.card.get("id"),
        kind=saved.card.get("kind"),
        encoder=saved.card.get("encoder", {}).get("name"),
    )
    mlflow_model.save(str(path / MLMODEL_FILE_NAME))
    defaults = [f"bertprobe=={__version__}", *map(_pinned, _REQUIREMENTS)]
    conda_env, requirements, _ = _process_pip_requirements(
        defaults if pip_requirements is None else None, pip_requirements, extra_pip_requirements
    )
    with open(path / _CONDA_ENV_FILE_NAME, "w", encoding="utf-8") as f:
        yaml.safe_dump(conda_env, stream=f, default_flow_style=False)
    (path / _REQUIREMENTS_FILE_NAME).write_text("\n".join(requirements), encoding="utf-8")
    _PythonEnv.current().to_yaml(str(path / _PYTHON_ENV_FILE_NAME))


def log_model(
    model: Classifier | str | Path,
    name: str = "model",
    *,
    registered_model_name: str | None = None,
    signature: Any = None,
    input_example: Any = None,
    pip_requirements: list[str] | None = None,
    extra_pip_requirements: list[str] | None = None,
    metadata: dict[str, Any] | None = None,
    **kwargs: Any,
) -> Any:
    """Log ``model`` (saved, or its folder) to the active MLflow run (one is started if none
    is) as ``name``; with ``registered_model_name``, also a new version of that registered
    model. Returns MLflow's ``ModelInfo`` (``model_uri``, ``registered_model_version``).

    The rest of the keywords are :meth:`mlflow.models.Model.log`'s."""
    import bertprobe.mlflow.flavor as flavor

    return Model.log(
        artifact_path=None,
        name=name,
        flavor=flavor,
        registered_model_name=registered_model_name,
        model=_saved(model),
        signature=signature,
        input_example=input_example,
        pip_requirements=pip_requirements,
        extra_pip_requirements=extra_pip_requirements,
        metadata=metadata,
        **kwargs,
    )


def load_model(model_uri: str | Path) -> Classifier:
    """The :class:`~bertprobe.model.classifier.Classifier` an MLflow model of this flavour
    holds: ``models:/NAME@ALIAS``, ``models:/NAME/VERSION``, ``runs:/RUN_ID/model``, or a
    local MLflow model folder; loaded with a model folder's checks."""
    if is_model_uri(model_uri):
        return Classifier.load(model_uri)
    local = Path(model_uri)
    if not (local / MLMODEL_FILE_NAME).is_file():
        local = Path(mlflow.artifacts.download_artifacts(artifact_uri=str(model_uri)))
    flavours = Model.load(str(local)).flavors
    if FLAVOR not in flavours:
        raise ModelFolderError(
            f"{model_uri} is not a bertprobe model (its flavours: {', '.join(sorted(flavours))})"
        )
    return Classifier.load(local / flavours[FLAVOR][FOLDER_KEY])


class PyfuncModel:
    """What ``mlflow.pyfunc.load_model`` answers with: texts in, probabilities out."""

    def __init__(self, model: Classifier) -> None:
        self.model = model

    def get_raw_model(self) -> Classifier:
        """The bertprobe model itself (``PyFuncModel.get_raw_model()``)."""
        return self.model

    def predict(self, model_input: Any, params: dict[str, Any] | None = None) -> Any:
        """A DataFrame of probabilities (a column a class, named as ``str(label)``)."""
        import pandas as pd

        texts = texts_of(model_input)
        columns = [str(c) for c in self.model.probe.classes_]
        proba = self.model.predict_proba(texts) if texts else np.empty((0, len(columns)))
        return pd.DataFrame(proba, columns=columns, dtype="float64")


def texts_of(model_input: Any) -> list[str]:
    """The texts of a pyfunc input: a DataFrame's ``text`` column (or its only column), a
    Series, a list or an array of strings."""
    import pandas as pd

    if isinstance(model_input, pd.DataFrame):
        if TEXT_COLUMN in model_input.columns:
            column = model_input[TEXT_COLUMN]
        elif len(model_input.columns) == 1:
            column = model_input.iloc[:, 0]
        else:
            raise BadInputError(
                f"the input has columns {list(model_input.columns)}; give the texts in a "
                f"column named {TEXT_COLUMN!r}"
            )
        values = column.tolist()
    elif isinstance(model_input, str):
        values = [model_input]
    else:
        values = list(getattr(model_input, "tolist", lambda: model_input)())
    for i, value in enumerate(values):
        if not isinstance(value, str):
            raise BadInputError(f"input row {i}: {type(value).__name__}; give the text as a string")
    return values


def _pinned(package: str) -> str:
    """``package==VERSION`` as installed here, without a local label (torch's ``+cpu``: not a
    version an index serves)."""
    from importlib.metadata import version

    return f"{package}=={version(package).split('+')[0]}"


def _load_pyfunc(data_path: str, model_config: Any = None) -> PyfuncModel:
    """MLflow's entry point for ``pyfunc.load_model``: the folder at ``data_path``, checked."""
    return PyfuncModel(Classifier.load(data_path))
