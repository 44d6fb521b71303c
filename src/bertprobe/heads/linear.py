"""A fitted linear probe as arithmetic: its scaler and linear model as arrays.

What reads a probe's weights rather than calling it: the ONNX export (the head inside the graph)
and the exact token attributions of :mod:`bertprobe.model.explain` (the weights a token's
hidden state is read out with). A head offers its weights with a ``linear_readout()`` method
(a capability, as scikit-learn's ``available_if`` gates a method on what an estimator can do);
:func:`linear_readout` asks for it, and :func:`why_not_linear` says why a head has none.

Example:
    >>> import numpy as np
    >>> from bertprobe.heads.probe import LinearProbe
    >>> rng = np.random.default_rng(0)
    >>> X = rng.normal(size=(60, 4)); y = (X[:, 0] > 0).astype(int)
    >>> head = linear_readout(LinearProbe(cv=3).fit(X, y))
    >>> head.link, head.coef.shape
    ('binary', (1, 4))
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

import numpy as np

from bertprobe.core.errors import BadInputError

Link = Literal["softmax", "binary", "one-vs-rest", "multi-label"]


@dataclass(frozen=True)
class LinearHead:
    """A probe as arithmetic: ``z = ((x - mean) / scale) @ coef.T + intercept``, then ``link``.

    ``link`` is how scikit-learn turns ``z`` into probabilities: ``"softmax"`` (multinomial
    logistic regression), ``"binary"`` (one score; ``[1 - s, s]`` with ``s = sigmoid(z)``),
    ``"one-vs-rest"`` (``sigmoid(z)`` per class, divided by its row sum: SGD's multiclass) or
    ``"multi-label"`` (``sigmoid(z)`` per label, not normalized: a
    :class:`~bertprobe.heads.multilabel.MultiLabelProbe`, whose labels' probes each have their
    own scaler, so ``mean`` and ``scale`` there are ``[n_labels, n_features]``, one row a label,
    and ``z_j = ((x - mean_j) / scale_j) . coef_j + intercept_j``).
    """

    mean: np.ndarray
    scale: np.ndarray
    coef: np.ndarray
    intercept: np.ndarray
    link: Link

    def readout(self) -> tuple[np.ndarray, np.ndarray]:
        """The head with the scaling folded in: ``z = x @ weights.T + constant``.

        ``weights`` is ``coef / scale`` (one row a score: a binary head has one), ``constant``
        is ``intercept - (mean / scale) . coef``; both float64. A score is then linear in ``x``
        with no other term, which is what splits it over a mean-pooled text's tokens.
        """
        weights = self.coef / self.scale  # a multi-label head's scale has a row a label
        constant = self.intercept - np.sum(self.mean / self.scale * self.coef, axis=-1)
        return weights, constant

    def scores(self, X: np.ndarray) -> np.ndarray:
        """``z`` for rows ``X``: shape (n_rows, n_scores), before the link (float64)."""
        weights, constant = self.readout()
        return np.asarray(X, dtype=np.float64) @ weights.T + constant


def linear_readout(head: Any) -> LinearHead:
    """A fitted head's linear read-out (its ``linear_readout()``), or a one-line error saying
    why it has none: what the ONNX export puts in the graph and the exact explanations split."""
    reason = why_not_linear(head)
    if reason is not None:
        raise BadInputError(reason)
    return head.linear_readout()


def why_not_linear(head: Any) -> str | None:
    """Why ``head`` has no linear read-out, or None when it has one.

    A head declares the capability with a ``linear_readout()`` method (scikit-learn's
    ``available_if`` hides it where the head cannot have one, as a multi-label head over heads
    without one); a read-out that is declared but cannot be made says why by raising.
    """
    if not hasattr(head, "linear_readout"):
        return (
            f"the head is a {type(head).__name__}, which has no linear read-out (a scaler and "
            "a linear model over the vectors), which is all the graph and the exact split hold"
        )
    try:
        head.linear_readout()
    except BadInputError as exc:
        return str(exc)
    return None


def readout_of(scaler: Any, linear: Any) -> LinearHead:
    """A fitted scaler (or None) and linear model (scikit-learn's ``LogisticRegression``,
    ``LogisticRegressionCV`` or ``SGDClassifier`` with log loss) as a :class:`LinearHead`."""
    from sklearn.linear_model import LogisticRegression, SGDClassifier
    from sklearn.preprocessing import StandardScaler

    n_features = int(linear.coef_.shape[1])
    mean, scale = np.zeros(n_features), np.ones(n_features)
    if scaler is not None:
        if not isinstance(scaler, StandardScaler):
            raise BadInputError(f"the probe's scaler is a {type(scaler).__name__}; cannot export")
        if scaler.mean_ is not None:
            mean = np.asarray(scaler.mean_, dtype=np.float64)
        if scaler.scale_ is not None:
            scale = np.asarray(scaler.scale_, dtype=np.float64)
    coef = np.asarray(linear.coef_, dtype=np.float64)
    intercept = np.asarray(linear.intercept_, dtype=np.float64)
    if coef.shape[0] == 1:
        link: Link = "binary"
    elif isinstance(linear, SGDClassifier):
        link = "one-vs-rest"
    elif isinstance(linear, LogisticRegression):
        link = "softmax"  # scikit-learn >= 1.5: multinomial for every solver but liblinear
    else:
        raise BadInputError(f"the probe's model is a {type(linear).__name__}; cannot export")
    return LinearHead(mean, scale, coef, intercept, link)


def stacked_readout(names: Any, label_heads: Any) -> LinearHead:
    """Each label's binary head's read-out, one row each (see :class:`LinearHead`): a
    multi-label head's probabilities are each label's probability of 1, side by side."""
    heads = []
    for name, label_head in zip(names, label_heads, strict=True):
        if not hasattr(label_head, "linear_readout"):
            raise BadInputError(
                f"label {name!r} was on (or off) for every training text, so it has no linear "
                "model to export; retrain with texts on both sides of it"
                if type(label_head).__name__ == "_ConstantPredictor"
                else f"label {name!r}'s head ({type(label_head).__name__}) has no linear read-out"
            )
        head = label_head.linear_readout()
        if head.link != "binary" or list(label_head.classes_) != [0, 1]:
            raise BadInputError(
                f"label {name!r}'s probe is not a 0/1 logistic regression; cannot export"
            )
        heads.append(head)
    return LinearHead(
        mean=np.stack([h.mean for h in heads]),
        scale=np.stack([h.scale for h in heads]),
        coef=np.concatenate([h.coef for h in heads]),
        intercept=np.concatenate([h.intercept for h in heads]),
        link="multi-label",
    )
