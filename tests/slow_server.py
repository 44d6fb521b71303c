"""A real `bertprobe` service process whose encoder is slowed down (tests/test_serve_ops.py).

The tiny test encoder runs in microseconds, so the HTTP layer, not the encoder, would be the
bottleneck; sleeping in the forward pass (which, like torch, lets other threads run) makes the
encoder the scarce resource it is in production, so overload really fills the queue.

    python tests/slow_server.py MODEL_DIR PORT MAX_QUEUE MAX_BATCH BATCH_SECONDS TEXT_SECONDS
"""

from __future__ import annotations

import sys
import time

import uvicorn

from bertprobe.model.classifier import load_model
from bertprobe.serve import BatchingConfig, ServeLimits, create_app


def main() -> None:
    import logging
    import os

    if os.environ.get("SLOW_SERVER_LOG"):  # for looking into a run: the access log, a file
        handler = logging.FileHandler(os.environ["SLOW_SERVER_LOG"])
        logging.getLogger("bertprobe.access").addHandler(handler)
        logging.getLogger("bertprobe.access").setLevel(logging.INFO)
    folder, port, max_queue, max_batch, batch_seconds, text_seconds = sys.argv[1:7]
    import torch

    # One torch thread: on a busy machine two threads that wait on each other make the real
    # (tiny) forward pass vary by hundreds of ms, noise on top of the sleep that is measured.
    torch.set_num_threads(1)
    model = load_model(folder)
    answer = model.predict_proba

    def slow_predict_proba(texts, *args, **options):
        time.sleep(float(batch_seconds) + float(text_seconds) * len(texts))
        return answer(texts, *args, **options)

    model.predict_proba = slow_predict_proba  # type: ignore[method-assign]
    app = create_app(
        model,
        limits=ServeLimits(max_queue=int(max_queue), request_timeout_s=30),
        batching=BatchingConfig(max_batch=int(max_batch), max_wait_ms=2),
    )
    uvicorn.run(app, host="127.0.0.1", port=int(port), log_level="warning")


if __name__ == "__main__":
    main()
