"""Every way out of a trained model, checked against the model in memory: what the
composition grid and a head of one's own (tests/test_toy_head.py) both ask of a model.

Each check takes the model (or its folder) and a few texts with the probabilities the model in
memory gives them, and asserts that the way out gives the same to 1e-4 (or the same labels).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from typer.testing import CliRunner

from bertprobe.cli import app
from bertprobe.model.classifier import Classifier


def check_folder(out: Path, texts: list[str], expected: np.ndarray) -> Classifier:
    """The folder, loaded again, predicts as the model did; returns the loaded model."""
    loaded = Classifier.load(out)
    np.testing.assert_allclose(loaded.predict_proba(texts), expected, atol=1e-4)
    return loaded


def check_evaluate(model: Classifier, texts: list[str]) -> None:
    """``evaluate`` on the model's own decisions scores every text right: predict, the
    decision and evaluate agree, whatever the target (a label, or a label set)."""
    decided = list(model.predict(texts))
    assert model.evaluate(texts, decided).accuracy == 1.0


def check_service(model: Classifier, texts: list[str], expected: np.ndarray) -> None:
    """The HTTP service answers the model's probabilities and its decisions."""
    from fastapi.testclient import TestClient

    from bertprobe.serve import create_app

    with TestClient(create_app(model)) as client:
        response = client.post("/v1/predict", json={"texts": texts})
    assert response.status_code == 200, response.text
    decided = model.predict(texts)
    for answer, row, labels in zip(response.json()["predictions"], expected, decided, strict=True):
        got = [answer["probabilities"][str(c)] for c in model.classes]
        np.testing.assert_allclose(got, row, atol=1e-4)
        given = answer["labels"] if "labels" in answer else [answer["label"]]
        want = list(labels) if model.decision.label_sets else [labels]
        assert [str(x) for x in given] == [str(x) for x in want]


def check_report(out: Path, test_file: Path, tmp_path: Path) -> None:
    """``bertprobe report`` writes its page (a label-set test file read as the card says the
    training file was)."""
    args = ["report", str(test_file), "--model", str(out), "--out", str(tmp_path / "report")]
    result = CliRunner().invoke(app, [*args, "--json"])
    assert result.exit_code == 0, (result.output, repr(result.exception))
    assert (tmp_path / "report" / "report.html").is_file()


def check_export(model: Classifier, texts: list[str], expected: np.ndarray, tmp_path: Path):
    """The ONNX export gives predict's probabilities (a TF-IDF vote's included: the voter
    beside the graph, computed in numpy) and its decisions."""
    from bertprobe.export import ExportedClassifier, export_classifier

    folder = export_classifier(model, tmp_path / "export")
    exported = ExportedClassifier(folder)
    np.testing.assert_allclose(exported.predict_proba(texts), expected, atol=1e-4)
    assert exported.predict(texts) == list(model.predict(texts))
    return folder


def check_explain(model: Classifier, texts: list[str], method: str = "auto") -> None:
    """Explanations add up to the scores they split, and give the model's labels."""
    found = model.explain(texts, method=method)
    decided = model.predict(texts)
    for e, labels in zip(found, decided, strict=True):
        np.testing.assert_allclose(e.constant + e.scores.sum(axis=0), e.logits, atol=1e-6)
        np.testing.assert_allclose(e.proba, model.predict_proba([e.text])[0], atol=1e-5)
        assert e.labels == (labels if model.decision.label_sets else (labels,))


def check_predict_file(model: Classifier, texts: list[str], tmp_path: Path) -> None:
    """Streamed prediction of a file writes the model's decisions and probabilities."""
    source = tmp_path / "texts.txt"
    source.write_text("\n".join(texts) + "\n", encoding="utf-8")
    model.predict_file(source, tmp_path / "out.jsonl", chunk_size=3)
    rows = [json.loads(line) for line in (tmp_path / "out.jsonl").open(encoding="utf-8")]
    expected = model.predict_proba(texts)
    for row, want, labels in zip(rows, expected, model.predict(texts), strict=True):
        got = [row["probabilities"][str(c)] for c in model.classes]
        np.testing.assert_allclose(got, want, atol=1e-4)
        decided = row["labels"] if "labels" in row else row["label"]
        assert decided == (list(labels) if model.decision.label_sets else labels)
