"""The service's parts on their own, without a model: the config refuses what cannot serve, and
the one table of refusals gives each its status, headers and metric reason."""

from __future__ import annotations

import json

import pytest

from bertprobe.core.errors import BadInputError
from bertprobe.serve import (
    BatchingConfig,
    ClientGone,
    ExactNotPossible,
    ModelHostDown,
    QueueFullError,
    RequestTimedOut,
    ServeConfig,
    ServeLimits,
    TooMuchWork,
)
from bertprobe.serve.errors import (
    ANSWERS,
    AdminNeedsKey,
    BodyTooLarge,
    ReloadRefused,
    ReloadUnderWay,
    Unauthorized,
    answer,
)


@pytest.mark.parametrize(
    ("options", "words"),
    [
        ({"backend": "tpu"}, "unknown backend"),
        ({"model_threads": 0}, "model_threads=0"),
        ({"device": " "}, "device"),
        ({"limits": {"max_texts": 8}}, "limits: give a ServeLimits"),
        ({"batching": ServeLimits()}, "batching: give a BatchingConfig"),
    ],
)
def test_a_config_that_cannot_serve_is_one_line(options, words):
    with pytest.raises(BadInputError, match=words) as caught:
        ServeConfig(**options)
    assert "\n" not in str(caught.value)


@pytest.mark.parametrize(
    "limits", [{"max_texts": 0}, {"request_timeout_s": float("nan")}, {"max_queue": -1}]
)
def test_limits_that_would_refuse_everything_are_one_line(limits):
    with pytest.raises(BadInputError, match="give a number above 0"):
        ServeLimits(**limits)


def test_the_config_is_frozen_and_keyword_only():
    config = ServeConfig(batching=BatchingConfig(max_batch=8))
    with pytest.raises(AttributeError):
        config.device = "cuda"
    with pytest.raises(TypeError):
        ServeConfig(ServeLimits())
    assert ServeLimits(max_drain_bytes=0).max_drain_bytes == 0  # draining nothing is a choice


REFUSALS = [
    (TooMuchWork(texts=3, tokens=9000, seconds=40, tokens_per_second=225, timeout_s=30), 413),
    (BodyTooLarge(4000), 413),
    (QueueFullError(10, 10, 2, "texts"), 503),
    (ModelHostDown(3), 503),
    (RequestTimedOut(30), 504),
    (ClientGone(), 499),
    (ExactNotPossible("max pooling"), 422),
    (Unauthorized(), 401),
    (AdminNeedsKey(), 403),
    (ReloadUnderWay(), 409),
    (ReloadRefused("the card was edited"), 422),
]


@pytest.mark.parametrize(("error", "status"), REFUSALS, ids=lambda e: type(e).__name__)
def test_each_refusal_is_answered_from_the_table(error, status):
    state: dict = {}
    answered = answer(error, state)
    assert answered.status_code == status
    assert json.loads(answered.body) == {"detail": str(error)}
    reason = ANSWERS[type(error)].reason
    assert state.get("rejected") == reason
    if status == 503:
        assert answered.headers["retry-after"] == str(error.retry_after_s)
    if status == 401:
        assert answered.headers["www-authenticate"] == "Bearer"


def test_the_table_covers_every_refusal_and_the_metrics_reasons():
    assert {type(error) for error, _ in REFUSALS} <= set(ANSWERS)
    reasons = {how.reason for how in ANSWERS.values()} - {None}
    # The reasons bertprobe_rejected_requests_total documents, no more and no fewer.
    assert reasons == {
        "queue_full",
        "model_down",
        "timeout",
        "client_gone",
        "too_large",
        "invalid",
        "unauthorized",
        "forbidden",
    }
