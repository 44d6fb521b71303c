"""Label texts with a `bertprobe export` folder; needs only onnxruntime, tokenizers and numpy.

python predict_onnx.py EXPORT_FOLDER "a gorgeous, witty film" "a dull mess"
"""

import json
import sys
from pathlib import Path

import numpy as np
import onnxruntime
from tokenizers import Tokenizer

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
for text, row in zip(texts, probabilities, strict=True):
    if card.get("multi_label"):  # each label's probability, against its threshold
        on = row >= np.array(card["thresholds"])
        labels = [c for c, yes in zip(card["classes"], on, strict=True) if yes]
        print(json.dumps({"text": text, "labels": labels, "probabilities": row.tolist()}))
    else:
        label = card["classes"][int(row.argmax())]
        print(json.dumps({"text": text, "label": label, "probabilities": row.tolist()}))
