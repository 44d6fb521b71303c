"""The HTTP prediction service: FastAPI, with dynamic batching, backpressure, metrics and safe
model swaps.

Concurrent requests are gathered into one encoder batch by a single worker that owns the model
(a forward pass over 32 sentences costs far less than 32 passes over one); each request gets
back exactly its own rows. ``bertprobe serve --model DIR`` runs it on uvicorn.

Endpoints: ``POST /v1/predict`` {"texts": [...]}, ``POST /v1/explain`` (the same body and
an optional ``method``: each text's words with their offsets and scores per class, as
:meth:`~bertprobe.model.classifier.Classifier.explain` gives them), ``GET /v1/model`` (the
model card),
``POST /v1/admin/reload`` (load the model folder again, or another, and swap), ``GET /healthz``,
``GET /metrics`` (Prometheus), ``GET /`` (a try-it page), ``GET /openapi.json``.

Operating it:

- Backpressure: texts wait for the encoder in a bounded queue (:attr:`ServeLimits.max_queue`,
  by default the encoder rate measured at start-up times :attr:`ServeLimits.latency_budget_s`);
  past it a request is answered 503 with ``Retry-After`` at once, instead of waiting longer
  than anyone wants. A request unanswered after :attr:`ServeLimits.request_timeout_s` gets
  504; work whose client has gone or timed out is dropped before it reaches the encoder.
- Every request gets one JSON line on the ``bertprobe.access`` logger and an ``X-Request-ID``
  (the client's own, if it sent a sane one).
- A reload loads the new folder beside the old model with the usual checks (card, hashes,
  encoder fingerprint), warms it up, then swaps one reference: each request takes the
  reference once, so it is answered wholly by one model; the old model's queue is drained
  and its worker stopped. A folder that fails its checks is refused; the old model serves on.

Example:
    >>> from bertprobe import load_model
    >>> app = create_app(load_model("models/sst2"))  # doctest: +SKIP
    >>> # uvicorn.run(app, host="127.0.0.1", port=8000)
"""

import asyncio
import gc
import hashlib
import hmac
import json
import logging
import math
import os
import re
import socket
import time
import uuid
from collections.abc import Callable, Collection, Mapping, Sequence
from contextlib import asynccontextmanager, contextmanager, suppress
from dataclasses import dataclass, field, replace
from functools import partial
from importlib.resources import files
from typing import Annotated, Any, Literal, get_args

import numpy as np

from bertprobe.core.errors import BadInputError
from bertprobe.core.extras import needs_extra
from bertprobe.core.tables import python_value
from bertprobe.encoders.options import RunOptions
from bertprobe.model.classifier import Classifier
from bertprobe.model.explain import SERVED_METHODS, why_not_exact
from bertprobe.serve.batching import Batcher, BatchingConfig, EncoderCost, QueueFullError
from bertprobe.serve.hosts import (
    ModelHost,
    ModelHostDown,
    ModelProcess,
    ModelThread,
    explain_rows,
    predict_rows,
)

with needs_extra("serve"):
    from fastapi import Body, Depends, FastAPI, HTTPException, Request, Response
    from fastapi.exceptions import RequestValidationError
    from fastapi.responses import HTMLResponse, JSONResponse
    from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
    from prometheus_client import (
        CONTENT_TYPE_LATEST,
        CollectorRegistry,
        Counter,
        Gauge,
        Histogram,
        generate_latest,
        multiprocess,
    )
    from pydantic import BaseModel, ConfigDict, Field, StringConstraints, create_model
    from starlette.middleware.cors import CORSMiddleware

access_log = logging.getLogger("bertprobe.access")
log = logging.getLogger("bertprobe.serve")


@dataclass(frozen=True)
class ServeLimits:
    """What one request may ask for, and how much work may wait: past these the answer is a
    4xx or a 503, not a slow server.

    The queue is bounded twice. ``max_queue_tokens`` counts the encoder's work not yet done
    (waiting or running) in tokens, each text's fixed cost included (see
    :class:`~bertprobe.serve.batching.EncoderCost`); ``None`` sizes it at start-up from the
    encoder's measured rate: ``tokens/s * latency_budget_s``, so that work let in is done
    within about ``latency_budget_s``, whatever the texts' lengths. ``max_queue`` counts texts
    waiting; ``None``: the short texts the encoder runs in ``latency_budget_s``. A request
    bigger than the whole queue is let in when the encoder is idle, unless its own work would
    outlast ``request_timeout_s``: that is refused at once (413), not run and thrown away
    (504). ``max_drain_bytes``: an oversized body is read and thrown away up to this
    many bytes before the 413 is sent, so that a client that sends its whole body before
    reading (urllib, requests) gets to read the answer instead of a reset connection.
    ``max_chars`` ``None``: 2,000 characters a text, or 100,000 when the model served at
    start-up reads long texts in windows (``long="chunk"``), which is what it was trained for.
    """

    max_texts: int = 256
    max_chars: int | None = None
    max_body_bytes: int = 1_000_000
    max_queue: int | None = None
    latency_budget_s: float = 1.0
    request_timeout_s: float = 30.0
    max_drain_bytes: int = 16_000_000
    max_queue_tokens: int | None = None

    def for_model(self, model: Classifier) -> "ServeLimits":
        """These limits with ``max_chars`` decided for ``model`` when it is ``None``."""
        if self.max_chars is not None:
            return self
        chunked = model.spec.long == "chunk"
        return replace(self, max_chars=LONG_TEXT_MAX_CHARS if chunked else SHORT_TEXT_MAX_CHARS)


SHORT_TEXT_MAX_CHARS = 2000
# A model that chunks long texts is for documents: about 20,000 words, a long report.
LONG_TEXT_MAX_CHARS = 100_000


# A key is sent in a header: printable ASCII without spaces, so every client can send it.
_KEY_PATTERN = re.compile(r"[!-~]+")
_ORIGIN_PATTERN = re.compile(r"\*|https?://[^/\s?#]+")


@dataclass(frozen=True)
class ServeSecurity:
    """Who may call the service.

    ``api_key``: every ``/v1/*`` route asks for ``Authorization: Bearer <api_key>``; the admin
    routes are refused (403) when there is no key. ``/healthz`` and ``/metrics`` stay open.
    ``cors_origins``: browser origins allowed to call the API from their pages (``*`` for
    any); none by default.
    """

    api_key: str | None = field(default=None, repr=False)
    cors_origins: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if self.api_key is not None and not _KEY_PATTERN.fullmatch(self.api_key):
            raise BadInputError(
                "the API key must be printable ASCII without spaces (it travels in the "
                "Authorization header); choose another, e.g. from `openssl rand -hex 32`"
            )
        for origin in self.cors_origins:
            if not _ORIGIN_PATTERN.fullmatch(origin):
                raise BadInputError(
                    f"CORS origin {origin!r} is not scheme://host[:port] (e.g. "
                    "https://example.com) or *; give one origin per --cors-origin"
                )


# "Has a visible character". Regex engines disagree on what \s covers (Python and pydantic's
# Rust engine count U+0085 and U+001C-U+001F as space, JavaScript counts U+FEFF): the class
# excludes all of them, so a text valid by the published schema is valid for every client.
NON_BLANK_PATTERN = r"[^\s\u0085\u001c-\u001f\ufeff]"


def request_model(
    limits: ServeLimits, name: str = "PredictRequest", **fields: Any
) -> type[BaseModel]:
    """The request body, with the limits written into the OpenAPI schema clients see;
    ``fields`` (pydantic's ``(type, default)``) are asked for besides ``texts``."""
    text = Annotated[
        str,
        StringConstraints(
            strict=True, min_length=1, max_length=limits.max_chars, pattern=NON_BLANK_PATTERN
        ),
    ]
    return create_model(
        name,
        __config__=ConfigDict(extra="forbid"),
        texts=(
            list[text],
            Field(
                min_length=1,
                max_length=limits.max_texts,
                description="Texts to classify, each with a non-space character.",
                examples=[["a gorgeous, witty film", "a mess"]],
            ),
        ),
        **fields,
    )


ExplainMethod = Literal["auto", "exact", "occlusion"]
assert set(get_args(ExplainMethod)) == set(SERVED_METHODS)


class Answered(BaseModel):
    """What every answer of the API says of the model that gave it."""

    model: str = Field(description="The id of the model that answered (folder name and hash).")
    model_id: str = Field(description="SHA-256 prefix of that model's card.")
    model_path: str | None = Field(description="The folder that model was loaded from.")


class Prediction(BaseModel):
    label: int | str
    probabilities: dict[str, float]


class PredictResponse(Answered):
    predictions: list[Prediction]


class MultiLabelPrediction(BaseModel):
    labels: list[str] = Field(description="Every label whose probability reaches its threshold.")
    probabilities: dict[str, float] = Field(description="Each label's own probability.")


class MultiLabelPredictResponse(Answered):
    predictions: list[MultiLabelPrediction]


class ExplainedWord(BaseModel):
    text: str = Field(description="The word: the text's characters start to end.")
    start: int = Field(description="Its first character's offset in the text (code points).")
    end: int = Field(description="The offset just past its last character.")
    scores: dict[str, float] = Field(description="Its share of each class's score.")


class ExplainedText(BaseModel):
    text: str
    classes: list[int | str]
    labels: list[int | str] = Field(description="The label given (multi-label: every one).")
    probabilities: dict[str, float]
    score: str = Field(description="What is split: each class's log-odds, or its logit.")
    logits: dict[str, float] = Field(description="Each class's score: constant + word scores.")
    constant: dict[str, float] = Field(description="The part of each score no word carries.")
    words: list[ExplainedWord] = Field(description="The words the encoder read, in order.")
    decision: dict[str, float] | None = Field(
        description="Where each class is given, in score units (None: the largest logit wins)."
    )
    method: str = Field(description="exact, occlusion-delete or occlusion-mask.")
    note: str = Field(description="How to read the scores (the method's caveat).")


class ExplainResponse(Answered):
    explanations: list[ExplainedText]


class Health(BaseModel):
    status: str
    model: str


class ErrorBody(BaseModel):
    detail: str


class ReloadRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    model: str | None = Field(
        default=None,
        max_length=4096,
        description="A model folder to serve instead; default: the folder served now.",
    )


class ReloadResponse(BaseModel):
    model: str
    model_id: str
    model_path: str | None
    previous: str


# --- metrics and the access log ---------------------------------------------------------------


class ServeMetrics:
    """The service's Prometheus metrics, in a registry of their own (so that several apps in
    one process do not collide); ``GET /metrics`` serves them."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.requests = Counter(
            "bertprobe_requests",
            "HTTP requests answered, by route, method and status.",
            ["route", "method", "status"],
            registry=r,
        )
        self.latency = Histogram(
            "bertprobe_request_duration_seconds",
            "Time from request to answer, by route.",
            ["route"],
            buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
            registry=r,
        )
        self.batch_texts = Histogram(
            "bertprobe_batch_texts",
            "Texts per encoder batch (dynamic batching gathers them from requests).",
            buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256, 512),
            registry=r,
        )
        self.texts = Counter(
            "bertprobe_texts", "Texts run through the encoder (its rate is texts/s).", registry=r
        )
        # With several workers (prometheus multiprocess mode) each worker's gauge is a file;
        # "livesum": the service's figure is the sum over the workers alive.
        self.queue_texts = Gauge(
            "bertprobe_queue_texts",
            "Texts waiting for the encoder now.",
            registry=r,
            multiprocess_mode="livesum",
        )
        self.queue_tokens = Gauge(
            "bertprobe_queue_tokens",
            "The encoder's work not yet done (waiting or running), in tokens.",
            registry=r,
            multiprocess_mode="livesum",
        )
        self.queue_limit = Gauge(
            "bertprobe_queue_limit_texts",
            "Most texts that may wait (max_queue).",
            registry=r,
            multiprocess_mode="livesum",
        )
        self.queue_limit_tokens = Gauge(
            "bertprobe_queue_limit_tokens",
            "Most tokens of work that may be pending (max_queue_tokens).",
            registry=r,
            multiprocess_mode="livesum",
        )
        self.encoder_rate = Gauge(
            "bertprobe_encoder_rate_texts_per_second",
            "The encoder's rate on short texts measured at the last warm-up.",
            registry=r,
            multiprocess_mode="livesum",
        )
        self.token_rate = Gauge(
            "bertprobe_encoder_rate_tokens_per_second",
            "The encoder's rate in tokens measured at the last warm-up (sizes the queue).",
            registry=r,
            multiprocess_mode="livesum",
        )
        self.rejected = Counter(
            "bertprobe_rejected_requests",
            "Requests refused, by reason: queue_full, model_down, timeout, client_gone, "
            "too_large, invalid, unauthorized, forbidden.",
            ["reason"],
            registry=r,
        )
        self.reloads = Counter(
            "bertprobe_reloads", "Model reloads, by outcome (ok, refused).", ["outcome"], registry=r
        )

    def batch(self, n_texts: int) -> None:
        self.batch_texts.observe(n_texts)
        self.texts.inc(n_texts)

    def exposition(self) -> bytes:
        """The /metrics page: this app's registry or, when the service runs in several worker
        processes (``PROMETHEUS_MULTIPROC_DIR`` set), every worker's metrics merged."""
        if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
            merged = CollectorRegistry()
            multiprocess.MultiProcessCollector(merged)
            return generate_latest(merged)
        return generate_latest(self.registry)


_REJECTED = {
    401: "unauthorized",
    403: "forbidden",
    413: "too_large",
    422: "invalid",
    499: "client_gone",
    503: "queue_full",
    504: "timeout",
}
_REQUEST_ID = re.compile(r"[A-Za-z0-9._:\-]{1,128}")


class RequestObserver:
    """ASGI middleware: a request id for every request (the client's ``X-Request-ID`` when it
    is 1-128 safe characters, else a new uuid4), echoed in the answer; the request counted and
    timed in :class:`ServeMetrics`; one JSON line on the ``bertprobe.access`` logger."""

    def __init__(self, app, metrics: ServeMetrics, routes: frozenset[str]) -> None:
        self.app = app
        self.metrics = metrics
        self.routes = routes

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        start = time.perf_counter()
        sent = dict(scope.get("headers", [])).get(b"x-request-id", b"").decode("latin-1")
        request_id = sent if _REQUEST_ID.fullmatch(sent) else uuid.uuid4().hex
        # The endpoints write what they did here (texts, model): request.state is this dict.
        state = scope.setdefault("state", {})
        state["request_id"] = request_id
        status = 500

        async def send_with_id(message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                headers = [*message.get("headers", []), (b"x-request-id", request_id.encode())]
                message = {**message, "headers": headers}
            await send(message)

        try:
            await self.app(scope, receive, send_with_id)
        finally:
            seconds = time.perf_counter() - start
            path = scope.get("path", "")
            route = path if path in self.routes else "other"
            self.metrics.requests.labels(route, scope.get("method", ""), str(status)).inc()
            self.metrics.latency.labels(route).observe(seconds)
            if status in _REJECTED:
                self.metrics.rejected.labels(state.get("rejected", _REJECTED[status])).inc()
            access_log.info(
                json.dumps(
                    {
                        "method": scope.get("method"),
                        "path": path,
                        "status": status,
                        "duration_ms": round(seconds * 1000, 2),
                        "request_id": request_id,
                        "texts": state.get("texts"),
                        "model_id": state.get("model_id"),
                        "worker": os.getpid(),  # which process answered, with --workers
                    }
                )
            )


class ShedWhenFull:
    """ASGI middleware: while the encoder's queue is full, answer ``POST`` to any of ``paths``
    with 503 before
    parsing its body. Refusing must cost less than serving: parsing and validating the JSON of
    requests that cannot be let in took the CPU the encoder needed, and stretched the waits of
    those let in. The body is read and thrown away first (within :class:`BodySizeLimit`, so a
    bounded one), so that the connection stays usable; the endpoint refuses exactly too (a
    request that would overflow a queue not yet full)."""

    def __init__(self, app, paths: Collection[str], batcher: Callable[[], Batcher]) -> None:
        self.app = app
        self.paths = frozenset(paths)
        self.batcher = batcher

    def _refusal(self, scope) -> QueueFullError | None:
        # Kept apart from __call__, whose frame lives as long as the request: holding the
        # batcher there would keep a model that a reload replaced alive until the request ends.
        if (
            scope["type"] != "http"
            or scope.get("method") != "POST"
            or scope.get("path") not in self.paths
        ):
            return None
        return self.batcher().refusal()

    async def __call__(self, scope, receive, send) -> None:
        full = self._refusal(scope)
        if full is None:
            return await self.app(scope, receive, send)
        more = True
        while more:
            message = await receive()
            more = message["type"] == "http.request" and message.get("more_body", False)
        response = _error(503, str(full), {"Retry-After": str(full.retry_after_s)})
        await response(scope, receive, send)


# --- request bodies ---------------------------------------------------------------------------


class BodySizeLimit:
    """ASGI middleware: refuse a request body over ``max_bytes`` with 413, before parsing it.

    The decision is taken on ``Content-Length`` before reading, or as a chunked body passes the
    limit. The client must be able to read that answer: a client that sends its whole body
    first (urllib) gets a reset connection, not the 413, if the server closes the socket with
    the body unread. So the rest of the body is read and thrown away, up to ``max_drain_bytes``,
    before answering (never kept: memory stays flat); a client that waits for
    ``100 Continue`` has sent nothing, and is answered at once. The connection is then closed.
    """

    def __init__(self, app, max_bytes: int, max_drain_bytes: int = 16_000_000) -> None:
        self.app = app
        self.max_bytes = max_bytes
        self.max_drain_bytes = max_drain_bytes

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        headers = dict(scope.get("headers", []))
        declared = headers.get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.max_bytes:
            waits = headers.get(b"expect", b"").lower() == b"100-continue"
            if not waits and int(declared) <= self.max_drain_bytes:
                await self._drain(receive, 0)
            return await self._refuse(send)
        received = 0
        body_done = False
        too_large = False

        async def counting_receive():
            nonlocal received, body_done, too_large
            message = await receive()
            received += len(message.get("body", b""))
            body_done = not message.get("more_body", False)
            if received > self.max_bytes:
                too_large = True
                raise _BodyTooLarge
            return message

        async def send_unless_too_large(message) -> None:
            # The app may turn the exception into an answer of its own (FastAPI: 400, "error
            # parsing the body"); the answer is the 413, sent below.
            if not too_large:
                await send(message)

        with suppress(_BodyTooLarge):
            await self.app(scope, counting_receive, send_unless_too_large)
        if too_large:
            if not body_done:
                await self._drain(receive, received)
            await self._refuse(send)

    async def _drain(self, receive, received: int) -> None:
        while received <= self.max_drain_bytes:
            message = await receive()
            if message["type"] != "http.request":
                return  # the client has gone
            received += len(message.get("body", b""))
            if not message.get("more_body", False):
                return

    async def _refuse(self, send) -> None:
        response = JSONResponse(
            {"detail": f"request body over {self.max_bytes:,} bytes; send fewer or shorter texts"},
            status_code=413,
            headers={"Connection": "close"},
        )
        await send({"type": "http.response.start", "status": 413, "headers": response.raw_headers})
        await send({"type": "http.response.body", "body": response.body})


class _BodyTooLarge(Exception):
    pass


# --- the app ---------------------------------------------------------------------------------


@dataclass(eq=False)
class LoadedModel:
    """A model being served, with its own batching worker (texts of two models never share a
    batch) and the names each answer carries."""

    model: Classifier
    batcher: Batcher
    classes: list
    model_id: str
    path: str | None
    cut: float | None = None  # the decision threshold on the second class, when asked for
    thresholds: np.ndarray | None = None  # a multi-label model's, one a label
    # The batcher's work for /v1/explain, one per method (the same object each time, so that
    # requests asking for one method are gathered), and why "exact" cannot be had (or None).
    explainers: dict[str, Callable[[list[str]], Any]] = field(default_factory=dict)
    not_exact: str | None = None
    # Each text's tokens as the encoder reads them: what admission counts.
    tokens_of: Callable[[Sequence[str]], list[int]] = lambda texts: [1] * len(texts)

    def cost(self, texts: list[str], method: str | None = None) -> int:
        """What running ``texts`` costs, in tokens: a prediction reads each once; occlusion
        reads each again without each of its words."""
        counts = self.tokens_of(texts)
        assert self.batcher.cost is not None, "the model is not warmed up"
        if method == "occlusion" or (method == "auto" and self.not_exact is not None):
            passes = [1 + len(text.split()) for text in texts]
            counts = [c * p for c, p in zip(counts, passes, strict=True)]
        return self.batcher.cost.tokens(counts)

    @property
    def name(self) -> str:
        return str(self.model.card.get("id", self.model_id))


def card_digest(card: dict[str, Any]) -> str:
    """A short SHA-256 of a model card: names a model version whatever its folder is called."""
    return hashlib.sha256(json.dumps(card, sort_keys=True, default=str).encode()).hexdigest()[:16]


def queue_size(rate: float, limits: ServeLimits, batching: BatchingConfig) -> int:
    """The bound in texts: ``limits.max_queue`` if set, else what the encoder runs in the
    latency budget at ``rate`` texts/s (and at least one gathered batch)."""
    if limits.max_queue is not None:
        return limits.max_queue
    floor = batching.max_batch if batching.enabled else 1
    return max(floor, math.floor(rate * limits.latency_budget_s))


def queue_tokens(cost: EncoderCost, limits: ServeLimits, floor: int) -> int:
    """The bound in tokens: ``limits.max_queue_tokens`` if set, else the work the encoder does
    in the latency budget at its measured rate (and at least ``floor``, one gathered batch)."""
    if limits.max_queue_tokens is not None:
        return limits.max_queue_tokens
    return max(floor, math.floor(cost.tokens_per_second * limits.latency_budget_s))


# The warm-up's long text: past the length limit of every encoder served so far (512 tokens).
_LONG_WARM_UP = " ".join(["the long middle of the film drags, then the ending lifts it"] * 50)


def token_counter(model: Classifier) -> Callable[[Sequence[str]], list[int]]:
    """Each text's tokens as ``model``'s encoder reads them: cut at its length limit or, for a
    model that reads long texts in windows, every window's (only its tokenizer is loaded)."""
    from transformers import AutoTokenizer

    from bertprobe.encoders.options import default_stride
    from bertprobe.encoders.tokens import truncated_ids

    tokenizer = AutoTokenizer.from_pretrained(model.encoder.path, use_fast=True)  # nosec B615
    limit = model.spec.max_length or min(int(tokenizer.model_max_length), 512)
    if model.spec.long != "chunk":
        return lambda texts: [len(ids) for ids in truncated_ids(tokenizer, texts, limit)[0]]
    room = limit - tokenizer.num_special_tokens_to_add()
    step = max(1, room - (model.spec.stride or default_stride(limit)))

    def windows_tokens(texts: Sequence[str]) -> list[int]:
        counts = []
        for ids in tokenizer(list(texts), add_special_tokens=False)["input_ids"]:
            windows = 1 + math.ceil(max(0, len(ids) - room) / step)
            counts.append(len(ids) + windows * (limit - room) if windows == 1 else windows * limit)
        return counts

    return windows_tokens


def _error(status: int, detail: str, headers: Mapping[str, str] | None = None) -> JSONResponse:
    return JSONResponse({"detail": detail}, status_code=status, headers=headers)


def create_app(
    model: Classifier,
    *,
    limits: ServeLimits = ServeLimits(),
    batching: BatchingConfig = BatchingConfig(),
    security: ServeSecurity = ServeSecurity(),
    device: str = "cpu",
    backend: str | None = None,
    threshold: float | str | None = None,
    freeze_heap: bool = False,
    model_process: bool = False,
    model_threads: int | None = None,
    announce_reload: Callable[[str], None] | None = None,
) -> FastAPI:
    """A FastAPI app serving ``model``; the batching worker starts (after a warm-up that
    sizes the queue) and stops with the app. ``backend`` overrides the model's own, for this
    model and every model reloaded later.

    ``threshold`` (two classes; ``"auto"``: each served model's card's) decides the labels as
    in :meth:`~bertprobe.model.classifier.Classifier.predict`; the probabilities are unchanged. A
    model
    it does not suit is refused, at start-up and at a reload.

    ``freeze_heap``: once a model serves (at start-up, after each reload), move every live
    object out of the garbage collector's sight (:func:`gc.freeze`). For a process that runs
    this service alone, as :func:`serve` does: Python's full collections walked the millions
    of objects torch, transformers and FastAPI make at start-up, stalls of about 200 ms that
    were the service's p99 (wrk at 16 connections, torch: 237 ms, 34 ms frozen).

    ``model_process``: run the model in a process of its own
    (:class:`~bertprobe.serve.hosts.ModelProcess`, with ``model_threads`` torch threads)
    instead of a thread of this one, so that parsing, refusing and answering requests never
    wait on the forward pass for the GIL. Each served model gets its own; a reload starts the
    new one before the old one stops.

    ``announce_reload(folder)``: for a service in several processes (:func:`serve`'s
    ``workers``), what a reload does once ``folder`` has passed its checks here: tell every
    worker to load it (this one included), instead of swapping in this process alone.
    """
    # No embedding cache: requests' texts are rarely seen twice, and serving writes nothing.
    run = RunOptions(batch_size=batching.batch_size, device=device, use_cache=False)
    metrics = ServeMetrics()
    live: set[Batcher] = set()  # the current model's batcher, and old ones still draining

    def queue_changed() -> None:
        # Set, not read at scrape time (set_function): in several workers each gauge is a file.
        metrics.queue_texts.set(sum(b.pending_texts for b in live))
        metrics.queue_tokens.set(sum(b.pending_tokens for b in live))

    def prepare(candidate: Classifier) -> LoadedModel:
        if backend is not None:
            candidate.backend = backend
        cut = candidate.threshold(threshold)  # checked now: a bad one never serves
        host: ModelHost = (
            ModelProcess(candidate, run, model_threads) if model_process else ModelThread(candidate)
        )
        classes = [python_value(c) for c in candidate.probe.classes_]
        return LoadedModel(
            model=candidate,
            batcher=Batcher(
                host.work(partial(predict_rows, run=run)),
                batching,
                host=host,
                timeout_s=limits.request_timeout_s,
                on_batch=metrics.batch,
                on_queue=queue_changed,
            ),
            classes=classes,
            model_id=card_digest(candidate.card),
            path=str(candidate.folder) if candidate.folder is not None else None,
            cut=cut,
            thresholds=candidate.thresholds,
            explainers={
                method: host.work(partial(explain_rows, run=run, method=method, threshold=cut))
                for method in SERVED_METHODS
            },
            not_exact=why_not_exact(candidate),
            tokens_of=token_counter(candidate),
        )

    async def start(loaded: LoadedModel) -> None:
        batcher = loaded.batcher
        rate = await batcher.warm_up(loaded.tokens_of, _LONG_WARM_UP)
        assert batcher.cost is not None
        batcher.max_queue = queue_size(rate, limits, batching)
        one_batch = batcher.cost.tokens(loaded.tokens_of(["a warm-up sentence"]))
        floor = one_batch * (batching.max_batch if batching.enabled else 1)
        batcher.max_queue_tokens = queue_tokens(batcher.cost, limits, floor)
        await batcher.start()
        live.add(batcher)
        metrics.encoder_rate.set(rate)
        metrics.token_rate.set(batcher.cost.tokens_per_second)
        metrics.queue_limit.set(batcher.max_queue)
        metrics.queue_limit_tokens.set(batcher.max_queue_tokens)
        log.info(
            "model %s ready: encoder %.0f texts/s (%.0f tokens/s) at warm-up, queue of %d "
            "texts and %d tokens",
            loaded.name,
            rate,
            batcher.cost.tokens_per_second,
            batcher.max_queue,
            batcher.max_queue_tokens,
        )

    async def retire(loaded: LoadedModel) -> None:
        try:
            await loaded.batcher.stop()
        finally:
            live.discard(loaded.batcher)

    reload_lock = asyncio.Lock()

    async def reload(folder: str | None) -> ReloadResponse:
        """Load ``folder`` (default: the one served) beside the current model, check and warm
        it, swap, drain the old one (or, with ``announce_reload``, hand the checked folder to
        every worker); says what serves now and what did before. Raises (the old model
        serving on) if the folder fails."""
        async with reload_lock:
            current: LoadedModel = app.state.served
            folder = folder or current.path
            if folder is None:
                raise BadInputError(
                    "the model served was not loaded from a folder; name one: "
                    '{"model": "/path/to/folder"}'
                )
            candidate = await asyncio.to_thread(Classifier.load, folder)
            candidate.threshold(threshold)  # a threshold it does not suit is refused now
            if (candidate.thresholds is None) != (current.thresholds is None):
                kinds = ("single-label", "multi-label")
                raise BadInputError(
                    f"{folder} is a {kinds[candidate.thresholds is not None]} model and this "
                    f"service answers {kinds[current.thresholds is not None]}: its answers "
                    "would change shape; start another service for it"
                )
            if announce_reload is not None:
                path = str(candidate.folder or folder)
                await asyncio.to_thread(announce_reload, path)
                return ReloadResponse(
                    model=str(candidate.card.get("id", candidate.id)),
                    model_id=card_digest(candidate.card),
                    model_path=path,
                    previous=current.name,
                )
            loaded = prepare(candidate)
            try:
                await start(loaded)
            except BaseException:
                await loaded.batcher.stop()
                raise
            app.state.served = loaded  # the swap: requests from now on take the new model
            await retire(current)
            previous = current.name
            del current  # the last reference: its objects, cycles included, can go now
            if freeze_heap:
                _freeze_heap()
            return ReloadResponse(
                model=loaded.name,
                model_id=loaded.model_id,
                model_path=loaded.path,
                previous=previous,
            )

    def reload_in_background() -> None:
        """Reload the folder served (SIGHUP): the outcome goes to the log."""

        async def run_it() -> None:
            try:
                swapped = await reload(None)
            except Exception as exc:  # noqa: BLE001 - refused: the old model serves on
                metrics.reloads.labels("refused").inc()
                log.error("reload refused, %s serves on: %s", app.state.served.name, exc)
            else:
                metrics.reloads.labels("ok").inc()
                log.info("reloaded: %s replaces %s", swapped.model, swapped.previous)

        loop = getattr(app.state, "loop", None)
        if loop is None or loop.is_closed():
            log.warning("reload ignored: the service is not running")
            return
        # Called from a signal handler or another thread: hand the work to the server's loop.
        asyncio.run_coroutine_threadsafe(run_it(), loop)

    first = prepare(model)

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        app.state.loop = asyncio.get_running_loop()
        await start(app.state.served)
        if freeze_heap:
            _freeze_heap()
        yield
        if freeze_heap:
            gc.unfreeze()  # the process may go on without this app
        # uvicorn lets requests in flight finish before this runs.
        await retire(app.state.served)

    app = FastAPI(
        title="bertprobe",
        version=model.card.get("versions", {}).get("bertprobe", "0"),
        description=f"Sentence classifier {model.id}: {model.card['encoder']['name']} "
        f"encoder, linear probe over labels {', '.join(map(str, first.classes))}.",
        lifespan=lifespan,
    )
    app.state.served = first
    app.state.metrics = metrics
    app.state.reload = reload
    app.state.reload_in_background = reload_in_background
    too_large = {
        "model": ErrorBody,
        "description": "The body is too large, or its texts need more of the encoder than the "
        "request timeout allows (send fewer or shorter texts).",
    }
    unauthorized = {"model": ErrorBody, "description": "No API key, or the wrong one."}
    # FastAPI answers a body that is not UTF-8 JSON with 400 before any route runs.
    not_json = {"model": ErrorBody, "description": "The body is not UTF-8 JSON."}
    page = (files("bertprobe") / "templates" / "index.html").read_text(encoding="utf-8")

    bearer = HTTPBearer(auto_error=False, description="The key the service was started with.")
    expected_key = security.api_key.encode() if security.api_key else None

    def key_matches(credentials: HTTPAuthorizationCredentials | None) -> bool:
        if expected_key is None:
            return True
        sent = credentials.credentials.encode("utf-8", "replace") if credentials else b""
        return hmac.compare_digest(sent, expected_key)

    def unauthorized_error() -> HTTPException:
        return HTTPException(
            401,
            "missing or wrong API key; send the header Authorization: Bearer <key>",
            headers={"WWW-Authenticate": "Bearer"},
        )

    async def require_key(
        credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)],
    ) -> None:
        if not key_matches(credentials):
            raise unauthorized_error()

    async def require_admin(
        credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)],
    ) -> None:
        if expected_key is None:
            raise HTTPException(
                403,
                "admin routes need a key: start the service with --api-key (or set "
                "BERTPROBE_API_KEY)",
            )
        if not key_matches(credentials):
            raise unauthorized_error()

    def name_model(request: Request, response: Response, loaded: LoadedModel) -> None:
        request.state.model_id = loaded.model_id
        response.headers["X-Model-ID"] = loaded.model_id
        response.headers["X-Model"] = loaded.name

    # Without a key the API routes are open, and their schema says so (no security scheme).
    keyed = [Depends(require_key)] if expected_key is not None else []
    limits = limits.for_model(model)  # the request schema is fixed for the app's life
    PredictRequest = request_model(limits)
    ExplainRequest = request_model(
        limits,
        "ExplainRequest",
        method=(
            ExplainMethod,
            Field(
                default="auto",
                description="exact: the score split over the tokens' states (mean pooling and "
                "a linear head only, else 422); occlusion: leave one word out; auto: exact "
                "where the model allows it.",
            ),
        ),
    )
    multi_label = first.thresholds is not None
    # What the routes that run texts through the model answer besides 200: the same limits,
    # key and queue for each.
    text_route_errors: dict[int | str, dict[str, Any]] = {
        400: not_json,
        401: unauthorized,
        413: too_large,
        422: {"model": ErrorBody, "description": "The body breaks a limit."},
        503: {"model": ErrorBody, "description": "At capacity; see Retry-After."},
        504: {"model": ErrorBody, "description": "No answer within the request timeout."},
    }

    async def run_texts(
        loaded: LoadedModel,
        texts: list[str],
        request: Request,
        response: Response,
        method: str | None = None,
    ) -> Any:
        """``loaded``'s rows for ``texts`` (with ``method``: its explanations) through its
        batcher, or the error answer (a :class:`JSONResponse`): too much work for the request
        timeout, queue full, timeout, client gone."""
        request.state.texts = len(texts)
        name_model(request, response, loaded)
        # Tokenizing a large body takes milliseconds: off the event loop (the Rust tokenizer
        # lets the loop run meanwhile).
        large = sum(map(len, texts)) > 20_000
        tokens = (
            await asyncio.to_thread(loaded.cost, texts, method)
            if large
            else loaded.cost(texts, method)
        )
        assert loaded.batcher.cost is not None
        seconds = loaded.batcher.cost.seconds(tokens)
        if seconds > limits.request_timeout_s:
            return _error(
                413,
                f"these {len(texts)} texts need about {seconds:.0f} s of the encoder ({tokens:,} "
                f"tokens at {loaded.batcher.cost.tokens_per_second:,.0f} tokens/s), more than "
                f"the request timeout of {limits.request_timeout_s:g} s; send fewer or shorter "
                "texts in each request",
            )
        work = loaded.explainers[method] if method is not None else None
        try:
            return await _until_answered(
                loaded.batcher.submit(texts, work, tokens=tokens),
                request,
                limits.request_timeout_s,
            )
        except (QueueFullError, ModelHostDown) as exc:
            if isinstance(exc, ModelHostDown):
                request.state.rejected = "model_down"
            return _error(503, str(exc), {"Retry-After": str(exc.retry_after_s)})
        except TimeoutError:
            return _error(
                504,
                f"no answer within {limits.request_timeout_s:g} s (the request timeout); "
                "send fewer texts or retry later",
            )
        except _ClientGone:
            return _error(499, "the client closed the connection")

    def answered(loaded: LoadedModel) -> dict[str, Any]:
        return {"model": loaded.name, "model_id": loaded.model_id, "model_path": loaded.path}

    @app.post(
        "/v1/predict",
        response_model=PredictResponse if not multi_label else MultiLabelPredictResponse,
        dependencies=keyed,
        responses=text_route_errors,
    )
    # The request model is built at run time from the limits (so the OpenAPI schema states
    # them); a static checker cannot see its fields.
    async def predict(
        body: PredictRequest,  # type: ignore[valid-type]
        request: Request,
        response: Response,
    ) -> PredictResponse | MultiLabelPredictResponse | JSONResponse:
        """Labels and class probabilities, one prediction per text, in order (a multi-label
        model: the labels at or over their thresholds, and each label's probability)."""
        loaded: LoadedModel = app.state.served  # taken once: one model answers all of it
        rows = await run_texts(loaded, list(body.texts), request, response)  # type: ignore[attr-defined]
        if isinstance(rows, JSONResponse):
            return rows
        if loaded.thresholds is not None:
            return MultiLabelPredictResponse(
                **answered(loaded),
                predictions=[
                    MultiLabelPrediction(
                        labels=[
                            str(c)
                            for c, p, t in zip(loaded.classes, row, loaded.thresholds, strict=True)
                            if p >= t
                        ],
                        probabilities={
                            str(c): float(p) for c, p in zip(loaded.classes, row, strict=True)
                        },
                    )
                    for row in rows
                ],
            )
        return PredictResponse(
            **answered(loaded),
            predictions=[
                Prediction(
                    label=loaded.classes[_decided(row, loaded.cut)],
                    probabilities={
                        str(c): float(p) for c, p in zip(loaded.classes, row, strict=True)
                    },
                )
                for row in rows
            ],
        )

    @app.post(
        "/v1/explain",
        response_model=ExplainResponse,
        dependencies=keyed,
        responses=text_route_errors,
    )
    async def explain(
        body: ExplainRequest,  # type: ignore[valid-type]
        request: Request,
        response: Response,
    ) -> ExplainResponse | JSONResponse:
        """Why each text gets its label: the words the encoder read, with their character
        offsets and their share of each class's score, which with ``constant`` adds up to
        ``logits`` (see ``note`` for how to read them), one explanation per text, in order."""
        loaded: LoadedModel = app.state.served
        method = body.method  # type: ignore[attr-defined]
        if method == "exact" and loaded.not_exact is not None:
            name_model(request, response, loaded)
            return _error(
                422, f"method: exact cannot explain this model: {loaded.not_exact}; use occlusion"
            )
        found = await run_texts(
            loaded,
            list(body.texts),  # type: ignore[attr-defined]
            request,
            response,
            method,
        )
        if isinstance(found, JSONResponse):
            return found
        return ExplainResponse(
            **answered(loaded),
            explanations=[ExplainedText(**e.to_dict()) for e in found],
        )

    @app.get("/v1/model", dependencies=keyed, responses={401: unauthorized})
    async def model_card(request: Request, response: Response) -> dict[str, Any]:
        """The model card: encoder, features, labels, C, metrics, data, versions."""
        loaded: LoadedModel = app.state.served
        name_model(request, response, loaded)
        return loaded.model.card

    @app.post(
        "/v1/admin/reload",
        response_model=ReloadResponse,
        dependencies=[Depends(require_admin)],
        responses={
            400: not_json,
            401: unauthorized,
            403: {"model": ErrorBody, "description": "The service was started without a key."},
            409: {"model": ErrorBody, "description": "A reload is already under way."},
            422: {"model": ErrorBody, "description": "The folder failed its checks."},
        },
    )
    async def reload_model(
        request: Request, body: Annotated[ReloadRequest | None, Body()] = None
    ) -> ReloadResponse | JSONResponse:
        """Load the model folder again (or ``model``, another folder) beside the one served,
        with the usual checks, and swap; a folder that fails them is refused and the old model
        serves on."""
        if reload_lock.locked():
            return _error(409, "a reload is already under way; try again when it has finished")
        try:
            swapped = await reload(body.model if body else None)
        except Exception as exc:  # noqa: BLE001 - any failure: refused, the old model serves on
            metrics.reloads.labels("refused").inc()
            reason = " ".join(str(exc).split()) or type(exc).__name__
            log.error("reload refused, %s serves on: %s", app.state.served.name, reason)
            return _error(422, f"reload refused, the old model serves on: {reason}")
        metrics.reloads.labels("ok").inc()
        request.state.model_id = swapped.model_id
        log.info("reloaded: %s replaces %s", swapped.model, swapped.previous)
        return swapped

    @app.get("/healthz", response_model=Health)
    async def health() -> Health:
        return Health(status="ok", model=app.state.served.name)

    @app.get("/metrics", include_in_schema=False)
    async def prometheus_metrics() -> Response:
        return Response(metrics.exposition(), media_type=CONTENT_TYPE_LATEST)

    @app.get("/", response_class=HTMLResponse, include_in_schema=False)
    async def index() -> HTMLResponse:
        return HTMLResponse(page)

    @app.exception_handler(RequestValidationError)
    async def invalid_body(request: Request, exc: RequestValidationError) -> JSONResponse:
        # One readable line ("texts.1: String should have at most 200 characters"), not a list.
        problems = [
            "{}: {}".format(".".join(str(x) for x in err["loc"][1:]) or "body", err["msg"])
            for err in exc.errors()
        ]
        return JSONResponse({"detail": "; ".join(problems[:5])}, status_code=422)

    @app.exception_handler(HTTPException)
    async def http_error(request: Request, exc: HTTPException) -> JSONResponse:
        return _error(exc.status_code, str(exc.detail), exc.headers)

    # The last added is the outermost: every answer, a 413 or a CORS preflight too, is counted,
    # logged and carries its request id.
    app.add_middleware(
        ShedWhenFull,
        paths=("/v1/predict", "/v1/explain"),
        batcher=lambda: app.state.served.batcher,
    )
    app.add_middleware(
        BodySizeLimit, max_bytes=limits.max_body_bytes, max_drain_bytes=limits.max_drain_bytes
    )
    if security.cors_origins:
        app.add_middleware(
            CORSMiddleware,
            allow_origins=list(security.cors_origins),
            allow_methods=["GET", "POST"],
            allow_headers=["Authorization", "Content-Type", "X-Request-ID"],
            expose_headers=["X-Request-ID", "X-Model-ID", "X-Model", "Retry-After"],
        )
    routes = frozenset(getattr(route, "path", "") for route in app.routes)
    app.add_middleware(RequestObserver, metrics=metrics, routes=routes)
    return app


def _decided(row: np.ndarray, threshold: float | None) -> int:
    """The column of the label given: argmax, or with a threshold on the second class."""
    if threshold is None:
        return int(np.argmax(row))
    return int(row[1] >= threshold)


class _ClientGone(Exception):
    pass


async def _until_answered(work, request: Request, timeout_s: float) -> Any:
    """Await ``work``, cancelling it (so the batcher drops the job unrun) when the client
    disconnects or ``timeout_s`` passes (``TimeoutError``)."""
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
            raise _ClientGone
        raise TimeoutError
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


def listen_socket(host: str, port: int) -> socket.socket:
    """A socket bound to ``host:port``, or a one-line error if that address cannot be had.

    Binding before the server starts turns "address already in use" into our error instead of
    the server's log lines and exit 3, and hands the server the very socket that was checked.
    """
    try:
        family, _, _, _, address = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0]
    except (socket.gaierror, UnicodeError) as exc:
        raise BadInputError(
            f"host {host!r} is not an address this machine can listen on "
            f"({exc}); use e.g. 127.0.0.1 or 0.0.0.0"
        ) from None
    try:
        server = socket.create_server(address, family=family)
    except OSError as exc:
        raise BadInputError(
            f"cannot listen on {host}:{port} ({exc.strerror or exc}); choose "
            "another port or stop the program that holds it"
        ) from None
    # asyncio turns Nagle's algorithm off (TCP_NODELAY) only on connections whose socket says
    # it is TCP; create_server's says protocol 0. Without it each answer on a kept-alive
    # connection waited for the client's delayed ACK: about 45 ms a request, even /healthz.
    return socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP, fileno=server.detach())


def _freeze_heap() -> None:
    """Collect what is garbage now, then freeze the rest (see ``create_app``'s
    ``freeze_heap``); what was frozen before is unfrozen first, so a replaced model's cycles
    are collected rather than kept for good."""
    gc.unfreeze()
    gc.collect()
    gc.freeze()


@contextmanager
def log_to_stderr(*loggers: logging.Logger):
    """INFO records of ``loggers`` as bare lines on standard error while the server runs,
    unless the application configured them (a handler of its own); put back afterwards."""
    added = []
    for logger in loggers:
        if not logger.handlers:
            handler = logging.StreamHandler()
            handler.setFormatter(logging.Formatter("%(message)s"))
            added.append((logger, handler, logger.level, logger.propagate))
            logger.addHandler(handler)
            logger.setLevel(logging.INFO)
            logger.propagate = False  # once is enough, whatever the root logger does
    try:
        yield
    finally:
        for logger, handler, level, propagate in added:
            logger.removeHandler(handler)
            logger.setLevel(level)
            logger.propagate = propagate
