"""A head from the classes' descriptions alone: zero-shot classification by similarity.

Each class is given by its name or one or more descriptions (``"negative": ["a review that
pans the film"]``), embedded by the model's own encoder and pooling; a text's score for a class
is how close its vector lies to the class's, measured against the pool of texts to classify.
No label is needed: the pool (unlabelled texts, as many as you have) sets the head's two
constants, each by a stated rule:

- **Centring (each class's offset).** A text's score for class ``k`` is
  ``(x - m) . l_k / s``: ``l_k`` the unit mean of the class's description vectors, ``m`` the
  pool's mean vector and ``s`` the pool's mean vector length. Subtracting ``m`` takes away
  what every text of the pool shares (the encoder's common direction), so a class whose
  description is merely close to everything stops winning every text: on SST-2's test set with
  all-MiniLM-L6-v2, "This is a {} review." gives 68.4% without it and 70.8% with it. Dividing
  by ``s`` rather than by each text's own length keeps the score linear in ``x``, so the head
  is a linear read-out (the ONNX graph, exact explanations) at no cost in accuracy (70.8%
  against 70.6% with each text's own length).
- **Temperature.** Probabilities are the softmax of the scores over ``temperature``; with
  ``"auto"``, twice the standard deviation over the pool of each text's scores less their mean
  over the classes (the spread of what the softmax compares). No label calibrates it. On the
  SST-2 test set its expected calibration errors were 0.013, 0.049 and 0.084 for three sets of
  descriptions (a fixed 0.05: 0.010, 0.081, 0.054; a fixed 0.02: 0.139, 0.048, 0.075): no
  better than the best fixed value, but it follows the scale of an encoder's similarities,
  which differ from one encoder (and one set of descriptions) to another.
- **Several labels a text** (``label_sets=True``): each label on its own, its probability
  the posterior of the upper group of a two-group Gaussian mixture with one variance fitted to
  the pool's scores for it (the texts that carry the label stand apart as a group of higher
  similarity). With one variance the posterior is a logistic function of the score, so the
  head stays linear; each label is decided at 0.5.

The head is what ``Classifier.from_descriptions`` builds, and a head like the others: the
model folder, ``predict``, ``evaluate``, the service, the export and exact explanations take it
as they take a probe. What it cannot do without labels (the out-of-fold threshold, label
issues, a learning curve) it does not offer.

Example:
    >>> import numpy as np
    >>> rng = np.random.default_rng(0)
    >>> labels = np.eye(3)[:2] * 3.0  # two classes' description vectors
    >>> pool = np.vstack([labels[rng.integers(0, 2, 60)] + rng.normal(size=(60, 3))])
    >>> head = ZeroShotHead(labels, ["neg", "pos"]).fit(pool)
    >>> head.predict(labels)
    array(['neg', 'pos'], dtype='<U3')
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from scipy.special import expit, softmax
from sklearn.base import BaseEstimator, ClassifierMixin
from sklearn.utils.metaestimators import available_if
from sklearn.utils.validation import check_is_fitted, validate_data

from bertprobe.core.errors import BadInputError
from bertprobe.heads.base import register_head
from bertprobe.heads.decision import Decision
from bertprobe.heads.linear import LinearHead

# The decision threshold of each label of a label-set zero-shot head: the mixture's posterior
# of the label's group.
LABEL_THRESHOLD = 0.5


def descriptions_of(
    descriptions: Mapping[Any, str | Sequence[str]], template: str = "{}"
) -> dict[Any, list[str]]:
    """Each class's descriptions as texts to embed: a string is one description, a list
    several; each put into ``template`` (``"{}"`` leaves it as it is; ``"This is a {} review."``
    makes a sentence of a label's name). Checked: two classes or more, each with a text."""
    if "{}" not in template:
        raise BadInputError(
            f"template={template!r}: put {{}} where a description goes "
            '(e.g. "This is a {} review.")',
            param="template",
        )
    if not isinstance(descriptions, Mapping) or len(descriptions) < 2:
        raise BadInputError(
            "descriptions: give two classes or more, each with its name or descriptions "
            '(e.g. {"negative": "a review that pans the film", "positive": "..."})',
            param="descriptions",
        )
    texts: dict[Any, list[str]] = {}
    for label, given in descriptions.items():
        items = [given] if isinstance(given, str) else list(given)
        items = [str(item).strip() for item in items]
        if not items or not all(items):
            raise BadInputError(
                f"descriptions: class {label!r} has an empty description; give its name or a "
                "phrase that says what its texts are about",
                param="descriptions",
            )
        texts[label] = [template.replace("{}", item) for item in items]
    return texts


def _decides_label_sets(head: ZeroShotHead) -> bool:
    return bool(head.label_sets)


@register_head
class ZeroShotHead(ClassifierMixin, BaseEstimator):
    """Classes from their description vectors, with constants fitted on a pool of unlabelled
    texts (see the module docstring for the rules).

    Parameters
    ----------
    label_vectors : array-like of shape (n_classes, n_features)
        Each class's description vector (several descriptions: their unit vectors' mean),
        from the same encoder, pooling and layers as the vectors it will score.
    classes : sequence
        The class names, in the order of ``label_vectors``; the columns of
        :meth:`predict_proba`.
    temperature : float or "auto", default="auto"
        The softmax's temperature over the scores; ``"auto"``: from the pool's spread.
    label_sets : bool, default=False
        Several labels a text: each label's probability on its own (see the module
        docstring), decided at 0.5.
    descriptions : mapping or None, default=None
        The descriptions the vectors were made from, as the model card records them (the head
        does not read them).

    Attributes
    ----------
    classes_ : ndarray of shape (n_classes,)
        ``classes``.
    mean_ : ndarray of shape (n_features,)
        The pool's mean vector (the centring).
    length_ : float
        The pool's mean vector length (the scores' scale).
    temperature_ : float
        The temperature used.
    coef_, intercept_ : ndarray
        The scores' weights over ``(x - mean_) / length_`` and their constants: one row a
        class (label sets: the mixture's slope and constant folded in).
    n_pool_ : int
        How many texts the constants were fitted on.
    """

    def __init__(
        self,
        label_vectors: Any,
        classes: Sequence[Any],
        *,
        temperature: float | str = "auto",
        label_sets: bool = False,
        descriptions: Mapping[Any, Sequence[str]] | None = None,
    ) -> None:
        self.label_vectors = label_vectors
        self.classes = classes
        self.temperature = temperature
        self.label_sets = label_sets
        self.descriptions = descriptions

    def fit(self, X, y=None, unlabelled=None) -> ZeroShotHead:
        """Fit the centring, scale and temperature on the pool: ``X`` and, when given,
        ``unlabelled`` (``y`` is not read: no label is needed, or used)."""
        X = validate_data(self, X, dtype=[np.float32, np.float64])
        if unlabelled is not None:
            X = np.vstack([X, validate_data(self, unlabelled, reset=False)])
        vectors = np.asarray(self.label_vectors, dtype=np.float64)
        if vectors.ndim != 2 or vectors.shape[1] != X.shape[1]:
            raise BadInputError(
                f"label_vectors has shape {vectors.shape}; the texts' vectors have "
                f"{X.shape[1]} features: embed the descriptions with the texts' encoder",
                param="label_vectors",
            )
        if len(self.classes) != len(vectors) or len(set(map(str, self.classes))) < 2:
            raise BadInputError(
                f"classes: {len(self.classes)} names (distinct) for {len(vectors)} description "
                "vectors; give one name a vector, two classes or more",
                param="classes",
            )
        if len(X) < 2:
            raise BadInputError(
                f"the pool holds {len(X)} text(s): the head's centring and temperature are "
                "measured on the texts to classify; give at least a few dozen",
                param="unlabelled",
            )
        self.classes_ = np.asarray(self.classes)
        self.n_pool_ = len(X)
        self.mean_ = X.mean(axis=0)
        self.length_ = float(np.linalg.norm(X, axis=1).mean()) or 1.0
        units = vectors / np.maximum(np.linalg.norm(vectors, axis=1, keepdims=True), 1e-12)
        scores = (X - self.mean_) @ units.T / self.length_
        if self.label_sets:
            self.temperature_ = 1.0
            slopes, constants = zip(*(_upper_group(column) for column in scores.T), strict=True)
            self.coef_ = units * np.asarray(slopes)[:, None]
            self.intercept_ = np.asarray(constants, dtype=np.float64)
            return self
        self.temperature_ = self._temperature(scores)
        self.coef_ = units / self.temperature_
        self.intercept_ = np.zeros(len(units))
        return self

    def _temperature(self, scores: np.ndarray) -> float:
        if self.temperature != "auto":
            try:
                value = float(self.temperature)
            except (TypeError, ValueError):
                value = float("nan")
            if not value > 0:
                raise BadInputError(
                    f"temperature={self.temperature!r}: give a positive number or 'auto'",
                    param="temperature",
                )
            return value
        contrast = scores - scores.mean(axis=1, keepdims=True)
        return float(2 * contrast.std()) or 1.0

    def _scores(self, X) -> np.ndarray:
        check_is_fitted(self, "coef_")
        X = validate_data(self, X, reset=False, dtype=[np.float32, np.float64])
        return (np.asarray(X, dtype=np.float64) - self.mean_) / self.length_ @ self.coef_.T + (
            self.intercept_
        )

    def predict_proba(self, X) -> np.ndarray:
        """Class probabilities (label sets: each label's), columns in the order of
        ``classes_``."""
        scores = self._scores(X)
        return expit(scores) if self.label_sets else softmax(scores, axis=1)

    def predict(self, X) -> np.ndarray:
        """The most probable class of each row (label sets: see :meth:`decision`)."""
        check_is_fitted(self, "coef_")
        return self.classes_[self.predict_proba(X).argmax(axis=1)]

    @available_if(_decides_label_sets)
    def decision(self) -> Decision:
        """Several labels a text: each label where its probability reaches 0.5."""
        check_is_fitted(self, "coef_")
        return Decision.per_label(self.classes_.tolist(), [LABEL_THRESHOLD] * len(self.classes_))

    def linear_readout(self) -> LinearHead:
        """The scores as a scaler (the centring and length) and a linear model: two classes
        as one score (the second's minus the first's, as a binary logistic regression has),
        label sets one a label."""
        check_is_fitted(self, "coef_")
        n_features = len(self.mean_)
        mean, scale = self.mean_, np.full(n_features, self.length_)
        coef, intercept = self.coef_, self.intercept_
        if self.label_sets:
            rows = len(coef)
            return LinearHead(
                np.tile(mean, (rows, 1)), np.tile(scale, (rows, 1)), coef, intercept,
                "multi-label",
            )  # fmt: skip
        if len(self.classes_) == 2:
            coef, intercept = (coef[1] - coef[0])[None], intercept[1:] - intercept[:1]
            return LinearHead(mean, scale, coef, intercept, "binary")
        return LinearHead(mean, scale, coef, intercept, "softmax")

    def summary_record(self) -> dict[str, Any]:
        """What ``train --json`` shows first."""
        check_is_fitted(self, "coef_")
        return {"zero_shot": True, "n_pool": self.n_pool_, "temperature": self.temperature_}

    def describe(self) -> str:
        """The line ``train`` prints of the head."""
        check_is_fitted(self, "coef_")
        n = sum(len(v) for v in (self.descriptions or {}).values()) or len(self.classes_)
        return (
            f"zero-shot from {n} description(s) of {len(self.classes_)} "
            f"{'labels' if self.label_sets else 'classes'}, centred on a pool of "
            f"{self.n_pool_} texts"
        )

    def card_record(self) -> dict[str, Any]:
        """What the model card says of the head: zero-shot, from which descriptions."""
        check_is_fitted(self, "coef_")
        return {
            "solver": "zero-shot",
            "descriptions": {
                str(label): list(texts) for label, texts in (self.descriptions or {}).items()
            },
            "temperature": self.temperature_,
            "n_pool": self.n_pool_,
            "rule": "centred on the pool's mean vector"
            + ("; each label's mixture posterior" if self.label_sets else ""),
        }


def _upper_group(scores: np.ndarray) -> tuple[float, float]:
    """A label's scores over the pool as two groups with one variance (a Gaussian mixture):
    the slope and constant of the upper group's posterior, ``sigmoid(a * score + b)``."""
    from sklearn.mixture import GaussianMixture

    column = scores.reshape(-1, 1)
    low, high = np.quantile(column, [0.25, 0.9])
    mixture = GaussianMixture(
        2, covariance_type="tied", means_init=[[low], [high]], random_state=0
    ).fit(column)
    (mu_low, mu_high) = mixture.means_[:, 0]
    variance = float(np.asarray(mixture.covariances_).reshape(-1)[0])
    w_low, w_high = mixture.weights_
    if mu_high < mu_low:  # the groups came out the other way round
        mu_low, mu_high, w_low, w_high = mu_high, mu_low, w_high, w_low
    slope = (mu_high - mu_low) / variance
    constant = (mu_low**2 - mu_high**2) / (2 * variance) + np.log(w_high / w_low)
    return float(slope), float(constant)
