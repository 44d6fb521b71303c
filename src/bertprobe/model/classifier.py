"""The model: an encoder's features and a fitted head, with its card (:class:`Classifier`)."""

from __future__ import annotations

import warnings
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from bertprobe.core.errors import BadInputError, BertprobeError
from bertprobe.data.files import LabelledTexts, ReadOptions, align_labels
from bertprobe.encoders.embedder import TextEmbedder
from bertprobe.encoders.encode import EmbedStats, embed
from bertprobe.encoders.hub import EncoderRef
from bertprobe.encoders.options import EncoderOptions, FeatureSpec, RunOptions
from bertprobe.heads.base import is_head
from bertprobe.heads.decision import SETS_KEY, Decision
from bertprobe.heads.probe import VotingProbe, check_metric
from bertprobe.model import stream
from bertprobe.model.explain import Explanation, explain
from bertprobe.model.gradients import DEFAULT_STEPS
from bertprobe.model.persist import (
    read_card,
    read_model,
    save_model,
)
from bertprobe.model.sources import local_folder
from bertprobe.model.stream import PredictFileStats
from bertprobe.training.callbacks import TrainingCallback
from bertprobe.training.contrastive import ContrastiveOptions
from bertprobe.training.distill import DistillOptions
from bertprobe.training.evaluation import Evaluation, MultiLabelEvaluation
from bertprobe.training.finetune import FinetuneOptions
from bertprobe.training.options import TrainOptions
from bertprobe.training.pipeline import (
    TrainingRun,
    agreement,
    run_stages,
    stages_for,
    start_run,
)
from bertprobe.training.selftrain import self_train
from bertprobe.training.target import Target, target_for
from bertprobe.training.zeroshot import ZeroShot

# A fitted head (see bertprobe.heads.base.Head): what turns the encoder's vectors into
# probabilities. The name is the model's attribute's, kept from when every head was a probe.
Probe = Any


@dataclass
class Classifier:
    """The model: a frozen encoder's features, a fitted probe (and a TF-IDF voter), its card.

    The CLI, the report and the service all predict through this object. Get one by training
    (:meth:`fit`, or :func:`train` for files and the full result), from a model folder
    (:meth:`load`), or from a fitted ``Pipeline(TextEmbedder, LinearProbe)``
    (:meth:`from_pipeline`); :meth:`save` writes a model folder.

    Attributes
    ----------
    card : dict
        The model card (empty until saved or loaded).
    probe : LinearProbe or OutOfCoreProbe
        The fitted classifier over the encoder's vectors.
    encoder : EncoderRef
        The encoder's name, folder and fingerprint.
    spec : FeatureSpec
        Pooling, layers and max length of the vectors the probe was trained on.
    folder : Path or None
        Where the model was saved or loaded from.
    backend : str
        How the encoder runs by default (``torch``, ``onnx``, ``onnx-int8``).
    text_model : sklearn Pipeline or None
        A TF-IDF + logistic regression model that votes with the probe (see
        :class:`~bertprobe.heads.probe.VotingProbe`).
    source : str or None
        What the model was loaded by: its folder, or the MLflow model URI
        (``models:/NAME@ALIAS``) that named it (see :mod:`bertprobe.model.sources`); loading
        it again reads the alias again.

    Examples
    --------
    >>> model = Classifier.fit(train_texts, train_labels,
    ...                        encoding=EncoderOptions("minilm", pooling="mean"))  # doctest: +SKIP
    >>> model.save("models/sst2")  # doctest: +SKIP
    >>> Classifier.load("models/sst2").predict(["a gorgeous, witty film"])  # doctest: +SKIP
    array([1])
    """

    card: dict[str, Any]
    probe: Probe
    encoder: EncoderRef
    spec: FeatureSpec
    folder: Path | None = None
    backend: str = "torch"
    text_model: Any = None
    source: str | None = None

    @classmethod
    def fit(
        cls,
        texts: Sequence[str],
        labels: Sequence[Any],
        *,
        encoding: EncoderOptions = EncoderOptions(),
        options: TrainOptions | None = None,
        finetune: FinetuneOptions | None = None,
        contrastive: ContrastiveOptions | None = None,
        unlabelled: Sequence[str] | None = None,
        distill: DistillOptions | None = None,
        callbacks: Sequence[TrainingCallback] = (),
    ) -> Classifier:
        """A model trained on ``texts`` and ``labels`` (see :func:`train` for files, a test
        set, saving and the full record of what training did).

        ``callbacks``: told of each stage and of each tuning's losses and dev scores (see
        :mod:`bertprobe.training.callbacks`).

        ``distill``: the encoder is first taught by a teacher model (see :meth:`distill`).

        ``contrastive`` and ``finetune`` tune the encoder first (on pairs of the texts, then on
        their labels), as :func:`train` does; the tuned encoder stays in the cache folder.
        ``unlabelled``: texts without labels the probe may self-train on (see :func:`train`)."""
        run = start_run(
            LabelledTexts.from_lists(texts, labels),
            encoding=encoding,
            options=options or TrainOptions(),
            reading=ReadOptions(),
            finetune=finetune,
            contrastive=contrastive,
            unlabelled=unlabelled,
            distill=with_teacher(distill),
        )
        run.callbacks = tuple(callbacks)
        return cls.from_run(run_stages(run, stages_for(run.options)))

    @classmethod
    def distill(
        cls,
        teacher: Classifier | str | Path,
        texts: Sequence[str],
        labels: Sequence[Any] | None = None,
        *,
        student: EncoderOptions = EncoderOptions(pooling="mean"),
        options: DistillOptions | None = None,
        train_options: TrainOptions | None = None,
        unlabelled: Sequence[str] | None = None,
    ) -> Classifier:
        """A student: ``student``'s encoder taught to say what ``teacher`` (a saved model or
        its folder) says of ``texts``, their altered copies (``options.augment``) and
        ``unlabelled``, then the usual probe fitted on its features (see
        :mod:`bertprobe.training.distill`; ``train_options`` as :meth:`fit` takes them).

        Without ``labels``, the teacher's own decisions label ``texts`` (for the probe, and
        mixed into the targets by ``options.gold_weight``): a student from texts alone.

        >>> teacher = Classifier.load("models/mpnet")  # doctest: +SKIP
        >>> student = Classifier.distill(teacher, reviews, student=EncoderOptions("minilm"),
        ...                              options=DistillOptions(teacher, augment=4))
        ... # doctest: +SKIP
        >>> student.agreement(teacher, more_reviews)  # doctest: +SKIP
        0.96...
        """
        model = teacher if isinstance(teacher, Classifier) else cls.load(teacher)
        options = replace(options, teacher=model) if options else DistillOptions(teacher=model)
        if labels is None:
            labels = list(model.predict(list(texts), student.run))
        return cls.fit(
            texts,
            labels,
            encoding=student,
            options=replace(train_options or TrainOptions(), multi_label=model.target.label_sets),
            unlabelled=unlabelled,
            distill=options,
        )

    def agreement(
        self, other: Classifier, texts: Sequence[str], run: RunOptions = RunOptions()
    ) -> float:
        """The share of ``texts`` on which this model decides as ``other`` does (a student
        and its teacher, say): the same label, or for label sets the same label set.

        >>> student.agreement(teacher, test_texts)  # doctest: +SKIP
        0.95...
        """
        if self.target.label_sets != other.target.label_sets:
            raise BadInputError(
                "agreement: one model predicts label sets and the other one label a text; "
                "compare models of one kind",
                param="teacher",
            )
        return agreement(
            self.decision.label_tuples(self.predict_proba(texts, run)),
            other.decision.label_tuples(other.predict_proba(texts, replace(run, backend=None))),
        )

    @classmethod
    def from_descriptions(
        cls,
        descriptions: Mapping[Any, str | Sequence[str]],
        pool: Sequence[str],
        *,
        encoding: EncoderOptions = EncoderOptions(pooling="mean"),
        template: str = "{}",
        temperature: float | str = "auto",
        label_sets: bool = False,
        rounds: int = 0,
        per_class: int | float = 0.25,
        options: TrainOptions | None = None,
        contrastive: ContrastiveOptions | None = None,
        finetune: FinetuneOptions | None = None,
        texts: Sequence[str] | None = None,
        labels: Sequence[Any] | None = None,
    ) -> Classifier:
        """A model from each class's name or descriptions and a pool of unlabelled texts,
        with no labels: the zero-shot head (:class:`~bertprobe.heads.zeroshot.ZeroShotHead`,
        centred on the pool), or with ``rounds`` the model self-training on the pool makes of
        it (each round trained as ``options``, ``contrastive`` and ``finetune`` say; see
        :mod:`bertprobe.training.zeroshot`). ``template`` puts each description in a
        sentence (``"This is a {} review."``); ``label_sets``: several labels a text.

        With a few labelled ``texts`` (and their ``labels``, each a described class), every
        round trains on them beside the pool's surest texts, and there is at least one: the
        descriptions are a prior the labels correct.

        Mean pooling by default: the encoders made for sentence similarity (the bundled
        MiniLM among them) were trained to be read that way, and the similarity to a
        description is what this head measures.

        >>> model = Classifier.from_descriptions(
        ...     {"negative": "negative", "positive": "positive"}, reviews,
        ...     template="This is a {} review.")  # doctest: +SKIP
        >>> model.predict(["a gorgeous, witty film"])  # doctest: +SKIP
        array(['positive'], dtype='<U8')
        """
        zero_shot = ZeroShot(
            descriptions=descriptions,
            template=template,
            temperature=temperature,
            rounds=rounds,
            per_class=per_class,
        )
        options = replace(options or TrainOptions(), multi_label=label_sets)
        if (texts is None) != (labels is None):
            raise BadInputError(
                "give the labelled texts and their labels together (texts= and labels=), "
                "or neither",
                param=("texts", "labels"),
            )
        labelled = (
            LabelledTexts.from_lists(list(texts), list(labels), source="texts=")
            if texts is not None and labels is not None
            else None
        )
        run = start_run(
            labelled,
            encoding=encoding,
            options=options,
            reading=ReadOptions(),
            finetune=finetune,
            contrastive=contrastive,
            unlabelled=pool,
            zero_shot=zero_shot,
        )
        run_stages(run, stages_for(options, zero_shot=zero_shot))
        return cls.from_run(self_train(run))

    @classmethod
    def from_run(cls, run: TrainingRun) -> Classifier:
        """The model a finished :class:`~bertprobe.training.pipeline.TrainingRun` made (not
        yet saved: its card holds only the decision threshold, for ``threshold="auto"``)."""
        assert run.encoder is not None and run.head is not None
        encoder = run.encoder.ref
        if run.base is not None and run.adapted:  # named after its base encoder
            last_tuning = run.adapted[-1][0]
            encoder = replace(encoder, name=f"{run.base.name} ({last_tuning.tuned_as})")
        return cls(
            card={"decision_threshold": run.threshold} if run.threshold is not None else {},
            probe=run.head,
            encoder=encoder,
            spec=run.encoding.spec,
            backend=run.encoding.backend,
            text_model=run.text_model,
        )

    @classmethod
    def load(cls, folder: str | Path) -> Classifier:
        """A model folder, checked: an altered file, an edited card or another encoder is
        refused (see :func:`bertprobe.model.persist.read_model`). ``folder`` may also be an
        MLflow model URI, ``models:/NAME@ALIAS`` (see :mod:`bertprobe.model.sources`)."""
        model = cls(**vars(read_model(local_folder(folder))))  # SavedModel's fields
        model.source = str(folder)
        return model

    @classmethod
    def from_pipeline(cls, pipeline: Any) -> Classifier:
        """A fitted ``Pipeline([TextEmbedder, LinearProbe])`` as a model, ready to :meth:`save`."""
        from sklearn.utils.validation import check_is_fitted

        steps = [step for _, step in getattr(pipeline, "steps", [])]
        if len(steps) != 2 or not isinstance(steps[0], TextEmbedder) or not is_head(steps[1]):
            raise BertprobeError(
                "from_pipeline takes a Pipeline of two steps: a TextEmbedder, then a head "
                "(a LinearProbe, an OutOfCoreProbe, or any head: see bertprobe.heads.base)"
            )
        embedder, probe = steps
        check_is_fitted(embedder, "encoder_ref_")
        check_is_fitted(probe)
        return cls(
            card={},
            probe=probe,
            encoder=embedder.encoder_ref_,
            spec=embedder.spec_,
            backend=embedder.backend,
        )

    def save(self, folder: str | Path) -> Path:
        """Write this model to a folder (replacing an earlier model there); returns the folder."""
        max_length = self.spec.max_length or RunOptions().load(self.encoder).max_length
        tuned = self.card.get("encoder", {}).get("folder") is not None
        base = self.card.get("encoder", {}).get("base")
        folder = save_model(
            folder,
            self.probe,
            self.encoder,
            self.spec,
            max_length=max_length,
            backend=self.backend,
            metrics=self.card.get("metrics"),
            data=self.card.get("data"),
            extra={
                k: self.card[k]
                for k in (
                    "sweep",
                    "contrastive",
                    "distill",
                    "finetune",
                    "decision_threshold",
                    "zero_shot",
                    SETS_KEY,
                )
                if k in self.card
            }
            or None,
            text_model=self.text_model,
            encoder_folder=self.encoder.path if tuned else None,
            base_encoder=(
                EncoderRef(base["name"], Path(), base["fingerprint"], base.get("revision"))
                if base
                else None
            ),
        )
        self.card, self.folder = read_card(folder), folder
        return folder

    @property
    def classes(self) -> list:
        return self.probe.classes_.tolist()

    @property
    def decision(self) -> Decision:
        """How this model's probabilities become labels by default: the head's own rule (the
        argmax, or each label at its threshold for a label-set model). See
        :meth:`decision_for` for a decision threshold."""
        return Decision.for_head(self.probe)

    def decision_for(self, threshold: float | str | None = None) -> Decision:
        """The decision with ``threshold`` applied, checked: ``None`` is :attr:`decision`;
        a number (two classes, one label a text) gives the second class where its
        probability reaches it; ``"auto"`` is the threshold chosen at training time on
        out-of-fold probabilities (the card's ``decision_threshold``)."""
        decision = self.decision
        if threshold is None:
            return decision
        if len(decision.classes) != 2 or decision.label_sets:
            raise BadInputError(
                f"threshold={threshold!r}: a decision threshold is for two classes, one label "
                f"a text; this model has {len(decision.classes)} "
                f"{'labels' if decision.label_sets else 'classes'}; leave it out",
                param="threshold",
            )
        if threshold == "auto":
            stored = self.card.get("decision_threshold")
            if not stored:
                raise BadInputError(
                    "threshold='auto': the model card holds no decision threshold (trained "
                    "before thresholds were stored, with a TF-IDF vote, or never saved); "
                    "retrain, or give a number between 0 and 1",
                    param="threshold",
                )
            threshold = float(stored["value"])
        return decision.with_threshold(threshold)  # type: ignore[arg-type]

    @property
    def id(self) -> str:
        return self.card["id"]

    @property
    def head(self) -> VotingProbe:
        """What turns vectors (and texts) into probabilities: the probe, with its voter."""
        return VotingProbe.prefit(self.probe, self.text_model)

    def embed(
        self, texts: Sequence[str], run: RunOptions = RunOptions()
    ) -> tuple[np.ndarray, EmbedStats]:
        """Vectors as the probe was trained on; ``run.backend`` overrides the model's."""
        with run.open_cache() as cache:
            return embed(
                texts,
                run.load(self.encoder, default_backend=self.backend),
                self.spec,
                run,
                cache=cache,
            )

    def predict_proba(self, texts: Sequence[str], run: RunOptions = RunOptions()) -> np.ndarray:
        """Probabilities, one row per text, columns in the order of :attr:`classes`."""
        return self.head.predict_proba(self.embed(texts, run)[0], texts=texts)

    def predict(
        self,
        texts: Sequence[str],
        run: RunOptions = RunOptions(),
        *,
        threshold: float | str | None = None,
        indicator: bool = False,
    ) -> np.ndarray:
        """What the model says of each text, by its :attr:`decision`: one entry a text, the
        same for every kind of model. For a model of one label a text, that label (an array of
        labels); for a label-set model, the text's label set (a tuple of label names, possibly
        empty; an object array of tuples), as label sets are given to :meth:`fit`.

        ``threshold`` (two classes only): the second class where its probability reaches it;
        ``"auto"`` is the threshold chosen at training time (see :meth:`decision_for`).

        ``indicator`` (deprecated, label-set models only): the 0/1 matrix over
        :attr:`classes` that ``predict`` returned before 0.2; use
        ``model.decision.indicator(model.predict_proba(texts))``.
        """
        decision = self.decision_for(threshold)
        proba = self.predict_proba(texts, run)
        if indicator:
            warnings.warn(
                "predict(indicator=True) is deprecated and goes in the next release: use "
                "model.decision.indicator(model.predict_proba(texts))",
                FutureWarning,
                stacklevel=2,
            )
            return decision.indicator(proba)
        return as_array(decision.labels(proba), decision.label_sets)

    def explain(
        self,
        texts: Sequence[str],
        run: RunOptions = RunOptions(),
        *,
        method: str = "auto",
        occlude: str = "delete",
        threshold: float | str | None = None,
        steps: int = DEFAULT_STEPS,
    ) -> list[Explanation]:
        """Why each text gets its label: a score per word and per class that, with a constant,
        adds up to the class's score (log-odds or logit), one
        :class:`~bertprobe.model.explain.Explanation` per text.

        ``method="auto"`` splits the score exactly where the model is linear in its tokens'
        hidden states (mean pooling, a linear head, no TF-IDF vote), and leaves one word out at
        a time elsewhere (``"occlusion"``, by deleting the word or, ``occlude="mask"``,
        masking it). The special tokens' terms are in the constant.
        ``method="integrated-gradients"`` runs Captum's layer integrated gradients
        (``steps`` points) on any torch encoder with a linear head. See
        :mod:`bertprobe.model.explain` for the methods and their caveats; ``threshold`` as in
        :meth:`predict`.
        """
        return explain(
            self, texts, method=method, occlude=occlude, run=run, threshold=threshold, steps=steps
        )

    def predict_labels(self, texts: Sequence[str], run: RunOptions = RunOptions()) -> list[list]:
        """Deprecated: each text's labels as a list; :meth:`predict` now gives every kind of
        model's answer in one form (a label, or a label set)."""
        warnings.warn(
            "predict_labels() is deprecated and goes in the next release: predict() gives each "
            "text's label, or a label-set model's label set",
            FutureWarning,
            stacklevel=2,
        )
        return [list(y) for y in self.decision.label_tuples(self.predict_proba(texts, run))]

    def predict_file(
        self,
        path: str | Path,
        out: str | Path,
        run: RunOptions = RunOptions(),
        *,
        reading: ReadOptions = ReadOptions(),
        chunk_size: int = 4096,
        on_chunk: Callable[[int], None] | None = None,
        threshold: float | str | None = None,
    ) -> PredictFileStats:
        """Label every text of a file into ``out`` (JSON Lines, CSV or Parquet by its name),
        a chunk at a time and resumably (see :func:`bertprobe.model.stream.predict_file`).

        >>> Classifier.load("models/sst2").predict_file("reviews.txt",
        ...                                             "labels.jsonl")  # doctest: +SKIP
        PredictFileStats(out=PosixPath('labels.jsonl'), n_texts=1000000, ...)
        """
        return stream.predict_file(
            self,
            path,
            out,
            run=run,
            reading=reading,
            chunk_size=chunk_size,
            on_chunk=on_chunk,
            decision=self.decision_for(threshold),
        )

    def evaluate(
        self,
        texts: Sequence[str],
        labels: Sequence[Any],
        run: RunOptions = RunOptions(),
        *,
        source: str = "the labels",
        threshold: float | str | None = None,
        metric: str | None = None,
    ) -> Evaluation | MultiLabelEvaluation:
        """Accuracy, per-class precision / recall / F1 and the confusion matrix on labelled
        texts. Labels the model never saw count as errors; a set sharing none is refused.

        ``threshold`` as in :meth:`predict`. ``metric`` (default: the one the model was
        trained for, from its card) is scored too, when it is not accuracy.

        A label-set model takes each text's labels as a list (or a ``|``-joined string) and
        gives micro / macro F1 and per-label scores (:class:`MultiLabelEvaluation`): what is
        measured is the model's :attr:`target`'s.
        """
        decision = self.decision_for(threshold)
        metric = check_metric(metric or self.card.get("metrics", {}).get("metric", "accuracy"))
        X, stats = self.embed(texts, run)
        proba = self.head.predict_proba(X, texts=texts)
        return self.target.evaluation(
            labels,
            proba,
            decision,
            source=source,
            metric=metric,
            record={
                "n": len(texts),
                "model": self.card.get("id"),
                "embed_seconds": stats.seconds,
                "n_truncated": stats.n_truncated,
            },
        )

    def read_labelled(
        self, data: str | Path | LabelledTexts, reading: ReadOptions = ReadOptions()
    ) -> LabelledTexts:
        """A labelled file read as this model's labels are (label sets for a label-set model,
        read like its training file unless ``reading`` says how), to :meth:`evaluate` on."""
        target = self.target
        return target.read(data, target.reading_for(self.card, reading))

    @property
    def target(self) -> Target:
        """What a label of this model is: one label a text, or a label set (see
        :mod:`bertprobe.training.target`); what :meth:`evaluate` measures follows from it."""
        return target_for(label_sets=self.decision.label_sets)

    def align_labels(self, labels: Sequence[Any], source: str = "the labels") -> list:
        """``labels`` as the model's own label values (see
        :func:`bertprobe.data.files.align_labels`)."""
        return align_labels(labels, self.classes, source)


def with_teacher(distill: DistillOptions | None) -> DistillOptions | None:
    """``distill`` with its teacher loaded, when it names a model folder."""
    if distill is None or not isinstance(distill.teacher, str | Path):
        return distill
    return replace(distill, teacher=Classifier.load(distill.teacher))


def load_model(folder: str | Path) -> Classifier:
    """A model folder, checked (the same as :meth:`Classifier.load`)."""
    return Classifier.load(folder)


def as_array(decided: list, label_sets: bool) -> np.ndarray:
    """Decisions as one array, an entry a text: labels as numpy makes them, label sets (tuples)
    as an object array (numpy would make equal-length tuples a 2-d array)."""
    if not label_sets:
        return np.asarray(decided)
    out = np.empty(len(decided), dtype=object)
    for i, labels in enumerate(decided):
        out[i] = labels
    return out
