"""What the service is built from: :class:`ServeConfig`, one object that :func:`create_app`,
:func:`serve`, the workers and the Ray Serve deployment all take, with its limits
(:class:`ServeLimits`), batching (:class:`~bertprobe.serve.batching.BatchingConfig`) and keys
(:class:`ServeSecurity`).

Example:
    >>> config = ServeConfig(limits=ServeLimits(max_texts=32), threshold="auto")
    >>> config.limits.max_texts, config.batching.max_batch, config.model_process
    (32, 64, None)
    >>> ServeConfig(model_threads=0)
    Traceback (most recent call last):
    ...
    bertprobe.core.errors.BadInputError: model_threads=0: give 1 or more torch threads (or None)
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field, fields, replace

from bertprobe.core.errors import BadInputError
from bertprobe.encoders.backends import check_backend
from bertprobe.model.classifier import Classifier
from bertprobe.serve.batching import BatchingConfig

SHORT_TEXT_MAX_CHARS = 2000
# A model that chunks long texts is for documents: about 20,000 words, a long report.
LONG_TEXT_MAX_CHARS = 100_000


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

    def __post_init__(self) -> None:
        # The CLI's flags declare these ranges; a Python caller gets a one-line refusal here
        # instead of a service that refuses every request (or none). Draining nothing is a
        # choice (the client may get a reset connection instead of the 413).
        for item in fields(self):
            value = getattr(self, item.name)
            if value is None:
                continue
            if isinstance(value, bool) or not isinstance(value, int | float):
                raise BadInputError(f"{item.name}={value!r}: give a number", param=item.name)
            if (
                not math.isfinite(value)
                or value < 0
                or (value == 0 and item.name != "max_drain_bytes")
            ):
                raise BadInputError(
                    f"{item.name}={value!r}: give a number above 0", param=item.name
                )

    def for_model(self, model: Classifier) -> ServeLimits:
        """These limits with ``max_chars`` decided for ``model`` when it is ``None``."""
        if self.max_chars is not None:
            return self
        chunked = model.spec.long == "chunk"
        return replace(self, max_chars=LONG_TEXT_MAX_CHARS if chunked else SHORT_TEXT_MAX_CHARS)


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


@dataclass(frozen=True, kw_only=True)
class ServeConfig:
    """How the service serves a model: one object, built once (by the CLI from its flags) and
    taken by :func:`~bertprobe.serve.app.create_app`, :func:`~bertprobe.serve.running.serve`,
    its worker processes and :func:`~bertprobe.serve.ray_serve.deploy`.

    Attributes
    ----------
    limits : ServeLimits
        What a request may ask for and how much work may wait.
    batching : BatchingConfig
        How concurrent requests are gathered into forward passes.
    security : ServeSecurity
        The API key and the CORS origins.
    device : str
        The torch device the encoder runs on (``"cpu"``, ``"cuda"``, ``"cuda:1"``, ``"mps"``).
    backend : str, optional
        Overrides the model's own forward pass (``torch``, ``onnx``, ``onnx-int8``), for the
        model served at start-up and every model reloaded later.
    threshold : float or "auto", optional
        Two classes: decide the labels as
        :meth:`~bertprobe.model.classifier.Classifier.predict` does (``"auto"``: each served
        model's card's); the probabilities are unchanged. Checked against every model served:
        one it does not suit is refused, at start-up and at a reload.
    freeze_heap : bool
        Once a model serves (at start-up, after each reload), move every live object out of
        the garbage collector's sight (:func:`gc.freeze`). For a process that runs this
        service alone, as :func:`~bertprobe.serve.running.serve` does (it sets this itself):
        Python's full collections walked the millions of objects torch, transformers and
        FastAPI make at start-up, stalls of about 200 ms that were the service's p99 (wrk at 16
        connections, torch: 237 ms, 34 ms frozen).
    model_process : bool, optional
        Run the model in a process of its own
        (:class:`~bertprobe.serve.hosts.ModelProcess`) instead of a thread of the server's,
        so that parsing, refusing and answering requests never wait on the forward pass for
        the GIL; each served model gets its own, and a reload starts the new one before the
        old one stops. ``None``: the caller's default, a process of its own under
        :func:`~bertprobe.serve.running.serve` (and the CLI), a thread in an app made by
        :func:`~bertprobe.serve.app.create_app` alone (tests, a replica on Ray Serve).
    model_threads : int, optional
        Torch threads of the model process (default: torch's, or under
        :func:`~bertprobe.serve.running.serve` with several workers, the cores shared out).

    Raises
    ------
    BadInputError
        A part of the wrong kind, an unknown backend, or fewer than one model thread.
    """

    limits: ServeLimits = ServeLimits()
    batching: BatchingConfig = BatchingConfig()
    security: ServeSecurity = ServeSecurity()
    device: str = "cpu"
    backend: str | None = None
    threshold: float | str | None = None
    freeze_heap: bool = False
    model_process: bool | None = None
    model_threads: int | None = None

    def __post_init__(self) -> None:
        for name, kind in (
            ("limits", ServeLimits),
            ("batching", BatchingConfig),
            ("security", ServeSecurity),
        ):
            if not isinstance(getattr(self, name), kind):
                raise BadInputError(f"{name}: give a {kind.__name__}, not {getattr(self, name)!r}")
        if not self.device.strip():
            raise BadInputError("device: name one, e.g. cpu or cuda")
        if self.backend is not None:
            check_backend(self.backend)
        if self.model_threads is not None and self.model_threads < 1:
            raise BadInputError(
                f"model_threads={self.model_threads}: give 1 or more torch threads (or None)",
                param="model_threads",
            )
