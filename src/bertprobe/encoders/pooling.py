"""A text's token vectors as one: the poolings, in torch and in numpy, with the same arithmetic.

The torch backend pools in torch, the ONNX backends in numpy; the ONNX export of a classifier
(:mod:`bertprobe.export`) and the gradients of :mod:`bertprobe.model.gradients` trace
:func:`pool_tokens` itself, so every way of running a model pools as training did.

Example:
    >>> import numpy as np
    >>> hidden = np.array([[[1.0, 2.0], [3.0, 4.0], [9.0, 9.0]]], dtype=np.float32)
    >>> mask = np.array([[1, 1, 0]])  # the third token is padding
    >>> pool_tokens_numpy(hidden, mask, "mean"), pool_tokens_numpy(hidden, mask, "max")
    (array([[2., 3.]], dtype=float32), array([[3., 4.]], dtype=float32))
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

import numpy as np

from bertprobe.core.errors import BadInputError

Pooling = Literal["cls", "mean", "max"]
POOLINGS: tuple[Pooling, ...] = ("cls", "mean", "max")


@dataclass(frozen=True)
class View:
    """One vector per text: a hidden-state layer (absolute index, 0 = embeddings) and a pooling."""

    layer: int
    pooling: str


def check_pooling(value: str) -> Pooling:
    """``value`` as a pooling, or a one-line error naming the choices."""
    if value not in POOLINGS:
        raise _unknown_pooling(value)
    return value


def pool_tokens(hidden: Any, mask: Any, pooling: str) -> Any:
    """One vector per sequence of ``hidden`` (batch, tokens, dim; a torch tensor) by
    ``pooling``: the first token's, or the mean or maximum over the tokens ``mask`` keeps."""
    import torch

    if pooling == "cls":
        return hidden[:, 0]
    keep = mask.unsqueeze(-1).to(hidden.dtype)
    if pooling == "mean":
        return (hidden * keep).sum(1) / keep.sum(1).clamp(min=1.0)
    if pooling == "max":
        return hidden.masked_fill(keep == 0, torch.finfo(hidden.dtype).min).amax(1)
    raise _unknown_pooling(pooling)


def pool_tokens_numpy(hidden: np.ndarray, mask: np.ndarray, pooling: str) -> np.ndarray:
    """:func:`pool_tokens` on numpy arrays (the ONNX backends' output), the same arithmetic."""
    if pooling == "cls":
        return np.ascontiguousarray(hidden[:, 0])
    keep = mask[..., None].astype(hidden.dtype)
    if pooling == "mean":
        return (hidden * keep).sum(axis=1) / np.maximum(keep.sum(axis=1), 1.0)
    if pooling == "max":
        return np.where(keep == 0, np.finfo(hidden.dtype).min, hidden).max(axis=1)
    raise _unknown_pooling(pooling)


def _unknown_pooling(value: str) -> BadInputError:
    return BadInputError(f"unknown pooling {value!r}; choose one of {', '.join(POOLINGS)}")
