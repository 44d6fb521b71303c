"""What a training run reads and checks before the encoder runs: the training set (one label
or a label set a text), a uniform sample of a file too large to hold, precomputed vectors
matched to their file.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from bertprobe.core.errors import BadInputError
from bertprobe.data.files import FileSummary, LabelledTexts, ReadOptions, is_parquet, iter_chunks
from bertprobe.data.multilabel import (
    LabelSet,
    _read_multilabel,
    check_label_counts,
    scan_label_sets,
)
from bertprobe.encoders.encoder import LoadedEncoder
from bertprobe.encoders.features import parquet_job, parquet_rows, vectors_job
from bertprobe.encoders.options import FeatureSpec
from bertprobe.heads.probe import check_trainable


def reservoir_sample(path: Path, reading: ReadOptions, n: int, seed: int = 0) -> LabelledTexts:
    """Up to ``n`` labelled rows of a file drawn uniformly in one pass (reservoir sampling),
    holding no more than ``n`` rows and one chunk; rows keep their order in the file."""
    rng = np.random.default_rng(seed)
    kept: list[tuple[int, str, Any]] = []
    seen = 0
    for chunk in iter_chunks(
        path,
        text_col=reading.text_col,
        label_col=reading.label_col,
        drop_empty=reading.drop_empty,
        max_field_chars=reading.max_field_chars,
        want_labels=True,
    ):
        for text, label in zip(chunk.texts, chunk.labels or [], strict=True):
            if seen < n:
                kept.append((seen, text, label))
            else:
                slot = int(rng.integers(0, seen + 1))
                if slot < n:
                    kept[slot] = (seen, text, label)
            seen += 1
    kept.sort(key=lambda row: row[0])
    return LabelledTexts.from_lists(
        [text for _, text, _ in kept], [label for _, _, label in kept], source=str(path)
    )


def check_features_match(
    features: Path,
    data: Path,
    scanned: FileSummary,
    encoder: LoadedEncoder,
    spec: FeatureSpec,
    reading: ReadOptions,
) -> None:
    """Refuse precomputed vectors that are not those of ``data`` under these options: paired
    with the wrong labels they would train a model that looks fine and is not."""
    if not is_parquet(features):
        raise BadInputError(
            f"--features {features}: give the Parquet file `bertprobe embed {data} --out "
            "X.parquet` wrote"
        )
    job = parquet_job(features)
    if job is None:
        raise BadInputError(
            f"--features {features}: the file does not say how its vectors were made; write it "
            f"with `bertprobe embed {data} --out X.parquet`"
        )
    sources = job.get("sources") or []
    if [s.get("sha256") for s in sources] != [scanned.sha256]:
        made_from = ", ".join(str(s.get("path")) for s in sources) or "no file"
        raise BadInputError(
            f"--features {features}: holds the vectors of {made_from}, not of {data} as it "
            f"is now; embed {data} again"
        )
    rows = parquet_rows(features)
    if rows != scanned.n:
        raise BadInputError(
            f"--features {features}: {rows:,} vectors for the {scanned.n:,} rows of {data}; "
            "the file was cut short or changed, embed again"
        )
    expected = vectors_job(encoder, spec, reading.text_col, reading.drop_empty)
    differ = [key for key, value in expected.items() if job.get(key) != value]
    if differ:
        found = ", ".join(f"{key} {job.get(key)!r} (here {expected[key]!r})" for key in differ)
        raise BadInputError(
            f"--features {features}: made with other options: {found}; embed again with the "
            "options given here, or give those options"
        )


def label_sets_of(data: LabelledTexts | None) -> list[LabelSet]:
    """The label sets of a multi-label set (its ``labels``, typed)."""
    return [tuple(labels) for labels in (data.labels or [])] if data is not None else []  # type: ignore[arg-type]


def check_label_sets(
    sets: Sequence[LabelSet], columns: list[str] | None, cv: int, source: str
) -> list[str]:
    """The label names of a multi-label training set (``columns`` when the file gave them as
    0/1 columns), checked: every label needs enough texts with and without it for ``cv``."""
    from sklearn.preprocessing import MultiLabelBinarizer

    # With label_cols every column is a label, even one never 1 (refused just below).
    classes = columns or sorted({label for labels in sets for label in labels})
    try:
        Y = MultiLabelBinarizer(classes=classes).fit_transform(sets)
        check_label_counts(Y, classes, cv)
    except BadInputError as exc:
        raise exc.about(source) from None
    return classes


def read_training_set(
    data: str | Path | LabelledTexts, reading: ReadOptions, cv: int
) -> LabelledTexts:
    """A labelled set checked for cross-validated training before anything is embedded."""
    train_set = _labelled(data, reading)
    try:
        check_trainable(train_set.labels or [], cv)
    except BadInputError as exc:
        raise exc.about(train_set.source) from None
    return train_set


def _labelled(data: str | Path | LabelledTexts, reading: ReadOptions) -> LabelledTexts:
    return data if isinstance(data, LabelledTexts) else reading.read_labelled(data)


def label_set_sample(
    path: Path, reading: ReadOptions, n: int, seed: int = 0
) -> tuple[LabelledTexts, list[str]]:
    """Up to ``n`` rows of a multi-label file drawn uniformly, and the file's label names
    (checked as a training set's). Two passes: the label sets of every row (texts read, not
    kept), then the drawn rows' texts; memory holds the label sets and ``n`` texts."""
    sets, columns, _ = scan_label_sets(path, reading)
    classes = check_label_sets(sets, columns, 2, str(path))
    drawn = np.random.default_rng(seed).permutation(len(sets))[:n]
    keep = set(drawn.tolist())
    read, _ = _read_multilabel(path, reading, keep_texts=keep)
    rows = sorted(keep)
    sample = LabelledTexts.from_lists(
        [read.texts[i] for i in rows],
        [sets[i] for i in rows],
        source=str(path),
    )
    return sample, classes
