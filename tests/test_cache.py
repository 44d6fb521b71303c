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


def _open_write_read(folder, barrier, vectors, share, answers):
    """One process: at the barrier, open the cache folder (new: the first one makes it), write
    its share of the vectors, and read every vector the processes write."""
    try:
        barrier.wait()
        keys = [bytes([k]) * 32 for k in range(len(vectors))]
        with open_cache(folder) as cache:
            view = cache.register_view("tiny", "sha256:x", -1, "mean", 32, vectors.shape[1])
            cache.put_many(view, [keys[k] for k in share], vectors[share])
            cache.commit()
        barrier.wait()  # every process has written
        with open_cache(folder) as cache:
            view = cache.register_view("tiny", "sha256:x", -1, "mean", 32, vectors.shape[1])
            found = cache.get_many(view, keys)
        answers.put(np.stack([found[k] for k in keys]))
    except Exception as exc:  # noqa: BLE001 - the parent asserts on what each process says
        barrier.abort()  # the others stop waiting for this one
        answers.put(f"{type(exc).__name__}: {exc}")


def test_processes_opening_one_new_cache_at_once_all_succeed(tiny_distilbert, tmp_path):
    """Several processes open one new cache folder at the same moment (one makes the file and
    switches it to WAL while the others open it), many times: each opens, writes its share,
    and reads every vector equal to a run alone. Before the open retried the locks SQLite's busy
    timeout does not cover, about one round in ten had a process fail with "database is
    locked"."""
    import multiprocessing

    alone, _ = embed(texts_for(24), str(tiny_distilbert), FeatureSpec("mean"))
    context = multiprocessing.get_context("fork")  # the children only touch SQLite and numpy
    processes, rounds = 6, 40
    for round_ in range(rounds):
        folder = tmp_path / f"cache-{round_}"
        barrier, answers = context.Barrier(processes, timeout=60), context.Queue()
        shares = [list(range(p, len(alone), 2)) for p in range(processes)]  # overlapping
        workers = [
            context.Process(
                target=_open_write_read, args=(folder, barrier, alone, shares[p], answers)
            )
            for p in range(processes)
        ]
        for worker in workers:
            worker.start()
        said = [answers.get(timeout=120) for _ in workers]
        for worker in workers:
            worker.join(timeout=60)
        for answer in said:
            assert not isinstance(answer, str), f"round {round_}: {answer}"
            np.testing.assert_array_equal(answer, alone.astype(np.float32))
