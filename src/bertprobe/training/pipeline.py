"""Training as a short sequence of stages over one state.

A run is a :class:`TrainingRun` (the data, the options, and what each stage adds to it) passed
through stages, each a function ``stage(run) -> None`` that does nothing when its option is off:

=================  ==========================================================================
stage              what it adds
=================  ==========================================================================
adapt_encoder      ``contrastive``, ``distill``, then ``finetune``: the encoder tuned on pairs
                   of training texts, taught by a teacher model, then tuned on the labels
                   (``run.encoding`` then names the tuned folder)
choose_features    ``auto``: the layer(s) and pooling chosen by the sweep
featurize          the training and test vectors (and the unlabelled texts', if any), through
                   the cache
fit_head           the head the run's target makes (:mod:`bertprobe.training.target`): the
                   linear probe (with the TF-IDF voter when the sweep prefers it), or one
                   a label for label sets; with unlabelled texts, self-trained on them when
                   its CV says that helps
out_of_fold        one out-of-fold pass: the decision threshold (two classes) and the rows
                   whose label the model doubts (``label_issues``)
score_test         the test set's scores
score_teacher      ``distill``: the student's agreement with its teacher on the test set
=================  ==========================================================================

Training out of core is the same idea over files: :data:`OUT_OF_CORE` tunes the encoder
(``finetune``) and chooses the features (``auto``) on a uniform sample of the file, and
replaces featurize, fit_head, out_of_fold and score_test with stages that stream vectors from
disk a chunk at a time, into a head that learns that way
(:class:`~bertprobe.heads.base.StreamingHead`, as the run's target makes it).

What differs between one label a text and a label set a text is the run's
:class:`~bertprobe.training.target.Target`: the stages call it and never test a flag.

:func:`run_stages` runs a preset (:func:`stages_for` picks it from the options) and calls the
hooks around each stage; progress and timings are hooks, not branches. The model layer wraps
the result into a :class:`~bertprobe.model.classifier.Classifier` and its folder
(:func:`bertprobe.model.train.train`).

Example:
    >>> from bertprobe.data.files import LabelledTexts
    >>> from bertprobe.encoders.options import EncoderOptions
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
from typing import Any, ClassVar, Protocol

import numpy as np

from bertprobe.core.errors import BadInputError, BertprobeError
from bertprobe.data.files import FileSummary, LabelledTexts, ReadOptions, read_texts
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
from bertprobe.heads import base as heads
from bertprobe.heads.decision import Decision
from bertprobe.heads.probe import COARSE_C_GRID, VotingProbe
from bertprobe.training.callbacks import TrainingCallback
from bertprobe.training.compare import Comparison, compare_encoders, sweep_texts
from bertprobe.training.contrastive import ContrastiveOptions
from bertprobe.training.distill import DistillOptions, teacher_probabilities
from bertprobe.training.finetune import FinetuneOptions, FinetuneResult, workdir_for
from bertprobe.training.inputs import check_features_match
from bertprobe.training.label_issues import LabelIssue
from bertprobe.training.options import TrainOptions
from bertprobe.training.sweep import SweepResult
from bertprobe.training.target import Target, target_for
from bertprobe.training.zeroshot import ZeroShot, fit_zero_shot

Stage = Callable[["TrainingRun"], None]


class EncoderTuning(Protocol):
    """What the adapt stage asks of a way to tune the encoder
    (:class:`~bertprobe.training.finetune.FinetuneOptions`,
    :class:`~bertprobe.training.contrastive.ContrastiveOptions`,
    :class:`~bertprobe.training.distill.DistillOptions`): its dev file, how it splits the rows,
    the tuning itself (``pool``: the run's texts without labels, which a teacher can label),
    what names its job folder, and what the card says of it (under ``card_key``; the tuned
    encoder is named ``"BASE (tuned_as)"``)."""

    card_key: ClassVar[str]
    tuned_as: ClassVar[str]

    @property
    def dev(self) -> str | Path | None: ...

    def split(
        self,
        train_set: LabelledTexts,
        dev: LabelledTexts | None,
        target: Target,
        classes: Sequence[Any],
    ) -> tuple[LabelledTexts, LabelledTexts | None]: ...

    def tune(
        self,
        train_rows: LabelledTexts,
        dev_rows: LabelledTexts | None,
        *,
        encoding: EncoderOptions,
        workdir: Path,
        target: Target,
        classes: Sequence[Any],
        pool: LabelledTexts | None = None,
        callbacks: Sequence[TrainingCallback] = (),
    ) -> FinetuneResult: ...

    def job_record(self) -> dict[str, str]: ...

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

    In memory, ``train_set`` and ``test_set`` hold the texts and labels (label sets, for the
    label-set target); out of core they are None and ``train_path`` / ``test_path`` name the
    files, read a chunk at a time. ``target`` says what a label is (see
    :mod:`bertprobe.training.target`); ``classes`` are the head's columns, in order.
    """

    train_set: LabelledTexts | None
    test_set: LabelledTexts | None
    encoding: EncoderOptions
    options: TrainOptions
    finetune: FinetuneOptions | None = None
    reading: ReadOptions = field(default_factory=ReadOptions)
    contrastive: ContrastiveOptions | None = None
    distill: DistillOptions | None = None
    # told of each stage and of each tuning's losses and dev scores (training.callbacks)
    callbacks: Sequence[TrainingCallback] = ()
    # texts without labels the head may self-train on (never scored: CV and test are labelled)
    unlabelled: LabelledTexts | None = None
    # from descriptions: the zero-shot start, and what self-training did
    zero_shot: ZeroShot | None = None
    self_trained: dict[str, Any] | None = None
    # from descriptions and labels: the labels, trained on in every self-training round
    gold: LabelledTexts | None = None
    train_path: Path | None = None
    test_path: Path | None = None
    classes: list | None = None  # the training labels (the head's columns), in order
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
    test_scores: dict[str, Any] | None = None  # label sets: F1 micro / macro, per label

    @property
    def target(self) -> Target:
        """What a label is in this run: one label a text, or a label set."""
        return target_for(label_sets=self.options.multi_label)

    @property
    def tunings(self) -> tuple[EncoderTuning, ...]:
        """The encoder's tunings, in the order they run: on pairs, from a teacher, then on the
        labels."""
        return tuple(t for t in (self.contrastive, self.distill, self.finetune) if t is not None)

    @property
    def tuned(self) -> FinetuneResult | None:
        """The record of the last tuning (whose encoder the model reads), if any."""
        return self.adapted[-1][1] if self.adapted else None

    @property
    def train_targets(self) -> Any:
        """What the head fits on: the training labels, or the label sets' 0/1 matrix."""
        assert self.train_set is not None and self.classes is not None
        return self.target.targets(self.train_set, self.classes)

    @property
    def voting(self) -> VotingProbe:
        return VotingProbe.prefit(self.head, self.text_model)


def run_stages(
    run: TrainingRun, stages: Sequence[Stage], hooks: StageHooks | None = None
) -> TrainingRun:
    """Run ``stages`` in order on ``run`` (each may do nothing), calling ``hooks`` and the
    run's callbacks around each; returns ``run``."""
    hooks = hooks or StageHooks()
    for stage in stages:
        name = stage.__name__
        if hooks.on_start is not None:
            hooks.on_start(name, run)
        for callback in run.callbacks:
            callback.on_stage_start(name, run)
        start = time.perf_counter()
        stage(run)
        seconds = time.perf_counter() - start
        if hooks.on_end is not None:
            hooks.on_end(name, run, seconds)
        for callback in run.callbacks:
            callback.on_stage_end(name, run, seconds)
    return run


def start_run(
    data: str | Path | LabelledTexts | None,
    *,
    test: str | Path | LabelledTexts | None = None,
    encoding: EncoderOptions,
    options: TrainOptions,
    reading: ReadOptions,
    finetune: FinetuneOptions | None = None,
    contrastive: ContrastiveOptions | None = None,
    unlabelled: str | Path | Sequence[str] | None = None,
    zero_shot: ZeroShot | None = None,
    distill: DistillOptions | None = None,
) -> TrainingRun:
    """Read and check the data a run needs before the encoder runs: the training set, the
    test labels against the training labels (single labels or label sets), the unlabelled
    texts (see :func:`unlabelled_pool`); out of core, only the paths (the files are read a
    chunk at a time by the stages). From descriptions (``zero_shot``): the pool, and the
    labels of ``data`` (if given) and of the test set against the described classes."""
    run = TrainingRun(
        None,
        None,
        encoding,
        options,
        finetune=finetune,
        reading=reading,
        contrastive=contrastive,
        distill=distill,
    )
    if zero_shot is not None or data is None:
        return _start_from_descriptions(run, data, test, unlabelled, zero_shot)
    run.target.check_training_reading(reading)
    if options.out_of_core:
        if isinstance(data, LabelledTexts) or isinstance(test, LabelledTexts):
            raise BadInputError("out_of_core trains from files, a chunk at a time; pass paths")
        if unlabelled is not None:
            raise BadInputError(
                "unlabelled= self-trains a probe whose vectors are held in memory, and out of "
                "core the head streams its rows from disk; with a training file that large the "
                "labels are many already: train without unlabelled=, or without out_of_core",
                param="unlabelled",
            )
        run.train_path, run.test_path = Path(data), Path(test) if test is not None else None
        return run
    target = run.target
    run.train_set, run.classes = target.read_training(data, reading, options.cv)
    if test is not None:  # before any work: a test file with other labels is refused now
        run.test_set = target.read(test, reading)
        target.check_against(run.test_set, run.classes)
    run.unlabelled = unlabelled_pool(unlabelled, run, reading)
    return run


def _start_from_descriptions(
    run: TrainingRun,
    data: Any,
    test: str | Path | LabelledTexts | None,
    unlabelled: str | Path | Sequence[str] | None,
    zero_shot: ZeroShot | None,
) -> TrainingRun:
    if zero_shot is None:
        raise BadInputError(
            "no training data: give a labelled file, or with no labels the classes' "
            "descriptions (zero_shot=) and the texts to classify (unlabelled=)",
            param=("zero_shot", "unlabelled"),
        )
    if unlabelled is None:
        raise BadInputError(
            "zero_shot= needs the texts to classify (unlabelled=): the zero-shot head is "
            "centred on them, and self-training learns from them",
            param=("zero_shot", "unlabelled"),
        )
    if run.options.out_of_core:
        raise BadInputError(
            "zero_shot: the pool's vectors are held in memory (the head is centred on them, "
            "self-training ranks them); train without out_of_core=True",
            param="out_of_core=True",
        )
    run.zero_shot, run.classes = zero_shot, list(zero_shot.texts)
    if data is not None:  # a few labels beside the descriptions: see self_train
        run.gold = _labels_of_described(run, data)
    if test is not None:
        run.test_set = run.target.described(run.target.read(test, run.reading), run.classes)
    run.unlabelled = unlabelled_pool(unlabelled, run, run.reading)
    return run


def _labels_of_described(run: TrainingRun, data: str | Path | LabelledTexts) -> LabelledTexts:
    """The labelled texts given beside descriptions, each label one of the described classes
    (a label no description names would be a class the zero-shot head cannot propose)."""
    assert run.classes is not None
    gold = run.target.described(run.target.read(data, run.reading), run.classes)
    described = {str(c) for c in run.classes}
    named = {str(y) for labels in run.target.as_tuples(gold.labels or []) for y in labels}
    unknown = sorted(named - described)
    if unknown:
        raise BadInputError(
            f"{gold.source}: the label{'s' if len(unknown) > 1 else ''} "
            f"{', '.join(unknown[:5])} {'are' if len(unknown) > 1 else 'is'} not among the "
            f"classes zero_shot= describes ({', '.join(sorted(described))}); describe every "
            "class the labels name, or relabel the file",
            param="zero_shot",
        )
    return gold


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
    seen = {
        text for given in (run.train_set, run.gold, run.test_set) if given for text in given.texts
    }
    keep = [i for i, text in enumerate(pool.texts) if text not in seen]
    if not keep:
        raise BadInputError(
            f"{pool.source}: no unlabelled text is left once the training and test texts are "
            "set aside; give texts the training does not have labels for",
            param="unlabelled",
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
    target, classes = run.target, run.classes or []
    for tuning in run.tunings:
        # The dev rows are checked (read, labels, enough rows) before the encoder loads.
        dev = target.read(tuning.dev, run.reading) if tuning.dev is not None else None
        train_rows, dev_rows = tuning.split(run.train_set, dev, target, classes)
        workdir = workdir_for(
            cache_dir, train_rows, dev_rows, run.encoding, tuning, target, classes
        )
        tuned = tuning.tune(
            train_rows,
            dev_rows,
            encoding=run.encoding,
            workdir=workdir,
            target=target,
            classes=classes,
            pool=run.unlabelled,
            callbacks=run.callbacks,
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
    data = run.train_set if run.train_set is not None else _sample(run)
    assert run.classes is not None
    run.compared = compare_encoders(
        data.texts, run.target.targets(data, run.classes), run.options.encoders,
        encoding=run.encoding, options=run.options, tfidf=False,
    )  # fmt: skip
    run.encoding = replace(run.encoding, encoder=run.compared.recommended)


def choose_features(run: TrainingRun) -> None:
    """With ``options.auto``: sweep layers x poolings by CV and take the best candidate's
    (for label sets, ranked by the mean over labels; no TF-IDF vote)."""
    if not run.options.auto or run.train_set is None:
        return
    with run.encoding.open_cache() as cache:
        run.swept = sweep_features(
            run.train_set, run.encoding, run.options, COARSE_C_GRID, cache=cache,
            targets=run.train_targets,
        )  # fmt: skip
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
    """Fit the head the run's target makes (a TF-IDF vote where the sweep preferred it) on
    the training vectors, self-training on the unlabelled ones where given."""
    start = time.perf_counter()
    assert run.train_set is not None and run.classes is not None
    head = run.target.head(run.options, run.classes, run.swept)
    run.head, run.text_model = heads.fit_head(
        head,
        run.X_train,
        run.train_targets,
        texts=run.train_set.texts,
        unlabelled=run.X_unlabelled,
    )
    run.fit_seconds += time.perf_counter() - start


def out_of_fold(run: TrainingRun) -> None:
    """One out-of-fold pass serves both the decision threshold (two classes, the probe alone:
    a vote's probabilities are not the probe's) and the label issues."""
    start = time.perf_counter()
    assert run.X_train is not None
    run.threshold, run.label_issues = run.target.out_of_fold(
        run.head, run.X_train, run.train_targets, run.options, voted=run.text_model is not None
    )
    run.fit_seconds += time.perf_counter() - start


def score_test(run: TrainingRun) -> None:
    """The test set's accuracy and metric (label sets: F1 micro / macro and per label), by
    the model's own decision."""
    if run.test_set is None or run.X_test is None:
        return
    assert run.classes is not None
    voting = run.voting
    proba = voting.predict_proba(run.X_test, texts=run.test_set.texts)
    run.test_accuracy, run.test_score, run.test_scores = run.target.test_scores(
        run.target.targets(run.test_set, run.classes),
        proba,
        Decision.for_head(run.head),
        run.options.metric,
    )


def score_teacher(run: TrainingRun) -> None:
    """With ``distill`` and a test set: the share of test texts on which the student decides
    as its teacher does (for label sets, the same label set), kept in the distillation's
    record (the card's ``distill.teacher_test_agreement``). The teacher's probabilities go
    through its cache, as during training."""
    if run.distill is None or run.test_set is None or run.X_test is None:
        return
    record = next(tuned for tuning, tuned in run.adapted if tuning is run.distill)
    texts = run.test_set.texts
    teacher = run.distill.teacher
    teacher_proba, _ = teacher_probabilities(
        teacher, texts, run=replace(run.encoding.run, backend=run.distill.teacher_backend)
    )
    student = run.voting.predict_proba(run.X_test, texts=texts)
    record.teacher_test_agreement = agreement(
        Decision.for_head(run.head).label_tuples(student),
        teacher.decision.label_tuples(teacher_proba),
    )


def agreement(a: Sequence[tuple], b: Sequence[tuple]) -> float:
    """The share of texts two models decide alike on (each text's labels, as tuples)."""
    if not len(a):
        raise ValueError("agreement of no decisions")
    same = [tuple(map(str, x)) == tuple(map(str, y)) for x, y in zip(a, b, strict=True)]
    return float(np.mean(same))


IN_MEMORY: tuple[Stage, ...] = (
    choose_encoder,
    adapt_encoder,
    choose_features,
    featurize,
    fit_head,
    out_of_fold,
    score_test,
    score_teacher,
)


# --- out of core -----------------------------------------------------------------------------


# Rows of a training file held in memory out of core, as a uniform sample: by the sweep (every
# hidden state of each row: 13 layers x 384 floats for MiniLM, ~20 KB a row, ~400 MB here) and
# by fine-tuning (which revisits its rows every epoch).
SAMPLE_ROWS = 20_000


def _sample(run: TrainingRun) -> LabelledTexts:
    """A uniform sample of the training file (:data:`SAMPLE_ROWS` rows: reservoir-sampled in
    one pass, so a file sorted by label is sampled fairly; label sets in two passes), checked
    for ``cv`` folds; ``run.classes`` is set to the file's classes."""
    assert run.train_path is not None
    sample, run.classes = run.target.sample(
        run.train_path, run.reading, SAMPLE_ROWS, run.options.cv
    )
    return sample


def adapt_encoder_on_sample(run: TrainingRun) -> None:
    """Out of core with ``finetune``: the encoder is tuned on a uniform sample of the file (see
    :func:`_sample`), as :func:`adapt_encoder` tunes it on a training set in memory; then the
    tuned encoder's features are streamed for the whole file."""
    if not run.tunings or run.train_path is None:
        return
    run.train_set = _sample(run)
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
    sample = _sample(run)
    assert run.classes is not None
    targets = run.target.targets(sample, run.classes)
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
    """A file's targets (labels, or the label sets' 0/1 matrix), checked, and what the pass
    over it found; the texts are read and checked but not kept. The training file sets the
    run's classes; a test file is checked against them."""
    is_train = path == run.train_path
    targets, summary, classes = run.target.scan(
        path, run.reading, None if is_train else run.classes
    )
    if is_train:
        run.classes = classes
    return targets, summary


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
    time) on the vectors on disk, as the run's target makes it (one a label for label
    sets)."""
    start = time.perf_counter()
    assert run.classes is not None
    head: heads.StreamingHead = run.target.streaming_head(run.options, run.classes)
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
    run.label_issues = run.target.label_issues(labels, oof, run.head.classes_.tolist())
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
    # One row of probabilities a test row: small beside the vectors (classes, not dims).
    proba = np.concatenate([run.head.predict_proba(X) for X, _ in chunks(run, "test")])
    run.test_accuracy, run.test_score, run.test_scores = run.target.test_scores(
        run.chunk_sources["test"][1], proba, Decision.for_head(run.head), run.options.metric
    )


OUT_OF_CORE: tuple[Stage, ...] = (
    choose_encoder,
    adapt_encoder_on_sample,
    choose_features_on_sample,
    featurize_to_disk,
    fit_head_by_chunks,
    out_of_fold_by_chunks,
    score_test_by_chunks,
)


# --- from descriptions ------------------------------------------------------------------------


FROM_DESCRIPTIONS: tuple[Stage, ...] = (fit_zero_shot, score_test)


def stages_for(
    options: TrainOptions,
    finetune: FinetuneOptions | None = None,
    *,
    zero_shot: ZeroShot | None = None,
) -> tuple[Stage, ...]:
    """The preset the options ask for: :data:`IN_MEMORY`, :data:`OUT_OF_CORE`, or from
    descriptions :data:`FROM_DESCRIPTIONS` (each stage does nothing when its option is off, so
    every combination of options has its preset; self-training from descriptions runs
    :data:`IN_MEMORY` each round, see :func:`self_train`)."""
    if zero_shot is not None:
        return FROM_DESCRIPTIONS
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
