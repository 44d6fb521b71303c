"""Texts and labels as the commands take them: from files, arguments or standard input."""

from __future__ import annotations

from pathlib import Path

from bertprobe.core.errors import BadInputError
from bertprobe.data.files import LabelledTexts, ReadOptions, read_texts
from bertprobe.model.classifier import Classifier


def read_labels_for(model: Classifier, data: Path, reading: ReadOptions) -> LabelledTexts:
    """A labelled file read as the model needs it (see :meth:`Classifier.read_labelled`)."""
    return model.read_labelled(data, reading)


def gather_texts(args: list[str], input_file: Path | None, reading: ReadOptions) -> list[str]:
    """``predict``'s texts: its arguments, ``--input FILE``, or standard input for ``-``."""
    if input_file is not None and args:
        raise BadInputError("give texts as arguments or with --input, not both")
    source = input_file if input_file is not None else ("-" if args == ["-"] else None)
    if source is not None:
        return read_texts(
            source,
            text_col=reading.text_col,
            drop_empty=reading.drop_empty,
            max_field_chars=reading.max_field_chars,
        ).texts
    if not args:
        raise BadInputError(
            "no texts to classify; pass them as arguments, with --input FILE, or '-' to read stdin"
        )
    empty = [i + 1 for i, t in enumerate(args) if not t.strip()]
    if empty:
        raise BadInputError(f"text argument {empty[0]} is empty; give non-empty texts")
    for i, text in enumerate(args, start=1):
        try:
            text.encode("utf-8")
        except UnicodeEncodeError:  # bytes the shell passed that were not UTF-8
            raise BadInputError(
                f"text argument {i} is not valid UTF-8; pass UTF-8 text, or "
                "put the texts in a UTF-8 file and use --input"
            ) from None
    return list(args)


def parse_descriptions(given: list[str], flag: str) -> dict[str, list[str]]:
    """``LABEL=DESCRIPTION`` flags as each label's descriptions, in the order given (a label
    named twice gets both; ``LABEL`` alone is described by its name)."""
    descriptions: dict[str, list[str]] = {}
    for item in given:
        label, _, description = item.partition("=")
        label = label.strip()
        if not label:
            raise BadInputError(
                f"{flag} {item!r}: the label is empty; name the class before the '=' sign and "
                "describe it after"
            )
        descriptions.setdefault(label, []).append(description.strip() or label)
    return descriptions
