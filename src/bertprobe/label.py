"""Label a pool of texts in the browser, the probe retrained as the answers come in.

:class:`LabellingSession` is the library part: it reads the pool, embeds it once (vectors held
in memory, and in the embedding cache for the next start), hands out texts a batch at a time
(chosen as ``suggest`` chooses them: k-means representatives at a cold start, then uncertainty
under the current probe, spread by clustering), and takes answers, skips and undos. Every
answer is appended to the ``out`` file at once and synced to disk, so a crash or Ctrl-C loses
nothing; opening a session on the same ``out`` again skips the texts labelled there. After
each batch a :class:`~bertprobe.heads.probe.LinearProbe` is fitted on the cached vectors in a
background thread (about a second on a few hundred rows); its cross-validated accuracy is the
estimate the page shows, and its uncertainty chooses the rest of the batch and the next.

:func:`create_label_app` is the page and its small JSON API (FastAPI, the service's stack);
``bertprobe label`` runs it on uvicorn.

The ``out`` file is a normal training file: a ``text<TAB>label`` header, then one row an
answer (a text's tabs and line breaks become spaces).

Example:
    >>> session = LabellingSession("pool.txt", ["pos", "neg"], "labelled.tsv")  # doctest: +SKIP
    >>> item = session.current()  # doctest: +SKIP
    >>> session.answer(item.row, "pos")  # doctest: +SKIP
"""

# No `from __future__ import annotations`: FastAPI reads the handlers' annotations at run time,
# and the request bodies are classes local to create_label_app.
import os
import re
import threading
import time
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from importlib.resources import files
from pathlib import Path
from typing import Any, Literal

import numpy as np

from bertprobe.core.errors import BadInputError
from bertprobe.core.extras import needs_extra
from bertprobe.data.files import ReadOptions, read_labelled
from bertprobe.encoders.encode import embed
from bertprobe.encoders.options import EncoderOptions
from bertprobe.heads.probe import LinearProbe
from bertprobe.heads.zeroshot import ZeroShotHead
from bertprobe.model.suggest import Pool, choose, read_pool, uncertainty
from bertprobe.training.zeroshot import ZeroShot, zero_shot_head

__all__ = [
    "MIN_PER_LABEL",
    "Estimate",
    "Item",
    "LabellingSession",
    "check_labels",
    "proposer_options",
    "create_label_app",
    "run_label_page",
]

# Answers each label needs before the probe is fitted and its CV estimate shown; the folds are
# this many or more, up to MAX_FOLDS (every fold must hold each label once).
MIN_PER_LABEL = 3
MAX_FOLDS = 5
HEADER = "text\tlabel\n"
_INT = re.compile(r"[+-]?\d+")


def _clean(text: str) -> str:
    """A text as one TSV cell, and the key texts are matched on: whitespace runs as one space."""
    return " ".join(text.split())


def check_labels(labels: Sequence[str] | str) -> tuple[str, ...]:
    """The label names, checked: at least two, distinct, each a non-empty TSV cell.

    A comma list is split. A name that a training file would read back as another (``01``
    reads as the number 1) is refused.

    Examples
    --------
    >>> check_labels("pos, neg")
    ('pos', 'neg')
    """
    parts = labels.split(",") if isinstance(labels, str) else list(labels)
    names = tuple(str(p).strip() for p in parts)
    listed = ",".join(names)
    if any(not name for name in names):
        raise BadInputError(
            f"labels={listed}: a label is empty; give the names separated by commas, e.g. pos,neg",
            param="labels",
        )
    odd = [name for name in names if any(c in name for c in "\t\r\n\"'") or name != _clean(name)]
    if odd:
        raise BadInputError(
            f"labels={listed}: {odd[0]!r} holds a tab, quote or line break; a label is one word "
            "or a few, e.g. pos,neg",
            param="labels",
        )
    altered = [name for name in names if _INT.fullmatch(name) and str(int(name)) != name]
    if altered:
        raise BadInputError(
            f"labels={listed}: {altered[0]!r} reads back from a file as {int(altered[0])}; "
            f"write it as {int(altered[0])}",
            param="labels",
        )
    twice = [name for name, count in Counter(names).items() if count > 1]
    if twice:
        raise BadInputError(
            f"labels={listed}: {twice[0]!r} is given twice; name each label once", param="labels"
        )
    if len(names) < 2:
        raise BadInputError(
            f"labels={listed}: one label leaves nothing to choose; give at least two, e.g. pos,neg",
            param="labels",
        )
    return names


def check_session_options(labels: Sequence[str] | str, n: int, seed: int = 0) -> tuple[str, ...]:
    """The checks :class:`LabellingSession` makes before it reads anything; the label names.

    Cheap, so a caller can make them before its own slow steps (``bertprobe label`` does,
    before it binds its port): ``n`` at least 1, a ``seed`` k-means takes, and the labels as
    :func:`check_labels` checks them.

    Examples
    --------
    >>> check_session_options("pos,neg", n=10)
    ('pos', 'neg')
    """
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise BadInputError(f"n={n}: ask for at least 1 text a batch", param="n")
    if not 0 <= seed < 2**32:
        raise BadInputError(f"seed={seed}: use a whole number from 0 to {2**32 - 1}", param="seed")
    return check_labels(labels)


@dataclass(frozen=True)
class Item:
    """A text to label.

    Attributes
    ----------
    row : int
        Its index among the session's distinct pool texts (:attr:`LabellingSession.texts`).
    text : str
        The text, as read (stripped).
    reason : {"uncertain", "representative"}
        Why it was chosen: the current probe is unsure of it, or (no probe yet) it stands for
        a cluster of the pool.
    score : float or None
        The probe's uncertainty, 0 (sure) to 1 (a coin toss); None at a cold start.
    proposed : str
        The label the page pre-selects: the current probe's, or before there is one the
        zero-shot head's (from the labels' names or descriptions).
    proposed_by : {"model", "zero-shot"}
        Which of the two proposed it.
    """

    row: int
    text: str
    reason: Literal["uncertain", "representative"]
    score: float | None
    proposed: str
    proposed_by: Literal["model", "zero-shot"]


@dataclass(frozen=True)
class Estimate:
    """The probe's cross-validated accuracy on the answers so far.

    Attributes
    ----------
    accuracy : float
        Mean accuracy over the held-out folds, at the C the folds chose.
    n : int
        Labelled texts it was fitted on.
    folds : int
        Cross-validation folds (fewer than 5 while a label has fewer than 5 answers).
    seconds : float
        How long the fit took.
    """

    accuracy: float
    n: int
    folds: int
    seconds: float


@dataclass
class _Answer:
    row: int
    label: str
    offset: int | None  # where its line starts in `out`; None: read from `out` at the start
    data: bytes = b""
    proposed: str | None = None  # what the page proposed when it was answered


class LabellingSession:
    """Texts from a pool to label one at a time, the answers kept in ``out`` as they come.

    Parameters
    ----------
    pool : str, Path or list of str
        The texts to label: a file (one text a line, or a table with a text column, read
        with ``reading``) or a list. Duplicates count once.
    labels : list of str, or a comma list
        The label names (at least two). The page gives the first nine the keys 1 to 9.
    out : str or Path
        The training file the answers go to, ``text<TAB>label`` with a header. An existing
        one is read first: its texts are not asked again and its answers train the probe (its
        labels must be among ``labels``). Texts in it that are not in the pool train the probe
        too.
    encoding : EncoderOptions
        The encoder and pooling that make the vectors (default: the bundled MiniLM, mean).
    n : int
        Texts a batch: the probe is refitted after each, and the next is chosen with it.
    seed : int
        Seeds the clustering that spreads a batch over the pool.
    reading : ReadOptions
        How the pool file is read (``text_col``, ``label_col``, ``drop_empty``, ...).
    use_pool_labels : bool
        A pool whose rows carry labels is refused unless this is set; then those labels count
        as answers: copied once into ``out`` (those not there already) and not asked.
    descriptions : mapping, optional
        Each label to its description, or a list of several, for the zero-shot head that
        proposes a label before the probe can (default: each label's own name).
    template : str
        Where each description goes in the text embedded (see
        :class:`~bertprobe.training.zeroshot.ZeroShot`).

    Raises
    ------
    BadInputError
        ``n`` below 1; fewer than two labels; a pool with labels (without
        ``use_pool_labels``) or with labels not among ``labels``; fewer distinct texts than
        ``n``; an ``out`` holding other labels, or the pool file itself; descriptions of
        other labels than ``labels``.

    Each text comes with a proposed label (:attr:`Item.proposed`), the page's pre-selected
    answer: agreeing is one key. :attr:`agreed` and :attr:`corrected` count the answers that
    took the proposal and those that changed it.
    """

    def __init__(
        self,
        pool: Sequence[str] | str | Path,
        labels: Sequence[str] | str,
        out: str | Path,
        *,
        encoding: EncoderOptions = EncoderOptions("minilm", pooling="mean"),
        n: int = 10,
        seed: int = 0,
        reading: ReadOptions = ReadOptions(),
        use_pool_labels: bool = False,
        descriptions: Mapping[str, str | Sequence[str]] | None = None,
        template: str = "{}",
    ) -> None:
        self.labels = check_session_options(labels, n, seed)
        zero_shot = proposer_options(self.labels, descriptions, template)
        self.out = Path(out)
        if self.out.suffix.lower() in (".csv", ".json", ".jsonl", ".ndjson", ".parquet"):
            raise BadInputError(
                f"out={self.out}: the answers are written as text<TAB>label lines; give a "
                ".tsv file",
                param="out",
            )
        self.n = n
        self.seed = seed
        if (
            isinstance(pool, str | Path)
            and self.out.exists()
            and Path(pool).exists()
            and self.out.resolve() == Path(pool).resolve()
        ):
            raise BadInputError(
                f"out={self.out} is the pool file; write the answers to a file of their own",
                param="out",
            )
        read = read_pool(pool, reading)
        _check_pool_labels(read, self.labels, use_pool_labels)
        # The distinct texts, pool first; `row` is an index into them.
        self.texts: list[str] = []
        self._row_of: dict[str, int] = {}
        pool_labels: dict[int, str] = {}
        for i, text in enumerate(read.texts):
            key = _clean(text)
            if key not in self._row_of:
                self._row_of[key] = len(self.texts)
                self.texts.append(text.strip())
                if read.labels is not None:
                    pool_labels[self._row_of[key]] = str(read.labels[i])
        self.pool_size = len(self.texts)
        if self.pool_size < n:
            raise BadInputError(
                f"{read.source}: {self.pool_size} distinct text"
                f"{'s' if self.pool_size != 1 else ''}, fewer than a batch of n={n}; ask for "
                f"at most {self.pool_size} a batch, or add texts to the pool",
                param="n",
            )
        self._lock = threading.RLock()
        self._fit_lock = threading.Lock()
        self._answers: dict[int, _Answer] = {}
        self._history: list[tuple[Literal["answer", "skip"], int]] = []
        self._queue: list[int] = []
        self._why: dict[int, tuple[Literal["uncertain", "representative"], float | None]] = {}
        self._proposal: dict[int, tuple[str, Literal["model", "zero-shot"]]] = {}
        self.agreed = 0
        self.corrected = 0
        self._skipped: set[int] = set()
        self._batches = 0
        self._version = 0  # bumped by every answer and undo
        self._fitted_version = -1
        self._kicked_at = 0  # answers when the last background fit was asked for
        self.model: LinearProbe | None = None
        self.estimate: Estimate | None = None
        self.estimates: list[Estimate] = []
        self.fit_error: str | None = None
        self._wanted = False
        self._thread: threading.Thread | None = None

        self.resumed = self._read_out()
        copied = [(row, label) for row, label in pool_labels.items() if row not in self._answers]
        if copied:
            lines = "".join(f"{_clean(self.texts[row])}\t{label}\n" for row, label in copied)
            self._append(lines)
            for row, label in copied:
                self._answers[row] = _Answer(row, label, None)
        self.from_pool = len(copied)
        self.X, self.zero_shot = _embed_pool(self.texts, encoding, zero_shot)
        self._kicked_at = len(self._answers)
        if self.waiting_for() is None:
            self.retrain()  # a resumed session starts with its probe and estimate

    # --- the out file -------------------------------------------------------------------------

    def _read_out(self) -> int:
        """Take the answers in ``out`` (if it exists); returns how many."""
        if not self.out.exists():
            return 0
        if self.out.is_dir():
            raise BadInputError(
                f"out={self.out} is a folder; give the path of a file to write", param="out"
            )
        raw = self.out.read_bytes()
        if not raw.strip() or raw.decode("utf-8", "replace").strip().lower() == HEADER.strip():
            return 0
        if not raw.endswith(b"\n"):
            # A last line without its end (written by hand, or cut short): end it, so the next
            # answer starts a line of its own. Nothing is removed.
            self._write(b"\n")
        data = read_labelled(self.out)
        listed = ",".join(self.labels)
        assert data.labels is not None
        for text, label, line in zip(data.texts, data.labels, data.line_numbers, strict=True):
            if str(label) not in self.labels:
                raise BadInputError(
                    f"{self.out}: line {line} has the label {str(label)!r}, not one of "
                    f"labels={listed}; give the labels it holds, or write to another out= file",
                    param=("labels", "out"),
                )
            key = _clean(text)
            row = self._row_of.get(key)
            if row is None:  # labelled before, not in this pool: trains the probe all the same
                row = self._row_of[key] = len(self.texts)
                self.texts.append(text.strip())
            self._answers[row] = _Answer(row, str(label), None)  # a later line wins
        return len(data.texts)

    def _write(self, data: bytes) -> int:
        """Append ``data`` to ``out`` and sync it to disk; returns the offset it starts at."""
        new = not self.out.exists()
        if new:
            self.out.parent.mkdir(parents=True, exist_ok=True)
        with open(self.out, "ab") as fh:
            offset = fh.seek(0, os.SEEK_END)
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        if new:
            _sync_folder(self.out.parent)
        return offset

    def _append(self, lines: str) -> tuple[int, bytes]:
        """Append answer lines (the header first, in an empty file); (offset, bytes written)."""
        size = self.out.stat().st_size if self.out.exists() else 0
        data = ((HEADER if size == 0 else "") + lines).encode("utf-8")
        return self._write(data), data

    # --- answers ------------------------------------------------------------------------------

    def current(self) -> Item | None:
        """The text to label now (the next batch is chosen when one is done); None when every
        pool text is labelled."""
        with self._lock:
            if not self._queue:
                self._next_batch()
            if not self._queue:
                return None
            return self._item(self._queue[0])

    def next_batch(self) -> list[Item]:
        """Choose the next batch now (dropping what is left of this one) and return it."""
        with self._lock:
            self._queue = []
            self._next_batch()
            return [self._item(row) for row in self._queue]

    def answer(self, row: int, label: str) -> None:
        """Label pool text ``row``: its line is appended to ``out`` and synced before this
        returns. Ends a batch: the probe is refitted in the background."""
        with self._lock:
            if label not in self.labels:
                raise BadInputError(
                    f"label {label!r} is not one of labels={','.join(self.labels)}", param="labels"
                )
            self._check_open_row(row)
            offset, data = self._append(f"{_clean(self.texts[row])}\t{label}\n")
            proposed = self._proposal.get(row, (None, None))[0]
            self._answers[row] = _Answer(row, label, offset, data, proposed)
            if proposed is not None:
                self.agreed += proposed == label
                self.corrected += proposed != label
            self._history.append(("answer", row))
            self._skipped.discard(row)
            self._drop_from_queue(row)
            self._version += 1
            if not self._queue or len(self._answers) - self._kicked_at >= self.n:
                self._retrain_in_background()

    def skip(self, row: int) -> None:
        """Pass over pool text ``row`` for now: it is asked again only when nothing else is
        left (or after :meth:`undo`)."""
        with self._lock:
            self._check_open_row(row)
            self._skipped.add(row)
            self._history.append(("skip", row))
            self._drop_from_queue(row)
            if not self._queue:
                self._retrain_in_background()

    def undo(self) -> int | None:
        """Take back the last answer or skip of this session; its text is asked next. An
        answer's line is cut from the end of ``out`` (refused if the file was changed since).
        Returns the row, or None when there is nothing to take back."""
        with self._lock:
            if not self._history:
                return None
            kind, row = self._history[-1]
            if kind == "answer":
                answer = self._answers[row]
                assert answer.offset is not None
                with open(self.out, "r+b") as fh:
                    fh.seek(answer.offset)
                    if fh.read() != answer.data:
                        raise BadInputError(
                            f"{self.out} changed after the last answer was written; undo "
                            "would cut what is there now, so it is left as it is"
                        )
                    fh.truncate(answer.offset)
                    fh.flush()
                    os.fsync(fh.fileno())
                if answer.proposed is not None:
                    self.agreed -= answer.proposed == answer.label
                    self.corrected -= answer.proposed != answer.label
                del self._answers[row]
                self._version += 1
                self._kicked_at = min(self._kicked_at, len(self._answers))
            else:
                self._skipped.discard(row)
            self._history.pop()
            self._drop_from_queue(row)
            self._queue.insert(0, row)
            return row

    def _check_open_row(self, row: int) -> None:
        if isinstance(row, bool) or not isinstance(row, int | np.integer):
            raise BadInputError(f"row {row!r}: give a text's row number")
        if not 0 <= row < self.pool_size:
            raise BadInputError(f"row {row}: the pool's rows are 0 to {self.pool_size - 1}")
        if row in self._answers:
            raise BadInputError(
                f"row {row} is labelled already ({self._answers[row].label!r}); undo to change it"
            )

    def _drop_from_queue(self, row: int) -> None:
        if row in self._queue:
            self._queue.remove(row)

    def _open_rows(self, exclude: Sequence[int] = ()) -> list[int]:
        left = set(exclude) | self._skipped
        return [r for r in range(self.pool_size) if r not in self._answers and r not in left]

    def _next_batch(self) -> None:
        candidates = self._open_rows()
        if not candidates and self._skipped:  # only skipped texts are left: ask them again
            self._skipped.clear()
            candidates = self._open_rows()
        if not candidates:
            return
        self._queue = self._pick(candidates, min(self.n, len(candidates)))
        self._batches += 1

    def _pick(self, candidates: list[int], k: int) -> list[int]:
        X = self.X[candidates]
        scores = None
        if self.model is not None:
            scores = uncertainty(self.model.predict_proba(X))
        picks = choose(X, k, scores=scores, seed=self.seed)
        for i, score in picks:
            reason: Literal["uncertain", "representative"] = (
                "representative" if score is None else "uncertain"
            )
            self._why[candidates[i]] = (reason, score)
        return [candidates[i] for i, _ in picks]

    def _propose(self, row: int) -> tuple[str, Literal["model", "zero-shot"]]:
        """The label to pre-select for ``row``: the probe's, or the zero-shot head's before
        there is a probe. Kept once shown, so the count of agreements is of what was shown."""
        if row not in self._proposal:
            vector = self.X[row : row + 1]
            self._proposal[row] = (
                (str(self.zero_shot.predict(vector)[0]), "zero-shot")
                if self.model is None
                else (str(self.model.predict(vector)[0]), "model")
            )
        return self._proposal[row]

    def _item(self, row: int) -> Item:
        reason, score = self._why.get(row, ("representative", None))
        proposed, by = self._propose(row)
        return Item(row, self.texts[row], reason, score, proposed, by)

    # --- the probe ----------------------------------------------------------------------------

    def counts(self) -> dict[str, int]:
        """Answers per label (from ``out``, the pool and this session), in ``labels`` order."""
        with self._lock:
            have = Counter(a.label for a in self._answers.values())
            return {label: have[label] for label in self.labels}

    def waiting_for(self) -> str | None:
        """What the probe still needs before it can be fitted, or None when it can be."""
        counts = self.counts()
        short = {label: n for label, n in counts.items() if n < MIN_PER_LABEL}
        if not short:
            return None
        have = ", ".join(f"{label} {n}" for label, n in counts.items())
        return f"{MIN_PER_LABEL} answers of each label before a CV estimate (so far: {have})"

    def retrain(self) -> Estimate | None:
        """Fit the probe on every answer so far (on the held vectors) and return its CV
        estimate; None while a label has too few answers (:meth:`waiting_for`). The rest of
        the current batch is chosen again with the new probe."""
        with self._fit_lock:
            with self._lock:
                if self.waiting_for() is not None:
                    return None
                rows = sorted(self._answers)
                y = np.array([self._answers[r].label for r in rows])
                version = self._version
            folds = min(MAX_FOLDS, min(Counter(y.tolist()).values()))
            start = time.perf_counter()
            probe = LinearProbe("coarse", cv=folds).fit(self.X[rows], y)
            estimate = Estimate(probe.cv_accuracy_, len(rows), folds, time.perf_counter() - start)
            with self._lock:
                if version < self._fitted_version:
                    return estimate  # a later fit landed first
                self.model, self.estimate = probe, estimate
                self.estimates.append(estimate)
                shown = self._queue[:1]  # the text on the page keeps the proposal it shows
                self._proposal = {r: p for r, p in self._proposal.items() if r in shown}
                self._fitted_version = version
                if len(self._queue) > 1:  # the rest of this batch, chosen with the new probe
                    head = self._queue[0]
                    candidates = self._open_rows(exclude=[head])
                    rest = min(len(self._queue) - 1, len(candidates))
                    if rest:
                        self._queue = [head, *self._pick(candidates, rest)]
            return estimate

    @property
    def training(self) -> bool:
        """Whether a background fit is running or asked for."""
        with self._lock:
            return self._wanted or (self._thread is not None and self._thread.is_alive())

    def _retrain_in_background(self) -> None:
        if self._version == self._fitted_version or self.waiting_for() is not None:
            return
        self._kicked_at = len(self._answers)
        self._wanted = True
        if self._thread is None or not self._thread.is_alive():
            self._thread = threading.Thread(
                target=self._retrain_loop, name="bertprobe-label-fit", daemon=True
            )
            self._thread.start()

    def _retrain_loop(self) -> None:
        while True:
            with self._lock:
                if not self._wanted:
                    return
                self._wanted = False
            try:
                self.retrain()
                self.fit_error = None
            except Exception as exc:  # noqa: BLE001 - shown on the page; labelling goes on
                self.fit_error = f"{type(exc).__name__}: {exc}"

    def wait(self, timeout: float | None = None) -> None:
        """Wait for a background fit to finish (for tests and a clean exit)."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            thread = self._thread
            if thread is not None:
                thread.join(None if deadline is None else max(0.0, deadline - time.monotonic()))
            if not self.training or (deadline is not None and time.monotonic() >= deadline):
                return

    # --- what the page shows ------------------------------------------------------------------

    @property
    def labelled(self) -> int:
        """Pool texts labelled (texts of ``out`` outside the pool not counted)."""
        with self._lock:
            return sum(1 for row in self._answers if row < self.pool_size)

    def state(self) -> dict[str, Any]:
        """Everything the page shows, as JSON-ready values."""
        item = self.current()
        with self._lock:
            estimate = self.estimate
            return {
                "labels": list(self.labels),
                "counts": self.counts(),
                "labelled": self.labelled,
                "pool": self.pool_size,
                "answers": len(self._answers),
                "skipped": len(self._skipped),
                "item": None
                if item is None
                else {
                    "row": item.row,
                    "text": item.text,
                    "reason": item.reason,
                    "score": item.score,
                    "proposed": item.proposed,
                    "proposed_by": item.proposed_by,
                },
                "agreed": self.agreed,
                "corrected": self.corrected,
                "batch": self._batches,
                "left_in_batch": len(self._queue),
                "batch_size": self.n,
                "estimate": None if estimate is None else _estimate_record(estimate),
                "history": [_estimate_record(e) for e in self.estimates],
                "training": self.training,
                "waiting_for": self.waiting_for(),
                "fit_error": self.fit_error,
                "can_undo": bool(self._history),
                "out": str(self.out),
            }


def _check_pool_labels(read: Pool, labels: tuple[str, ...], use_pool_labels: bool) -> None:
    """A pool whose rows carry labels: refused unless ``use_pool_labels``, and then each of
    its labels must be one the session offers."""
    if read.labels is None:
        return
    if not use_pool_labels:
        raise BadInputError(
            f"{read.source} holds labels in {read.label_column} (e.g. "
            f"{read.labels[0]!r} on line {read.line_numbers[0]}); give unlabelled "
            "texts, or pass use_pool_labels=True to count those labels as answers",
            param="use_pool_labels=True",
        )
    for label, line in zip(read.labels, read.line_numbers, strict=True):
        if str(label) not in labels:
            raise BadInputError(
                f"{read.source}: line {line} has the label {str(label)!r}, not one of "
                f"labels={','.join(labels)}; add it to the labels or relabel the pool",
                param="labels",
            )


def _embed_pool(
    texts: list[str], encoding: EncoderOptions, zero_shot: ZeroShot
) -> tuple[np.ndarray, ZeroShotHead]:
    """The pool's vectors (through the embedding cache), and the zero-shot head that proposes
    labels until the probe can: the labels' names already classify
    (:mod:`bertprobe.heads.zeroshot`), and agreeing with a right proposal is one key."""
    with encoding.open_cache() as cache:
        encoder = encoding.load()
        X, _ = embed(texts, encoder, encoding.spec, encoding.run, cache=cache)
        described, _ = embed(
            [t for given in zero_shot.texts.values() for t in given],
            encoder, encoding.spec, encoding.run, cache=cache,
        )  # fmt: skip
    return X, zero_shot_head(zero_shot, X, described, False)


def proposer_options(
    labels: tuple[str, ...], descriptions: Mapping[str, str | Sequence[str]] | None, template: str
) -> ZeroShot:
    """The zero-shot start that proposes labels: ``descriptions`` (each label's name where
    there are none), refused when they name a label the session does not offer."""
    given = dict(descriptions or {})
    unknown = [str(label) for label in given if str(label) not in labels]
    if unknown:
        raise BadInputError(
            f"descriptions= describes {unknown[0]!r}, not one of labels={','.join(labels)}; "
            "describe the labels the page offers",
            param=("descriptions", "labels"),
        )
    return ZeroShot(
        descriptions={label: given.get(label, label) for label in labels}, template=template
    )


def _estimate_record(estimate: Estimate) -> dict[str, Any]:
    return {
        "accuracy": estimate.accuracy,
        "n": estimate.n,
        "folds": estimate.folds,
        "seconds": round(estimate.seconds, 3),
    }


def _sync_folder(folder: Path) -> None:
    """Sync a folder's entries (a new file's name) to disk, where the system allows it."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass  # not every system syncs a folder; the file's own data is synced already
    finally:
        os.close(fd)


def create_label_app(session: LabellingSession) -> Any:
    """The labelling page at ``/`` and its JSON API: ``GET /api/state``, ``POST /api/answer``
    {"row", "label"}, ``POST /api/skip`` {"row"}, ``POST /api/undo``; each answers with the
    state. A refused action (a row labelled already, a label not offered) is 409 with a
    ``detail`` line. The handlers are plain functions, run in the server's thread pool: a
    file sync or a batch choice never holds up the event loop."""
    with needs_extra("serve"):
        from fastapi import FastAPI, Request
        from fastapi.responses import HTMLResponse, JSONResponse, Response
        from pydantic import BaseModel, ConfigDict

    class Answer(BaseModel):
        model_config = ConfigDict(extra="forbid")
        row: int
        label: str

    class Skip(BaseModel):
        model_config = ConfigDict(extra="forbid")
        row: int

    app = FastAPI(title="bertprobe label", docs_url=None, redoc_url=None)
    page = (files("bertprobe") / "templates" / "label.html").read_text(encoding="utf-8")

    @app.exception_handler(BadInputError)
    def refused(request: Request, exc: BadInputError) -> JSONResponse:
        return JSONResponse({"detail": str(exc)}, status_code=409)

    @app.get("/", response_class=HTMLResponse)
    def index() -> HTMLResponse:
        return HTMLResponse(page, headers={"Cache-Control": "no-store"})

    @app.get("/favicon.ico", include_in_schema=False)
    def favicon() -> Response:
        return Response(status_code=204)

    @app.get("/api/state")
    def state() -> dict[str, Any]:
        return session.state()

    @app.post("/api/answer")
    def answer(body: Answer) -> dict[str, Any]:
        session.answer(body.row, body.label)
        return session.state()

    @app.post("/api/skip")
    def skip(body: Skip) -> dict[str, Any]:
        session.skip(body.row)
        return session.state()

    @app.post("/api/undo")
    def undo() -> dict[str, Any]:
        session.undo()
        return session.state()

    return app


def run_label_page(session: LabellingSession, sock: Any, *, host: str, port: int) -> None:
    """Serve the page on ``sock`` (bound already) until Ctrl-C or SIGTERM."""
    with needs_extra("serve"):
        import uvicorn

    config = uvicorn.Config(
        create_label_app(session), host=host, port=port, log_level="warning", access_log=False
    )
    with sock:
        uvicorn.Server(config).run(sockets=[sock])
    session.wait(timeout=30)
