"""What every head is: the contract the training stages, the model and its folder rely on.

A head turns vectors into probabilities. Every head

- learns from vectors and labels with ``fit(X, y)`` and keeps its classes in ``classes_``
  (label names, the columns of ``predict_proba``; for several labels a text, the labels);
- gives ``predict_proba(X)``: one row per vector;
- says what the model card records of it with ``card_record()`` (a JSON-ready dict);
- is saved and loaded with skops, so its type is on the trusted list of
  :mod:`bertprobe.model.persist`.

A head that can learn a chunk at a time, without holding every vector, also has
``fit_chunks(chunks)``: ``chunks()`` starts a fresh pass over ``(X_chunk, y_chunk)`` pairs
(:class:`~bertprobe.heads.probe.OutOfCoreProbe`). The out-of-core stages take any such head.

Several labels a text wrap a head per label (:class:`~bertprobe.heads.multilabel.MultiLabelProbe`,
scikit-learn's one-vs-rest); the TF-IDF voter wraps a head with a text model
(:class:`~bertprobe.heads.probe.VotingProbe`).

Example:
    >>> import numpy as np
    >>> from bertprobe.heads.probe import LinearProbe, OutOfCoreProbe
    >>> X = np.random.default_rng(0).normal(size=(60, 4)); y = (X[:, 0] > 0).astype(int)
    >>> isinstance(LinearProbe(cv=3).fit(X, y), Head)
    True
    >>> isinstance(OutOfCoreProbe(), StreamingHead), isinstance(LinearProbe(), StreamingHead)
    (True, False)
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any, Protocol, runtime_checkable

import numpy as np

Chunks = Callable[[], Iterable[tuple[np.ndarray, Any]]]


@runtime_checkable
class Head(Protocol):
    """Vectors in, probabilities out; see the module docstring."""

    def fit(self, X: Any, y: Any, unlabelled: Any = None) -> Any: ...

    def predict_proba(self, X: Any) -> np.ndarray: ...

    def card_record(self) -> dict[str, Any]: ...


@runtime_checkable
class StreamingHead(Head, Protocol):
    """A head that learns a chunk at a time (``fit_chunks``), holding one chunk."""

    def fit_chunks(self, chunks: Chunks) -> Any: ...
