"""The Ray engine: embed or label many files on a Ray cluster with Ray Data.

``bertprobe embed ... --ray [ADDRESS]`` and ``bertprobe predict ... --ray [ADDRESS]`` call
:func:`ray_embed` and :func:`ray_predict`. The plan, for one or many input files (a file, a
folder or a glob; text, TSV/CSV, JSON Lines or Parquet):

1. On the driver, before Ray starts a task: the model folder is loaded and checked (a tampered
   folder fails here, with the usual one-line error), and every input file is read once and
   checked as the single-process commands check it (a bad row in the third file is reported
   now, by file and line).
2. Ray Data: a dataset of work items, each a run of one file's rows (whole batches, about
   four items an actor, so one large file keeps every actor busy); ``map_batches`` runs a
   callable class on an actor pool (``ActorPoolStrategy(size=N)``, ``num_cpus`` per actor, or
   ``num_gpus`` with a CUDA device) that loads the encoder and the probe once per actor, reads
   its item's rows with the same reader as the single-process commands, and yields a block a
   batch: the row's source file, its position among the file's texts, its line, and its vector
   or prediction.
3. Output: given a folder, Parquet shards (``source``, ``row``, ``line`` and the vector or the
   prediction columns), from which input order is the sort by source and row; given a file, the
   rows come back to the driver in input order (Ray Data's ``preserve_order``) and are written
   as the single-process command writes them (``.npy`` / ``.parquet`` vectors, JSON Lines / CSV
   / Parquet predictions).

Ray retries a task whose worker died (an actor is restarted and its batch run again), so a
killed worker costs time, not rows. The embedding cache is per machine: each actor opens the
cache folder of its own machine, unless ``use_cache=False``.

Example:
    >>> from bertprobe import Classifier, RunOptions
    >>> from bertprobe.ray_engine import RayOptions, ray_predict
    >>> model = Classifier.load("models/sst2")  # doctest: +SKIP
    >>> stats = ray_predict(model, "reviews/*.jsonl", "labels.parquet",
    ...                     ray=RayOptions(address="auto", actors=16))  # doctest: +SKIP
"""

from __future__ import annotations

import glob
import logging
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from bertprobe.core.errors import BadInputError
from bertprobe.core.extras import needs_extra
from bertprobe.core.ray_cluster import join_ray
from bertprobe.core.tables import prediction_table, probability_column, python_value, write_tables
from bertprobe.data.files import ReadOptions, is_parquet, iter_chunks, scan_file
from bertprobe.encoders.encode import embed
from bertprobe.encoders.features import DTYPE, FeatureWriter, vectors_job, write_vectors_parquet
from bertprobe.encoders.options import EncoderOptions, RunOptions
from bertprobe.heads.decision import Decision
from bertprobe.model.classifier import Classifier


@dataclass(frozen=True)
class RayOptions:
    """Where and how wide the Ray engine runs.

    Parameters
    ----------
    address : str, optional
        ``None`` starts a local Ray instance; ``"auto"`` joins the cluster the environment
        names (``ray start`` on this machine, or ``RAY_ADDRESS``); ``"ray://host:10001"`` a
        remote cluster through Ray Client.
    actors : int, optional
        Actors, each holding one copy of the encoder (default: the cluster's CPUs divided by
        ``cpus_per_actor``, or its GPUs with a CUDA device).
    cpus_per_actor : float
        CPUs reserved by each actor, and the torch threads it runs.
    batch_rows : int
        Rows per batch handed to an actor (and per block read).

    Examples
    --------
    >>> RayOptions(address="auto", actors=4).actors
    4
    """

    address: str | None = None
    actors: int | None = None
    cpus_per_actor: float = 1.0
    batch_rows: int = 1024

    def __post_init__(self) -> None:
        if self.actors is not None and self.actors < 1:
            raise BadInputError(f"actors={self.actors}: use at least 1", param="actors")
        if not self.cpus_per_actor > 0:
            raise BadInputError(
                f"cpus_per_actor={self.cpus_per_actor}: use a positive number",
                param="cpus_per_actor",
            )
        if self.batch_rows < 1:
            raise BadInputError(f"batch_rows={self.batch_rows}: use at least 1", param="batch_rows")


@dataclass
class RayStats:
    """What a Ray run did: rows, files, actors, where the output went, and the seconds: in all,
    checking the inputs on the driver, and starting or joining Ray."""

    out: Path
    n_texts: int = 0
    n_files: int = 0
    actors: int = 0
    dropped_empty: int = 0
    seconds: float = 0.0
    check_seconds: float = 0.0
    connect_seconds: float = 0.0
    files: list[str] = field(default_factory=list)


def input_files(spec: str | Path | Sequence[str | Path]) -> list[Path]:
    """The files named by a path, a folder (its files, by name) or a glob, in a fixed order.

    >>> input_files("data/sst2/*.tsv")  # doctest: +SKIP
    [PosixPath('data/sst2/dev.tsv'), PosixPath('data/sst2/test.tsv'), ...]
    """
    if not isinstance(spec, str | Path):
        return [f for item in spec for f in input_files(item)]
    path = Path(spec)
    if path.is_dir():
        files = sorted(p for p in path.iterdir() if p.is_file() and not p.name.startswith("."))
        if not files:
            raise BadInputError(f"{path} is a folder with no files; give files to read")
        return files
    if path.exists():
        return [path]
    if glob.has_magic(str(spec)):
        files = sorted(Path(p) for p in glob.glob(str(spec)) if Path(p).is_file())
        if not files:
            raise BadInputError(f"{spec}: no file matches this pattern; check the path")
        return files
    raise BadInputError(f"{spec}: no such file, folder or pattern; check the path")


def connect(options: RayOptions, *, needs_gpu: bool = False) -> int:
    """Start or join Ray as ``options.address`` says; returns the number of actors to run."""
    join_ray(options.address)
    with needs_extra("ray"):
        import ray
        import ray.data

    # Results and one-line errors are bertprobe's to print; Ray Data's progress log lines (on
    # a terminal it draws progress bars instead) stay quiet.
    logging.getLogger("ray").setLevel(logging.WARNING)
    logging.getLogger("ray.data").setLevel(logging.WARNING)
    if options.actors is not None:
        return options.actors
    resources = ray.cluster_resources()
    if needs_gpu:
        return max(1, int(resources.get("GPU", 0)))
    return max(1, int(resources.get("CPU", 1) // options.cpus_per_actor))


@dataclass(frozen=True)
class _Checked:
    files: list[Path]
    counts: list[int]  # texts of each file
    sha256s: list[str]
    n_rows: int
    dropped_empty: int
    seconds: float


def _check_inputs(files: list[Path], reading: ReadOptions, chunk_rows: int) -> _Checked:
    """Every file read and checked on the driver, before any task: errors name file and line."""
    start = time.perf_counter()
    counts, hashes = [], []
    dropped = 0
    for path in files:
        summary = scan_file(
            path,
            text_col=reading.text_col,
            drop_empty=reading.drop_empty,
            max_field_chars=reading.max_field_chars,
            chunk_size=chunk_rows,
        )
        counts.append(summary.n)
        hashes.append(summary.sha256)
        dropped += summary.dropped_empty
    return _Checked(files, counts, hashes, sum(counts), dropped, time.perf_counter() - start)


def _ranges(checked: _Checked, actors: int, batch_rows: int) -> list[dict[str, Any]]:
    """The work items: runs of rows of one file, a whole number of batches each, about four an
    actor in all, so one large file keeps every actor busy and many small ones are not split."""
    span = max(batch_rows, -(-checked.n_rows // (4 * actors)))
    span = -(-span // batch_rows) * batch_rows
    return [
        {"index": i, "source": str(path), "start": start, "stop": min(n, start + span)}
        for i, (path, n) in enumerate(zip(checked.files, checked.counts, strict=True))
        for start in range(0, n, span)
    ]


def _read_range(
    source: str, start: int, stop: int, reading: ReadOptions, batch_rows: int
) -> Iterator[dict[str, Any]]:
    """Texts ``start`` to ``stop`` of a file as batches of (row, line, text), read with the
    single-process reader (rows before ``start`` are read and skipped, not embedded)."""
    seen = 0
    for chunk in iter_chunks(
        source,
        batch_rows,
        text_col=reading.text_col,
        drop_empty=reading.drop_empty,
        max_field_chars=reading.max_field_chars,
    ):
        first, seen = seen, seen + len(chunk)
        if seen <= start:
            continue
        skip = max(0, start - first)
        take = min(len(chunk), stop - first)
        yield {
            "row": np.arange(first + skip, first + take, dtype=np.int64),
            "line": np.asarray(chunk.line_numbers[skip:take], dtype=np.int64),
            "text": chunk.texts[skip:take],
        }
        if seen >= stop:
            return


class _Worker:
    """What each actor holds: the model (or encoder options) and the encoder, loaded once."""

    def __init__(
        self,
        model: Classifier | None,
        encoding: EncoderOptions | None,
        run: RunOptions,
        reading: ReadOptions,
        batch_rows: int,
        threads: int,
        decision: Decision | None = None,
    ) -> None:
        import torch

        torch.set_num_threads(max(1, threads))
        self.model, self.run, self.decision = model, run, decision
        self.reading, self.batch_rows = reading, batch_rows
        if model is not None:
            self.encoder = run.load(model.encoder, default_backend=model.backend)
            self.spec = model.spec
            self.classes = [python_value(c) for c in model.classes]
        else:
            assert encoding is not None
            self.encoder = encoding.load()
            self.spec = encoding.spec

    def __call__(self, batch: dict[str, np.ndarray]) -> Iterator[dict[str, Any]]:
        """Each work item (a run of a file's rows) read and embedded a batch at a time."""
        for index, source, start, stop in zip(
            batch["index"], batch["source"], batch["start"], batch["stop"], strict=True
        ):
            for rows in _read_range(
                str(source), int(start), int(stop), self.reading, self.batch_rows
            ):
                keys = {
                    "file": np.full(len(rows["row"]), int(index), dtype=np.int64),
                    "source": np.full(len(rows["row"]), str(source), dtype=object),
                    "row": rows["row"],
                    "line": rows["line"],
                }
                yield {**keys, **self._outputs(rows["text"])}

    def _outputs(self, texts: list[str]) -> dict[str, Any]:
        with self.run.open_cache() as cache:
            # The driver shows the job's progress; the workers' bars would only interleave.
            X, _ = embed(texts, self.encoder, self.spec, self.run.without_progress(), cache=cache)
        if self.model is None:
            return {"vector": np.asarray(X, dtype=DTYPE)}
        probabilities = self.model.head.predict_proba(X, texts=texts)
        decision = self.decision or self.model.decision
        table = prediction_table(
            texts,
            probabilities,
            self.classes,
            decision.labels(probabilities),
            label_sets=decision.label_sets,
        )
        # A multi-label model's "labels" is a list a row: an object array of lists for Ray.
        return {
            name: table.column(name).to_numpy(zero_copy_only=False) for name in table.column_names
        }


def _dataset(
    checked: _Checked,
    worker_args: dict[str, Any],
    options: RayOptions,
    actors: int,
    device: str,
    reading: ReadOptions,
):
    import ray.data

    context = ray.data.DataContext.get_current()
    context.execution_options.preserve_order = True  # a file output is written in input order
    items = _ranges(checked, actors, options.batch_rows)
    threads = max(1, int(options.cpus_per_actor))
    gpu = device.startswith("cuda")
    # Reading happens in the actors (bertprobe's reader, a run of rows at a time): a separate
    # reading stage would start more worker processes, each importing torch, for work that
    # is light next to the encoder's.
    return ray.data.from_items(items, override_num_blocks=len(items)).map_batches(
        _Worker,
        fn_constructor_kwargs={
            **worker_args,
            "reading": reading,
            "batch_rows": options.batch_rows,
            "threads": threads,
        },
        compute=ray.data.ActorPoolStrategy(size=actors),
        batch_size=1,
        num_gpus=1 if gpu else None,
        num_cpus=None if gpu else options.cpus_per_actor,
    )


def _is_file_output(out: Path) -> bool:
    return out.suffix != "" and not out.is_dir()


def _run(
    files_spec: str | Path | Sequence[str | Path],
    out: str | Path,
    worker_args: dict[str, Any],
    options: RayOptions,
    device: str,
    reading: ReadOptions,
    write: Callable[[Iterator[Any], _Checked], None],
    on_batch: Callable[[int], None] | None,
) -> RayStats:
    start = time.perf_counter()
    out = Path(out)
    files = input_files(files_spec)
    checked = _check_inputs(files, reading, options.batch_rows)
    connected = time.perf_counter()
    actors = connect(options, needs_gpu=device.startswith("cuda"))
    connected = time.perf_counter() - connected
    dataset = _dataset(checked, worker_args, options, actors, device, reading)
    if _is_file_output(out):
        write(_ordered_batches(dataset, checked, on_batch), checked)
    else:
        out.mkdir(parents=True, exist_ok=True)
        # Writing reserves no CPU: with the default of one, the write tasks waited for the
        # actors to give theirs back, so every shard was written after the last batch.
        dataset.write_parquet(str(out), ray_remote_args={"num_cpus": 0})
    return RayStats(
        out=out,
        n_texts=checked.n_rows,
        n_files=len(files),
        actors=actors,
        dropped_empty=checked.dropped_empty,
        seconds=time.perf_counter() - start,
        check_seconds=checked.seconds,
        connect_seconds=connected,
        files=[str(f) for f in files],
    )


def _ordered_batches(
    dataset: Any, checked: _Checked, on_batch: Callable[[int], None] | None
) -> Iterator[dict[str, np.ndarray]]:
    """The dataset's rows, batch by batch in input order, each row exactly once (checked)."""
    expected = (0, 0)  # (file, row) of the next row
    done = 0
    for batch in dataset.iter_batches(batch_format="numpy", batch_size=None):
        for key in zip(batch["file"].tolist(), batch["row"].tolist(), strict=True):
            if key != expected and key != (expected[0] + 1, 0):
                raise RuntimeError(f"Ray returned row {key} where {expected} was due")
            expected = (key[0], key[1] + 1)
        done += len(batch["row"])
        yield batch
        if on_batch is not None:
            on_batch(done)
    if done != checked.n_rows:
        raise RuntimeError(f"Ray returned {done} rows of {checked.n_rows}")


def ray_predict(
    model: Classifier,
    inputs: str | Path | Sequence[str | Path],
    out: str | Path,
    *,
    run: RunOptions = RunOptions(),
    reading: ReadOptions = ReadOptions(),
    ray: RayOptions = RayOptions(),
    on_batch: Callable[[int], None] | None = None,
    threshold: float | str | None = None,
) -> RayStats:
    """Label every text of ``inputs`` on Ray: into ``out`` (a file: JSON Lines, CSV or Parquet,
    in input order, as ``predict --output`` writes it) or into the folder ``out`` (Parquet
    shards with ``source``, ``row`` and ``line``). ``threshold``: as
    :meth:`~bertprobe.model.classifier.Classifier.predict`'s (the decision is made here, once,
    and every actor decides by it)."""
    classes = [python_value(c) for c in model.classes]
    decision = model.decision_for(threshold)

    def write(batches: Iterator[dict[str, np.ndarray]], checked: _Checked) -> None:
        import pyarrow as pa

        decided = ("labels", pa.list_(pa.string())) if decision.label_sets else ("label", None)
        names = [(probability_column(c), pa.float64()) for c in classes]
        tables = (
            pa.table(
                {
                    "text": pa.array(batch["text"].tolist(), pa.string()),
                    **{
                        name: pa.array([_plain(v) for v in batch[name]], kind)
                        for name, kind in [decided, *names]
                    },
                }
            )
            for batch in batches
        )
        write_tables(tables, out, classes)

    args = {"model": model, "encoding": None, "run": run, "decision": decision}
    return _run(inputs, out, args, ray, run.device, reading, write, on_batch)


def _plain(value: Any) -> Any:
    """A cell of a Ray batch as pyarrow takes it: lists for list cells (Ray hands them back
    as numpy arrays), plain values otherwise."""
    if isinstance(value, np.ndarray):
        return value.tolist()
    return python_value(value)


def ray_embed(
    inputs: str | Path | Sequence[str | Path],
    out: str | Path,
    *,
    encoding: EncoderOptions,
    reading: ReadOptions = ReadOptions(),
    ray: RayOptions = RayOptions(),
    on_batch: Callable[[int], None] | None = None,
) -> RayStats:
    """Embed every text of ``inputs`` on Ray: into ``out`` (a ``.npy`` or ``.parquet`` file in
    input order, as ``embed`` writes it) or into the folder ``out`` (Parquet shards)."""
    encoder = encoding.load()  # the encoder resolves (and fails) on the driver, before any task

    def write(batches: Iterator[dict[str, np.ndarray]], checked: _Checked) -> None:
        target = Path(out)
        matrices = (np.asarray(batch["vector"], dtype=DTYPE) for batch in batches)
        if is_parquet(target):
            job = vectors_job(encoder, encoding.spec, reading.text_col, reading.drop_empty)
            sources = [
                {"path": str(path), "sha256": sha256, "rows": rows}
                for path, sha256, rows in zip(
                    checked.files, checked.sha256s, checked.counts, strict=True
                )
            ]
            write_vectors_parquet(matrices, target, {**job, "sources": sources})
            return
        feature_writer = None
        try:
            for X in matrices:
                if feature_writer is None:
                    job = {"ray": time.time_ns()}  # never resumed: a Ray run starts over
                    feature_writer = FeatureWriter(target, checked.n_rows, X.shape[1], job)
                feature_writer.write(X)
            if feature_writer is not None:
                feature_writer.finish()
        finally:
            if feature_writer is not None:
                feature_writer.close()

    run = encoding.run
    args = {"model": None, "encoding": encoding, "run": run}
    return _run(inputs, out, args, ray, run.device, reading, write, on_batch)


__all__ = ["RayOptions", "RayStats", "connect", "input_files", "ray_embed", "ray_predict"]
