"""The HTTP prediction service: FastAPI, with dynamic batching, admission by cost, metrics and
safe model swaps; in one process, in several worker processes, or as Ray Serve replicas.

- :mod:`bertprobe.serve.config`: :class:`ServeConfig`, what the service is built from (its
  limits, batching, keys, device, backend, threshold, model process), taken by every way of
  running it;
- :mod:`bertprobe.serve.app`: the app (:func:`create_app`), assembled from the model slot
  (:mod:`bertprobe.serve.slot`), the routers (:mod:`bertprobe.serve.routers`), the key check
  (:mod:`bertprobe.serve.security`), the refusals (:mod:`bertprobe.serve.errors`) and the
  middleware (:mod:`bertprobe.serve.middleware`);
- :mod:`bertprobe.serve.batching`: requests gathered into forward passes, bounded in tokens;
- :mod:`bertprobe.serve.hosts`: where the model runs (a thread, or a process of its own);
- :mod:`bertprobe.serve.running`: :func:`serve`, in one process or several workers
  (:mod:`bertprobe.serve.workers`);
- :mod:`bertprobe.serve.ray_serve`: the app on Ray Serve replicas (``bertprobe[ray]``; imported
  on its own, not from here).
"""

from bertprobe.serve.app import create_app
from bertprobe.serve.batching import Batcher, BatchingConfig, EncoderCost, QueueFullError
from bertprobe.serve.config import ServeConfig, ServeLimits, ServeSecurity
from bertprobe.serve.errors import (
    ClientGone,
    ExactNotPossible,
    Refused,
    RequestTimedOut,
    TooMuchWork,
)
from bertprobe.serve.hosts import ModelHostDown, ModelProcess, ModelThread
from bertprobe.serve.observe import ServeMetrics
from bertprobe.serve.running import listen_socket, serve
from bertprobe.serve.slot import ModelSlot, queue_size, queue_tokens, token_counter

__all__ = [
    "Batcher",
    "BatchingConfig",
    "ClientGone",
    "EncoderCost",
    "ExactNotPossible",
    "ModelHostDown",
    "ModelProcess",
    "ModelSlot",
    "ModelThread",
    "QueueFullError",
    "Refused",
    "RequestTimedOut",
    "ServeConfig",
    "ServeLimits",
    "ServeMetrics",
    "ServeSecurity",
    "TooMuchWork",
    "create_app",
    "listen_socket",
    "queue_size",
    "queue_tokens",
    "serve",
    "token_counter",
]
