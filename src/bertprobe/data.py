"""Read labelled texts (and unlabelled ones) from TSV, CSV or JSON Lines files.

Files may have a header or none (the SST-2 files have none: ``text<TAB>label``), UTF-8 with or
without a byte-order mark, and LF or CRLF line ends. Problems are reported as
:class:`~bertprobe.errors.BadInputError` naming the file and the line numbers involved.

Example:
    >>> from bertprobe.data import read_labelled
    >>> data = read_labelled("data/sst2/train.tsv")  # doctest: +SKIP
    >>> len(data.texts), data.labels[:3]  # doctest: +SKIP
    (6920, [1, 0, 0])
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import re
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from bertprobe.errors import BadInputError

# Header names recognised without being asked for, most specific first.
TEXT_COLUMN_NAMES = ("text", "sentence", "review", "content", "document", "utterance", "input")
LABEL_COLUMN_NAMES = ("label", "labels", "class", "category", "target", "sentiment", "y")

Label = int | str
_INT_LABEL = re.compile(r"[+-]?\d+")
_MAX_LINES_LISTED = 8


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


def read_labelled(
    path: str | Path,
    *,
    text_col: str | int | None = None,
    label_col: str | int | None = None,
    header: bool | None = None,
    drop_empty: bool = False,
) -> LabelledTexts:
    """Read a labelled file. Every row needs a non-empty text and a label."""
    return _read(
        path,
        text_col=text_col,
        label_col=label_col,
        header=header,
        drop_empty=drop_empty,
        want_labels=True,
    )


def read_texts(
    path: str | Path,
    *,
    text_col: str | int | None = None,
    header: bool | None = None,
    drop_empty: bool = False,
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
    )


def format_lines(lines: Sequence[int]) -> str:
    """'3, 7, 12' or '3, 7, ... (40 in all)' for error messages."""
    shown = ", ".join(str(n) for n in lines[:_MAX_LINES_LISTED])
    if len(lines) > _MAX_LINES_LISTED:
        return f"{shown}, ... ({len(lines)} in all)"
    return shown


# --- reading -------------------------------------------------------------------------------


def _read(
    path: str | Path,
    *,
    text_col: str | int | None,
    label_col: str | int | None,
    header: bool | None,
    drop_empty: bool,
    want_labels: bool,
) -> LabelledTexts:
    source = "<stdin>" if str(path) == "-" else str(path)
    raw = _read_bytes(path, source)
    content = _decode(raw, source)
    if not content.strip():
        what = "text<TAB>label lines" if want_labels else "one text a line, or a table"
        raise BadInputError(f"{source} is empty: expected {what}")

    kind = _file_kind(source, content, want_labels)
    if kind == "lines":
        rows = [(n, [line]) for n, line in enumerate(content.splitlines(), start=1)]
        rows = [(n, cells) for n, cells in rows if cells[0].strip()]  # blank lines end files
        columns: list[str] | None = None
    elif kind == "jsonl":
        rows, columns = _jsonl_rows(content, source)
    else:
        rows, columns = _delimited_rows(content, "\t" if kind == "tsv" else ",", source, header,
                                        (text_col, label_col))

    text_idx = _column_index(columns, rows, text_col, TEXT_COLUMN_NAMES, 0, "--text-col", source)
    label_idx: int | None = None
    if want_labels:
        default_label = None if rows and len(rows[0][1]) < 2 else -1
        label_idx = _column_index(columns, rows, label_col, LABEL_COLUMN_NAMES, default_label,
                                  "--label-col", source)
        if label_idx is None:
            raise BadInputError(
                f"{source}: no label column (line {rows[0][0]} has one column); "
                "expected text<TAB>label, or name the column with --label-col"
            )
        if label_idx == text_idx:
            raise BadInputError(f"{source}: the text and label columns are the same column; "
                                "set --text-col and --label-col")

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

    if short:
        raise BadInputError(
            f"{source}: too few columns on lines {format_lines(short)}; "
            "every row needs the text and label columns"
        )
    if empty and not drop_empty:
        raise BadInputError(
            f"{source}: empty text on lines {format_lines(empty)}; "
            "fill them in or pass --drop-empty to skip them"
        )
    if unlabelled:
        raise BadInputError(
            f"{source}: missing label on lines {format_lines(unlabelled)}; "
            "every training row needs a label"
        )
    if not texts:
        raise BadInputError(f"{source}: no texts left to read; check the file and its columns")
    return LabelledTexts(
        texts=texts,
        labels=_normalise_labels(labels) if want_labels else None,
        source=source,
        sha256=hashlib.sha256(raw).hexdigest(),
        line_numbers=line_numbers,
        dropped_empty=len(empty),
    )


def _read_bytes(path: str | Path, source: str) -> bytes:
    if str(path) == "-":
        return sys.stdin.buffer.read()
    p = Path(path)
    if not p.exists():
        raise BadInputError(f"{source}: no such file; check the path")
    if p.is_dir():
        raise BadInputError(f"{source} is a folder; give the path of a data file inside it")
    try:
        return p.read_bytes()
    except OSError as exc:
        raise BadInputError(f"{source}: cannot read the file ({exc.strerror}); "
                            "check its permissions") from None


def _decode(raw: bytes, source: str) -> str:
    try:
        return raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = raw[: exc.start].count(b"\n") + 1
        column = exc.start - (raw.rfind(b"\n", 0, exc.start) + 1) + 1
        raise BadInputError(
            f"{source}: line {line} is not valid UTF-8 (byte 0x{raw[exc.start]:02x} at column "
            f"{column}); save the file as UTF-8"
        ) from None


def _file_kind(source: str, content: str, want_labels: bool) -> str:
    suffix = Path(source).suffix.lower()
    if suffix in (".jsonl", ".ndjson", ".json"):
        return "jsonl"
    if suffix == ".csv":
        return "csv"
    if suffix in (".tsv", ".tab"):
        return "tsv"
    first_line = content.lstrip("\n").split("\n", 1)[0]
    if "\t" in first_line:
        return "tsv"
    if want_labels:
        raise BadInputError(
            f"{source}: cannot tell the columns apart (no tab in the first line); use "
            "text<TAB>label lines, or name the file .csv or .jsonl"
        )
    return "lines"


def _delimited_rows(
    content: str,
    delimiter: str,
    source: str,
    header: bool | None,
    requested: tuple[str | int | None, str | int | None],
) -> tuple[list[tuple[int, list[str]]], list[str] | None]:
    # TSV files (SST-2, GLUE) carry bare quote characters inside texts: no quoting for them.
    quoting = csv.QUOTE_NONE if delimiter == "\t" else csv.QUOTE_MINIMAL
    reader = csv.reader(io.StringIO(content, newline=""), delimiter=delimiter, quoting=quoting)
    rows: list[tuple[int, list[str]]] = []
    start_line = 1
    try:
        for cells in reader:
            if cells and any(c.strip() for c in cells):
                rows.append((start_line, cells))
            start_line = reader.line_num + 1
    except csv.Error as exc:
        raise BadInputError(f"{source}: line {reader.line_num}: {exc}; check the quoting") from None
    if not rows:
        raise BadInputError(f"{source} is empty: expected a header or text{delimiter!r}label rows")

    first = [c.strip() for c in rows[0][1]]
    if header is None:
        known = {n.lower() for n in TEXT_COLUMN_NAMES + LABEL_COLUMN_NAMES}
        known |= {str(r).lower() for r in requested if isinstance(r, str) and not r.isdigit()}
        header = any(c.lower() in known for c in first)
    if header:
        return rows[1:], first
    return rows, None


def _jsonl_rows(content: str, source: str) -> tuple[list[tuple[int, list[str]]], list[str]]:
    records: list[tuple[int, dict]] = []
    for line_no, line in enumerate(content.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as exc:
            raise BadInputError(f"{source}: line {line_no} is not valid JSON ({exc.msg}); "
                                "expected one JSON object a line") from None
        if not isinstance(record, dict):
            raise BadInputError(f"{source}: line {line_no} is not a JSON object; "
                                'expected lines like {"text": "...", "label": 1}')
        records.append((line_no, record))
    columns: list[str] = []
    for _, record in records:
        columns.extend(k for k in record if k not in columns)
    rows = [
        (line_no, ["" if record.get(c) is None else str(record.get(c)) for c in columns])
        for line_no, record in records
    ]
    return rows, columns


def _column_index(
    columns: list[str] | None,
    rows: list[tuple[int, list[str]]],
    wanted: str | int | None,
    known_names: tuple[str, ...],
    default: int | None,
    flag: str,
    source: str,
) -> int | None:
    width = len(rows[0][1]) if rows else 0
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
        raise BadInputError(f"{source}: {flag} {index} is out of range (the file has {width} "
                            f"columns, 0 to {width - 1})")
    listed = ", ".join(columns) if columns else f"no header, {width} columns"
    raise BadInputError(f"{source}: no column {wanted!r} ({listed}); pass {flag} with one of "
                        "the column names or a 0-based index")


def _normalise_labels(labels: list[str]) -> list[Label]:
    # "0"/"1" in a file mean the integers 0 and 1, as in SST-2; anything else stays a string.
    if all(_INT_LABEL.fullmatch(label) for label in labels):
        return [int(label) for label in labels]
    return list(labels)
