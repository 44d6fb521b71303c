"""How a model is trained: :class:`TrainOptions`, the options every training stage reads.

Built once and checked when built; a combination that cannot work is refused here, in one line,
with its reason (the composition table in docs/architecture.md lists them).
"""

from __future__ import annotations

import typing
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bertprobe.core.errors import BadInputError
from bertprobe.encoders.pooling import POOLINGS, Pooling
from bertprobe.heads.probe import check_class_weight, check_metric, parse_c_grid
from bertprobe.training.sweep import FINALISTS, parse_poolings


@dataclass(frozen=True)
class TrainOptions:
    """How the probe is chosen and fitted. Built once; checked when built.

    Parameters
    ----------
    Cs : str or tuple of float
        C values to search: ``"default"`` (log-spaced 1e-4 .. 100), ``"coarse"``, ``"seed"``
        (the recipe's ``linspace(0.0001, 100, 20)``), a comma list, or a tuple of floats.
    cv : int
        Stratified cross-validation folds for choosing C (at least 2).
    n_jobs : int
        Processes for the folds; -1 is one per CPU core. Not 0.
    auto : bool
        Choose layer(s) and pooling by a CV sweep on the training data first, and add the
        TF-IDF voter when CV prefers the vote (the encoder options' pooling and layers are
        then replaced by the sweep's choice).
    poolings : tuple of str or str
        The poolings the ``auto`` sweep tries.
    finalists : int
        How many of the ``auto`` sweep's candidates, ranked by a cheap ridge screen, get the
        full CV of the probe (see :mod:`bertprobe.training.sweep`); 0 scores every candidate by CV
        (the exhaustive sweep: several times slower, rarely a better choice). With ``auto``,
        the final probe searches the C values of ``Cs`` next to the one the sweep chose.
    out_of_core : bool
        For training sets larger than memory: features streamed to disk, the probe fitted by
        SGD a chunk at a time (:class:`~bertprobe.heads.probe.OutOfCoreProbe`). With ``auto``,
        the sweep runs on a uniform sample of the file (no TF-IDF vote), then the chosen
        features are streamed.
    features : path, optional
        With ``out_of_core``: the training file's vectors, already computed by ``bertprobe
        embed FILE --out X.parquet`` (or ``embed --ray``), used instead of embedding it again.
        The file must say it holds the vectors of this very training file (by SHA-256) made
        with these encoder options; only the labels are read from the training file.
    class_weight : None or "balanced"
        ``"balanced"`` weighs each class inversely to its frequency in the loss, so a rare
        class is not outvoted (both probes; out of core, from the label counts). For label
        sets: each label's texts with and without it.
    metric : {"accuracy", "balanced_accuracy", "f1_macro", "roc_auc"}
        What C is chosen by, what the ``auto`` sweep ranks candidates by, and what the
        decision threshold (two classes) maximizes; reported as ``cv_<metric>`` and
        ``test_<metric>`` beside accuracy. For label sets: what each label's C is chosen by
        (its thresholds are 0.5, or tuned for F1).
    label_issues : bool
        Also find the training rows whose label the model doubts (from the out-of-fold
        probabilities; see :mod:`bertprobe.training.label_issues`), in
        :attr:`TrainResult.label_issues`.
        Out of core, each fold's probabilities come from a copy of the streaming head trained
        on the other folds (``cv`` times its passes over the vectors). With ``finetune`` the
        encoder has seen every training label,
        so the probabilities are out of fold for the probe only, and flips it learned are missed.
    multi_label : bool
        Each text has a label set (several labels, or none), read with ``label_sep`` or
        ``label_cols`` (:class:`~bertprobe.data.files.ReadOptions`): the run's target is
        :data:`~bertprobe.training.target.LABEL_SETS` (one probe a label, each at its
        threshold). Else one label a text.
    tune_thresholds : bool
        For label sets: each label's threshold maximizes its F1 on out-of-fold probabilities
        (else 0.5).
    encoders : tuple of str or str
        With ``auto``: candidate encoders (``"minilm,DIR"`` is read as a tuple). Before
        anything else, :func:`~bertprobe.training.compare.compare_encoders` sweeps each on the
        training data (a sample of the file out of core) and the one it recommends replaces the
        encoder options' encoder; the sweep of layers and poolings then runs on it as usual.
    head : scikit-learn classifier, optional
        The head to fit instead of the linear probe (cloned; any head that meets
        :class:`~bertprobe.heads.base.Head`, registered with
        :func:`~bertprobe.heads.base.register_head` so its model folder loads). For label sets
        it is each label's head. Out of core it must learn a chunk at a time (``fit_chunks``).
        What it can do beyond ``predict_proba`` (a linear read-out for the export and exact
        explanations, ...) is its capabilities: see :mod:`bertprobe.heads.base`.

    Examples
    --------
    >>> TrainOptions(Cs="0.1,1", cv=3).Cs
    (0.1, 1.0)
    """

    Cs: tuple[float, ...] | str = "default"
    cv: int = 5
    n_jobs: int = -1
    auto: bool = False
    poolings: tuple[Pooling, ...] | str = POOLINGS
    finalists: int = FINALISTS
    out_of_core: bool = False
    features: str | Path | None = None
    class_weight: str | None = None
    metric: str = "accuracy"
    label_issues: bool = False
    multi_label: bool = False
    tune_thresholds: bool = False
    encoders: tuple[str, ...] | str = ()
    head: Any = None

    @property
    def grid(self) -> tuple[float, ...]:
        """The C values, as numbers (``Cs`` after parsing)."""
        return typing.cast(tuple[float, ...], self.Cs)

    def __post_init__(self) -> None:
        grid = parse_c_grid(self.Cs) if isinstance(self.Cs, str) else tuple(self.Cs)
        if not grid or any(not c > 0 for c in grid):
            raise BadInputError(f"Cs={self.Cs!r}: give positive C values", param="Cs")
        object.__setattr__(self, "Cs", grid)
        if isinstance(self.poolings, str):
            object.__setattr__(self, "poolings", parse_poolings(self.poolings))
        if self.cv < 2:
            raise BadInputError(
                f"cv={self.cv}: cross-validation needs at least 2 folds", param="cv"
            )
        if self.n_jobs == 0:
            raise BadInputError(
                "n_jobs=0 runs nothing; use 1, or -1 for one per CPU core", param="n_jobs"
            )
        if self.finalists < 0:
            raise BadInputError(
                f"finalists={self.finalists}: give how many screened candidates get the full "
                "CV (3 is the default), or 0 for all of them",
                param="finalists",
            )
        check_metric(self.metric)
        if isinstance(self.class_weight, dict):
            raise BadInputError("class_weight: give 'balanced' or None (LinearProbe takes a dict)")
        check_class_weight(self.class_weight)
        if self.tune_thresholds and not self.multi_label:
            raise BadInputError(
                "tune_thresholds=True tunes the per-label thresholds of a multi-label model; "
                "add multi_label=True or leave it out",
                param=("tune_thresholds=True", "multi_label=True"),
            )
        if isinstance(self.encoders, str):
            names = tuple(e.strip() for e in self.encoders.split(",") if e.strip())
            object.__setattr__(self, "encoders", names)
        if self.encoders and not self.auto:
            raise BadInputError(
                "encoders= (the encoder chosen among several) is part of auto=True's choice; "
                "add it, or give one encoder= alone",
                param=("encoders", "auto=True", "encoder"),
            )
        if self.head is not None:
            for method in ("fit", "predict_proba"):
                if not callable(getattr(self.head, method, None)):
                    raise BadInputError(
                        f"head={type(self.head).__name__}: a head needs fit and "
                        "predict_proba (see bertprobe.heads.base.Head)",
                        param="head",
                    )
            if self.out_of_core and not callable(getattr(self.head, "fit_chunks", None)):
                raise BadInputError(
                    f"head={type(self.head).__name__} learns from arrays in memory, and out of "
                    "core the vectors stream from disk a chunk at a time: give a head with "
                    "fit_chunks, or train without out_of_core",
                    param="head",
                )
        if self.features is not None and not self.out_of_core:
            raise BadInputError(
                "features= (precomputed training vectors) is for out_of_core=True training; "
                "add it, or leave the features out",
                param=("features", "out_of_core=True"),
            )
