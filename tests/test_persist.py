"""Saved model folders: round trip, and refusal of altered, foreign or mismatched folders."""

from __future__ import annotations

import functools
import json
import operator
import re
import shutil

import numpy as np
import pytest
import skops.io as sio

from bertprobe import LinearProbe, load_model, resolve_encoder, save_model
from bertprobe.core.errors import ModelFolderError
from bertprobe.encoders.encode import embed
from bertprobe.encoders.options import FeatureSpec
from bertprobe.heads.tfidf import tfidf_pipeline
from bertprobe.model.persist import CARD_FILE, FORMAT_VERSION, PROBE_FILE, _seal, _sha256


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
    assert card["format_version"] == FORMAT_VERSION == 2
    assert {"features.pooling", "encoder.fingerprint", "labels", "vote"} <= set(card["seal"])
    assert all(re.fullmatch("[0-9a-f]{64}", digest) for digest in card["seal"].values())
    assert {"torch", "transformers", "scikit-learn", "skops"} <= set(card["versions"])


@pytest.mark.parametrize(
    "old_module", ["bertprobe.probe", "bertprobe.heads.probe"], ids=["before-layers", "now"]
)
def test_a_probe_saved_under_its_module_before_the_layers_loads(
    old_module, tiny_distilbert, sentiment_rows, tmp_path, monkeypatch
):
    """Folders saved before the package was laid out in layers name bertprobe.probe.LinearProbe;
    they load and predict the same. Saved under the old name by setting __module__."""
    import sys

    sys.modules.pop("bertprobe.probe", None)  # as in a process that never loaded an old folder
    ref = resolve_encoder(str(tiny_distilbert))
    spec = FeatureSpec("mean", (-1,))
    texts = [t for t, _ in sentiment_rows]
    X, stats = embed(texts, ref, spec)
    probe = LinearProbe(cv=3).fit(X, [y for _, y in sentiment_rows])
    with monkeypatch.context() as saving:
        saving.setattr(LinearProbe, "__module__", old_module)
        folder = save_model(tmp_path / "model", probe, ref, spec, max_length=stats.max_length)
    assert f"{old_module}.LinearProbe" in sio.get_untrusted_types(file=folder / PROBE_FILE)
    assert np.allclose(load_model(folder).predict_proba(texts), probe.predict_proba(X))


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
    card["seal"] = _seal(card)  # a forger recomputes the seal too: the type check still holds
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


@pytest.fixture(scope="module")
def voting_model_dir(tiny_distilbert, sentiment_rows, tmp_path_factory):
    """A saved model with every decisive card field, the TF-IDF vote included."""
    ref = resolve_encoder(str(tiny_distilbert))
    spec = FeatureSpec("mean", (-1,))
    texts = [t for t, _ in sentiment_rows]
    labels = [y for _, y in sentiment_rows]
    X, stats = embed(texts, ref, spec)
    probe = LinearProbe(cv=3).fit(X, labels)
    voter = tfidf_pipeline(cv=3).fit(texts, labels)
    folder = tmp_path_factory.mktemp("voting") / "model"
    return save_model(folder, probe, ref, spec, max_length=stats.max_length, text_model=voter)


def _edited_copy(source, tmp_path, edit):
    folder = tmp_path / "model"
    shutil.copytree(source, folder)
    card = json.loads((folder / CARD_FILE).read_text())
    edit(card)
    (folder / CARD_FILE).write_text(json.dumps(card, indent=2))
    return folder


def _set(section, key, value):
    return lambda card: card[section].__setitem__(key, value)


# Each edit would change what the model answers (or which files it answers from); the names are
# exactly those the refusal must give.
DECISIVE_EDITS = {
    "pooling": (_set("features", "pooling", "cls"), ["features.pooling"]),
    "layers": (_set("features", "layers", [-2]), ["features.layers"]),
    "max_length": (_set("features", "max_length", 16), ["features.max_length"]),
    "backend": (_set("features", "backend", "onnx-int8"), ["features.backend"]),
    "a later feature": (_set("features", "long_text", "chunks"), ["features.long_text"]),
    "fingerprint": (_set("encoder", "fingerprint", "sha256:" + "0" * 64), ["encoder.fingerprint"]),
    "encoder name": (_set("encoder", "name", "distilbert-base-uncased"), ["encoder.name"]),
    "resolved path": (_set("encoder", "resolved_path", "/elsewhere"), ["encoder.resolved_path"]),
    "labels": (lambda card: card.__setitem__("labels", [1, 0]), ["labels"]),
    "kind": (lambda card: card.__setitem__("kind", "fine-tuned"), ["kind"]),
    "format version": (lambda card: card.__setitem__("format_version", 1), ["format_version"]),
    "voter file": (_set("vote", "with", PROBE_FILE), ["vote.with"]),
    "vote rule": (_set("vote", "rule", "max of probabilities"), ["vote.rule"]),
    "vote removed": (
        lambda card: card.pop("vote"),
        ["vote", "vote.rule", "vote.tfidf_C", "vote.with"],
    ),
    "file hash": (_set("files", PROBE_FILE, "0" * 64), [f"files.{PROBE_FILE}"]),
}


@pytest.mark.parametrize("case", sorted(DECISIVE_EDITS))
def test_a_card_edited_in_a_decisive_field_is_refused_naming_it(case, voting_model_dir, tmp_path):
    edit, names = DECISIVE_EDITS[case]
    folder = _edited_copy(voting_model_dir, tmp_path, edit)
    with pytest.raises(ModelFolderError) as info:
        load_model(folder)
    message = str(info.value)
    match = re.search(
        r"was edited in a field that decides predictions \((.*)\); restore it", message
    )
    assert match, message
    assert match.group(1).split(", ") == names
    assert str(folder / CARD_FILE) in message and "\n" not in message


def test_adding_a_vote_to_a_card_without_one_is_refused(tiny_model_dir, tmp_path):
    vote = {"with": PROBE_FILE, "rule": "mean of probabilities"}
    folder = _edited_copy(tiny_model_dir, tmp_path, lambda card: card.__setitem__("vote", vote))
    with pytest.raises(ModelFolderError, match=r"predictions \(vote, vote\.rule, vote\.with\)"):
        load_model(folder)


def test_harmless_edits_load_and_predict_the_same(tiny_model_dir, sentiment_rows, tmp_path):
    def edit(card):
        card["description"] = "sentiment of one-word reviews"
        card["metrics"]["note"] = "checked by hand"
        card["created"] = "2020-01-01T00:00:00+00:00"

    folder = _edited_copy(tiny_model_dir, tmp_path, edit)
    texts = [t for t, _ in sentiment_rows[:10]]
    model = load_model(folder)
    assert model.card["description"] == "sentiment of one-word reviews"
    assert np.allclose(model.predict_proba(texts), load_model(tiny_model_dir).predict_proba(texts))


def test_a_version_1_card_without_a_seal_still_loads(tiny_model_dir, sentiment_rows, tmp_path):
    def as_version_1(card):
        del card["seal"]
        card["format_version"] = 1

    folder = _edited_copy(tiny_model_dir, tmp_path, as_version_1)
    texts = [t for t, _ in sentiment_rows[:10]]
    model = load_model(folder)
    assert model.card["format_version"] == 1 and "seal" not in model.card
    assert np.allclose(model.predict_proba(texts), load_model(tiny_model_dir).predict_proba(texts))


@pytest.mark.parametrize("seal", ["removed", None, "abc"])
def test_a_sealed_format_without_its_seal_is_refused(seal, tiny_model_dir, tmp_path):
    def edit(card):
        if seal == "removed":
            del card["seal"]
        else:
            card["seal"] = seal

    folder = _edited_copy(tiny_model_dir, tmp_path, edit)
    with pytest.raises(ModelFolderError, match="has no valid seal"):
        load_model(folder)


def test_a_format_version_that_is_not_a_number_is_refused(tiny_model_dir, tmp_path):
    folder = _edited_copy(tiny_model_dir, tmp_path, lambda card: card.update(format_version="2"))
    with pytest.raises(ModelFolderError, match="no valid format_version"):
        load_model(folder)
