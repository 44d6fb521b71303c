"""What to label next: the pool texts a model is least sure of, spread over the pool
(:func:`suggest`).

With a model, the texts are chosen by *uncertainty, then diversity*, the pattern small-text and
the active-learning literature use for batches: the ``10 * n`` most uncertain texts are
clustered into ``n`` groups and the most uncertain text of each group is taken, so a batch is
not ``n`` rewordings of the same hard case. With no model yet (a cold start), the pool's vectors
are clustered into ``n`` groups and the text nearest each centre is taken: ``n`` texts that
stand for the pool.

``strategy="typical"`` is TypiClust (Hacohen et al. 2022, "Active Learning on a Budget"), made
for small budgets on pretrained features: the pool and the labelled texts are clustered into
as many groups as there will be labels, and the most typical text (the densest: the smallest
mean distance to its 20 nearest neighbours in its group) of each of the largest groups with no
label yet is taken. It needs no model, only the vectors. bench/active_learning_bench.py
measures it beside the default and random picks.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np

from bertprobe.core.errors import BadInputError
from bertprobe.data.files import Label, ReadOptions, read_labelled, read_texts
from bertprobe.encoders.encode import embed
from bertprobe.encoders.options import EncoderOptions, RunOptions
from bertprobe.heads.decision import Decision
from bertprobe.model.classifier import Classifier

__all__ = [
    "CANDIDATES_PER_PICK",
    "STRATEGIES",
    "Pool",
    "Suggestion",
    "choose",
    "read_pool",
    "suggest",
    "uncertainty",
]

# How many of the most uncertain texts the clustering sees per text asked for: enough for the
# clusters to find different kinds of hard case, few enough that they all are hard.
CANDIDATES_PER_PICK = 10
# TypiClust's neighbourhood for a text's typicality, and the smallest group it takes a text
# from while larger groups are left (the paper's 20 and 5).
TYPICALITY_NEIGHBOURS = 20
MIN_TYPICAL_GROUP = 5
Strategy = Literal["uncertain", "typical"]
STRATEGIES: tuple[Strategy, ...] = ("uncertain", "typical")


@dataclass(frozen=True)
class Suggestion:
    """One text to label next.

    Attributes
    ----------
    text : str
        The text, as read (stripped).
    row : int
        Its 0-based position among the pool's texts (a file's texts as read, header and
        skipped empty rows not counted).
    score : float or None
        How unsure the model is, from 0 (sure) to 1 (a coin toss); None at a cold start.
    reason : {"uncertain", "representative", "typical"}
        Why it was chosen: the model is unsure of it, or (no model) it stands for a cluster of
        the pool, or (``strategy="typical"``) it is the most typical text of a group of the
        pool no label covers yet.
    """

    text: str
    row: int
    score: float | None
    reason: Literal["uncertain", "representative", "typical"]


def uncertainty(proba: np.ndarray, decision: Decision | None = None) -> np.ndarray:
    """How unsure each row of probabilities is, from 0 (sure) to 1 (undecided), by
    ``decision`` (default: the argmax over the columns); see
    :meth:`~bertprobe.heads.decision.Decision.uncertainty`.

    Examples
    --------
    >>> uncertainty(np.array([[0.5, 0.5], [0.9, 0.1]])).round(2).tolist()
    [1.0, 0.2]
    """
    proba = np.asarray(proba, dtype=float)
    decision = decision or Decision.argmax(range(proba.shape[1]))
    return decision.uncertainty(proba)


def suggest(
    pool: Sequence[str] | str | Path,
    *,
    n: int,
    model: Classifier | None = None,
    encoding: EncoderOptions | None = None,
    labelled: Sequence[str] | str | Path | None = None,
    run: RunOptions = RunOptions(),
    seed: int = 0,
    reading: ReadOptions = ReadOptions(),
    strategy: Strategy = "uncertain",
) -> list[Suggestion]:
    """The ``n`` pool texts to label next, most useful first.

    Parameters
    ----------
    pool : list of str, or str or Path
        Unlabelled texts, or a file of them read with ``reading`` (one text a line, or a table
        with a text column). A file whose every row has a label is refused: its texts are
        labelled already. Duplicate texts count once (the first row).
    n : int
        How many texts to suggest (at least 1, at most the pool's unlabelled texts).
    model : Classifier, optional
        Suggest the texts it is least sure of, one per cluster of the ``10 * n`` least sure
        (``reason="uncertain"``), most uncertain first.
    encoding : EncoderOptions, optional
        No model yet (a cold start): cluster the pool's vectors from this encoder into ``n``
        groups and suggest the text nearest each centre (``reason="representative"``), the
        largest group's first. Give ``model`` or ``encoding``, not both.
    labelled : list of str, or str or Path, optional
        Texts labelled already, or a file of them (its text column is read): skipped, matched
        on the text after stripping spaces.
    run : RunOptions
        How the encoder runs, for the model's encoder or ``encoding``'s.
    seed : int
        Seeds the clustering: the same inputs and seed give the same suggestions.
    reading : ReadOptions
        How ``pool`` and ``labelled`` files are read (``text_col``, ``label_col``,
        ``drop_empty``, ``max_field_chars``).
    strategy : {"uncertain", "typical"}
        ``"uncertain"``: as above. ``"typical"``: TypiClust (see the module docstring) on the
        vectors of ``model``'s encoder or ``encoding``'s, the labelled texts counted as
        covering their groups (``reason="typical"``, no score).

    Returns
    -------
    list of Suggestion

    Raises
    ------
    BadInputError
        ``n`` below 1, ``seed`` out of range, an unknown ``strategy``; neither or both of
        ``model`` and ``encoding``; an empty pool, a pool of labelled rows, or fewer
        unlabelled texts than ``n``.

    Examples
    --------
    >>> model = Classifier.load("models/sst2")  # doctest: +SKIP
    >>> [s.text for s in suggest("unlabelled.txt", n=20, model=model)]  # doctest: +SKIP
    """
    _check_request(n, seed, model, encoding, strategy)
    texts, source = _pool_texts(pool, reading)
    done = _labelled_texts(labelled, reading)
    rows = _unlabelled_rows(texts, done, n, source)
    candidates = [texts[row].strip() for row in rows]
    if strategy == "typical":
        X = _vectors(candidates, model, encoding, run)
        covered = _vectors(done, model, encoding, run) if done else None
        return [
            Suggestion(candidates[i], rows[i], None, "typical")
            for i in typical(X, n, labelled=covered, seed=seed)
        ]
    if model is not None:
        X, _ = model.embed(candidates, run)
        scores = uncertainty(model.head.predict_proba(X, texts=candidates), model.decision)
        return [
            Suggestion(candidates[i], rows[i], score, "uncertain")
            for i, score in choose(X, n, scores=scores, seed=seed)
        ]
    assert encoding is not None
    with run.open_cache() as cache:
        X, _ = embed(
            candidates,
            run.load(encoding.encoder, revision=encoding.revision),
            encoding.spec,
            run,
            cache=cache,
        )
    return [
        Suggestion(candidates[i], rows[i], None, "representative")
        for i, _ in choose(X, n, seed=seed)
    ]


def _vectors(
    texts: list[str], model: Classifier | None, encoding: EncoderOptions | None, run: RunOptions
) -> np.ndarray:
    """``texts``' vectors from ``model``'s encoder, or else ``encoding``'s."""
    if model is not None:
        return model.embed(texts, run)[0]
    assert encoding is not None
    with run.open_cache() as cache:
        encoder = run.load(encoding.encoder, revision=encoding.revision)
        return embed(texts, encoder, encoding.spec, run, cache=cache)[0]


def _check_request(
    n: int, seed: int, model: Classifier | None, encoding: EncoderOptions | None, strategy: str
) -> None:
    """Refuse what :func:`suggest` cannot do before any text is read: ``n`` below 1, a seed
    k-means does not take, an unknown strategy, neither or both of ``model`` and
    ``encoding``."""
    if strategy not in STRATEGIES:
        raise BadInputError(
            f"strategy={strategy!r}: choose one of {', '.join(STRATEGIES)}", param="strategy"
        )
    if n < 1:
        raise BadInputError(f"n={n}: ask for at least 1 text to label", param="n")
    if not 0 <= seed < 2**32:  # what k-means takes as a seed
        raise BadInputError(f"seed={seed}: use a whole number from 0 to {2**32 - 1}", param="seed")
    if (model is None) == (encoding is None):
        raise BadInputError(
            "give a model (suggest what it is least sure of) or an encoding (no model yet: "
            "suggest texts that stand for the pool), not "
            + ("both" if model is not None else "neither")
        )


def _unlabelled_rows(texts: list[str], labelled: list[str], n: int, source: str) -> list[int]:
    """The rows of ``texts`` to choose from: a text's first row, unless it is ``labelled``
    (both compared after stripping spaces); refused when fewer than ``n``."""
    skip = {t.strip() for t in labelled}
    rows: list[int] = []
    seen: set[str] = set()
    for row, text in enumerate(texts):
        key = text.strip()
        if key not in seen and key not in skip:
            rows.append(row)
        seen.add(key)
    if len(rows) < n:
        raise BadInputError(
            f"{source}: {len(rows)} text{'s' if len(rows) != 1 else ''} not yet labelled "
            f"(of {len(texts)}, duplicates counted once); ask for at most {len(rows)}, or "
            "add texts to the pool"
        )
    return rows


def choose(
    X: np.ndarray, n: int, *, scores: np.ndarray | None = None, seed: int = 0
) -> list[tuple[int, float | None]]:
    """The ``n`` rows of ``X`` to label next, as (index, uncertainty or None), first first.

    What :func:`suggest` does once the candidates are vectors, for callers that hold the
    vectors already (``bertprobe label``). With ``scores`` (each row's :func:`uncertainty`
    under the current model): the most uncertain row of each of ``n`` clusters of the
    ``10 * n`` most uncertain, most uncertain first. Without (a cold start): the row nearest
    each of ``n`` cluster centres of all of ``X``, the largest cluster's first.

    Examples
    --------
    >>> X = np.array([[0.0], [0.1], [0.3], [5.0], [5.1], [5.3]])
    >>> sorted(i for i, _ in choose(X, 2))
    [1, 4]
    >>> choose(X, 1, scores=np.array([0.1, 0.9, 0.2, 0.3, 0.0, 0.0]))
    [(1, 0.9)]
    """
    if not 1 <= n <= len(X):
        raise BadInputError(
            f"n={n}: choose from 1 to {len(X)} of the {len(X)} candidates", param="n"
        )
    if scores is None:
        return [(i, None) for i in _representatives(X, n, seed)]
    scores = np.asarray(scores, dtype=float)
    return [(i, float(scores[i])) for i in _uncertain_then_diverse(X, scores, n, seed)]


def typical(
    X: np.ndarray, n: int, *, labelled: np.ndarray | None = None, seed: int = 0
) -> list[int]:
    """TypiClust's ``n`` rows of ``X``: the most typical row of each of the largest groups no
    ``labelled`` vector falls in, the largest group's first.

    ``X`` and ``labelled`` are clustered together into as many groups as there will be labels
    (``len(labelled) + n``); a row's typicality is the inverse of its mean distance to its
    ``TYPICALITY_NEIGHBOURS`` nearest rows of its group. Groups of fewer than
    ``MIN_TYPICAL_GROUP`` rows are taken from only when the larger ones run out.

    Examples
    --------
    >>> X = np.array([[0.0], [0.1], [0.2], [5.0], [5.1], [5.2], [9.0]])
    >>> sorted(typical(X, 2))
    [1, 4]
    >>> typical(X, 1, labelled=np.array([[0.05]]))
    [4]
    """
    if not 1 <= n <= len(X):
        raise BadInputError(
            f"n={n}: choose from 1 to {len(X)} of the {len(X)} candidates", param="n"
        )
    covering = np.zeros((0, X.shape[1])) if labelled is None else np.asarray(labelled)
    everything = np.vstack([X, covering])
    groups = min(len(everything), n + len(covering))
    clusters, _ = _kmeans(everything, groups, seed)
    covered = set(clusters[len(X) :].tolist())
    pool_clusters = clusters[: len(X)]
    sizes = np.bincount(pool_clusters, minlength=groups)
    # Largest uncovered group first; groups too small to judge typicality by come last.
    order = sorted(
        (c for c in range(groups) if c not in covered and sizes[c]),
        key=lambda c: (sizes[c] < MIN_TYPICAL_GROUP, -sizes[c], c),
    )
    picks = [_most_typical(X, np.flatnonzero(pool_clusters == c)) for c in order[:n]]
    # Labelled texts cover more groups than were left for n: the most typical of the rest.
    if len(picks) < n:
        rest = np.setdiff1d(np.arange(len(X)), picks)
        density = _typicality(X[rest])
        picks += [int(rest[i]) for i in np.argsort(-density, kind="stable")[: n - len(picks)]]
    return picks


def _typicality(X: np.ndarray) -> np.ndarray:
    """Each row's inverse mean distance to its nearest rows (up to TYPICALITY_NEIGHBOURS)."""
    if len(X) < 2:
        return np.zeros(len(X))
    from sklearn.neighbors import NearestNeighbors

    k = min(TYPICALITY_NEIGHBOURS, len(X) - 1)
    distances, _ = NearestNeighbors(n_neighbors=k + 1).fit(X).kneighbors(X)
    return 1.0 / (distances[:, 1:].mean(axis=1) + 1e-12)  # column 0: the row itself


def _most_typical(X: np.ndarray, members: np.ndarray) -> int:
    return int(members[np.argmax(_typicality(X[members]))])


@dataclass(frozen=True)
class Pool:
    """A pool's texts as read, with their labels when its rows carry them.

    Attributes
    ----------
    texts : list of str
        The texts, in file order (header and skipped empty rows not counted).
    labels : list or None
        Each text's label, or None when the pool is unlabelled.
    source : str
        What to call the pool in messages (its path, or ``"pool"``).
    line_numbers : list of int
        Each text's 1-based line (or row) in the file, for messages.
    label_column : str
        How the label column was found, for messages (``"its label column"`` or the name).
    """

    texts: list[str]
    labels: list[Label] | None
    source: str
    line_numbers: list[int]
    label_column: str = "its label column"


def read_pool(pool: Sequence[str] | str | Path, reading: ReadOptions = ReadOptions()) -> Pool:
    """The pool's texts, and its labels if its rows carry them (see :class:`Pool`).

    A file whose rows all have a second column is read as labelled, unless that column holds
    a different value on every row (an id, not a label: without a header the reader cannot
    tell them apart). A file written by ``suggest --out`` and not yet filled in (empty label
    cells) is unlabelled.
    """
    if not isinstance(pool, str | Path):
        texts = list(pool)
        bad = [i for i, t in enumerate(texts) if not isinstance(t, str) or not t.strip()]
        if bad:
            raise BadInputError(f"pool: text {bad[0]} is empty or not a string")
        if not texts:
            raise BadInputError("pool: no texts; give the unlabelled texts to choose from")
        return Pool(texts, None, "pool", list(range(1, len(texts) + 1)))
    read = read_texts(
        pool,
        text_col=reading.text_col,
        header=reading.header,
        drop_empty=reading.drop_empty,
        max_field_chars=reading.max_field_chars,
    )
    unlabelled = Pool(read.texts, None, read.source, read.line_numbers)
    try:
        as_labelled = read_labelled(
            pool,
            text_col=reading.text_col,
            label_col=reading.label_col,
            header=reading.header,
            drop_empty=reading.drop_empty,
            max_field_chars=reading.max_field_chars,
        )
    except BadInputError:
        # One column, or rows without a label (a file written by `suggest --out` and not yet
        # filled in): texts to choose from.
        return unlabelled
    labels = as_labelled.labels or []
    # A column with a different value on every row is an id, not a label: without a header
    # the reader cannot tell them apart, and an id column must not make the pool unusable.
    if reading.label_col is None and len(labels) > 1 and len(set(map(str, labels))) == len(labels):
        return unlabelled
    column = repr(reading.label_col) if reading.label_col is not None else "its label column"
    return Pool(as_labelled.texts, labels, read.source, as_labelled.line_numbers, column)


def _pool_texts(pool: Sequence[str] | str | Path, reading: ReadOptions) -> tuple[list[str], str]:
    """The pool's texts and what to call it in errors; a file of labelled rows is refused."""
    read = read_pool(pool, reading)
    if read.labels is None:
        return read.texts, read.source
    raise BadInputError(
        f"{read.source} holds labels in {read.label_column} (e.g. {read.labels[0]!r} on line "
        f"{read.line_numbers[0]}); give unlabelled texts, or pass them as labelled= "
        "to skip them",
        param="labelled",
    )


def _labelled_texts(labelled: Sequence[str] | str | Path | None, reading: ReadOptions) -> list[str]:
    if labelled is None:
        return []
    if not isinstance(labelled, str | Path):
        return [t for t in labelled if isinstance(t, str)]
    # Only the text column matters; the labels may be of any kind (or not yet filled in).
    return read_texts(
        labelled,
        text_col=reading.text_col,
        header=reading.header,
        drop_empty=True,
        max_field_chars=reading.max_field_chars,
    ).texts


def _kmeans(X: np.ndarray, n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Cluster labels and centres of ``X`` in ``n`` groups (seeded, so repeatable)."""
    from sklearn.cluster import KMeans
    from sklearn.exceptions import ConvergenceWarning

    with warnings.catch_warnings():
        # Identical vectors (texts the encoder reads alike) leave fewer distinct points than
        # clusters; the callers fill the empty clusters' places, so the warning says nothing.
        warnings.simplefilter("ignore", ConvergenceWarning)
        km = KMeans(n_clusters=n, random_state=seed, n_init=3).fit(X)
    return km.labels_, km.cluster_centers_


def _uncertain_then_diverse(X: np.ndarray, scores: np.ndarray, n: int, seed: int) -> list[int]:
    """Indexes of ``n`` texts: the most uncertain of each of ``n`` clusters of the
    ``10 * n`` most uncertain, most uncertain first."""
    # Stable sort, so equal scores keep pool order and the result does not depend on chance.
    order = np.argsort(-scores, kind="stable")
    top = order[: min(len(order), CANDIDATES_PER_PICK * n)]
    if len(top) <= n:
        picks = list(top)
    else:
        clusters, _ = _kmeans(X[top], n, seed)
        picks = []
        for cluster in range(n):
            members = top[clusters == cluster]
            if len(members):
                picks.append(members[0])  # `top` is most uncertain first
        # An empty cluster (identical vectors): its place goes to the next most uncertain.
        chosen = set(picks)
        picks += [i for i in top if i not in chosen][: n - len(picks)]
    return [int(i) for i in sorted(picks, key=lambda i: (-scores[i], i))]


def _representatives(X: np.ndarray, n: int, seed: int) -> list[int]:
    """Indexes of ``n`` texts: the one nearest each of ``n`` cluster centres, the largest
    cluster's first."""
    if len(X) == n:
        return list(range(n))
    clusters, centres = _kmeans(X, n, seed)
    distance = np.linalg.norm(X - centres[clusters], axis=1)
    picks: list[tuple[int, int]] = []  # (cluster size, index)
    for cluster in range(n):
        members = np.flatnonzero(clusters == cluster)
        if len(members):
            nearest = members[np.argmin(distance[members])]
            picks.append((len(members), int(nearest)))
    chosen = {i for _, i in picks}
    # An empty cluster (identical vectors): its place goes to the text nearest its own centre.
    for i in np.argsort(distance, kind="stable"):
        if len(picks) == n:
            break
        if int(i) not in chosen:
            picks.append((0, int(i)))
            chosen.add(int(i))
    return [i for _, i in sorted(picks, key=lambda p: (-p[0], p[1]))]
