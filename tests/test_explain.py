"""Token attributions (Classifier.explain, bertprobe explain): the exact read-out decomposition
adds up to the model's score, words map back to the text, occlusion covers the rest, and the
rankings are faithful (ERASER comprehensiveness against a random ranking)."""

from __future__ import annotations

import json

import numpy as np
import pytest

from bertprobe import Classifier, LinearProbe, resolve_encoder
from bertprobe.core.errors import BadInputError
from bertprobe.encoders.encode import embed
from bertprobe.encoders.options import EncoderOptions, FeatureSpec
from bertprobe.heads.linear import linear_readout
from bertprobe.heads.multilabel import MultiLabelProbe
from bertprobe.heads.probe import OutOfCoreProbe
from bertprobe.model.explain import erasure_scores
from test_cli import run

ODD_TEXTS = [
    "The film was GOOD, wasn't it?!",
    "  the  acting was   awful ... café déjà vu  ",
    "x",
]


def _model(folder, rows, spec, probe=None, labels=None, text_model=None) -> Classifier:
    ref = resolve_encoder(str(folder))
    texts = [t for t, _ in rows]
    X, _ = embed(texts, ref, spec)
    y = labels if labels is not None else [y for _, y in rows]
    probe = (probe or LinearProbe(cv=3)).fit(X, y)
    if text_model is not None:
        text_model = text_model.fit(texts, y)
    return Classifier(card={}, probe=probe, encoder=ref, spec=spec, text_model=text_model)


def _model_logits(model: Classifier, texts: list[str]) -> np.ndarray:
    """The scores the model computes on its own path (embed, then the probe's weights)."""
    X, _ = model.embed(texts)
    z = linear_readout(model.probe).scores(X) if not model.decision.label_sets else None
    if model.decision.label_sets:
        p = np.clip(model.predict_proba(texts), 1e-15, 1 - 1e-15)
        return np.log(p / (1 - p))
    return np.concatenate([-z, z], axis=1) if z.shape[1] == 1 else z


def _assert_adds_up(explanations, model, texts, tol=1e-4):
    expected = _model_logits(model, texts)
    for e, z in zip(explanations, expected, strict=True):
        assert e.method == "exact"
        assert e.scores.shape == (len(e.words), len(model.classes))
        np.testing.assert_allclose(e.constant + e.scores.sum(axis=0), e.logits, atol=1e-9)
        np.testing.assert_allclose(e.logits, z, atol=tol)
        np.testing.assert_allclose(e.proba, model.predict_proba([e.text])[0], atol=1e-5)


@pytest.mark.parametrize("layers", [(-1,), (0, -2, -1)])
def test_exact_scores_add_up_to_the_two_class_log_odds(tiny_distilbert, sentiment_rows, layers):
    model = _model(tiny_distilbert, sentiment_rows, FeatureSpec("mean", layers))
    texts = [t for t, _ in sentiment_rows[:6]] + ODD_TEXTS
    found = model.explain(texts)
    _assert_adds_up(found, model, texts)
    for e in found:  # two classes: one log-odds, shown for each class with its sign
        np.testing.assert_allclose(e.scores[:, 0], -e.scores[:, 1])
        assert e.score == "log-odds" and e.labels[0] == model.predict([e.text])[0]


def test_exact_scores_add_up_to_three_class_logits_and_sgd_scores(tiny_distilbert, sentiment_rows):
    labels = [i % 3 for i in range(len(sentiment_rows))]
    texts = [t for t, _ in sentiment_rows[:5]] + ODD_TEXTS
    for probe in (LinearProbe(cv=3), OutOfCoreProbe()):
        model = _model(
            tiny_distilbert, sentiment_rows, FeatureSpec("mean", (-2, -1)), probe, labels
        )
        found = model.explain(texts)
        _assert_adds_up(found, model, texts)
        assert found[0].score == "logit" and found[0].scores.shape[1] == 3


def test_exact_scores_add_up_to_each_labels_log_odds(tiny_distilbert, sentiment_rows):
    sets = [
        [name for name, on in (("pos", y == 1), ("film", "film" in t)) if on]
        for t, y in sentiment_rows
    ]
    model = _model(
        tiny_distilbert, sentiment_rows, FeatureSpec("mean"), MultiLabelProbe(cv=3), sets
    )
    texts = [t for t, _ in sentiment_rows[:6]]
    found = model.explain(texts)
    _assert_adds_up(found, model, texts)
    assert found[0].classes == ("film", "pos")
    assert [e.labels for e in found] == list(model.predict(texts))
    for e in found:  # a label is given where its log-odds reach its threshold's
        given = [c for c, z, d in zip(e.classes, e.logits, e.decision, strict=True) if z >= d]
        assert given == list(e.labels)


def test_exact_scores_of_long_texts_in_windows_add_up(tiny_distilbert, sentiment_rows):
    rows = [
        (" . ".join(t for t, _ in sentiment_rows[i : i + 5]), y)
        for i, (_, y) in enumerate(sentiment_rows[:-5])
    ]
    spec = FeatureSpec("mean", (-1,), max_length=16, long="chunk")
    model = _model(tiny_distilbert, rows, spec)
    texts = [t for t, _ in rows[:4]]
    found = model.explain(texts)
    _assert_adds_up(found, model, texts)
    for e in found:  # every word of the text is read, in one window or two
        assert [w.text for w in e.words] == e.text.replace(".", " . ").split()
        assert "truncated" not in e.note


def test_words_map_back_to_the_text(tiny_model_dir):
    model = Classifier.load(tiny_model_dir)
    for e in model.explain(ODD_TEXTS):
        assert e.words, e.text
        for w in e.words:
            assert e.text[w.start : w.end] == w.text and w.text.strip() == w.text
        assert [w.start for w in e.words] == sorted(w.start for w in e.words)
    assert [w.text for w in model.explain(ODD_TEXTS[:1])[0].words] == [
        "The", "film", "was", "GOOD", ",", "wasn", "'", "t", "it", "?", "!",
    ]  # fmt: skip


def test_a_truncated_text_shows_the_words_read_and_says_so(tiny_distilbert, sentiment_rows):
    model = _model(tiny_distilbert, sentiment_rows, FeatureSpec("mean", max_length=8))
    [e] = model.explain(["the film was good and the acting was great and the end was lovely"])
    assert [w.text for w in e.words] == ["the", "film", "was", "good", "and", "the"]
    assert "truncated" in e.note
    _assert_adds_up([e], model, [e.text])


@pytest.mark.parametrize("pooling", ["cls", "max"])
@pytest.mark.parametrize("occlude", ["delete", "mask"])
def test_occlusion_explains_cls_and_max_pooling(tiny_distilbert, sentiment_rows, pooling, occlude):
    model = _model(tiny_distilbert, sentiment_rows, FeatureSpec(pooling))
    texts = ["the film was wonderful", "the plot was dreadful", "x"]
    found = model.explain(texts, occlude=occlude)
    for e in found:
        assert e.method == f"occlusion-{occlude}" and f"{pooling} pooling" in e.note
        assert np.isfinite(e.scores).all() and e.scores.shape == (len(e.words), 2)
        np.testing.assert_allclose(e.constant + e.scores.sum(axis=0), e.logits, atol=1e-9)
    np.testing.assert_allclose(
        [e.logits[1] for e in found], _model_logits(model, texts)[:, 1], atol=1e-4
    )
    # A word's score is the text's log-odds minus the log-odds without it.
    if occlude == "delete":
        e = found[0]
        without = _model_logits(model, ["the film was"])[0, 1]
        assert e.scores[3, 1] == pytest.approx(e.logits[1] - without, abs=1e-4)


def test_occlusion_of_a_model_with_a_tfidf_vote(tiny_distilbert, sentiment_rows):
    from bertprobe.heads.tfidf import tfidf_pipeline

    model = _model(
        tiny_distilbert, sentiment_rows, FeatureSpec("mean"), text_model=tfidf_pipeline(cv=3)
    )
    [e] = model.explain(["the film was wonderful"])
    assert e.method == "occlusion-delete" and "TF-IDF" in e.note
    p = model.predict_proba(["the film was wonderful"])[0]
    assert e.logits[1] == pytest.approx(np.log(p[1] / p[0]), abs=1e-4)
    with pytest.raises(BadInputError, match="method='exact' cannot explain this model: the TF"):
        model.explain(["the film"], method="exact")


def _baseline_scores(model: Classifier, texts: list[str]) -> np.ndarray:
    """The model's scores on the integrated gradients' baseline: each text with its words'
    tokens replaced by the pad token (special tokens and length kept), computed on the
    encoder's own forward pass."""
    from bertprobe.encoders.options import RunOptions
    from bertprobe.encoders.pooling import View
    from bertprobe.model.explain import read_texts

    encoder = RunOptions().load(model.encoder)
    pad = encoder.tokenizer.pad_token_id
    views = [View(encoder.layer_index(layer), model.spec.pooling) for layer in model.spec.layers]
    rows = []
    for r in read_texts(model, encoder, texts):
        [window] = r.windows
        base = [t if w is None else pad for t, w in zip(window, r.words[0], strict=True)]
        pooled = encoder.forward([base], views)
        rows.append(np.concatenate([pooled[v][0] for v in views]))
    z = linear_readout(model.probe).scores(np.array(rows))
    return np.concatenate([-z, z], axis=1) if z.shape[1] == 1 else z


@pytest.mark.parametrize(
    "spec",
    [FeatureSpec("mean"), FeatureSpec("cls", (0, -2, -1)), FeatureSpec("max")],
    ids=["mean", "cls-3-layers", "max"],
)
def test_integrated_gradients_add_up_to_the_change_from_the_baseline(
    tiny_distilbert, sentiment_rows, spec
):
    model = _model(tiny_distilbert, sentiment_rows, spec)
    texts = ["the film was wonderful", "the plot was dreadful", "x"]
    found = model.explain(texts, method="integrated-gradients", steps=64)
    np.testing.assert_allclose([e.logits for e in found], _model_logits(model, texts), atol=1e-4)
    for e, base in zip(found, _baseline_scores(model, texts), strict=True):
        assert e.method == "integrated-gradients" and "baseline of pad tokens" in e.note
        assert e.scores.shape == (len(e.words), 2) and e.delta is not None
        np.testing.assert_allclose(e.constant + e.scores.sum(axis=0), e.logits, atol=1e-9)
        # Completeness: the words' scores are the change from the baseline, up to Captum's
        # convergence delta; the constant is therefore the baseline's score.
        assert abs(e.constant[1] - base[1]) <= e.delta + 1e-3, (e.constant, base, e.delta)
        assert e.labels[0] == model.predict([e.text])[0]
    if spec.pooling == "mean":  # a smooth path: the 64-point integral is tight
        assert max(e.delta for e in found) < 1e-3


def test_integrated_gradients_for_several_classes_labels_and_windows(
    tiny_distilbert, sentiment_rows
):
    texts = [t for t, _ in sentiment_rows[:3]]
    three = _model(
        tiny_distilbert, sentiment_rows, FeatureSpec("mean", (-2, -1)), None,
        [i % 3 for i in range(len(sentiment_rows))],
    )  # fmt: skip
    sets = [["pos"] if y else ["neg", "film"] if "film" in t else [] for t, y in sentiment_rows]
    labelled = _model(
        tiny_distilbert, sentiment_rows, FeatureSpec("max"), MultiLabelProbe(cv=3), sets
    )
    for model in (three, labelled):
        found = model.explain(texts, method="integrated-gradients", steps=16)
        np.testing.assert_allclose(
            [e.logits for e in found], _model_logits(model, texts), atol=1e-4
        )
        assert found[0].scores.shape == (len(found[0].words), len(model.classes))
    long_rows = [
        (" . ".join(t for t, _ in sentiment_rows[i : i + 5]), y)
        for i, (_, y) in enumerate(sentiment_rows[:-5])
    ]
    windows = _model(
        tiny_distilbert,
        long_rows,
        FeatureSpec("cls", max_length=16, long="chunk", window_pool="max"),
    )
    long_texts = [t for t, _ in long_rows[:2]]
    found = windows.explain(long_texts, method="integrated-gradients", steps=16)
    np.testing.assert_allclose(
        [e.logits for e in found], _model_logits(windows, long_texts), atol=1e-4
    )
    for e in found:  # every word of the text is read and scored, in one window or two
        assert [w.text for w in e.words] == e.text.replace(".", " . ").split()
        assert np.count_nonzero(e.scores[:, 1]) > len(e.words) // 2


def test_integrated_gradients_refuse_the_tfidf_vote_and_run_torch_for_onnx(
    tiny_distilbert, sentiment_rows
):
    from bertprobe.encoders.options import RunOptions
    from bertprobe.heads.tfidf import tfidf_pipeline

    voting = _model(
        tiny_distilbert, sentiment_rows, FeatureSpec("mean"), text_model=tfidf_pipeline(cv=3)
    )
    with pytest.raises(BadInputError, match="integrated-gradients' cannot explain .*TF-IDF"):
        voting.explain(["the film"], method="integrated-gradients")
    model = _model(tiny_distilbert, sentiment_rows, FeatureSpec("mean"))
    model.backend = "onnx-int8"  # a model trained on int8: its gradients come from torch
    [e] = model.explain(["the film was good"], method="integrated-gradients", steps=8)
    assert e.method == "integrated-gradients" and len(e.words) == 4
    with pytest.raises(BadInputError, match="need the torch backend, not 'onnx'"):
        model.explain(["the film"], RunOptions(backend="onnx"), method="integrated-gradients")
    with pytest.raises(BadInputError, match="steps=0"):
        model.explain(["the film"], method="integrated-gradients", steps=0)


def test_exact_and_occlusion_are_asked_for_by_name(tiny_model_dir):
    model = Classifier.load(tiny_model_dir)
    [e] = model.explain(["the film was good"], method="occlusion")
    assert e.method == "occlusion-delete"
    with pytest.raises(BadInputError, match="method='best': choose from auto, exact, occlusion"):
        model.explain(["the film"], method="best")
    with pytest.raises(BadInputError, match="occlude='blank'"):
        model.explain(["the film"], occlude="blank")
    with pytest.raises(BadInputError, match="single string"):
        model.explain("the film")


def test_explanation_as_json(tiny_model_dir):
    [e] = Classifier.load(tiny_model_dir).explain(["the film was good"])
    record = json.loads(json.dumps(e.to_dict()))
    assert record["method"] == "exact" and record["classes"] == [0, 1]
    assert [w["text"] for w in record["words"]] == ["the", "film", "was", "good"]
    total = record["constant"]["1"] + sum(w["scores"]["1"] for w in record["words"])
    assert total == pytest.approx(record["logits"]["1"], abs=1e-9)
    assert "not the effect of deleting the word" in record["note"]
    assert record["decision"] == {"0": 0.0, "1": 0.0}


def test_the_decision_threshold_in_score_units(tiny_model_dir):
    model = Classifier.load(tiny_model_dir)
    texts = ["the film was good", "the plot was awful", "the cast"]
    for t in (0.2, 0.5, 0.8):
        for e in model.explain(texts, threshold=t):
            assert e.decision[1] == pytest.approx(np.log(t / (1 - t)))
            assert e.labels[0] == (1 if e.logits[1] >= e.decision[1] else 0)


# --- the command -----------------------------------------------------------------------------


def test_explain_command_prints_words_and_json(tiny_model_dir, tmp_path, capsys):
    code, out, err = run(["explain", "--model", tiny_model_dir, "the film was good"], capsys)
    assert code == 0 and "the film was good" in out and "top: good" in out
    assert "not the effect of deleting the word" in err
    texts = tmp_path / "texts.txt"
    texts.write_text("the film was good\nthe plot was awful\n", encoding="utf-8")
    code, out, _ = run(["explain", "--model", tiny_model_dir, "--input", texts, "--json"], capsys)
    records = [json.loads(line) for line in out.splitlines()]
    assert code == 0 and [r["text"] for r in records] == texts.read_text().splitlines()
    code, out, _ = run(
        ["explain", "-m", tiny_model_dir, "--method", "occlusion", "--json", "the film"], capsys
    )
    assert code == 0 and json.loads(out)["method"] == "occlusion-delete"
    code, out, err = run(
        ["explain", "-m", tiny_model_dir, "--method", "integrated-gradients", "--steps", "8",
         "--json", "the film"],
        capsys,
    )  # fmt: skip
    record = json.loads(out)
    assert code == 0 and record["method"] == "integrated-gradients", err
    assert 0 <= record["convergence_delta"] < 0.1
    code, out, _ = run(
        ["explain", "-m", tiny_model_dir, "--method", "integrated-gradients", "the film"], capsys
    )
    assert code == 0 and "[integrated-gradients, delta " in out


@pytest.mark.parametrize(
    "argv, words",
    [
        (["--method", "best", "the film"], "--method 'best': choose from auto, exact, occlusion"),
        (["--method", "exact", "--occlude", "blank", "x"], "--occlude 'blank': choose from"),
        ([], "no texts to classify"),
        (["--html", "{tmp}", "the film"], "is a folder"),
        (["--method", "integrated-gradients", "--backend", "onnx", "x"], "need the torch backend"),
    ],
)
def test_explain_bad_input_is_one_line_and_exit_2(tiny_model_dir, tmp_path, capsys, argv, words):
    argv = [a.replace("{tmp}", str(tmp_path)) for a in argv]
    code, out, err = run(["explain", "--model", tiny_model_dir, *argv], capsys)
    assert code == 2 and out == ""
    assert len(err.strip().splitlines()) == 1 and words in err, err


def test_explain_html_page_shows_every_word_in_chromium(
    tiny_distilbert, sentiment_rows, tmp_path, capsys
):
    from playwright.sync_api import sync_playwright

    from browser import open_browser

    labels = [i % 3 for i in range(len(sentiment_rows))]
    model = _model(tiny_distilbert, sentiment_rows, FeatureSpec("mean"), labels=labels)
    folder = model.save(tmp_path / "three")
    page_path = tmp_path / "pages" / "why.html"
    texts = ["the film was good", "the plot was <b>awful</b> & dull", "the cast"]
    code, _, err = run(["explain", "--model", folder, *texts, "--html", page_path], capsys)
    assert code == 0 and f"wrote {page_path}" in err
    with sync_playwright() as p:
        browser = open_browser(p)
        page = browser.new_page()
        problems: list[str] = []
        page.on("console", lambda m: problems.append(m.text) if m.type == "error" else None)
        page.on("pageerror", lambda e: problems.append(str(e)))
        page.goto(page_path.as_uri())
        words = page.eval_on_selector_all(
            ".w",
            """ws => ws.map(w => { const r = w.getBoundingClientRect();
                const s = getComputedStyle(w);
                return [w.textContent, r.width > 0 && r.height > 0, s.visibility, s.color,
                        s.backgroundColor]; })""",
        )
        rows = page.eval_on_selector_all("tbody tr", "rs => rs.map(r => r.innerText)")
        before = [w[4] for w in words]
        page.select_option("#cls", "2")
        after = page.eval_on_selector_all(".w", "ws => ws.map(w => w.style.background)")
        browser.close()
    assert problems == []
    assert len(rows) == 3 and "<b>awful</b> & dull" in rows[1]  # shown as text, escaped
    expected = [w.text for e in model.explain(texts) for w in e.words]
    assert [w[0] for w in words] == expected
    assert all(w[1] and w[2] == "visible" and w[3] == "rgb(17, 17, 17)" for w in words), words
    assert all(b.startswith("rgba(") for b in before) and after != before


# --- with the bundled encoder ----------------------------------------------------------------


@pytest.fixture(scope="module")
def sst2_models():
    """MiniLM probes, mean and [CLS] pooled, trained on 300 SST-2 rows."""
    from bertprobe.datasets import load_sst2
    from bertprobe.training.options import TrainOptions

    train = load_sst2("train")
    texts, labels = train.texts[:300], train.labels[:300]
    return {
        pooling: Classifier.fit(
            texts,
            labels,
            encoding=EncoderOptions("minilm", pooling=pooling),
            options=TrainOptions(cv=3),
        )
        for pooling in ("mean", "cls")
    }


@pytest.mark.slow
def test_removing_the_top_occlusion_word_lowers_the_probability(sst2_models):
    model = sst2_models["cls"]
    text = "a gorgeous, witty, seductive movie"
    [e] = model.explain([text])
    assert e.method == "occlusion-delete" and e.labels == (1,)
    top = e.top(1)[0]
    without = text[: top.start] + text[top.end :]
    assert model.predict_proba([without])[0, 1] < e.proba[1]


@pytest.mark.slow
def test_exact_rankings_are_more_comprehensive_than_random(sst2_models):
    from bertprobe.datasets import load_sst2

    model = sst2_models["mean"]
    texts = load_sst2("test").texts[:30]
    found = model.explain(texts)
    _assert_adds_up(found, model, texts)
    ranked = erasure_scores(model, found)
    chance = erasure_scores(model, found, ranking="random")
    assert ranked["n"] == 30 and list(ranked["comprehensiveness"]) == [1, 5, 10, 20, 50]
    assert ranked["aopc_comprehensiveness"] > chance["aopc_comprehensiveness"] + 0.02, (
        ranked,
        chance,
    )
    assert ranked["aopc_sufficiency"] < chance["aopc_sufficiency"], (ranked, chance)


@pytest.mark.slow
def test_integrated_gradients_rank_words_better_than_random(sst2_models):
    from bertprobe.datasets import load_sst2

    model = sst2_models["cls"]
    texts = load_sst2("test").texts[:30]
    found = model.explain(texts, method="integrated-gradients", steps=20)
    np.testing.assert_allclose([e.logits for e in found], _model_logits(model, texts), atol=1e-3)
    ranked = erasure_scores(model, found)
    chance = erasure_scores(model, found, ranking="random")
    assert ranked["aopc_comprehensiveness"] > chance["aopc_comprehensiveness"] + 0.02, (
        ranked,
        chance,
    )
