"""A resumable on-disk embedding cache in SQLite.

One row per (view, text): a *view* is one encoder (by fingerprint), one hidden-state layer, one
pooling and one max length (and, for long texts split into windows, the stride and the pooling
of the windows); the text is keyed by its SHA-256. Concatenated multi-layer features
are assembled from single-layer rows, so a layer sweep fills the cache once for every choice.
Rows are committed batch by batch: an interrupted run keeps what it finished, and the next run
computes only the rest.

The default location is the user cache folder (``~/.cache/bertprobe`` on Linux); set
``BERTPROBE_CACHE_DIR`` or pass ``cache_dir`` to move it.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import sqlite3
import time
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path

import numpy as np

from bertprobe.core.errors import BadInputError

# The version in the name changes with the schema or the keys: an old file is simply not read.
CACHE_FILE = "embeddings-v2.sqlite3"
_SQL_CHUNK = 500  # keys per SELECT ... IN (...), well under SQLite's parameter limit

_SCHEMA = """
CREATE TABLE IF NOT EXISTS views (
    view TEXT PRIMARY KEY,
    encoder TEXT NOT NULL,
    fingerprint TEXT NOT NULL,
    layer INTEGER NOT NULL,
    pooling TEXT NOT NULL,
    max_length INTEGER NOT NULL,
    backend TEXT NOT NULL,
    dim INTEGER NOT NULL,
    created TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS view_windows (
    view TEXT PRIMARY KEY,
    long TEXT NOT NULL,
    stride INTEGER NOT NULL,
    window_pool TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS vectors (
    view TEXT NOT NULL,
    text_sha256 BLOB NOT NULL,
    vector BLOB NOT NULL,
    PRIMARY KEY (view, text_sha256)
) WITHOUT ROWID;
"""


def default_cache_dir() -> Path:
    """``$BERTPROBE_CACHE_DIR``, else the platform's user cache folder for bertprobe."""
    from platformdirs import user_cache_dir

    return Path(os.environ.get("BERTPROBE_CACHE_DIR") or user_cache_dir("bertprobe"))


# How long a process waits for another one that holds the cache's write lock.
BUSY_SECONDS = 30.0


def _opened(path: Path) -> sqlite3.Connection:
    """A connection to the cache file at ``path``, in WAL mode with the schema made, waiting
    up to :data:`BUSY_SECONDS` for other processes that are creating or writing it.

    SQLite's busy timeout does not cover every lock taken while a file is made: switching a new
    file to WAL, or a reader meeting another connection's WAL recovery, can answer "database
    is locked" at once. Those are retried here, with growing pauses, until the same deadline.
    """
    deadline = time.monotonic() + BUSY_SECONDS
    pause = 0.01
    while True:
        db = sqlite3.connect(path, timeout=BUSY_SECONDS)
        try:
            # WAL is recorded in the file: only the process that makes it switches the mode.
            if db.execute("PRAGMA journal_mode").fetchone()[0].lower() != "wal":
                db.execute("PRAGMA journal_mode=WAL")  # readers never block the writer
            db.execute("PRAGMA synchronous=NORMAL")
            db.executescript(_SCHEMA)
            return db
        except sqlite3.OperationalError as exc:
            db.close()
            busy = "locked" in str(exc) or "busy" in str(exc)
            if not busy or time.monotonic() + pause > deadline:
                raise
            time.sleep(pause * (1 + random.random()))  # noqa: S311 (jitter, not a secret)
            pause = min(2 * pause, 1.0)


class EmbeddingCache:
    """Vectors by (view, text hash). Use as a context manager, or call :meth:`close`."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._db = _opened(self.path)
        except (OSError, sqlite3.Error) as exc:
            raise BadInputError(
                f"embedding cache {self.path} cannot be opened ({exc}); pass "
                "cache_dir= a writable folder, or use_cache=False",
                param=("cache_dir", "use_cache=False"),
            ) from None
        self._dims: dict[str, int] = {}

    def register_view(
        self,
        encoder: str,
        fingerprint: str,
        layer: int,
        pooling: str,
        max_length: int,
        dim: int,
        backend: str = "torch",
        *,
        long: str = "truncate",
        stride: int = 0,
        window_pool: str = "mean",
    ) -> str:
        """The key for one view, recorded with its description so the cache can be inspected.

        Vectors from another backend (int8 weights, say) are another view, and so are pooled
        windows of long texts (``long="chunk"``, by stride and window pooling); truncated
        vectors keep the keys they had before windows existed.
        """
        described: dict[str, object] = {
            "fingerprint": fingerprint,
            "layer": layer,
            "pooling": pooling,
            "max_length": max_length,
            "backend": backend,
        }
        if long != "truncate":
            described.update(long=long, stride=stride, window_pool=window_pool)
        view = hashlib.sha256(json.dumps(described, sort_keys=True).encode()).hexdigest()[:24]
        if long != "truncate":
            self._db.execute(
                "INSERT OR IGNORE INTO view_windows VALUES (?, ?, ?, ?)",
                (view, long, stride, window_pool),
            )
        self._db.execute(
            "INSERT OR IGNORE INTO views VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (
                view,
                encoder,
                fingerprint,
                layer,
                pooling,
                max_length,
                backend,
                dim,
                datetime.now(UTC).isoformat(timespec="seconds"),
            ),
        )
        self._db.commit()
        self._dims[view] = dim
        return view

    def get_many(self, view: str, keys: Sequence[bytes]) -> dict[bytes, np.ndarray]:
        """The cached vectors among ``keys`` (missing keys are simply absent)."""
        found: dict[bytes, np.ndarray] = {}
        dim = self._dims[view]
        unique = list(dict.fromkeys(keys))
        for start in range(0, len(unique), _SQL_CHUNK):
            chunk = unique[start : start + _SQL_CHUNK]
            marks = ",".join("?" * len(chunk))
            rows = self._db.execute(
                "SELECT text_sha256, vector FROM vectors "  # noqa: S608 only ? marks go in; values are bound
                f"WHERE view = ? AND text_sha256 IN ({marks})",
                (view, *chunk),
            )
            for key, blob in rows:
                vec = np.frombuffer(blob, dtype=np.float32)
                if vec.shape == (dim,):  # a row of another size would be a corrupt entry
                    found[bytes(key)] = vec
        return found

    def put_many(self, view: str, keys: Sequence[bytes], vectors: np.ndarray) -> None:
        """Stage vectors for ``keys``; they are durable after :meth:`commit`."""
        data = np.ascontiguousarray(vectors, dtype=np.float32)
        self._db.executemany(
            "INSERT OR REPLACE INTO vectors VALUES (?, ?, ?)",
            ((view, key, row.tobytes()) for key, row in zip(keys, data, strict=True)),
        )

    @property
    def folder(self) -> Path:
        """The folder the cache file is in; the onnx exports are kept there too."""
        return self.path.parent

    def commit(self) -> None:
        self._db.commit()

    def count(self, view: str | None = None) -> int:
        """Number of cached vectors, in one view or in all."""
        if view is None:
            return self._db.execute("SELECT COUNT(*) FROM vectors").fetchone()[0]
        return self._db.execute("SELECT COUNT(*) FROM vectors WHERE view = ?", (view,)).fetchone()[
            0
        ]

    def close(self) -> None:
        self._db.close()

    def __enter__(self) -> EmbeddingCache:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def open_cache(cache_dir: str | Path | None = None) -> EmbeddingCache:
    """The cache in ``cache_dir`` (default: :func:`default_cache_dir`)."""
    return EmbeddingCache(Path(cache_dir or default_cache_dir()) / CACHE_FILE)
