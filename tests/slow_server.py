"""A real `bertprobe` service process whose encoder is slowed down (tests/test_serve_ops.py).

The tiny test encoder runs in microseconds, so the HTTP layer, not the encoder, would be the
bottleneck; sleeping in the forward pass makes the encoder the scarce resource it is in
production, so overload really fills the queue. The model runs in a process of its own, as
`bertprobe serve` runs it: the slowed model travels there pickled, so its class lives here at
module level.

    python tests/slow_server.py MODEL_DIR PORT MAX_QUEUE MAX_BATCH BATCH_SECONDS TEXT_SECONDS
"""

from __future__ import annotations

import sys
import time

import uvicorn

from bertprobe.model.classifier import Classifier
from bertprobe.serve import BatchingConfig, ServeConfig, ServeLimits, create_app


class SlowClassifier(Classifier):
    """A classifier whose every forward pass takes ``batch_seconds`` + ``text_seconds`` a text
    longer."""

    batch_seconds = 0.0
    text_seconds = 0.0

    def predict_proba(self, texts, *args, **options):
        time.sleep(self.batch_seconds + self.text_seconds * len(texts))
        return super().predict_proba(texts, *args, **options)


def main() -> None:
    import logging
    import os

    if os.environ.get("SLOW_SERVER_LOG"):  # for looking into a run: the access log, a file
        handler = logging.FileHandler(os.environ["SLOW_SERVER_LOG"])
        logging.getLogger("bertprobe.access").addHandler(handler)
        logging.getLogger("bertprobe.access").setLevel(logging.INFO)
    folder, port, max_queue, max_batch, batch_seconds, text_seconds = sys.argv[1:7]
    model = SlowClassifier.load(folder)
    model.batch_seconds, model.text_seconds = float(batch_seconds), float(text_seconds)
    config = ServeConfig(
        # The queue is bounded in texts here: that is the bound this test sizes.
        limits=ServeLimits(max_queue=int(max_queue), max_queue_tokens=10**9, request_timeout_s=30),
        batching=BatchingConfig(max_batch=int(max_batch), max_wait_ms=2),
        model_process=True,
        # One torch thread: on a busy machine two threads that wait on each other make the real
        # (tiny) forward pass vary by hundreds of ms, noise on top of the sleep that is measured.
        model_threads=1,
    )
    app = create_app(model, config)
    uvicorn.run(app, host="127.0.0.1", port=int(port), log_level="warning")


if __name__ == "__main__":
    main()
