"""How probabilities become labels: :class:`Decision`, the one place that rule is written.

A head gives probabilities; a decision turns each row of them into what the model says of the
text. There are three rules, and every way out of a model (``predict``, ``evaluate``, the
report, explanations, streamed prediction, the HTTP service, the ONNX export and its browser
page) asks the model's decision rather than deciding for itself:

``argmax``
    One label a text: the most probable class.
``threshold``
    One label a text, two classes: the second class where its probability reaches the
    threshold, the first elsewhere (``predict --threshold``; ``"auto"``: the threshold chosen
    on out-of-fold probabilities at training time).
``per-label``
    A label set a text (several labels, or none): every class whose probability reaches its
    own threshold (a multi-label head's).

A decision is written to the model card and to an export's card (:meth:`Decision.record`) and
read back from them (:meth:`Decision.from_record`), so the browser page and
:class:`~bertprobe.export.ExportedClassifier` decide as the model does.

Example:
    >>> import numpy as np
    >>> proba = np.array([[0.7, 0.3], [0.4, 0.6]])
    >>> Decision.argmax(["neg", "pos"]).labels(proba)
    ['neg', 'pos']
    >>> Decision.argmax(["neg", "pos"]).with_threshold(0.25).labels(proba)
    ['pos', 'pos']
    >>> Decision.per_label(["comedy", "drama"], [0.5, 0.35]).labels(proba)
    [('comedy',), ('drama',)]
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal, get_args

import numpy as np

from bertprobe.core.errors import BadInputError
from bertprobe.core.tables import python_value

Rule = Literal["argmax", "threshold", "per-label"]
RULES: tuple[Rule, ...] = get_args(Rule)
# The key under which records say "label sets": a model card's section on how the training
# file gave them, an export card's flag (written beside the decision, so that an older
# bertprobe reads a new export correctly), the JSON of train and evaluate, a tuning job.
# One name, kept since the first release: files and scripts read it.
SETS_KEY = "multi_label"


@dataclass(frozen=True)
class Decision:
    """The rule that turns a row of probabilities into a label, or a label set.

    Parameters
    ----------
    classes : tuple
        The classes (labels, for label sets), in the order of the probabilities' columns.
    rule : {"argmax", "threshold", "per-label"}
        See the module docstring.
    thresholds : tuple of float
        ``"threshold"``: one, on the second class's probability; ``"per-label"``: one a class;
        ``"argmax"``: none.

    Examples
    --------
    >>> d = Decision.per_label(["a", "b", "c"], [0.5, 0.5, 0.2])
    >>> d.label_sets, d.given(np.array([[0.6, 0.1, 0.3]])).tolist()
    (True, [[True, False, True]])
    >>> Decision.from_record(d.record(), d.classes) == d
    True
    """

    classes: tuple
    rule: Rule = "argmax"
    thresholds: tuple[float, ...] = ()

    def __post_init__(self) -> None:
        object.__setattr__(self, "classes", tuple(python_value(c) for c in self.classes))
        object.__setattr__(self, "thresholds", tuple(float(t) for t in self.thresholds))
        if self.rule not in RULES:
            raise BadInputError(f"rule={self.rule!r}: choose from {', '.join(RULES)}", param="rule")
        wanted = {"argmax": 0, "threshold": 1, "per-label": len(self.classes)}[self.rule]
        if len(self.thresholds) != wanted:
            raise BadInputError(
                f"a {self.rule} decision over {len(self.classes)} classes takes {wanted} "
                f"threshold(s), not {len(self.thresholds)}"
            )
        if self.rule == "threshold" and len(self.classes) != 2:
            raise BadInputError(
                f"threshold: a decision threshold is for two classes; this model has "
                f"{len(self.classes)}; leave it out",
            )
        if any(not 0 <= t <= 1 or math.isnan(t) for t in self.thresholds):
            raise BadInputError(
                f"thresholds {list(self.thresholds)}: give probabilities between 0 and 1"
            )

    # --- making one ------------------------------------------------------------------------

    @classmethod
    def argmax(cls, classes: Sequence[Any]) -> Decision:
        """One label a text: the most probable class."""
        return cls(tuple(classes))

    @classmethod
    def per_label(cls, classes: Sequence[Any], thresholds: Sequence[float]) -> Decision:
        """A label set a text: each class whose probability reaches its threshold."""
        return cls(tuple(classes), "per-label", tuple(thresholds))

    @classmethod
    def for_head(cls, head: Any) -> Decision:
        """A fitted head's own decision: its ``decision()`` when it has one (a head that
        decides label sets by per-label thresholds), else the argmax over ``classes_``."""
        own = getattr(head, "decision", None)
        return own() if callable(own) else cls.argmax(head.classes_)

    def with_threshold(self, threshold: float) -> Decision:
        """This decision with a threshold on the second class (two classes, one label a
        text); a label-set decision has a threshold per label already and is refused."""
        if self.label_sets:
            raise BadInputError(
                "threshold: a label-set model has a threshold per label (on the card); "
                "leave --threshold out"
            )
        try:
            value = float(threshold)
        except (TypeError, ValueError):
            value = float("nan")
        if not 0 < value < 1:
            raise BadInputError(
                f"threshold={threshold!r}: give 'auto' or a probability between 0 and 1",
                param="threshold",
            )
        return Decision(self.classes, "threshold", (value,))

    # --- deciding --------------------------------------------------------------------------

    @property
    def label_sets(self) -> bool:
        """Whether a text gets a label set (several labels, or none) rather than one label."""
        return self.rule == "per-label"

    def given(self, proba: np.ndarray) -> np.ndarray:
        """Which classes each row is given: a boolean matrix shaped like ``proba`` (one True
        a row for one label a text)."""
        proba = self._checked(proba)
        if self.label_sets:
            return proba >= np.asarray(self.thresholds)
        chosen = self.indices(proba)
        return np.arange(len(self.classes))[None, :] == chosen[:, None]

    def indices(self, proba: np.ndarray) -> np.ndarray:
        """The column of each row's label (one label a text)."""
        if self.label_sets:
            raise BadInputError("a label-set decision gives every label at its threshold")
        proba = self._checked(proba)
        if self.rule == "threshold":
            return (proba[:, 1] >= self.thresholds[0]).astype(np.intp)
        return proba.argmax(axis=1)

    def labels(self, proba: np.ndarray) -> list:
        """Each row's label (one label a text) or label set (a tuple, for label sets)."""
        if self.label_sets:
            return [
                tuple(str(self.classes[j]) for j in np.flatnonzero(row))
                for row in self.given(proba)
            ]
        return [self.classes[j] for j in self.indices(proba)]

    def label_tuples(self, proba: np.ndarray) -> list[tuple]:
        """Each row's labels as a tuple, whatever the rule: a label set, or one label."""
        decided = self.labels(proba)
        return decided if self.label_sets else [(label,) for label in decided]

    def indicator(self, proba: np.ndarray) -> np.ndarray:
        """:meth:`given` as a 0/1 int matrix (scikit-learn's multi-label ``predict``)."""
        return self.given(proba).astype(int)

    def boundaries(self) -> np.ndarray | None:
        """Where each class is given, in log-odds: two classes ``[-t, t]`` (``t`` the
        threshold's log-odds, 0 for argmax), label sets each label's threshold's log-odds;
        None for more classes by argmax (the largest logit wins, no fixed boundary)."""
        if self.label_sets:
            return _log_odds(np.asarray(self.thresholds))
        if len(self.classes) != 2:
            return None
        at = float(_log_odds(np.asarray(self.thresholds[0]))) if self.thresholds else 0.0
        return np.array([-at, at])

    def uncertainty(self, proba: np.ndarray) -> np.ndarray:
        """How unsure each row is, from 0 (sure) to 1 (on the boundary).

        One label a text: one minus the margin between the two most probable classes (two
        classes: ``1 - |2p - 1|``). Label sets: the label whose probability is nearest its
        threshold decides, its distance scaled by the room on that side of the threshold, so
        a threshold of 0.2 is not judged as if it were 0.5.

        >>> Decision.argmax([0, 1]).uncertainty(np.array([[0.5, 0.5], [0.9, 0.1]])).round(2)
        array([1. , 0.2])
        """
        proba = self._checked(proba).astype(float)
        if self.label_sets:
            cut = np.asarray(self.thresholds)
            room = np.where(proba >= cut, 1 - cut, cut)
            distance = np.abs(proba - cut) / np.maximum(room, 1e-12)
            return np.clip(1 - distance.min(axis=1), 0.0, 1.0)
        if proba.shape[1] < 2:
            return np.zeros(len(proba))
        top_two = np.sort(proba, axis=1)[:, -2:]
        return np.clip(1 - (top_two[:, 1] - top_two[:, 0]), 0.0, 1.0)

    # --- cards -----------------------------------------------------------------------------

    def record(self) -> dict[str, Any]:
        """The decision as the cards keep it: the rule, and its thresholds by class."""
        if self.rule == "argmax":
            return {"rule": "argmax"}
        if self.rule == "threshold":
            return {"rule": "threshold", "threshold": self.thresholds[0]}
        names = [str(c) for c in self.classes]
        return {"rule": "per-label", "thresholds": dict(zip(names, self.thresholds, strict=True))}

    @classmethod
    def from_record(cls, record: dict[str, Any], classes: Sequence[Any]) -> Decision:
        """The decision a card's :meth:`record` wrote, over ``classes`` (the card's)."""
        rule = record.get("rule")
        if rule == "threshold":
            return cls(tuple(classes), "threshold", (record["threshold"],))
        if rule == "per-label":
            by_name = record["thresholds"]
            return cls(tuple(classes), "per-label", tuple(by_name[str(c)] for c in classes))
        return cls(tuple(classes), rule or "argmax")

    @classmethod
    def from_legacy(
        cls, classes: Sequence[Any], label_sets: bool, thresholds: Sequence[float] | None
    ) -> Decision:
        """The decision of a card written before decisions were (a flag and a threshold list,
        as export cards of format 1 to 3 and model cards of format 2 and 3 hold them)."""
        if label_sets:
            return cls.per_label(classes, thresholds or [0.5] * len(classes))
        return cls.argmax(classes)

    def legacy_record(self) -> dict[str, Any]:
        """What an export card said before it held the decision (the label-set flag and the
        thresholds as a list), kept so that an older bertprobe reading a new export decides
        as this one does, not as argmax."""
        return {
            SETS_KEY: self.label_sets,
            **({"thresholds": list(self.thresholds)} if self.label_sets else {}),
        }

    def _checked(self, proba: np.ndarray) -> np.ndarray:
        proba = np.asarray(proba)
        if proba.ndim != 2 or proba.shape[1] != len(self.classes):
            raise BadInputError(
                f"probabilities of shape {proba.shape}: the decision is over "
                f"{len(self.classes)} classes, one column each"
            )
        return proba


def _log_odds(p: np.ndarray) -> np.ndarray:
    p = np.clip(np.asarray(p, dtype=np.float64), 1e-15, 1 - 1e-15)
    return np.log(p / (1 - p))
