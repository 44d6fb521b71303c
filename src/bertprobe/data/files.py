"""Read labelled texts (and unlabelled ones) from TSV, CSV, JSON Lines or Parquet files.

Files may have a header or none (the SST-2 files have none: ``text<TAB>label``), UTF-8 with or
without a byte-order mark, and LF or CRLF line ends. A ``.parquet`` file is read with pyarrow,
a record batch at a time; its columns are chosen by name or index as a table's are, and errors
name its 1-based rows. Problems are reported as
:class:`~bertprobe.core.errors.BadInputError` naming the file and the line numbers involved.

Example:
    >>> from bertprobe.data.files import read_labelled
    >>> data = read_labelled("data/sst2/train.tsv")  # doctest: +SKIP
    >>> len(data.texts), data.labels[:3]  # doctest: +SKIP
    (6920, [1, 0, 0])
"""

from __future__ import annotations

import csv
import hashlib
import itertools
import json
import os
import re
import shutil
import sys
import tempfile
from codecs import BOM_UTF8 as BOM
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO, Literal

from bertprobe.core.errors import BadInputError

# Header names recognised without being asked for, most specific first.
TEXT_COLUMN_NAMES = ("text", "sentence", "review", "content", "document", "utterance", "input")
LABEL_COLUMN_NAMES = ("label", "labels", "class", "category", "target", "sentiment", "y")

Label = int | str
_INT_LABEL = re.compile(r"[+-]?\d+")
_MAX_LINES_LISTED = 8
# The csv module refuses a cell over 131,072 characters by default, a few pages of text; long
# documents are what chunked embedding is for, so the bound is raised, and stays a bound so an
# unclosed quote cannot read a whole file into one cell.
MAX_FIELD_CHARS = 10_000_000
MAX_FIELD_CHARS_BOUND = 2**31 - 1


@dataclass(frozen=True)
class LabelledTexts:
    """Texts read from one file, with their labels (None for unlabelled input).

    ``line_numbers[i]`` is the 1-based line of ``texts[i]`` in the file, for error messages.
    """

    texts: list[str]
    labels: list[Label] | None
    source: str
    sha256: str
    line_numbers: list[int] = field(repr=False)
    dropped_empty: int = 0

    def __len__(self) -> int:
        return len(self.texts)

    @classmethod
    def from_lists(
        cls, texts: Sequence[str], labels: Sequence[Label] | None, source: str = "the texts"
    ) -> LabelledTexts:
        """Texts (and labels) held in memory, checked as a file's rows are.

        >>> LabelledTexts.from_lists(["fine", "awful"], [1, 0]).labels
        [1, 0]
        """
        if isinstance(texts, str):
            raise BadInputError(
                "texts: expected a list of texts, got one string; wrap it in a list"
            )
        texts = list(texts)
        bad = [i for i, t in enumerate(texts) if not isinstance(t, str) or not t.strip()]
        if bad:
            raise BadInputError(f"{source}: text {bad[0]} is empty or not a string")
        if labels is not None:
            labels = list(labels)
            if len(labels) != len(texts):
                raise BadInputError(
                    f"{source}: {len(texts)} texts but {len(labels)} labels; give one label a text"
                )
        digest = hashlib.sha256(json.dumps([texts, labels], default=str).encode()).hexdigest()
        return cls(texts, labels, source, digest, list(range(1, len(texts) + 1)))


@dataclass(frozen=True)
class ReadOptions:
    """How rows are read from a file: built once, passed whole.

    Parameters
    ----------
    text_col, label_col : str or int, optional
        The text and label columns, by header name or 0-based index (default: recognised
        header names, else the first and the last column).
    header : bool, optional
        Whether the first line is a header (default: guessed from the first line).
    drop_empty : bool
        Skip rows whose text is empty instead of refusing the file.
    label_sep : str, optional
        Multi-label files: the label column holds each text's labels joined by this string
        (``comedy|drama``; an empty cell is a text with no label). See
        :mod:`bertprobe.heads.multilabel`.
    label_cols : str or tuple of str or int, optional
        Multi-label files: one 0/1 column per label, by header name or 0-based index (a comma
        list, or a tuple). Without a header the labels are named by their column index.
    max_field_chars : int
        The most characters one cell of a CSV or TSV file may hold (default 10,000,000); a
        longer cell is refused with its line, as is an unclosed quote that would read on.

    Examples
    --------
    >>> ReadOptions(text_col="review", label_col="stars").label_col
    'stars'
    >>> ReadOptions(label_cols="comedy,drama").label_cols
    ('comedy', 'drama')
    """

    text_col: str | int | None = None
    label_col: str | int | None = None
    header: bool | None = None
    drop_empty: bool = False
    label_sep: str | None = None
    label_cols: tuple[str | int, ...] | str | None = None
    max_field_chars: int = MAX_FIELD_CHARS

    def __post_init__(self) -> None:
        _check_field_chars(self.max_field_chars)
        if self.label_sep is not None and not self.label_sep:
            raise BadInputError(
                "label_sep='' splits nothing; give a separator such as '|'", param="label_sep"
            )
        if isinstance(self.label_cols, str):
            cols = tuple(c.strip() for c in self.label_cols.split(",") if c.strip())
            object.__setattr__(self, "label_cols", cols)
        if self.label_cols is not None:
            if not self.label_cols:
                raise BadInputError(
                    "label_cols= names no column; give the 0/1 label columns as a comma list",
                    param="label_cols",
                )
            if self.label_sep is not None:
                raise BadInputError(
                    "label_sep= and label_cols= do not combine: the labels are either one "
                    "separator-joined column or several 0/1 columns; give one of them",
                    param=("label_sep", "label_cols"),
                )
            if self.label_col is not None:
                raise BadInputError(
                    "label_col= and label_cols= do not combine: give the one joined label "
                    "column (with label_sep=) or the 0/1 label columns",
                    param=("label_col", "label_cols", "label_sep"),
                )
            if len(set(map(str, self.label_cols))) < len(self.label_cols):
                raise BadInputError(
                    f"label_cols={','.join(map(str, self.label_cols))} names a "
                    "column twice; name each label column once",
                    param="label_cols",
                )

    @property
    def label_sets(self) -> bool:
        """Whether these options read several labels per text (``label_sep`` or
        ``label_cols`` given)."""
        return self.label_sep is not None or self.label_cols is not None

    def read_labelled(self, path: str | Path) -> LabelledTexts:
        """The labelled rows of ``path``, every row checked."""
        return read_labelled(
            path,
            text_col=self.text_col,
            label_col=self.label_col,
            header=self.header,
            drop_empty=self.drop_empty,
            max_field_chars=self.max_field_chars,
        )


def _check_field_chars(value: int) -> None:
    # The csv module keeps the limit in a C long, 32 bits on some platforms.
    if not 1 <= value <= MAX_FIELD_CHARS_BOUND:
        raise BadInputError(
            f"max_field_chars={value}: use from 1 to {MAX_FIELD_CHARS_BOUND:,} characters",
            param="max_field_chars",
        )


def read_labelled(
    path: str | Path,
    *,
    text_col: str | int | None = None,
    label_col: str | int | None = None,
    header: bool | None = None,
    drop_empty: bool = False,
    max_field_chars: int = MAX_FIELD_CHARS,
) -> LabelledTexts:
    """Read a labelled file. Every row needs a non-empty text and a label."""
    return _read(
        path,
        text_col=text_col,
        label_col=label_col,
        header=header,
        drop_empty=drop_empty,
        want_labels=True,
        max_field_chars=max_field_chars,
    )


def read_texts(
    path: str | Path,
    *,
    text_col: str | int | None = None,
    header: bool | None = None,
    drop_empty: bool = False,
    max_field_chars: int = MAX_FIELD_CHARS,
) -> LabelledTexts:
    """Read texts to embed or classify; labels, if the file has them, are kept but not needed.

    ``"-"`` reads standard input. A ``.txt`` file, standard input, or any file without a
    delimiter in its first line holds one text a line; tables (TSV, CSV, JSON Lines) use
    ``text_col`` or the first recognisable text column.
    """
    return _read(
        path,
        text_col=text_col,
        label_col=None,
        header=header,
        drop_empty=drop_empty,
        want_labels=False,
        max_field_chars=max_field_chars,
    )


def align_labels(labels: Sequence[Label], known: Sequence[Label], source: str) -> list[Label]:
    """``labels`` as the ``known`` label values (a model's classes), matched by their text.

    A file read alone cannot tell that its "1" is the model's 1, or its 1 the model's "1";
    matching by text settles it. Labels outside ``known`` stay as text, and then every label
    is returned as text, so metrics compare like with like. A file that shares no label with
    ``known`` is refused: its accuracy would be 0 for no fault of the model.
    """
    by_text = {str(k): k for k in known}
    texts = [str(y) for y in labels]
    if not any(t in by_text for t in texts):
        theirs = ", ".join(sorted(set(texts))[:8])
        raise BadInputError(
            f"{source}: none of its labels ({theirs}) is one of the model's "
            f"({', '.join(by_text)}); relabel the file or use a model trained "
            "on these labels"
        )
    if all(t in by_text for t in texts):
        return [by_text[t] for t in texts]
    return list(texts)


@contextmanager
def staged_folder(destination: Path) -> Iterator[Path]:
    """A new folder beside ``destination`` to write into; when the block ends without error
    it replaces ``destination`` whole (one rename), else it is removed. A reader never sees a
    half-written folder, and an interrupted write leaves the old one as it was."""
    destination.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{destination.name}.", dir=destination.parent))
    try:
        yield staging
        if destination.exists():
            shutil.rmtree(destination)
        os.replace(staging, destination)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise


def check_output_path(path: str | Path, *, what: str, folder: bool) -> Path:
    """Refuse, before any work starts, a place where an output cannot be written.

    ``what`` names the output in the error (e.g. ``"--out"``); ``folder`` says whether a folder
    (a model, a report) or a file (vectors, predictions) goes there. Missing parent folders are
    fine (they are created); a file where a folder must go, or the reverse, is not.
    """
    path = Path(path)
    try:
        if folder and path.exists() and not path.is_dir():
            raise BadInputError(
                f"{what} {path} is a file, and a folder is written there; "
                "choose a new path or an existing folder"
            )
        if not folder and path.is_dir():
            raise BadInputError(f"{what} {path} is a folder; give the path of a file to write")
        parent = path.absolute().parent
        while not parent.exists():
            parent = parent.parent
        if not parent.is_dir():
            raise BadInputError(
                f"{what} {path}: {parent} is a file, so nothing can be written "
                "under it; choose another path"
            )
        if not os.access(parent if not path.exists() else path, os.W_OK):
            raise BadInputError(f"{what} {path}: not writable by this user; choose another path")
    except OSError as exc:
        raise BadInputError(f"{what} {path}: {exc.strerror}; choose another path") from None
    return path


def format_lines(lines: Sequence[int]) -> str:
    """'3, 7, 12' or '3, 7, ... (40 in all)' for error messages."""
    shown = ", ".join(str(n) for n in lines[:_MAX_LINES_LISTED])
    if len(lines) > _MAX_LINES_LISTED:
        return f"{shown}, ... ({len(lines)} in all)"
    return shown


# --- reading ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class TextChunk:
    """Consecutive valid rows of a file, as :func:`iter_chunks` yields them."""

    texts: list[str]
    labels: list[Label] | None
    line_numbers: list[int] = field(repr=False)
    dropped_empty: int = 0

    def __len__(self) -> int:
        return len(self.texts)


def iter_chunks(
    path: str | Path,
    chunk_size: int = 4096,
    *,
    text_col: str | int | None = None,
    label_col: str | int | None = None,
    header: bool | None = None,
    drop_empty: bool = False,
    max_field_chars: int = MAX_FIELD_CHARS,
    want_labels: bool = False,
) -> Iterator[TextChunk]:
    """Read a file ``chunk_size`` valid rows at a time, holding no more than one chunk.

    The file is decoded line by line, so memory stays flat however long it is. Each chunk is
    checked as :func:`read_labelled` checks a whole file (the error names the lines), so a bad
    row stops the stream at the chunk that holds it. JSON Lines columns are those of the first
    record.

    Example:
        >>> sum(len(c) for c in iter_chunks("data/sst2/train.tsv", 1000))  # doctest: +SKIP
        6920
    """
    yield from _Reader(path, max_field_chars).chunks(
        chunk_size,
        text_col=text_col,
        label_col=label_col,
        header=header,
        drop_empty=drop_empty,
        want_labels=want_labels,
    )


@dataclass(frozen=True)
class FileSummary:
    """What a checking pass over a whole file found: valid rows, skipped empties, hash."""

    n: int
    dropped_empty: int
    sha256: str


def scan_file(
    path: str | Path,
    *,
    text_col: str | int | None = None,
    label_col: str | int | None = None,
    header: bool | None = None,
    drop_empty: bool = False,
    max_field_chars: int = MAX_FIELD_CHARS,
    want_labels: bool = False,
    chunk_size: int = 4096,
) -> FileSummary:
    """Read and check a whole file without keeping it: row count, empties skipped, SHA-256."""
    reader = _Reader(path, max_field_chars)
    n = dropped = 0
    for chunk in reader.chunks(
        chunk_size,
        text_col=text_col,
        label_col=label_col,
        header=header,
        drop_empty=drop_empty,
        want_labels=want_labels,
    ):
        n += len(chunk)
        dropped += chunk.dropped_empty
    if not n:
        raise BadInputError(
            f"{reader.source}: no texts left to read; check the file and its columns"
        )
    return FileSummary(n=n, dropped_empty=dropped, sha256=reader.sha256)


def scan_labels(
    path: str | Path,
    *,
    text_col: str | int | None = None,
    label_col: str | int | None = None,
    drop_empty: bool = False,
    max_field_chars: int = MAX_FIELD_CHARS,
    chunk_size: int = 8192,
) -> tuple[list[Any], FileSummary]:
    """Every label of a labelled file, in row order, with what :func:`scan_file` finds; texts
    are read and checked but not kept, so memory holds labels only."""
    reader = _Reader(path, max_field_chars)
    labels: list[Any] = []
    dropped = 0
    for chunk in reader.chunks(
        chunk_size,
        text_col=text_col,
        label_col=label_col,
        header=None,
        drop_empty=drop_empty,
        want_labels=True,
    ):
        labels.extend(chunk.labels or [])
        dropped += chunk.dropped_empty
    return labels, FileSummary(n=len(labels), dropped_empty=dropped, sha256=reader.sha256)


def _read(
    path: str | Path,
    *,
    text_col: str | int | None,
    label_col: str | int | None,
    header: bool | None,
    drop_empty: bool,
    max_field_chars: int = MAX_FIELD_CHARS,
    want_labels: bool,
) -> LabelledTexts:
    reader = _Reader(path, max_field_chars)
    # One chunk of everything: every bad line of the file is named in one message.
    chunks = list(
        reader.chunks(
            None,
            text_col=text_col,
            label_col=label_col,
            header=header,
            drop_empty=drop_empty,
            want_labels=want_labels,
        )
    )
    if not chunks or not chunks[0].texts:
        raise BadInputError(
            f"{reader.source}: no texts left to read; check the file and its columns"
        )
    whole = chunks[0]
    return LabelledTexts(
        texts=whole.texts,
        labels=whole.labels,
        source=reader.source,
        sha256=reader.sha256,
        line_numbers=whole.line_numbers,
        dropped_empty=whole.dropped_empty,
    )


class _Reader:
    """One pass over a file or standard input: decoded lines, rows, then checked chunks.

    Bytes are hashed as they are read (``sha256`` is final once the pass ends); lines are
    decoded one at a time so a bad byte is reported with its line and column.
    """

    def __init__(self, path: str | Path, max_field_chars: int = MAX_FIELD_CHARS) -> None:
        _check_field_chars(max_field_chars)
        self.path = path
        self.max_field_chars = max_field_chars
        self.source = "<stdin>" if str(path) == "-" else str(path)
        self._digest = hashlib.sha256()

    @property
    def sha256(self) -> str:
        return self._digest.hexdigest()

    def chunks(
        self,
        chunk_size: int | None,
        *,
        text_col: str | int | None,
        label_col: str | int | None,
        header: bool | None,
        drop_empty: bool,
        want_labels: bool,
    ) -> Iterator[TextChunk]:
        if chunk_size is not None and chunk_size < 1:
            raise BadInputError(f"chunk size {chunk_size} must be at least 1")
        rows, columns, unit = self.table(header, (text_col, label_col), want_labels)
        yield from self._checked_chunks(
            rows, columns, chunk_size, text_col, label_col, drop_empty, want_labels, unit
        )

    def table(
        self,
        header: bool | None,
        requested: tuple[str | int | None, ...],
        want_labels: bool,
    ) -> tuple[Rows, list[str] | None, str]:
        """The file's rows as cells (1-based line or row numbers), its column names (None
        without a header) and what its numbers count (``"lines"`` or ``"rows"``), unchecked.

        ``requested``: the columns asked for by name, so a header naming them is recognised.
        """
        source = self.source
        rows: Iterator[tuple[int, list[str]]]
        columns: list[str] | None = None
        if is_parquet(source):
            rows, columns = self._parquet_rows()
            return rows, columns, "rows"
        lines = self._lines()
        head: list[str] = []
        for line in lines:  # the first non-blank line tells the file's kind
            head.append(line)
            if line.strip():
                break
        if not head or not head[-1].strip():
            what = "text<TAB>label lines" if want_labels else "one text a line, or a table"
            raise BadInputError(f"{source} is empty: expected {what}")
        lines = itertools.chain(head, lines)

        kind = _file_kind(source, head[-1], want_labels)
        if kind == "lines":
            rows = (
                (n, [line.rstrip("\r\n")]) for n, line in enumerate(lines, start=1) if line.strip()
            )
        elif kind == "jsonl":
            rows, columns = _jsonl_rows(lines, source)
        else:
            rows, columns = _delimited_rows(
                lines,
                "\t" if kind == "tsv" else ",",
                source,
                header,
                requested,
                self.max_field_chars,
            )
        return rows, columns, "lines"

    def _checked_chunks(
        self,
        rows: Iterator[tuple[int, list[str]]],
        columns: list[str] | None,
        chunk_size: int | None,
        text_col: str | int | None,
        label_col: str | int | None,
        drop_empty: bool,
        want_labels: bool,
        unit: str,
    ) -> Iterator[TextChunk]:
        source = self.source
        first = next(rows, None)
        if first is None:
            raise BadInputError(f"{source}: no texts left to read; check the file and its columns")
        rows = itertools.chain([first], rows)

        text_idx = _column_index(columns, first, text_col, TEXT_COLUMN_NAMES, 0, "text_col", source)
        assert text_idx is not None  # the default, 0, always exists
        label_idx: int | None = None
        if want_labels:
            default_label = None if len(first[1]) < 2 else -1
            label_idx = _column_index(
                columns, first, label_col, LABEL_COLUMN_NAMES, default_label, "label_col", source
            )
            if label_idx is None:
                raise BadInputError(
                    f"{source}: no label column ({unit[:-1]} {first[0]} has one column); "
                    "expected text<TAB>label, or name the column with label_col=",
                    param="label_col",
                )
            if label_idx == text_idx:
                raise BadInputError(
                    f"{source}: the text and label columns are the same column; "
                    "set text_col= and label_col=",
                    param=("text_col", "label_col"),
                )
        while batch := list(itertools.islice(rows, chunk_size)):
            yield _checked_chunk(batch, text_idx, label_idx, drop_empty, source, unit)

    def _parquet_rows(self) -> tuple[Rows, list[str]]:
        """A Parquet file's rows (1-based row numbers, cells as text) and its column names.

        pyarrow reads a record batch at a time, so memory stays flat as for text files; the
        file's bytes are hashed first, as a text file's are while it is read.
        """
        import pyarrow as pa
        import pyarrow.parquet as pq

        source = self.source
        try:
            with _file_errors(source):
                with open(self.path, "rb") as fh:
                    while block := fh.read(1 << 20):
                        self._digest.update(block)
                parquet = pq.ParquetFile(self.path)
        except pa.ArrowException as exc:
            raise BadInputError(
                f"{source} is not a readable Parquet file ({_first_line(str(exc))}); "
                "check the file, or give it the extension of its real format"
            ) from None
        columns = list(parquet.schema_arrow.names)

        def rows() -> Rows:
            row = 0
            try:
                for batch in parquet.iter_batches(batch_size=8192):
                    cells = [column.to_pylist() for column in batch.columns]
                    for values in zip(*cells, strict=True):
                        row += 1
                        yield row, ["" if v is None else str(v) for v in values]
            except pa.ArrowException as exc:
                raise BadInputError(
                    f"{source}: cannot read row {row + 1} ({_first_line(str(exc))}); check the file"
                ) from None

        return rows(), columns

    def _lines(self) -> Iterator[str]:
        source = self.source
        if str(self.path) == "-":
            yield from self._decoded(sys.stdin.buffer, source)
            return
        with _file_errors(source), open(self.path, "rb") as fh:
            yield from self._decoded(fh, source)

    def _decoded(self, fh: BinaryIO, source: str) -> Iterator[str]:
        for line_no, raw in enumerate(fh, start=1):
            self._digest.update(raw)
            try:
                yield raw.decode("utf-8-sig" if line_no == 1 else "utf-8")
            except UnicodeDecodeError as exc:
                column = exc.start + 1 - (3 if line_no == 1 and raw.startswith(BOM) else 0)
                raise BadInputError(
                    f"{source}: line {line_no} is not valid UTF-8 (byte 0x{raw[exc.start]:02x} "
                    f"at column {column}); save the file as UTF-8"
                ) from None


def is_parquet(path: str | Path) -> bool:
    """Whether a path names a Parquet file (``.parquet`` or ``.pq``), read with pyarrow."""
    return Path(str(path)).suffix.lower() in (".parquet", ".pq")


def _first_line(message: str) -> str:
    return message.strip().splitlines()[0] if message.strip() else "unknown error"


def _checked_chunk(
    rows: list[tuple[int, list[str]]],
    text_idx: int,
    label_idx: int | None,
    drop_empty: bool,
    source: str,
    unit: str = "lines",
) -> TextChunk:
    texts: list[str] = []
    labels: list[str] = []
    line_numbers: list[int] = []
    empty: list[int] = []
    unlabelled: list[int] = []
    short: list[int] = []
    for line_no, cells in rows:
        if text_idx >= len(cells) or (label_idx is not None and label_idx >= len(cells)):
            short.append(line_no)
            continue
        text = cells[text_idx]
        if not text.strip():
            empty.append(line_no)
            continue
        if label_idx is not None:
            label = cells[label_idx].strip()
            if not label:
                unlabelled.append(line_no)
                continue
            labels.append(label)
        texts.append(text.strip())
        line_numbers.append(line_no)

    _refuse_short_or_empty(short, empty, drop_empty, source, unit)
    if unlabelled:
        raise BadInputError(
            f"{source}: missing label on {unit} {format_lines(unlabelled)}; "
            "every training row needs a label"
        )
    return TextChunk(
        texts=texts,
        labels=_normalise_labels(labels) if label_idx is not None else None,
        line_numbers=line_numbers,
        dropped_empty=len(empty),
    )


def _refuse_short_or_empty(
    short: Sequence[int], empty: Sequence[int], drop_empty: bool, source: str, unit: str
) -> None:
    """Refuse rows too short for the text and label columns, then empty texts unless
    ``drop_empty``: one message a problem, naming every line with it."""
    if short:
        raise BadInputError(
            f"{source}: too few columns on {unit} {format_lines(short)}; "
            "every row needs the text and label columns"
        )
    if empty and not drop_empty:
        raise BadInputError(
            f"{source}: empty text on {unit} {format_lines(empty)}; "
            "fill them in or pass drop_empty=True to skip them",
            param="drop_empty=True",
        )


def _file_kind(source: str, first_line: str, want_labels: bool) -> str:
    suffix = Path(source).suffix.lower()
    if suffix in (".jsonl", ".ndjson", ".json"):
        return "jsonl"
    if suffix == ".csv":
        return "csv"
    if suffix in (".tsv", ".tab"):
        return "tsv"
    if "\t" in first_line:
        return "tsv"
    if want_labels:
        raise BadInputError(
            f"{source}: cannot tell the columns apart (no tab in the first line); use "
            "text<TAB>label lines, or name the file .csv or .jsonl"
        )
    return "lines"


Rows = Iterator[tuple[int, list[str]]]


def _delimited_rows(
    lines: Iterator[str],
    delimiter: str,
    source: str,
    header: bool | None,
    requested: tuple[str | int | None, ...],
    max_field_chars: int = MAX_FIELD_CHARS,
) -> tuple[Rows, list[str] | None]:
    # TSV files (SST-2, GLUE) carry bare quote characters inside texts: no quoting for them.
    quoting: Literal[0, 1, 2, 3] = csv.QUOTE_NONE if delimiter == "\t" else csv.QUOTE_MINIMAL
    reader = csv.reader(lines, delimiter=delimiter, quoting=quoting)

    def rows() -> Rows:
        start_line = 1
        try:
            while True:
                # The limit is the csv module's, global to the process: set it for this reader
                # before every row, as other readers may be interleaved with this one.
                csv.field_size_limit(max_field_chars)
                cells = next(reader, None)
                if cells is None:
                    return
                if cells and any(c.strip() for c in cells):
                    yield start_line, cells
                start_line = reader.line_num + 1
        except csv.Error as exc:
            if "field larger than field limit" in str(exc):
                raise BadInputError(
                    f"{source}: line {reader.line_num}: a cell is over {max_field_chars:,} "
                    "characters (or a quote is never closed); if the text is meant to be that "
                    "long, raise max_field_chars=",
                    param="max_field_chars",
                ) from None
            raise BadInputError(
                f"{source}: line {reader.line_num}: {exc}; check the quoting"
            ) from None

    stream = rows()
    first_row = next(stream, None)
    if first_row is None:
        raise BadInputError(f"{source} is empty: expected a header or text{delimiter!r}label rows")
    first = [c.strip() for c in first_row[1]]
    if header is None:
        known = {n.lower() for n in TEXT_COLUMN_NAMES + LABEL_COLUMN_NAMES}
        known |= {str(r).lower() for r in requested if isinstance(r, str) and not r.isdigit()}
        header = any(c.lower() in known for c in first)
    if header:
        return stream, first
    return itertools.chain([first_row], stream), None


def _jsonl_rows(lines: Iterator[str], source: str) -> tuple[Rows, list[str]]:
    def records() -> Iterator[tuple[int, dict]]:
        for line_no, line in enumerate(lines, start=1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError as exc:
                raise BadInputError(
                    f"{source}: line {line_no} is not valid JSON ({exc.msg}); "
                    "expected one JSON object a line"
                ) from None
            if not isinstance(record, dict):
                raise BadInputError(
                    f"{source}: line {line_no} is not a JSON object; "
                    'expected lines like {"text": "...", "label": 1}'
                )
            yield line_no, record

    stream = records()
    first = next(stream, None)
    columns = list(first[1]) if first else []
    rows = (
        (line_no, ["" if record.get(c) is None else str(record.get(c)) for c in columns])
        for line_no, record in itertools.chain([first] if first else [], stream)
    )
    return rows, columns


def _column_index(
    columns: list[str] | None,
    first_row: tuple[int, list[str]],
    wanted: str | int | None,
    known_names: tuple[str, ...],
    default: int | None,
    parameter: str,
    source: str,
) -> int | None:
    width = len(first_row[1])
    if wanted is None:
        if columns is not None:
            lowered = [c.lower() for c in columns]
            for name in known_names:
                if name in lowered:
                    return lowered.index(name)
        if default is None:
            return None
        return default % width if width else 0
    if columns is not None and str(wanted) in columns:
        return columns.index(str(wanted))
    if isinstance(wanted, int) or str(wanted).lstrip("-").isdigit():
        index = int(wanted)
        if -width <= index < width:
            return index % width
        raise BadInputError(
            f"{source}: {parameter}={index} is out of range (the file has {width} "
            f"columns, 0 to {width - 1})",
            param=parameter,
        )
    listed = ", ".join(columns) if columns else f"no header, {width} columns"
    raise BadInputError(
        f"{source}: no column {wanted!r} ({listed}); pass {parameter}= one of "
        "the column names or a 0-based index",
        param=parameter,
    )


def _normalise_labels(labels: list[str]) -> list[Label]:
    # "0"/"1" in a file mean the integers 0 and 1, as in SST-2; anything else stays a string.
    if all(_INT_LABEL.fullmatch(label) for label in labels):
        return [int(label) for label in labels]
    return list(labels)


@contextmanager
def _file_errors(source: str) -> Iterator[None]:
    """A file that cannot be opened or read, as one line saying what to check."""
    try:
        yield
    except (FileNotFoundError, NotADirectoryError):
        raise BadInputError(f"{source}: no such file; check the path") from None
    except IsADirectoryError:
        raise BadInputError(
            f"{source} is a folder; give the path of a data file inside it"
        ) from None
    except OSError as exc:
        raise BadInputError(
            f"{source}: cannot read the file ({exc.strerror}); check the path and its permissions"
        ) from None
