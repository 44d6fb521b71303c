"""A text as the encoder reads it, word by word: the token ids of each window, which word each
token is of, and where each word lies in the text (for token attributions, which are summed
into words and shown on the text).

Words are the fast tokenizer's (its pre-tokenizer's: whitespace and punctuation for WordPiece,
so ``"witty,"`` is the words ``"witty"`` and ``","``); a word's span runs from its first token's
start to its last token's end, so ``text[start:end]`` is the word as written, whatever case or
accents the tokenizer dropped. Special tokens ([CLS], [SEP]) belong to no word.

Example:
    >>> from bertprobe.encoders.encoder import load_encoder  # doctest: +SKIP
    >>> tokenizer = load_encoder("minilm").tokenizer  # doctest: +SKIP
    >>> read = tokenize_words(tokenizer, ["A witty, lovely film"], 512)[0]  # doctest: +SKIP
    >>> [read.text[a:b] for a, b in read.spans]  # doctest: +SKIP
    ['A', 'witty', ',', 'lovely', 'film']
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from bertprobe.encoders.tokens import check_stride, readable_prefix


@dataclass(frozen=True)
class ReadText:
    """One text as its encoder reads it.

    Attributes
    ----------
    text : str
        The text.
    windows : tuple of tuple of int
        The token ids the encoder reads, special tokens included: one window when the text is
        truncated (``long="truncate"``), one or more overlapping windows (``"chunk"``).
    words : tuple of tuple of (int or None)
        For each window, each token's word: an index into ``spans``, or None for a special
        token.
    spans : tuple of (int, int)
        Each word's ``(start, end)`` in ``text``, in reading order; only words the encoder
        reads (a truncated text's later words are not here).
    truncated : bool
        Whether tokens past the limit were cut (``long="truncate"`` only).
    """

    text: str
    windows: tuple[tuple[int, ...], ...]
    words: tuple[tuple[int | None, ...], ...]
    spans: tuple[tuple[int, int], ...]
    truncated: bool = False


def tokenize_words(
    tokenizer: Any,
    texts: Sequence[str],
    max_length: int,
    long: str = "truncate",
    stride: int | None = None,
) -> list[ReadText]:
    """``texts`` as the encoder reads them (see :class:`ReadText`): the same ids as
    :meth:`~bertprobe.encoders.encoder.LoadedEncoder.tokenize` (truncated) or
    :meth:`~bertprobe.encoders.encoder.LoadedEncoder.windows` (``long="chunk"``, ``stride``
    tokens shared by consecutive windows), with each token's word and each word's span."""
    chunk = long == "chunk"
    if chunk:
        assert stride is not None
        check_stride(tokenizer, "the encoder", max_length, stride)
    read = [readable_prefix(tokenizer, t, max_length) for t in texts] if not chunk else texts
    enc = tokenizer(
        list(read),
        truncation=True,
        max_length=max_length,
        padding=False,
        return_offsets_mapping=True,
        return_attention_mask=False,
        return_token_type_ids=False,
        **({"stride": stride, "return_overflowing_tokens": True} if chunk else {}),
    )
    owners = enc["overflow_to_sample_mapping"] if chunk else range(len(texts))
    per_text: list[list[int]] = [[] for _ in texts]
    for row, owner in enumerate(owners):
        per_text[owner].append(row)
    out = []
    for i, rows in enumerate(per_text):
        spans: dict[int, list[int]] = {}  # the tokenizer's word index -> [start, end]
        for row in rows:
            for word, (a, b) in zip(enc.word_ids(row), enc["offset_mapping"][row], strict=True):
                if word is None:
                    continue
                span = spans.setdefault(word, [a, b])
                span[0], span[1] = min(span[0], a), max(span[1], b)
        order = sorted(spans)
        index = {word: k for k, word in enumerate(order)}
        out.append(
            ReadText(
                text=texts[i],
                windows=tuple(tuple(enc["input_ids"][row]) for row in rows),
                words=tuple(
                    tuple(None if w is None else index[w] for w in enc.word_ids(row))
                    for row in rows
                ),
                spans=tuple((spans[w][0], spans[w][1]) for w in order),
                truncated=not chunk and any(bool(enc.encodings[row].overflowing) for row in rows),
            )
        )
    return out
