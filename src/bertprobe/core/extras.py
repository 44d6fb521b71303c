"""The optional parts of bertprobe (the extras in ``pyproject.toml``) and the modules each needs.

The core (encoders, the cache, the probe, train / evaluate / predict / embed / sweep) needs none
of them. An extra's modules are imported where they are used, inside :func:`needs_extra`, so a
missing one is a one-line :class:`~bertprobe.core.errors.MissingExtraError` naming the extra to
install, not a ``ModuleNotFoundError`` traceback.

Example:
    >>> with needs_extra("report"):
    ...     import matplotlib
"""

from __future__ import annotations

import importlib.util
import sys
from collections.abc import Iterator
from contextlib import contextmanager

from bertprobe.core.errors import MissingExtraError

# extra -> the top-level modules its packages provide (here each is also the package's name).
EXTRAS: dict[str, tuple[str, ...]] = {
    "serve": ("fastapi", "pydantic", "uvicorn", "prometheus_client"),
    "onnx": ("onnx", "onnxruntime"),
    "report": ("matplotlib", "jinja2"),
    "finetune": ("accelerate",),
    "ray": ("ray",),
    "cleanlab": ("cleanlab",),
    "explain": ("captum",),
    "mlflow": ("mlflow",),
}


@contextmanager
def needs_extra(extra: str) -> Iterator[None]:
    """Imports inside the block belong to ``extra``: a module not found names the extra."""
    if extra not in EXTRAS:
        raise ValueError(f"unknown extra {extra!r}")
    try:
        yield
    except ModuleNotFoundError as exc:
        raise MissingExtraError(extra, exc.name or "?") from exc


def _installed(module: str) -> bool:
    if module in sys.modules:
        return sys.modules[module] is not None
    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):
        return False


def require_extra(extra: str) -> None:
    """Fail now if a module of ``extra`` is missing: call before long work that needs it.

    Finds the modules without importing them, so it costs next to nothing.
    """
    if extra not in EXTRAS:
        raise ValueError(f"unknown extra {extra!r}")
    for module in EXTRAS[extra]:
        if not _installed(module):
            raise MissingExtraError(extra, module)
