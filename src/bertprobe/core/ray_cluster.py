"""Joining Ray: the one way bertprobe starts or connects to a Ray cluster.

Both shells that run on Ray, the batch engine (:mod:`bertprobe.ray_engine`) and the service as
Ray Serve replicas (:mod:`bertprobe.serve.ray_serve`), join a cluster the same way and fail
the same way; they are siblings that may not import each other, so the helper lives here.

Example:
    >>> started_here = join_ray(None)  # doctest: +SKIP
"""

from __future__ import annotations

import logging
import os
import warnings
from pathlib import Path
from typing import Any

from bertprobe.core.errors import BadInputError
from bertprobe.core.extras import needs_extra, require_extra


def join_ray(address: str | None) -> bool:
    """Start or join Ray as ``address`` says, unless this process has joined one already.

    Parameters
    ----------
    address : str or None
        ``None`` starts a new local Ray instance; ``"auto"`` joins the cluster the
        environment names (``ray start`` on this machine, or ``RAY_ADDRESS``);
        ``"ray://host:10001"`` a remote cluster through Ray Client.

    Returns
    -------
    bool
        Whether this call started a new local instance (the caller that started it may shut
        it down; a cluster it joined belongs to someone else).

    Raises
    ------
    BadInputError
        No cluster answers at ``address``: one line, without Ray's own warnings.
    MissingExtraError
        The ``ray`` extra is not installed.
    """
    require_extra("ray")
    with needs_extra("ray"):
        import ray

    if ray.is_initialized():
        return False
    kwargs: dict[str, Any] = {"log_to_driver": False}
    if address is None:  # a new instance; a running cluster keeps its settings
        kwargs.update(include_dashboard=False, runtime_env=local_runtime_env())
    for name in ("ray", "ray.client_builder"):
        logging.getLogger(name).setLevel(logging.WARNING)
    try:
        # A failed connection is one line of ours; Ray's own warnings about it are not.
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            ray.init(address=address, **kwargs)
    except (ConnectionError, RuntimeError, ValueError) as exc:
        reason = str(exc).strip()
        raise BadInputError(
            f"--ray {address or 'local'}: cannot connect to a Ray cluster there "
            f"({reason.splitlines()[0] if reason else 'no answer'}); "
            "start one with `ray start --head`, or use --ray local for a new local one"
        ) from None
    return address is None


def local_runtime_env() -> dict[str, Any]:
    """What a local Ray instance's workers need: to import this very bertprobe (a checkout as
    well as an install), ahead of any other on the path."""
    package_root = str(Path(__file__).resolve().parents[2])
    path = os.pathsep.join([package_root, os.environ.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    return {"env_vars": {"PYTHONPATH": path}}


__all__ = ["join_ray", "local_runtime_env"]
