"""Why self-training from zero labels stops short of the probe with every label (SST-2).

Self-training from descriptions (``train --zero-shot ... --rounds``) learns from the zero-shot
head's surest texts of each class. Two things can hold it back: the pseudo-labels are wrong on
some of those texts (noise), and the surest texts are the easy, typical ones (selection). For
each number of texts a class, this prints how many of the pseudo-labels are right, and the test
accuracy of a frozen probe (C by 5-fold CV) trained on

- those texts with their pseudo-labels (what self-training's first round learns),
- the same texts with their true labels (selection alone, no noise),
- as many texts drawn at random, with their true labels (neither),

on the bundled MiniLM's mean-pooled vectors (from the embedding cache after the first run).
Writes bench/results/selftrain_ceiling.json.

    .venv/bin/python bench/selftrain_ceiling.py
"""

from __future__ import annotations

import json
import os
import platform
from datetime import UTC, datetime
from pathlib import Path

import numpy as np

from bertprobe.datasets import load_sst2
from bertprobe.encoders.encode import embed
from bertprobe.encoders.options import EncoderOptions
from bertprobe.heads.probe import LinearProbe, surest_rows
from bertprobe.training.zeroshot import ZeroShot, zero_shot_head

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "bench" / "results" / "selftrain_ceiling.json"
DESCRIPTIONS = {
    "review": ZeroShot(
        descriptions={0: "negative", 1: "positive"}, template="This is a {} review."
    ),
    "phrases": ZeroShot(
        descriptions={
            0: ["negative", "This is a negative review.", "a bad movie", "the film is terrible"],
            1: ["positive", "This is a positive review.", "a good movie", "the film is great"],
        }
    ),
}
PER_CLASS = (64, 865, 1730)  # 865: a quarter of the 6,920 texts, divided between the classes


def main() -> None:
    train, test = load_sst2("train"), load_sst2("test")
    encoding = EncoderOptions("minilm", pooling="mean")
    encoder = encoding.load()
    y, y_test = np.asarray(train.labels), np.asarray(test.labels)

    def vectors(texts):
        with encoding.open_cache() as cache:
            return embed(texts, encoder, encoding.spec, encoding.run, cache=cache)[0]

    X, X_test = vectors(train.texts), vectors(test.texts)

    def score(rows: np.ndarray, labels: np.ndarray) -> float:
        probe = LinearProbe("coarse", cv=5).fit(X[rows], labels)
        return float(np.mean(probe.predict(X_test) == y_test))

    results: dict = {}
    for name, zero_shot in DESCRIPTIONS.items():
        described = vectors([t for texts in zero_shot.texts.values() for t in texts])
        proba = zero_shot_head(zero_shot, X, described, False).predict_proba(X)
        for k in PER_CLASS:
            rows = surest_rows(proba, k)  # what self-training's first round learns from
            pseudo = proba[rows].argmax(axis=1)
            drawn = np.random.default_rng(0).permutation(len(X))[: 2 * k]
            cell = {
                "pseudo_labels_right": float(np.mean(pseudo == y[rows])),
                "pseudo_labels": score(rows, pseudo),
                "same_texts_true_labels": score(rows, y[rows]),
                "random_texts_true_labels": score(drawn, y[drawn]),
            }
            results.setdefault(name, {})[str(k)] = cell
            print(
                f"{name:8s} {k:5d} a class: {100 * cell['pseudo_labels_right']:.1f}% of the "
                f"pseudo-labels right; probe on them {100 * cell['pseudo_labels']:.1f}%, the same "
                f"texts with true labels {100 * cell['same_texts_true_labels']:.1f}%, random texts "
                f"{100 * cell['random_texts_true_labels']:.1f}%",
                flush=True,
            )
    OUT.write_text(
        json.dumps(
            {
                "date": datetime.now(UTC).isoformat(timespec="seconds"),
                "machine": f"{platform.machine()}, {os.cpu_count()} cores",
                "command": "python bench/selftrain_ceiling.py",
                "results": results,
            },
            indent=1,
        )
        + "\n",
        encoding="utf-8",
    )


if __name__ == "__main__":
    main()
