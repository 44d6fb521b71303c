"""The app's ASGI middleware, outermost first: :class:`RequestObserver` (request ids, metrics,
the access log), :class:`BodySizeLimit` (413 before parsing) and :class:`ShedWhenFull` (503
before parsing while the queue is full). Each refusal is answered as
:mod:`bertprobe.serve.errors` says, its reason recorded for the metrics.
"""

import json
import os
import re
import time
import uuid
from collections.abc import Callable, Collection
from contextlib import suppress

from bertprobe.serve.batching import Batcher, QueueFullError
from bertprobe.serve.errors import BodyTooLarge, answer
from bertprobe.serve.observe import ServeMetrics, access_log

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
        # The endpoints write what they did here (texts, model, why refused): request.state is
        # this dict.
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
            if "rejected" in state:  # a refusal: bertprobe.serve.errors wrote its reason
                self.metrics.rejected.labels(state["rejected"]).inc()
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
        await answer(full, scope.setdefault("state", {}))(scope, receive, send)


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
            return await self._refuse(scope, send)
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
                raise _StopReading
            return message

        async def send_unless_too_large(message) -> None:
            # The app may turn the exception into an answer of its own (FastAPI: 400, "error
            # parsing the body"); the answer is the 413, sent below.
            if not too_large:
                await send(message)

        with suppress(_StopReading):
            await self.app(scope, counting_receive, send_unless_too_large)
        if too_large:
            if not body_done:
                await self._drain(receive, received)
            await self._refuse(scope, send)

    async def _drain(self, receive, received: int) -> None:
        while received <= self.max_drain_bytes:
            message = await receive()
            if message["type"] != "http.request":
                return  # the client has gone
            received += len(message.get("body", b""))
            if not message.get("more_body", False):
                return

    async def _refuse(self, scope, send) -> None:
        response = answer(BodyTooLarge(self.max_bytes), scope.setdefault("state", {}))
        start = {"type": "http.response.start", "status": response.status_code}
        await send({**start, "headers": response.raw_headers})
        await send({"type": "http.response.body", "body": response.body})


class _StopReading(Exception):
    """Raised into the app as the body passes the limit: it stops reading it."""
