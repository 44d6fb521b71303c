"""Admission by cost: the service's queue is bounded in tokens of encoder work, so work it lets
in finishes within the request timeout (200), and work it cannot finish is refused at once
(503, or 413 for a request too big to ever finish), never run and then dropped (504)."""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
from fastapi.testclient import TestClient
from hypothesis import given
from hypothesis import strategies as st

from bertprobe.model.classifier import load_model
from bertprobe.serve import (
    Batcher,
    BatchingConfig,
    EncoderCost,
    QueueFullError,
    ServeConfig,
    ServeLimits,
    create_app,
    token_counter,
)


@pytest.fixture(scope="module")
def long_model_dir(tiny_distilbert, sentiment_rows, tmp_path_factory):
    """A model that reads long texts in windows of 16 tokens (so a long text costs many)."""
    from bertprobe import LinearProbe, resolve_encoder, save_model
    from bertprobe.encoders.encode import embed
    from bertprobe.encoders.options import FeatureSpec

    ref = resolve_encoder(str(tiny_distilbert))
    spec = FeatureSpec("mean", (-1,), max_length=16, long="chunk")
    X, stats = embed([t for t, _ in sentiment_rows], ref, spec)
    probe = LinearProbe(cv=3).fit(X, [y for _, y in sentiment_rows])
    folder = tmp_path_factory.mktemp("models") / "windows"
    return save_model(folder, probe, ref, spec, max_length=16)


@given(
    per_text=st.floats(0, 0.01),
    per_token=st.floats(1e-6, 1e-3),
    short=st.tuples(st.integers(1, 64), st.integers(1, 40)),
    long=st.tuples(st.integers(1, 64), st.integers(41, 512)),
)
def test_the_cost_fitted_at_warm_up_is_the_line_through_both_batches(
    per_text, per_token, short, long
):
    (n1, each1), (n2, each2) = short, long
    t1, t2 = n1 * each1, n2 * each2

    def timed(n, t):
        return (n, t, per_text * n + per_token * t)

    cost = EncoderCost.fit(timed(n1, t1), timed(n2, t2))
    assert cost.seconds_per_token > 0 and cost.seconds_per_text >= 0
    # The line through both batches, or the mean rate when noise tilts it: either way it
    # accounts for all the time the two batches took.
    both = cost.seconds_per_text * (n1 + n2) + cost.seconds_per_token * (t1 + t2)
    assert both == pytest.approx(per_text * (n1 + n2) + per_token * (t1 + t2), rel=1e-6)


def test_a_noisy_fit_falls_back_to_the_mean_seconds_per_token():
    cost = EncoderCost.fit((64, 640, 0.5), (8, 4096, 0.05))  # long texts faster: noise
    assert cost.seconds_per_text == 0
    assert cost.seconds_per_token == pytest.approx(0.55 / 4736)


def test_tokens_bound_counts_work_running_and_releases_it_when_done():
    ran: list[list[str]] = []

    def predict(texts):
        time.sleep(0.2)
        ran.append(list(texts))
        return np.zeros((len(texts), 2))

    async def scenario():
        batcher = Batcher(predict, BatchingConfig(max_batch=8, max_wait_ms=1), max_queue_tokens=100)
        batcher.cost = EncoderCost(0.0, 0.001)  # 1,000 tokens/s
        await batcher.start()
        running = asyncio.create_task(batcher.submit(["a"], tokens=80))
        await asyncio.sleep(0.05)  # in the encoder: still pending work
        assert batcher.pending_texts == 0 and batcher.pending_tokens == 80
        with pytest.raises(QueueFullError, match="80 of 100 tokens") as full:
            await batcher.submit(["b"], tokens=30)
        assert full.value.retry_after_s == 1
        fits = asyncio.create_task(batcher.submit(["c"], tokens=20))
        gone = asyncio.create_task(batcher.submit(["d"], tokens=0))
        await asyncio.sleep(0.01)
        assert batcher.pending_tokens == 100
        gone.cancel()
        await asyncio.sleep(0.01)
        await running
        await fits
        assert batcher.pending_tokens == 0 and batcher.pending_texts == 0
        # Idle: a request over the whole bound is let in, and then nothing else is.
        big = asyncio.create_task(batcher.submit(["e"], tokens=500))
        await asyncio.sleep(0.05)
        assert batcher.refusal(1, 1) is not None
        await big
        await batcher.stop()

    asyncio.run(scenario())
    assert ran == [["a"], ["c"], ["e"]]


def test_work_that_would_outlast_the_request_timeout_is_refused_at_once():
    async def scenario():
        batcher = Batcher(lambda texts: np.zeros((len(texts), 2)), BatchingConfig(), timeout_s=2)
        batcher.cost = EncoderCost(0.0, 0.001)
        batcher.pending_tokens = 1500  # 1.5 s of work pending
        assert batcher.refusal(1, 400) is None
        refused = batcher.refusal(1, 600)
        assert refused is not None and "past the request timeout" in str(refused)
        assert refused.retry_after_s == 2

    asyncio.run(scenario())


def test_token_counter_truncates_or_counts_windows(tiny_model_dir, long_model_dir):
    short_model, long_model = load_model(tiny_model_dir), load_model(long_model_dir)
    count, windows = token_counter(short_model), token_counter(long_model)
    limit = long_model.spec.max_length
    few, many = "good film", " ".join(["good"] * 5 * limit)
    assert count([few])[0] < count([many])[0] == short_model.spec.max_length
    assert windows([few]) == count([few])
    assert windows([many])[0] >= 5 * limit  # every window of the long text is read


@pytest.mark.timing
def test_long_texts_at_capacity_get_200_or_503_never_504(long_model_dir):
    """The issue's case: many clients posting long texts at a service with the default queue.
    The forward pass is slowed in proportion to the tokens (the tiny encoder itself takes
    microseconds), a quarter of a second a long text, as a real encoder's cost grows."""
    model = load_model(long_model_dir)
    count, answer = token_counter(model), model.predict_proba
    long_text = " ".join(["good film and"] * 100)
    per_token = 0.25 / count([long_text])[0]

    def slow_predict_proba(texts, *args, **options):
        time.sleep(per_token * sum(count(texts)))
        return answer(texts, *args, **options)

    model.predict_proba = slow_predict_proba
    limits = ServeLimits(request_timeout_s=3.0, latency_budget_s=1.0)
    app = create_app(model, ServeConfig(limits=limits))
    statuses: Counter = Counter()

    def until_answered(client) -> int:
        """Post two long texts until they are answered, backing off 0.2 s after a 503."""
        while True:
            answer = client.post("/v1/predict", json={"texts": [long_text] * 2})
            statuses[answer.status_code] += 1
            if answer.status_code != 503:
                return answer.status_code
            assert int(answer.headers["retry-after"]) >= 1
            time.sleep(0.2)

    with TestClient(app) as client, ThreadPoolExecutor(8) as pool:
        finals = list(pool.map(lambda _: until_answered(client), range(16)))
        too_big = client.post("/v1/predict", json={"texts": [long_text] * 64})
    assert finals == [200] * 16
    assert statuses[503] > 0 and set(statuses) == {200, 503}, statuses
    assert too_big.status_code == 413
    assert "more than the request timeout of 3 s" in too_big.json()["detail"]
