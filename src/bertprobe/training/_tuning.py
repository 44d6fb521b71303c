"""The torch side of fine-tuning (imported only when fine-tuning runs, so that importing
bertprobe stays fast): the model the Trainer trains and two Trainer callbacks."""

from __future__ import annotations

import signal
import sys
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import torch
from transformers import TrainerCallback

from bertprobe.encoders.pooling import pool_tokens
from bertprobe.training.callbacks import TrainingCallback, forward_evaluate, forward_log


class PooledClassifier(torch.nn.Module):
    """An encoder body, a pooling of its last hidden state, dropout and a linear head:
    ``loss="cross-entropy"``, a softmax over ``n_classes``; ``"binary-cross-entropy"``, one
    sigmoid output per label (the labels are then 0/1 rows, one column per label).

    Soft targets (distillation: rows of probabilities, floats) are read at ``temperature``:
    the loss compares them with the logits divided by it, times its square (Hinton et al.,
    2015: the gradients keep their scale whatever the temperature)."""

    def __init__(
        self,
        body: Any,
        pooling: str,
        n_classes: int,
        loss: str = "cross-entropy",
        temperature: float = 1.0,
    ) -> None:
        super().__init__()
        if loss not in ("cross-entropy", "binary-cross-entropy"):
            raise ValueError(f"loss={loss!r}: cross-entropy or binary-cross-entropy")
        self.body = body
        self.pooling = pooling
        self.loss = loss
        self.temperature = temperature
        hidden = int(getattr(body.config, "hidden_size", 0) or body.config.dim)
        self.dropout = torch.nn.Dropout(0.1)
        self.head = torch.nn.Linear(hidden, n_classes)

    def forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor,
        labels: torch.Tensor | None = None,
        text: torch.Tensor | None = None,
    ) -> dict[str, torch.Tensor]:
        # ``text``: which text each row (a window, when fine-tuning on windows) is of. Not read
        # here: the Trainer passes it as a second label, so that the dev scores can pool a
        # text's windows whatever order its length-grouped sampler evaluates them in.
        states = self.body(input_ids=input_ids, attention_mask=attention_mask)
        pooled = pool_tokens(states.last_hidden_state, attention_mask, self.pooling)
        logits = self.head(self.dropout(pooled))
        if labels is None:
            return {"logits": logits}
        # Soft targets (floats, one row a text) at the temperature; labels at 1.
        t = self.temperature if labels.is_floating_point() and labels.dim() == 2 else 1.0
        if self.loss == "binary-cross-entropy":  # float32 whatever the autocast: 0/1 targets
            loss = torch.nn.functional.binary_cross_entropy_with_logits(
                logits.float() / t, labels.float()
            )
        else:  # class indices, or (distillation) rows of probabilities
            loss = torch.nn.functional.cross_entropy(logits.float() / t, labels)
        return {"loss": loss * t * t, "logits": logits}


# An evaluation beats the best one only by at least this much of the dev score (early stopping
# and the progress lines): the tie-breaking loss term moves by less with a stalled model.
MIN_IMPROVEMENT = 1e-4


class StopOnInterrupt(TrainerCallback):
    """Ctrl-C asks the Trainer to save a checkpoint after the current step, then stop.

    A second Ctrl-C stops at once (the usual KeyboardInterrupt).
    """

    def __init__(self) -> None:
        self.requested = False

    @contextmanager
    def catching_ctrl_c(self) -> Iterator[None]:
        def request(signum: int, frame: Any) -> None:
            if self.requested:
                raise KeyboardInterrupt
            self.requested = True
            print("\nstopping after this step and saving a checkpoint ...", file=sys.stderr)

        previous = signal.signal(signal.SIGINT, request)
        try:
            yield
        finally:
            signal.signal(signal.SIGINT, previous)

    def on_step_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> Any:
        if self.requested:
            control.should_save = True
            control.should_training_stop = True
        return control

    def on_epoch_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> Any:
        if self.requested:  # a part of an epoch: neither scored as an epoch nor saved again
            control.should_evaluate = False
            control.should_save = False
        return control


class ToCallbacks(TrainerCallback):
    """Hands what the Trainer logs and scores to bertprobe's callbacks
    (:mod:`bertprobe.training.callbacks`), named by the tuning; stops training when one asks."""

    def __init__(self, tuning: str, callbacks: Sequence[TrainingCallback]) -> None:
        self.tuning, self.callbacks = tuning, tuple(callbacks)

    def on_log(self, args: Any, state: Any, control: Any, logs: Any = None, **kwargs: Any) -> None:
        forward_log(self.callbacks, self.tuning, state.global_step, state.epoch or 0.0, logs or {})

    def on_evaluate(
        self, args: Any, state: Any, control: Any, metrics: Any = None, **kwargs: Any
    ) -> Any:
        epoch = state.epoch or 0.0
        if forward_evaluate(self.callbacks, self.tuning, state.global_step, epoch, metrics or {}):
            control.should_training_stop = True
        return control


class EpochBars(TrainerCallback):
    """A progress bar per epoch (texts per second, the running loss), then the dev score, the
    best so far and, with ``patience``, how many evaluations in a row have not beaten it."""

    def __init__(self, batch_size: int, enabled: bool, patience: int | None = None) -> None:
        self.batch_size, self.enabled, self.bar = batch_size, enabled, None
        self.patience = patience
        self.best: tuple[float, int] | None = None  # (selection score, epoch)
        self.waited = 0

    def on_epoch_begin(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        from tqdm.auto import tqdm

        per_epoch = max(1, state.max_steps // max(1, int(args.num_train_epochs)))
        epoch = int(state.epoch or 0)
        done = state.global_step - epoch * per_epoch
        self.bar = tqdm(
            total=per_epoch * self.batch_size,
            initial=max(0, done) * self.batch_size,
            desc=f"fine-tuning, epoch {epoch + 1}/{int(args.num_train_epochs)}",
            unit="text",
            disable=None if self.enabled else True,
            leave=False,
        )

    def on_step_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        if self.bar is not None:
            self.bar.update(self.batch_size)

    def on_log(self, args: Any, state: Any, control: Any, logs: Any = None, **kwargs: Any) -> None:
        if self.bar is not None and logs and "loss" in logs:
            self.bar.set_postfix(loss=f"{logs['loss']:.3f}")

    def on_epoch_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None

    def on_evaluate(
        self, args: Any, state: Any, control: Any, metrics: Any = None, **kwargs: Any
    ) -> None:
        if not (metrics and "eval_accuracy" in metrics):
            return
        epoch = round(state.epoch or 0)
        selection = metrics.get("eval_selection", metrics["eval_accuracy"])
        if self.best is None or selection > self.best[0] + MIN_IMPROVEMENT:
            self.best, self.waited = (selection, epoch), 0
        else:
            self.waited += 1
        if not self.enabled:
            return
        accuracy = 100 * metrics["eval_accuracy"]
        if "eval_f1_micro" in metrics:  # label sets: the F1 picks the epoch
            f1 = 100 * metrics["eval_f1_micro"]
            score = f"dev micro F1 {f1:.2f}%, exact match {accuracy:.2f}%"
        else:
            score = f"dev accuracy {accuracy:.2f}%"
        if self.waited:
            score += f" (best: epoch {self.best[1]}"
            score += f"; {self.waited} of {self.patience} without better)" if self.patience else ")"
        print(f"epoch {epoch}: {score}", file=sys.stderr)


class PairedEncoder(torch.nn.Module):
    """An encoder body tuned on pairs of texts: each side pooled as embedding pools it, the
    pair's loss sentence-transformers' (``"cosent"``: CoSENTLoss, ``"cosine"``:
    CosineSimilarityLoss) on the two sides' vectors and the pair's target similarity.
    Returns the loss and, as ``logits``, each pair's cosine similarity (the dev scores')."""

    pair_loss: Any

    def __init__(self, body: Any, pooling: str, loss: str) -> None:
        super().__init__()
        from sentence_transformers.sentence_transformer.losses import (
            CoSENTLoss,
            CosineSimilarityLoss,
        )

        self.body = body
        self.pooling = pooling
        # The losses only keep their model to embed texts, which this module does itself
        # (compute_loss_from_embeddings); kept out of the module tree so that the body is not
        # registered twice.
        self.__dict__["pair_loss"] = (CoSENTLoss if loss == "cosent" else CosineSimilarityLoss)(
            body
        )

    def embed(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        states = self.body(input_ids=input_ids, attention_mask=attention_mask)
        return pool_tokens(states.last_hidden_state, attention_mask, self.pooling)

    def forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor,
        input_ids_b: torch.Tensor,
        attention_mask_b: torch.Tensor,
        labels: torch.Tensor | None = None,
    ) -> dict[str, torch.Tensor]:
        a = self.embed(input_ids, attention_mask)
        b = self.embed(input_ids_b, attention_mask_b)
        cosine = torch.cosine_similarity(a.float(), b.float())
        if labels is None:
            return {"logits": cosine}
        loss = self.pair_loss.compute_loss_from_embeddings([a.float(), b.float()], labels.float())
        return {"loss": loss, "logits": cosine}
