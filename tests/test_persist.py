"""Saved model folders: round trip, and refusal of altered, foreign or mismatched folders."""

from __future__ import annotations

import functools
import json
import operator
import shutil

import numpy as np
import pytest
import skops.io as sio

from bertprobe import LinearProbe, load_model, resolve_encoder, save_model
from bertprobe.encode import FeatureSpec, embed
from bertprobe.errors import ModelFolderError
from bertprobe.persist import CARD_FILE, PROBE_FILE, _sha256


@pytest.fixture
def trained(tiny_distilbert, sentiment_rows, tmp_path):
    encoder_copy = tmp_path / "encoder"
    shutil.copytree(tiny_distilbert, encoder_copy)
    ref = resolve_encoder(str(encoder_copy))
    spec = FeatureSpec("mean", (-1,))
    texts = [t for t, _ in sentiment_rows]
    labels = [y for _, y in sentiment_rows]
    X, stats = embed(texts, ref, spec)
    probe = LinearProbe(cv=3).fit(X, labels)
    folder = save_model(
        tmp_path / "model",
        probe,
        ref,
        spec,
        max_length=stats.max_length,
        metrics={"cv_accuracy": probe.cv_accuracy_},
    )
    return folder, probe, X, texts


def test_round_trip_predicts_the_same(trained):
    folder, probe, X, texts = trained
    model = load_model(folder)
    assert model.classes == [0, 1]
    assert np.allclose(model.predict_proba(texts), probe.predict_proba(X))
    card = json.loads((folder / CARD_FILE).read_text())
    assert card["features"] == {
        "pooling": "mean",
        "layers": [-1],
        "max_length": 64,
        "backend": "torch",
    }
    assert card["probe"]["C"] == probe.C_
    assert card["id"].startswith("model-")
    assert {"torch", "transformers", "scikit-learn", "skops"} <= set(card["versions"])


def test_altered_probe_file_is_refused(trained):
    folder, *_ = trained
    with open(folder / PROBE_FILE, "ab") as fh:
        fh.write(b"\0")
    with pytest.raises(ModelFolderError, match="altered after saving"):
        load_model(folder)


def test_changed_encoder_weights_are_refused(trained):
    folder, *_ = trained
    weights = folder.parent / "encoder" / "model.safetensors"
    data = bytearray(weights.read_bytes())
    data[-1] ^= 1
    weights.write_bytes(bytes(data))
    with pytest.raises(ModelFolderError, match="no longer matches"):
        load_model(folder)


def test_untrusted_types_are_refused_even_with_a_matching_hash(trained):
    folder, *_ = trained
    # A callable is exactly what a hostile file would carry; skops reports it as untrusted.
    sio.dump({"payload": functools.partial(operator.add, 1)}, folder / PROBE_FILE)
    card = json.loads((folder / CARD_FILE).read_text())
    card["files"][PROBE_FILE] = _sha256(folder / PROBE_FILE)
    (folder / CARD_FILE).write_text(json.dumps(card))
    with pytest.raises(ModelFolderError, match="does not trust"):
        load_model(folder)


def test_foreign_folders_are_refused_and_not_overwritten(trained, tmp_path):
    folder, probe, *_ = trained
    with pytest.raises(ModelFolderError, match="no such model folder"):
        load_model(tmp_path / "nothing-here")
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("mine")
    with pytest.raises(ModelFolderError, match="not a bertprobe model folder"):
        load_model(foreign)
    ref = load_model(folder).encoder
    with pytest.raises(ModelFolderError, match="choose another --out"):
        save_model(foreign, probe, ref, FeatureSpec("mean"), max_length=64)
    assert (foreign / "notes.txt").read_text() == "mine"
