"""Why this label: each word's share of the model's score for each class (token attributions).

Two methods, chosen by :func:`explain` (``method="auto"``) from what the model allows:

``exact``
    For a linear head on mean-pooled hidden states the score of a class is
    ``z = b + w . ((1/n) sum_i h_i - mu) / sigma``: with the scaling folded into the weights
    (:meth:`~bertprobe.heads.linear.LinearHead.readout`), ``z = c + sum_i (w / sigma) . h_i / n``.
    Each token's term ``(w / sigma) . h_i / n`` is its share, and the shares of a word's tokens
    add up to the word's score: the scores and the constant add up to ``z`` exactly, from one
    forward pass. Several layers side by side add their terms; a long text in windows
    (``long="chunk"``, windows pooled by their mean) adds each window's terms divided by the
    number of windows, a word read in two windows getting both. The special tokens' terms
    ([CLS], [SEP]) go to the constant, which therefore differs a little between texts.

    The caveat: ``h_i`` is contextual (every token's state has read the whole text), so a
    word's score is the evidence the head reads out at that word's position, not the effect of
    deleting the word; a word can carry evidence its neighbours put there.

``occlusion``
    Leave one word out: a word's score is the score of the text minus the score of the text
    without that word (its tokens deleted, ``occlude="delete"``, or each replaced by the mask
    token, ``"mask"``), all of a batch's variants run through the encoder together. A long text
    in windows recomputes only the windows that hold the word. Used for what the exact method
    cannot split: [CLS] and max pooling, windows pooled by their maximum, and a model that votes
    with a TF-IDF model (whose side is given the text without the word, also for ``"mask"``).
    The constant is what the words' scores leave of the text's score (interactions, and what no
    single word carries), so the two still add up to it.

What is scored: a two-class model's log-odds ``z`` (one column per class: ``-z`` for the first,
``+z`` for the second); more classes: each class's logit (the softmax's input; for an SGD
probe, its one-vs-rest score); a multi-label model: each label's log-odds. For a model that
votes with a TF-IDF model, the same quantities of the voted probabilities (``log p`` per class
for more than two).

``integrated-gradients``
    Captum's layer integrated gradients on the word embeddings, from a baseline of pad tokens
    (:mod:`bertprobe.model.gradients`): for any model whose encoder runs in torch and whose head
    is linear, never chosen by ``auto`` (``steps`` forward and backward passes per text and per
    score). The convergence delta (the integral's error) is reported. Not for a model that votes
    with a TF-IDF model: that half of the score has no gradient in the tokens.

Faithfulness is measured as in ERASER (DeYoung et al., 2020): :func:`erasure_scores` removes
the top k% of words by an explanation's ranking (comprehensiveness: how much the predicted
class's probability falls) or keeps only them (sufficiency: how much it falls then), for k = 1,
5, 10, 20, 50, and averages over k (AOPC); against a random ranking it says whether the
ranking finds the words the model uses.

Example:
    >>> from bertprobe import Classifier  # doctest: +SKIP
    >>> [why] = Classifier.load("models/sst2").explain(["a gorgeous, witty film"])  # doctest: +SKIP
    >>> why.method, [w.text for w in why.top(2)]  # doctest: +SKIP
    ('exact', ['gorgeous', 'witty'])
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from bertprobe.core.errors import BadInputError
from bertprobe.core.tables import python_value
from bertprobe.encoders.encode import length_sorted_batches
from bertprobe.encoders.encoder import LoadedEncoder
from bertprobe.encoders.options import RunOptions, default_stride
from bertprobe.encoders.words import ReadText, tokenize_words
from bertprobe.heads.decision import Decision
from bertprobe.heads.linear import LinearHead, linear_readout, why_not_linear
from bertprobe.model.gradients import DEFAULT_STEPS, integrated_gradients

if TYPE_CHECKING:
    from bertprobe.model.classifier import Classifier

METHODS = ("auto", "exact", "occlusion", "integrated-gradients")
# What the service offers: integrated gradients cost ``steps`` passes per text and score, more
# than its queue, which admits requests by their texts, can bound.
SERVED_METHODS = METHODS[:3]
OCCLUSIONS = ("delete", "mask")
# ERASER's bins: the share of a text's words (in %) removed or kept.
ERASER_KS = (1, 5, 10, 20, 50)
CAVEAT = (
    "a word's score is the evidence read out at its position (hidden states are contextual), "
    "not the effect of deleting the word"
)


@dataclass(frozen=True)
class Word:
    """A word of a text as the tokenizer splits it: ``text == source[start:end]``."""

    text: str
    start: int
    end: int


@dataclass(frozen=True, eq=False)
class Explanation:
    """Why a model gave a text its label: a score per word and per class.

    Attributes
    ----------
    text : str
        The text explained.
    words : tuple of Word
        The words the encoder read, in order, with their character offsets in ``text`` (a
        truncated text's later words are not among them; see ``note``).
    scores : ndarray of shape (n_words, n_classes)
        Each word's share of each class's score (see the module's docstring for what is
        scored); positive is evidence for the class.
    classes : tuple
        The model's classes (labels, for a multi-label model): the columns.
    constant : ndarray of shape (n_classes,)
        The rest of each class's score: ``constant + scores.sum(axis=0) == logits``. Exact:
        the head's intercept and the special tokens' terms; occlusion: what the words' scores
        leave of the score.
    logits : ndarray of shape (n_classes,)
        The scores explained (log-odds, logits).
    proba : ndarray of shape (n_classes,)
        The model's probabilities (each label's, for a multi-label model).
    labels : tuple
        The label predicted (one; a multi-label model: those at or over their thresholds).
    method : str
        ``"exact"``, ``"occlusion-delete"``, ``"occlusion-mask"`` or
        ``"integrated-gradients"``.
    score : str
        What ``logits`` are: ``"log-odds"`` or ``"logit"``.
    note : str
        How to read the scores (the method's caveat), and whether the text was truncated.
    decision : ndarray of shape (n_classes,) or None
        Where a class is given, in score units: two classes, the log-odds of the decision
        threshold (``0`` for the most probable class; with ``threshold=t`` the second class is
        given where ``logits[1] >= log(t / (1 - t))``); a multi-label model, each label's
        threshold as log-odds; None for more classes (the largest logit wins).
    delta : float or None
        Integrated gradients: the largest absolute convergence delta over the scores (how far
        the path integral is from ``score(text) - score(baseline)``); None for other methods.
    """

    text: str
    words: tuple[Word, ...]
    scores: np.ndarray
    classes: tuple
    constant: np.ndarray
    logits: np.ndarray
    proba: np.ndarray
    labels: tuple
    method: str
    score: str
    note: str
    decision: np.ndarray | None = None
    delta: float | None = None

    @property
    def column(self) -> int:
        """The column of the class predicted (the most probable label's, multi-label)."""
        if len(self.labels) == 1 and self.labels[0] in self.classes:
            return self.classes.index(self.labels[0])
        return int(np.argmax(self.proba))

    def ranking(self, column: int | None = None) -> np.ndarray:
        """Word positions, most evidence for class ``column`` (default :attr:`column`) first."""
        column = self.column if column is None else column
        return np.argsort(-self.scores[:, column], kind="stable")

    def top(self, k: int = 5, column: int | None = None) -> list[Word]:
        """The ``k`` words with the most evidence for class ``column`` (default: predicted)."""
        return [self.words[i] for i in self.ranking(column)[:k]]

    def to_dict(self) -> dict[str, Any]:
        """The explanation as JSON-ready values; ``words`` hold each word's score per class."""
        classes = [python_value(c) for c in self.classes]
        return {
            "text": self.text,
            "classes": classes,
            "labels": [python_value(y) for y in self.labels],
            "probabilities": dict(zip(map(str, classes), self.proba.tolist(), strict=True)),
            "score": self.score,
            "logits": dict(zip(map(str, classes), self.logits.tolist(), strict=True)),
            "constant": dict(zip(map(str, classes), self.constant.tolist(), strict=True)),
            "words": [
                {
                    "text": w.text,
                    "start": w.start,
                    "end": w.end,
                    "scores": dict(zip(map(str, classes), row.tolist(), strict=True)),
                }
                for w, row in zip(self.words, self.scores, strict=True)
            ],
            "decision": (
                None
                if self.decision is None
                else dict(zip(map(str, classes), self.decision.tolist(), strict=True))
            ),
            "method": self.method,
            "note": self.note,
            "convergence_delta": self.delta,
        }


def check_method(method: str) -> str:
    """``method`` if it is one of :data:`METHODS`, else a one-line error."""
    if method not in METHODS:
        raise BadInputError(f"method={method!r}: choose from {', '.join(METHODS)}", param="method")
    return method


def check_occlusion(occlude: str) -> str:
    """``occlude`` if it is one of :data:`OCCLUSIONS`, else a one-line error."""
    if occlude not in OCCLUSIONS:
        raise BadInputError(
            f"occlude={occlude!r}: choose from {', '.join(OCCLUSIONS)}", param="occlude"
        )
    return occlude


def why_not_exact(model: Classifier) -> str | None:
    """Why the exact decomposition cannot split ``model``'s scores, or None when it can."""
    spec = model.spec
    if spec.pooling != "mean":
        return f"{spec.pooling} pooling is not linear in the tokens' states"
    if spec.long == "chunk" and spec.window_pool != "mean":
        return f"window_pool={spec.window_pool!r} is not linear in the windows' vectors"
    if model.text_model is not None:
        return "the TF-IDF vote averages probabilities, not scores"
    return why_not_linear(model.probe)


def explain(
    model: Classifier,
    texts: Sequence[str],
    *,
    method: str = "auto",
    occlude: str = "delete",
    run: RunOptions = RunOptions(),
    threshold: float | str | None = None,
    steps: int = DEFAULT_STEPS,
) -> list[Explanation]:
    """One :class:`Explanation` per text (see the module's docstring for the methods).

    Parameters
    ----------
    model : Classifier
        The model whose labels are explained.
    texts : sequence of str
        The texts.
    method : {"auto", "exact", "occlusion", "integrated-gradients"}
        ``"auto"``: exact where the model allows it (mean pooling, a linear head, no TF-IDF
        vote), else occlusion. ``"exact"`` where it cannot be is an error saying why, and so
        is ``"integrated-gradients"`` for a model that votes with TF-IDF.
    occlude : {"delete", "mask"}
        Occlusion: delete a word's tokens, or replace each with the mask token.
    run : RunOptions
        Batches, device, backend (the cache is not used: explanations need every token).
    threshold : float, "auto" or None
        The decision threshold of a two-class model, as in
        :meth:`~bertprobe.model.classifier.Classifier.predict`: it decides ``labels``.
    steps : int
        Integrated gradients: points of the path integral.
    """
    from bertprobe.encoders.embedder import as_texts

    texts = as_texts(texts)
    check_method(method)
    check_occlusion(occlude)
    decision = model.decision_for(threshold)
    if method == "integrated-gradients":
        return _explain_by_gradients(model, texts, run, decision, steps)
    reason = why_not_exact(model) if method != "occlusion" else "occlusion was asked for"
    if method == "exact" and reason is not None:
        raise BadInputError(
            f"method='exact' cannot explain this model: {reason}; use occlusion", param="method"
        )
    encoder = run.load(model.encoder, default_backend=model.backend)
    if occlude == "mask" and reason is not None and encoder.tokenizer.mask_token_id is None:
        raise BadInputError(
            f"occlude='mask': {model.encoder.name}'s tokenizer has no mask token; use delete",
            param="occlude",
        )
    read = read_texts(model, encoder, texts)
    readout = Readout(model)
    if reason is None:
        logits, proba, scores, constants = _exact(model, encoder, read, readout, run)
        method_name, notes = "exact", [CAVEAT]
    else:
        logits, proba, scores, constants = _occlusion(encoder, model, read, readout, run, occlude)
        method_name = f"occlusion-{occlude}"
        notes = [
            f"leave-one-out ({'deleted' if occlude == 'delete' else 'masked'}) because {reason}; "
            "the constant is what the words' scores leave of the score"
        ]
    return _explanations(
        model, read, readout, decision, (logits, proba, scores, constants), method_name, notes
    )


def _explanations(
    model: Classifier,
    read: list[ReadText],
    readout: Readout,
    decision: Decision,
    found: tuple[np.ndarray, np.ndarray, list[np.ndarray], list[np.ndarray]],
    method: str,
    notes: list[str],
    deltas: Sequence[float | None] | None = None,
) -> list[Explanation]:
    """A method's scores (per text: logits, probabilities, word scores, constant) as
    :class:`Explanation` objects, each with its notes."""
    logits, proba, scores, constants = found
    labels = decision.label_tuples(proba)
    boundaries = decision.boundaries()
    out = []
    for i, r in enumerate(read):
        note = list(notes)
        if r.truncated:
            end = r.spans[-1][1] if r.spans else 0
            note.append(f"truncated: the encoder read the first {end:,} characters")
        out.append(
            Explanation(
                text=r.text,
                words=tuple(Word(r.text[a:b], a, b) for a, b in r.spans),
                scores=scores[i],
                classes=tuple(model.classes),
                constant=constants[i],
                logits=logits[i],
                proba=proba[i],
                labels=tuple(labels[i]),
                method=method,
                score=readout.kind,
                note="; ".join(note),
                decision=boundaries,
                delta=None if deltas is None else deltas[i],
            )
        )
    return out


def _explain_by_gradients(
    model: Classifier, texts: list[str], run: RunOptions, decision: Decision, steps: int
) -> list[Explanation]:
    """Integrated gradients (:mod:`bertprobe.model.gradients`) as explanations: the encoder
    runs in torch whatever the model's backend (gradients need it)."""
    readout = Readout(model)
    if readout.linear is None:
        raise BadInputError(
            "method='integrated-gradients' cannot explain this model: "
            + (why_not_exact(model) or "its head is not linear")
            + "; use occlusion",
            param="method",
        )
    if run.backend not in (None, "torch"):  # before an export is built for nothing
        raise BadInputError(
            f"integrated gradients need the torch backend, not {run.backend!r}; use backend=torch",
            param="backend",
        )
    encoder = run.load(model.encoder, default_backend="torch")
    read = read_texts(model, encoder, texts)
    weights, constant = readout.linear.readout()
    spec = model.spec
    found = integrated_gradients(
        encoder,
        read,
        pooling=spec.pooling,
        layers=[encoder.layer_index(layer) for layer in spec.layers],
        window_pool=spec.window_pool,
        weights=weights,
        constant=constant,
        steps=steps,
    )
    logits, proba = readout(found.features, texts)
    words = [readout.columns(w) for w in found.words]
    constants = [z - w.sum(axis=0) for z, w in zip(logits, words, strict=True)]
    note = (
        f"integrated gradients ({steps} steps from a baseline of pad tokens): a word's score is "
        "its share of the score's change from the baseline, not the effect of deleting it; "
        "the constant is the baseline's score and the integral's error (convergence delta)"
    )
    return _explanations(
        model,
        read,
        readout,
        decision,
        (logits, proba, words, constants),
        "integrated-gradients",
        [note],
        found.delta.tolist(),
    )


def read_texts(model: Classifier, encoder: LoadedEncoder, texts: Sequence[str]) -> list[ReadText]:
    """``texts`` as ``model``'s encoder reads them (its max length, truncated or in windows)."""
    spec = model.spec
    max_length = spec.max_length or encoder.max_length
    stride = None
    if spec.long == "chunk":
        stride = spec.stride if spec.stride is not None else default_stride(max_length)
    return tokenize_words(encoder.tokenizer, texts, max_length, spec.long, stride)


class Readout:
    """What is explained, from a model's vectors (and texts): its scores and probabilities.

    ``kind`` is ``"log-odds"`` (two classes, or label sets: each label's own) or ``"logit"``,
    as the model's decision says what a text gets. A head with a linear read-out is read
    through its weights (:class:`~bertprobe.heads.linear.LinearHead`), exactly as it scores;
    any other head, or a vote, from its probabilities.
    """

    def __init__(self, model: Classifier) -> None:
        self.model = model
        self.head = model.head
        decision = model.decision
        self.label_sets = decision.label_sets
        self.binary = not self.label_sets and len(decision.classes) == 2
        self.linear: LinearHead | None = None
        if model.text_model is None and why_not_linear(model.probe) is None:
            self.linear = linear_readout(model.probe)
        self.kind = "log-odds" if self.binary or self.label_sets else "logit"

    def columns(self, z: np.ndarray) -> np.ndarray:
        """A head's scores as one column per class: a binary head's one as ``[-z, z]``."""
        return np.concatenate([-z, z], axis=1) if self.binary else z

    def __call__(self, X: np.ndarray, texts: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
        """Scores (one column per class) and probabilities of rows ``X``."""
        proba = np.asarray(self.head.predict_proba(X.astype(np.float32), texts=list(texts)))
        if self.linear is not None:
            return self.columns(self.linear.scores(X)), proba
        p = np.clip(proba.astype(np.float64), 1e-15, 1 - 1e-15)
        if self.binary:
            return self.columns(np.log(p[:, 1:] / p[:, :1])), proba
        if self.label_sets:
            return np.log(p / (1 - p)), proba
        return np.log(p), proba


def _batches(lengths: Sequence[int], run: RunOptions):
    return length_sorted_batches(lengths, run.batch_size, run.max_tokens)


def _exact(
    model: Classifier,
    encoder: LoadedEncoder,
    read: list[ReadText],
    readout: Readout,
    run: RunOptions,
) -> tuple[np.ndarray, np.ndarray, list[np.ndarray], list[np.ndarray]]:
    """The read-out decomposition: per text its scores, probabilities, word scores, constant."""
    assert readout.linear is not None
    weights, constant = readout.linear.readout()  # (n_scores, dim x layers), (n_scores,)
    layers = [encoder.layer_index(layer) for layer in model.spec.layers]
    items = [(i, j) for i, r in enumerate(read) for j in range(len(r.windows))]
    width = weights.shape[1]
    word_scores = [np.zeros((len(r.spans), len(weights))) for r in read]
    specials = [np.zeros(len(weights)) for _ in read]
    pooled = np.zeros((len(read), width))
    for batch in _batches([len(read[i].windows[j]) for i, j in items], run):
        states = encoder.token_states(
            [list(read[items[b][0]].windows[items[b][1]]) for b in batch], layers
        )
        for b, h in zip(batch, states, strict=True):
            i, j = items[b]
            share = 1.0 / (len(h) * len(read[i].windows))  # a token's weight in the mean
            h = h.astype(np.float64)
            pooled[i] += h.sum(axis=0) * share
            terms = h @ weights.T * share  # score s reads token t as weights[s] . h[t]
            words = np.array([-1 if w is None else w for w in read[i].words[j]])
            np.add.at(word_scores[i], words[words >= 0], terms[words >= 0])
            specials[i] += terms[words < 0].sum(axis=0)
    logits, proba = readout(pooled, [r.text for r in read])
    return (
        logits,
        proba,
        [readout.columns(s) for s in word_scores],
        [readout.columns((constant + s)[None])[0] for s in specials],
    )


def _occlusion(
    encoder: LoadedEncoder,
    model: Classifier,
    read: list[ReadText],
    readout: Readout,
    run: RunOptions,
    occlude: str,
) -> tuple[np.ndarray, np.ndarray, list[np.ndarray], list[np.ndarray]]:
    """Leave one word out: per text its scores, probabilities, word scores, constant."""
    mask = encoder.tokenizer.mask_token_id if occlude == "mask" else None
    variants: list[tuple[ReadText, frozenset[int]]] = []
    for r in read:
        variants.append((r, frozenset()))
        variants.extend((r, frozenset([k])) for k in range(len(r.spans)))
    logits, proba = score_variants(model, encoder, readout, variants, run, mask_id=mask)
    out_logits, out_proba, scores, constants = [], [], [], []
    at = 0
    for r in read:
        whole = logits[at]
        words = whole[None] - logits[at + 1 : at + 1 + len(r.spans)]
        out_logits.append(whole)
        out_proba.append(proba[at])
        scores.append(words)
        constants.append(whole - words.sum(axis=0))
        at += 1 + len(r.spans)
    return np.array(out_logits), np.array(out_proba), scores, constants


def without_words(
    r: ReadText, drop: frozenset[int], *, keep: bool = False, mask_id: int | None = None
) -> tuple[tuple[tuple[int, ...], ...], str]:
    """``r``'s windows and text with the words ``drop`` deleted (or with ``keep``, every word
    but those); ``mask_id``: their tokens replaced by it instead (the text still drops them)."""

    def gone(word: int | None) -> bool:
        return word is not None and ((word in drop) != keep)

    windows = []
    for ids, words in zip(r.windows, r.words, strict=True):
        if mask_id is not None:
            windows.append(
                tuple(mask_id if gone(w) else t for t, w in zip(ids, words, strict=True))
            )
        else:
            windows.append(tuple(t for t, w in zip(ids, words, strict=True) if not gone(w)))
    pieces, at = [], 0
    for k, (a, b) in enumerate(r.spans):
        if gone(k):
            pieces.append(r.text[at:a])
            at = b
    pieces.append(r.text[at:])
    return tuple(windows), "".join(pieces)


def score_variants(
    model: Classifier,
    encoder: LoadedEncoder,
    readout: Readout,
    variants: Sequence[tuple[ReadText, frozenset[int]]],
    run: RunOptions,
    *,
    keep: bool = False,
    mask_id: int | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Scores and probabilities of texts with some words taken out (see :func:`without_words`):
    every distinct window runs through the encoder once, in length-sorted batches, and a
    text's window vectors are pooled as the model pools them."""
    spec = model.spec
    views = spec.views(encoder)
    built = [without_words(r, drop, keep=keep, mask_id=mask_id) for r, drop in variants]
    distinct = list(dict.fromkeys(w for windows, _ in built for w in windows))
    slot = {w: k for k, w in enumerate(distinct)}
    vectors = np.zeros((len(distinct), encoder.hidden_size * len(views)), dtype=np.float32)
    for batch in _batches([len(w) for w in distinct], run):
        pooled = encoder.forward([list(distinct[b]) for b in batch], views)
        vectors[batch] = np.concatenate([pooled[v] for v in views], axis=1)
    X = np.stack(
        [
            (np.max if spec.window_pool == "max" else np.mean)(
                vectors[[slot[w] for w in windows]], axis=0
            )
            for windows, _ in built
        ]
    )
    return readout(X, [text for _, text in built])


def erasure_scores(
    model: Classifier,
    explanations: Sequence[Explanation],
    *,
    ranking: str = "scores",
    ks: Sequence[float] = ERASER_KS,
    run: RunOptions = RunOptions(),
    seed: int = 0,
) -> dict[str, Any]:
    """ERASER's comprehensiveness and sufficiency of the explanations' word rankings.

    For each text and each ``k`` (% of its words, at least one): the predicted class's
    probability minus its probability with the top ``k``% words deleted (comprehensiveness:
    higher is better) and with only them kept (sufficiency: lower is better); each averaged
    over the texts, and over ``ks`` as AOPC. ``ranking="random"`` ranks each text's words at
    random instead (seeded), the baseline an explanation should beat.

    Returns
    -------
    dict
        ``comprehensiveness`` and ``sufficiency`` (k -> mean), ``aopc_comprehensiveness``,
        ``aopc_sufficiency``, ``ranking``, ``n``.
    """
    if ranking not in ("scores", "random"):
        raise BadInputError(f"ranking={ranking!r}: choose scores or random", param="ranking")
    encoder = run.load(model.encoder, default_backend=model.backend)
    read = read_texts(model, encoder, [e.text for e in explanations])
    readout = Readout(model)
    rng = np.random.default_rng(seed)
    drops: list[tuple[ReadText, frozenset[int]]] = []
    for r, e in zip(read, explanations, strict=True):
        n = len(r.spans)
        order = e.ranking() if ranking == "scores" else rng.permutation(n)
        drops.append((r, frozenset()))
        drops.extend((r, frozenset(order[: _top_n(k, n)].tolist())) for k in ks)
    _, removed = score_variants(model, encoder, readout, drops, run)
    _, kept = score_variants(model, encoder, readout, drops, run, keep=True)
    step = 1 + len(ks)
    comp = np.zeros((len(read), len(ks)))
    suff = np.zeros((len(read), len(ks)))
    for i, e in enumerate(explanations):
        c = e.column
        base = removed[i * step, c]
        comp[i] = base - removed[i * step + 1 : (i + 1) * step, c]
        suff[i] = base - kept[i * step + 1 : (i + 1) * step, c]
    return {
        "ranking": ranking,
        "n": len(read),
        "comprehensiveness": dict(zip(map(float, ks), comp.mean(axis=0).tolist(), strict=True)),
        "sufficiency": dict(zip(map(float, ks), suff.mean(axis=0).tolist(), strict=True)),
        "aopc_comprehensiveness": float(comp.mean()),
        "aopc_sufficiency": float(suff.mean()),
    }


def _top_n(k: float, n: int) -> int:
    """The words in the top ``k``% of ``n``: at least one (when there is one)."""
    return min(n, max(1, math.ceil(k * n / 100))) if n else 0
