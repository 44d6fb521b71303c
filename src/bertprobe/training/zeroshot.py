"""Training from zero labels: a zero-shot head from the classes' descriptions, then
self-training on the pool it labels.

A run with :class:`ZeroShot` options and no labelled data starts here:

1. :func:`fit_zero_shot` (a stage): the pool of unlabelled texts and each class's descriptions
   go through the run's encoder; the :class:`~bertprobe.heads.zeroshot.ZeroShotHead` is fitted
   on the pool. With ``rounds=0`` this is the model.
2. :func:`~bertprobe.training.selftrain.self_train` (``rounds`` >= 1): the model so far
   labels the pool, the surest ``per_class`` texts of each class become a labelled training
   set, and a whole run trains on them with the run's options (a probe, ``auto``, contrastive
   tuning, fine-tuning: whatever the options ask), from the original encoder each round. Then
   the new model labels the pool again.

**The honest check, with no labels.** Nothing labelled is there to score a round, so the
loop does not claim that a round helped: it stops when a round changes fewer than
:data:`SETTLED` of the pool's labels (the rounds agree: another would learn from the same
pseudo-labels), or after ``rounds``. What it measured is recorded a round at a time (the
pseudo-labels' classes, their agreement with the round before, the zero-shot head's own
agreement with the final model) and shown by ``train``. A test file, if given, is scored
only, each round, and recorded; it chooses nothing.

Following Gera et al. 2022 ("Zero-Shot Text Classification with Self-Training"): the surest
texts of each class, balanced, rather than those past a fixed probability (which a model's
scale decides: contrastive tuning makes every probability 0.99, a zero-shot head's are seldom
past 0.8).
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from bertprobe.core.errors import BadInputError
from bertprobe.encoders.encode import embed
from bertprobe.heads.probe import pseudo_labels_per_class, surest_rows
from bertprobe.heads.zeroshot import ZeroShotHead, descriptions_of

if TYPE_CHECKING:
    from bertprobe.training.pipeline import TrainingRun

# A round that changes fewer of the pool's labels than this share ends the loop.
SETTLED = 0.01


@dataclass(frozen=True, kw_only=True)
class ZeroShot:
    """Classes from their descriptions, and self-training on the pool they label.

    Parameters
    ----------
    descriptions : mapping
        Each class (as the labels of a test file name it) to its name or description, or a
        list of several: ``{"0": "negative", "1": ["positive", "a review that praises the
        film"]}``.
    template : str
        Where each description goes in the text embedded (``{}``): ``"This is a {} review."``
        makes a sentence of a label's name. ``"{}"``: the description as given.
    temperature : float or "auto"
        The zero-shot head's softmax temperature (see :mod:`bertprobe.heads.zeroshot`).
    rounds : int
        Self-training rounds after the zero-shot start (0: the zero-shot head is the model).
        With labels as well, every round trains on them beside the pool's surest texts, and
        there is at least one.
    per_class : int or float
        Each round's pseudo-labels: the surest texts of each class, as a number, or as a
        share (0 < share <= 1) of the pool divided among the classes (0.25 of 6,920 texts in
        two classes: 865 each). The same number for every class (fewer where the model gives
        a class fewer texts): pseudo-labels drawn in proportion to the model's own decisions
        tilt each round further towards the class it favours.

    Examples
    --------
    >>> ZeroShot(descriptions={"neg": "negative", "pos": "positive"}).texts
    {'neg': ['negative'], 'pos': ['positive']}
    >>> ZeroShot(descriptions={"neg": "negative", "pos": "positive"},
    ...          template="This is a {} review.").texts["pos"]
    ['This is a positive review.']
    """

    descriptions: Mapping[Any, str | Sequence[str]]
    template: str = "{}"
    temperature: float | str = "auto"
    rounds: int = 0
    per_class: int | float = 0.25
    # The parsed texts, each class's descriptions in the template (set when built).
    texts: dict[Any, list[str]] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "texts", descriptions_of(self.descriptions, self.template))
        rounds = self.rounds
        if isinstance(rounds, bool) or not isinstance(rounds, int) or not 0 <= rounds <= 20:
            raise BadInputError(
                f"rounds={rounds!r}: give a whole number of self-training rounds from 0 to 20",
                param="rounds",
            )
        self.take(len(self.texts))  # a share or count that cannot be is refused now

    def take(self, n_pool: int) -> int:
        """How many texts of each class become pseudo-labels, from a pool of ``n_pool``."""
        return pseudo_labels_per_class(self.per_class, n_pool, len(self.texts), param="per_class")

    def record(self) -> dict[str, Any]:
        """What the model card says of the start."""
        return {
            "descriptions": {str(k): v for k, v in self.texts.items()},
            "template": self.template,
            "rounds": self.rounds,
            "per_class": self.per_class,
        }


def class_vectors(vectors: np.ndarray, counts: Sequence[int]) -> np.ndarray:
    """Each class's vector: the mean of its descriptions' unit vectors (``counts`` a class,
    in order)."""
    units = vectors / np.maximum(np.linalg.norm(vectors, axis=1, keepdims=True), 1e-12)
    bounds = np.cumsum([0, *counts])
    return np.stack([units[a:b].mean(axis=0) for a, b in zip(bounds[:-1], bounds[1:], strict=True)])


def zero_shot_head(
    zero_shot: ZeroShot, pool_vectors: np.ndarray, description_vectors: np.ndarray, label_sets: bool
) -> ZeroShotHead:
    """The zero-shot head over ``description_vectors`` (the embedded :attr:`ZeroShot.texts`,
    in order), fitted on the pool."""
    texts = zero_shot.texts
    return ZeroShotHead(
        class_vectors(description_vectors, [len(v) for v in texts.values()]),
        list(texts),
        temperature=zero_shot.temperature,
        label_sets=label_sets,
        descriptions=texts,
    ).fit(pool_vectors)


def fit_zero_shot(run: TrainingRun) -> None:
    """The stage that starts a run from descriptions: the pool's and the descriptions' vectors
    (and the test set's), the zero-shot head fitted on the pool."""
    zero_shot = run.zero_shot
    if zero_shot is None or run.train_set is not None:
        return
    assert run.unlabelled is not None, "start_run asks for the pool"
    start = time.perf_counter()
    run.encoder = run.encoding.load()
    spec, options = run.encoding.spec, run.encoding.run
    with run.encoding.open_cache() as cache:
        run.X_unlabelled, pool_stats = embed(
            run.unlabelled.texts, run.encoder, spec, options, cache=cache
        )
        described, _ = embed(
            [t for texts in zero_shot.texts.values() for t in texts],
            run.encoder, spec, options, cache=cache,
        )  # fmt: skip
        if run.test_set is not None:
            run.X_test, run.test_stats = embed(
                run.test_set.texts, run.encoder, spec, options, cache=cache
            )
    run.train_stats = pool_stats
    run.embed_seconds = time.perf_counter() - start
    start = time.perf_counter()
    run.head = zero_shot_head(zero_shot, run.X_unlabelled, described, run.target.label_sets)
    run.classes = list(zero_shot.texts)
    run.fit_seconds = time.perf_counter() - start


def surest(proba: np.ndarray, zero_shot: ZeroShot) -> np.ndarray:
    """The rows of ``proba`` that become pseudo-labels: for each class, the rows the model
    gives it, surest first (by the class's probability), :meth:`ZeroShot.take` of them (or
    all it gives the class, if fewer)."""
    return surest_rows(proba, zero_shot.take(len(proba)))
