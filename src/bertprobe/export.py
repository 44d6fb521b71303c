"""The whole classifier as one ONNX graph (``bertprobe export``).

:func:`export_classifier` writes a model as one graph: token ids to class probabilities, with the
layer(s), the pooling, the scaler and the logistic regression inside, beside its
``tokenizer.json`` and a card, to run where only onnxruntime, tokenizers and numpy are installed
(:class:`ExportedClassifier`, ``examples/predict_onnx.py``).
"""

from __future__ import annotations

import json
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np

from bertprobe.core.errors import BadInputError
from bertprobe.core.extras import require_extra
from bertprobe.core.tables import python_value
from bertprobe.encoders.onnx import OPSET, _quantize, _trace_export, onnx_session

# --- the whole classifier as one graph -----------------------------------------------------

EXPORT_FORMAT = "bertprobe-onnx"
EXPORT_FORMAT_VERSION = 1
EXPORT_FILES = ("model.onnx", "tokenizer.json", "card.json")
INPUT_NAMES = ("input_ids", "attention_mask")
OUTPUT_NAME = "probabilities"


@dataclass(frozen=True)
class LinearHead:
    """A probe as arithmetic: ``z = ((x - mean) / scale) @ coef.T + intercept``, then ``link``.

    ``link`` is how scikit-learn turns ``z`` into probabilities: ``"softmax"`` (multinomial
    logistic regression), ``"binary"`` (one score; ``[1 - s, s]`` with ``s = sigmoid(z)``) or
    ``"one-vs-rest"`` (``sigmoid(z)`` per class, divided by its row sum: SGD's multiclass).
    """

    mean: np.ndarray
    scale: np.ndarray
    coef: np.ndarray
    intercept: np.ndarray
    link: Literal["softmax", "binary", "one-vs-rest"]


def linear_head(probe: Any) -> LinearHead:
    """The scaler and linear model of a fitted :class:`~bertprobe.heads.probe.LinearProbe` or
    :class:`~bertprobe.heads.probe.OutOfCoreProbe`, as arrays (float64)."""
    from sklearn.linear_model import LogisticRegression, SGDClassifier
    from sklearn.preprocessing import StandardScaler

    from bertprobe.heads.probe import LinearProbe, OutOfCoreProbe

    if isinstance(probe, LinearProbe):
        steps = dict(probe.pipeline_.steps)
        scaler, linear = steps.get("scale"), steps["logreg"]
    elif isinstance(probe, OutOfCoreProbe):
        scaler, linear = probe.scaler_, probe.classifier_
    else:
        raise BadInputError(
            f"the probe is a {type(probe).__name__}, not a LinearProbe or OutOfCoreProbe; "
            "only linear probes can be exported"
        )
    n_features = int(linear.coef_.shape[1])
    mean, scale = np.zeros(n_features), np.ones(n_features)
    if scaler is not None:
        if not isinstance(scaler, StandardScaler):
            raise BadInputError(f"the probe's scaler is a {type(scaler).__name__}; cannot export")
        if scaler.mean_ is not None:
            mean = np.asarray(scaler.mean_, dtype=np.float64)
        if scaler.scale_ is not None:
            scale = np.asarray(scaler.scale_, dtype=np.float64)
    coef = np.asarray(linear.coef_, dtype=np.float64)
    intercept = np.asarray(linear.intercept_, dtype=np.float64)
    if coef.shape[0] == 1:
        link: Literal["softmax", "binary", "one-vs-rest"] = "binary"
    elif isinstance(linear, SGDClassifier):
        link = "one-vs-rest"
    elif isinstance(linear, LogisticRegression):
        link = "softmax"  # scikit-learn >= 1.5: multinomial for every solver but liblinear
    else:
        raise BadInputError(f"the probe's model is a {type(linear).__name__}; cannot export")
    return LinearHead(mean, scale, coef, intercept, link)


def export_classifier(
    model: Any, out: str | Path, int8: bool = False, *, check: bool = True
) -> Path:
    """Write a model as one ONNX graph from token ids to class probabilities; returns ``out``.

    ``model`` is a :class:`~bertprobe.Classifier` or a model folder. ``out`` (a new or empty
    folder, or an earlier export, which is replaced) gets ``model.onnx`` (inputs ``input_ids``
    and ``attention_mask``, int64 ``[batch, seq]``; output ``probabilities``, float32
    ``[batch, n_classes]`` in the order of the card's ``classes``), ``tokenizer.json`` (the
    encoder's fast tokenizer, set to truncate at the model's max length and pad to the longest
    text of a batch) and ``card.json``. The graph holds the encoder, the layer(s), the pooling
    (:func:`bertprobe.encoders.encode._pool` itself), the scaler and the logistic regression;
    running it
    needs onnxruntime, tokenizers and numpy only. ``int8`` quantizes its weights as the
    ``onnx-int8`` backend does. ``check`` compares the head in the graph with the probe's own
    ``predict_proba`` on random vectors before anything is written.

    A model that votes with a TF-IDF model (``train --auto``) is refused: the TF-IDF side works
    on raw text, which the graph does not see.
    """
    from bertprobe import __version__
    from bertprobe.data.files import staged_folder
    from bertprobe.encoders.encode import RunOptions
    from bertprobe.model.classifier import Classifier

    require_extra("onnx")
    classifier = model if isinstance(model, Classifier) else Classifier.load(model)
    features = classifier.card.get("features", {})
    if classifier.text_model is not None:
        chosen = ",".join(str(x) for x in classifier.spec.layers)
        raise BadInputError(
            "this model votes with a TF-IDF model over raw text (train --auto chose the vote), "
            "which an ONNX graph of token ids cannot hold; retrain without --auto, with the "
            f"features it chose: --pooling {classifier.spec.pooling} --layer {chosen}"
        )
    head = linear_head(classifier.probe)
    destination = check_export_destination(out).absolute()  # "." has no name or parent
    encoder = RunOptions().load(classifier.encoder)  # torch, on the CPU
    max_length = int(classifier.spec.max_length or features.get("max_length") or encoder.max_length)
    layers = [encoder.layer_index(layer) for layer in classifier.spec.layers]
    graph = _probability_module(encoder.model, layers, classifier.spec.pooling, head)
    if check:
        _check_head(graph, classifier.probe, encoder.hidden_size * len(layers))
    card = {
        "format": EXPORT_FORMAT,
        "format_version": EXPORT_FORMAT_VERSION,
        "source_model": classifier.card.get("id"),
        "classes": [python_value(c) for c in classifier.classes],
        "inputs": list(INPUT_NAMES),
        "output": OUTPUT_NAME,
        "max_length": max_length,
        "encoder": {"name": classifier.encoder.name, "fingerprint": classifier.encoder.fingerprint},
        "pooling": classifier.spec.pooling,
        "layers": layers,
        "head": head.link,
        "int8": int8,
        "bertprobe_version": __version__,
        "opset": OPSET,
    }
    with staged_folder(destination) as staging:
        fp32 = staging / ("model.fp32.onnx" if int8 else "model.onnx")
        sample = encoder.tokenizer(
            ["an example", "a longer example sentence"], padding=True, return_tensors="pt"
        )
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # shape branches the tracer notes; see _export
            _trace_export(graph, sample, {"batch": 0, "seq": 1}, fp32, output=OUTPUT_NAME)
        if int8:
            _quantize(fp32, staging / "model.onnx", only_under="/encoder/")
            fp32.unlink()
        _save_tokenizer(encoder.tokenizer, max_length, staging / "tokenizer.json")
        (staging / "card.json").write_text(json.dumps(card, indent=2) + "\n", encoding="utf-8")
    return destination


def check_export_destination(out: str | Path) -> Path:
    """Refuse a place an export cannot go: a file, or a folder holding something else."""
    from bertprobe.data.files import check_output_path

    folder = check_output_path(out, what="--out", folder=True)
    if folder.is_dir() and any(folder.iterdir()) and not _is_export(folder):
        raise BadInputError(
            f"--out {folder} exists and is not a bertprobe ONNX export; choose a new folder "
            "or empty it"
        )
    return folder


def _is_export(folder: Path) -> bool:
    try:
        card = json.loads((folder / "card.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    return isinstance(card, dict) and card.get("format") == EXPORT_FORMAT


def _probability_module(encoder_model, layers: list[int], pooling: str, head: LinearHead):
    """A torch module: (input_ids, attention_mask) -> probabilities, as the model computes them."""
    import torch

    from bertprobe.encoders.encode import _pool

    class Probabilities(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.encoder = encoder_model
            for name in ("mean", "scale", "coef", "intercept"):
                values = torch.from_numpy(getattr(head, name).astype(np.float32))
                self.register_buffer(name, values)

        def forward(self, input_ids, attention_mask):
            hidden = self.encoder(
                input_ids=input_ids, attention_mask=attention_mask, output_hidden_states=True
            ).hidden_states
            pooled = [_pool(hidden[layer], attention_mask, pooling) for layer in layers]
            return self.head(torch.cat(pooled, dim=-1))

        def head(self, features):
            scores = ((features - self.mean) / self.scale) @ self.coef.T + self.intercept
            if head.link == "softmax":
                return torch.softmax(scores, dim=-1)
            positive = torch.sigmoid(scores)
            if head.link == "binary":
                return torch.cat([1 - positive, positive], dim=-1)
            return positive / positive.sum(dim=-1, keepdim=True)

    return Probabilities().eval()


def _check_head(graph, probe: Any, n_features: int, n_rows: int = 64) -> None:
    """The head's arithmetic against the probe's own predict_proba, on vectors of its scale."""
    import torch

    head = linear_head(probe)
    rng = np.random.default_rng(0)
    X = (rng.normal(size=(n_rows, n_features)) * head.scale + head.mean).astype(np.float32)
    with torch.inference_mode():
        ours = graph.head(torch.from_numpy(X)).numpy()
    theirs = probe.predict_proba(X)
    if ours.shape != theirs.shape or not np.allclose(ours, theirs, atol=1e-4):
        raise RuntimeError(
            f"the exported head differs from {type(probe).__name__}.predict_proba "
            f"(largest difference {np.abs(ours - theirs).max():.2g}); a bug in bertprobe"
        )


def _save_tokenizer(tokenizer, max_length: int, target: Path) -> None:
    """The fast tokenizer's own file, set to truncate and pad as bertprobe's batches are."""
    from tokenizers import Tokenizer

    backend = Tokenizer.from_str(tokenizer.backend_tokenizer.to_str())
    backend.enable_truncation(max_length=max_length, direction=tokenizer.truncation_side)
    backend.enable_padding(
        direction=tokenizer.padding_side,
        pad_id=tokenizer.pad_token_id,
        pad_token=tokenizer.pad_token,
    )
    backend.save(str(target))


class ExportedClassifier:
    """An export folder of :func:`export_classifier`, run with onnxruntime and tokenizers only
    (what ``examples/predict_onnx.py`` does, with batches and a thread count).

    Example:
        >>> exported = ExportedClassifier("models/sst2-onnx")  # doctest: +SKIP
        >>> exported.predict(["a gorgeous, witty film"])  # doctest: +SKIP
        [1]
    """

    def __init__(self, folder: str | Path, threads: int | None = None) -> None:
        from tokenizers import Tokenizer

        self.folder = Path(folder)
        if not _is_export(self.folder):
            raise BadInputError(
                f"{self.folder} is not a bertprobe ONNX export (no card.json of one); write one "
                "with 'bertprobe export --model MODEL --out FOLDER'"
            )
        self.card = json.loads((self.folder / "card.json").read_text(encoding="utf-8"))
        self.classes: list = self.card["classes"]
        self.tokenizer = Tokenizer.from_file(str(self.folder / "tokenizer.json"))
        self.session = onnx_session(self.folder / "model.onnx", threads)

    def predict_proba(self, texts: list[str], batch_size: int = 32) -> np.ndarray:
        """Probabilities, one row per text, columns in the order of :attr:`classes`; texts
        are run ``batch_size`` at a time, in the order given."""
        rows = [np.zeros((0, len(self.classes)), dtype=np.float32)]
        for start in range(0, len(texts), batch_size):
            encodings = self.tokenizer.encode_batch(list(texts[start : start + batch_size]))
            inputs = {
                "input_ids": np.array([e.ids for e in encodings], dtype=np.int64),
                "attention_mask": np.array([e.attention_mask for e in encodings], dtype=np.int64),
            }
            rows.append(self.session.run([self.card["output"]], inputs)[0])
        return np.concatenate(rows)

    def predict(self, texts: list[str], batch_size: int = 32) -> list:
        """The most probable label of each text."""
        proba = self.predict_proba(texts, batch_size)
        return [self.classes[i] for i in proba.argmax(axis=1)]
