"""Texts -> vectors with a frozen Hugging Face encoder: the embed loop.

What the notebook recipe gets wrong and this module does right: every batch carries its attention
mask (padding never leaks into a vector), batches are sorted by length so little time goes on
padding (results come back in input order), over-long texts are truncated at the model's limit
and counted (or, with ``long="chunk"``, embedded window by window), and finished batches go to
the embedding cache at once, so an interrupted run resumes where it stopped.

Example:
    >>> from bertprobe.encoders.encode import embed
    >>> from bertprobe.encoders.options import FeatureSpec, RunOptions
    >>> X, stats = embed(["a gorgeous, witty film", "a mess"], "minilm", FeatureSpec("mean"),
    ...                  RunOptions(batch_size=8))
    >>> X.shape, stats.n_computed + stats.n_cached
    ((2, 384), 2)
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass

import numpy as np

from bertprobe.core.errors import BadInputError
from bertprobe.encoders.cache import EmbeddingCache
from bertprobe.encoders.encoder import LoadedEncoder, load_encoder
from bertprobe.encoders.hub import EncoderRef
from bertprobe.encoders.options import FeatureSpec, RunOptions
from bertprobe.encoders.pooling import View


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
    run: RunOptions = RunOptions(),
    *,
    cache: EmbeddingCache | None = None,
    on_batch: Callable[[int], None] | None = None,
) -> tuple[np.ndarray, EmbedStats]:
    """Vectors for ``texts`` (one row each, in input order) and what it took.

    ``run`` says how: batches (``batch_size``, ``max_tokens``), progress bar, and for an
    encoder given by name the device and backend it loads with. Vectors already in ``cache``
    are read, not computed; every computed batch is written and committed before the next
    starts. ``on_batch(n_done)`` is called after each batch.

    Example:
        >>> X, stats = embed(["fine", "awful"], "minilm", FeatureSpec("mean"))  # doctest: +SKIP
    """
    model = loaded_encoder(encoder, run, cache)
    return embed_views(texts, model, spec.views(model), spec, run, cache=cache, on_batch=on_batch)


def loaded_encoder(
    encoder: str | EncoderRef | LoadedEncoder, run: RunOptions, cache: EmbeddingCache | None
) -> LoadedEncoder:
    """``encoder`` itself when loaded, else loaded with ``run``'s device and backend; an ONNX
    backend keeps its exports in ``cache``'s folder (else in ``run.cache_dir``)."""
    if isinstance(encoder, LoadedEncoder):
        return encoder
    folder = cache.folder if cache is not None else run.cache_dir
    return load_encoder(encoder, run.device, run.backend or "torch", folder)


def embed_views(
    texts: Sequence[str],
    model: LoadedEncoder,
    views: Sequence[View],
    spec: FeatureSpec = FeatureSpec(),
    run: RunOptions = RunOptions(),
    *,
    cache: EmbeddingCache | None = None,
    on_batch: Callable[[int], None] | None = None,
) -> tuple[np.ndarray, EmbedStats]:
    """Several views of each text from one forward pass, side by side.

    Row ``i`` holds ``texts[i]``'s vectors for ``views[0]``, ``views[1]``, ... each
    ``model.hidden_size`` wide. A layer sweep asks for every layer x pooling at once. The
    views stand for ``spec``'s pooling and layers; its max length and long-text options apply.

    ``long="chunk"`` embeds every window of a text over the max length (see
    :meth:`~bertprobe.encoders.encoder.LoadedEncoder.windows`) in the same length-sorted
    batches as short texts, and pools each view's window vectors into one by ``window_pool``;
    a text is cached once all its windows are done.
    """
    start = time.perf_counter()
    max_length = _max_length(model, spec)
    stats = EmbedStats(n_texts=len(texts), max_length=max_length)
    keys, first_of = _text_keys(texts)
    distinct = list(first_of)
    stats.n_unique = len(distinct)
    vectors = np.zeros((len(distinct), model.hidden_size * len(views)), dtype=np.float32)
    stored = _StoredViews(cache, model, views, spec, max_length) if cache is not None else None
    todo = stored.read(distinct, vectors) if stored is not None else list(range(len(distinct)))
    stats.n_cached = len(distinct) - len(todo)
    if todo:
        batches = _pooled_batches(
            [texts[first_of[distinct[u]]] for u in todo], model, views, spec, max_length, run, stats
        )
        with _progress_bar(len(todo), model.ref.name, run.progress) as bar:
            for finished, block in batches:
                rows = [todo[t] for t in finished]
                vectors[rows] = block
                if stored is not None and rows:
                    stored.write([distinct[u] for u in rows], block)
                stats.n_computed += len(rows)
                stats.n_batches += 1
                bar.update(len(rows))
                if on_batch is not None:
                    on_batch(stats.n_computed)
    slot = {key: u for u, key in enumerate(distinct)}
    stats.seconds = time.perf_counter() - start
    return vectors[[slot[key] for key in keys]], stats


def _text_keys(texts: Sequence[str]) -> tuple[list[bytes], dict[bytes, int]]:
    """Each text's cache key (its SHA-256), and the position of each distinct key's first text:
    identical texts are embedded once."""
    keys = [hashlib.sha256(t.encode("utf-8")).digest() for t in texts]
    first_of: dict[bytes, int] = {}
    for i, key in enumerate(keys):
        first_of.setdefault(key, i)
    return keys, first_of


def _max_length(model: LoadedEncoder, spec: FeatureSpec) -> int:
    """The max length texts are cut (or windowed) at: ``spec``'s, within what ``model`` takes."""
    max_length = spec.max_length or model.max_length
    if max_length > model.max_length:
        raise BadInputError(
            f"max length {max_length} exceeds what {model.ref.name} takes "
            f"({model.max_length} tokens); use a smaller max_length=",
            param="max_length",
        )
    return max_length


def _pooled_batches(
    texts: Sequence[str],
    model: LoadedEncoder,
    views: Sequence[View],
    spec: FeatureSpec,
    max_length: int,
    run: RunOptions,
    stats: EmbedStats,
) -> Iterator[tuple[list[int], np.ndarray]]:
    """Each batch's finished texts (positions in ``texts``) and their vectors, views side by
    side; tokenizing counts the truncated texts, or the windows, in ``stats``."""
    stride = spec.window_stride(max_length)
    windows = None
    if stride is not None:
        ids, owner = model.windows(texts, max_length, stride)
        stats.n_windows = len(ids)
        windows = PooledWindows(owner, spec.window_pool, model.hidden_size * len(views))
    else:
        ids, stats.n_truncated = model.tokenize(texts, max_length)
    for batch in length_sorted_batches([len(x) for x in ids], run.batch_size, run.max_tokens):
        pooled = model.forward([ids[b] for b in batch], views)
        block = np.concatenate([pooled[view] for view in views], axis=1)
        yield windows.add(batch, block) if windows is not None else (batch, block)


class _StoredViews:
    """The embedding cache's vectors of each view of one run: read before it, written batch by
    batch. A view's key covers the encoder's fingerprint, layer, pooling, max length, backend
    and long-text options, so vectors of other weights or settings are never mixed."""

    def __init__(
        self,
        cache: EmbeddingCache,
        model: LoadedEncoder,
        views: Sequence[View],
        spec: FeatureSpec,
        max_length: int,
    ) -> None:
        self.cache = cache
        self.dim = model.hidden_size
        self.keys = [
            cache.register_view(
                model.ref.name,
                model.ref.fingerprint,
                view.layer,
                view.pooling,
                max_length,
                self.dim,
                model.backend,
                long=spec.long,
                stride=spec.window_stride(max_length) or 0,
                window_pool=spec.window_pool,
            )
            for view in views
        ]

    def read(self, texts: Sequence[bytes], vectors: np.ndarray) -> list[int]:
        """Fill ``vectors``' rows of the texts (by SHA-256) cached in every view; the positions
        of the others, to compute."""
        done = np.ones(len(texts), dtype=bool)
        for j, view in enumerate(self.keys):
            found = self.cache.get_many(view, texts)
            for u, text in enumerate(texts):
                vec = found.get(text)
                if vec is None:
                    done[u] = False
                else:
                    vectors[u, j * self.dim : (j + 1) * self.dim] = vec
        return [u for u in range(len(texts)) if not done[u]]

    def write(self, texts: Sequence[bytes], block: np.ndarray) -> None:
        """Store and commit one batch's vectors (views side by side) of the texts."""
        for j, view in enumerate(self.keys):
            self.cache.put_many(view, texts, block[:, j * self.dim : (j + 1) * self.dim])
        self.cache.commit()


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


class PooledWindows:
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
