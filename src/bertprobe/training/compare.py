"""Which encoder for this data? Each encoder's sweep on the user's own training set, its speed
and size side by side, and a recommendation that gives its reasons.

Leaderboards rank encoders on other people's data; what matters is how well a probe reads
*these* labels from each encoder's vectors, and what each costs to run. For every encoder
:func:`compare_encoders` runs the sweep :func:`~bertprobe.training.sweep.run_sweep` runs for
``--auto`` (one forward pass through the cache, every layer x pooling screened, the best few
scored by k-fold CV of the probe), measures the forward pass's rate (texts per second) and
reads the model's size. The TF-IDF baseline is scored once, as the floor any encoder should
clear. The recommendation (:func:`recommend`) is the encoder with the best CV score, unless a
cheaper one is within the folds' noise of it.

Example:
    >>> from bertprobe.datasets import load_sst2
    >>> train = load_sst2("train")
    >>> found = compare_encoders(train.texts[:200], train.labels[:200], ["minilm"],
    ...                          options=TrainOptions(cv=3, poolings=("mean",)))
    >>> found.recommended, found.rows[0].hidden_size
    ('minilm', 384)
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np

from bertprobe.core.errors import BadInputError
from bertprobe.data.files import LabelledTexts, ReadOptions
from bertprobe.encoders.cache import EmbeddingCache
from bertprobe.encoders.encode import embed
from bertprobe.encoders.encoder import LoadedEncoder
from bertprobe.encoders.options import EncoderOptions, FeatureSpec, RunOptions
from bertprobe.training.inputs import read_training_set
from bertprobe.training.options import TrainOptions
from bertprobe.training.sweep import SweepResult, SweepRow, run_sweep, tfidf_cv_accuracy

# Texts whose forward pass is timed when the sweep's own pass read them from the cache.
RATE_SAMPLE = 256
# Weight files counted in an encoder's size on disk.
WEIGHT_FILES = ("*.safetensors", "*.bin", "*.pt", "*.onnx")


@dataclass
class EncoderRow:
    """One encoder's scores and costs.

    Attributes
    ----------
    encoder : str
        The name or folder given.
    fingerprint : str
        The encoder's fingerprint (its weights).
    hidden_size, layers, parameters : int
        Width, transformer layers and parameter count.
    size_mb : float
        Its weight files on disk, MB.
    texts_per_second : float
        The forward pass's rate on these texts (every layer read out, as ``--auto`` does).
    sweep : SweepResult
        The sweep: every candidate's screen, the finalists' CV scores, the best.
    """

    encoder: str
    fingerprint: str
    hidden_size: int
    layers: int
    parameters: int
    size_mb: float
    texts_per_second: float
    sweep: SweepResult

    @property
    def best(self) -> SweepRow:
        return self.sweep.best

    @property
    def score(self) -> float:
        """The best candidate's mean CV score of the sweep's metric."""
        return float(self.best.rank_score or 0.0)

    @property
    def spread(self) -> float:
        """The standard error of :attr:`score` over the folds."""
        return float(self.best.cv_std or 0.0) / math.sqrt(self.sweep.cv)

    @property
    def seconds_per_1000(self) -> float:
        """Seconds to embed 1,000 of these texts."""
        return 1000.0 / self.texts_per_second

    def to_dict(self) -> dict:
        return {
            "encoder": self.encoder,
            "fingerprint": self.fingerprint,
            "hidden_size": self.hidden_size,
            "layers": self.layers,
            "parameters": self.parameters,
            "size_mb": self.size_mb,
            "texts_per_second": self.texts_per_second,
            "seconds_per_1000": self.seconds_per_1000,
            "embed_seconds": self.sweep.embed.seconds,
            "sweep_seconds": self.sweep.seconds - self.sweep.embed.seconds,
            "best": self.best.name,
            "cv_score": self.score,
            "cv_accuracy": self.best.cv_accuracy,
            "cv_std": self.best.cv_std,
            "C": self.best.C,
            "sweep": self.sweep.to_dict(),
        }


@dataclass
class Comparison:
    """Every encoder's row, the TF-IDF floor, and the recommendation with its reasons."""

    rows: list[EncoderRow]
    n_train: int
    cv: int
    metric: str
    tfidf_cv_accuracy: float | None
    recommended: str
    reasons: list[str] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def chosen(self) -> EncoderRow:
        """The recommended encoder's row."""
        return next(r for r in self.rows if r.encoder == self.recommended)

    def summary(self) -> dict:
        """:meth:`to_dict` without each encoder's whole sweep: what a model card keeps."""
        found = self.to_dict()
        for row in found["rows"]:
            del row["sweep"]
        return found

    def to_dict(self) -> dict:
        return {
            "n_train": self.n_train,
            "cv": self.cv,
            "metric": self.metric,
            "tfidf_cv_accuracy": self.tfidf_cv_accuracy,
            "recommended": self.recommended,
            "reasons": self.reasons,
            "seconds": self.seconds,
            "rows": [r.to_dict() for r in self.rows],
        }


def compare(
    data: str | Path | LabelledTexts,
    encoders: Sequence[str],
    *,
    encoding: EncoderOptions = EncoderOptions(),
    options: TrainOptions = TrainOptions(Cs="coarse"),
    reading: ReadOptions = ReadOptions(),
    tfidf: bool = True,
    on_encoder: Callable[[EncoderRow], None] | None = None,
) -> Comparison:
    """:func:`compare_encoders` on a labelled file (or set): what ``bertprobe compare`` runs.

    ``encoding`` gives everything but the encoder (max length, long texts, batches, backend,
    cache); ``options`` the folds, C values, poolings, finalists and metric.
    """
    train_set = read_training_set(data, reading, options.cv)
    return compare_encoders(
        train_set.texts,
        train_set.labels or [],
        encoders,
        encoding=encoding,
        options=options,
        tfidf=tfidf,
        on_encoder=on_encoder,
    )


def compare_encoders(
    texts: Sequence[str],
    labels: Sequence,
    encoders: Sequence[str],
    *,
    encoding: EncoderOptions = EncoderOptions(),
    options: TrainOptions = TrainOptions(Cs="coarse"),
    tfidf: bool = True,
    on_encoder: Callable[[EncoderRow], None] | None = None,
) -> Comparison:
    """Sweep each encoder on ``(texts, labels)``; see the module's docstring.

    Parameters
    ----------
    texts, labels : sequence
        The training data (never a test set: every score here is cross-validated on it).
    encoders : sequence of str
        Hub names, local folders or ``"minilm"``; at least one, none twice.
    encoding : EncoderOptions
        How each encoder reads the texts (its ``encoder`` is replaced by each of ``encoders``).
    options : TrainOptions
        Folds, C values, poolings, finalists, metric, class weights, processes.
    tfidf : bool
        Also score the TF-IDF baseline, the floor.
    on_encoder : callable, optional
        Called with each encoder's row as soon as it is done.
    """
    start = time.perf_counter()
    names = [e.strip() for e in encoders if e.strip()]
    if not names:
        raise BadInputError("encoders: name at least one encoder to compare")
    if len(set(names)) != len(names):
        raise BadInputError(f"encoders: {', '.join(names)} names one twice; name each once")
    # Every name resolved before any forward pass: a wrong third name fails now, not after the
    # first two encoders' minutes of work.
    encodings = [replace(encoding, encoder=name) for name in names]
    for each in encodings:
        each.resolve()
    rows = []
    with encoding.open_cache() as cache:
        for each in encodings:
            row = _encoder_row(texts, labels, each, options, cache)
            rows.append(row)
            if on_encoder is not None:
                on_encoder(row)
    floor = None
    if tfidf:
        floor, _ = tfidf_cv_accuracy(
            texts, np.asarray(labels), cv=options.cv, n_jobs=options.n_jobs
        )
    recommended, reasons = recommend(rows, floor, options.metric)
    return Comparison(
        rows=rows,
        n_train=len(texts),
        cv=options.cv,
        metric=options.metric,
        tfidf_cv_accuracy=floor,
        recommended=recommended,
        reasons=reasons,
        seconds=time.perf_counter() - start,
    )


def sweep_texts(
    texts: Sequence[str],
    labels: Sequence | np.ndarray,
    encoding: EncoderOptions,
    options: TrainOptions,
    Cs: Sequence[float],
    *,
    cache: EmbeddingCache | None,
    tfidf: bool = True,
) -> SweepResult:
    """:func:`~bertprobe.training.sweep.run_sweep` as ``encoding`` and ``options`` say: the one
    place their fields become the sweep's arguments (``--auto``'s stages call it too)."""
    return run_sweep(
        texts,
        labels,
        encoding.load(),
        poolings=tuple(options.poolings),
        cv=options.cv,
        Cs=Cs,
        finalists=options.finalists,
        max_length=encoding.max_length,
        long=encoding.long,
        stride=encoding.stride,
        window_pool=encoding.window_pool,
        cache=cache,
        batch_size=encoding.run.batch_size,
        n_jobs=options.n_jobs,
        tfidf=tfidf,
        progress=encoding.run.progress,
        metric=options.metric,
        class_weight=options.class_weight,
    )


def _encoder_row(
    texts: Sequence[str],
    labels: Sequence,
    encoding: EncoderOptions,
    options: TrainOptions,
    cache: EmbeddingCache | None,
) -> EncoderRow:
    encoder = encoding.load()
    swept = sweep_texts(texts, labels, encoding, options, options.grid, cache=cache, tfidf=False)
    return EncoderRow(
        encoder=encoding.encoder,
        fingerprint=encoder.ref.fingerprint,
        hidden_size=encoder.hidden_size,
        layers=encoder.num_hidden_states - 1,
        parameters=sum(p.numel() for p in encoder.model.parameters()),
        size_mb=_size_mb(Path(encoder.ref.path)),
        texts_per_second=_rate(texts, encoder, encoding, swept),
        sweep=swept,
    )


def _rate(
    texts: Sequence[str], encoder: LoadedEncoder, encoding: EncoderOptions, swept: SweepResult
) -> float:
    """Texts per second of the forward pass: the sweep's own when it ran the encoder on enough
    texts, else timed now on a sample of them with the cache off."""
    stats = swept.embed
    if stats.n_computed >= min(RATE_SAMPLE, len(texts)) and stats.seconds > 0:
        return stats.n_computed / stats.seconds
    sample = list(texts[:RATE_SAMPLE])
    spec = FeatureSpec("mean", (-1,), encoding.max_length, encoding.long, encoding.stride)
    began = time.perf_counter()
    # As the sweep runs the encoder: in batches of batch_size, without a progress bar.
    embed(sample, encoder, spec, RunOptions(batch_size=encoding.run.batch_size))
    return len(sample) / max(time.perf_counter() - began, 1e-9)


def _size_mb(folder: Path) -> float:
    files = {f for pattern in WEIGHT_FILES for f in folder.rglob(pattern) if f.is_file()}
    return sum(f.stat().st_size for f in files) / 1e6


def recommend(
    rows: Sequence[EncoderRow], floor: float | None = None, metric: str = "accuracy"
) -> tuple[str, list[str]]:
    """The encoder to use, and why: the best CV score, unless a faster encoder is within the
    folds' noise of it (two standard errors of the difference), then the fastest such one.

    >>> from types import SimpleNamespace as Row
    >>> big = Row(encoder="big", score=0.91, spread=0.004, seconds_per_1000=30.0,
    ...           best=Row(name="layers 0-12 mean"))
    >>> small = Row(encoder="small", score=0.85, spread=0.004, seconds_per_1000=3.0,
    ...             best=Row(name="layers 0-6 mean"))
    >>> recommend([small, big])[0]
    'big'
    """
    best = max(rows, key=lambda r: r.score)

    def noise(r: EncoderRow) -> float:
        return 2.0 * math.hypot(r.spread, best.spread)

    tied = [r for r in rows if best.score - r.score <= noise(r)]
    chosen = min(tied, key=lambda r: r.seconds_per_1000)
    name = "accuracy" if metric == "accuracy" else metric
    reasons = [
        f"{chosen.encoder}: CV {name} {show_score(chosen.score, metric)} on these texts with "
        f"{chosen.best.name}, {chosen.seconds_per_1000:.2f} s per 1,000 texts"
    ]
    if chosen is not best:
        reasons.append(
            f"{best.encoder} scores {100 * (best.score - chosen.score):.1f} points more, within "
            f"the folds' noise (±{100 * noise(chosen):.1f}), at "
            f"{best.seconds_per_1000 / chosen.seconds_per_1000:.1f}x the time"
        )
    for r in rows:
        if r is chosen or (r is best and chosen is not best):
            continue
        gap = chosen.score - r.score
        speed = r.seconds_per_1000 / chosen.seconds_per_1000
        cost = f"{1 / speed:.1f}x faster" if speed < 1 else f"{speed:.1f}x slower"
        reasons.append(
            f"{r.encoder}: {100 * gap:.1f} points lower ({show_score(r.score, metric)}, beyond the "
            f"folds' noise of ±{100 * noise(r):.1f}), {cost}"
            if gap > noise(r)
            else f"{r.encoder}: as good within the folds' noise, {cost}"
        )
    if floor is not None and metric == "accuracy":
        verdict = "above" if chosen.score > floor else "NOT above"
        reasons.append(
            f"TF-IDF + logistic regression alone: {show_score(floor, metric)} ({verdict} it; "
            "train --auto may vote with it)"
        )
    return chosen.encoder, reasons


def show_score(score: float, metric: str) -> str:
    """A score as printed: accuracy in %, another metric as a number."""
    return f"{100 * score:.2f}%" if metric == "accuracy" else f"{score:.4f}"
