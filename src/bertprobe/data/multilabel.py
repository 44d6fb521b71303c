"""Reading several labels per text: a column joined by a separator, or one 0/1 column per label."""

from __future__ import annotations

import ast
from collections.abc import Container, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from bertprobe.core.errors import BadInputError
from bertprobe.data.files import (
    LABEL_COLUMN_NAMES,
    TEXT_COLUMN_NAMES,
    FileSummary,
    LabelledTexts,
    ReadOptions,
    _column_index,
    _Reader,
    _refuse_short_or_empty,
    format_lines,
)

if TYPE_CHECKING:
    pass

# The separator assumed for a multi-label file when neither label_sep nor label_cols is given,
# and the one that joins a CSV prediction's labels.
DEFAULT_LABEL_SEP = "|"
_TRUE = {"1", "1.0", "true"}
_FALSE = {"0", "0.0", "false"}

LabelSet = tuple[str, ...]


# --- reading ---------------------------------------------------------------------------------


def read_multilabel(path: str | Path, reading: ReadOptions = ReadOptions()) -> LabelledTexts:
    """The texts of a multi-label file with their label sets (``labels[i]``: a sorted tuple of
    label names, empty for a text with no label).

    ``reading.label_cols`` reads one 0/1 column per label; otherwise the label column (the
    recognised name, ``reading.label_col`` or the last column) holds the labels joined by
    ``reading.label_sep`` (default ``"|"``). Every row is checked; a problem names its lines.
    """
    return _read_multilabel(path, reading)[0]


def _read_multilabel(
    path: str | Path, reading: ReadOptions, *, keep_texts: bool | Container[int] = True
) -> tuple[LabelledTexts, list[str] | None]:
    """The file's multi-label rows and, with ``label_cols``, the labels the columns name.
    Every text is read and checked; ``keep_texts=False`` keeps each as ``""``, and a set of
    row numbers (0-based, among the rows read) keeps those rows' texts only."""
    reader = _Reader(path, reading.max_field_chars)
    source = reader.source
    label_cols = tuple(reading.label_cols or ())
    requested = (reading.text_col, reading.label_col, *label_cols)
    rows, columns, unit = reader.table(reading.header, requested, want_labels=True)
    first = next(rows, None)
    if first is None:
        raise BadInputError(f"{source}: no texts left to read; check the file and its columns")
    text_idx = _column_index(
        columns, first, reading.text_col, TEXT_COLUMN_NAMES, 0, "text_col", source
    )
    assert text_idx is not None  # the default, 0, always exists
    if label_cols:
        indexes, names = _flag_columns(columns, first, label_cols, text_idx, source)
    else:
        indexes = [_joined_label_column(columns, first, reading.label_col, text_idx, source, unit)]
        names = None
    found = _LabelSetRows(text_idx, indexes, names, reading.label_sep or DEFAULT_LABEL_SEP)
    found.read(_chain(first, rows), keep_texts)
    found.refuse_problems(source, unit, reading.drop_empty)
    read = LabelledTexts(
        texts=found.texts,
        labels=found.labels,  # type: ignore[arg-type]  # label sets, not single labels
        source=source,
        sha256=reader.sha256,
        line_numbers=found.line_numbers,
        dropped_empty=len(found.empty),
    )
    return read, names


def _flag_columns(
    columns: list[str] | None,
    first: tuple[int, list[str]],
    label_cols: Sequence[str | int],
    text_idx: int,
    source: str,
) -> tuple[list[int], list[str]]:
    """The 0/1 columns ``label_cols`` names, checked.

    Returns their indexes and the labels they stand for (the header's names, else the indexes
    as text). The text column cannot be one of them.
    """
    label_idx = [
        _column_index(columns, first, col, (), None, "label_cols", source) for col in label_cols
    ]
    indexes = [i for i in label_idx if i is not None]
    names = [columns[i] if columns is not None else str(i) for i in indexes]
    if text_idx in indexes:
        raise BadInputError(
            f"{source}: label_cols= names the text column ({names[indexes.index(text_idx)]}); "
            "set text_col= to the texts and label_cols= to the 0/1 columns",
            param=("label_cols", "text_col"),
        )
    return indexes, names


def _joined_label_column(
    columns: list[str] | None,
    first: tuple[int, list[str]],
    label_col: str | int | None,
    text_idx: int,
    source: str,
    unit: str,
) -> int:
    """The index of the one column of joined labels, checked.

    ``label_col``, else a recognised name, else the last column (a file of one column has
    none). It cannot be the text column.
    """
    one = _column_index(
        columns,
        first,
        label_col,
        LABEL_COLUMN_NAMES,
        None if len(first[1]) < 2 else -1,
        "label_col",
        source,
    )
    if one is None:
        raise BadInputError(
            f"{source}: no label column ({unit[:-1]} {first[0]} has one column); expected "
            "text<TAB>labels, or name the column with label_col=",
            param="label_col",
        )
    if one == text_idx:
        raise BadInputError(
            f"{source}: the text and label columns are the same column; set text_col= and "
            "label_col=",
            param=("label_col", "text_col"),
        )
    return one


@dataclass
class _LabelSetRows:
    """The rows of a multi-label file as they are read, and the lines with problems.

    Every row is read before any problem is refused, so that one message names all the lines
    with that problem. ``names`` are the labels of the 0/1 columns at ``indexes``; ``None``:
    ``indexes`` is the one column of labels joined by ``sep``.
    """

    text_idx: int
    indexes: list[int]
    names: list[str] | None
    sep: str
    texts: list[str] = field(default_factory=list)
    labels: list[LabelSet] = field(default_factory=list)
    line_numbers: list[int] = field(default_factory=list)
    short: list[int] = field(default_factory=list)
    empty: list[int] = field(default_factory=list)
    not_binary: list[tuple[int, str]] = field(default_factory=list)

    def read(
        self, rows: Iterable[tuple[int, list[str]]], keep_texts: bool | Container[int]
    ) -> None:
        """Read ``rows`` (line number, cells); ``keep_texts`` as :func:`_read_multilabel`'s."""
        for line_no, cells in rows:
            if max(self.text_idx, *self.indexes) >= len(cells):
                self.short.append(line_no)
                continue
            if not cells[self.text_idx].strip():
                self.empty.append(line_no)
                continue
            if self.names is not None:
                label_set = self._flagged(line_no, cells, self.names)
            else:
                label_set = tuple(sorted(_cell_labels(cells[self.indexes[0]], self.sep) - {""}))
            keep = keep_texts if isinstance(keep_texts, bool) else len(self.texts) in keep_texts
            self.texts.append(cells[self.text_idx].strip() if keep else "")
            self.labels.append(label_set)
            self.line_numbers.append(line_no)

    def _flagged(self, line_no: int, cells: list[str], names: list[str]) -> LabelSet:
        """The labels whose 0/1 column holds a 1 on this row.

        A value other than 0 or 1 is noted against the line, refused once every row is read.
        """
        found = []
        for name, i in zip(names, self.indexes, strict=True):
            value = cells[i].strip().lower()
            if value in _TRUE:
                found.append(name)
            elif value not in _FALSE:
                self.not_binary.append((line_no, name))
        return tuple(sorted(set(found)))

    def refuse_problems(self, source: str, unit: str, drop_empty: bool) -> None:
        """Refuse the file for the first problem its rows have, naming every line with it.

        In this order: rows too short, empty texts (unless ``drop_empty``), a 0/1 column
        holding something else, no rows left at all.
        """
        _refuse_short_or_empty(self.short, self.empty, drop_empty, source, unit)
        if self.not_binary:
            lines = format_lines([n for n, _ in self.not_binary])
            raise BadInputError(
                f"{source}: label column {self.not_binary[0][1]!r} holds a value other than 0 "
                f"or 1 on {unit} {lines}; label_cols= columns hold 0/1 (or false/true)",
                param="label_cols",
            )
        if not self.texts:
            raise BadInputError(f"{source}: no texts left to read; check the file and its columns")


def _cell_labels(cell: str, sep: str) -> set[str]:
    """The labels in one cell: ``sep``-joined text, or a list (a JSON Lines or Parquet list
    value, which the readers hand over as Python's text of the list)."""
    text = cell.strip()
    if text.startswith("[") and text.endswith("]"):
        try:
            value = ast.literal_eval(text)
        except (ValueError, SyntaxError):
            value = None
        if isinstance(value, list):
            return {str(x).strip() for x in value}
    return {x.strip() for x in text.split(sep)}


def _chain(first: Any, rest: Iterable[Any]) -> Iterable[Any]:
    yield first
    yield from rest


def as_label_sets(labels: Iterable[Any], sep: str = DEFAULT_LABEL_SEP) -> list[LabelSet]:
    """Each text's labels as a sorted tuple of names: a string is split on ``sep``, any other
    iterable taken as the labels themselves (``["comedy", "drama"]``)."""
    sets = []
    for value in labels:
        if isinstance(value, str):
            found = {x.strip() for x in value.split(sep)}
        elif isinstance(value, Iterable):
            found = {str(x).strip() for x in value}
        else:
            raise BadInputError(
                f"multi-label labels: {value!r} is not a label set; give each text a list of "
                f"labels or a {sep!r}-joined string"
            )
        sets.append(tuple(sorted(found - {""})))
    return sets


def check_label_counts(Y: np.ndarray, classes: Sequence[str], n_folds: int) -> None:
    """Refuse label sets one probe per label cannot learn: each label needs ``n_folds`` texts
    with it and as many without, for its cross-validation."""
    if len(classes) < 2:
        only = f" ({classes[0]!r})" if classes else ""
        raise BadInputError(
            f"the training data holds {len(classes)} label{only}; multi-label training needs two "
            "or more (for one yes/no label, train without multi_label=True)",
            param="multi_label=True",
        )
    positives = Y.sum(axis=0)
    rare = [
        (name, int(n))
        for name, n in zip(classes, positives, strict=True)
        if n < n_folds or len(Y) - n < n_folds
    ]
    if rare:
        listed = ", ".join(f"{name!r} (on {n} of {len(Y)})" for name, n in rare[:5])
        raise BadInputError(
            f"label {listed}: {n_folds}-fold cross-validation needs at least {n_folds} texts "
            f"with each label and {n_folds} without; add examples, drop the label, or lower cv=",
            param="cv",
        )


def read_multilabel_set(data: str | Path | LabelledTexts, reading: ReadOptions) -> LabelledTexts:
    """A multi-label set from a file (:func:`read_multilabel`) or from memory (labels as
    lists of names or ``label_sep``-joined strings)."""
    return _multilabel_set(data, reading)[0]


def _multilabel_set(
    data: str | Path | LabelledTexts, reading: ReadOptions
) -> tuple[LabelledTexts, list[str] | None]:
    if isinstance(data, LabelledTexts):
        sets = as_label_sets(data.labels or [], reading.label_sep or DEFAULT_LABEL_SEP)
        in_memory = LabelledTexts(
            texts=data.texts,
            labels=sets,  # type: ignore[arg-type]  # label sets
            source=data.source,
            sha256=data.sha256,
            line_numbers=data.line_numbers,
            dropped_empty=data.dropped_empty,
        )
        return in_memory, None
    return _read_multilabel(data, reading)


def scan_label_sets(
    path: str | Path, reading: ReadOptions
) -> tuple[list[LabelSet], list[str] | None, FileSummary]:
    """Every row's label set, in row order, the label names ``label_cols`` gives, and what
    :func:`~bertprobe.data.files.scan_file` finds; texts are read and checked, not kept, so
    memory holds the label sets (training out of core)."""
    read, columns = _read_multilabel(path, reading, keep_texts=False)
    summary = FileSummary(n=len(read), dropped_empty=read.dropped_empty, sha256=read.sha256)
    return list(read.labels or []), columns, summary  # type: ignore[arg-type]  # label sets
