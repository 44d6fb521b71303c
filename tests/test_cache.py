"""The embedding cache: hits, keys, and resuming an interrupted run."""

from __future__ import annotations

import numpy as np
import pytest

from bertprobe.encoders.cache import open_cache
from bertprobe.encoders.encode import embed
from bertprobe.encoders.options import FeatureSpec, RunOptions


def texts_for(n: int) -> list[str]:
    return [f"review number {i} says the film was {'good' if i % 2 else 'bad'}" for i in range(n)]


def test_a_second_run_reads_everything_from_the_cache(tiny_distilbert, tmp_path):
    texts = texts_for(30)
    with open_cache(tmp_path) as cache:
        first, cold = embed(texts, str(tiny_distilbert), FeatureSpec("mean"), cache=cache)
        second, warm = embed(texts, str(tiny_distilbert), FeatureSpec("mean"), cache=cache)
    assert (cold.n_computed, cold.n_cached) == (30, 0)
    assert (warm.n_computed, warm.n_cached) == (0, 30)
    assert np.array_equal(first, second)


def test_views_do_not_mix_and_concatenations_reuse_single_layers(tiny_distilbert, tmp_path):
    texts = texts_for(10)
    with open_cache(tmp_path) as cache:
        embed(texts, str(tiny_distilbert), FeatureSpec("mean", (1,)), cache=cache)
        embed(texts, str(tiny_distilbert), FeatureSpec("mean", (2,)), cache=cache)
        _, other_pooling = embed(texts, str(tiny_distilbert), FeatureSpec("cls", (2,)), cache=cache)
        both, concat = embed(texts, str(tiny_distilbert), FeatureSpec("mean", (1, 2)), cache=cache)
    assert other_pooling.n_cached == 0
    assert concat.n_cached == 10 and concat.n_computed == 0
    fresh, _ = embed(texts, str(tiny_distilbert), FeatureSpec("mean", (1, 2)))
    assert np.allclose(both, fresh, atol=1e-6)


def test_an_interrupted_run_resumes_with_only_the_rest(tiny_distilbert, tmp_path):
    texts = texts_for(40)

    def stop_after_two_batches(n_done: int) -> None:
        if n_done >= 16:
            raise KeyboardInterrupt

    with open_cache(tmp_path) as cache, pytest.raises(KeyboardInterrupt):
        embed(
            texts,
            str(tiny_distilbert),
            FeatureSpec("cls"),
            RunOptions(batch_size=8),
            cache=cache,
            on_batch=stop_after_two_batches,
        )
    # A new process would open the file afresh: so do we.
    with open_cache(tmp_path) as cache:
        assert cache.count() == 16
        resumed, stats = embed(
            texts, str(tiny_distilbert), FeatureSpec("cls"), RunOptions(batch_size=8), cache=cache
        )
    assert (stats.n_cached, stats.n_computed) == (16, 24)
    uncached, _ = embed(texts, str(tiny_distilbert), FeatureSpec("cls"), RunOptions(batch_size=8))
    assert np.allclose(resumed, uncached, atol=1e-6)


def test_cache_dir_that_cannot_be_created_is_a_user_error(tmp_path):
    from bertprobe.core.errors import BadInputError

    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(BadInputError, match="use_cache=False"):
        open_cache(blocker / "sub")
