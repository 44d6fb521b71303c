"""More text for a student to learn a teacher from: altered copies of the training texts.

A distilled student learns from what the teacher says of each text it is shown, not from the
labels, so any text is a lesson, even one no person would write. Tang et al. (2019,
"Distilling Task-Specific Knowledge from BERT into Simple Neural Networks", section 3.3) make
such text from the training set with three rules, applied to each copy of a text:

* masking: each word, with probability ``p_mask``, becomes the mask token (the student learns
  what the teacher makes of the sentence without that word);
* replacement: otherwise, with probability ``p_replace``, another word. Tang et al. draw it
  among the words of the same part of speech; here it is drawn from the training texts'
  words by their frequency, which needs no tagger and no download (a tagger's model is a
  download this workplace cannot make);
* n-gram sampling: then, with probability ``p_ngram``, the copy is cut to a random run of 1 to
  5 of its words.

Copies equal to a text of the set (or to another copy) are dropped: they teach nothing new.

Example:
    >>> copies = augment_texts(["a gorgeous , witty film", "dull and flat"], copies=2, seed=0)
    >>> len(copies) <= 4, all(c not in ("a gorgeous , witty film", "dull and flat")
    ...                       for c in copies)
    (True, True)
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence

import numpy as np

from bertprobe.core.errors import BadInputError

# Tang et al.'s settings (section 4.2): p_mask = p_pos = 0.1, p_ng = 0.25, n-grams of 1 to 5.
P_MASK = 0.1
P_REPLACE = 0.1
P_NGRAM = 0.25
LONGEST_NGRAM = 5
# Tries a copy gets before the text is left with fewer copies (short texts have few variants).
TRIES_PER_COPY = 3


def augment_texts(
    texts: Sequence[str],
    copies: int,
    *,
    seed: int = 0,
    mask_token: str = "[MASK]",  # noqa: S107 (a token of text, not a password)
    p_mask: float = P_MASK,
    p_replace: float = P_REPLACE,
    p_ngram: float = P_NGRAM,
) -> list[str]:
    """Up to ``copies`` altered copies of each text (see the module), in the texts' order;
    never one of ``texts`` or a copy already made. Words are split on white space.

    Parameters
    ----------
    texts : sequence of str
        The texts to alter (the training texts: never the dev or test texts).
    copies : int
        Copies a text; 0 makes none.
    seed : int
        Seeds the draws: the same texts, copies and seed give the same copies.
    mask_token : str
        What a masked word becomes (the student tokenizer's mask token, so that it reads it
        as one token).
    p_mask, p_replace, p_ngram : float
        The probabilities of Tang et al.'s three rules.

    Examples
    --------
    >>> augment_texts(["one two three four"], copies=3, seed=1, p_ngram=0)
    ['one two two four', 'one two three [MASK]', 'four two three four']
    """
    if copies < 0:
        raise BadInputError(f"augment={copies}: give 0 or more copies a text", param="augment")
    for name, p in (("p_mask", p_mask), ("p_replace", p_replace), ("p_ngram", p_ngram)):
        if not 0 <= p <= 1:
            raise BadInputError(f"{name}={p}: give a probability, 0 to 1", param=name)
    if p_mask + p_replace > 1:
        raise BadInputError(
            f"p_mask + p_replace = {p_mask + p_replace}: a word is masked or replaced, not "
            "both; give two probabilities that add up to 1 or less",
            param=("p_mask", "p_replace"),
        )
    if copies == 0 or not texts:
        return []
    rng = np.random.default_rng(seed)
    words_of = [text.split() for text in texts]
    counts = Counter(word for words in words_of for word in words)
    vocabulary = list(counts)
    frequency = np.array([counts[w] for w in vocabulary], dtype=np.float64)
    frequency /= frequency.sum()
    seen = set(texts)
    made: list[str] = []
    for words in words_of:
        if not words:
            continue
        kept = 0
        for _ in range(TRIES_PER_COPY * copies):
            if kept == copies:
                break
            copy = _altered(words, rng, vocabulary, frequency, mask_token, p_mask, p_replace)
            if rng.random() < p_ngram:
                n = int(rng.integers(1, min(LONGEST_NGRAM, len(copy)) + 1))
                start = int(rng.integers(0, len(copy) - n + 1))
                copy = copy[start : start + n]
            text = " ".join(copy)
            if text not in seen:
                seen.add(text)
                made.append(text)
                kept += 1
    return made


def _altered(
    words: list[str],
    rng: np.random.Generator,
    vocabulary: list[str],
    frequency: np.ndarray,
    mask_token: str,
    p_mask: float,
    p_replace: float,
) -> list[str]:
    """``words`` with each masked (``p_mask``) or else replaced by a word drawn by frequency
    (``p_replace``)."""
    draws = rng.random(len(words))
    replaced = draws >= p_mask
    replaced &= draws < p_mask + p_replace
    substitutes = rng.choice(len(vocabulary), size=int(replaced.sum()), p=frequency)
    out = list(words)
    k = 0
    for i, draw in enumerate(draws):
        if draw < p_mask:
            out[i] = mask_token
        elif replaced[i]:
            out[i] = vocabulary[substitutes[k]]
            k += 1
    return out
