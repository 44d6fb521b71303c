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

- Backpressure: texts wait for the encoder in a bounded queue
  (:attr:`~bertprobe.serve.config.ServeLimits.max_queue`, by default the encoder rate measured
  at start-up times :attr:`~bertprobe.serve.config.ServeLimits.latency_budget_s`); past it a
  request is answered 503 with ``Retry-After`` at once, instead of waiting longer than anyone
  wants. A request unanswered after
  :attr:`~bertprobe.serve.config.ServeLimits.request_timeout_s` gets 504; work whose client
  has gone or timed out is dropped before it reaches the encoder.
- Every request gets one JSON line on the ``bertprobe.access`` logger and an ``X-Request-ID``
  (the client's own, if it sent a sane one).
- A reload loads the new folder beside the old model with the usual checks (card, hashes,
  encoder fingerprint), warms it up, then swaps one reference: each request takes the
  reference once, so it is answered wholly by one model; the old model's queue is drained
  and its worker stopped. A folder that fails its checks is refused; the old model serves on.

The app is assembled here from its parts, as FastAPI's "bigger applications" lays one out: the
model slot (:mod:`~bertprobe.serve.slot`), started and stopped by the lifespan; the routers
(:mod:`~bertprobe.serve.routers`); the key check (:mod:`~bertprobe.serve.security`); the
refusals and their answers (:mod:`~bertprobe.serve.errors`); the middleware
(:mod:`~bertprobe.serve.middleware`).

Example:
    >>> from bertprobe import load_model
    >>> app = create_app(load_model("models/sst2"), ServeConfig())  # doctest: +SKIP
    >>> # uvicorn.run(app, host="127.0.0.1", port=8000)
"""

from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager

from bertprobe.core.extras import needs_extra
from bertprobe.model.classifier import Classifier
from bertprobe.serve.config import ServeConfig
from bertprobe.serve.errors import add_error_handlers
from bertprobe.serve.middleware import BodySizeLimit, RequestObserver, ShedWhenFull
from bertprobe.serve.observe import ServeMetrics
from bertprobe.serve.routers import ops
from bertprobe.serve.routers.admin import model_router
from bertprobe.serve.routers.predict import prediction_router
from bertprobe.serve.security import ApiKey
from bertprobe.serve.slot import ModelSlot

with needs_extra("serve"):
    from fastapi import FastAPI
    from starlette.middleware.cors import CORSMiddleware


@asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    """The model slot's life is the app's: warmed up and started before the first request,
    retired after the last (uvicorn lets requests in flight finish before this ends)."""
    slot: ModelSlot = app.state.slot
    await slot.open()
    yield
    await slot.close()


def create_app(
    model: Classifier,
    config: ServeConfig = ServeConfig(),
    *,
    announce_reload: Callable[[str], None] | None = None,
) -> FastAPI:
    """A FastAPI app serving ``model`` as ``config`` says; the batching worker starts (after a
    warm-up that sizes the queue) and stops with the app.

    ``announce_reload(folder)``: for a service in several processes
    (:func:`~bertprobe.serve.running.serve`'s
    ``workers``, Ray Serve replicas), what a reload does once ``folder`` has passed its checks
    here: tell every process to load it (this one included), instead of swapping in this
    process alone.
    """
    metrics = ServeMetrics()
    slot = ModelSlot(model, config, metrics, announce_reload)
    app = FastAPI(
        title="bertprobe",
        version=model.card.get("versions", {}).get("bertprobe", "0"),
        description=f"Sentence classifier {model.id}: {model.card['encoder']['name']} "
        f"encoder, linear probe over labels {', '.join(map(str, slot.served.classes))}.",
        lifespan=lifespan,
    )
    app.state.slot = slot
    app.state.metrics = metrics
    keys = ApiKey(config.security)
    limits = config.limits.for_model(model)  # the request schema is fixed for the app's life
    routers = [
        prediction_router(limits, slot.served.decision.label_sets, keys.keyed),
        model_router(keys),
        ops.router,
    ]
    for router in routers:
        app.include_router(router)
    add_error_handlers(app)
    # The last added is the outermost: every answer, a 413 or a CORS preflight too, is counted,
    # logged and carries its request id.
    app.add_middleware(
        ShedWhenFull,
        paths=("/v1/predict", "/v1/explain"),
        batcher=lambda: slot.served.batcher,
    )
    app.add_middleware(
        BodySizeLimit, max_bytes=limits.max_body_bytes, max_drain_bytes=limits.max_drain_bytes
    )
    if config.security.cors_origins:
        app.add_middleware(
            CORSMiddleware,
            allow_origins=list(config.security.cors_origins),
            allow_methods=["GET", "POST"],
            allow_headers=["Authorization", "Content-Type", "X-Request-ID"],
            expose_headers=["X-Request-ID", "X-Model-ID", "X-Model", "Retry-After"],
        )
    # The routes' paths label the metrics (any other path is "other"). The routers' own: an
    # app may list an included router as one entry, without paths (FastAPI 0.165 does).
    routes = [*app.routes, *(route for router in routers for route in router.routes)]
    paths = frozenset(path for route in routes if (path := getattr(route, "path", None)))
    app.add_middleware(RequestObserver, metrics=metrics, routes=paths)
    return app
