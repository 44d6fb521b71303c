"""Long texts: windows of whole tokens, pooled window vectors, their cache keys, the card, the
CLI, and reading cells past the csv module's default field limit."""

from __future__ import annotations

import hashlib
import json

import numpy as np
import pytest

from bertprobe import Classifier
from bertprobe.core.errors import BadInputError
from bertprobe.data.files import ReadOptions, read_labelled, read_texts
from bertprobe.encoders.cache import open_cache
from bertprobe.encoders.encode import embed
from bertprobe.encoders.encoder import load_encoder
from bertprobe.encoders.options import FeatureSpec, RunOptions
from bertprobe.encoders.pooling import View
from test_cli import run


@pytest.fixture(scope="module")
def long_text(sentiment_rows) -> str:
    """Every sentiment row in one text: hundreds of tokens, several windows of 16."""
    return " ".join(text + " ." for text, _ in sentiment_rows)


@pytest.fixture
def encoder(tiny_distilbert):
    return load_encoder(str(tiny_distilbert))


def _content(window: list[int], encoder) -> list[int]:
    assert window[0] == encoder.tokenizer.cls_token_id
    assert window[-1] == encoder.tokenizer.sep_token_id
    return window[1:-1]


# --- window arithmetic --------------------------------------------------------------------


@pytest.mark.parametrize("stride", [0, 3, 7, 13])
def test_windows_cover_every_token_whole_and_overlap_by_the_stride(encoder, long_text, stride):
    full = encoder.tokenizer(long_text, add_special_tokens=False)["input_ids"]
    ids, owner = encoder.windows([long_text], max_length=16, stride=stride)
    assert len(ids) > 3 and set(owner) == {0}
    contents = [_content(w, encoder) for w in ids]
    assert all(len(w) == 16 for w in ids[:-1]) and len(ids[-1]) <= 16
    for before, after in zip(contents, contents[1:], strict=False):
        if stride:
            assert after[:stride] == before[-stride:]  # the overlap is the stride, no more
    joined = contents[0] + [t for c in contents[1:] for t in c[stride:]]
    assert joined == full  # every token, whole, in order: none lost, split or repeated


def test_windows_of_several_texts_are_consecutive_and_short_texts_are_one(encoder, long_text):
    texts = ["the film was good", long_text, "the plot was awful", long_text[:200]]
    ids, owner = encoder.windows(texts, max_length=16, stride=4)
    assert owner == sorted(owner) and set(owner) == {0, 1, 2, 3}
    assert owner.count(0) == 1 and owner.count(2) == 1
    truncated, _ = encoder.tokenize(texts, 16)
    assert ids[owner.index(0)] == truncated[0]  # a short text: exactly its truncate ids
    assert ids[owner.index(1)] == truncated[1]  # a long one starts where truncation cuts


def test_a_stride_that_leaves_no_progress_is_refused(encoder, long_text):
    with pytest.raises(BadInputError, match="stride 14 must be from 0 to 13"):
        encoder.windows([long_text], max_length=16, stride=14)
    with pytest.raises(BadInputError, match="no room for text"):
        encoder.windows([long_text], max_length=2, stride=0)


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"long": "split"}, "unknown long='split'"),
        ({"long": "chunk", "window_pool": "sum"}, "unknown window_pool='sum'"),
        ({"long": "chunk", "stride": -1}, "stride=-1"),
        ({"stride": 8}, "stride= applies to long=chunk only"),
    ],
)
def test_bad_long_text_options_are_one_line_errors(options, message):
    with pytest.raises(BadInputError, match=message):
        FeatureSpec("mean", **options)


# --- pooled windows -------------------------------------------------------------------------


def test_a_text_within_the_limit_gets_exactly_the_truncate_vector(tiny_distilbert, long_text):
    texts = ["the film was good", long_text, "the ending was dreadful", long_text[:300]]
    for pooling in ("cls", "mean", "max"):
        chunked, stats = embed(
            texts, str(tiny_distilbert), FeatureSpec(pooling, max_length=16, long="chunk")
        )
        truncated, _ = embed(texts, str(tiny_distilbert), FeatureSpec(pooling, max_length=16))
        assert np.allclose(chunked[[0, 2]], truncated[[0, 2]], atol=1e-6)
        assert not np.allclose(chunked[1], truncated[1], atol=1e-3)
        assert stats.n_truncated == 0 and stats.n_windows > len(texts)


@pytest.mark.parametrize("layers", [(-1,), (0, -1)])
def test_window_vectors_are_pooled_by_mean_or_max(tiny_distilbert, encoder, long_text, layers):
    spec = {"max_length": 16, "stride": 5, "long": "chunk"}
    mean, stats = embed([long_text], encoder, FeatureSpec("mean", layers, **spec))
    high, _ = embed([long_text], encoder, FeatureSpec("mean", layers, **spec, window_pool="max"))
    ids, _ = encoder.windows([long_text], 16, 5)
    views = [View(encoder.layer_index(layer), "mean") for layer in layers]
    one_by_one = np.vstack(
        [np.concatenate([v[0] for v in encoder.forward([w], views).values()]) for w in ids]
    )
    assert stats.n_windows == len(ids) and stats.windows_per_text == len(ids)
    assert np.allclose(mean[0], one_by_one.mean(0), atol=1e-5)
    assert np.allclose(high[0], one_by_one.max(0), atol=1e-5)
    assert np.all(high >= mean - 1e-6) and not np.allclose(high, mean, atol=1e-3)


def test_rows_come_back_in_input_order_with_duplicates(tiny_distilbert, long_text):
    spec = FeatureSpec("mean", max_length=16, long="chunk", stride=4)
    texts = [long_text, "the cast was lovely", long_text[:250], long_text, "ok"]
    together, stats = embed(texts, str(tiny_distilbert), spec, RunOptions(batch_size=3))
    alone = np.vstack([embed([t], str(tiny_distilbert), spec)[0] for t in texts])
    assert stats.n_unique == 4 and stats.n_computed == 4
    assert np.allclose(together, alone, atol=1e-5)


# --- cache ----------------------------------------------------------------------------------


def test_chunk_and_truncate_vectors_are_cached_apart(tiny_distilbert, long_text, tmp_path):
    texts = [long_text, long_text[:400], "the music was great"]
    chunk = FeatureSpec("mean", max_length=16, long="chunk")
    truncate = FeatureSpec("mean", max_length=16)
    with open_cache(tmp_path) as cache:
        first, stats = embed(texts, str(tiny_distilbert), chunk, cache=cache)
        assert stats.n_cached == 0
        cut, stats = embed(texts, str(tiny_distilbert), truncate, cache=cache)
        assert stats.n_cached == 0 and not np.allclose(cut[0], first[0], atol=1e-3)
        again, stats = embed(texts, str(tiny_distilbert), chunk, cache=cache)
        assert stats.n_cached == 3 and stats.n_windows == 0
        assert np.array_equal(again, first)
        other = FeatureSpec("mean", max_length=16, long="chunk", stride=1, window_pool="max")
        _, stats = embed(texts, str(tiny_distilbert), other, cache=cache)
        assert stats.n_cached == 0
        assert cache._db.execute("SELECT COUNT(*) FROM view_windows").fetchone()[0] == 2


def test_truncate_views_keep_the_keys_of_caches_made_before_windows(tmp_path):
    described = {
        "fingerprint": "sha256:abc",
        "layer": 6,
        "pooling": "mean",
        "max_length": 256,
        "backend": "torch",
    }
    before = hashlib.sha256(json.dumps(described, sort_keys=True).encode()).hexdigest()[:24]
    with open_cache(tmp_path) as cache:
        assert cache.register_view("x", "sha256:abc", 6, "mean", 256, 384) == before
        assert cache.register_view("x", "sha256:abc", 6, "mean", 256, 384, long="chunk") != before


# --- reading long rows ----------------------------------------------------------------------


def _long_cell(n_chars: int) -> str:
    words = ["the", "plot", "wanders", "on", "and", "on", "without", "a", "point"]
    text = " ".join(words[i % len(words)] for i in range(n_chars // 3))
    return text[:n_chars]


@pytest.mark.parametrize("suffix", [".tsv", ".csv"])
def test_a_row_of_200_000_characters_reads(tmp_path, suffix):
    text = _long_cell(200_000)
    sep = "\t" if suffix == ".tsv" else ","
    path = tmp_path / f"long{suffix}"
    path.write_text(f"text{sep}label\nshort one{sep}0\n{text}{sep}1\n", encoding="utf-8")
    data = read_labelled(path)
    assert data.texts[1] == text and data.labels == [0, 1]


def test_a_row_over_the_bound_is_a_one_line_error_naming_file_and_line(tmp_path):
    path = tmp_path / "long.csv"
    path.write_text(f"text,label\nfine,0\n{_long_cell(5_000)},1\n", encoding="utf-8")
    assert len(ReadOptions(max_field_chars=5_000).read_labelled(path)) == 2
    with pytest.raises(BadInputError) as info:
        ReadOptions(max_field_chars=4_999).read_labelled(path)
    message = str(info.value)
    assert "\n" not in message and f"{path}: line 3" in message
    assert "4,999 characters" in message and "max_field_chars=" in message
    for bad in (0, 2**63):
        with pytest.raises(BadInputError, match=f"max_field_chars={bad}: use from 1 to "):
            ReadOptions(max_field_chars=bad)


def test_the_cli_names_the_flag_that_raises_the_bound(tiny_model_dir, tmp_path, capsys):
    path = tmp_path / "long.tsv"
    path.write_text(f"fine\t1\n{_long_cell(3_000)}\t0\n", encoding="utf-8")
    argv = ["predict", "--model", tiny_model_dir, "--input", path, "--max-text-chars", "2000"]
    code, _, err = run(argv, capsys)
    assert code == 2 and f"{path}: line 2" in err and "--max-text-chars" in err
    assert len(read_texts(path, max_field_chars=3_000).texts) == 2


# --- training, the card, prediction ---------------------------------------------------------


def test_train_and_predict_with_chunk_read_the_mode_back_from_the_card(
    tiny_distilbert, long_rows_tsv, tmp_path, capsys
):
    path, rows = long_rows_tsv
    out = tmp_path / "model"
    argv = ["train", path, "--encoder", tiny_distilbert, "--pooling", "mean", "--cv", "2"]
    chunk = ["--max-length", "16", "--long", "chunk", "--stride", "4", "--window-pool", "max"]
    code, stdout, err = run([*argv, *chunk, "--out", out, "--json"], capsys)
    assert code == 0, err
    summary = json.loads(stdout)
    assert summary["long"] == "chunk" and summary["n_windows"] > len(rows)
    assert summary["n_truncated"] == 0
    card = json.loads((out / "card.json").read_text())
    assert card["features"]["long"] == "chunk"
    assert card["features"]["stride"] == 4 and card["features"]["window_pool"] == "max"
    assert card["format_version"] == 3

    model = Classifier.load(out)
    assert (model.spec.long, model.spec.stride, model.spec.window_pool) == ("chunk", 4, "max")
    texts = [t for t, _ in rows[:4]]
    code, stdout, err = run(["predict", "--model", out, *texts], capsys)
    assert code == 0, err
    answered = [json.loads(line)["probabilities"] for line in stdout.splitlines()]
    spec = FeatureSpec("mean", max_length=16, long="chunk", stride=4, window_pool="max")
    X, _ = embed(texts, str(tiny_distilbert), spec, cache=None)
    expected = model.probe.predict_proba(X)
    labels = [str(c) for c in model.classes]
    assert np.allclose([[p[k] for k in labels] for p in answered], expected, atol=1e-5)

    code, _, err = run([*argv, "--stride", "4", "--out", tmp_path / "cut"], capsys)
    assert code == 2 and "--stride applies to --long chunk only" in err
    code, stdout, err = run([*argv, *chunk[:2], "--out", tmp_path / "cut"], capsys)
    assert code == 0 and "truncated" in stdout
    assert "long" not in json.loads((tmp_path / "cut" / "card.json").read_text())["features"]
    code, stdout, err = run([*argv, *chunk], capsys)  # its vectors are cached
    assert code == 0 and f"{len(rows)} from cache" in stdout
    code, stdout, err = run([*argv, *chunk, "--no-cache"], capsys)
    per_text = summary["n_windows"] / len(rows)
    assert code == 0 and f"{summary['n_windows']} windows, {per_text:.2f} per text" in stdout


def test_a_card_from_before_windows_loads_as_truncate(tiny_model_dir):
    model = Classifier.load(tiny_model_dir)
    assert "long" not in model.card["features"] and model.spec.long == "truncate"


def test_auto_sweeps_pooled_windows_and_the_service_answers_from_them(
    tiny_distilbert, long_rows_tsv, tmp_path
):
    from fastapi.testclient import TestClient

    from bertprobe import EncoderOptions, RunOptions, TrainOptions, train
    from bertprobe.serve import create_app

    path, rows = long_rows_tsv
    encoding = EncoderOptions(
        str(tiny_distilbert),
        pooling="mean",
        max_length=16,
        long="chunk",
        window_pool="max",
        run=RunOptions(use_cache=False),
    )
    options = TrainOptions(Cs="coarse", cv=2, n_jobs=1, auto=True, poolings="mean,max")
    result = train(path, encoding=encoding, options=options, out=tmp_path / "model")
    assert result.sweep is not None and result.sweep.embed.n_windows > len(rows)
    model = Classifier.load(tmp_path / "model")
    assert model.card["features"]["long"] == "chunk" and model.card["features"]["stride"] == 4
    assert model.spec.pooling == result.sweep.best.pooling

    texts = [t for t, _ in rows[::5]]
    spec = FeatureSpec(model.spec.pooling, model.spec.layers, 16, "chunk", 4, "max")
    expected = model.probe.predict_proba(embed(texts, str(tiny_distilbert), spec)[0])
    document = (" . ".join(t for t, _ in rows) * 10)[:20_000]  # far past short texts
    assert len(document) == 20_000
    with TestClient(create_app(model)) as client:
        answer = client.post("/v1/predict", json={"texts": texts}).json()["predictions"]
        # A model that reads documents in windows is served documents by default.
        schema = client.get("/openapi.json").json()["components"]["schemas"]
        assert schema["PredictRequest"]["properties"]["texts"]["items"]["maxLength"] == 100_000
        assert client.post("/v1/predict", json={"texts": [document]}).status_code == 200
        assert client.post("/v1/predict", json={"texts": ["x" * 100_001]}).status_code == 422
    labels = [str(c) for c in model.classes]
    got = [[p["probabilities"][k] for k in labels] for p in answer]
    assert np.allclose(got, expected, atol=1e-5)


def test_a_truncating_model_is_served_short_texts_unless_told(tiny_model_dir):
    from fastapi.testclient import TestClient

    from bertprobe.serve import ServeConfig, ServeLimits, create_app

    model = Classifier.load(tiny_model_dir)
    for limits, most in ((ServeLimits(), 2000), (ServeLimits(max_chars=5000), 5000)):
        with TestClient(create_app(model, ServeConfig(limits=limits))) as client:
            assert client.post("/v1/predict", json={"texts": ["a" * most]}).status_code == 200
            too_long = client.post("/v1/predict", json={"texts": ["a" * (most + 1)]})
            assert too_long.status_code == 422


def test_embed_writes_pooled_windows_and_counts_them(
    tiny_distilbert, long_rows_tsv, tmp_path, capsys
):
    path, rows = long_rows_tsv
    out = tmp_path / "vectors.npy"
    argv = ["embed", path, "--encoder", tiny_distilbert, "--pooling", "mean", "--max-length"]
    code, stdout, err = run([*argv, "16", "--long", "chunk", "--out", out, "--json"], capsys)
    assert code == 0, err
    summary = json.loads(stdout)
    assert summary["long"] == "chunk" and summary["n_windows"] > len(rows)
    spec = FeatureSpec("mean", max_length=16, long="chunk")
    expected, _ = embed([t for t, _ in rows], str(tiny_distilbert), spec)
    assert np.allclose(np.load(out), expected, atol=1e-5)


# --- huge texts: only what the encoder reads is tokenized -----------------------------------

_HARD_PIECES = [
    "the", "film", "was", "good", " ", "   ", "\n\n", "\t", ",", "!!!", "unbelievable",
    "well-made", "x" * 150, "a" * 30, "é", "e\u0301", "日本語", "🙂", "ﬁ",
]  # fmt: skip


def _hard_texts() -> list[str]:
    """Long words (WordPiece reads a word of over 100 characters as one [UNK]), whitespace runs,
    accents (composed and combining), CJK, emoji, ligatures, punctuation runs."""
    import random

    rng = random.Random(0)
    mixed = [
        "".join(rng.choice(_HARD_PIECES) + rng.choice(["", " "]) for _ in range(n))
        for n in (5, 60, 400, 2500)
    ]
    runs = [" " * 5000 + "the film", "x" * 5000, "good " * 3000, ",,,," * 2000, "é" * 900]
    return mixed + runs


@pytest.fixture
def small_pieces(monkeypatch):
    """Prefixes and segments of a few dozen characters, so that ordinary texts take the paths
    a multi-MB text takes."""
    import bertprobe.encoders.tokens as tokens

    monkeypatch.setattr(tokens, "CHARS_PER_TOKEN", 1)
    monkeypatch.setattr(tokens, "SEGMENT_CHARS", 40)


def _whole(encoder, texts, max_length, **more):
    return encoder.tokenizer(list(texts), truncation=True, max_length=max_length, **more)


@pytest.mark.parametrize("max_length", [2, 3, 16, 64])
def test_a_text_read_from_a_prefix_truncates_as_the_whole_text(encoder, small_pieces, max_length):
    texts = _hard_texts()
    whole = _whole(encoder, texts, max_length)
    ids, n_truncated = encoder.tokenize(texts, max_length)
    assert ids == whole["input_ids"]
    assert n_truncated == sum(1 for e in whole.encodings if e.overflowing) > 0


@pytest.mark.parametrize(("max_length", "stride"), [(3, 0), (16, 0), (16, 3), (16, 13), (64, 15)])
def test_windows_from_segments_are_the_tokenizers_own(encoder, small_pieces, max_length, stride):
    texts = _hard_texts()
    whole = _whole(encoder, texts, max_length, stride=stride, return_overflowing_tokens=True)
    ids, owner = encoder.windows(texts, max_length, stride)
    assert ids == whole["input_ids"]
    assert owner == list(whole["overflow_to_sample_mapping"])


@pytest.mark.parametrize("long", ["truncate", "chunk"])
def test_vectors_and_counts_of_hard_texts_are_those_of_the_whole_texts(
    tiny_distilbert, encoder, monkeypatch, long
):
    import bertprobe.encoders.tokens as tokens

    texts = _hard_texts()
    spec = FeatureSpec("mean", max_length=16, long=long)
    before, stats_before = embed(texts, encoder, spec)
    monkeypatch.setattr(tokens, "CHARS_PER_TOKEN", 1)
    monkeypatch.setattr(tokens, "SEGMENT_CHARS", 40)
    after, stats_after = embed(texts, encoder, spec)
    assert np.array_equal(after, before)
    assert stats_after.n_truncated == stats_before.n_truncated
    assert stats_after.n_windows == stats_before.n_windows


@pytest.fixture
def widest_call(encoder, monkeypatch):
    """Records the most characters one text handed to the tokenizer had."""
    seen = {"chars": 0}
    tokenizer_type = type(encoder.tokenizer)
    call = tokenizer_type.__call__

    def spy(self, text, *args, **kwargs):
        for t in [text] if isinstance(text, str) else text:
            seen["chars"] = max(seen["chars"], len(t))
        return call(self, text, *args, **kwargs)

    monkeypatch.setattr(tokenizer_type, "__call__", spy)
    return seen


def test_the_tokenizer_sees_a_bounded_prefix_of_a_multi_mb_text(encoder, widest_call):
    from bertprobe.encoders.tokens import CHARS_PER_TOKEN

    huge = ("the plot wanders on and on without a point . " * 70_000)[:3_000_000]
    ids, n_truncated = encoder.tokenize([huge, "the film was good"], 64)
    assert widest_call["chars"] <= 64 * CHARS_PER_TOKEN  # 1 KB of 3 MB, one try sufficed
    expected = _whole(encoder, [huge[:5_000], "the film was good"], 64)["input_ids"]
    assert ids == expected and n_truncated == 1


def test_windows_of_a_long_text_hold_a_segment_of_offsets_at_a_time(
    encoder, monkeypatch, widest_call
):
    import bertprobe.encoders.tokens as tokens

    monkeypatch.setattr(tokens, "SEGMENT_CHARS", 4096)
    long = ("the plot wanders on and on without a point . " * 7_000)[:300_000]
    ids, owner = encoder.windows([long, "the film was good"], 16, 4)
    assert widest_call["chars"] <= 2 * 4096  # a segment, never the text
    monkeypatch.setattr(tokens, "SEGMENT_CHARS", 1 << 30)  # now at once, as before
    assert (ids, owner) == encoder.windows([long, "the film was good"], 16, 4)
    assert len(ids) > 5_000 and owner.count(1) == 1
