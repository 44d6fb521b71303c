"""What every head is: the contract the training stages, the model and its folder rely on.

A head turns vectors into probabilities. Every head

- learns from vectors and labels with ``fit(X, y)`` and keeps its classes in ``classes_``
  (label names, the columns of ``predict_proba``; for several labels a text, the labels);
- gives ``predict_proba(X)``: one row per vector;
- says what the model card records of it with ``card_record()`` (a JSON-ready dict);
- is saved and loaded with skops, so its type is registered (:func:`register_head`), which
  puts it on the trusted list of :mod:`bertprobe.model.persist`.

What differs between heads is a capability: a method a head has or has not, never a type
check in the layers above. Scikit-learn's ``available_if`` hides a method where a head cannot
offer it (a multi-label head over heads without it), so ``hasattr`` is the whole test:

=====================  ===================================================================
capability             what uses it
=====================  ===================================================================
``decision()``         the model's :class:`~bertprobe.heads.decision.Decision` (default:
                       the argmax over ``classes_``; a label-set head: each label at its
                       threshold)
``linear_readout()``   the ONNX export's graph and the exact explanations
                       (:mod:`bertprobe.heads.linear`); without it, explanations occlude
``summary_record()``   the figures ``train --json`` shows first (CV accuracy and C, ...)
``describe()``         the line ``train`` prints of the head
``fixed_estimator()``  the report's learning curve (the head refitted at each size with
                       what fitting chose held fixed)
``out_of_fold_proba``  the decision threshold and the label issues (``X, y``: each row's
                       probabilities from a model that never saw it)
``fit_chunks(chunks)`` out-of-core training (:class:`StreamingHead`): ``chunks()`` starts a
                       fresh pass over ``(X_chunk, y_chunk)`` pairs
=====================  ===================================================================

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


def fit_head(
    head: Any, X: Any, y: Any, *, texts: Any = None, unlabelled: Any = None
) -> tuple[Any, Any]:
    """Fit ``head`` on vectors ``X`` and targets ``y`` (self-training on ``unlabelled``
    vectors); returns what a model keeps: the fitted head over vectors, and the model over
    the raw texts it votes with (None for a head of vectors alone).

    A head that reads the texts too (its ``fit`` takes ``texts``) is given them; one that
    votes (``voters()``: its head and its text model, fitted) is kept as its two parts.
    """
    import inspect

    if "texts" in inspect.signature(head.fit).parameters:
        head.fit(X, y, texts=texts, unlabelled=unlabelled)
    else:
        head.fit(X, y, unlabelled=unlabelled)
    return head.voters() if hasattr(head, "voters") else (head, None)


def is_head(candidate: Any) -> bool:
    """Whether ``candidate`` meets the :class:`Head` contract (a protocol: any class with
    ``fit``, ``predict_proba`` and ``card_record`` is a head; none needs to inherit)."""
    return isinstance(candidate, Head)


# Fully qualified names of the types a saved head may hold beyond what skops trusts by default
# (numpy, scikit-learn's estimators): the registered heads and what they hold.
_TRUSTED: set[str] = set()
# The modules that register bertprobe's own heads, imported before a folder is loaded.
_BUILT_IN = ("bertprobe.heads.probe", "bertprobe.heads.multilabel", "bertprobe.heads.zeroshot")


def register_head(cls: type | None = None, *, holds: tuple[str, ...] = ()) -> Any:
    """Register a head type (a class decorator): model folders may then hold it, and it loads
    from them like bertprobe's own heads. ``holds``: the fully qualified names of other
    types its fitted state keeps (a splitter, say) that skops does not trust by default.

    A type is trusted by its module and name as skops records them, so the class must be
    importable by that name wherever the folder is loaded.
    """

    def register(head_type: type) -> type:
        _TRUSTED.add(f"{head_type.__module__}.{head_type.__qualname__}")
        _TRUSTED.update(holds)
        return head_type

    return register(cls) if cls is not None else register


def trusted_types() -> frozenset[str]:
    """Every registered head type and what the heads hold (bertprobe's own heads included)."""
    import importlib

    for module in _BUILT_IN:
        importlib.import_module(module)
    return frozenset(_TRUSTED)
