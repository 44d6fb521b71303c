"""The service's refusals as typed exceptions, each carrying what its answer says, and the one
table (:data:`ANSWERS`) that turns each into its HTTP status, headers and the reason counted in
``bertprobe_rejected_requests_total``.

Code that refuses raises (a route, a dependency) or answers with :func:`answer` (a middleware,
which runs outside FastAPI's exception handlers); nothing returns "rows or an error answer".

Example:
    >>> error = RequestTimedOut(timeout_s=30)
    >>> ANSWERS[RequestTimedOut].status, ANSWERS[RequestTimedOut].reason, str(error)
    (504, 'timeout', 'no answer within 30 s (the request timeout); send fewer texts or retry later')
"""

from collections.abc import Callable, Mapping, MutableMapping
from dataclasses import dataclass
from typing import Any

from bertprobe.core.extras import needs_extra
from bertprobe.serve.batching import QueueFullError
from bertprobe.serve.hosts import ModelHostDown

with needs_extra("serve"):
    from fastapi import FastAPI, HTTPException, Request
    from fastapi.exceptions import RequestValidationError
    from fastapi.responses import JSONResponse


class Refused(Exception):
    """A request the service answers with an error; the subclass says which (see
    :data:`ANSWERS`), its attributes what the answer says."""


class TooMuchWork(Refused):
    """The request's own work would outlast the request timeout: refused before it runs, rather
    than run and thrown away at the timeout."""

    def __init__(
        self, *, texts: int, tokens: int, seconds: float, tokens_per_second: float, timeout_s: float
    ) -> None:
        super().__init__(
            f"these {texts} texts need about {seconds:.0f} s of the encoder ({tokens:,} "
            f"tokens at {tokens_per_second:,.0f} tokens/s), more than the request timeout of "
            f"{timeout_s:g} s; send fewer or shorter texts in each request"
        )
        self.texts, self.tokens, self.seconds = texts, tokens, seconds
        self.tokens_per_second, self.timeout_s = tokens_per_second, timeout_s


class BodyTooLarge(Refused):
    """The request body is over ``max_bytes`` (refused before it is parsed)."""

    def __init__(self, max_bytes: int) -> None:
        super().__init__(f"request body over {max_bytes:,} bytes; send fewer or shorter texts")
        self.max_bytes = max_bytes


class RequestTimedOut(Refused):
    """No answer within the request timeout; the request's work is dropped."""

    def __init__(self, timeout_s: float) -> None:
        super().__init__(
            f"no answer within {timeout_s:g} s (the request timeout); send fewer texts or "
            "retry later"
        )
        self.timeout_s = timeout_s


class ClientGone(Refused):
    """The client closed the connection while its request waited; its work is dropped."""

    def __init__(self) -> None:
        super().__init__("the client closed the connection")


class ExactNotPossible(Refused):
    """``method: exact`` was asked of a model it cannot explain, for ``reason``."""

    def __init__(self, reason: str) -> None:
        super().__init__(f"method: exact cannot explain this model: {reason}; use occlusion")
        self.reason = reason


class Unauthorized(Refused):
    """No API key, or the wrong one."""

    def __init__(self) -> None:
        super().__init__("missing or wrong API key; send the header Authorization: Bearer <key>")


class AdminNeedsKey(Refused):
    """An admin route, on a service started without a key."""

    def __init__(self) -> None:
        super().__init__(
            "admin routes need a key: start the service with --api-key (or set BERTPROBE_API_KEY)"
        )


class ReloadUnderWay(Refused):
    """A reload was asked while another runs."""

    def __init__(self) -> None:
        super().__init__("a reload is already under way; try again when it has finished")


class ReloadRefused(Refused):
    """The folder to reload failed (its checks, its warm-up, its kind); the old model serves
    on. ``reason``: why, on one line."""

    def __init__(self, reason: str) -> None:
        super().__init__(f"reload refused, the old model serves on: {reason}")
        self.reason = reason


def _no_headers(exc: Any) -> dict[str, str]:
    return {}


def _retry_after(exc: Any) -> dict[str, str]:
    return {"Retry-After": str(exc.retry_after_s)}


def _one_line(exc: Any) -> str:
    # One readable line ("texts.1: String should have at most 200 characters"), not a list.
    problems = [
        "{}: {}".format(".".join(str(x) for x in err["loc"][1:]) or "body", err["msg"])
        for err in exc.errors()
    ]
    return "; ".join(problems[:5])


@dataclass(frozen=True)
class ErrorAnswer:
    """How one kind of refusal is answered: its status, the ``reason`` label it is counted
    under in ``bertprobe_rejected_requests_total`` (``None``: not counted), its headers and
    its one-line ``detail``, each made from the exception."""

    status: int
    reason: str | None
    headers: Callable[[Any], dict[str, str]] = _no_headers
    detail: Callable[[Any], str] = str


ANSWERS: Mapping[type[Exception], ErrorAnswer] = {
    BodyTooLarge: ErrorAnswer(413, "too_large", lambda _: {"Connection": "close"}),
    TooMuchWork: ErrorAnswer(413, "too_large"),
    RequestValidationError: ErrorAnswer(422, "invalid", detail=_one_line),
    ExactNotPossible: ErrorAnswer(422, "invalid"),
    ReloadRefused: ErrorAnswer(422, "invalid"),
    ReloadUnderWay: ErrorAnswer(409, None),
    Unauthorized: ErrorAnswer(401, "unauthorized", lambda _: {"WWW-Authenticate": "Bearer"}),
    AdminNeedsKey: ErrorAnswer(403, "forbidden"),
    QueueFullError: ErrorAnswer(503, "queue_full", _retry_after),
    ModelHostDown: ErrorAnswer(503, "model_down", _retry_after),
    RequestTimedOut: ErrorAnswer(504, "timeout"),
    ClientGone: ErrorAnswer(499, "client_gone"),
}


def answer(exc: Exception, state: MutableMapping[str, Any]) -> JSONResponse:
    """The answer to ``exc``, one of :data:`ANSWERS`' kinds: ``{"detail": ...}`` with its
    status and headers; its reason is written in the request's ``state`` (the ASGI scope's),
    where :class:`~bertprobe.serve.middleware.RequestObserver` counts it."""
    how = next(ANSWERS[kind] for kind in type(exc).__mro__ if kind in ANSWERS)
    if how.reason is not None:
        state["rejected"] = how.reason
    return JSONResponse(
        {"detail": how.detail(exc)}, status_code=how.status, headers=how.headers(exc)
    )


async def _answer_raised(request: Request, exc: Exception) -> JSONResponse:
    return answer(exc, request.scope.setdefault("state", {}))


async def _http_error(request: Request, exc: Exception) -> JSONResponse:
    # FastAPI's own refusals (404, 405, a body that is not JSON): its status, one line.
    assert isinstance(exc, HTTPException)
    return JSONResponse(
        {"detail": str(exc.detail)}, status_code=exc.status_code, headers=exc.headers
    )


def add_error_handlers(app: FastAPI) -> None:
    """Answer every kind in :data:`ANSWERS`, wherever a route or a dependency raises it."""
    for kind in ANSWERS:
        app.add_exception_handler(kind, _answer_raised)
    app.add_exception_handler(HTTPException, _http_error)
