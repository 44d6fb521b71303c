"""Token ids of texts of any length, at a memory cost bounded by what the encoder reads.

A fast tokenizer called on a whole text keeps, for every token, its id, offsets, word index and
masks, and with ``return_overflowing_tokens`` an Encoding per window besides: one 6 MB line
took about 800 MB on top of the process, though a truncating encoder reads its first
``max_length`` tokens only. Here a text past a few thousand characters is tokenized in pieces:

* truncated (:func:`truncated_ids`): only a prefix of it, long enough that the tokens the
  encoder reads, and one more (which shows it was truncated), are proven to be the whole text's;
* in windows (:func:`token_windows`): in segments of :data:`SEGMENT_CHARS` characters, of which
  only the ids are kept, then cut into the same windows the tokenizer's own overflow gives.

Why a prefix gives the whole text's tokens. Tokenizers normalize character by character and
pre-tokenize into *words* (whitespace and punctuation for WordPiece, the byte-level regex for
BPE, the metaspace split for SentencePiece), and a word's tokens depend on that word alone. So
cutting a text can change only the word the cut falls in, the last word of the prefix: every
token of an earlier word is the whole text's. The proof used below is therefore: count the
tokens whose word index is below the prefix's last word. No bound in characters per token would
do: a run of a million spaces, or a word of 10,000 letters that WordPiece reads as one
``[UNK]``, is one token or none; so the prefix starts at ``max_length x``
:data:`CHARS_PER_TOKEN` characters and is doubled until the proof holds (at worst, the whole
text, as before).

Segments are joined the same way: each next segment starts just after the word before the last
whole word of the previous one, and must tokenize that whole word again exactly (same ids, same
offsets in the text) before its tokens are taken; a tokenizer where that fails (a context it
reads across words) gets the whole text tokenized at once, as before.
"""

from __future__ import annotations

from array import array
from collections.abc import Sequence
from typing import Any

from bertprobe.core.errors import BadInputError

# A first guess at the characters ``max_length`` tokens take: 16 per token (English takes 4 to
# 5 with its space), so one tokenizer call almost always suffices. Correctness does not rest on
# it (see the module's docstring); a text this short or shorter is tokenized whole, as before.
CHARS_PER_TOKEN = 16
# Characters tokenized at a time when a text is cut into windows: tens of thousands of tokens'
# offsets held at once, a few MB, whatever the text's length.
SEGMENT_CHARS = 1 << 16


def check_stride(tokenizer: Any, name: str, max_length: int, stride: int) -> int:
    """The text tokens a window of ``max_length`` holds, or a one-line error when it holds none
    or ``stride`` leaves no progress (``name``: the encoder's, for the message)."""
    room = text_room(tokenizer, max_length)
    if room < 1:
        raise BadInputError(
            f"max length {max_length} leaves no room for text beside {name}'s "
            "special tokens; use a larger max_length=",
            param="max_length",
        )
    if not 0 <= stride < room:
        raise BadInputError(
            f"stride {stride} must be from 0 to {room - 1}: a window of max length "
            f"{max_length} holds {room} text tokens; use a smaller stride= or a larger "
            "max_length=",
            param=("stride", "max_length"),
        )
    return room


def text_room(tokenizer: Any, max_length: int) -> int:
    """Tokens of text a sequence of ``max_length`` holds beside the special tokens."""
    return max_length - int(tokenizer.num_special_tokens_to_add(pair=False))


def _plain(tokenizer: Any, text: str, offsets: bool = False) -> Any:
    """``text``'s tokens with no special tokens, untruncated (one Encoding)."""
    return tokenizer(
        text,
        add_special_tokens=False,
        truncation=False,
        padding=False,
        return_offsets_mapping=offsets,
        return_attention_mask=False,
        return_token_type_ids=False,
        verbose=False,  # "longer than the maximum": known, this is a piece of a long text
    )


def _whole_word_tokens(words: Sequence[int | None]) -> int:
    """How many leading tokens belong to words before the last one (word indices never fall)."""
    if not words:
        return 0
    last = words[-1]
    n = len(words)
    while n and words[n - 1] == last:
        n -= 1
    return n


def readable_prefix(tokenizer: Any, text: str, max_length: int) -> str:
    """The shortest tried prefix of ``text`` whose truncation at ``max_length`` is the text's.

    ``text`` itself when it is at most ``max_length x CHARS_PER_TOKEN`` characters long, or
    when no shorter prefix was proven (see the module's docstring); else a prefix whose whole
    words hold more tokens than the sequence has room for, so the truncated ids are the same
    and the text counts as truncated all the same.

    Examples
    --------
    >>> from transformers import AutoTokenizer  # doctest: +SKIP
    >>> readable_prefix(tokenizer, "word " * 1_000_000, 16)[:10]  # doctest: +SKIP
    'word word '
    """
    room = max(text_room(tokenizer, max_length), 0)
    chars = max_length * CHARS_PER_TOKEN
    while chars < len(text):
        prefix = text[:chars]
        if _whole_word_tokens(_plain(tokenizer, prefix).word_ids()) > room:
            return prefix
        chars *= 2
    return text


def truncated_ids(
    tokenizer: Any, texts: Sequence[str], max_length: int
) -> tuple[list[list[int]], int]:
    """Token ids truncated at ``max_length`` (special tokens included), and how many texts were
    truncated: what the tokenizer gives for the whole texts, having read a bounded prefix of
    each (:func:`readable_prefix`)."""
    enc = tokenizer(
        [readable_prefix(tokenizer, t, max_length) for t in texts],
        truncation=True,
        max_length=max_length,
        padding=False,
        return_attention_mask=False,
        return_token_type_ids=False,
    )
    truncated = sum(1 for e in enc.encodings if e.overflowing)
    return enc["input_ids"], truncated


def token_windows(
    tokenizer: Any, texts: Sequence[str], max_length: int, stride: int
) -> tuple[list[list[int]], list[int]]:
    """Every text as windows of at most ``max_length`` ids sharing ``stride`` tokens, and the
    text each window is of: the tokenizer's own overflowing windows, in order.

    A text over :data:`SEGMENT_CHARS` characters is tokenized in segments (see the module's
    docstring), so the memory it takes is its windows' ids, not every token's offsets and an
    Encoding per window; the others go through the tokenizer together, as before.
    """
    per_text: list[list[list[int]]] = [[] for _ in texts]
    short = [i for i, t in enumerate(texts) if len(t) <= SEGMENT_CHARS]
    if short:
        enc = tokenizer(
            [texts[i] for i in short],
            truncation=True,
            max_length=max_length,
            stride=stride,
            return_overflowing_tokens=True,
            padding=False,
            return_attention_mask=False,
            return_token_type_ids=False,
        )
        for window, k in zip(enc["input_ids"], enc["overflow_to_sample_mapping"], strict=True):
            per_text[short[k]].append(window)
    for i, text in enumerate(texts):
        if len(text) > SEGMENT_CHARS:
            per_text[i] = _long_windows(tokenizer, text, max_length, stride)
    ids = [window for windows in per_text for window in windows]
    owner = [i for i, windows in enumerate(per_text) for _ in windows]
    return ids, owner


def _long_windows(tokenizer: Any, text: str, max_length: int, stride: int) -> list[list[int]]:
    """One long text's windows, from its ids tokenized in segments; the tokenizer's own when a
    segment's seam or the special tokens cannot be matched."""
    content = segmented_ids(tokenizer, text)
    room = text_room(tokenizer, max_length)
    # The special tokens around each window: those around the first, as the tokenizer makes it.
    first = truncated_ids(tokenizer, [text], max_length)[0][0]
    n_special = len(first) - min(room, len(content)) if content is not None else -1
    head = next(
        (
            k
            for k in range(n_special + 1)
            if content is not None
            and first[k : len(first) - (n_special - k)] == content[:room].tolist()
        ),
        None,
    )
    if content is None or head is None:
        return _whole_text_windows(tokenizer, text, max_length, stride)
    before, after = first[:head], first[len(first) - (n_special - head) :]
    # The tokenizer's overflow: windows start every room - stride tokens until one reaches the
    # end (a text within room is one window).
    windows = []
    start = 0
    while True:
        windows.append(before + content[start : start + room].tolist() + after)
        if start + room >= len(content):
            return windows
        start += room - stride


def _whole_text_windows(tokenizer: Any, text: str, max_length: int, stride: int) -> list[list[int]]:
    enc = tokenizer(
        [text],
        truncation=True,
        max_length=max_length,
        stride=stride,
        return_overflowing_tokens=True,
        padding=False,
        return_attention_mask=False,
        return_token_type_ids=False,
    )
    return list(enc["input_ids"])


def segmented_ids(tokenizer: Any, text: str, segment: int | None = None) -> array[int] | None:
    """All of ``text``'s token ids, no special tokens, tokenized ``segment`` characters at a
    time (default :data:`SEGMENT_CHARS`); ``None`` when a seam between segments did not
    tokenize as in the whole text (the caller then tokenizes the whole text).

    Each segment keeps the tokens of its words but the last (which the cut may have split);
    the next starts right after the word before the last kept one, and must give that word's
    tokens again, at the same places in the text, before its own are taken.
    """
    segment = segment or SEGMENT_CHARS
    ids = array("l")
    start = 0
    again: list[tuple[int, int, int]] = []  # the word the next segment must give first
    size = segment
    while True:
        end = start + size
        enc = _plain(tokenizer, text[start:end], offsets=True)
        tokens = [
            (t, start + a, start + b)
            for t, (a, b) in zip(enc["input_ids"], enc["offset_mapping"], strict=True)
        ]
        if tokens[: len(again)] != again:
            return None
        if end >= len(text):
            ids.extend(t for t, _, _ in tokens[len(again) :])
            return ids
        words = enc.word_ids()
        whole = _whole_word_tokens(words)
        # The last whole word is given again by the next segment, which starts after the token
        # before it: there must be such a token past this segment's start, or no progress.
        first = whole
        while first and words[first - 1] == words[whole - 1]:
            first -= 1
        restart = tokens[first - 1][2] if first > 0 else start
        if whole <= len(again) or restart <= start:
            size *= 2  # too few words in this many characters (a long word, a whitespace run)
            continue
        ids.extend(t for t, _, _ in tokens[len(again) : whole])
        again = tokens[first:whole]
        # A segment holds that word whole (it may be longer than a segment) and a segment more.
        start, size = restart, segment + again[-1][2] - restart
