"""Callbacks: code of your own that training calls as it goes.

A :class:`TrainingCallback` is told when each stage of the pipeline starts and ends
(:mod:`bertprobe.training.pipeline`), what each tuning of the encoder logs as it trains (the
loss and learning rate every few steps, the dev scores after each evaluation) and, once the
model folder is saved, the result. Override the methods you need; the others do nothing.

A callback can stop a tuning early: :meth:`TrainingCallback.on_tuning_evaluate` returning True
ends it after that evaluation (the best checkpoint so far is the one kept, as with
``patience``). Tracking (:mod:`bertprobe.mlflow`) is one such callback.

Pass them as ``train(..., callbacks=[...])`` (or ``Classifier.fit(..., callbacks=...)``).

Example:
    >>> class Losses(TrainingCallback):
    ...     def __init__(self):
    ...         self.seen = []
    ...     def on_tuning_log(self, tuning, step, epoch, logs):
    ...         if "loss" in logs:
    ...             self.seen.append((tuning, step, logs["loss"]))
    >>> losses = Losses()
    >>> forward_log((losses,), "finetune", 10, 0.5, {"loss": 0.69, "learning_rate": 8e-05})
    >>> losses.seen
    [('finetune', 10, 0.69)]
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any


class TrainingCallback:
    """Told what training does; every method does nothing unless overridden.

    ``tuning`` names the tuning of the encoder (its card key: ``"contrastive"``,
    ``"distill"``, ``"finetune"``); ``step`` is the optimizer step, ``epoch`` the epochs done
    (a float between evaluations); ``logs`` are the Trainer's figures, named as it names them
    (``loss``, ``learning_rate``, ``grad_norm``; after an evaluation ``eval_accuracy``,
    ``eval_loss``, ``eval_f1_micro``, ...).
    """

    def on_stage_start(self, stage: str, run: Any) -> None:
        """A pipeline stage (its function's name) is about to run on ``run``."""

    def on_stage_end(self, stage: str, run: Any, seconds: float) -> None:
        """A pipeline stage ended after ``seconds``."""

    def on_tuning_log(
        self, tuning: str, step: int, epoch: float, logs: Mapping[str, float]
    ) -> None:
        """A tuning logged figures (every few steps, and after each evaluation)."""

    def on_tuning_evaluate(
        self, tuning: str, step: int, epoch: float, metrics: Mapping[str, float]
    ) -> bool | None:
        """A tuning scored its dev rows; return True to stop it here (the best checkpoint
        so far is kept)."""
        return None

    def on_train_end(self, result: Any) -> None:
        """Training ended: ``result`` is the :class:`~bertprobe.model.train.TrainResult`, its
        model folder saved (when ``out`` was given)."""


def numeric(logs: Mapping[str, Any]) -> dict[str, float]:
    """The figures of a Trainer log that are numbers (it also logs strings and lists)."""
    return {
        key: float(value)
        for key, value in logs.items()
        if isinstance(value, int | float) and not isinstance(value, bool)
    }


def forward_log(
    callbacks: Sequence[TrainingCallback],
    tuning: str,
    step: int,
    epoch: float,
    logs: Mapping[str, Any],
) -> None:
    """Hand a Trainer log to each callback (its numeric figures)."""
    figures = numeric(logs)
    if figures:
        for callback in callbacks:
            callback.on_tuning_log(tuning, step, epoch, figures)


def forward_evaluate(
    callbacks: Sequence[TrainingCallback],
    tuning: str,
    step: int,
    epoch: float,
    metrics: Mapping[str, Any],
) -> bool:
    """Hand dev scores to each callback; whether any asked to stop (each is asked)."""
    figures = numeric(metrics)
    asked = [bool(cb.on_tuning_evaluate(tuning, step, epoch, figures)) for cb in callbacks]
    return any(asked)
