"""The whole classifier as one ONNX graph (``bertprobe export``).

:func:`export_classifier` writes a model as one graph: token ids to class probabilities, with the
layer(s), the pooling, the scaler and the logistic regression inside, beside its
``tokenizer.json`` and a card, to run where only onnxruntime, tokenizers and numpy are installed
(:class:`ExportedClassifier`, ``examples/predict_onnx.py``).

A model that chunks long texts (``long="chunk"``) is exported with its windows: the tokenizer cuts
a text into the windows :meth:`~bertprobe.encoders.encoder.LoadedEncoder.windows` gives, and the
graph pools a text's window vectors before its head (see :func:`export_classifier`). A label-set
model's graph gives each label's own probability; the card holds the model's
:class:`~bertprobe.heads.decision.Decision` (each label's threshold, say). A model that votes with
a TF-IDF model (``train --auto``) is exported with the voter's vocabulary, idf and logistic
regression in ``tfidf.json``, which the predictor applies to the raw texts in numpy as scikit-learn
does (:class:`TfidfVote`), then averages with the graph's probabilities as
:class:`~bertprobe.heads.probe.VotingProbe` does.

The voter is not in the graph because ONNX's string operators do not split and weight words as
scikit-learn does: skl2onnx 1.20.0's conversion (fitted on SST-2's first 2,000 training
sentences) differed from ``predict_proba`` by more than 1e-4 on 838 of the 1,821 test sentences
(up to 0.026), as its sublinear term is ``log(1 + tf)`` where scikit-learn's is ``1 + log(tf)``,
ONNX's Tokenizer regex (RE2) has ASCII-only ``\\w`` where scikit-learn's is Unicode ("café",
"naïve"), and its StringNormalizer needs the en_US.UTF-8 locale installed where it runs. The
voter's file is JSON rather than ``.npz``: the predictor reads the card as JSON already, a
float's repr reads back as the same float64, and the file stays a few MB beside a graph of tens.
"""

from __future__ import annotations

import json
import re
import warnings
from pathlib import Path
from typing import Any

import numpy as np

from bertprobe.core.errors import BadInputError
from bertprobe.core.extras import require_extra
from bertprobe.core.tables import python_value
from bertprobe.encoders.onnx import OPSET, _quantize, _trace_export, onnx_session
from bertprobe.heads.decision import SETS_KEY, Decision
from bertprobe.heads.linear import LinearHead, linear_readout

# --- the whole classifier as one graph -----------------------------------------------------

EXPORT_FORMAT = "bertprobe-onnx"
# 2: the card says how long texts are cut ("long", and for "chunk" "stride" and "window_pool"),
# a chunk graph takes a third input ("windows"), and a label-set graph's probabilities are per
# label (the card's label-set flag, "thresholds"). A version-1 card (none of these keys)
# truncated and was single-label, which is how its keys' absence reads.
# 3: a model that votes with a TF-IDF model has the voter in VOTE_FILE, and its card's "vote"
# names that file. Only such an export is written as version 3: the others are version 2
# exports to the letter, so a bertprobe that reads up to 2 still runs them, and refuses (rather
# than silently drops) a vote it cannot compute.
# 4: the card's "decision" holds a decision threshold (older readers would take the argmax); a
# version-2 or -3 export holds a "decision" too, which older readers ignore, deciding alike.
EXPORT_FORMAT_VERSION = 4
EXPORT_FILES = ("model.onnx", "tokenizer.json", "card.json")
VOTE_FILE = "tfidf.json"
INPUT_NAMES = ("input_ids", "attention_mask")
WINDOWS_INPUT = "windows"
OUTPUT_NAME = "probabilities"

# --- the TF-IDF voter, computed beside the graph ---------------------------------------------

# The TfidfVectorizer settings TfidfVote reproduces: anything else is refused at export. Those
# not listed (max_df, min_df, max_features, smooth_idf, vocabulary) only shape the fitted
# vocabulary and idf, which the export carries as fitted; encoding and decode_error only apply
# to bytes, and texts are str.
VOTE_SETTINGS: dict[str, Any] = {
    "input": "content",
    "analyzer": "word",
    "preprocessor": None,
    "tokenizer": None,
    "stop_words": None,
    "strip_accents": None,
    "lowercase": True,
    "token_pattern": r"(?u)\b\w\w+\b",
    "binary": False,
    "use_idf": True,
    "norm": "l2",
    "dtype": np.float64,
}


def vote_record(text_model: Any, classes: list) -> dict[str, Any]:
    """A fitted ``Pipeline(TfidfVectorizer, LogisticRegression[CV])`` as plain numbers and
    strings, for :data:`VOTE_FILE` (what :class:`TfidfVote` computes from).

    ``terms`` is the vocabulary in column order (``terms[j]`` is column ``j``: a list is smaller
    than a term -> column object), ``idf`` the idf per column, ``coef``
    (``[n_classes or 1, n_terms]``), ``intercept`` and ``link`` the logistic regression
    (``"binary"``: one score, ``[1 - s, s]`` with ``s = sigmoid(z)``; ``"softmax"``: one score
    a class). A voter whose vectorizer settings differ from :data:`VOTE_SETTINGS` (its
    ``ngram_range`` and ``sublinear_tf`` may be any) is refused in one line.
    """
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.linear_model import LogisticRegression

    steps = [step for _, step in getattr(text_model, "steps", [])]
    if (
        len(steps) != 2
        or type(steps[0]) is not TfidfVectorizer
        or not isinstance(steps[1], LogisticRegression)
    ):
        raise BadInputError(
            f"the model's voter is a {type(text_model).__name__} of "
            f"{[type(s).__name__ for s in steps]}; the export computes a Pipeline of a "
            "TfidfVectorizer and a LogisticRegression only"
        )
    vectorizer, linear = steps
    params = vectorizer.get_params()
    differing = {k: params[k] for k, v in VOTE_SETTINGS.items() if params[k] != v}
    wanted = {k: repr(v) for k, v in VOTE_SETTINGS.items()}
    min_n, max_n = params["ngram_range"]
    if not 1 <= min_n <= max_n:
        differing["ngram_range"] = params["ngram_range"]
        wanted["ngram_range"] = "(n, m) with 1 <= n <= m"
    if differing:
        shown = ", ".join(f"{k}={v!r}" for k, v in differing.items())
        raise BadInputError(
            f"the model's TF-IDF voter has {shown}; the export reproduces scikit-learn's "
            "TfidfVectorizer only with "
            + ", ".join(f"{k}={wanted[k]}" for k in differing)
            + " (train --auto's voter): retrain with those"
        )
    if getattr(linear, "multi_class", "auto") == "ovr" and len(classes) > 2:
        # A deprecated setting of older scikit-learn: normalized sigmoids, not a softmax.
        raise BadInputError(
            "the TF-IDF voter is one-vs-rest (multi_class='ovr'); cannot export",
            param="multi_class",
        )
    if [python_value(c) for c in linear.classes_] != classes:
        raise BadInputError("the TF-IDF voter's classes differ from the probe's; cannot export")
    terms = [""] * len(vectorizer.vocabulary_)
    for term, column in vectorizer.vocabulary_.items():
        terms[column] = term
    coef = np.asarray(linear.coef_, dtype=np.float64)
    return {
        "lowercase": True,
        "token_pattern": VOTE_SETTINGS["token_pattern"],
        "ngram_range": [int(min_n), int(max_n)],
        "sublinear_tf": bool(params["sublinear_tf"]),
        "norm": "l2",
        "classes": classes,
        # LogisticRegression.predict_proba: one sigmoid for two classes, a softmax for more
        # (multinomial; a one-vs-rest voter is refused above).
        "link": "binary" if coef.shape[0] == 1 else "softmax",
        "terms": terms,
        # json writes a float as its repr, which reads back as the same float64: exact.
        "idf": np.asarray(vectorizer.idf_, dtype=np.float64).tolist(),
        "coef": coef.tolist(),
        "intercept": np.asarray(linear.intercept_, dtype=np.float64).tolist(),
    }


class TfidfVote:
    """The TF-IDF voter of an export (:data:`VOTE_FILE`), computed with ``re`` and numpy as
    scikit-learn's pipeline computes it (``examples/predict_onnx.py`` does the same in a few
    lines).

    A text is lowercased (``str.lower``), split by the token pattern (Python's ``re``, whose
    ``\\w`` is Unicode, as scikit-learn's is), and its word n-grams (``ngram_range``; an n-gram
    is its words joined by one space) looked up in the vocabulary; unknown ones are dropped.
    A term's count ``tf`` becomes ``1 + log(tf)`` with ``sublinear_tf``, is multiplied by its
    idf, and the row is scaled to unit length (a text with no known term stays all zero). The
    logistic regression's scores ``z = x @ coef.T + intercept`` become probabilities by a
    sigmoid (``[1 - s, s]``) for two classes, a softmax for more: what
    ``LogisticRegression.predict_proba`` does.

    Parameters
    ----------
    record : dict
        What :func:`vote_record` wrote.
    """

    def __init__(self, record: dict[str, Any]) -> None:
        self.classes: list = record["classes"]
        self.column = {term: j for j, term in enumerate(record["terms"])}
        self.pattern = re.compile(record["token_pattern"])
        self.min_n, self.max_n = record["ngram_range"]
        self.sublinear_tf = bool(record["sublinear_tf"])
        self.binary = record["link"] == "binary"
        self.idf = np.asarray(record["idf"], dtype=np.float64)
        self.coef = np.asarray(record["coef"], dtype=np.float64)
        self.intercept = np.asarray(record["intercept"], dtype=np.float64)

    @classmethod
    def read(cls, path: Path) -> TfidfVote:
        return cls(json.loads(path.read_text(encoding="utf-8")))

    def columns(self, text: str) -> tuple[np.ndarray, np.ndarray]:
        """A text's known n-grams: their columns, ascending, and their counts."""
        words = self.pattern.findall(text.lower())
        found = [
            self.column.get(" ".join(words[i : i + n]))
            for n in range(self.min_n, self.max_n + 1)
            for i in range(len(words) - n + 1)
        ]
        known = np.array([j for j in found if j is not None], dtype=np.int64)
        return np.unique(known, return_counts=True)

    def scores(self, texts: list[str]) -> np.ndarray:
        """The logistic regression's scores, ``[text, n_classes or 1]``."""
        rows = np.empty((len(texts), self.coef.shape[0]))
        for i, text in enumerate(texts):
            columns, counts = self.columns(text)
            tf = counts.astype(np.float64)
            if self.sublinear_tf:
                tf = np.log(tf) + 1.0  # scikit-learn's order: log, then + 1
            x = tf * self.idf[columns]
            norm = np.sqrt(x @ x)
            if norm > 0:  # scikit-learn leaves a row with no known term at zero
                x = x / norm
            # Summed in ascending column order, as scikit-learn's sparse row product is.
            rows[i] = self.coef[:, columns] @ x + self.intercept
        return rows

    def predict_proba(self, texts: list[str]) -> np.ndarray:
        """Probabilities, one row a text, columns in the order of :attr:`classes` (float64)."""
        z = self.scores(texts)
        if self.binary:
            positive = 1.0 / (1.0 + np.exp(-z[:, 0]))
            return np.stack([1.0 - positive, positive], axis=1)
        exp = np.exp(z - z.max(axis=1, keepdims=True))
        return exp / exp.sum(axis=1, keepdims=True)


def _check_vote(vote: TfidfVote, text_model: Any, n_texts: int = 64) -> None:
    """The voter's arithmetic against the pipeline's own predict_proba, on texts of its terms:
    some repeated (sublinear tf), in other cases, with punctuation, unknown words and none."""
    rng = np.random.default_rng(0)
    terms = list(vote.column)
    texts = ["", "¿Qué? ÉTÉ naïve café!!", "zzqx-unknown wordsxq", *terms[:3]]
    for _ in range(n_texts):
        picked = [terms[j] for j in rng.integers(0, len(terms), size=rng.integers(1, 9))]
        picked += picked[: rng.integers(0, 3)]  # a repeat or two
        texts.append(", ".join(w.upper() if rng.random() < 0.2 else w for w in picked) + ".")
    ours, theirs = vote.predict_proba(texts), text_model.predict_proba(texts)
    if ours.shape != theirs.shape or not np.allclose(ours, theirs, rtol=0, atol=1e-9):
        raise RuntimeError(
            "the exported TF-IDF voter differs from its predict_proba (largest difference "
            f"{np.abs(ours - theirs).max():.2g}); a bug in bertprobe"
        )


def export_classifier(
    model: Any,
    out: str | Path,
    int8: bool = False,
    *,
    check: bool = True,
    threshold: float | str | None = None,
) -> Path:
    """Write a model as one ONNX graph from token ids to class probabilities; returns ``out``.

    ``model`` is a :class:`~bertprobe.Classifier` or a model folder. ``out`` (a new or empty
    folder, or an earlier export, which is replaced) gets ``model.onnx`` (inputs ``input_ids``
    and ``attention_mask``, int64 ``[batch, seq]``; output ``probabilities``, float32
    ``[batch, n_classes]`` in the order of the card's ``classes``), ``tokenizer.json`` (the
    encoder's fast tokenizer, set to truncate at the model's max length and pad to the longest
    text of a batch) and ``card.json``. The graph holds the encoder, the layer(s), the pooling
    (:func:`bertprobe.encoders.pooling.pool_tokens` itself), the scaler and the logistic regression;
    running it needs onnxruntime, tokenizers and numpy only. ``int8`` quantizes its weights as
    the ``onnx-int8`` backend does. ``check`` compares the head (and a chunk model's window
    pooling) in the graph with the model's own arithmetic on random vectors before anything is
    written.

    A model that chunks long texts (``long="chunk"``; the card's ``long``, ``stride`` and
    ``window_pool`` say how) is exported with its windows. ``tokenizer.json`` then truncates with
    the model's stride, so a text's ``Encoding`` and its ``overflowing`` encodings are the
    windows ``LoadedEncoder.windows`` embeds, special tokens included. The graph takes every
    window of a batch of texts as a row of ``input_ids``/``attention_mask``
    (``[window, seq]``), and a third input ``windows``, int64 ``[batch, window]``, 1 where a
    window is the text's; it pools each window as the model does, pools a text's window vectors
    (their mean or element-wise maximum, as the model's ``window_pool``) and applies the head to
    that one vector (why in that order: :func:`_probability_module`).

    The card's ``decision`` is how the probabilities become labels
    (:class:`~bertprobe.heads.decision.Decision`'s record: the argmax, a ``threshold`` on the
    second class, given here as to :meth:`~bertprobe.model.classifier.Classifier.predict`, or
    each label at its threshold), and what :class:`ExportedClassifier` and the browser page
    decide by. A label-set model's output is each label's own probability (a sigmoid each; a
    row need not sum to 1). How older bertprobes read the card: :func:`_card`.

    A model that votes with a TF-IDF model (``train --auto``) gets a fourth file,
    :data:`VOTE_FILE` (:func:`vote_record`: the vocabulary, idf and logistic regression as
    JSON), its card ``"vote": {"file": "tfidf.json", "combine": "mean"}`` and format version 3:
    the predictor computes the voter's probabilities from the raw texts in numpy
    (:class:`TfidfVote`) and averages them with the graph's, as
    :class:`~bertprobe.heads.probe.VotingProbe` does (why not in the graph, and why JSON: the
    module docstring). ``int8`` does not touch it. ``check`` compares the voter's arithmetic
    with its ``predict_proba`` too.
    """
    from bertprobe.data.files import staged_folder
    from bertprobe.encoders.options import RunOptions
    from bertprobe.model.classifier import Classifier

    require_extra("onnx")
    classifier = model if isinstance(model, Classifier) else Classifier.load(model)
    decision = classifier.decision_for(threshold)
    head = linear_readout(classifier.probe)
    vote = _checked_vote(classifier, check)
    destination = check_export_destination(out).absolute()  # "." has no name or parent
    encoder = RunOptions().load(classifier.encoder)  # torch, on the CPU
    layers = [encoder.layer_index(layer) for layer in classifier.spec.layers]
    max_length, long = _text_cut(classifier, encoder)
    # A truncating model's ``long`` has no window keys: no window pooling, no stride.
    graph = _probability_module(
        encoder.model, layers, classifier.spec.pooling, head, window_pool=long.get("window_pool")
    )
    if check:
        _check_head(graph, classifier.probe, encoder.hidden_size * len(layers))
    card = _card(
        classifier, decision, head.link, layers, max_length, long, voted=vote is not None, int8=int8
    )
    with staged_folder(destination) as staging:
        _write_graph(graph, encoder.tokenizer, staging, int8=int8)
        stride = int(long.get("stride", 0))
        _save_tokenizer(encoder.tokenizer, max_length, staging / "tokenizer.json", stride=stride)
        if vote is not None:
            text = json.dumps(vote, ensure_ascii=False, separators=(",", ":"))
            (staging / VOTE_FILE).write_text(text + "\n", encoding="utf-8")
        (staging / "card.json").write_text(json.dumps(card, indent=2) + "\n", encoding="utf-8")
    return destination


def _checked_vote(classifier: Any, check: bool) -> dict[str, Any] | None:
    """The model's TF-IDF voter as :func:`vote_record` writes it, or ``None`` without one.

    With ``check``, the record's arithmetic (:class:`TfidfVote`) is compared with the voter's
    own ``predict_proba`` first (:func:`_check_vote`), so a voter the export would compute
    differently is refused before anything is written.
    """
    if classifier.text_model is None:
        return None
    vote = vote_record(classifier.text_model, [python_value(c) for c in classifier.classes])
    if check:
        _check_vote(TfidfVote(vote), classifier.text_model)
    return vote


def _text_cut(classifier: Any, encoder: Any) -> tuple[int, dict[str, Any]]:
    """How the export's tokenizer and graph cut a text, as the model does.

    Returns
    -------
    max_length : int
        The model's token limit: its feature spec's, else its card's, else the encoder's.
    long : dict
        The card's long-text keys: ``{"long": "truncate"}``, or for a chunk model
        ``"chunk"`` with its ``stride`` (resolved against ``max_length``) and ``window_pool``.
        A chunk model's windows are asked of the encoder once here, so that a stride it cannot
        cut refuses in its one line before the graph is traced.
    """
    features = classifier.card.get("features", {})
    max_length = int(classifier.spec.max_length or features.get("max_length") or encoder.max_length)
    long = {"long": "truncate", **classifier.spec.long_record(max_length)}
    if long["long"] == "chunk":
        encoder.windows([""], max_length, int(long["stride"]))  # its one-line refusals, if any
    return max_length, long


def _card(
    classifier: Any,
    decision: Decision,
    link: str,
    layers: list[int],
    max_length: int,
    long: dict[str, Any],
    *,
    voted: bool,
    int8: bool,
) -> dict[str, Any]:
    """The export's ``card.json``: what the predictor needs, and where the export came from.

    A label-set model's card says so twice: in its ``decision``, and as exports before the
    decision did (:meth:`~bertprobe.heads.decision.Decision.legacy_record`: the label-set flag
    and the ``thresholds`` in the order of ``classes``), so that an older bertprobe reads it
    right. Its ``format_version`` is the oldest that holds it (:func:`_format_version`): a
    decision threshold is a rule older readers do not know, so such an export is version 4,
    which they refuse rather than decide otherwise.
    """
    from bertprobe import __version__

    return {
        "format": EXPORT_FORMAT,
        "format_version": _format_version(decision, voted),
        "source_model": classifier.card.get("id"),
        "classes": [python_value(c) for c in classifier.classes],
        "decision": decision.record(),
        **decision.legacy_record(),
        "inputs": [*INPUT_NAMES, *([WINDOWS_INPUT] if long["long"] == "chunk" else [])],
        "output": OUTPUT_NAME,
        "max_length": max_length,
        **long,
        "encoder": {"name": classifier.encoder.name, "fingerprint": classifier.encoder.fingerprint},
        "pooling": classifier.spec.pooling,
        "layers": layers,
        "head": link,
        # The probabilities are the mean of the graph's and the voter's (VotingProbe's).
        **({"vote": {"file": VOTE_FILE, "combine": "mean"}} if voted else {}),
        "int8": int8,
        "bertprobe_version": __version__,
        "opset": OPSET,
    }


def _write_graph(graph: Any, tokenizer: Any, staging: Path, *, int8: bool) -> None:
    """Trace ``graph`` (:func:`_probability_module`'s) to ``staging / "model.onnx"``.

    The tracer runs it on two short texts; a chunk model's graph (one with a ``window_pool``)
    takes the third input, ``windows`` (:func:`_trace_chunk_export`). With ``int8`` the float32
    graph is traced beside it first, then quantized into ``model.onnx`` (the encoder's weights
    only, as the ``onnx-int8`` backend does) and removed.
    """
    fp32 = staging / ("model.fp32.onnx" if int8 else "model.onnx")
    sample = tokenizer(
        ["an example", "a longer example sentence"], padding=True, return_tensors="pt"
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # shape branches the tracer notes; see _export
        if graph.window_pool is not None:
            _trace_chunk_export(graph, sample, fp32)
        else:
            _trace_export(graph, sample, {"batch": 0, "seq": 1}, fp32, output=OUTPUT_NAME)
    if int8:
        _quantize(fp32, staging / "model.onnx", only_under="/encoder/")
        fp32.unlink()


def _format_version(decision: Decision, voted: bool) -> int:
    """The oldest format that holds this export, so that older readers run what they can:
    2 (a graph), 3 (a TF-IDF voter beside it), 4 (a decision threshold)."""
    if decision.rule == "threshold":
        return 4
    return 3 if voted else 2


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


def _probability_module(
    encoder_model, layers: list[int], pooling: str, head: LinearHead, window_pool: str | None = None
):
    """A torch module: (input_ids, attention_mask[, windows]) -> probabilities, as the model
    computes them. With ``window_pool`` (a chunk model) the rows are windows, and ``windows``
    (``[text, window]``, 1 where the window is the text's) says which text each is of.

    The head comes after the window pooling, in the graph, because that is the order
    :func:`~bertprobe.encoders.encode.embed_views` and the probe apply them in: the softmax or
    sigmoid of a mean of vectors is not the mean of their probabilities (and a maximum of vectors
    has no probability counterpart at all), so pooling probabilities per window would not give
    ``Classifier.predict_proba``'s numbers, while pooling vectors in the graph gives them to
    float32 rounding, and keeps the head in one place, the graph, for the predictor too.
    """
    import torch

    from bertprobe.encoders.pooling import pool_tokens

    class Probabilities(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.encoder = encoder_model
            self.window_pool = window_pool
            for name in ("mean", "scale", "coef", "intercept"):
                values = torch.from_numpy(getattr(head, name).astype(np.float32))
                self.register_buffer(name, values)

        def forward(self, input_ids, attention_mask, windows=None):
            hidden = self.encoder(
                input_ids=input_ids, attention_mask=attention_mask, output_hidden_states=True
            ).hidden_states
            pooled = [pool_tokens(hidden[layer], attention_mask, pooling) for layer in layers]
            vectors = torch.cat(pooled, dim=-1)
            if windows is not None:
                vectors = self.pool_windows(vectors, windows)
            return self.head(vectors)

        def pool_windows(self, vectors, windows):
            """Each text's window vectors as one, as encode.PooledWindows pools them: the mean
            (sum over the text's windows / their count) or the element-wise maximum."""
            member = windows.to(vectors.dtype)
            if self.window_pool == "mean":
                return (member @ vectors) / member.sum(dim=1, keepdim=True)
            # Every text has a window (an empty text is [CLS] [SEP]), so no row stays at min.
            lowest = torch.finfo(vectors.dtype).min
            spread = vectors.unsqueeze(0).masked_fill(member.unsqueeze(-1) == 0, lowest)
            return spread.amax(dim=1)

        def head(self, features):
            if head.link == "multi-label":
                # One scaler and one coefficient row a label: [batch, label, feature].
                standard = (features.unsqueeze(1) - self.mean) / self.scale
                return torch.sigmoid((standard * self.coef).sum(dim=-1) + self.intercept)
            scores = ((features - self.mean) / self.scale) @ self.coef.T + self.intercept
            if head.link == "softmax":
                return torch.softmax(scores, dim=-1)
            positive = torch.sigmoid(scores)
            if head.link == "binary":
                return torch.cat([1 - positive, positive], dim=-1)
            return positive / positive.sum(dim=-1, keepdim=True)

    return Probabilities().eval()


def _trace_chunk_export(graph, sample, target: Path) -> None:
    """A chunk model's graph to ONNX: three inputs, windows and texts both dynamic."""
    import torch

    ids, mask = sample["input_ids"], sample["attention_mask"]
    # Two texts of the sample's two windows: the second text has both, so the tracer sees a
    # text of several windows.
    windows = torch.tensor([[1, 0], [1, 1]], dtype=torch.int64)
    torch.onnx.export(
        graph,
        (ids, mask, windows),
        str(target),
        input_names=[*INPUT_NAMES, WINDOWS_INPUT],
        output_names=[OUTPUT_NAME],
        dynamic_axes={
            "input_ids": {0: "window", 1: "seq"},
            "attention_mask": {0: "window", 1: "seq"},
            WINDOWS_INPUT: {0: "batch", 1: "window"},
            OUTPUT_NAME: {0: "batch"},
        },
        opset_version=OPSET,
        dynamo=False,
    )


def _check_head(graph, probe: Any, n_features: int, n_rows: int = 64) -> None:
    """The head's arithmetic against the probe's own predict_proba, on vectors of its scale;
    for a chunk model, the window pooling against the model's own
    (:class:`bertprobe.encoders.encode.PooledWindows`) too."""
    import torch

    from bertprobe.encoders.encode import PooledWindows

    head = linear_readout(probe)
    rng = np.random.default_rng(0)
    # The mean and scale of a multi-label head are per label: any label's will do here.
    mean, scale = np.atleast_2d(head.mean)[0], np.atleast_2d(head.scale)[0]
    X = (rng.normal(size=(n_rows, n_features)) * scale + mean).astype(np.float32)
    with torch.inference_mode():
        ours = graph.head(torch.from_numpy(X)).numpy()
    theirs = probe.predict_proba(X)
    if ours.shape != theirs.shape or not np.allclose(ours, theirs, atol=1e-4):
        raise RuntimeError(
            f"the exported head differs from {type(probe).__name__}.predict_proba "
            f"(largest difference {np.abs(ours - theirs).max():.2g}); a bug in bertprobe"
        )
    window_pool = graph.window_pool
    if window_pool is None:
        return
    owner = np.repeat(np.arange(8), rng.integers(1, 5, size=8)).tolist()  # 1-4 windows a text
    windows = np.equal.outer(np.arange(8), owner).astype(np.int64)
    with torch.inference_mode():
        pooled = graph.pool_windows(torch.from_numpy(X[: len(owner)]), torch.from_numpy(windows))
    _, expected = PooledWindows(owner, window_pool, n_features).add(
        range(len(owner)), X[: len(owner)]
    )
    if not np.allclose(pooled.numpy(), expected, atol=1e-5):
        raise RuntimeError(
            f"the exported window pooling ({window_pool}) differs from the model's "
            f"(largest difference {np.abs(pooled.numpy() - expected).max():.2g}); a bug in "
            "bertprobe"
        )


def _save_tokenizer(tokenizer, max_length: int, target: Path, stride: int = 0) -> None:
    """The fast tokenizer's own file, set to truncate and pad as bertprobe's batches are.

    ``stride``: a chunk model's; the truncated remainder of a text is then its
    ``overflowing`` encodings, each a window sharing ``stride`` tokens with the one before, as
    the fast tokenizer with ``return_overflowing_tokens=True`` (the model's windows) cuts them.
    """
    from tokenizers import Tokenizer

    backend = Tokenizer.from_str(tokenizer.backend_tokenizer.to_str())
    # transformers' truncation=True is the backend's "longest_first" strategy.
    backend.enable_truncation(
        max_length=max_length,
        stride=stride,
        strategy="longest_first",
        direction=tokenizer.truncation_side,
    )
    backend.enable_padding(
        direction=tokenizer.padding_side,
        pad_id=tokenizer.pad_token_id,
        pad_token=tokenizer.pad_token,
    )
    backend.save(str(target))


class ExportedClassifier:
    """An export folder of :func:`export_classifier`, run with onnxruntime and tokenizers only
    (what ``examples/predict_onnx.py`` does, with batches and a thread count).

    Reads exports of format version 1 (which truncated, single-label), 2, 3 (a TF-IDF voter
    beside the graph, see :class:`TfidfVote`) and 4 (a decision threshold). Labels are decided
    by the card's :class:`~bertprobe.heads.decision.Decision`, as the model decides them.

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
        version = self.card.get("format_version")
        if type(version) is not int or version > EXPORT_FORMAT_VERSION:
            raise BadInputError(
                f"{self.folder} is an export of format version {version!r}; this bertprobe reads "
                f"up to {EXPORT_FORMAT_VERSION}: upgrade bertprobe, or export the model again"
            )
        self.classes: list = self.card["classes"]
        # Version 1 cards have no "long" (they truncated); before the decision, a card said
        # label sets with a flag and the thresholds (version 1: neither, one label a text).
        self.chunked: bool = self.card.get("long", "truncate") == "chunk"
        self.decision = (
            Decision.from_record(self.card["decision"], self.classes)
            if "decision" in self.card
            else Decision.from_legacy(
                self.classes, bool(self.card.get(SETS_KEY)), self.card.get("thresholds")
            )
        )
        self.tokenizer = Tokenizer.from_file(str(self.folder / "tokenizer.json"))
        self.session = onnx_session(self.folder / "model.onnx", threads)
        # Versions 1 and 2 have no "vote": the graph's probabilities are the model's.
        vote = self.card.get("vote")
        self.vote: TfidfVote | None = (
            TfidfVote.read(self.folder / vote["file"]) if vote is not None else None
        )

    def predict_proba(self, texts: list[str], batch_size: int = 32) -> np.ndarray:
        """Probabilities, one row per text, columns in the order of :attr:`classes` (for a
        multi-label export each label's own probability); texts are run ``batch_size`` at a
        time, in the order given (a chunk export's texts with all their windows). With a
        TF-IDF voter, the mean of the graph's and the voter's probabilities."""
        rows = [np.zeros((0, len(self.classes)), dtype=np.float32)]
        for start in range(0, len(texts), batch_size):
            batch = list(texts[start : start + batch_size])
            proba = self._run(self.tokenizer.encode_batch(batch))
            if self.vote is not None:  # VotingProbe's soft vote (float64, as predict_proba's)
                proba = (proba.astype(np.float64) + self.vote.predict_proba(batch)) / 2
            rows.append(proba)
        return np.concatenate(rows)

    def _run(self, encodings: list) -> np.ndarray:
        """One batch of texts' encodings through the graph."""
        n_texts = len(encodings)
        owner = None
        if self.chunked:
            # A text's windows: its encoding, then what truncation cut off, window by window.
            owner = [i for i, e in enumerate(encodings) for _ in range(1 + len(e.overflowing))]
            encodings = [w for e in encodings for w in (e, *e.overflowing)]
        inputs = {
            "input_ids": np.array([e.ids for e in encodings], dtype=np.int64),
            "attention_mask": np.array([e.attention_mask for e in encodings], dtype=np.int64),
        }
        if owner is not None:
            inputs[WINDOWS_INPUT] = np.equal.outer(np.arange(n_texts), owner).astype(np.int64)
        return self.session.run([self.card["output"]], inputs)[0]

    def predict(self, texts: list[str], batch_size: int = 32) -> list:
        """What the export says of each text, as ``Classifier.predict``: its label, or for a
        label-set export its label set (a tuple of names), by the card's decision."""
        return self.decision.labels(self.predict_proba(texts, batch_size))

    def predict_labels(self, texts: list[str], batch_size: int = 32) -> list[list]:
        """Deprecated: each text's labels as a list (:meth:`predict` gives every export's
        answer in one form)."""
        warnings.warn(
            "ExportedClassifier.predict_labels() is deprecated and goes in the next release: "
            "predict() gives each text's label, or a label-set export's label set",
            FutureWarning,
            stacklevel=2,
        )
        proba = self.predict_proba(texts, batch_size)
        return [list(y) for y in self.decision.label_tuples(proba)]
