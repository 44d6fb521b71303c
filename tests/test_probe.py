"""scikit-learn compatibility of LinearProbe and TextEmbedder, and what the probe learns."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from sklearn.base import clone
from sklearn.model_selection import GridSearchCV, cross_val_score
from sklearn.pipeline import make_pipeline
from sklearn.utils.estimator_checks import parametrize_with_checks

from bertprobe import LinearProbe, TextEmbedder
from bertprobe.core.errors import BadInputError
from bertprobe.heads.probe import DEFAULT_C_GRID, SEED_C_GRID, OutOfCoreProbe, parse_c_grid


@parametrize_with_checks([LinearProbe(cv=3), OutOfCoreProbe()])
def test_probes_pass_sklearn_estimator_checks(estimator, check):
    check(estimator)


def blobs(n_classes: int, n: int = 120, seed: int = 0):
    rng = np.random.default_rng(seed)
    centres = rng.normal(scale=3.0, size=(n_classes, 10))
    y = np.arange(n) % n_classes
    return centres[y] + rng.normal(size=(n, 10)), y


@pytest.mark.parametrize("n_classes", [2, 3])
def test_probe_learns_and_reports_its_cv_search(n_classes):
    X, y = blobs(n_classes)
    names = np.array(["neg", "neu", "pos"])[y]
    probe = LinearProbe(cv=4).fit(X, names)
    assert probe.classes_.tolist() == sorted(set(names.tolist()))
    assert probe.cv_scores_.shape == (4, len(DEFAULT_C_GRID))
    assert probe.C_ in probe.Cs_
    assert probe.cv_accuracy_ == pytest.approx(probe.cv_scores_.max(axis=0).max(), abs=0.2)
    assert probe.cv_accuracy_ > 0.9
    proba = probe.predict_proba(X)
    assert proba.shape == (len(X), n_classes)
    assert np.allclose(proba.sum(axis=1), 1.0)
    assert (probe.predict(X) == names).mean() > 0.9


def noisy_blobs(seed: int, spread: float, n: int = 160, dims: int = 30):
    """Two classes whose overlap ``spread`` sets: the larger, the stronger the best C's
    regularization."""
    rng = np.random.default_rng(seed)
    y = np.arange(n) % 2
    X = rng.normal(scale=spread, size=(n, dims))
    X[:, 0] += np.where(y == 1, 1.0, -1.0)
    return X, y


@settings(max_examples=20, deadline=None)
@given(
    seed=st.integers(0, 10_000),
    spread=st.floats(0.05, 8.0),
    patience=st.integers(1, 3),
)
def test_patience_scores_a_prefix_of_the_grid_and_stops_only_past_a_peak(seed, spread, patience):
    X, y = noisy_blobs(seed, spread)
    full = LinearProbe(cv=3).fit(X, y)
    early = LinearProbe(cv=3, patience=patience).fit(X, y)
    reached = len(early.Cs_)
    # What it scored is what the whole search scores for the same C (the same warm-started
    # path, cut short), and it stopped only with `patience` values past its best, or at the end.
    assert early.Cs_.tolist() == sorted(DEFAULT_C_GRID)[:reached]
    np.testing.assert_array_equal(early.cv_scores_, full.cv_scores_[:, :reached])
    best = int(np.flatnonzero(early.Cs_ == early.C_)[0])
    assert reached == len(DEFAULT_C_GRID) or best + patience < reached
    if int(np.flatnonzero(full.Cs_ == full.C_)[0]) < reached:
        assert early.C_ == full.C_


def test_patience_stops_early_on_noisy_features_and_climbs_on_clean_ones():
    noisy = LinearProbe(cv=3, patience=2).fit(*noisy_blobs(0, spread=6.0))
    assert len(noisy.Cs_) < len(DEFAULT_C_GRID)
    clean = LinearProbe(cv=3, patience=2).fit(*noisy_blobs(0, spread=0.05))
    assert len(clean.Cs_) > 2 + 2  # past the first scoring, because CV kept improving


@pytest.mark.parametrize("patience", [0, -1, 1.5, "2", True])
def test_patience_must_be_a_whole_number_from_one(patience):
    with pytest.raises(BadInputError, match="patience="):
        LinearProbe(cv=3, patience=patience).fit(*noisy_blobs(0, spread=1.0))


def test_c_grids():
    assert parse_c_grid("seed") == SEED_C_GRID
    assert SEED_C_GRID[0] == 0.0001 and SEED_C_GRID[-1] == 100 and len(SEED_C_GRID) == 20
    assert parse_c_grid("0.1, 1,10") == (0.1, 1.0, 10.0)
    for bad in ("", "x", "1,-2"):
        with pytest.raises(BadInputError, match="Cs="):
            parse_c_grid(bad)


def test_untrainable_labels_are_explained():
    X, y = blobs(2, n=20)
    with pytest.raises(BadInputError, match="one class only"):
        LinearProbe().fit(X, np.zeros(20, dtype=int))
    rare = y.copy()
    rare[:] = 0
    rare[:3] = 1
    with pytest.raises(BadInputError, match=r"too few examples of class 1 \(3\).*at most 3"):
        LinearProbe(cv=5).fit(X, rare)


def test_embedder_params_round_trip_and_clone(tiny_distilbert):
    embedder = TextEmbedder(str(tiny_distilbert), pooling="mean", layers="-2,-1", batch_size=7)
    assert embedder.get_params()["layers"] == "-2,-1"
    copy = clone(embedder)
    assert copy.get_params() == embedder.get_params()
    X = copy.fit_transform(["a fine film", "a dull one"])
    assert X.shape == (2, 128) and X.dtype == np.float32
    assert copy.get_feature_names_out()[0] == "layer1_mean_0"


def test_pipeline_works_in_grid_search_and_cross_val_score(tiny_distilbert, sentiment_rows):
    texts = [t for t, _ in sentiment_rows]
    labels = np.array(["pos" if y else "neg" for _, y in sentiment_rows])
    pipeline = make_pipeline(TextEmbedder(str(tiny_distilbert)), LinearProbe(cv=3))
    search = GridSearchCV(pipeline, {"textembedder__pooling": ["cls", "mean"]}, cv=3)
    search.fit(texts, labels)
    assert search.best_params_["textembedder__pooling"] in ("cls", "mean")
    # Random weights still keep word identity in a mean of token vectors: the probe learns it.
    assert search.cv_results_["mean_test_score"].max() > 0.8
    assert set(search.predict(["the film was great"])) <= {"pos", "neg"}
    scores = cross_val_score(
        make_pipeline(TextEmbedder(str(tiny_distilbert), pooling="mean"), LinearProbe(cv=3)),
        texts,
        labels,
        cv=3,
    )
    assert scores.shape == (3,) and scores.mean() > 0.8


def test_embedder_rejects_a_single_string(tiny_distilbert):
    embedder = TextEmbedder(str(tiny_distilbert)).fit(["x"])
    with pytest.raises(BadInputError, match="single string"):
        embedder.transform("just one text")


def test_out_of_core_probe_learns_from_chunks_as_from_arrays():
    X, y = blobs(3, n=3000)
    chunked = OutOfCoreProbe(chunk_rows=10_000).fit(X, y)
    step = 250
    streamed = OutOfCoreProbe().fit_chunks(
        lambda: ((X[i : i + step], y[i : i + step]) for i in range(0, len(y), step))
    )
    assert streamed.holdout_accuracy_ > 0.95 and chunked.holdout_accuracy_ > 0.95
    assert streamed.n_train_ + round(0.1 * 3000) == pytest.approx(3000, abs=60)
    assert streamed.alpha_ in streamed.alphas
    np.testing.assert_allclose(streamed.predict_proba(X).sum(axis=1), 1.0)
    assert np.mean(streamed.predict(X) == chunked.predict(X)) > 0.97


def test_out_of_core_probe_accuracy_is_close_to_the_linear_probe():
    from sklearn.feature_extraction.text import TfidfVectorizer

    from bertprobe.datasets import load_sst2

    train, test = load_sst2("train"), load_sst2("test")
    vectorizer = TfidfVectorizer(max_features=300).fit(train.texts)
    X_train = vectorizer.transform(train.texts).toarray()
    X_test = vectorizer.transform(test.texts).toarray()
    exact = LinearProbe(Cs="coarse").fit(X_train, train.labels).score(X_test, test.labels)
    sgd = OutOfCoreProbe().fit(X_train, np.array(train.labels)).score(X_test, test.labels)
    assert exact > 0.65
    assert sgd > exact - 0.02, (sgd, exact)
