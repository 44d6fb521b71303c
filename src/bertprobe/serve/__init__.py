"""The HTTP prediction service: FastAPI, with dynamic batching, admission by cost, metrics and
safe model swaps; in one process, in several worker processes, or as Ray Serve replicas.

- :mod:`bertprobe.serve.app`: the app (:func:`create_app`);
- :mod:`bertprobe.serve.batching`: requests gathered into forward passes, bounded in tokens;
- :mod:`bertprobe.serve.hosts`: where the model runs (a thread, or a process of its own);
- :mod:`bertprobe.serve.running`: :func:`serve`, in one process or several workers
  (:mod:`bertprobe.serve.workers`);
- :mod:`bertprobe.serve.ray_serve`: the app on Ray Serve replicas (``bertprobe[ray]``; imported
  on its own, not from here).
"""

from bertprobe.serve.app import (
    ServeLimits,
    ServeMetrics,
    ServeSecurity,
    create_app,
    listen_socket,
    queue_size,
    queue_tokens,
    token_counter,
)
from bertprobe.serve.batching import Batcher, BatchingConfig, EncoderCost, QueueFullError
from bertprobe.serve.hosts import ModelHostDown, ModelProcess, ModelThread
from bertprobe.serve.running import serve

__all__ = [
    "Batcher",
    "BatchingConfig",
    "EncoderCost",
    "ModelHostDown",
    "ModelProcess",
    "ModelThread",
    "QueueFullError",
    "ServeLimits",
    "ServeMetrics",
    "ServeSecurity",
    "create_app",
    "listen_socket",
    "queue_size",
    "queue_tokens",
    "serve",
    "token_counter",
]
