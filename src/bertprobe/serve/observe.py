"""What the service tells its operators: the Prometheus metrics (:class:`ServeMetrics`) and
the log lines (the ``bertprobe.access`` logger, one JSON line a request; ``bertprobe.serve``,
starts, reloads and refusals)."""

import logging
import os
from contextlib import contextmanager

from bertprobe.core.extras import needs_extra

with needs_extra("serve"):
    from prometheus_client import (
        CollectorRegistry,
        Counter,
        Gauge,
        Histogram,
        generate_latest,
        multiprocess,
    )

access_log = logging.getLogger("bertprobe.access")
log = logging.getLogger("bertprobe.serve")


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
