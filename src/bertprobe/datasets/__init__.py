"""Data sets shipped with bertprobe, so a fresh clone runs offline.

Example:
    >>> from bertprobe.datasets import load_sst2
    >>> train = load_sst2("train")
    >>> len(train.texts), sorted(set(train.labels))
    (6920, [0, 1])
"""

from __future__ import annotations

from importlib.resources import files
from pathlib import Path

from bertprobe.core.errors import BadInputError
from bertprobe.data.files import LabelledTexts, read_labelled

SST2_SPLITS = ("train", "dev", "test")


def sst2_path(split: str) -> Path:
    """Path of a bundled SST-2 sentence split (``text<TAB>label``, no header)."""
    if split not in SST2_SPLITS:
        raise BadInputError(
            f"unknown SST-2 split {split!r}; choose one of {', '.join(SST2_SPLITS)}"
        )
    return Path(str(files("bertprobe.datasets") / "sst2" / f"{split}.tsv"))


def load_sst2(split: str = "train") -> LabelledTexts:
    """The Stanford Sentiment Treebank sentence split: train 6,920, dev 872, test 1,821.

    Labels are 0 (negative) and 1 (positive).
    """
    return read_labelled(sst2_path(split))
