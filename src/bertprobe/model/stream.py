"""Streamed batch prediction: a file of any size labelled a chunk at a time, resumably.

:func:`predict_file` (and :meth:`bertprobe.Classifier.predict_file`, which calls it) reads a
file once to check every row and count them, then reads, embeds, classifies and stores one
chunk at a time, so memory stays flat in the file's size. Each finished chunk is a Parquet part
in ``OUT.partial/`` (written beside its name, then renamed, so a part is whole or absent); the
folder's ``job.json`` says which input, model, backend and chunking the parts belong to. Run the
same call again after an interruption (even ``kill -9``) and the chunks already stored are not
computed again; ``OUT`` appears at the end, in the format its name asks for (JSON Lines, CSV or
Parquet), byte for byte what an uninterrupted run writes.

Example:
    >>> from bertprobe import Classifier
    >>> model = Classifier.load("models/sst2")  # doctest: +SKIP
    >>> stats = model.predict_file("reviews.txt", "labels.parquet")  # doctest: +SKIP
    >>> stats.n_texts, stats.n_resumed  # doctest: +SKIP
    (1000000, 0)
"""

from __future__ import annotations

import json
import os
import shutil
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pyarrow as pa
import pyarrow.parquet as pq

from bertprobe.core.tables import prediction_table, python_value, write_tables
from bertprobe.data.files import ReadOptions, iter_chunks, scan_file
from bertprobe.encoders.encode import embed
from bertprobe.encoders.features import _progress_bar
from bertprobe.encoders.options import RunOptions
from bertprobe.heads.decision import Decision

if TYPE_CHECKING:
    from bertprobe.model.classifier import Classifier


@dataclass
class PredictFileStats:
    """What :func:`predict_file` did."""

    out: Path
    n_texts: int = 0
    source_sha256: str = ""
    n_resumed: int = 0
    n_cached: int = 0
    n_truncated: int = 0
    dropped_empty: int = 0
    seconds: float = 0.0


class PartStore:
    """Finished chunks as numbered Parquet parts in a folder, for one job only.

    A folder left by another job (other input, model, backend or chunking) is emptied: its
    parts would not be this job's rows. A part is written under a temporary name and renamed,
    so a kill leaves whole parts only; the parts are counted from the first, in order.
    """

    def __init__(self, folder: Path, job: dict[str, Any]) -> None:
        self.folder, self.job = folder, job
        self.rows: list[int] = []  # rows of each stored part, in order
        if self._read_job() == job:
            for path in self._paths():
                try:
                    self.rows.append(pq.read_metadata(path).num_rows)
                except (OSError, pa.ArrowException):  # damaged: this and later parts go
                    break
        else:
            shutil.rmtree(folder, ignore_errors=True)
            folder.mkdir(parents=True)
            (folder / "job.json").write_text(json.dumps(job), encoding="utf-8")
        for stale in self._paths()[len(self.rows) :]:
            stale.unlink()

    @property
    def rows_done(self) -> int:
        return sum(self.rows)

    def write(self, table: pa.Table) -> None:
        """Store the next chunk; it is on disk, and counted, when this returns."""
        path = self.folder / f"part-{len(self.rows):06d}.parquet"
        staged = path.with_name(path.name + ".tmp")
        with open(staged, "wb") as fh:
            pq.write_table(table, fh)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(staged, path)
        self.rows.append(table.num_rows)

    def tables(self) -> Iterator[pa.Table]:
        """The stored parts, in order, one in memory at a time."""
        for i in range(len(self.rows)):
            yield pq.read_table(self.folder / f"part-{i:06d}.parquet")

    def remove(self) -> None:
        shutil.rmtree(self.folder, ignore_errors=True)

    def _paths(self) -> list[Path]:
        return sorted(self.folder.glob("part-*.parquet"))

    def _read_job(self) -> dict | None:
        try:
            return json.loads((self.folder / "job.json").read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return None


def predict_file(
    model: Classifier,
    path: str | Path,
    out: str | Path,
    *,
    run: RunOptions = RunOptions(),
    reading: ReadOptions = ReadOptions(),
    chunk_size: int = 4096,
    on_chunk: Callable[[int], None] | None = None,
    decision: Decision | None = None,
) -> PredictFileStats:
    """Label every text of ``path`` into ``out`` (JSON Lines, CSV or Parquet by its name).

    Rows are in file order, as ``predict`` writes them. A checking pass reads the whole file
    first, so a bad row late in a large file is reported before any work. ``on_chunk(n_done)``
    is called after each chunk is stored. An interrupted run resumes after its last stored
    chunk when called again with the same input, model, backend and ``chunk_size``; a model
    that was never saved (no card id) cannot be told apart from another, so it starts over.
    ``decision``: how probabilities become labels (default: the model's own; see
    :meth:`~bertprobe.model.classifier.Classifier.decision_for` for a threshold).
    """
    start = time.perf_counter()
    out = Path(out)
    summary = scan_file(
        path,
        text_col=reading.text_col,
        drop_empty=reading.drop_empty,
        max_field_chars=reading.max_field_chars,
        chunk_size=chunk_size,
    )
    decision = decision or model.decision
    encoder = run.load(model.encoder, default_backend=model.backend)
    classes = [python_value(c) for c in model.classes]
    job = {
        "source_sha256": summary.sha256,
        "model": model.card.get("id") or f"unsaved-{uuid.uuid4().hex}",
        "encoder": encoder.ref.fingerprint,
        "backend": encoder.backend,
        "spec": [model.spec.pooling, list(model.spec.layers), model.spec.max_length]
        + ([model.spec.long_record()] if model.spec.long != "truncate" else []),
        "classes": [str(c) for c in classes],
        "chunk_size": chunk_size,
        "text_col": None if reading.text_col is None else str(reading.text_col),
        "drop_empty": reading.drop_empty,
        # Argmax adds nothing, so that runs before the decision was recorded still resume.
        **({"decision": decision.record()} if decision.rule != "argmax" else {}),
    }
    stats = PredictFileStats(
        out=out,
        n_texts=summary.n,
        source_sha256=summary.sha256,
        dropped_empty=summary.dropped_empty,
    )
    parts = PartStore(out.with_name(out.name + ".partial"), job)
    stats.n_resumed = parts.rows_done
    bar = _progress_bar(summary.n, parts.rows_done, run.progress, desc="predicting")
    try:
        with run.open_cache() as cache:
            seen = 0
            for chunk in iter_chunks(
                path,
                chunk_size,
                text_col=reading.text_col,
                drop_empty=reading.drop_empty,
                max_field_chars=reading.max_field_chars,
            ):
                texts = chunk.texts[max(0, parts.rows_done - seen) :]
                seen += len(chunk)
                if not texts:
                    continue
                # The file's bar counts the texts; a bar per chunk would only flicker under it.
                X, embedded = embed(texts, encoder, model.spec, run.without_progress(), cache=cache)
                probabilities = model.head.predict_proba(X, texts=texts)
                parts.write(
                    prediction_table(
                        texts,
                        probabilities,
                        classes,
                        decision.labels(probabilities),
                        label_sets=decision.label_sets,
                    )
                )
                stats.n_cached += embedded.n_cached
                stats.n_truncated += embedded.n_truncated
                bar.update(len(texts))
                if on_chunk is not None:
                    on_chunk(parts.rows_done)
    finally:
        bar.close()
    write_tables(parts.tables(), out, classes)
    parts.remove()
    stats.seconds = time.perf_counter() - start
    return stats


__all__ = ["PartStore", "PredictFileStats", "predict_file"]
