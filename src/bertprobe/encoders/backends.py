"""Where and how the forward pass runs: one class per backend, chosen once when an encoder loads.

``torch`` runs the Hugging Face model itself, on any device torch has; ``onnx`` runs its ONNX
export in ONNX Runtime (fp32, on the CPU), and ``onnx-int8`` the export with its weights
quantized to int8 (:mod:`bertprobe.encoders.onnx` builds both, once per fingerprint). Every
backend answers the same two questions for a batch of token ids: the pooled vectors of some
views (:meth:`EncoderBackend.pooled`) and every token's hidden states at some layers
(:meth:`EncoderBackend.token_states`, for explanations).

Example:
    >>> backend_class("onnx-int8").__name__
    'OnnxInt8Backend'
    >>> backend_class("tensorrt")
    Traceback (most recent call last):
    ...
    bertprobe.core.errors.BadInputError: unknown backend 'tensorrt'; choose one of torch, ...
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from pathlib import Path
from typing import Any, ClassVar, Literal, Protocol

import numpy as np

from bertprobe.core.errors import BadInputError
from bertprobe.core.extras import require_extra
from bertprobe.encoders.hub import EncoderRef
from bertprobe.encoders.onnx import onnx_path, onnx_session
from bertprobe.encoders.pooling import View, pool_tokens, pool_tokens_numpy

Backend = Literal["torch", "onnx", "onnx-int8"]
BACKENDS: tuple[Backend, ...] = ("torch", "onnx", "onnx-int8")


def check_backend(backend: str) -> Backend:
    """``backend`` as a backend name, or a one-line error naming the choices."""
    if backend not in BACKENDS:
        raise BadInputError(f"unknown backend {backend!r}; choose one of {', '.join(BACKENDS)}")
    return backend


def check_device(device: str):
    """The torch device named by ``device``, if this machine has it; else a one-line error."""
    import torch

    try:
        dev = torch.device(device)
    except (RuntimeError, ValueError, TypeError):
        dev = None
    if dev is None or dev.type not in ("cpu", "cuda", "mps"):
        raise BadInputError(
            f"device {device!r} is not one bertprobe runs on; use cpu, cuda, cuda:N or mps"
        )
    if dev.type == "cuda":
        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if count == 0:
            raise BadInputError(
                f"device {device!r}: this torch ({torch.__version__}) sees no "
                "CUDA GPU; use device=cpu, or install a CUDA build of torch "
                "on a machine with a GPU",
                param="device",
            )
        if dev.index is not None and dev.index >= count:
            raise BadInputError(
                f"device {device!r}: this machine has {count} CUDA GPU(s), numbered 0..{count - 1}"
            )
    if dev.type == "mps" and not torch.backends.mps.is_available():
        raise BadInputError(
            f"device {device!r}: Apple's MPS is not available here; use device=cpu", param="device"
        )
    return dev


class TorchEncoder(Protocol):
    """What a backend is opened from: an encoder's tokenizer and torch model, as loaded
    (:class:`~bertprobe.encoders.encoder.LoadedEncoder`)."""

    ref: EncoderRef
    tokenizer: Any
    device: Any
    num_hidden_states: int

    @property
    def model(self) -> Any:
        """The torch model (loaded when first asked for)."""


class EncoderBackend(ABC):
    """One way to run an encoder's forward pass on batches of token ids.

    A batch is padded on the tokenizer's side and carries its attention mask, so padding never
    reaches a vector. Subclasses say how to open one (:meth:`open`), what they refuse before
    any weights load (:meth:`prepare`), and how they answer :meth:`pooled` and
    :meth:`token_states`.
    """

    name: ClassVar[Backend]

    @classmethod
    @abstractmethod
    def prepare(cls, device: Any) -> None:
        """Refuse, before the weights load, what this backend cannot run: a missing extra, a
        device it does not run on (``device`` is a checked torch device)."""

    @classmethod
    @abstractmethod
    def open(cls, encoder: TorchEncoder, cache_dir: str | Path | None = None) -> EncoderBackend:
        """This backend for ``encoder``; the ONNX backends keep their exports under
        ``cache_dir`` (default: :func:`~bertprobe.encoders.cache.default_cache_dir`)."""

    @abstractmethod
    def pooled(self, ids: list[list[int]], views: Sequence[View]) -> dict[View, np.ndarray]:
        """Pooled float32 vectors for one batch of token ids, one (batch, hidden) array per
        view."""

    @abstractmethod
    def token_states(self, ids: list[list[int]], layers: Sequence[int]) -> np.ndarray:
        """Every token's hidden states at ``layers`` (absolute indices) side by side, padding
        included: float32 of shape (batch, padded length, len(layers) x hidden)."""


class TorchBackend(EncoderBackend):
    """The forward pass in torch, on the encoder's device; only the last hidden state is asked
    for when no view needs another."""

    name: ClassVar[Backend] = "torch"

    @classmethod
    def prepare(cls, device: Any) -> None:
        """Nothing to refuse: torch runs on every device :func:`check_device` lets through."""

    def __init__(self, model: Any, tokenizer: Any, device: Any, last_layer: int) -> None:
        self.model = model
        self.tokenizer = tokenizer
        self.device = device
        self.last_layer = last_layer

    @classmethod
    def open(cls, encoder: TorchEncoder, cache_dir: str | Path | None = None) -> TorchBackend:
        # torch keeps nothing on disk: cache_dir has no use here.
        return cls(encoder.model, encoder.tokenizer, encoder.device, encoder.num_hidden_states - 1)

    def pooled(self, ids: list[list[int]], views: Sequence[View]) -> dict[View, np.ndarray]:
        import torch

        every_layer = any(v.layer != self.last_layer for v in views)
        with torch.inference_mode():
            hidden, mask = self._hidden_states(ids, every_layer)
            return {
                v: pool_tokens(hidden[v.layer], mask, v.pooling).float().cpu().numpy()
                for v in views
            }

    def token_states(self, ids: list[list[int]], layers: Sequence[int]) -> np.ndarray:
        import torch

        with torch.inference_mode():
            hidden, _ = self._hidden_states(ids, every_layer=True)
            return torch.cat([hidden[layer] for layer in layers], dim=-1).float().cpu().numpy()

    def _hidden_states(self, ids: list[list[int]], every_layer: bool) -> tuple[Any, Any]:
        """The batch's hidden states by layer index (only the last unless ``every_layer``) and
        its attention mask, as torch tensors on the device."""
        batch = self.tokenizer.pad({"input_ids": ids}, return_tensors="pt")
        mask = batch["attention_mask"].to(self.device)
        out = self.model(
            input_ids=batch["input_ids"].to(self.device),
            attention_mask=mask,
            output_hidden_states=every_layer,
        )
        return (
            out.hidden_states if every_layer else {self.last_layer: out.last_hidden_state}
        ), mask


class OnnxBackend(EncoderBackend):
    """The forward pass in ONNX Runtime on the CPU, on the encoder's fp32 ONNX export (every
    hidden state stacked in one output), pooled in numpy."""

    name: ClassVar[Backend] = "onnx"

    def __init__(self, session: Any, tokenizer: Any) -> None:
        self.session = session
        self.tokenizer = tokenizer

    @classmethod
    def prepare(cls, device: Any) -> None:
        require_extra("onnx")  # before the weights load, not after
        if device.type != "cpu":
            raise BadInputError(
                f"backend {cls.name!r} runs on the CPU; use device=cpu or backend=torch",
                param=("device", "backend"),
            )

    @classmethod
    def open(cls, encoder: TorchEncoder, cache_dir: str | Path | None = None) -> OnnxBackend:
        import torch

        # The export is read from cache_dir, or exported from the torch model on first use.
        session = onnx_session(onnx_path(encoder, cls.name, cache_dir), torch.get_num_threads())
        return cls(session, encoder.tokenizer)

    def pooled(self, ids: list[list[int]], views: Sequence[View]) -> dict[View, np.ndarray]:
        stacked, mask = self._hidden_states(ids)
        # Pooled in numpy: torch's threads, woken right after ONNX Runtime's (which spin a
        # while after each run), made the pooling a fifth of the int8 encoder's time.
        return {v: pool_tokens_numpy(stacked[v.layer], mask, v.pooling) for v in views}

    def token_states(self, ids: list[list[int]], layers: Sequence[int]) -> np.ndarray:
        stacked, _ = self._hidden_states(ids)
        return np.concatenate([stacked[layer] for layer in layers], axis=-1)

    def _hidden_states(self, ids: list[list[int]]) -> tuple[np.ndarray, np.ndarray]:
        """Every hidden state of the batch, (layer, batch, token, hidden), and its mask."""
        padded = self.tokenizer.pad({"input_ids": ids}, return_tensors="np")
        feed = {k: padded[k].astype(np.int64) for k in ("input_ids", "attention_mask")}
        return self.session.run(None, feed)[0], feed["attention_mask"]


class OnnxInt8Backend(OnnxBackend):
    """:class:`OnnxBackend` on the export with its weights dynamically quantized to int8."""

    name: ClassVar[Backend] = "onnx-int8"


_BACKEND_CLASSES: dict[str, type[EncoderBackend]] = {
    cls.name: cls for cls in (TorchBackend, OnnxBackend, OnnxInt8Backend)
}


def backend_class(backend: str) -> type[EncoderBackend]:
    """The class that runs ``backend``'s forward pass, or a one-line error naming the choices."""
    return _BACKEND_CLASSES[check_backend(backend)]
