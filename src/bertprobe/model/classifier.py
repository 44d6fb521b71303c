"""The model: an encoder's features and a fitted head, with its card (:class:`Classifier`)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from bertprobe.core.errors import BadInputError, BertprobeError
from bertprobe.core.tables import python_value
from bertprobe.data.files import (
    LabelledTexts,
    ReadOptions,
    align_labels,
)
from bertprobe.data.multilabel import as_label_sets
from bertprobe.encoders.embedder import TextEmbedder
from bertprobe.encoders.encode import EmbedStats, embed
from bertprobe.encoders.hub import EncoderRef
from bertprobe.encoders.options import EncoderOptions, FeatureSpec, RunOptions
from bertprobe.heads.multilabel import MultiLabelProbe, indicator, multilabel_scores
from bertprobe.heads.probe import (
    LinearProbe,
    OutOfCoreProbe,
    VotingProbe,
    check_metric,
    metric_score,
)
from bertprobe.model import stream
from bertprobe.model.evaluation import Evaluation, MultiLabelEvaluation
from bertprobe.model.explain import Explanation, explain
from bertprobe.model.gradients import DEFAULT_STEPS
from bertprobe.model.persist import (
    read_card,
    read_model,
    save_model,
)
from bertprobe.model.stream import PredictFileStats
from bertprobe.training.contrastive import ContrastiveOptions
from bertprobe.training.finetune import FinetuneOptions
from bertprobe.training.options import TrainOptions
from bertprobe.training.pipeline import TrainingRun, accuracy, run_stages, stages_for, start_run

Probe = LinearProbe | OutOfCoreProbe | MultiLabelProbe


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
    ) -> Classifier:
        """A model trained on ``texts`` and ``labels`` (see :func:`train` for files, a test
        set, saving and the full record of what training did).

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
        )
        return cls.from_run(run_stages(run, stages_for(run.options)))

    @classmethod
    def from_run(cls, run: TrainingRun) -> Classifier:
        """The model a finished :class:`~bertprobe.training.pipeline.TrainingRun` made (not
        yet saved: its card holds only the decision threshold, for ``threshold="auto"``)."""
        assert run.encoder is not None and run.head is not None
        encoder = run.encoder.ref
        if run.base is not None and run.tuned is not None:  # named after its base encoder
            how = "contrastive-tuned" if run.tuned.objective == "contrastive" else "fine-tuned"
            encoder = replace(encoder, name=f"{run.base.name} ({how})")
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
        refused (see :func:`bertprobe.model.persist.read_model`)."""
        return cls(**vars(read_model(folder)))  # SavedModel's fields are the model's

    @classmethod
    def from_pipeline(cls, pipeline: Any) -> Classifier:
        """A fitted ``Pipeline([TextEmbedder, LinearProbe])`` as a model, ready to :meth:`save`."""
        from sklearn.utils.validation import check_is_fitted

        steps = [step for _, step in getattr(pipeline, "steps", [])]
        if (
            len(steps) != 2
            or not isinstance(steps[0], TextEmbedder)
            or not isinstance(steps[1], LinearProbe | OutOfCoreProbe)
        ):
            raise BertprobeError(
                "from_pipeline takes a Pipeline of two steps: a TextEmbedder, then a "
                "LinearProbe or OutOfCoreProbe"
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
                for k in ("sweep", "finetune", "decision_threshold", "multi_label")
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
    def multi_label(self) -> bool:
        """Whether a text may get several labels (or none): a :class:`MultiLabelProbe`."""
        return isinstance(self.probe, MultiLabelProbe)

    @property
    def thresholds(self) -> np.ndarray | None:
        """A multi-label model's threshold per label (on its probability); else None."""
        return self.probe.thresholds_ if isinstance(self.probe, MultiLabelProbe) else None

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
    ) -> np.ndarray:
        """The most probable label of each text, or with ``threshold`` (two classes only) the
        second class where its probability reaches it; ``"auto"`` is the threshold chosen at
        training time (the card's ``decision_threshold``). For a multi-label model, the 0/1
        matrix of labels predicted (columns :attr:`classes`; see :meth:`predict_labels`)."""
        cut = self.threshold(threshold)
        if isinstance(self.probe, MultiLabelProbe):
            return self.probe.predict(self.embed(texts, run)[0])
        return self.decide(self.predict_proba(texts, run), cut)

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

    def threshold(self, threshold: float | str | None) -> float | None:
        """``threshold`` as a number (``"auto"``: the card's), checked; None for argmax."""
        if threshold is None:
            return None
        if len(self.classes) != 2:
            raise BadInputError(
                f"threshold={threshold!r}: a decision threshold is for two classes; this model "
                f"has {len(self.classes)}; leave it out"
            )
        if threshold == "auto":
            stored = self.card.get("decision_threshold")
            if not stored:
                raise BadInputError(
                    "threshold='auto': the model card holds no decision threshold (trained "
                    "before thresholds were stored, with a TF-IDF vote, or never saved); "
                    "retrain, or give a number between 0 and 1"
                )
            return float(stored["value"])
        try:
            value = float(threshold)
        except (TypeError, ValueError):
            value = float("nan")
        if not 0 < value < 1:
            raise BadInputError(
                f"threshold={threshold!r}: give 'auto' or a probability between 0 and 1"
            )
        return value

    def decide(self, proba: np.ndarray, threshold: float | None = None) -> np.ndarray:
        """Labels from probabilities: argmax, or with a (checked) ``threshold`` on the second
        class's probability, that class where it is reached and the first elsewhere."""
        classes = self.probe.classes_
        if threshold is None:
            return classes[np.asarray(proba).argmax(axis=1)]
        return np.where(np.asarray(proba)[:, 1] >= threshold, classes[1], classes[0])

    def predict_labels(self, texts: Sequence[str], run: RunOptions = RunOptions()) -> list[list]:
        """The labels of each text as a list: those at or over their threshold for a
        multi-label model, the most probable one otherwise."""
        if isinstance(self.probe, MultiLabelProbe):
            return self.probe.label_sets(self.predict_proba(texts, run))
        return [[python_value(y)] for y in self.predict(texts, run)]

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
            threshold=self.threshold(threshold),
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

        A multi-label model takes each text's labels as a list (or a ``|``-joined string) and
        gives micro / macro F1 and per-label scores (:class:`MultiLabelEvaluation`).
        """
        from sklearn.metrics import classification_report, confusion_matrix

        if isinstance(self.probe, MultiLabelProbe):
            return self._evaluate_label_sets(texts, labels, run, source=source)

        cut = self.threshold(threshold)
        metric = check_metric(metric or self.card.get("metrics", {}).get("metric", "accuracy"))
        y_true = self.align_labels(labels, source)
        unknown = sorted({str(y) for y in y_true} - {str(c) for c in self.classes})
        X, stats = self.embed(texts, run)
        proba = self.head.predict_proba(X, texts=texts)
        predicted = self.decide(proba, cut).tolist()
        # ROC AUC over more than two classes has no column for a label the model never saw.
        scorable = metric != "accuracy" and not (unknown and metric == "roc_auc")
        score = metric_score(metric, y_true, proba, self.classes, predicted) if scorable else None
        if unknown:  # y_true is text then (align_labels): compare like with like
            predicted = [str(p) for p in predicted]
        known = [str(c) if unknown else c for c in self.classes]
        names = sorted(set(predicted) | set(y_true) | set(known), key=str)
        report = classification_report(
            y_true, predicted, labels=names, output_dict=True, zero_division=0
        )
        return Evaluation(
            accuracy=accuracy(y_true, predicted),
            n=len(texts),
            model=self.card.get("id"),
            labels=[python_value(x) for x in names],
            per_class={
                str(x): {
                    k: report[str(x)][k] for k in ("precision", "recall", "f1-score", "support")
                }
                for x in names
            },
            confusion_matrix=confusion_matrix(y_true, predicted, labels=names).tolist(),
            embed_seconds=stats.seconds,
            n_truncated=stats.n_truncated,
            unknown_labels=unknown,
            metric=metric,
            score=score,
            threshold=cut,
        )

    def _evaluate_label_sets(
        self, texts: Sequence[str], labels: Sequence[Any], run: RunOptions, *, source: str
    ) -> MultiLabelEvaluation:
        """A multi-label model scored on texts and their label sets (see :meth:`evaluate`)."""
        assert isinstance(self.probe, MultiLabelProbe)
        probe = self.probe
        classes = probe.classes_.tolist()
        Y_true, unknown = indicator(as_label_sets(labels), classes, source)
        X, stats = self.embed(texts, run)
        Y_pred = probe.predict(X)
        scores = multilabel_scores(Y_true, Y_pred, classes)
        return MultiLabelEvaluation(
            f1_micro=scores["f1_micro"],
            f1_macro=scores["f1_macro"],
            subset_accuracy=scores["subset_accuracy"],
            per_label=scores["per_label"],
            n=len(texts),
            model=self.card.get("id"),
            labels=classes,
            thresholds=dict(zip(classes, probe.thresholds_.tolist(), strict=True)),
            embed_seconds=stats.seconds,
            n_truncated=stats.n_truncated,
            unknown_labels=unknown,
        )

    def align_labels(self, labels: Sequence[Any], source: str = "the labels") -> list:
        """``labels`` as the model's own label values (see
        :func:`bertprobe.data.files.align_labels`)."""
        return align_labels(labels, self.classes, source)


def load_model(folder: str | Path) -> Classifier:
    """A model folder, checked (the same as :meth:`Classifier.load`)."""
    return Classifier.load(folder)
