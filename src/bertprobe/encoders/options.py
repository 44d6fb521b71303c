"""The option objects: which features (:class:`FeatureSpec`), how the encoder runs
(:class:`RunOptions`), and both with the encoder's name (:class:`EncoderOptions`).

Each feature option is declared once, in :class:`FeatureSpec`: its type, default and check.
:class:`EncoderOptions` and :class:`~bertprobe.encoders.embedder.TextEmbedder` keep the same
names flat (positional and keyword arguments, ``dataclasses.replace``, scikit-learn's
``get_params``) but take their defaults from :class:`FeatureSpec`'s and build one with
:func:`options_of`, so it checks them. Each is frozen and checked when built.

Example:
    >>> spec = FeatureSpec("mean", "-2,-1", max_length=128, long="chunk")
    >>> spec.layers, spec.long_record(spec.max_length)
    ((-2, -1), {'long': 'chunk', 'stride': 32, 'window_pool': 'mean'})
    >>> options_of(FeatureSpec, EncoderOptions("minilm", pooling="max")) == FeatureSpec("max")
    True
"""

from __future__ import annotations

from collections.abc import Sequence
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass, fields, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, TypeVar

from bertprobe.core.errors import BadInputError
from bertprobe.encoders.backends import Backend, check_backend
from bertprobe.encoders.cache import EmbeddingCache, open_cache
from bertprobe.encoders.encoder import LoadedEncoder, load_encoder
from bertprobe.encoders.hub import DEFAULT_ENCODER, EncoderRef, resolve_encoder
from bertprobe.encoders.pooling import Pooling, View, check_pooling

if TYPE_CHECKING:
    from _typeshed import DataclassInstance

LongMode = Literal["truncate", "chunk"]
LONG_MODES: tuple[LongMode, ...] = ("truncate", "chunk")
WindowPool = Literal["mean", "max"]
WINDOW_POOLS: tuple[WindowPool, ...] = ("mean", "max")

Options = TypeVar("Options", bound="DataclassInstance")


def check_long_mode(value: str) -> LongMode:
    """``value`` as a long-text mode, or a one-line error naming the choices."""
    if value not in LONG_MODES:
        raise BadInputError(
            f"unknown long={value!r}; choose one of {', '.join(LONG_MODES)}", param="long"
        )
    return value


def check_window_pool(value: str) -> WindowPool:
    """``value`` as a pooling of window vectors, or a one-line error naming the choices."""
    if value not in WINDOW_POOLS:
        raise BadInputError(
            f"unknown window_pool={value!r}; choose one of {', '.join(WINDOW_POOLS)}",
            param="window_pool",
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
        raise BadInputError(f"stride={stride}: use 0 or more tokens of overlap", param="stride")
    if stride is not None and long == "truncate":
        # Silently ignored, it would look like a setting the model was trained with.
        raise BadInputError(
            "stride= applies to long=chunk only; add long=chunk or drop it",
            param=("stride", "long"),
        )


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
            "(e.g. -1 or -4,-3,-2,-1)",
            param="layers",
        ) from None


def options_of(kind: type[Options], source: object) -> Options:
    """A ``kind`` (an options dataclass) from the attributes of ``source`` named as its fields,
    checked as ``kind`` checks them: the one way flat parameters become an options object."""
    return kind(**{field.name: getattr(source, field.name) for field in fields(kind)})


@dataclass(frozen=True)
class FeatureSpec:
    """Which vector to take of a text: the one place the feature options are declared.

    Parameters
    ----------
    pooling : {"cls", "mean", "max"}
        How a text's token vectors become one: the first token's vector, or the mean or the
        element-wise maximum over the text's tokens (padding excluded). Default ``"mean"``,
        where the recipe reads ``"cls"``: on SST-2 with the bundled encoder the mean gives
        81.4% against [CLS]'s 77.0% (``make demo``), contrastive tuning with 64 labels a
        class 80.3% against 77.3%, and a zero-shot head compares mean-pooled vectors, as
        the sentence encoders were trained to be read. ``"cls"`` is the recipe's, one
        argument away.
    layers : tuple of int
        The hidden state(s) to take: 0 is the embedding layer, 1 the first transformer layer,
        -1 the last. Several are concatenated in the order given; a string such as ``"-2,-1"``
        or a single index is read as a tuple (:func:`parse_layers`).
    max_length : int, optional
        Truncate texts at this many tokens, from 2 to the encoder's limit; ``None``: the
        encoder's limit.
    long : {"truncate", "chunk"}
        A text over ``max_length``: truncated, or split into windows of whole tokens
        overlapping by ``stride``, each embedded, whose vectors are pooled by ``window_pool``.
    stride : int, optional
        ``long="chunk"``: tokens shared by consecutive windows; ``None``:
        :func:`default_stride` (a quarter of ``max_length``).
    window_pool : {"mean", "max"}
        ``long="chunk"``: the mean or the element-wise maximum of a text's window vectors
        (after ``pooling`` made one vector per window).

    Examples
    --------
    >>> FeatureSpec("mean", long="chunk").long_record(max_length=256)
    {'long': 'chunk', 'stride': 64, 'window_pool': 'mean'}
    >>> FeatureSpec("mean").long_record(max_length=256)
    {}
    """

    pooling: Pooling = "mean"
    layers: tuple[int, ...] = (-1,)
    max_length: int | None = None
    long: LongMode = "truncate"
    stride: int | None = None
    window_pool: WindowPool = "mean"

    def __post_init__(self) -> None:
        object.__setattr__(self, "layers", parse_layers(self.layers))
        check_pooling(self.pooling)
        if not self.layers:
            raise BadInputError(
                "no layer given; give layers= an index such as -1 or -4,-1", param="layers"
            )
        if self.max_length is not None and self.max_length < 2:
            raise BadInputError(f"max length {self.max_length} is too small; use at least 2")
        check_long(self.long, self.stride, self.window_pool)

    def views(self, encoder: LoadedEncoder) -> list[View]:
        """The views these features are of ``encoder``: each layer (as an absolute index) with
        the pooling, in order."""
        return [View(encoder.layer_index(layer), self.pooling) for layer in self.layers]

    def window_stride(self, max_length: int) -> int | None:
        """Tokens consecutive windows share at ``max_length``: ``stride``, else
        :func:`default_stride`; ``None`` when texts are truncated, not windowed."""
        if self.long != "chunk":
            return None
        return default_stride(max_length) if self.stride is None else self.stride

    def long_record(self, max_length: int | None = None) -> dict[str, Any]:
        """The long-text options as job keys and model cards record them: nothing in truncate
        mode (so keys made before chunking existed still match), else mode, stride (resolved
        against ``max_length`` when given) and window pooling."""
        if self.long == "truncate":
            return {}
        stride = self.stride if max_length is None else self.window_stride(max_length)
        return {"long": self.long, "stride": stride, "window_pool": self.window_pool}


@dataclass(frozen=True)
class RunOptions:
    """How the encoder runs: batches, device, backend, cache, progress. Built once, passed whole
    to training, embedding, prediction and evaluation; none of it changes a vector's meaning.

    Parameters
    ----------
    batch_size : int
        Texts per forward pass (at least 1). Batches group texts of similar length, longest
        first, so little time goes on padding and an out-of-memory error shows on the first.
    max_tokens : int, optional
        Also cap a batch at this many tokens once padded (longest length x texts), to bound
        memory when texts are long; ``None``: no cap.
    device : str
        A torch device: ``"cpu"``, ``"cuda"``, ``"cuda:1"``, ``"mps"``.
    backend : {"torch", "onnx", "onnx-int8"}, optional
        How the forward pass runs; ``None`` is a loaded model's own backend, or ``"torch"``
        when training.
    cache_dir : str or Path, optional
        The embedding cache folder (default: ``$BERTPROBE_CACHE_DIR`` or the user cache);
        the ONNX backends keep their exports there too.
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
                raise BadInputError(f"{name}={value}: use at least 1", param=name)

    def without_progress(self) -> RunOptions:
        """The same options without progress bars: for the steps of work that shows its own
        (a file embedded or predicted a chunk at a time, Ray's workers)."""
        return replace(self, progress=False) if self.progress else self

    def open_cache(self) -> AbstractContextManager[EmbeddingCache | None]:
        """The embedding cache to use in a ``with`` block, or ``None`` when it is off."""
        return open_cache(self.cache_dir) if self.use_cache else nullcontext(None)

    def load(
        self,
        encoder: str | EncoderRef,
        default_backend: str = "torch",
        revision: str | None = None,
    ) -> LoadedEncoder:
        """``encoder`` loaded as these options say (see
        :func:`~bertprobe.encoders.encoder.load_encoder`)."""
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
    pooling, layers, max_length, long, stride, window_pool
        The features, as :class:`FeatureSpec` takes them, with its defaults and checks
        (:attr:`spec` is that spec); ``layers`` may be given as ``"-2,-1"``.
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
    pooling: Pooling = FeatureSpec.pooling
    layers: tuple[int, ...] = FeatureSpec.layers
    max_length: int | None = FeatureSpec.max_length
    long: LongMode = FeatureSpec.long
    stride: int | None = FeatureSpec.stride
    window_pool: WindowPool = FeatureSpec.window_pool
    run: RunOptions = RunOptions()
    # Last, so the fields before it keep their positions for positional callers.
    revision: str | None = None

    def __post_init__(self) -> None:
        # Building the spec checks the feature options; its layers are the parsed ones.
        object.__setattr__(self, "layers", self.spec.layers)

    @property
    def spec(self) -> FeatureSpec:
        return options_of(FeatureSpec, self)

    @property
    def backend(self) -> Backend:
        return self.run.backend or "torch"

    def resolve(self) -> EncoderRef:
        """The encoder found, at ``revision`` for a hub name (see
        :func:`~bertprobe.encoders.hub.resolve_encoder`)."""
        return resolve_encoder(self.encoder, self.revision)

    def load(self) -> LoadedEncoder:
        """The encoder, loaded once per process (see
        :func:`~bertprobe.encoders.encoder.load_encoder`)."""
        return self.run.load(self.encoder, revision=self.revision)

    def open_cache(self) -> AbstractContextManager[EmbeddingCache | None]:
        """The embedding cache to use in a ``with`` block, or ``None`` when it is off."""
        return self.run.open_cache()
