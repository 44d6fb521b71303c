"""Training as a short sequence of stages over one state.

A run is a :class:`TrainingRun` (the data, the options, and what each stage adds to it) passed
through stages, each a function ``stage(run) -> None`` that does nothing when its option is off:

=================  ==========================================================================
stage              what it adds
=================  ==========================================================================
adapt_encoder      ``contrastive``, then ``finetune``: the encoder tuned on pairs of training
                   texts, then on the labels (``run.encoding`` then names the tuned folder)
choose_features    ``auto``: the layer(s) and pooling chosen by the sweep
featurize          the training and test vectors (and the unlabelled texts', if any), through
                   the cache
fit_head           the head: a :class:`~bertprobe.heads.probe.LinearProbe` (with the TF-IDF
                   voter when the sweep prefers it), or its multi-label wrapper; with
                   unlabelled texts, self-trained on them when its CV says that helps
out_of_fold        one out-of-fold pass: the decision threshold (two classes) and the rows
                   whose label the model doubts (``label_issues``)
score_test         the test set's scores
=================  ==========================================================================

Training out of core is the same idea over files: :data:`OUT_OF_CORE` tunes the encoder
(``finetune``) and chooses the features (``auto``) on a uniform sample of the file, and
replaces featurize, fit_head, out_of_fold and score_test with stages that stream vectors from
disk a chunk at a time, into a head that learns that way
(:class:`~bertprobe.heads.base.StreamingHead`: :class:`~bertprobe.heads.probe.OutOfCoreProbe`,
or one a label in :class:`~bertprobe.heads.multilabel.StreamingMultiLabelProbe`).

:func:`run_stages` runs a preset (:func:`stages_for` picks it from the options) and calls the
hooks around each stage; progress and timings are hooks, not branches. The model layer wraps
the result into a :class:`~bertprobe.model.classifier.Classifier` and its folder
(:func:`bertprobe.model.train.train`).

Example:
    >>> from bertprobe.data.files import LabelledTexts
    >>> from bertprobe.encoders.encode import EncoderOptions
    >>> from bertprobe.training.options import TrainOptions
    >>> run = TrainingRun(LabelledTexts.from_lists(texts, labels), None,
    ...                   EncoderOptions("minilm", pooling="mean"), TrainOptions(cv=3))
    ... # doctest: +SKIP
    >>> run_stages(run, stages_for(run.options, run.finetune)).head  # doctest: +SKIP
    LinearProbe(cv=3)
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field, replace
from functools import partial
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from bertprobe.core.errors import BadInputError, BertprobeError
from bertprobe.core.tables import python_value
from bertprobe.data.files import (
    FileSummary,
    LabelledTexts,
    ReadOptions,
    align_labels,
    read_texts,
    scan_labels,
)
from bertprobe.data.multilabel import (
    _multilabel_set,
    read_multilabel_set,
    scan_label_sets,
)
from bertprobe.encoders.cache import EmbeddingCache, default_cache_dir
from bertprobe.encoders.encode import EmbedStats, embed
from bertprobe.encoders.encoder import LoadedEncoder
from bertprobe.encoders.features import (
    iter_feature_rows,
    iter_parquet_vectors,
    write_features,
)
from bertprobe.encoders.hub import EncoderRef
from bertprobe.encoders.options import EncoderOptions, FeatureSpec, RunOptions
from bertprobe.encoders.pooling import check_pooling
from bertprobe.heads.base import Head, StreamingHead
from bertprobe.heads.multilabel import (
    MultiLabelProbe,
    StreamingMultiLabelProbe,
    indicator,
    multilabel_scores,
)
from bertprobe.heads.probe import (
    COARSE_C_GRID,
    LinearProbe,
    OutOfCoreProbe,
    VotingProbe,
    best_threshold,
    check_trainable,
    metric_score,
)
from bertprobe.heads.tfidf import TFIDF_C_GRID, tfidf_pipeline
from bertprobe.training.compare import Comparison, compare_encoders, sweep_texts
from bertprobe.training.contrastive import ContrastiveOptions
from bertprobe.training.finetune import FinetuneOptions, FinetuneResult, workdir_for
from bertprobe.training.inputs import (
    _labelled,
    check_features_match,
    check_label_sets,
    label_set_sample,
    label_sets_of,
    read_training_set,
    reservoir_sample,
)
from bertprobe.training.label_issues import LabelIssue, find_label_issues
from bertprobe.training.options import TrainOptions
from bertprobe.training.sweep import SweepResult

Stage = Callable[["TrainingRun"], None]


class EncoderTuning(Protocol):
    """What the adapt stage asks of a way to tune the encoder
    (:class:`~bertprobe.training.finetune.FinetuneOptions`,
    :class:`~bertprobe.training.contrastive.ContrastiveOptions`): its dev file, how it splits the
    rows, the tuning itself, and what the card says of it."""

    @property
    def dev(self) -> str | Path | None: ...

    def split(
        self,
        train_set: LabelledTexts,
        dev: LabelledTexts | None,
        classes: Sequence[str] | None = None,
    ) -> tuple[LabelledTexts, LabelledTexts | None]: ...

    def tune(
        self,
        train_rows: LabelledTexts,
        dev_rows: LabelledTexts | None,
        *,
        encoding: EncoderOptions,
        workdir: Path,
        classes: Sequence[str] | None = None,
    ) -> FinetuneResult: ...

    def card_record(self, tuned: FinetuneResult) -> dict[str, Any]: ...


@dataclass
class StageHooks:
    """Callbacks around each stage: ``on_start(name, run)`` and ``on_end(name, run,
    seconds)``. The card, progress lines and timings hang here instead of in the stages."""

    on_start: Callable[[str, TrainingRun], None] | None = None
    on_end: Callable[[str, TrainingRun, float], None] | None = None


@dataclass
class TrainingRun:
    """One training run: its inputs, then what each stage adds.

    In memory, ``train_set`` and ``test_set`` hold the texts and labels (label sets for a
    multi-label run); out of core they are None and ``train_path`` / ``test_path`` name the
    files, read a chunk at a time.
    """

    train_set: LabelledTexts | None
    test_set: LabelledTexts | None
    encoding: EncoderOptions
    options: TrainOptions
    finetune: FinetuneOptions | None = None
    reading: ReadOptions = field(default_factory=ReadOptions)
    contrastive: ContrastiveOptions | None = None
    # texts without labels the head may self-train on (never scored: CV and test are labelled)
    unlabelled: LabelledTexts | None = None
    train_path: Path | None = None
    test_path: Path | None = None
    classes: list | None = None  # multi-label: the label names, in column order
    # adapt_encoder: each tuning's options and record, in order; the last made the encoder
    adapted: list[tuple[EncoderTuning, FinetuneResult]] = field(default_factory=list)
    base: EncoderRef | None = None  # the encoder the tuned one was made from
    # choose_encoder: the comparison of options.encoders the encoder was chosen by
    compared: Comparison | None = None
    # choose_features
    swept: SweepResult | None = None
    # featurize
    encoder: LoadedEncoder | None = None
    X_train: np.ndarray | None = None
    X_test: np.ndarray | None = None
    train_stats: EmbedStats | None = None
    test_stats: EmbedStats | None = None
    X_unlabelled: np.ndarray | None = None
    embed_seconds: float = 0.0
    feature_dir: Path | None = None
    # out of core: split -> (vectors a chunk at a time, labels, the source file's SHA-256)
    chunk_sources: dict[str, tuple[Callable[[int], Iterator[np.ndarray]], np.ndarray, str]] = field(
        default_factory=dict
    )
    # fit_head
    head: Any = None  # a Head (heads.base): the probe, its streaming or multi-label kind
    text_model: Any = None  # the TF-IDF voter, when the sweep prefers the vote
    fit_seconds: float = 0.0
    # out_of_fold
    threshold: dict[str, Any] | None = None
    label_issues: list[LabelIssue] | None = None
    # score_test
    test_accuracy: float | None = None
    test_score: float | None = None  # of options.metric
    test_scores: dict[str, Any] | None = None  # multi-label: F1 micro / macro, per label

    @property
    def multi_label(self) -> bool:
        return self.options.multi_label

    @property
    def tunings(self) -> tuple[EncoderTuning, ...]:
        """The encoder's tunings, in the order they run: on pairs, then on the labels."""
        return tuple(t for t in (self.contrastive, self.finetune) if t is not None)

    @property
    def tuned(self) -> FinetuneResult | None:
        """The record of the last tuning (whose encoder the model reads), if any."""
        return self.adapted[-1][1] if self.adapted else None

    @property
    def train_targets(self) -> list:
        """The training labels (label sets for a multi-label run)."""
        return list(self.train_set.labels or []) if self.train_set is not None else []

    @property
    def voting(self) -> VotingProbe:
        return VotingProbe.prefit(self.head, self.text_model)


def run_stages(
    run: TrainingRun, stages: Sequence[Stage], hooks: StageHooks | None = None
) -> TrainingRun:
    """Run ``stages`` in order on ``run`` (each may do nothing), calling ``hooks`` around each;
    returns ``run``."""
    hooks = hooks or StageHooks()
    for stage in stages:
        name = stage.__name__
        if hooks.on_start is not None:
            hooks.on_start(name, run)
        start = time.perf_counter()
        stage(run)
        if hooks.on_end is not None:
            hooks.on_end(name, run, time.perf_counter() - start)
    return run


def start_run(
    data: str | Path | LabelledTexts,
    *,
    test: str | Path | LabelledTexts | None = None,
    encoding: EncoderOptions,
    options: TrainOptions,
    reading: ReadOptions,
    finetune: FinetuneOptions | None = None,
    contrastive: ContrastiveOptions | None = None,
    unlabelled: str | Path | Sequence[str] | None = None,
) -> TrainingRun:
    """Read and check the data a run needs before the encoder runs: the training set, the
    test labels against the training labels (single labels or label sets), the unlabelled
    texts (see :func:`unlabelled_pool`); out of core, only the paths (the files are read a
    chunk at a time by the stages)."""
    if reading.multi_label and not options.multi_label:
        raise BadInputError(
            "label_sep= and label_cols= read several labels per text; add multi_label=True, "
            "or leave them out for one label per text"
        )
    run = TrainingRun(
        None, None, encoding, options, finetune=finetune, reading=reading, contrastive=contrastive
    )
    if options.out_of_core:
        if isinstance(data, LabelledTexts) or isinstance(test, LabelledTexts):
            raise BadInputError("out_of_core trains from files, a chunk at a time; pass paths")
        if unlabelled is not None:
            raise BadInputError(
                "unlabelled= self-trains a probe whose vectors are held in memory, and out of "
                "core the head streams its rows from disk; with a training file that large the "
                "labels are many already: train without unlabelled=, or without out_of_core"
            )
        run.train_path, run.test_path = Path(data), Path(test) if test is not None else None
        return run
    if options.multi_label:
        run.train_set, columns = _multilabel_set(data, reading)
        run.classes = check_label_sets(
            label_sets_of(run.train_set), columns, options.cv, run.train_set.source
        )
        if test is not None:  # before any work: a test file with other labels is refused now
            run.test_set = read_multilabel_set(test, reading)
            indicator(label_sets_of(run.test_set), run.classes, run.test_set.source)
        run.unlabelled = unlabelled_pool(unlabelled, run, reading)
        return run
    run.train_set = read_training_set(data, reading, options.cv)
    run.test_set = _labelled(test, reading) if test is not None else None
    if run.test_set is not None:  # before any work: a test file with other labels is refused
        known = sorted(set(run.train_set.labels or []), key=str)
        align_labels(run.test_set.labels or [], known, run.test_set.source)
    run.unlabelled = unlabelled_pool(unlabelled, run, reading)
    return run


def unlabelled_pool(
    unlabelled: str | Path | Sequence[str] | None, run: TrainingRun, reading: ReadOptions
) -> LabelledTexts | None:
    """The unlabelled texts a run may learn from: a file's texts (read as ``reading`` reads
    the training file's; labels in it are ignored) or a list, without the texts of the
    training and test sets (a test text must never shape the model it scores)."""
    if unlabelled is None:
        return None
    if isinstance(unlabelled, str | Path):
        pool = read_texts(unlabelled, text_col=reading.text_col, header=reading.header)
    else:
        pool = LabelledTexts.from_lists(list(unlabelled), None, source="unlabelled=")
    seen = set(run.train_set.texts if run.train_set is not None else [])
    seen |= set(run.test_set.texts if run.test_set is not None else [])
    keep = [i for i, text in enumerate(pool.texts) if text not in seen]
    if not keep:
        raise BadInputError(
            f"{pool.source}: no unlabelled text is left once the training and test texts are "
            "set aside; give texts the training does not have labels for"
        )
    return LabelledTexts(
        texts=[pool.texts[i] for i in keep],
        labels=None,
        source=pool.source,
        sha256=pool.sha256,
        line_numbers=[pool.line_numbers[i] for i in keep],
    )


# --- in memory -------------------------------------------------------------------------------


def adapt_encoder(run: TrainingRun) -> None:
    """Tune the encoder's weights with each of the run's tunings in turn (``contrastive``, then
    ``finetune``), each starting from the encoder the one before made; the run's encoding then
    names the last tuned folder (the base is kept for the card)."""
    if not run.tunings or run.train_set is None:
        return
    run.base = run.encoding.resolve()  # at its revision; the tuned folder is named after it
    cache_dir = Path(run.encoding.run.cache_dir or default_cache_dir())
    for tuning in run.tunings:
        # The dev rows are checked (read, labels, enough rows) before the encoder loads.
        read = read_multilabel_set if run.multi_label else _labelled
        dev = read(tuning.dev, run.reading) if tuning.dev is not None else None
        train_rows, dev_rows = tuning.split(run.train_set, dev, run.classes)
        workdir = workdir_for(cache_dir, train_rows, dev_rows, run.encoding, tuning, run.classes)
        tuned = tuning.tune(
            train_rows, dev_rows, encoding=run.encoding, workdir=workdir, classes=run.classes
        )
        run.adapted.append((tuning, tuned))
        # The tuned folder is local: no hub revision applies to it (the base keeps its commit).
        run.encoding = replace(run.encoding, encoder=str(tuned.encoder_folder), revision=None)


def choose_encoder(run: TrainingRun) -> None:
    """With ``options.encoders``: sweep each on the training data (out of core, a uniform
    sample of the file) and read with the one :func:`~bertprobe.training.compare.recommend`
    picks. First of the stages, so that tuning and the features' sweep work on the chosen
    encoder; the features' sweep runs again on it, reading its vectors from the cache."""
    if not run.options.encoders:
        return
    data = run.train_set if run.train_set is not None else _sample(run, "encoders=")
    labels: Any = data.labels or []
    if run.multi_label:
        assert run.classes is not None
        labels, _ = indicator(label_sets_of(data), run.classes, data.source)
    run.compared = compare_encoders(
        data.texts, labels, run.options.encoders, encoding=run.encoding, options=run.options,
        tfidf=False,
    )  # fmt: skip
    run.encoding = replace(run.encoding, encoder=run.compared.recommended)


def choose_features(run: TrainingRun) -> None:
    """With ``options.auto``: sweep layers x poolings by CV and take the best candidate's
    (for several labels per text, ranked by the mean over labels; no TF-IDF vote)."""
    if not run.options.auto or run.train_set is None:
        return
    targets = None
    if run.multi_label:
        assert run.classes is not None
        targets, _ = indicator(label_sets_of(run.train_set), run.classes, run.train_set.source)
    with run.encoding.open_cache() as cache:
        run.swept = sweep_features(
            run.train_set, run.encoding, run.options, COARSE_C_GRID, cache=cache, targets=targets
        )
    best = run.swept.best
    run.encoding = replace(
        run.encoding, pooling=check_pooling(best.pooling), layers=tuple(best.layers)
    )


def featurize(run: TrainingRun) -> None:
    """The training (and test) vectors of the run's encoding, through the cache."""
    assert run.train_set is not None
    run.encoder = run.encoding.load()
    with run.encoding.open_cache() as cache:
        run.X_train, run.train_stats, run.X_test, run.test_stats = embed_sets(
            run.encoder, run.encoding.spec, run.encoding.run, cache, run.train_set, run.test_set
        )
    run.embed_seconds = run.train_stats.seconds + (
        run.test_stats.seconds if run.test_stats else 0.0
    )
    if run.unlabelled is not None:
        with run.encoding.open_cache() as cache:
            run.X_unlabelled, stats = embed(
                run.unlabelled.texts, run.encoder, run.encoding.spec, run.encoding.run, cache=cache
            )
        run.embed_seconds += stats.seconds


def fit_head(run: TrainingRun) -> None:
    """Fit the head the options ask for (:func:`make_head`) on the training vectors."""
    start = time.perf_counter()
    head = make_head(run)
    if isinstance(head, VotingProbe):
        assert run.train_set is not None
        head.fit(
            run.X_train, run.train_targets, texts=run.train_set.texts, unlabelled=run.X_unlabelled
        )
        run.head, run.text_model = head.probe_, head.text_model_
    else:
        run.head = head.fit(run.X_train, run.train_targets, unlabelled=run.X_unlabelled)
    run.fit_seconds += time.perf_counter() - start


def make_head(run: TrainingRun) -> Head | VotingProbe:
    """The unfitted head of a run: one probe per label for several labels a text; else the
    linear probe, voting with the TF-IDF model when the sweep preferred the vote, its C grid
    narrowed to the sweep's choice."""
    options, swept = run.options, run.swept
    if run.multi_label:
        return MultiLabelProbe(
            options.Cs,
            cv=options.cv,
            classes=run.classes,
            tune_thresholds=options.tune_thresholds,
            class_weight=options.class_weight,
            scoring=options.metric,
            n_jobs=options.n_jobs,
        )
    voter = None
    if swept is not None and swept.vote_wins:
        # The sweep chose the voter's C by the same folds: the final fit keeps it.
        chosen = (swept.tfidf_C,) if swept.tfidf_C is not None else TFIDF_C_GRID
        voter = tfidf_pipeline(cv=options.cv, Cs=chosen, n_jobs=options.n_jobs)
    probe = LinearProbe(
        Cs=options.grid if swept is None else _near(options.grid, swept.best.C),
        cv=options.cv,
        n_jobs=options.n_jobs,
        class_weight=options.class_weight,
        scoring=options.metric,
    )
    return VotingProbe(probe, text_model=voter) if voter is not None else probe


def out_of_fold(run: TrainingRun) -> None:
    """One out-of-fold pass serves both the decision threshold (two classes, the probe alone:
    a vote's probabilities are not the probe's) and the label issues."""
    start = time.perf_counter()
    if run.multi_label:
        if run.options.label_issues:
            run.label_issues = _label_set_issues(run)
        run.fit_seconds += time.perf_counter() - start
        return
    labels, classes = run.train_targets, run.head.classes_.tolist()
    wants_threshold = len(classes) == 2 and run.text_model is None
    if wants_threshold or run.options.label_issues:
        oof = run.head.out_of_fold_proba(run.X_train, labels)
        if wants_threshold:
            run.threshold = threshold_record(labels, oof, classes, run.options.metric)
        if run.options.label_issues:
            run.label_issues = find_label_issues(labels, oof, classes)
    run.fit_seconds += time.perf_counter() - start


def score_test(run: TrainingRun) -> None:
    """The test set's accuracy and metric (multi-label: F1 micro / macro and per label)."""
    if run.test_set is None or run.X_test is None:
        return
    truth = run.test_set.labels or []
    if run.multi_label:
        assert run.classes is not None
        Y_test, _ = indicator(label_sets_of(run.test_set), run.classes, run.test_set.source)
        run.test_scores = multilabel_scores(Y_test, run.head.predict(run.X_test), run.classes)
        run.test_accuracy = run.test_scores["subset_accuracy"]
        return
    voting = run.voting
    proba = voting.predict_proba(run.X_test, texts=run.test_set.texts)
    classes = voting.classes_.tolist()
    run.test_accuracy = accuracy(truth, voting.classes_[proba.argmax(axis=1)])
    run.test_score = metric_score(run.options.metric, truth, proba, classes)


IN_MEMORY: tuple[Stage, ...] = (
    choose_encoder,
    adapt_encoder,
    choose_features,
    featurize,
    fit_head,
    out_of_fold,
    score_test,
)


# --- out of core -----------------------------------------------------------------------------


# Rows of a training file held in memory out of core, as a uniform sample: by the sweep (every
# hidden state of each row: 13 layers x 384 floats for MiniLM, ~20 KB a row, ~400 MB here) and
# by fine-tuning (which revisits its rows every epoch).
SAMPLE_ROWS = 20_000


def _sample(run: TrainingRun, why: str) -> LabelledTexts:
    """A uniform sample of the training file (:data:`SAMPLE_ROWS` rows: reservoir-sampled in
    one pass, so a file sorted by label is sampled fairly; label sets in two passes), checked
    for ``cv`` folds; ``run.classes`` is set for label sets."""
    assert run.train_path is not None
    if run.multi_label:
        sample, run.classes = label_set_sample(run.train_path, run.reading, SAMPLE_ROWS)
        return sample
    sample = reservoir_sample(run.train_path, run.reading, SAMPLE_ROWS)
    try:
        check_trainable(sample.labels or [], run.options.cv)
    except BadInputError as exc:
        raise BadInputError(f"{run.train_path} (a sample for {why}): {exc}") from None
    return sample


def adapt_encoder_on_sample(run: TrainingRun) -> None:
    """Out of core with ``finetune``: the encoder is tuned on a uniform sample of the file (see
    :func:`_sample`), as :func:`adapt_encoder` tunes it on a training set in memory; then the
    tuned encoder's features are streamed for the whole file."""
    if not run.tunings or run.train_path is None:
        return
    run.train_set = _sample(run, "finetune=" if run.finetune is not None else "contrastive=")
    try:
        adapt_encoder(run)
    finally:
        run.train_set = None  # the rest of the run reads the whole file a chunk at a time


def choose_features_on_sample(run: TrainingRun) -> None:
    """Out of core with ``auto``: the sweep reads a uniform sample of the training file (see
    :func:`_sample`), then the chosen layer(s) and pooling are streamed for the whole file. No
    TF-IDF vote: the streaming head cannot hold the texts it would need."""
    if not run.options.auto or run.train_path is None:
        return
    sample = _sample(run, "auto=True")
    targets = None
    if run.multi_label:
        assert run.classes is not None
        targets, _ = indicator(label_sets_of(sample), run.classes, sample.source)
    with run.encoding.open_cache() as cache:
        run.swept = sweep_features(
            sample, run.encoding, run.options, COARSE_C_GRID, cache=cache, tfidf=False,
            targets=targets,
        )  # fmt: skip
    best = run.swept.best
    run.encoding = replace(
        run.encoding, pooling=check_pooling(best.pooling), layers=tuple(best.layers)
    )


def featurize_to_disk(run: TrainingRun) -> None:
    """File -> labels (checked first) -> vectors on disk (resumable), or the training file's
    precomputed vectors (``options.features``), checked against the file and the options."""
    assert run.train_path is not None
    data, test, reading = run.train_path, run.test_path, run.reading
    run.encoder = encoder = run.encoding.load()
    spec = run.encoding.spec
    run.feature_dir = Path(run.encoding.run.cache_dir or default_cache_dir()) / "features"
    start = time.perf_counter()
    # Labels first: this pass checks every row, so embedding starts only on sound files.
    scanned = {
        split: _scan_labels(run, path) for split, path in (("train", data), ("test", test))
        if path is not None
    }  # fmt: skip
    labels_of = {split: labels for split, (labels, _) in scanned.items()}
    features = run.options.features
    if features is not None:
        check_features_match(Path(features), data, scanned["train"][1], encoder, spec, reading)
    for split, path in (("train", data), ("test", test)):
        if path is None:
            continue
        labels = labels_of[split]
        if split == "train" and features is not None:
            run.chunk_sources[split] = (
                partial(iter_parquet_vectors, Path(features)),
                labels,
                scanned[split][1].sha256,
            )
            continue
        job = json.dumps(
            [
                str(path.resolve()),
                encoder.ref.fingerprint,
                run.encoding.backend,
                spec.pooling,
                spec.layers,
                spec.max_length,
                None if reading.text_col is None else str(reading.text_col),
                reading.drop_empty,
                *([spec.long_record()] if spec.long != "truncate" else []),
            ]
        )
        target = run.feature_dir / f"{hashlib.sha256(job.encode()).hexdigest()[:24]}.npy"
        stats = write_features(path, target, encoding=run.encoding, reading=reading)
        if stats.n_texts != len(labels):  # both passes skip the same rows; guard the pairing
            raise BertprobeError(f"{path}: {stats.n_texts} vectors for {len(labels)} labels")
        run.chunk_sources[split] = (
            partial(iter_feature_rows, target),
            labels,
            stats.source_sha256,
        )
    run.embed_seconds = time.perf_counter() - start


def _scan_labels(run: TrainingRun, path: Path) -> tuple[np.ndarray, FileSummary]:
    """A file's labels (a 0/1 label matrix for several labels a text), checked, and what the
    pass over it found; the texts are read and checked but not kept."""
    reading = run.reading
    is_train = path == run.train_path
    if run.multi_label:
        sets, columns, summary = scan_label_sets(path, reading)
        if is_train:
            run.classes = check_label_sets(sets, columns, 2, str(path))
        assert run.classes is not None
        Y, _ = indicator(sets, run.classes, str(path))
        return Y, summary
    labels, summary = scan_labels(
        path,
        text_col=reading.text_col,
        label_col=reading.label_col,
        drop_empty=reading.drop_empty,
        max_field_chars=reading.max_field_chars,
    )
    if is_train:
        try:
            check_trainable(labels, 2)
        except BadInputError as exc:
            raise BadInputError(f"{path}: {exc}") from None
        run.classes = sorted(set(labels), key=str)
    else:
        align_labels(labels, run.classes or [], str(path))
    return np.asarray(labels), summary


def chunks(run: TrainingRun, split: str, rows: int = 8192) -> Iterator[tuple[np.ndarray, Any]]:
    """A split's vectors and labels a chunk at a time (out of core)."""
    vectors, labels, _ = run.chunk_sources[split]
    done = 0
    for X in vectors(rows):  # Parquet batches may be shorter than asked: count, not step
        yield X, labels[done : done + len(X)]
        done += len(X)
    if done != len(labels):
        raise BertprobeError(f"{split}: {done} vectors for {len(labels)} labels")


def fit_head_by_chunks(run: TrainingRun) -> None:
    """A streaming head (:class:`~bertprobe.heads.base.StreamingHead`: SGD, a chunk at a
    time) on the vectors on disk; one a label for several labels a text."""
    start = time.perf_counter()
    head: StreamingHead = (
        StreamingMultiLabelProbe(classes=run.classes, class_weight=run.options.class_weight)
        if run.multi_label
        else OutOfCoreProbe(class_weight=run.options.class_weight)
    )
    run.head = head.fit_chunks(lambda: chunks(run, "train"))
    run.fit_seconds += time.perf_counter() - start


def out_of_fold_by_chunks(run: TrainingRun) -> None:
    """Out of core with ``label_issues``: out-of-fold probabilities a fold at a time. Each row
    gets a fold (a seeded draw, ``cv`` folds); for each fold a fresh copy of the streaming head
    learns the other folds' rows from disk and predicts its own. ``cv`` times the head's passes
    over the vectors; memory holds one chunk and the probabilities (rows x classes)."""
    if not run.options.label_issues:
        return
    from sklearn.base import clone

    start = time.perf_counter()
    labels = run.chunk_sources["train"][1]
    folds = np.random.default_rng(0).integers(0, run.options.cv, size=len(labels))
    oof: np.ndarray | None = None
    for k in range(run.options.cv):
        head = clone(run.head).fit_chunks(partial(_fold_chunks, run, folds, k, False))
        for rows, X in _fold_chunks(run, folds, k, True, with_rows=True):
            proba = head.predict_proba(X)
            if oof is None:
                oof = np.zeros((len(labels), proba.shape[1]))
            oof[rows] = proba
    assert oof is not None
    if run.multi_label:
        assert run.classes is not None
        run.label_issues = _issues_label_by_label(labels, oof, run.classes)
    else:
        run.label_issues = find_label_issues(labels, oof, run.head.classes_.tolist())
    run.fit_seconds += time.perf_counter() - start


def _fold_chunks(
    run: TrainingRun, folds: np.ndarray, k: int, inside: bool, with_rows: bool = False
) -> Iterator[Any]:
    """The training chunks' rows in fold ``k`` (``inside``) or out of it: ``(X, y)``, or with
    ``with_rows`` ``(row numbers, X)``; chunks left empty are skipped."""
    done = 0
    for X, y in chunks(run, "train"):
        rows = np.arange(done, done + len(X))
        done += len(X)
        keep = (folds[rows] == k) == inside
        if keep.any():
            yield (rows[keep], X[keep]) if with_rows else (X[keep], y[keep])


def score_test_by_chunks(run: TrainingRun) -> None:
    """The test file's scores (as :func:`score_test`'s), its vectors read a chunk at a time."""
    if "test" not in run.chunk_sources:
        return
    probe = run.head
    truth = run.chunk_sources["test"][1]
    if run.multi_label:
        assert run.classes is not None
        predicted = np.concatenate([probe.predict(X) for X, _ in chunks(run, "test")])
        run.test_scores = multilabel_scores(truth, predicted, run.classes)
        run.test_accuracy = run.test_scores["subset_accuracy"]
        return
    # One row of probabilities a test row: small beside the vectors (classes, not dims).
    proba = np.concatenate([probe.predict_proba(X) for X, _ in chunks(run, "test")])
    run.test_accuracy = accuracy(truth, probe.classes_[proba.argmax(axis=1)])
    run.test_score = metric_score(run.options.metric, truth, proba, probe.classes_.tolist())


OUT_OF_CORE: tuple[Stage, ...] = (
    choose_encoder,
    adapt_encoder_on_sample,
    choose_features_on_sample,
    featurize_to_disk,
    fit_head_by_chunks,
    out_of_fold_by_chunks,
    score_test_by_chunks,
)


def stages_for(options: TrainOptions, finetune: FinetuneOptions | None = None) -> tuple[Stage, ...]:
    """The preset the options ask for: :data:`IN_MEMORY` or :data:`OUT_OF_CORE` (each stage
    does nothing when its option is off, so every combination of options has its preset)."""
    if options.out_of_core:
        return OUT_OF_CORE
    return IN_MEMORY


# --- the stages' parts -----------------------------------------------------------------------


def sweep_features(
    train_set: LabelledTexts,
    encoding: EncoderOptions,
    options: TrainOptions,
    Cs: Sequence[float],
    *,
    cache: EmbeddingCache | None,
    tfidf: bool = True,
    targets: np.ndarray | None = None,
) -> SweepResult:
    """Score every layer x pooling (and concatenations) of ``encoding``'s encoder by CV;
    ``targets`` (a 0/1 label matrix) instead of the set's labels for several labels a text."""
    labels = train_set.labels or [] if targets is None else targets
    return sweep_texts(train_set.texts, labels, encoding, options, Cs, cache=cache, tfidf=tfidf)


def embed_sets(
    encoder: LoadedEncoder,
    spec: FeatureSpec,
    run: RunOptions,
    cache: EmbeddingCache | None,
    train_set: LabelledTexts,
    test_set: LabelledTexts | None,
) -> tuple[np.ndarray, EmbedStats, np.ndarray | None, EmbedStats | None]:
    """The training set's vectors and, when there is a test set, its vectors: one encoder,
    one way of running it."""
    X_train, train_stats = embed(train_set.texts, encoder, spec, run, cache=cache)
    if test_set is None:
        return X_train, train_stats, None, None
    X_test, test_stats = embed(test_set.texts, encoder, spec, run, cache=cache)
    return X_train, train_stats, X_test, test_stats


def threshold_record(
    labels: Sequence[Any], oof: np.ndarray, classes: list, metric: str
) -> dict[str, Any]:
    """The decision threshold the card keeps: on the probability of ``classes[1]``, chosen on
    out-of-fold probabilities to maximize ``metric``, with that metric there and at 0.5."""
    value, score = best_threshold(labels, oof, classes, metric)
    by = "balanced_accuracy" if metric == "roc_auc" else metric
    return {
        "value": value,
        "positive_label": python_value(classes[1]),
        "metric": by,
        "oof_score": score,
        "oof_score_argmax": metric_score(by, labels, oof, classes),
    }


def _label_set_issues(run: TrainingRun) -> list[LabelIssue]:
    """Label issues of a multi-label run, label by label: each label's probe (at its chosen
    C, folds and weights) gives out-of-fold probabilities of "has it" against "has it not"."""
    head = run.head
    assert isinstance(head, MultiLabelProbe) and run.classes is not None
    Y, _ = indicator(label_sets_of(run.train_set), run.classes, "the training labels")
    oof = np.column_stack(
        [
            probe.out_of_fold_proba(run.X_train, Y[:, j])[:, 1]
            for j, probe in enumerate(head.label_probes())
        ]
    )
    return _issues_label_by_label(Y, oof, run.classes)


def _issues_label_by_label(
    Y: np.ndarray, oof: np.ndarray, names: Sequence[str]
) -> list[LabelIssue]:
    """Rows doubted for a label as a single-label row would be, from each label's out-of-fold
    probability (``oof[:, j]``); ``label`` and ``suggested`` read ``"+name"`` (the label is
    there) or ``"-name"`` (it is not). Most doubted first, whatever the label."""
    issues: list[LabelIssue] = []
    for j, name in enumerate(names):
        both = np.column_stack([1 - oof[:, j], oof[:, j]])
        for issue in find_label_issues(Y[:, j], both, [0, 1]):
            issues.append(
                replace(
                    issue,
                    label=("+" if issue.label else "-") + name,
                    suggested=("+" if issue.suggested else "-") + name,
                )
            )
    return sorted(issues, key=lambda issue: issue.label_probability)


def accuracy(y_true: Any, predicted: Any) -> float:
    """Share of equal labels, compared by text (see :func:`~bertprobe.data.files.align_labels`:
    a file's ``"1"`` and a model's ``1`` are one label)."""
    return float(np.mean([str(p) == str(y) for p, y in zip(predicted, y_true, strict=True)]))


def _near(grid: Sequence[float], chosen: float | None) -> tuple[float, ...]:
    """The grid's values next to ``chosen`` (the sweep's C on the coarse grid): the final
    search refines the sweep's choice instead of repeating it, and skips the weakest
    regularization when the sweep did not want it (those fits run longest)."""
    ordered = sorted(grid)
    if chosen is None:
        return tuple(ordered)
    at = int(np.argmin(np.abs(np.log(ordered) - np.log(chosen))))
    return tuple(ordered[max(0, at - 1) : at + 2])
