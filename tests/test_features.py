"""Feature files: streamed embedding to .npy, resume after an interruption, chunked read-back."""

from __future__ import annotations

import tracemalloc

import numpy as np
import pytest

from bertprobe.core.errors import BadInputError
from bertprobe.datasets import load_sst2
from bertprobe.encoders.cache import open_cache
from bertprobe.encoders.encode import embed
from bertprobe.encoders.encoder import load_encoder
from bertprobe.encoders.features import FeatureWriter, embed_file, iter_feature_rows
from bertprobe.encoders.options import FeatureSpec, RunOptions
from test_cli import run

SPEC = FeatureSpec("mean", (-1,))


@pytest.fixture
def texts_file(tmp_path):
    texts = load_sst2("dev").texts[:150]
    path = tmp_path / "texts.txt"
    path.write_text("\n".join(texts) + "\n", encoding="utf-8")
    return path, texts


def test_streamed_file_matches_embedding_the_list(tiny_distilbert, texts_file, tmp_path):
    path, texts = texts_file
    out = tmp_path / "X.npy"
    stats = embed_file(
        path, out, str(tiny_distilbert), SPEC, RunOptions(batch_size=8), chunk_size=32
    )
    expected, _ = embed(texts, str(tiny_distilbert), SPEC, RunOptions(batch_size=8))
    X = np.load(out)
    assert stats.n_texts == 150 and X.shape == (150, 64)
    np.testing.assert_allclose(X, expected, atol=1e-5)
    assert not out.with_name("X.npy.partial").exists()
    assert not out.with_name("X.npy.partial.json").exists()
    chunks = list(iter_feature_rows(out, chunk_rows=40))
    assert [len(c) for c in chunks] == [40, 40, 40, 30]
    np.testing.assert_array_equal(np.concatenate(chunks), X)


def test_an_interrupted_run_resumes_after_the_last_chunk_written(
    tiny_distilbert, texts_file, tmp_path
):
    path, texts = texts_file
    out = tmp_path / "X.npy"
    model = load_encoder(str(tiny_distilbert))

    def stop_after_two_chunks(n_done):
        if n_done >= 64:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        embed_file(path, out, model, SPEC, chunk_size=32, on_chunk=stop_after_two_chunks)
    assert not out.exists()  # the output appears complete or not at all

    computed = []
    stats = embed_file(path, out, model, SPEC, chunk_size=32, on_chunk=computed.append)
    assert stats.n_resumed == 64
    assert computed == [96, 128, 150]  # only the chunks not already on disk
    expected, _ = embed(texts, model, SPEC)
    np.testing.assert_allclose(np.load(out), expected, atol=1e-5)


def test_a_partial_file_for_other_input_is_not_resumed(tiny_distilbert, texts_file, tmp_path):
    path, _ = texts_file
    out = tmp_path / "X.npy"
    model = load_encoder(str(tiny_distilbert))

    def stop(n_done):
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        embed_file(path, out, model, SPEC, chunk_size=32, on_chunk=stop)
    path.write_text("a different file\nwith two texts\n", encoding="utf-8")
    stats = embed_file(path, out, model, SPEC, chunk_size=32)
    assert stats.n_resumed == 0
    assert np.load(out).shape == (2, 64)


def test_writer_refuses_rows_of_the_wrong_width(tmp_path):
    writer = FeatureWriter(tmp_path / "X.npy", 3, 4, {"job": 1})
    with pytest.raises(ValueError, match="width 4"):
        writer.write(np.zeros((1, 5)))
    writer.write(np.ones((3, 4)))
    assert np.array_equal(np.load(writer.finish()), np.ones((3, 4), dtype=np.float32))


def test_memory_while_streaming_does_not_grow_with_the_file(tiny_distilbert, tmp_path):
    model = load_encoder(str(tiny_distilbert))
    words = load_sst2("train").texts
    peaks = {}
    for n in (1_000, 8_000):
        path = tmp_path / f"{n}.txt"
        path.write_text("\n".join(f"{words[i % 500]} {i}" for i in range(n)), encoding="utf-8")
        tracemalloc.start()
        try:
            embed_file(
                path, tmp_path / f"{n}.npy", model, SPEC, RunOptions(batch_size=64), chunk_size=500
            )
            peaks[n] = tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()
    # Eight times the texts: the same peak, within noise (a whole-file read would be ~8x).
    assert peaks[8_000] < 1.5 * peaks[1_000], peaks


def test_cli_embed_checks_the_whole_file_before_embedding(tiny_distilbert, tmp_path, capsys):
    path = tmp_path / "texts.tsv"
    path.write_text("".join(f"text {i}\t1\n" for i in range(5000)) + "\t0\n", encoding="utf-8")
    out = tmp_path / "X.npy"
    code, _, err = run(
        ["embed", path, "--encoder", tiny_distilbert, "--out", out, "--chunk-size", "100"], capsys
    )
    assert code == 2 and "empty text on lines 5001" in err
    assert not out.with_name("X.npy.partial").exists()


def test_cli_embed_resumes_without_the_cache(
    tiny_distilbert, texts_file, tmp_path, capsys, monkeypatch
):
    import bertprobe.encoders.features

    path, texts = texts_file
    out = tmp_path / "X.npy"
    real_embed = bertprobe.encoders.features.embed
    calls = []

    def embed_then_interrupt(batch, *args, **kwargs):
        calls.append(len(batch))
        if len(calls) == 3:
            raise KeyboardInterrupt
        return real_embed(batch, *args, **kwargs)

    monkeypatch.setattr(bertprobe.encoders.features, "embed", embed_then_interrupt)
    argv = [
        "embed",
        path,
        "--encoder",
        tiny_distilbert,
        "--pooling",
        "mean",
        "--out",
        out,
        "--chunk-size",
        "50",
        "--no-cache",
        "--json",
    ]
    code, _, err = run(argv, capsys)
    assert code == 130 and "resume" in err
    monkeypatch.setattr(bertprobe.encoders.features, "embed", real_embed)
    code, stdout, _ = run(argv, capsys)
    assert code == 0
    assert '"n_resumed": 100' in stdout
    expected, _ = embed(texts, str(tiny_distilbert), SPEC)
    np.testing.assert_allclose(np.load(out), expected, atol=1e-5)


def test_bad_npy_is_refused(tmp_path):
    path = tmp_path / "x.npy"
    np.save(path, np.zeros(3))
    with pytest.raises(BadInputError, match="2-D"):
        next(iter_feature_rows(path))


def test_cache_is_used_per_chunk(tiny_distilbert, texts_file, tmp_path):
    path, _ = texts_file
    with open_cache(tmp_path / "c") as cache:
        first = embed_file(
            path, tmp_path / "a.npy", str(tiny_distilbert), SPEC, chunk_size=40, cache=cache
        )
        second = embed_file(
            path, tmp_path / "b.npy", str(tiny_distilbert), SPEC, chunk_size=40, cache=cache
        )
    assert first.n_cached == 0 and second.n_cached == 150
    assert np.array_equal(np.load(tmp_path / "a.npy"), np.load(tmp_path / "b.npy"))


def test_train_out_of_core_saves_a_model_that_evaluates_and_serves_like_any(
    tiny_distilbert, sentiment_rows, tmp_path, capsys
):
    import json

    from bertprobe.heads.probe import OutOfCoreProbe
    from bertprobe.model.classifier import load_model
    from conftest import write_tsv

    train = write_tsv(tmp_path / "train.tsv", sentiment_rows * 8)
    test = write_tsv(tmp_path / "test.tsv", sentiment_rows)
    out = tmp_path / "model"
    code, stdout, err = run(
        [
            "train",
            train,
            "--test",
            test,
            "--encoder",
            tiny_distilbert,
            "--pooling",
            "mean",
            "--out-of-core",
            "--out",
            out,
            "--json",
        ],
        capsys,
    )
    assert code == 0, err
    result = json.loads(stdout)
    assert result["n_train"] == 800 and result["n_test"] == 100
    assert result["test_accuracy"] > 0.9  # the label is one word: even random features carry it

    model = load_model(out)
    assert isinstance(model.probe, OutOfCoreProbe)
    assert model.card["probe"]["solver"] == "sgd-out-of-core"
    assert model.card["data"]["train"]["n"] == 800
    code, stdout, _ = run(["evaluate", "--model", out, test, "--json"], capsys)
    assert json.loads(stdout)["accuracy"] == pytest.approx(result["test_accuracy"])
    code, _, err = run(["report", "--model", out, test, "--out", tmp_path / "report"], capsys)
    assert code == 0 and "trained out of core" in err
    assert (tmp_path / "report" / "report.html").is_file()
    assert not (tmp_path / "report" / "cv_vs_c.png").exists()


def test_a_damaged_partial_file_is_started_over(tmp_path):
    writer = FeatureWriter(tmp_path / "X.npy", 4, 2, {"job": 1})
    writer.write(np.ones((2, 2)))
    writer.close()
    (tmp_path / "X.npy.partial").write_bytes(b"not a numpy file")
    again = FeatureWriter(tmp_path / "X.npy", 4, 2, {"job": 1})
    assert again.rows_done == 0
    again.write(np.zeros((4, 2)))
    assert np.array_equal(np.load(again.finish()), np.zeros((4, 2), dtype=np.float32))
