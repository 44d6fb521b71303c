"""The routes that run texts through the model: ``POST /v1/predict`` and ``POST /v1/explain``.

Both take the served model once per request, are bounded by the same limits, key and queue,
and refuse by raising (:mod:`bertprobe.serve.errors`): work that would outlast the request
timeout (413), a full queue (503), a model process that died (503), the timeout (504), a
client gone (499).
"""

import asyncio
from contextlib import suppress
from typing import Any

from bertprobe.core.extras import needs_extra
from bertprobe.serve.config import ServeLimits
from bertprobe.serve.dependencies import Served, name_model
from bertprobe.serve.errors import ClientGone, ExactNotPossible, RequestTimedOut, TooMuchWork
from bertprobe.serve.schemas import (
    TEXT_ROUTE_ERRORS,
    ExplainedText,
    ExplainResponse,
    MultiLabelPrediction,
    MultiLabelPredictResponse,
    Prediction,
    PredictResponse,
    explain_request_model,
    request_model,
)
from bertprobe.serve.slot import LoadedModel

with needs_extra("serve"):
    from fastapi import APIRouter, Request, Response


def prediction_router(limits: ServeLimits, label_sets: bool, keyed: list[Any]) -> APIRouter:
    """The routes, with request bodies made from ``limits`` (so the schema states them), the
    answer shape of a model that gives ``label_sets`` or one label a text (its decision's; a
    reload keeps it), and ``keyed``: the key check's dependencies (none: open)."""
    # The request models are built at run time from the limits; a static checker cannot see
    # their fields (hence the ignores below).
    PredictRequest = request_model(limits)
    ExplainRequest = explain_request_model(limits)
    router = APIRouter(dependencies=keyed)
    timeout_s = limits.request_timeout_s

    @router.post(
        "/v1/predict",
        response_model=MultiLabelPredictResponse if label_sets else PredictResponse,
        responses=TEXT_ROUTE_ERRORS,
    )
    async def predict(
        body: PredictRequest,  # type: ignore[valid-type]
        request: Request,
        response: Response,
        loaded: Served,
    ) -> PredictResponse | MultiLabelPredictResponse:
        """Labels and class probabilities, one prediction per text, in order (a multi-label
        model: the labels at or over their thresholds, and each label's probability)."""
        texts = list(body.texts)  # type: ignore[attr-defined]
        rows = await run_texts(loaded, texts, request, response, timeout_s)
        given = loaded.decision.labels(rows)  # the model's own rule, as predict decides
        probabilities = [
            {str(c): float(p) for c, p in zip(loaded.classes, row, strict=True)} for row in rows
        ]
        if label_sets:
            return MultiLabelPredictResponse(
                **loaded.answered,
                predictions=[
                    MultiLabelPrediction(labels=list(labels), probabilities=p)
                    for labels, p in zip(given, probabilities, strict=True)
                ],
            )
        return PredictResponse(
            **loaded.answered,
            predictions=[
                Prediction(label=label, probabilities=p)
                for label, p in zip(given, probabilities, strict=True)
            ],
        )

    @router.post("/v1/explain", response_model=ExplainResponse, responses=TEXT_ROUTE_ERRORS)
    async def explain(
        body: ExplainRequest,  # type: ignore[valid-type]
        request: Request,
        response: Response,
        loaded: Served,
    ) -> ExplainResponse:
        """Why each text gets its label: the words the encoder read, with their character
        offsets and their share of each class's score, which with ``constant`` adds up to
        ``logits`` (see ``note`` for how to read them), one explanation per text, in order."""
        method = body.method  # type: ignore[attr-defined]
        if method == "exact" and loaded.not_exact is not None:
            name_model(request, response, loaded)
            raise ExactNotPossible(loaded.not_exact)
        texts = list(body.texts)  # type: ignore[attr-defined]
        found = await run_texts(loaded, texts, request, response, timeout_s, method)
        return ExplainResponse(
            **loaded.answered, explanations=[ExplainedText(**e.to_dict()) for e in found]
        )

    return router


async def run_texts(
    loaded: LoadedModel,
    texts: list[str],
    request: Request,
    response: Response,
    timeout_s: float,
    method: str | None = None,
) -> Any:
    """``loaded``'s rows for ``texts`` (with ``method``: its explanations) through its batcher.

    Raises
    ------
    TooMuchWork
        Their work alone would outlast ``timeout_s``.
    QueueFullError, ModelHostDown
        The queue has no room for them; the model process died while it held them.
    RequestTimedOut, ClientGone
        No answer within ``timeout_s``; the client left (their work is dropped either way).
    """
    request.state.texts = len(texts)
    name_model(request, response, loaded)
    # Tokenizing a large body takes milliseconds: off the event loop (the Rust tokenizer lets
    # the loop run meanwhile).
    large = sum(map(len, texts)) > 20_000
    tokens = (
        await asyncio.to_thread(loaded.cost, texts, method) if large else loaded.cost(texts, method)
    )
    cost = loaded.batcher.cost
    assert cost is not None, "the model is not warmed up"
    seconds = cost.seconds(tokens)
    if seconds > timeout_s:
        raise TooMuchWork(
            texts=len(texts),
            tokens=tokens,
            seconds=seconds,
            tokens_per_second=cost.tokens_per_second,
            timeout_s=timeout_s,
        )
    work = loaded.explainers[method] if method is not None else None
    return await _until_answered(
        loaded.batcher.submit(texts, work, tokens=tokens), request, timeout_s
    )


async def _until_answered(work: Any, request: Request, timeout_s: float) -> Any:
    """Await ``work``, cancelling it (so the batcher drops the job unrun) when the client
    disconnects (:class:`ClientGone`) or ``timeout_s`` passes (:class:`RequestTimedOut`)."""
    task = asyncio.ensure_future(work)
    gone = asyncio.ensure_future(_disconnected(request))
    try:
        done, _ = await asyncio.wait(
            {task, gone}, timeout=timeout_s, return_when=asyncio.FIRST_COMPLETED
        )
        if task in done:
            return task.result()
        task.cancel()
        with suppress(asyncio.CancelledError, Exception):
            await task
        if gone in done:
            raise ClientGone
        raise RequestTimedOut(timeout_s)
    finally:
        gone.cancel()
        if not task.done():
            task.cancel()


async def _disconnected(request: Request) -> None:
    """Returns when the client has closed the connection (the body is already read: the next
    ASGI message can only be the disconnect)."""
    while True:
        message = await request.receive()
        if message["type"] == "http.disconnect":
            return
