"""A resolved encoder loaded: its fast tokenizer, its torch model in eval mode, and the backend
that runs its forward pass, loaded once per process and shared.

Example:
    >>> from bertprobe.encoders.encoder import load_encoder
    >>> from bertprobe.encoders.pooling import View
    >>> encoder = load_encoder("minilm")
    >>> ids, _ = encoder.tokenize(["a gorgeous, witty film"], encoder.max_length)
    >>> encoder.forward(ids, [View(encoder.layer_index(-1), "mean")])[View(6, "mean")].shape
    (1, 384)
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np

from bertprobe.core.errors import BadInputError, EncoderNotFoundError
from bertprobe.encoders.backends import EncoderBackend, backend_class, check_backend, check_device
from bertprobe.encoders.hub import EncoderRef, resolve_encoder
from bertprobe.encoders.pooling import View
from bertprobe.encoders.tokens import check_stride, token_windows, truncated_ids


def token_limit(config: Any, tokenizer: Any) -> int:
    """The most tokens an encoder takes: its position embeddings' or its tokenizer's limit."""
    limits = [getattr(config, "max_position_embeddings", None), tokenizer.model_max_length]
    return int(min(x for x in limits if x and x < 1_000_000))


class LoadedEncoder:
    """A tokenizer and model in eval mode, with the batched, masked forward pass.

    ``backend`` runs the forward pass in torch (default), or in ONNX Runtime on the exported
    encoder (``onnx``, fp32) or its int8 quantization (``onnx-int8``); see :mod:`bertprobe.export`.
    The exports are kept under ``cache_dir`` (default:
    :func:`~bertprobe.encoders.cache.default_cache_dir`),
    beside the embedding cache. ``backend`` is the name; ``runtime`` the
    :class:`~bertprobe.encoders.backends.EncoderBackend` that runs it, chosen here, once.
    """

    def __init__(
        self,
        ref: EncoderRef,
        device: str = "cpu",
        backend: str = "torch",
        cache_dir: str | Path | None = None,
    ) -> None:
        from transformers import AutoConfig
        from transformers.utils import logging as hf_logging

        hf_logging.set_verbosity_error()  # unused pooler weights etc. are expected for probes
        hf_logging.disable_progress_bar()
        runs_on = backend_class(backend)
        self.ref = ref
        self.backend = runs_on.name
        self.device = check_device(device)
        runs_on.prepare(self.device)
        # ref.path is a local folder, already resolved (a hub encoder at its pinned commit, by
        # resolve_encoder): these read files and download nothing, so revision= has no place.
        # The torch weights load when first needed (:attr:`model`): the torch backend, an ONNX
        # export, gradients; an ONNX backend whose export is cached reads only the tokenizer
        # and the config.
        self._model: Any = None
        self.tokenizer = load_tokenizer(ref)
        try:
            config = AutoConfig.from_pretrained(ref.path)  # nosec B615
        except (OSError, ValueError, KeyError) as exc:
            raise _unreadable(ref, exc) from None
        self.config = config
        self.num_hidden_states = int(config.num_hidden_layers) + 1
        self.hidden_size = int(getattr(config, "hidden_size", 0) or config.dim)
        self.max_length = token_limit(config, self.tokenizer)
        self.runtime: EncoderBackend = runs_on.open(self, cache_dir)

    @property
    def model(self) -> Any:
        """The torch model in eval mode on the device, loaded on first use."""
        if self._model is None:
            from transformers import AutoModel

            try:
                model = AutoModel.from_pretrained(self.ref.path)  # nosec B615
            except (OSError, ValueError, KeyError) as exc:
                raise _unreadable(self.ref, exc) from None
            self._model = model.to(self.device).eval()
        return self._model

    @property
    def weights_loaded(self) -> bool:
        """Whether the torch weights are in memory (an ONNX backend may run without them)."""
        return self._model is not None

    def layer_index(self, layer: int) -> int:
        """Absolute hidden-state index for ``layer`` (0 = embeddings, -1 = last)."""
        n = self.num_hidden_states
        if not -n <= layer < n:
            raise BadInputError(
                f"layer {layer} does not exist: {self.ref.name} has hidden "
                f"states 0..{n - 1} (or {-n}..-1 from the end); pick one in range"
            )
        return layer % n

    def tokenize(self, texts: Sequence[str], max_length: int) -> tuple[list[list[int]], int]:
        """Token ids truncated at ``max_length``, and how many texts were truncated.

        A long text's tokens are read from a prefix proven to hold those the encoder reads
        (:func:`~bertprobe.encoders.tokens.truncated_ids`), so a huge text costs no more memory
        than a text of a few thousand characters.
        """
        return truncated_ids(self.tokenizer, texts, max_length)

    def windows(
        self, texts: Sequence[str], max_length: int, stride: int
    ) -> tuple[list[list[int]], list[int]]:
        """Every text as overlapping windows of whole tokens, and the text each window is of.

        Each window holds at most ``max_length`` tokens with the tokenizer's own special tokens
        ([CLS] ... [SEP]); consecutive windows of a text share ``stride`` tokens, and a text's
        windows come one after another. A text within the limit is one window, the same ids
        :meth:`tokenize` gives it. A text over
        :data:`~bertprobe.encoders.tokens.SEGMENT_CHARS` characters is tokenized in segments
        (:func:`~bertprobe.encoders.tokens.token_windows`): the same windows, without every
        token's offsets held at once.
        """
        check_stride(self.tokenizer, self.ref.name, max_length, stride)
        return token_windows(self.tokenizer, texts, max_length, stride)

    def forward(self, ids: list[list[int]], views: Sequence[View]) -> dict[View, np.ndarray]:
        """Pooled vectors for one batch of token ids, one array per view."""
        return self.runtime.pooled(ids, views)

    def token_states(self, ids: list[list[int]], layers: Sequence[int]) -> list[np.ndarray]:
        """Every token's hidden states for one batch of token ids, before any pooling.

        Item ``i`` is ``(len(ids[i]), len(layers) * hidden_size)`` float32: the hidden states
        at ``layers`` (absolute indices, 0 = embeddings) side by side, padding dropped. Their
        mean over a sequence's tokens is :meth:`forward`'s mean pooling of the same views.
        """
        states = self.runtime.token_states(ids, layers)
        # The tokenizer pads on its own side (right for most encoders, left for some).
        left = getattr(self.tokenizer, "padding_side", "right") == "left"
        width = states.shape[1]
        return [
            np.ascontiguousarray(states[i, width - len(x) :] if left else states[i, : len(x)])
            for i, x in enumerate(ids)
        ]


def load_tokenizer(ref: EncoderRef) -> Any:
    """``ref``'s fast tokenizer alone (no weights): what a process that only counts or cuts
    tokens reads, such as the service's server process beside its model process."""
    from transformers import AutoTokenizer

    try:
        tokenizer = AutoTokenizer.from_pretrained(ref.path, use_fast=True)  # nosec B615
    except (OSError, ValueError, KeyError) as exc:
        raise _unreadable(ref, exc) from None
    if not tokenizer.is_fast:
        raise EncoderNotFoundError(
            f"encoder {ref.name!r} has no fast tokenizer "
            "(tokenizer.json); bertprobe needs one for batching"
        )
    return tokenizer


def _unreadable(ref: EncoderRef, exc: BaseException) -> EncoderNotFoundError:
    return EncoderNotFoundError(
        f"encoder folder {ref.path} could not be loaded ({str(exc).splitlines()[0][:160]})"
    )


@lru_cache(maxsize=4)
def _load(ref: EncoderRef, device: str, backend: str, cache_dir: str | None) -> LoadedEncoder:
    # Estimators are cloned for every CV fold and grid point; they share one loaded model.
    return LoadedEncoder(ref, device, backend, cache_dir)


def load_encoder(
    name_or_ref: str | EncoderRef,
    device: str = "cpu",
    backend: str = "torch",
    cache_dir: str | Path | None = None,
    revision: str | None = None,
) -> LoadedEncoder:
    """Resolve (if needed) and load an encoder; loaded encoders are reused within a process.

    The onnx backends keep their exports under ``cache_dir`` (default: the user cache folder).
    ``revision`` pins a hub name (see :func:`~bertprobe.encoders.hub.resolve_encoder`); a
    resolved ref carries its own.
    """
    if isinstance(name_or_ref, EncoderRef):
        ref = name_or_ref
    else:
        ref = resolve_encoder(name_or_ref, revision)
    backend = check_backend(backend)
    # torch keeps nothing on disk: one shared model whatever the folder.
    folder = str(Path(cache_dir)) if cache_dir and backend != "torch" else None
    return _load(ref, device, backend, folder)
