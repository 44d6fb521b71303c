"""ONNX backends give the vectors torch gives: fp32 to 1e-4, int8 within a stated cosine."""

from __future__ import annotations

import json
import logging

import numpy as np
import pytest

from bertprobe.cli import main
from bertprobe.core.errors import BadInputError
from bertprobe.encoders.cache import open_cache
from bertprobe.encoders.embedder import TextEmbedder
from bertprobe.encoders.encode import embed
from bertprobe.encoders.encoder import LoadedEncoder, load_encoder
from bertprobe.encoders.hub import resolve_encoder
from bertprobe.encoders.options import FeatureSpec, RunOptions

TEXTS = [
    "a gorgeous , witty film",
    "ok",
    " ".join(["the plot wanders on and on without a point"] * 4),
    "the cast was lovely",
]


def cosines(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return np.sum(a * b, axis=1) / np.linalg.norm(a, axis=1) / np.linalg.norm(b, axis=1)


@pytest.mark.parametrize("pooling", ["cls", "mean", "max"])
def test_onnx_fp32_matches_torch_in_mixed_length_batches(tiny_distilbert, pooling):
    spec = FeatureSpec(pooling, (0, 1, -1))
    reference, _ = embed(TEXTS, str(tiny_distilbert), spec, RunOptions(batch_size=4))
    exported, _ = embed(TEXTS, str(tiny_distilbert), spec, RunOptions(batch_size=4, backend="onnx"))
    assert np.abs(exported - reference).max() < 1e-4


def test_onnx_int8_stays_close_to_fp32(tiny_distilbert, sentiment_rows):
    texts = [t for t, _ in sentiment_rows]
    reference, _ = embed(texts, str(tiny_distilbert), FeatureSpec("mean"))
    quantized, _ = embed(
        texts, str(tiny_distilbert), FeatureSpec("mean"), RunOptions(backend="onnx-int8")
    )
    assert cosines(quantized, reference).min() > 0.95
    assert not np.allclose(quantized, reference, atol=1e-6)  # it really is another graph


def test_exports_are_built_once_per_fingerprint(tiny_distilbert, tmp_path):
    # LoadedEncoder, not load_encoder: the process-wide shared encoder may predate this test.
    LoadedEncoder(resolve_encoder(str(tiny_distilbert)), backend="onnx-int8")
    exported = sorted((tmp_path / "cache" / "onnx").rglob("*.onnx"))
    assert [p.name for p in exported] == ["model.int8.onnx", "model.onnx"]
    stamps = [p.stat().st_mtime_ns for p in exported]
    # A fresh load (not the process's shared one) finds the files and exports nothing.
    LoadedEncoder(resolve_encoder(str(tiny_distilbert)), backend="onnx-int8")
    assert [p.stat().st_mtime_ns for p in exported] == stamps


def test_a_cached_export_runs_without_the_torch_weights(tiny_distilbert, tmp_path):
    """The first load exports (it needs the weights); a later one reads the tokenizer, the
    config and the graph only, and gives the same vectors; the weights still load on demand."""
    from bertprobe.encoders.pooling import View

    ref = resolve_encoder(str(tiny_distilbert))
    first = LoadedEncoder(ref, backend="onnx-int8")
    assert first.weights_loaded  # the export read them
    later = LoadedEncoder(ref, backend="onnx-int8")
    assert not later.weights_loaded
    ids, _ = later.tokenize(TEXTS, later.max_length)
    view = View(later.layer_index(-1), "mean")
    assert (later.num_hidden_states, later.hidden_size) == (3, 64)
    np.testing.assert_array_equal(
        later.forward(ids, [view])[view], first.forward(ids, [view])[view]
    )
    assert not later.weights_loaded
    assert later.model.config.dim == 64 and later.weights_loaded  # on demand (gradients, say)


def test_exports_are_kept_in_the_given_cache_folder(tiny_distilbert, tmp_path):
    default = tmp_path / "cache" / "onnx"  # BERTPROBE_CACHE_DIR, set by conftest
    ref = resolve_encoder(str(tiny_distilbert))
    LoadedEncoder(ref, backend="onnx", cache_dir=tmp_path / "given")
    assert [p.name for p in (tmp_path / "given" / "onnx").rglob("*.onnx")] == ["model.onnx"]
    # Through load_encoder, the estimator's cache_dir and an open cache's folder alike.
    load_encoder(str(tiny_distilbert), backend="onnx", cache_dir=str(tmp_path / "loaded"))
    TextEmbedder(str(tiny_distilbert), backend="onnx", cache_dir=str(tmp_path / "est")).fit(
        TEXTS
    ).transform(TEXTS)
    with open_cache(tmp_path / "opened") as cache:
        embed(
            TEXTS,
            str(tiny_distilbert),
            FeatureSpec("mean"),
            RunOptions(backend="onnx"),
            cache=cache,
        )
    for name in ("loaded", "est", "opened"):
        assert [p.name for p in (tmp_path / name / "onnx").rglob("*.onnx")] == ["model.onnx"]
    assert not default.exists()
    # No folder given: the default, as before.
    LoadedEncoder(ref, backend="onnx")
    assert [p.name for p in default.rglob("*.onnx")] == ["model.onnx"]


def test_torch_encoder_is_shared_whatever_the_cache_folder(tiny_distilbert, tmp_path):
    first = load_encoder(str(tiny_distilbert), cache_dir=tmp_path / "a")
    assert load_encoder(str(tiny_distilbert), cache_dir=tmp_path / "b") is first
    assert load_encoder(str(tiny_distilbert)) is first


def test_quantizing_quiets_onnxruntime_only_and_restores_logging(tiny_distilbert, tmp_path, caplog):
    from bertprobe.encoders.onnx import _quantize, quiet_onnxruntime

    LoadedEncoder(resolve_encoder(str(tiny_distilbert)), backend="onnx", cache_dir=tmp_path)
    fp32 = next((tmp_path / "onnx").rglob("model.onnx"))
    caplog.set_level(logging.INFO)
    root, named = logging.getLogger(), logging.getLogger("onnxruntime")
    before = (root.level, list(root.handlers), root.filters[:], named.level)
    caplog.clear()
    _quantize(fp32, tmp_path / "model.int8.onnx")
    assert (tmp_path / "model.int8.onnx").is_file()
    assert [r.getMessage() for r in caplog.records] == []  # the advice on pre-processing: gone
    assert (root.level, list(root.handlers), root.filters[:], named.level) == before
    with quiet_onnxruntime():
        logging.getLogger("someone.else").warning("still heard")
        logging.info("the root logger too")
        named.warning("held back")
    assert [r.getMessage() for r in caplog.records] == ["still heard", "the root logger too"]


def test_backends_do_not_share_cached_vectors(tiny_distilbert, tmp_path):
    with open_cache(tmp_path) as cache:
        embed(TEXTS, str(tiny_distilbert), FeatureSpec("mean"), cache=cache)
        _, int8 = embed(
            TEXTS,
            str(tiny_distilbert),
            FeatureSpec("mean"),
            RunOptions(backend="onnx-int8"),
            cache=cache,
        )
        _, torch_again = embed(TEXTS, str(tiny_distilbert), FeatureSpec("mean"), cache=cache)
    assert int8.n_cached == 0
    assert torch_again.n_cached == len(TEXTS)


def test_unknown_backend_is_a_user_error(tiny_distilbert):
    with pytest.raises(BadInputError, match="unknown backend 'tensorrt'"):
        embed(TEXTS, str(tiny_distilbert), FeatureSpec("mean"), RunOptions(backend="tensorrt"))


def test_model_trained_on_int8_records_and_uses_it(
    tiny_distilbert, sentiment_tsv, tmp_path, capsys
):
    out = tmp_path / "model"
    with pytest.raises(SystemExit) as info:
        main(
            [
                "train",
                str(sentiment_tsv),
                "--encoder",
                str(tiny_distilbert),
                "--pooling",
                "mean",
                "--cv",
                "3",
                "--backend",
                "onnx-int8",
                "--out",
                str(out),
                "--json",
            ]
        )
    assert info.value.code == 0
    assert json.loads(capsys.readouterr().out)["backend"] == "onnx-int8"
    assert json.loads((out / "card.json").read_text())["features"]["backend"] == "onnx-int8"
    from bertprobe import RunOptions, load_model

    model = load_model(out)
    assert model.backend == "onnx-int8"
    # No cache: int8 activations are scaled per batch, so a vector embedded alone differs
    # a little from the one cached during training, embedded among others.
    X, _ = model.embed(["the film was great"], RunOptions(use_cache=False))
    reference, _ = embed(
        ["the film was great"],
        str(tiny_distilbert),
        FeatureSpec("mean"),
        RunOptions(backend="onnx-int8"),
    )
    assert np.array_equal(X, reference)


@pytest.mark.slow
def test_bundled_minilm_backends_agree_with_torch():
    from bertprobe.datasets import load_sst2

    texts = load_sst2("dev").texts[:200]
    spec = FeatureSpec("mean", (3, -1))
    reference, _ = embed(texts, "minilm", spec, RunOptions(batch_size=32))
    exported, _ = embed(texts, "minilm", spec, RunOptions(batch_size=32, backend="onnx"))
    quantized, _ = embed(texts, "minilm", spec, RunOptions(batch_size=32, backend="onnx-int8"))
    assert np.abs(exported - reference).max() < 1e-4
    # Stated tolerance for int8: every vector within cosine 0.97 of fp32, 0.99 on average.
    assert cosines(quantized, reference).min() > 0.97
    assert cosines(quantized, reference).mean() > 0.99
