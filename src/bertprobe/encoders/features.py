"""Feature files: a text file embedded chunk by chunk into a ``.npy`` (or Parquet) file on disk.

Memory stays flat in the number of texts: texts are read one chunk at a time
(:func:`~bertprobe.data.files.iter_chunks`), each chunk's vectors are appended to the file as soon
as
they exist, and :func:`iter_feature_rows` reads them back a chunk at a time the same way.

A run writes ``OUT.partial`` and records its progress in ``OUT.partial.json`` after every chunk;
run the same command again after an interruption and it carries on from the last chunk written,
with or without the embedding cache. ``OUT`` itself appears, complete, only at the end.

Example:
    >>> from bertprobe import EncoderOptions
    >>> from bertprobe.encoders.features import write_features
    >>> stats = write_features("texts.txt", "vectors.npy",
    ...                        encoding=EncoderOptions("minilm"))  # doctest: +SKIP
    >>> np.load("vectors.npy", mmap_mode="r").shape  # doctest: +SKIP
    (1000000, 384)
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from bertprobe.core.errors import BadInputError
from bertprobe.data.files import (
    MAX_FIELD_CHARS,
    ReadOptions,
    is_parquet,
    iter_chunks,
    scan_file,
)
from bertprobe.encoders.cache import EmbeddingCache
from bertprobe.encoders.encode import embed, loaded_encoder
from bertprobe.encoders.encoder import LoadedEncoder
from bertprobe.encoders.options import EncoderOptions, FeatureSpec, RunOptions

DTYPE = np.dtype("<f4")


class FeatureWriter:
    """Rows of float32 vectors appended to a ``.npy`` file of known shape, resumably.

    ``job`` describes what is being written (input hash, encoder, features); a writer finding a
    partial file for the same job resumes after its ``rows_done`` rows, and starts over for any
    other job.
    """

    def __init__(self, out: str | Path, n_rows: int, dim: int, job: dict[str, Any]) -> None:
        self.out = Path(out)
        self.n_rows, self.dim = n_rows, dim
        self.partial = self.out.with_name(self.out.name + ".partial")
        self.progress = self.out.with_name(self.out.name + ".partial.json")
        self.job = {**job, "n_rows": n_rows, "dim": dim}
        self.rows_done = 0
        done = self._rows_on_disk()
        if done is not None:
            self.rows_done = done
        else:
            self.out.parent.mkdir(parents=True, exist_ok=True)
            with open(self.partial, "wb") as fh:
                np.lib.format.write_array_header_1_0(
                    fh, {"descr": DTYPE.str, "fortran_order": False, "shape": (n_rows, dim)}
                )
            self._write_progress()
        self._fh = open(self.partial, "r+b")  # noqa: SIM115 (closed by finish/close)
        self._fh.seek(_header_size(self.partial) + self.rows_done * self._row_bytes)

    def write(self, rows: np.ndarray) -> None:
        """Append rows; they are on disk, and counted as done, when this returns."""
        rows = np.ascontiguousarray(rows, dtype=DTYPE)
        if rows.ndim != 2 or rows.shape[1] != self.dim:
            raise ValueError(f"expected rows of width {self.dim}, got shape {rows.shape}")
        if self.rows_done + len(rows) > self.n_rows:
            raise ValueError(f"{self.rows_done + len(rows)} rows is more than {self.n_rows}")
        self._fh.write(rows.tobytes())
        self._fh.flush()
        os.fsync(self._fh.fileno())
        self.rows_done += len(rows)
        self._write_progress()

    def finish(self) -> Path:
        """Close, check every row was written, and put the file in its place."""
        self.close()
        if self.rows_done != self.n_rows:
            raise ValueError(f"{self.rows_done} of {self.n_rows} rows written")
        os.replace(self.partial, self.out)
        self.progress.unlink(missing_ok=True)
        return self.out

    def close(self) -> None:
        self._fh.close()

    def _rows_on_disk(self) -> int | None:
        """Rows a partial file of this same job already holds; None when there is none."""
        record = self._read_progress()
        if record is None or record.get("job") != self.job:
            return None
        try:
            done = int(record["rows_done"])
            size_needed = _header_size(self.partial) + done * self._row_bytes
            return done if self.partial.stat().st_size >= size_needed else None
        except (OSError, ValueError, KeyError):  # a damaged partial file: start over
            return None

    @property
    def _row_bytes(self) -> int:
        return self.dim * DTYPE.itemsize

    def _read_progress(self) -> dict | None:
        try:
            return json.loads(self.progress.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return None

    def _write_progress(self) -> None:
        staged = self.progress.with_name(self.progress.name + ".tmp")
        staged.write_text(
            json.dumps({"job": self.job, "rows_done": self.rows_done}), encoding="utf-8"
        )
        os.replace(staged, self.progress)


def _header_size(path: Path) -> int:
    with open(path, "rb") as fh:
        np.lib.format.read_magic(fh)
        np.lib.format.read_array_header_1_0(fh)
        return fh.tell()


def iter_feature_rows(path: str | Path, chunk_rows: int = 8192) -> Iterator[np.ndarray]:
    """A ``.npy`` matrix ``chunk_rows`` rows at a time, read into memory one chunk at a time.

    Plain reads, not a memory map: mapped pages count towards the process's resident memory
    until unmapped, which would make a pass over a large file look like it loads all of it.
    """
    with open(path, "rb") as fh:
        readers = {
            (1, 0): np.lib.format.read_array_header_1_0,
            (2, 0): np.lib.format.read_array_header_2_0,
        }
        read_header = readers.get(np.lib.format.read_magic(fh))
        if read_header is None:
            raise BadInputError(f"{path}: unsupported .npy format version")
        shape, fortran, dtype = read_header(fh)
        if fortran or len(shape) != 2:
            raise BadInputError(f"{path}: expected a 2-D row-major feature matrix")
        for start in range(0, shape[0], chunk_rows):
            n = min(chunk_rows, shape[0] - start)
            yield np.fromfile(fh, dtype=dtype, count=n * shape[1]).reshape(n, shape[1])


@dataclass
class FileEmbedStats:
    """What :func:`embed_file` did."""

    n_texts: int = 0
    source_sha256: str = ""
    n_resumed: int = 0
    n_cached: int = 0
    n_truncated: int = 0
    dropped_empty: int = 0
    dim: int = 0
    seconds: float = 0.0
    n_computed: int = 0
    n_windows: int = 0  # long="chunk": windows embedded for the n_computed texts


def write_features(
    path: str | Path,
    out: str | Path,
    *,
    encoding: EncoderOptions,
    reading: ReadOptions = ReadOptions(),
    chunk_size: int = 4096,
) -> FileEmbedStats:
    """The vectors of every text of a file, as ``encoding`` says, into ``out`` (see
    :func:`embed_file`); an interrupted run resumes.

    ``out`` is a ``.npy`` matrix, or a ``.parquet`` file with an ``id`` column (the row's
    0-based position among the texts) and a ``vector`` column (fixed-size lists of float32),
    written from the resumable ``.npy`` a row group at a time."""
    out = Path(out)
    target = out.with_name(out.name + ".npy") if is_parquet(out) else out
    with encoding.open_cache() as cache:
        stats = embed_file(
            path,
            target,
            encoding.load(),
            encoding.spec,
            encoding.run,
            chunk_size=chunk_size,
            cache=cache,
            text_col=reading.text_col,
            drop_empty=reading.drop_empty,
            max_field_chars=reading.max_field_chars,
        )
    if target != out:
        job = vectors_job(encoding.load(), encoding.spec, reading.text_col, reading.drop_empty)
        sources = [{"path": str(path), "sha256": stats.source_sha256, "rows": stats.n_texts}]
        features_to_parquet(target, out, job={**job, "sources": sources})
        target.unlink()
    return stats


def parquet_job(path: str | Path) -> dict[str, Any] | None:
    """How the vectors of a Parquet feature file were made (see :func:`write_vectors_parquet`),
    or None for a file that does not say."""
    raw = (_parquet_metadata(path).schema.to_arrow_schema().metadata or {}).get(JOB_METADATA_KEY)
    return json.loads(raw) if raw is not None else None


def parquet_rows(path: str | Path) -> int:
    """The number of vectors in a Parquet feature file, from its footer."""
    return _parquet_metadata(path).num_rows


def _parquet_metadata(path: str | Path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        return pq.read_metadata(path)
    except (OSError, pa.ArrowException) as exc:
        raise BadInputError(f"{path}: not a readable Parquet feature file ({exc})") from None


def vectors_job(
    model: LoadedEncoder, spec: FeatureSpec, text_col: str | int | None, drop_empty: bool
) -> dict[str, Any]:
    """What decides a text's vector, beside the text: encoder, backend, features, reading."""
    return {
        "encoder": model.ref.fingerprint,
        "backend": model.backend,
        "pooling": spec.pooling,
        "layers": list(spec.layers),
        "max_length": spec.max_length or model.max_length,
        "text_col": text_col,
        "drop_empty": drop_empty,
        **spec.long_record(spec.max_length or model.max_length),
    }


def features_to_parquet(
    npy: str | Path, out: str | Path, chunk_rows: int = 8192, job: dict[str, Any] | None = None
) -> Path:
    """A ``.npy`` feature matrix as Parquet (``id``, ``vector``), a row group at a time.

    >>> np.save("X.npy", np.eye(3, dtype=np.float32))  # doctest: +SKIP
    >>> pq.read_table(features_to_parquet("X.npy", "X.parquet"))["id"].to_pylist()  # doctest: +SKIP
    [0, 1, 2]
    """
    return write_vectors_parquet(iter_feature_rows(npy, chunk_rows), out, job)


# The Parquet schema metadata key under which embed records how its vectors were made, so that
# training from them (`train --out-of-core --features`) can refuse vectors of another file,
# encoder or pooling instead of pairing them with the wrong labels.
JOB_METADATA_KEY = b"bertprobe.job"


def write_vectors_parquet(
    matrices: Iterable[np.ndarray], out: str | Path, job: dict[str, Any] | None = None
) -> Path:
    """Row blocks of vectors, in order, as one Parquet file of ``id`` and ``vector`` columns
    (``id``: the row's 0-based position), a row group a block; ``out`` appears complete.
    ``job`` (see :func:`vectors_job`) is kept in the schema metadata."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    out = Path(out)
    metadata = {JOB_METADATA_KEY: json.dumps(job).encode()} if job is not None else None
    staged = out.with_name(out.name + ".writing")
    writer: pq.ParquetWriter | None = None
    start = 0
    try:
        for rows in matrices:
            rows = np.ascontiguousarray(rows, dtype=DTYPE)
            vectors = pa.FixedSizeListArray.from_arrays(pa.array(rows.ravel()), rows.shape[1])
            ids = pa.array(np.arange(start, start + len(rows), dtype=np.int64))
            table = pa.table({"id": ids, "vector": vectors}, metadata=metadata)
            if writer is None:
                writer = pq.ParquetWriter(staged, table.schema)
            writer.write_table(table)
            start += len(rows)
    finally:
        if writer is not None:
            writer.close()
    os.replace(staged, out)
    return out


def iter_parquet_vectors(
    path: str | Path, chunk_rows: int = 8192, column: str = "vector"
) -> Iterator[np.ndarray]:
    """The ``vector`` column of a Parquet feature file, ``chunk_rows`` rows at a time."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        parquet = pq.ParquetFile(path)
        if column not in parquet.schema_arrow.names:
            raise BadInputError(f"{path}: no column {column!r}; expected embed's id and vector")
        for batch in parquet.iter_batches(batch_size=chunk_rows, columns=[column]):
            vectors = batch.column(0)
            if not pa.types.is_fixed_size_list(vectors.type):
                raise BadInputError(f"{path}: {column!r} is not a column of fixed-size vectors")
            width = vectors.type.list_size
            yield vectors.flatten().to_numpy(zero_copy_only=False).reshape(-1, width)
    except (OSError, pa.ArrowException) as exc:
        raise BadInputError(f"{path}: not a readable Parquet feature file ({exc})") from None


def embed_file(
    path: str | Path,
    out: str | Path,
    encoder: str | LoadedEncoder,
    spec: FeatureSpec = FeatureSpec(),
    run: RunOptions = RunOptions(),
    *,
    chunk_size: int = 4096,
    cache: EmbeddingCache | None = None,
    text_col: str | int | None = None,
    drop_empty: bool = False,
    max_field_chars: int = MAX_FIELD_CHARS,
    on_chunk: Callable[[int], None] | None = None,
) -> FileEmbedStats:
    """Embed every text of a file into the ``.npy`` file ``out``, rows in file order.

    ``run`` says how the encoder runs, as for :func:`~bertprobe.encoders.encode.embed`; its
    progress bar counts the file's texts. A first pass reads (and checks) the whole file
    without embedding, so a bad line late in a large file is reported before any work, and the
    output's shape is known. ``on_chunk(n_done)`` is called after each chunk is on disk.
    """
    start = time.perf_counter()
    model = loaded_encoder(encoder, run, cache)

    summary = scan_file(
        path,
        text_col=text_col,
        drop_empty=drop_empty,
        max_field_chars=max_field_chars,
        chunk_size=chunk_size,
    )
    stats = FileEmbedStats(
        n_texts=summary.n,
        source_sha256=summary.sha256,
        dropped_empty=summary.dropped_empty,
        dim=model.hidden_size * len(spec.layers),
    )
    job = {"source_sha256": summary.sha256, **vectors_job(model, spec, text_col, drop_empty)}
    writer = FeatureWriter(out, stats.n_texts, stats.dim, job)
    stats.n_resumed = writer.rows_done
    bar = _progress_bar(stats.n_texts, writer.rows_done, run.progress)
    try:
        seen = 0
        for chunk in iter_chunks(
            path,
            chunk_size,
            text_col=text_col,
            drop_empty=drop_empty,
            max_field_chars=max_field_chars,
        ):
            texts = chunk.texts[max(0, writer.rows_done - seen) :]
            seen += len(chunk)
            if not texts:
                continue
            vectors, chunk_stats = embed(texts, model, spec, run.without_progress(), cache=cache)
            writer.write(vectors)
            stats.n_cached += chunk_stats.n_cached
            stats.n_truncated += chunk_stats.n_truncated
            stats.n_computed += chunk_stats.n_computed
            stats.n_windows += chunk_stats.n_windows
            bar.update(len(texts))
            if on_chunk is not None:
                on_chunk(writer.rows_done)
        writer.finish()
    finally:
        writer.close()
        bar.close()
    stats.seconds = time.perf_counter() - start
    return stats


def _progress_bar(total: int, initial: int, enabled: bool, desc: str = "embedding"):
    from tqdm.auto import tqdm

    return tqdm(
        total=total,
        initial=initial,
        desc=desc,
        unit="text",
        disable=None if enabled else True,
        leave=False,
    )
