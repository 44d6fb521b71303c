"""bertprobe and MLflow: tracked runs, the bertprobe flavour, models from the registry.

* Tracking (:mod:`bertprobe.mlflow.tracking`): ``train(..., callbacks=[MlflowTracker(...)])``
  or ``bertprobe train --track URI`` records a run: the card's options as parameters, its
  figures, each tuning's losses and dev scores as metrics, the report and the model as
  artifacts.
* The flavour (:mod:`bertprobe.mlflow.flavor`): :func:`log_model` / :func:`save_model` /
  :func:`load_model`; ``mlflow.pyfunc.load_model(uri).predict(df)`` answers the probabilities
  :meth:`~bertprobe.model.classifier.Classifier.predict_proba` gives, and
  ``mlflow models serve`` serves them.
* The registry: a model logged with ``registered_model_name`` (``train --register NAME
  --alias champion``) loads, serves and reloads as ``models:/NAME@champion``
  (:mod:`bertprobe.model.sources`).

Needs the ``mlflow`` extra (``pip install 'bertprobe[mlflow]'``).
"""

from __future__ import annotations

from bertprobe.mlflow.flavor import load_model, log_model, save_model
from bertprobe.mlflow.tracking import MlflowTracker, Tracking, TrackingUnreachable

__all__ = [
    "MlflowTracker",
    "Tracking",
    "TrackingUnreachable",
    "load_model",
    "log_model",
    "save_model",
]
