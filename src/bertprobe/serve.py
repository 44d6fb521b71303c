"""The HTTP prediction service: FastAPI, with dynamic batching.

Concurrent requests are gathered into one encoder batch by a single worker that owns the model
(a forward pass over 32 sentences costs far less than 32 passes over one); each request gets
back exactly its own rows. ``bertprobe serve --model DIR`` runs it on uvicorn.

Endpoints: ``POST /v1/predict`` {"texts": [...]}, ``GET /v1/model`` (the model card),
``GET /healthz``, ``GET /`` (a try-it page), ``GET /openapi.json``.

Example:
    >>> from bertprobe.model import load_model
    >>> app = create_app(load_model("models/sst2"))  # doctest: +SKIP
    >>> # uvicorn.run(app, host="127.0.0.1", port=8000)
"""

import asyncio
import socket
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager, suppress
from dataclasses import dataclass
from importlib.resources import files
from typing import Annotated, Any

import numpy as np

from bertprobe.encode import RunOptions
from bertprobe.errors import BadInputError
from bertprobe.extras import needs_extra
from bertprobe.model import Classifier

with needs_extra("serve"):
    from fastapi import FastAPI, HTTPException, Request
    from fastapi.exceptions import RequestValidationError
    from fastapi.responses import HTMLResponse, JSONResponse
    from pydantic import BaseModel, ConfigDict, Field, StringConstraints, create_model


@dataclass(frozen=True)
class ServeLimits:
    """What one request may ask for; past these the answer is a 4xx, not a slow server."""

    max_texts: int = 256
    max_chars: int = 2000
    max_body_bytes: int = 1_000_000


@dataclass(frozen=True)
class BatchingConfig:
    """Gather up to ``max_batch`` texts, waiting at most ``max_wait_ms`` after the first, then
    run them through the encoder in length-sorted forward batches of ``batch_size``.

    Small forward batches of similar lengths waste little on padding: on a 2-core CPU, 16
    gathered sentences run fastest in forward batches of 8 (measured, bench/serve_load.py).
    """

    enabled: bool = True
    max_batch: int = 64
    max_wait_ms: float = 5.0
    batch_size: int = 8


# "Has a visible character". Regex engines disagree on what \s covers (Python and pydantic's
# Rust engine count U+0085 and U+001C-U+001F as space, JavaScript counts U+FEFF): the class
# excludes all of them, so a text valid by the published schema is valid for every client.
NON_BLANK_PATTERN = r"[^\s\u0085\u001c-\u001f\ufeff]"


def request_model(limits: ServeLimits) -> type[BaseModel]:
    """The request body, with the limits written into the OpenAPI schema clients see."""
    text = Annotated[
        str,
        StringConstraints(
            strict=True, min_length=1, max_length=limits.max_chars, pattern=NON_BLANK_PATTERN
        ),
    ]
    return create_model(
        "PredictRequest",
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
    )


class Prediction(BaseModel):
    label: int | str
    probabilities: dict[str, float]


class PredictResponse(BaseModel):
    predictions: list[Prediction]
    model: str


class MultiLabelPrediction(BaseModel):
    labels: list[str] = Field(description="Every label whose probability reaches its threshold.")
    probabilities: dict[str, float] = Field(description="Each label's own probability.")


class MultiLabelPredictResponse(BaseModel):
    predictions: list[MultiLabelPrediction]
    model: str


class Health(BaseModel):
    status: str
    model: str


class ErrorBody(BaseModel):
    detail: str


# --- dynamic batching ------------------------------------------------------------------------


class Batcher:
    """One worker, one model: requests queue up and are answered from shared forward passes.

    ``predict(texts)`` must return one row of class probabilities per text. Rows are computed
    independently (attention masks make a text's vector independent of its batch), so merging
    requests changes no answer.
    """

    def __init__(self, predict: Callable[[list[str]], np.ndarray], config: BatchingConfig):
        self._predict = predict
        self.config = config
        self._queue: asyncio.Queue[tuple[list[str], asyncio.Future]] = asyncio.Queue()
        # torch runs in one dedicated thread, so the event loop stays free to accept requests.
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="bertprobe-model")
        self._worker: asyncio.Task | None = None
        self.batches = 0
        self.largest_batch = 0

    async def start(self) -> None:
        self._worker = asyncio.create_task(self._run())

    async def stop(self) -> None:
        if self._worker is not None:
            self._worker.cancel()
            with suppress(asyncio.CancelledError):
                await self._worker
        self._executor.shutdown(wait=True)

    async def submit(self, texts: list[str]) -> np.ndarray:
        future = asyncio.get_running_loop().create_future()
        await self._queue.put((texts, future))
        return await future

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            jobs = [await self._queue.get()]
            size = len(jobs[0][0])
            if self.config.enabled:
                deadline = loop.time() + self.config.max_wait_ms / 1000
                while size < self.config.max_batch:
                    timeout = deadline - loop.time()
                    if timeout <= 0:
                        break
                    try:
                        job = await asyncio.wait_for(self._queue.get(), timeout)
                    except TimeoutError:
                        break
                    jobs.append(job)
                    size += len(job[0])
            texts = [t for job_texts, _ in jobs for t in job_texts]
            self.batches += 1
            self.largest_batch = max(self.largest_batch, len(texts))
            try:
                rows = await loop.run_in_executor(self._executor, self._predict, texts)
            except Exception as exc:  # one bad batch must not stop the worker
                for _, future in jobs:
                    if not future.done():
                        future.set_exception(exc)
                continue
            start = 0
            for job_texts, future in jobs:
                if not future.done():  # the client may have gone away
                    future.set_result(rows[start : start + len(job_texts)])
                start += len(job_texts)


# --- the app ---------------------------------------------------------------------------------


class BodySizeLimit:
    """ASGI middleware: refuse a request body over ``max_bytes`` with 413, before parsing it."""

    def __init__(self, app, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        declared = dict(scope.get("headers", [])).get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.max_bytes:
            return await self._refuse(send)
        received = 0

        async def counting_receive():
            nonlocal received
            message = await receive()
            received += len(message.get("body", b""))
            if received > self.max_bytes:
                raise _BodyTooLarge
            return message

        try:
            await self.app(scope, counting_receive, send)
        except _BodyTooLarge:
            await self._refuse(send)

    async def _refuse(self, send) -> None:
        response = JSONResponse(
            {"detail": f"request body over {self.max_bytes:,} bytes; send fewer or shorter texts"},
            status_code=413,
        )
        await send({"type": "http.response.start", "status": 413, "headers": response.raw_headers})
        await send({"type": "http.response.body", "body": response.body})


class _BodyTooLarge(Exception):
    pass


def create_app(
    model: Classifier,
    *,
    limits: ServeLimits = ServeLimits(),
    batching: BatchingConfig = BatchingConfig(),
    device: str = "cpu",
) -> FastAPI:
    """A FastAPI app serving ``model``; the batching worker starts and stops with the app."""
    classes = [c.item() if isinstance(c, np.generic) else c for c in model.probe.classes_]
    # No embedding cache: requests' texts are rarely seen twice, and serving writes nothing.
    run = RunOptions(batch_size=batching.batch_size, device=device, use_cache=False)

    def predict_rows(texts: list[str]) -> np.ndarray:
        return model.predict_proba(texts, run)

    batcher = Batcher(predict_rows, batching)

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        await batcher.start()
        yield
        # uvicorn lets requests in flight finish before this runs.
        await batcher.stop()

    app = FastAPI(
        title="bertprobe",
        version=model.card.get("versions", {}).get("bertprobe", "0"),
        description=f"Sentence classifier {model.id}: {model.card['encoder']['name']} "
        f"encoder, linear probe over labels {', '.join(map(str, classes))}.",
        lifespan=lifespan,
    )
    app.state.batcher = batcher
    app.add_middleware(BodySizeLimit, max_bytes=limits.max_body_bytes)
    too_large = {"model": ErrorBody, "description": "Too many texts, or the body is too large."}
    page = (files("bertprobe") / "templates" / "index.html").read_text(encoding="utf-8")

    PredictRequest = request_model(limits)
    thresholds = model.thresholds

    @app.post(
        "/v1/predict",
        response_model=PredictResponse if thresholds is None else MultiLabelPredictResponse,
        responses={
            413: too_large,
            422: {"model": ErrorBody, "description": "The body breaks a limit."},
        },
    )
    # The request model is built at run time from the limits (so the OpenAPI schema states
    # them); a static checker cannot see its fields.
    async def predict(
        body: PredictRequest,  # type: ignore[valid-type]
    ) -> PredictResponse | MultiLabelPredictResponse:
        """Labels and class probabilities, one prediction per text, in order (a multi-label
        model: the labels at or over their thresholds, and each label's probability)."""
        rows = await batcher.submit(list(body.texts))  # type: ignore[attr-defined]
        if thresholds is not None:
            return MultiLabelPredictResponse(
                model=model.id,
                predictions=[
                    MultiLabelPrediction(
                        labels=[
                            str(c)
                            for c, p, t in zip(classes, row, thresholds, strict=True)
                            if p >= t
                        ],
                        probabilities={str(c): float(p) for c, p in zip(classes, row, strict=True)},
                    )
                    for row in rows
                ],
            )
        return PredictResponse(
            model=model.id,
            predictions=[
                Prediction(
                    label=classes[int(np.argmax(row))],
                    probabilities={str(c): float(p) for c, p in zip(classes, row, strict=True)},
                )
                for row in rows
            ],
        )

    @app.get("/v1/model")
    async def model_card() -> dict[str, Any]:
        """The model card: encoder, features, labels, C, metrics, data, versions."""
        return model.card

    @app.get("/healthz", response_model=Health)
    async def health() -> Health:
        return Health(status="ok", model=model.id)

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
        return JSONResponse({"detail": exc.detail}, status_code=exc.status_code)

    return app


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
        return socket.create_server(address, family=family)
    except OSError as exc:
        raise BadInputError(
            f"cannot listen on {host}:{port} ({exc.strerror or exc}); choose "
            "another port or stop the program that holds it"
        ) from None


def serve(
    model: Classifier,
    *,
    host: str = "127.0.0.1",
    port: int = 8000,
    limits: ServeLimits = ServeLimits(),
    batching: BatchingConfig = BatchingConfig(),
    device: str = "cpu",
    graceful_seconds: int = 30,
    sock: socket.socket | None = None,
) -> None:
    """Run the app on uvicorn until SIGINT/SIGTERM; requests in flight are finished first.

    ``sock``, from :func:`listen_socket`, is used instead of binding ``host:port`` here.
    """
    with needs_extra("serve"):
        import uvicorn

    sock = sock or listen_socket(host, port)
    app = create_app(model, limits=limits, batching=batching, device=device)
    config = uvicorn.Config(
        app, host=host, port=port, timeout_graceful_shutdown=graceful_seconds, log_level="info"
    )
    with sock:
        uvicorn.Server(config).run(sockets=[sock])
