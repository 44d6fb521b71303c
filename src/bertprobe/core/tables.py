"""Prediction rows as Arrow tables, written as JSON Lines, CSV or Parquet by the file's name.

A chunk of predictions is one :class:`pyarrow.Table` with the columns ``text``, ``label`` and
one ``p_<class>`` column a class (probabilities rounded to 6 places, as ``predict`` prints
them). Streamed prediction keeps such tables as Parquet parts and the Ray engine writes them as
Parquet shards; :func:`write_tables` turns either into the one file the user asked for, a table
at a time, so memory stays flat in the number of rows.

Example:
    >>> import numpy as np
    >>> table = prediction_table(["fine", "awful"], np.array([[0.1, 0.9], [0.8, 0.2]]), [0, 1],
    ...                          [1, 0])
    >>> table.column("label").to_pylist()
    [1, 0]
    >>> list(jsonl_lines(table, [0, 1]))[0]
    '{"text": "fine", "label": 1, "probabilities": {"0": 0.1, "1": 0.9}}\\n'
"""

from __future__ import annotations

import csv
import io
import json
import os
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

Format = Literal["jsonl", "csv", "parquet"]
PARQUET_SUFFIXES = (".parquet", ".pq")
# A multi-label prediction's labels in a CSV cell (a list column in Parquet, a list in JSON).
CSV_LABEL_SEP = "|"


def python_value(value: Any) -> Any:
    """A numpy scalar (a label read by scikit-learn, say) as the plain Python value JSON, CSV
    and pyarrow take; anything else as it is."""
    return value.item() if isinstance(value, np.generic) else value


def output_format(path: str | Path) -> Format:
    """The format a file name asks for: ``.csv``, ``.parquet`` / ``.pq``, else JSON Lines.

    >>> output_format("labels.parquet"), output_format("labels.csv"), output_format("out.jsonl")
    ('parquet', 'csv', 'jsonl')
    """
    suffix = Path(path).suffix.lower()
    if suffix == ".csv":
        return "csv"
    return "parquet" if suffix in PARQUET_SUFFIXES else "jsonl"


def probability_column(label: Any) -> str:
    """The column holding one class's probability: ``p_<class>``."""
    return f"p_{label}"


def prediction_table(
    texts: Sequence[str],
    probabilities: np.ndarray,
    classes: Sequence[Any],
    labels: Sequence[Any],
    *,
    label_sets: bool = False,
) -> pa.Table:
    """One chunk of predictions: text, each text's label (as the model decided it), each
    class's probability.

    With ``label_sets`` each entry of ``labels`` is a text's label set, written in a column
    ``labels`` (a list of names) in place of ``label``.

    >>> table = prediction_table(["x"], np.array([[0.7, 0.2, 0.9]]), ["a", "b", "c"],
    ...                          [("a", "c")], label_sets=True)
    >>> table.column("labels").to_pylist()
    [['a', 'c']]
    """
    columns: dict[str, Any] = {"text": pa.array(list(texts), pa.string())}
    if label_sets:
        chosen = [[str(label) for label in labels_of] for labels_of in labels]
        columns["labels"] = pa.array(chosen, pa.list_(pa.string()))
    else:
        columns["label"] = pa.array([python_value(x) for x in labels])
    # Rounded as predict has always printed them, so every format carries the same numbers.
    rounded = np.round(np.asarray(probabilities, dtype=np.float64), 6)
    for j, label in enumerate(classes):
        columns[probability_column(label)] = pa.array(rounded[:, j], pa.float64())
    return pa.table(columns)


def label_column(table: pa.Table) -> str:
    """``labels`` for a multi-label prediction table, else ``label``."""
    return "labels" if "labels" in table.column_names else "label"


def jsonl_lines(table: pa.Table, classes: Sequence[Any]) -> Iterator[str]:
    """``{"text", "label", "probabilities"}`` lines, as ``predict`` prints them (``labels``,
    a list, for a multi-label model)."""
    names = [probability_column(c) for c in classes]
    key = label_column(table)
    columns = {n: table.column(n).to_pylist() for n in ("text", key, *names)}
    for i, text in enumerate(columns["text"]):
        row = {
            "text": text,
            key: columns[key][i],
            "probabilities": {str(c): columns[n][i] for c, n in zip(classes, names, strict=True)},
        }
        yield json.dumps(row, ensure_ascii=False) + "\n"


def _csv_text(table: pa.Table, classes: Sequence[Any], header: bool) -> str:
    names = ["text", label_column(table), *(probability_column(c) for c in classes)]
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    if header:
        writer.writerow(names)
    columns = [table.column(n).to_pylist() for n in names]
    if names[1] == "labels":
        columns[1] = [CSV_LABEL_SEP.join(labels) for labels in columns[1]]
    writer.writerows(zip(*columns, strict=True))
    return buffer.getvalue()


def write_tables(tables: Iterable[pa.Table], out: str | Path, classes: Sequence[Any]) -> int:
    """Write prediction tables, in order, to ``out`` in the format its name asks for.

    The file is written beside ``out`` and moved into place at the end, so ``out`` is complete
    or absent. Columns other than the prediction's (a shard's source and row) are left out.
    Returns the number of rows written.
    """
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    staged = out.with_name(out.name + ".writing")
    fmt = output_format(out)
    names = ["text", "label", *(probability_column(c) for c in classes)]
    n = 0
    if fmt == "parquet":
        writer: pq.ParquetWriter | None = None
        try:
            for table in tables:
                table = table.select([names[0], label_column(table), *names[2:]])
                if writer is None:
                    writer = pq.ParquetWriter(staged, table.schema)
                writer.write_table(table)
                n += table.num_rows
        finally:
            if writer is not None:
                writer.close()
        if writer is None:  # no rows: still a valid, empty file
            pq.write_table(pa.table({name: pa.array([], pa.string()) for name in names}), staged)
    else:
        with open(staged, "w", encoding="utf-8", newline="") as fh:
            for i, table in enumerate(tables):
                if fmt == "csv":
                    fh.write(_csv_text(table, classes, header=i == 0))
                else:
                    fh.writelines(jsonl_lines(table, classes))
                n += table.num_rows
            if fmt == "csv" and n == 0:
                fh.write(",".join(names) + "\r\n")
    os.replace(staged, out)
    return n
