"""Which features? One forward pass, then every layer x pooling scored by cross-validation.

The recipe's fixed choice (last layer, [CLS]) is rarely the best probe input: middle layers and
pooled token vectors often carry more of the signal. :func:`run_sweep` fills every hidden layer
x pooling into the cache with one forward pass, scores each single layer and a few
concatenations (last four layers, all layers) by k-fold CV accuracy on the training data only,
and scores a TF-IDF + logistic regression baseline the same way. Test data is never looked at.

Example:
    >>> from bertprobe.datasets import load_sst2
    >>> from bertprobe.encode import load_encoder
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
import warnings
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass

import numpy as np
from sklearn.exceptions import ConvergenceWarning

from bertprobe.cache import EmbeddingCache
from bertprobe.encode import (
    POOLINGS,
    EmbedStats,
    FeatureSpec,
    LoadedEncoder,
    Pooling,
    View,
    check_pooling,
    embed_views,
)
from bertprobe.errors import BadInputError
from bertprobe.probe import COARSE_C_GRID, LinearProbe, check_trainable


@dataclass(frozen=True)
class Candidate:
    """One way to build features: a pooling over one or more hidden layers (absolute indices)."""

    name: str
    pooling: str
    layers: tuple[int, ...]

    @property
    def spec(self) -> FeatureSpec:
        return FeatureSpec(self.pooling, self.layers)


@dataclass
class SweepRow:
    name: str
    pooling: str
    layers: list[int]
    dim: int
    cv_accuracy: float
    cv_std: float
    C: float
    fit_seconds: float


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

    @property
    def best(self) -> SweepRow:
        """Highest CV accuracy; among equals, the narrower (cheaper) features."""
        return max(self.rows, key=lambda r: (round(r.cv_accuracy, 6), -r.dim))

    @property
    def vote_wins(self) -> bool:
        """Whether the best probe voting with TF-IDF beats the best probe alone, by CV."""
        return self.vote_cv_accuracy is not None and self.vote_cv_accuracy > self.best.cv_accuracy

    @property
    def choice(self) -> str:
        return f"{self.best.name} + TF-IDF vote" if self.vote_wins else self.best.name

    def to_dict(self) -> dict:
        return {
            "encoder": self.encoder,
            "n_train": self.n_train,
            "cv": self.cv,
            "best": self.best.name,
            "tfidf_cv_accuracy": self.tfidf_cv_accuracy,
            "vote_cv_accuracy": self.vote_cv_accuracy,
            "choice": self.choice,
            "embed_seconds": self.embed.seconds,
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
            f"poolings={value!r}: choose from {', '.join(POOLINGS)}, comma separated"
        )
    return tuple(check_pooling(p) for p in names)


def run_sweep(
    texts: Sequence[str],
    labels: Sequence,
    model: LoadedEncoder,
    *,
    poolings: Sequence[str] = POOLINGS,
    cv: int = 5,
    Cs: Sequence[float] = COARSE_C_GRID,
    max_length: int | None = None,
    long: str = "truncate",
    stride: int | None = None,
    window_pool: str = "mean",
    cache: EmbeddingCache | None = None,
    batch_size: int = 32,
    n_jobs: int | None = None,
    tfidf: bool = True,
    progress: bool = False,
    on_row: Callable[[SweepRow], None] | None = None,
) -> SweepResult:
    """Score every candidate by CV on (texts, labels); see the module docstring.

    ``long``, ``stride`` and ``window_pool`` are :func:`~bertprobe.encode.embed_views`'s: with
    ``long="chunk"`` every candidate is scored on pooled windows of long texts.
    """
    start = time.perf_counter()
    check_trainable(labels, cv)
    views = [
        View(layer, pooling) for pooling in poolings for layer in range(model.num_hidden_states)
    ]
    X, stats = embed_views(
        texts,
        model,
        views,
        max_length=max_length,
        long=long,
        stride=stride,
        window_pool=window_pool,
        batch_size=batch_size,
        cache=cache,
        progress=progress,
    )
    by_view = X.reshape(len(texts), len(views), model.hidden_size)
    position = {view: j for j, view in enumerate(views)}
    y = np.asarray(labels)

    rows: list[SweepRow] = []
    for cand in candidates(model.num_hidden_states, poolings):
        chosen = [position[View(layer, cand.pooling)] for layer in cand.layers]
        features = by_view[:, chosen, :].reshape(len(texts), -1)
        fit_start = time.perf_counter()
        probe = LinearProbe(Cs=tuple(Cs), cv=cv, n_jobs=n_jobs).fit(features, y)
        best = int(np.argmin(np.abs(probe.Cs_ - probe.C_)))
        row = SweepRow(
            cand.name,
            cand.pooling,
            list(cand.layers),
            features.shape[1],
            probe.cv_accuracy_,
            float(probe.cv_scores_[:, best].std()),
            probe.C_,
            time.perf_counter() - fit_start,
        )
        rows.append(row)
        if on_row is not None:
            on_row(row)

    result = SweepResult(
        encoder=model.ref.name,
        n_train=len(texts),
        cv=cv,
        rows=rows,
        tfidf_cv_accuracy=None,
        embed=stats,
        seconds=0.0,
    )
    if tfidf:
        result.tfidf_cv_accuracy, tfidf_C = tfidf_cv_accuracy(texts, y, cv=cv, n_jobs=n_jobs)
        winner = result.best
        chosen = [position[View(layer, winner.pooling)] for layer in winner.layers]
        result.vote_cv_accuracy = vote_cv_accuracy(
            by_view[:, chosen, :].reshape(len(texts), -1),
            texts,
            y,
            probe_C=winner.C,
            tfidf_C=tfidf_C,
            cv=cv,
            n_jobs=n_jobs,
        )
    result.seconds = time.perf_counter() - start
    return result


# TF-IDF vectors are unit length and sparse: their useful C values sit higher than a probe's.
TFIDF_C_GRID = tuple(np.logspace(-1, 2, 7).tolist())


def tfidf_pipeline(cv: int = 5, Cs: Sequence[float] = TFIDF_C_GRID, n_jobs: int | None = None):
    """The no-transformer baseline: word 1-2-gram TF-IDF into a CV-tuned logistic regression."""
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.linear_model import LogisticRegressionCV
    from sklearn.model_selection import StratifiedKFold
    from sklearn.pipeline import make_pipeline

    return make_pipeline(
        TfidfVectorizer(ngram_range=(1, 2), sublinear_tf=True, min_df=1),
        LogisticRegressionCV(
            Cs=list(Cs),
            l1_ratios=(0.0,),
            scoring="accuracy",
            cv=StratifiedKFold(cv, shuffle=True, random_state=0),
            max_iter=1000,
            n_jobs=n_jobs,
            use_legacy_attributes=False,
        ),
    )


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
