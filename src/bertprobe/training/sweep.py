"""Which features? One forward pass, a cheap screen of every layer x pooling, then
cross-validation of the best few.

The recipe's fixed choice (last layer, [CLS]) is rarely the best probe input: middle layers and
pooled token vectors often carry more of the signal. :func:`run_sweep` fills every hidden layer
x pooling into the cache with one forward pass. Every candidate (each single layer and a few
concatenations: last four layers, all layers) is first screened by the leave-one-out accuracy
of a ridge classifier on the standardized features, which has a closed form
(:func:`ridge_loo_accuracy`); only the best few (``finalists``) are scored by the probe's own
k-fold CV of a logistic regression (climbing the C grid only while CV still improves,
``FINALIST_C_PATIENCE``), and the winner is the finalist with the best CV accuracy.
A TF-IDF + logistic regression baseline is scored the same way. Test data is never looked at.

Example:
    >>> from bertprobe.datasets import load_sst2
    >>> from bertprobe.encoders.encoder import load_encoder
    >>> train = load_sst2("train")
    >>> texts, labels = train.texts[:300], train.labels[:300]
    >>> result = run_sweep(texts, labels, load_encoder("minilm"), poolings=("mean",), cv=3)
    >>> result.best.pooling, len(result.rows)
    ('mean', 9)
    >>> result.best.cv_accuracy > 0.6
    True
"""

from __future__ import annotations

import time
import typing
import warnings
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass

import numpy as np
from sklearn.exceptions import ConvergenceWarning

from bertprobe.core.errors import BadInputError
from bertprobe.encoders.cache import EmbeddingCache
from bertprobe.encoders.encode import EmbedStats, embed_views
from bertprobe.encoders.encoder import LoadedEncoder
from bertprobe.encoders.options import FeatureSpec, LongMode, RunOptions, WindowPool
from bertprobe.encoders.pooling import POOLINGS, Pooling, View, check_pooling
from bertprobe.heads.multilabel import cv_probe
from bertprobe.heads.probe import COARSE_C_GRID, check_trainable, metric_score
from bertprobe.heads.tfidf import TFIDF_C_GRID, tfidf_pipeline


@dataclass(frozen=True)
class Candidate:
    """One way to build features: a pooling over one or more hidden layers (absolute indices)."""

    name: str
    pooling: str
    layers: tuple[int, ...]

    @property
    def spec(self) -> FeatureSpec:
        return FeatureSpec(check_pooling(self.pooling), self.layers)


@dataclass
class SweepRow:
    """One candidate's scores. ``screen_score``: ridge leave-one-out score of the sweep's
    metric (every row of a screened sweep, accuracy by default; ``None`` where the sweep was
    not screened); ``cv_accuracy``, ``cv_std``, ``C``: the logistic regression's k-fold CV
    (finalists only, ``None`` for candidates the screen left out)."""

    name: str
    pooling: str
    layers: list[int]
    dim: int
    cv_accuracy: float | None
    cv_std: float | None
    C: float | None
    fit_seconds: float
    screen_score: float | None = None
    # The mean CV score of the metric the sweep ranks by (None: accuracy, cv_accuracy).
    cv_score: float | None = None

    @property
    def finalist(self) -> bool:
        return self.cv_accuracy is not None

    @property
    def rank_score(self) -> float | None:
        return self.cv_accuracy if self.cv_score is None else self.cv_score


@dataclass
class SweepResult:
    """CV accuracy of every candidate, the winner, and the TF-IDF baseline, on training data."""

    encoder: str
    n_train: int
    cv: int
    rows: list[SweepRow]
    tfidf_cv_accuracy: float | None
    embed: EmbedStats
    seconds: float
    # The best probe and the TF-IDF baseline voting (mean of their probabilities), same folds.
    vote_cv_accuracy: float | None = None
    # What the candidates are ranked by (see bertprobe.heads.probe.METRICS).
    metric: str = "accuracy"

    screen_seconds: float = 0.0
    tfidf_C: float | None = None  # the TF-IDF baseline's C, chosen by its CV
    # The rows the screen read (all of them, or a stratified sample: see screen_rows).
    screen_rows: int | None = None

    @property
    def finalists(self) -> list[SweepRow]:
        return [r for r in self.rows if r.finalist]

    @property
    def best(self) -> SweepRow:
        """The finalist with the highest CV score of :attr:`metric`; among equals, the
        narrower (cheaper) features."""
        return max(self.finalists, key=lambda r: (round(r.rank_score or 0.0, 6), -r.dim))

    @property
    def vote_wins(self) -> bool:
        """Whether the best probe voting with TF-IDF beats the best probe alone, by CV."""
        best = self.best.cv_accuracy
        return (
            self.vote_cv_accuracy is not None and best is not None and self.vote_cv_accuracy > best
        )

    @property
    def choice(self) -> str:
        return f"{self.best.name} + TF-IDF vote" if self.vote_wins else self.best.name

    def to_dict(self) -> dict:
        return {
            "encoder": self.encoder,
            "n_train": self.n_train,
            "cv": self.cv,
            "metric": self.metric,
            "best": self.best.name,
            "tfidf_cv_accuracy": self.tfidf_cv_accuracy,
            "tfidf_C": self.tfidf_C,
            "vote_cv_accuracy": self.vote_cv_accuracy,
            "choice": self.choice,
            "embed_seconds": self.embed.seconds,
            "screen_seconds": self.screen_seconds,
            "screen_rows": self.screen_rows,
            "seconds": self.seconds,
            "rows": [asdict(r) for r in self.rows],
        }


def candidates(num_hidden_states: int, poolings: Sequence[str]) -> list[Candidate]:
    """Every single layer per pooling, plus the last four and all hidden states concatenated."""
    last = num_hidden_states - 1
    found: list[Candidate] = []
    for pooling in poolings:
        found += [
            Candidate(f"layer {layer} {pooling}", pooling, (layer,))
            for layer in range(num_hidden_states)
        ]
        if last >= 4:
            found.append(
                Candidate(
                    f"layers {last - 3}-{last} {pooling}", pooling, tuple(range(last - 3, last + 1))
                )
            )
        found.append(Candidate(f"layers 0-{last} {pooling}", pooling, tuple(range(last + 1))))
    return found


def parse_poolings(value: str) -> tuple[Pooling, ...]:
    """``"cls,mean"`` -> ("cls", "mean")."""
    names = tuple(p.strip() for p in value.split(",") if p.strip())
    if not names or any(p not in POOLINGS for p in names):
        raise BadInputError(
            f"poolings={value!r}: choose from {', '.join(POOLINGS)}, comma separated",
            param="poolings",
        )
    return tuple(check_pooling(p) for p in names)


# Ridge penalties to screen with, as multiples of the number of training rows (the squared
# loss grows with it): 1e-5 n .. 10 n, half a decade apart.
RIDGE_ALPHA_GRID = tuple(np.logspace(-5, 1, 13).tolist())
# The screen's arithmetic budget in floating-point operations (:func:`screen_rows`): about
# what screening MiniLM's 7 layers x 3 poolings on every SST-2 training row costs (about 15 s
# on 2 cores). Wider encoders are screened on a stratified sample of rows instead, so that the
# screen of a 768-wide, 13-layer encoder costs about as much and not ten times more.
SCREEN_FLOPS = 1.2e12
# Fewer rows than this make the screen's ranking too noisy to be worth its cost: a smaller
# training set is not screened (every candidate gets the full CV, cheap at that size), and a
# wide encoder's screen samples no fewer rows. At 64 labels a class of SST-2 the screen's three
# finalists missed mean pooling and --auto scored 69.9% where every candidate's CV picks it and
# scores 76.8% (seed 0; bench/results/fewshot.json has the five draws).
MIN_SCREEN_ROWS = 1000
# Finalists scored by the logistic regression's k-fold CV after the screen. Three keep the
# exhaustive sweep's choice on SST-2 and on its 2,000-sentence subset (bench/auto_bench.py).
FINALISTS = 3
# A finalist's C search stops two grid values past its best C (LinearProbe's ``patience``):
# lbfgs is slowest at the weakest regularization, which CV seldom picks. The exhaustive sweep
# (finalists=0) scores every C, the reference bench/auto_bench.py checks the choice against.
FINALIST_C_PATIENCE = 2


def run_sweep(
    texts: Sequence[str],
    labels: Sequence | np.ndarray,
    model: LoadedEncoder,
    *,
    poolings: Sequence[str] = POOLINGS,
    cv: int = 5,
    Cs: Sequence[float] = COARSE_C_GRID,
    finalists: int = FINALISTS,
    max_length: int | None = None,
    long: LongMode = "truncate",
    stride: int | None = None,
    window_pool: WindowPool = "mean",
    cache: EmbeddingCache | None = None,
    batch_size: int = 32,
    n_jobs: int | None = None,
    tfidf: bool = True,
    progress: bool = False,
    on_row: Callable[[SweepRow], None] | None = None,
    metric: str = "accuracy",
    class_weight: str | None = None,
    screen_budget: float = SCREEN_FLOPS,
    min_screen_rows: int = MIN_SCREEN_ROWS,
) -> SweepResult:
    r"""Screen every candidate, score the best ``finalists`` by CV on (texts, labels); see the
    module docstring. ``finalists=0`` scores every candidate by CV (the exhaustive sweep, no
    screen).

    ``metric`` ranks the candidates, in the screen and by CV (and picks each finalist's C);
    ``class_weight`` is the probes'. The TF-IDF vote is still decided by accuracy.

    ``labels`` may be a 0/1 matrix (rows, labels) for several labels per text: the screen then
    scores each label's ridge column and the finalists are one probe a label
    (:func:`~bertprobe.heads.multilabel.cv_probe`), every score the mean over labels of each
    label's score (its C per label; the row's ``C`` is their median); no TF-IDF vote.

    ``screen_budget`` bounds the screen's arithmetic (:func:`screen_candidates`); ``math.inf``
    screens every row whatever it costs. A training set of fewer than ``min_screen_rows``
    texts is not screened: every candidate is scored by CV.

    ``max_length``, ``long``, ``stride`` and ``window_pool`` are
    :class:`~bertprobe.encoders.options.FeatureSpec`'s: with ``long="chunk"`` every candidate
    is scored on pooled windows of long texts.
    """
    start = time.perf_counter()
    label_sets = np.ndim(labels) == 2  # scikit-learn's multilabel-indicator target
    if not label_sets:
        check_trainable(labels, cv)
    if finalists < 0:
        raise BadInputError(
            f"finalists={finalists}: give 0 (every candidate) or more", param="finalists"
        )
    views = _ViewFeatures.embed(
        texts,
        model,
        poolings,
        FeatureSpec(max_length=max_length, long=long, stride=stride, window_pool=window_pool),
        RunOptions(batch_size=batch_size, progress=progress),
        cache,
    )
    y = np.asarray(labels)
    everyone = candidates(model.num_hidden_states, poolings)
    screen = _screen_for_finalists(
        views,
        y,
        everyone,
        poolings,
        finalists=finalists if len(y) >= min_screen_rows else 0,
        metric=metric,
        budget=screen_budget,
    )
    rows = _score_candidates(
        everyone,
        views,
        y,
        screen,
        Cs=Cs,
        cv=cv,
        n_jobs=n_jobs,
        class_weight=class_weight,
        metric=metric,
        on_row=on_row,
    )
    result = SweepResult(
        encoder=model.ref.name,
        n_train=len(texts),
        cv=cv,
        rows=rows,
        tfidf_cv_accuracy=None,
        embed=views.stats,
        seconds=0.0,
        screen_seconds=screen.seconds,
        metric=metric,
        screen_rows=screen.rows,
    )
    if tfidf and not label_sets:
        _score_tfidf_and_vote(result, views, texts, y, n_jobs=n_jobs)
    result.seconds = time.perf_counter() - start
    return result


@dataclass(frozen=True)
class _ViewFeatures:
    """Every training text's vector for every hidden layer x pooling, from one forward pass.

    The sweep's one expensive step: each candidate's features are then a cheap slice of
    ``by_view`` (texts, views, hidden), whose views are ordered pooling by pooling, layer by
    layer, as :func:`screen_candidates` reads them.
    """

    by_view: np.ndarray
    num_hidden_states: int
    position: dict[View, int]
    stats: EmbedStats

    @classmethod
    def embed(
        cls,
        texts: Sequence[str],
        model: LoadedEncoder,
        poolings: Sequence[str],
        spec: FeatureSpec,
        run: RunOptions,
        cache: EmbeddingCache | None,
    ) -> _ViewFeatures:
        """Embed ``texts`` once for every layer of ``model`` in every pooling.

        Through ``cache``: the views it holds already are not computed again.
        """
        views = [
            View(layer, pooling) for pooling in poolings for layer in range(model.num_hidden_states)
        ]
        X, stats = embed_views(texts, model, views, spec, run, cache=cache)
        return cls(
            X.reshape(len(texts), len(views), model.hidden_size),
            model.num_hidden_states,
            {view: j for j, view in enumerate(views)},
            stats,
        )

    @property
    def hidden_size(self) -> int:
        return self.by_view.shape[2]

    def width(self, cand: Candidate) -> int:
        """How many features ``cand`` has: one hidden vector a layer."""
        return len(cand.layers) * self.hidden_size

    def of(self, cand: Candidate) -> np.ndarray:
        """``cand``'s features (texts, width): its layers' vectors side by side."""
        chosen = [self.position[View(layer, cand.pooling)] for layer in cand.layers]
        return self.by_view[:, chosen, :].reshape(len(self.by_view), -1)


@dataclass(frozen=True)
class _Screen:
    """What the screen decided: each candidate's screen score, and the finalists.

    Attributes
    ----------
    scores : dict of str to float
        Each candidate's ridge leave-one-out score, by name; empty when nothing was screened.
    finalists : frozenset of str
        The names of the candidates cross-validation scores.
    seconds : float
        How long the screen took.
    rows : int or None
        The rows the screen read (all, or a stratified sample); None without a screen.
    """

    scores: dict[str, float]
    finalists: frozenset[str]
    seconds: float
    rows: int | None


def _screen_for_finalists(
    views: _ViewFeatures,
    y: np.ndarray,
    everyone: Sequence[Candidate],
    poolings: Sequence[str],
    *,
    finalists: int,
    metric: str,
    budget: float,
) -> _Screen:
    """Screen ``everyone`` by :func:`screen_candidates` and keep the best ``finalists`` for CV.

    No screen when every candidate is a finalist anyway (``finalists`` 0, or as many as the
    candidates): then all of them are. Among equal screen scores the narrower features go first.
    """
    screen_start = time.perf_counter()
    screening = bool(finalists) and finalists < len(everyone)
    scores = (
        screen_candidates(
            views.by_view,
            y,
            everyone,
            views.num_hidden_states,
            poolings,
            metric=metric,
            budget=budget,
        )
        if screening
        else {}
    )
    seconds = time.perf_counter() - screen_start
    ranked = sorted(everyone, key=lambda c: (-round(scores.get(c.name, 1.0), 6), len(c.layers)))
    return _Screen(
        scores,
        frozenset(cand.name for cand in ranked[: finalists if screening else len(everyone)]),
        seconds,
        (screen_rows(len(y), [views.width(c) for c in everyone], budget) if screening else None),
    )


def _score_candidates(
    everyone: Sequence[Candidate],
    views: _ViewFeatures,
    y: np.ndarray,
    screen: _Screen,
    *,
    Cs: Sequence[float],
    cv: int,
    n_jobs: int | None,
    class_weight: str | None,
    metric: str,
    on_row: Callable[[SweepRow], None] | None,
) -> list[SweepRow]:
    """A row per candidate, in ``everyone``'s order.

    The finalists are scored by CV (:func:`_finalist_row`, timed); the others keep their screen
    score alone. ``on_row`` sees each row as it is done: CV is the slow part, and a caller shows
    progress by it.
    """
    rows: list[SweepRow] = []
    for cand in everyone:
        if cand.name not in screen.finalists:
            row = SweepRow(
                cand.name, cand.pooling, list(cand.layers), views.width(cand), None, None, None,
                0.0, screen.scores[cand.name],
            )  # fmt: skip
        else:
            fit_start = time.perf_counter()
            row = _finalist_row(
                cand,
                views.width(cand),
                views.of(cand),
                y,
                Cs=Cs,
                cv=cv,
                n_jobs=n_jobs,
                class_weight=class_weight,
                metric=metric,
                patience=FINALIST_C_PATIENCE if screen.scores else None,
                screen_score=screen.scores.get(cand.name),
            )
            row.fit_seconds = time.perf_counter() - fit_start
        rows.append(row)
        if on_row is not None:
            on_row(row)
    return rows


def _score_tfidf_and_vote(
    result: SweepResult,
    views: _ViewFeatures,
    texts: Sequence[str],
    y: np.ndarray,
    *,
    n_jobs: int | None,
) -> None:
    """Score the TF-IDF baseline, and its vote with the best probe, into ``result``.

    The baseline's CV accuracy and C (:func:`tfidf_cv_accuracy`), then the CV accuracy of
    ``result.best`` voting with it at those Cs (:func:`vote_cv_accuracy`), on the probes' folds.
    """
    result.tfidf_cv_accuracy, tfidf_C = tfidf_cv_accuracy(texts, y, cv=result.cv, n_jobs=n_jobs)
    result.tfidf_C = tfidf_C
    winner = result.best
    result.vote_cv_accuracy = vote_cv_accuracy(
        views.of(Candidate(winner.name, winner.pooling, tuple(winner.layers))),
        texts,
        y,
        probe_C=typing.cast(float, winner.C),
        tfidf_C=tfidf_C,
        cv=result.cv,
        n_jobs=n_jobs,
    )


def _finalist_row(
    cand: Candidate,
    dim: int,
    X: np.ndarray,
    y: np.ndarray,
    *,
    Cs: Sequence[float],
    cv: int,
    n_jobs: int | None,
    class_weight: str | None,
    metric: str,
    patience: int | None,
    screen_score: float | None,
) -> SweepRow:
    """A finalist's CV row: the cross-validated probe's figures (for a 0/1 label matrix, one
    probe a label, each figure the mean over labels: see :func:`~bertprobe.heads.multilabel.
    cv_probe`)."""
    probe = cv_probe(
        y,
        Cs=tuple(Cs),
        cv=cv,
        n_jobs=n_jobs,
        class_weight=class_weight,
        scoring=metric,
        patience=patience,
    ).fit(X, y)
    accuracy, std, C, score = probe.cv_summary()
    return SweepRow(
        cand.name,
        cand.pooling,
        list(cand.layers),
        dim,
        accuracy,
        std,
        C,
        0.0,
        screen_score,
        score if metric != "accuracy" else None,
    )


def screen_candidates(
    by_view: np.ndarray,
    y: np.ndarray,
    cands: Sequence[Candidate],
    num_hidden_states: int,
    poolings: Sequence[str],
    alphas: Sequence[float] = RIDGE_ALPHA_GRID,
    metric: str = "accuracy",
    budget: float = SCREEN_FLOPS,
) -> dict[str, float]:
    """Each candidate's ridge leave-one-out ``metric`` (at its best penalty), by name.

    ``by_view`` is (texts, views, hidden) with the views ordered pooling by pooling, layer by
    layer, as :func:`run_sweep` embeds them. Each candidate's standardized features are
    decomposed the cheaper way: their Gram matrix (features x features) when they are narrower
    than the rows, the rows' kernel matrix (rows x rows) when wider, so the cost grows with the
    number of candidates, not with the cube of the widest one.

    ``budget`` bounds the screen's arithmetic (floating-point operations, see
    :func:`screen_rows`): past it every candidate is screened on the same stratified sample of
    rows, the most the budget allows; the finalists are still scored on every row by CV.
    """
    n, _, hidden = by_view.shape
    widths = [len(c.layers) * hidden for c in cands]
    rows = _screen_sample(y, screen_rows(n, widths, budget))
    y = y[rows]
    targets = _signed_targets(y)
    m = len(y)
    penalties = m * np.asarray(alphas)
    scores: dict[str, float] = {}
    for p, pooling in enumerate(poolings):
        block = by_view[rows, p * num_hidden_states : (p + 1) * num_hidden_states, :]
        Z = _standardize(block.reshape(m, -1))
        for cand in cands:
            if cand.pooling != pooling:
                continue
            cols = np.concatenate([np.arange(hidden) + layer * hidden for layer in cand.layers])
            Zc = np.ascontiguousarray(Z[:, cols])
            if len(cols) <= m:
                loo = _ridge_loo_predictions(Zc, targets, Zc.T @ Zc, penalties)
            else:
                loo = _ridge_loo_predictions_dual(Zc, targets, Zc @ Zc.T, penalties)
            scores[cand.name] = max(_screen_scores(loo, targets, y, metric))
    return scores


def screen_rows(n: int, widths: Sequence[int], budget: float = SCREEN_FLOPS) -> int:
    """The most rows (up to ``n``) whose screen of candidates ``widths`` wide costs at most
    ``budget`` floating-point operations, by :func:`screen_cost`; at least ``MIN_SCREEN_ROWS``.

    >>> screen_rows(6920, [384] * 7 + [1536, 2688])  # MiniLM's candidates: every row
    6920
    >>> screen_rows(6920, [768] * 13 + [3072, 9984]) < 6920  # mpnet's: a sample
    True
    """
    if screen_cost(n, widths) <= budget:
        return n
    low, high = min(n, MIN_SCREEN_ROWS), n
    while high - low > 1:  # the cost grows with the rows
        mid = (low + high) // 2
        low, high = (mid, high) if screen_cost(mid, widths) <= budget else (low, mid)
    return low


def screen_cost(rows: int, widths: Sequence[int]) -> float:
    """Floating-point operations of screening candidates ``widths`` wide on ``rows`` rows:
    per candidate the cheaper of its Gram matrix and eigendecomposition (``2 r d^2 + 9 d^3``)
    and its rows' kernel and eigendecomposition (``2 r^2 d + 9 r^3``)."""
    r = float(rows)
    return sum(min(2 * r * d * d + 9.0 * d**3, 2 * r * r * d + 9.0 * r**3) for d in widths)


def _screen_sample(y: np.ndarray, size: int) -> np.ndarray:
    """Row indices: all of them, or a seeded sample of ``size`` stratified by class."""
    n = len(y)
    if size >= n:
        return np.arange(n)
    from sklearn.model_selection import train_test_split

    strata = y if y.ndim == 1 and np.unique(y, return_counts=True)[1].min() >= 2 else None
    picked, _ = train_test_split(np.arange(n), train_size=size, stratify=strata, random_state=0)
    return np.sort(picked)


def ridge_loo_accuracy(
    X: np.ndarray, y: Sequence, alphas: Sequence[float] = RIDGE_ALPHA_GRID
) -> tuple[float, float]:
    """Leave-one-out accuracy of a ridge classifier on standardized ``X`` at its best penalty,
    and that penalty (a multiple of the row count, from ``alphas``).

    Exact and cheap: one eigendecomposition of the features' Gram matrix gives every row's
    held-out prediction for every penalty (the hat-matrix identity). scikit-learn's
    :class:`~sklearn.linear_model.RidgeClassifierCV` computes the same leave-one-out
    predictions, but in the covariance mode it picks when rows outnumber features it redoes a
    rows x features^2 product per penalty (10.8 s against 0.5 s here on 6,920 x 384), and its
    ``scoring="accuracy"`` compares the held-out scores to the -1/+1 targets as they are.

    >>> import numpy as np
    >>> rng = np.random.default_rng(0)
    >>> X = rng.normal(size=(300, 5)); y = (X[:, 0] + 0.5 * rng.normal(size=300) > 0)
    >>> accuracy, alpha = ridge_loo_accuracy(X, y)
    >>> bool(accuracy > 0.8)
    True
    """
    Z = _standardize(np.asarray(X, dtype=np.float64))
    targets = _signed_targets(np.asarray(y))
    multiples = np.asarray(alphas, dtype=np.float64)
    loo = _ridge_loo_predictions(Z, targets, Z.T @ Z, len(Z) * multiples)
    accuracy = _accuracy_of(loo, targets)
    best = int(accuracy.argmax())
    return float(accuracy[best]), float(multiples[best])


def _standardize(X: np.ndarray) -> np.ndarray:
    from sklearn.preprocessing import StandardScaler

    return StandardScaler().fit_transform(X)


def _signed_targets(y: np.ndarray) -> np.ndarray:
    """-1/+1 targets: one column for two classes, one per class for more (as RidgeClassifier),
    one per label for a 0/1 label matrix."""
    from sklearn.preprocessing import LabelBinarizer

    if y.ndim == 2:
        return np.where(y > 0, 1.0, -1.0)
    return LabelBinarizer(neg_label=-1, pos_label=1).fit_transform(y).astype(np.float64)


def _ridge_loo_predictions(
    Z: np.ndarray, targets: np.ndarray, gram: np.ndarray, alphas: np.ndarray
) -> np.ndarray:
    """Held-out ridge predictions (rows, targets, alphas) for centered ``Z`` and an intercept,
    from the features' Gram matrix ``gram = Z.T @ Z = V diag(s) V.T``: see
    :func:`_ridge_loo_from_spectrum`, with ``Z V`` as the rows' coordinates."""
    s, V = np.linalg.eigh(gram)
    return _ridge_loo_from_spectrum((Z @ V.astype(Z.dtype)).astype(np.float64), s, targets, alphas)


def _ridge_loo_predictions_dual(
    Z: np.ndarray, targets: np.ndarray, kernel: np.ndarray, alphas: np.ndarray
) -> np.ndarray:
    """:func:`_ridge_loo_predictions` from the rows' kernel ``kernel = Z @ Z.T = U diag(s)
    U.T`` instead, for features wider than the rows: ``Z V = U diag(sqrt(s))`` (the thin SVD),
    so the same held-out predictions come from a rows x rows decomposition."""
    s, U = np.linalg.eigh(kernel.astype(np.float64))
    s = np.clip(s, 0.0, None)
    return _ridge_loo_from_spectrum(U * np.sqrt(s), s, targets, alphas)


def _ridge_loo_from_spectrum(
    ZV: np.ndarray, s: np.ndarray, targets: np.ndarray, alphas: np.ndarray
) -> np.ndarray:
    """Held-out ridge predictions (rows, targets, alphas) from the rows' coordinates ``ZV`` on
    the features' principal axes and the squared singular values ``s``.

    The fit at penalty a is ``mean + ZV (s + a)^-1 ZV.T (targets - mean)``, the hat matrix's
    diagonal ``1/n + sum_j ZV_ij^2 / (s_j + a)``, and a row's held-out residual its residual
    over ``1 - h_i``.
    """
    n = len(ZV)
    s = np.clip(s, 0.0, None)
    mean = targets.mean(axis=0)
    projected = ZV.T @ (targets - mean)
    squared = ZV**2
    out = np.empty((n, targets.shape[1], len(alphas)))
    for k, alpha in enumerate(alphas):
        inverse = 1.0 / (s + alpha)
        fitted = mean + ZV @ (projected * inverse[:, None])
        leverage = 1.0 / n + squared @ inverse
        out[:, :, k] = targets - (targets - fitted) / (1.0 - leverage)[:, None]
    return out


def _screen_scores(
    predictions: np.ndarray, targets: np.ndarray, y: np.ndarray, metric: str
) -> list[float]:
    """``metric`` per alpha of held-out ridge scores; accuracy directly, the others through
    :func:`~bertprobe.heads.probe.metric_score` on the scores as stand-in probabilities. For
    a 0/1 label matrix, the mean over labels of each label's score."""
    if y.ndim == 2:
        return [
            float(np.mean([
                _screen_scores(predictions[:, [j], :], targets[:, [j]], y[:, j], metric)[k]
                for j in range(y.shape[1])
            ]))
            for k in range(predictions.shape[2])
        ]  # fmt: skip
    if metric == "accuracy":
        return _accuracy_of(predictions, targets).tolist()
    from scipy.special import softmax

    classes = np.unique(y)
    found = []
    for k in range(predictions.shape[2]):
        scores = predictions[:, :, k]
        if targets.shape[1] == 1:  # two classes: the score is for classes[1]
            scores = np.column_stack([-scores[:, 0], scores[:, 0]])
        found.append(metric_score(metric, y, softmax(scores, axis=1), classes))
    return found


def _accuracy_of(predictions: np.ndarray, targets: np.ndarray) -> np.ndarray:
    """Accuracy per alpha of (rows, targets, alphas) scores against -1/+1 targets."""
    if targets.shape[1] == 1:
        return (np.sign(predictions[:, 0, :]) == targets[:, [0]]).mean(axis=0)
    return (predictions.argmax(axis=1) == targets.argmax(axis=1)[:, None]).mean(axis=0)


def tfidf_cv_accuracy(
    texts: Sequence[str],
    y,
    *,
    cv: int = 5,
    Cs: Sequence[float] = TFIDF_C_GRID,
    n_jobs: int | None = None,
) -> tuple[float, float]:
    """Mean CV accuracy of the TF-IDF baseline at its best C (and that C), scored as the probes
    are.

    The vocabulary and IDF weights come from all training texts (no labels involved), as the
    probes' standardization does; the comparison is like for like.
    """
    pipeline = tfidf_pipeline(cv=cv, Cs=Cs, n_jobs=n_jobs).fit(list(texts), y)
    search = pipeline[-1]
    scores = np.asarray(search.scores_)[:, 0, :]
    return float(scores.mean(axis=0).max()), float(search.C_)


def vote_cv_accuracy(
    features: np.ndarray,
    texts: Sequence[str],
    y,
    *,
    probe_C: float,
    tfidf_C: float,
    cv: int = 5,
    n_jobs: int | None = None,
) -> float:
    """CV accuracy of the probe and the TF-IDF baseline voting with equal weight.

    Each fold trains both on the other folds (at the C each chose on the whole training set)
    and averages their probabilities on the held-out fold; the folds are the probes' folds.
    A transformer's features and word n-grams make different mistakes, so the vote often
    beats both.
    """
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import StratifiedKFold, cross_val_predict
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    folds = StratifiedKFold(cv, shuffle=True, random_state=0)
    probe = make_pipeline(StandardScaler(), LogisticRegression(C=probe_C, max_iter=1000))
    text = tfidf_pipeline(cv=cv)
    text.steps[-1] = ("logisticregression", LogisticRegression(C=tfidf_C, max_iter=1000))
    y = np.asarray(y)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        p_probe = cross_val_predict(
            probe, features, y, cv=folds, method="predict_proba", n_jobs=n_jobs
        )
    p_text = cross_val_predict(
        text, list(texts), y, cv=folds, method="predict_proba", n_jobs=n_jobs
    )
    classes = np.unique(y)
    return float(np.mean(classes[(p_probe + p_text).argmax(axis=1)] == y))
