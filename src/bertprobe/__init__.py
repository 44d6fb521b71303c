"""bertprobe: sentence classifiers from a frozen transformer encoder and a linear probe.

Texts flow one way: :mod:`~bertprobe.data.files` reads them, :mod:`~bertprobe.encoders.encode`
turns them into
vectors (through the :mod:`~bertprobe.encoders.cache`), :mod:`~bertprobe.heads.probe` learns the
classifier.
:mod:`~bertprobe.model` holds the model object (:class:`Classifier`) and the training entry
point (:func:`train`), and :mod:`~bertprobe.model.persist` its folder format; the CLI, the report
and
the service are shells over them.

Example:
    >>> from bertprobe import Classifier, EncoderOptions
    >>> model = Classifier.fit(texts, labels, encoding=EncoderOptions("minilm"))  # doctest: +SKIP
    >>> model.save("models/mine")  # doctest: +SKIP
    >>> Classifier.load("models/mine").predict(["a gorgeous, witty film"])  # doctest: +SKIP
    array([1])
"""

from bertprobe.core.errors import (
    BadInputError,
    BertprobeError,
    EncoderNotFoundError,
    ModelFolderError,
)
from bertprobe.data.files import ReadOptions
from bertprobe.encoders.embedder import TextEmbedder
from bertprobe.encoders.encode import embed
from bertprobe.encoders.encoder import load_encoder
from bertprobe.encoders.hub import EncoderRef, resolve_encoder
from bertprobe.encoders.options import EncoderOptions, FeatureSpec, RunOptions
from bertprobe.export import ExportedClassifier, export_classifier
from bertprobe.heads.base import Head, register_head
from bertprobe.heads.decision import Decision
from bertprobe.heads.multilabel import MultiLabelProbe
from bertprobe.heads.probe import LinearProbe, OutOfCoreProbe, VotingProbe
from bertprobe.model.classifier import Classifier, load_model
from bertprobe.model.explain import Explanation, erasure_scores
from bertprobe.model.persist import save_model
from bertprobe.model.stream import PredictFileStats, predict_file
from bertprobe.model.train import TrainOptions, TrainResult, sweep, train
from bertprobe.training.callbacks import TrainingCallback
from bertprobe.training.compare import Comparison, compare
from bertprobe.training.contrastive import ContrastiveOptions
from bertprobe.training.distill import DistillOptions
from bertprobe.training.evaluation import Evaluation, MultiLabelEvaluation
from bertprobe.training.finetune import FinetuneOptions, FinetuneResult

# The name before 0.2; kept so existing code goes on working.
ProbeModel = Classifier

# The one place the version is written: pyproject.toml reads it from here (as text, without
# importing the package), and `bertprobe --version` prints it.
__version__ = "0.1.0"

__all__ = [
    "BadInputError",
    "BertprobeError",
    "Classifier",
    "Comparison",
    "Decision",
    "EncoderNotFoundError",
    "EncoderOptions",
    "EncoderRef",
    "Evaluation",
    "Explanation",
    "ExportedClassifier",
    "FeatureSpec",
    "ContrastiveOptions",
    "DistillOptions",
    "FinetuneOptions",
    "FinetuneResult",
    "Head",
    "LinearProbe",
    "ModelFolderError",
    "MultiLabelEvaluation",
    "MultiLabelProbe",
    "OutOfCoreProbe",
    "PredictFileStats",
    "ProbeModel",
    "ReadOptions",
    "RunOptions",
    "TextEmbedder",
    "TrainOptions",
    "TrainResult",
    "TrainingCallback",
    "compare",
    "embed",
    "erasure_scores",
    "export_classifier",
    "load_encoder",
    "load_model",
    "predict_file",
    "register_head",
    "resolve_encoder",
    "save_model",
    "sweep",
    "train",
    "VotingProbe",
]
