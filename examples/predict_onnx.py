"""Label texts with a `bertprobe export` folder; needs only onnxruntime, tokenizers and numpy.

python predict_onnx.py EXPORT_FOLDER "a gorgeous, witty film" "a dull mess"
"""

import json
import re
import sys
from pathlib import Path

import numpy as np
import onnxruntime
from tokenizers import Tokenizer


def vote_proba(vote: dict, texts: list[str]) -> np.ndarray:
    """The TF-IDF voter's probabilities (tfidf.json), as scikit-learn's pipeline computes them."""
    column = {term: j for j, term in enumerate(vote["terms"])}
    idf, coef, intercept = (np.array(vote[k]) for k in ("idf", "coef", "intercept"))
    low, high = vote["ngram_range"]
    scores = []
    for text in texts:
        words = re.findall(vote["token_pattern"], text.lower())  # Unicode \w, as sklearn's
        spans = [(i, n) for n in range(low, high + 1) for i in range(len(words) - n + 1)]
        grams = [" ".join(words[i : i + n]) for i, n in spans]  # word n-grams
        known = np.array([column[g] for g in grams if g in column], dtype=np.int64)
        cols, counts = np.unique(known, return_counts=True)  # n-gram columns, ascending
        x = (1 + np.log(counts) if vote["sublinear_tf"] else counts) * idf[cols]
        x = x / np.sqrt(x @ x) if len(x) else x  # unit length (l2)
        scores.append(coef[:, cols] @ x + intercept)
    z = np.array(scores)
    if vote["link"] == "binary":  # one score: [1 - sigmoid, sigmoid]
        positive = 1 / (1 + np.exp(-z))
        return np.hstack([1 - positive, positive])
    exp = np.exp(z - z.max(axis=1, keepdims=True))  # softmax
    return exp / exp.sum(axis=1, keepdims=True)


folder, texts = Path(sys.argv[1]), sys.argv[2:]
card = json.loads((folder / "card.json").read_text(encoding="utf-8"))
tokenizer = Tokenizer.from_file(str(folder / "tokenizer.json"))  # truncates and pads
session = onnxruntime.InferenceSession(str(folder / "model.onnx"))
encodings = tokenizer.encode_batch(texts)
chunked = card.get("long") == "chunk"  # long texts as windows, pooled in the graph
if chunked:  # a text's windows: its encoding, then what truncation cut off
    owner = [i for i, e in enumerate(encodings) for _ in range(1 + len(e.overflowing))]
    encodings = [w for e in encodings for w in (e, *e.overflowing)]
inputs = {
    "input_ids": np.array([e.ids for e in encodings], dtype=np.int64),
    "attention_mask": np.array([e.attention_mask for e in encodings], dtype=np.int64),
}
if chunked:  # [text, window]: 1 where the window is the text's
    inputs["windows"] = np.equal.outer(np.arange(len(texts)), owner).astype(np.int64)
probabilities = session.run([card["output"]], inputs)[0]
if "vote" in card:  # a TF-IDF voter over the raw texts: the mean of both models' probabilities
    vote = json.loads((folder / card["vote"]["file"]).read_text(encoding="utf-8"))
    probabilities = (probabilities + vote_proba(vote, texts)) / 2
# How probabilities become labels: the card's decision (exports before it: a label-set flag).
names = [str(c) for c in card["classes"]]
decision = card.get("decision") or (
    {"rule": "per-label", "thresholds": dict(zip(names, card["thresholds"], strict=True))}
    if card.get("multi_label")
    else {"rule": "argmax"}
)
for text, row in zip(texts, probabilities, strict=True):
    if decision["rule"] == "per-label":  # each label's probability, against its threshold
        cuts = [decision["thresholds"][str(c)] for c in card["classes"]]
        labels = [c for c, p, cut in zip(card["classes"], row, cuts, strict=True) if p >= cut]
        print(json.dumps({"text": text, "labels": labels, "probabilities": row.tolist()}))
        continue
    if decision["rule"] == "threshold":  # two classes: the second where it reaches the threshold
        label = card["classes"][int(row[1] >= decision["threshold"])]
    else:
        label = card["classes"][int(row.argmax())]
    print(json.dumps({"text": text, "label": label, "probabilities": row.tolist()}))
