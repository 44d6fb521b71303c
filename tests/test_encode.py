"""The forward pass: masks, pooling, layers, length-sorted batches, truncation, encoder names."""

from __future__ import annotations

import shutil

import numpy as np
import pytest
import torch

from bertprobe.core.errors import BadInputError, EncoderNotFoundError
from bertprobe.encoders.encode import embed, length_sorted_batches
from bertprobe.encoders.encoder import load_encoder
from bertprobe.encoders.hub import folder_fingerprint, resolve_encoder
from bertprobe.encoders.options import FeatureSpec, RunOptions

SHORT = "a gorgeous , witty film"
LONG = " ".join(["the plot wanders on and on without a point"] * 5)


def reference_vector(folder, text, layer, pooling):
    """The vector computed the plain way: one text, no padding, straight from the model."""
    enc = load_encoder(str(folder))
    ids = enc.tokenizer(text, return_tensors="pt")
    with torch.inference_mode():
        states = enc.model(**ids, output_hidden_states=True).hidden_states[layer][0]
    return {"cls": states[0], "mean": states.mean(0), "max": states.max(0).values}[pooling].numpy()


@pytest.mark.parametrize("pooling", ["cls", "mean", "max"])
@pytest.mark.parametrize("layer", [0, 1, -1])
def test_padding_never_changes_a_vector(tiny_distilbert, pooling, layer):
    # SHORT shares a batch with much longer texts, so it is heavily padded.
    texts = [LONG, SHORT, LONG + " again", "ok"]
    X, _ = embed(
        texts, str(tiny_distilbert), FeatureSpec(pooling, (layer,)), RunOptions(batch_size=4)
    )
    assert np.allclose(X[1], reference_vector(tiny_distilbert, SHORT, layer, pooling), atol=1e-5)
    assert np.allclose(X[3], reference_vector(tiny_distilbert, "ok", layer, pooling), atol=1e-5)


def test_length_sorting_returns_rows_in_input_order(tiny_distilbert):
    texts = [f"{'very ' * (i % 7)}good film number {i}" for i in range(23)]
    batched, stats = embed(
        texts, str(tiny_distilbert), FeatureSpec("mean"), RunOptions(batch_size=5)
    )
    one_by_one = np.vstack(
        [embed([t], str(tiny_distilbert), FeatureSpec("mean"))[0] for t in texts]
    )
    assert stats.n_batches == 5
    assert np.allclose(batched, one_by_one, atol=1e-5)


def test_batches_are_sorted_longest_first_and_respect_a_token_budget():
    lengths = [3, 10, 7, 10, 2, 5]
    batches = list(length_sorted_batches(lengths, batch_size=4, max_tokens=20))
    assert sorted(i for b in batches for i in b) == list(range(6))
    assert all(len(b) * max(lengths[i] for i in b) <= 20 for b in batches)
    assert [lengths[b[0]] for b in batches] == sorted(
        (lengths[b[0]] for b in batches), reverse=True
    )
    assert [len(b) for b in length_sorted_batches(lengths, batch_size=4)] == [4, 2]


def test_layers_concatenate_in_the_order_given(tiny_distilbert):
    single = {
        layer: embed([SHORT], str(tiny_distilbert), FeatureSpec("cls", (layer,)))[0]
        for layer in (0, 2)
    }
    both, _ = embed([SHORT], str(tiny_distilbert), FeatureSpec("cls", (2, 0)))
    assert both.shape == (1, 128)
    assert np.array_equal(both, np.hstack([single[2], single[0]]))
    assert np.array_equal(
        single[2], embed([SHORT], str(tiny_distilbert), FeatureSpec("cls", (-1,)))[0]
    )


def test_long_texts_are_truncated_and_counted(tiny_distilbert):
    texts = [LONG * 3, SHORT, LONG * 2]
    X, stats = embed(texts, str(tiny_distilbert), FeatureSpec("mean"))
    assert stats.n_truncated == 2
    assert stats.max_length == 64
    _, short_stats = embed(texts, str(tiny_distilbert), FeatureSpec("mean", max_length=6))
    assert short_stats.n_truncated == 3
    with pytest.raises(BadInputError, match="exceeds what"):
        embed(texts, str(tiny_distilbert), FeatureSpec("mean", max_length=65))


def test_duplicate_texts_are_computed_once(tiny_distilbert):
    X, stats = embed(["same", "other", "same"], str(tiny_distilbert), FeatureSpec("mean"))
    assert stats.n_unique == 2 and stats.n_computed == 2
    assert np.array_equal(X[0], X[2])


def test_bad_layer_and_pooling_are_user_errors(tiny_distilbert):
    with pytest.raises(BadInputError, match="layer 3 does not exist"):
        embed(["x"], str(tiny_distilbert), FeatureSpec("cls", (3,)))
    with pytest.raises(BadInputError, match="unknown pooling 'sum'"):
        FeatureSpec("sum")


def test_fingerprint_follows_the_weights(tiny_distilbert, tmp_path):
    copy = tmp_path / "copy"
    shutil.copytree(tiny_distilbert, copy)
    assert folder_fingerprint(copy) == folder_fingerprint(tiny_distilbert)
    weights = copy / "model.safetensors"
    data = bytearray(weights.read_bytes())
    data[-1] ^= 1
    weights.write_bytes(bytes(data))
    assert folder_fingerprint(copy) != folder_fingerprint(tiny_distilbert)


def test_unresolvable_names_fail_at_once_with_the_offline_options(monkeypatch, tmp_path):
    with pytest.raises(EncoderNotFoundError, match="encoder=minilm"):
        resolve_encoder("distilbert-base-uncased")  # HF_HUB_OFFLINE=1 in the test session
    # Without the offline switch, an unreachable hub is detected without minutes of retries.
    monkeypatch.setenv("HF_HUB_OFFLINE", "0")
    monkeypatch.setenv("HF_ENDPOINT", "http://127.0.0.1:9")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    with pytest.raises(EncoderNotFoundError, match="cannot be reached"):
        resolve_encoder("bert-base-uncased")
    with pytest.raises(EncoderNotFoundError, match="not a model folder"):
        resolve_encoder(str(tmp_path / "missing-folder"))
    with pytest.raises(EncoderNotFoundError, match="no config.json"):
        resolve_encoder(str(tmp_path))


@pytest.mark.slow
def test_bundled_minilm_is_padding_invariant_and_384_wide():
    texts = [SHORT, LONG * 4, "a mess"]
    for pooling in ("cls", "mean"):
        X, stats = embed(texts, "minilm", FeatureSpec(pooling), RunOptions(batch_size=3))
        assert X.shape == (3, 384)
        assert stats.n_truncated == 0
        for i in (0, 2):
            alone, _ = embed([texts[i]], "minilm", FeatureSpec(pooling))
            assert np.abs(alone[0] - X[i]).max() < 1e-5
