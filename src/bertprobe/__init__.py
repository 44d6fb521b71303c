"""bertprobe: sentence classifiers from a frozen transformer encoder and a linear probe.

Texts flow one way: :mod:`~bertprobe.data` reads them, :mod:`~bertprobe.encode` turns them into
vectors (through the :mod:`~bertprobe.cache`), :mod:`~bertprobe.probe` learns the classifier, and
:mod:`~bertprobe.persist` saves and loads the result.

Example:
    >>> from sklearn.pipeline import make_pipeline
    >>> from bertprobe import LinearProbe, TextEmbedder
    >>> from bertprobe.datasets import load_sst2
    >>> train, test = load_sst2("train"), load_sst2("test")
    >>> clf = make_pipeline(TextEmbedder("minilm", pooling="mean"), LinearProbe())
    >>> clf.fit(train.texts, train.labels).score(test.texts, test.labels)  # doctest: +SKIP
    0.81...
"""

from bertprobe.data import ReadOptions
from bertprobe.encode import (
    EncoderOptions,
    EncoderRef,
    FeatureSpec,
    TextEmbedder,
    embed,
    load_encoder,
    resolve_encoder,
)
from bertprobe.errors import BadInputError, BertprobeError, EncoderNotFoundError, ModelFolderError
from bertprobe.model import TrainOptions, TrainResult, train
from bertprobe.persist import Classifier, ProbeModel, load_model, save_model
from bertprobe.probe import LinearProbe

# The one place the version is written: pyproject.toml reads it from here (as text, without
# importing the package), and `bertprobe --version` prints it.
__version__ = "0.1.0"

__all__ = [
    "BadInputError",
    "BertprobeError",
    "Classifier",
    "EncoderNotFoundError",
    "EncoderOptions",
    "EncoderRef",
    "FeatureSpec",
    "LinearProbe",
    "ModelFolderError",
    "ProbeModel",
    "ReadOptions",
    "TextEmbedder",
    "TrainOptions",
    "TrainResult",
    "embed",
    "load_encoder",
    "load_model",
    "resolve_encoder",
    "save_model",
    "train",
]
