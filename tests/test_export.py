"""`bertprobe export`: the whole classifier as one ONNX graph, run without torch, transformers,
scikit-learn or bertprobe by the predictor the ONNX guide shows (examples/predict_onnx.py)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from bertprobe import Classifier, LinearProbe, OutOfCoreProbe, resolve_encoder
from bertprobe.core.errors import BadInputError
from bertprobe.encoders.encode import embed
from bertprobe.encoders.options import FeatureSpec
from bertprobe.export import EXPORT_FILES, VOTE_FILE, ExportedClassifier, export_classifier
from test_cli import run

ROOT = Path(__file__).resolve().parent.parent
PREDICTOR = ROOT / "examples" / "predict_onnx.py"
GUIDE = ROOT / "docs" / "guides" / "onnx-export.md"
BLOCKED = ("torch", "transformers", "bertprobe", "sklearn")

# Runs the predictor with the ML stack made unimportable: if it (or onnxruntime, or tokenizers)
# imports any of BLOCKED, the run fails.
RUNNER = f"""
import runpy, sys
from importlib.abc import MetaPathFinder

BLOCKED = {BLOCKED!r}

class Blocker(MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in BLOCKED:
            raise ModuleNotFoundError(f"blocked import of {{name}}", name=name)
        return None

sys.meta_path.insert(0, Blocker())
sys.argv = sys.argv[1:]
runpy.run_path(sys.argv[0], run_name="__main__")
"""

# Varied lengths: one word, a sentence, one far past the tiny encoder's 64 tokens (truncated),
# an empty text; in one batch, so all but the longest are padded.
TEXTS = [
    "good",
    "the film was great and the cast was lovely",
    "the plot was awful " * 40,
    "",
    "this movie was boring",
    "the music was brilliant, the ending dreadful",
]


def run_predictor(folder: Path, texts: list[str], tmp_path: Path) -> subprocess.CompletedProcess:
    runner = tmp_path / "runner.py"
    runner.write_text(RUNNER, encoding="utf-8")
    return subprocess.run(
        [sys.executable, str(runner), str(PREDICTOR), str(folder), *texts],
        capture_output=True,
        text=True,
        timeout=120,
        env={"PATH": "/usr/bin:/bin", "TOKENIZERS_PARALLELISM": "false"},
    )


def predicted_rows(result: subprocess.CompletedProcess) -> list[dict]:
    assert result.returncode == 0, result.stderr
    return [json.loads(line) for line in result.stdout.splitlines()]


@pytest.fixture(scope="module")
def exported(tiny_model_dir, tmp_path_factory) -> Path:
    return export_classifier(tiny_model_dir, tmp_path_factory.mktemp("export") / "fp32")


def test_the_blocker_blocks(tmp_path):
    """The runner really makes the ML stack unimportable (else the next test proves nothing)."""
    script = tmp_path / "imports_torch.py"
    script.write_text("import numpy, onnxruntime, tokenizers\nimport torch\n", encoding="utf-8")
    runner = tmp_path / "runner.py"
    runner.write_text(RUNNER, encoding="utf-8")
    result = subprocess.run(
        [sys.executable, str(runner), str(script)], capture_output=True, text=True, timeout=120
    )
    assert result.returncode != 0 and "blocked import of torch" in result.stderr


def test_the_predictor_matches_predict_proba_without_the_ml_stack(
    exported, tiny_model_dir, tmp_path
):
    model = Classifier.load(tiny_model_dir)
    rows = predicted_rows(run_predictor(exported, TEXTS, tmp_path))
    assert [r["text"] for r in rows] == TEXTS
    ours = np.array([r["probabilities"] for r in rows])
    expected = model.predict_proba(TEXTS)
    assert ours.shape == expected.shape
    assert np.abs(ours - expected).max() < 1e-4
    assert [r["label"] for r in rows] == model.predict(TEXTS).tolist()
    # One text alone (no padding) gives the same row as in the batch.
    alone = predicted_rows(run_predictor(exported, TEXTS[1:2], tmp_path))
    assert np.abs(np.array(alone[0]["probabilities"]) - expected[1]).max() < 1e-4


def test_the_tokenizer_truncates_and_pads_as_bertprobe_does(exported, tiny_model_dir):
    from tokenizers import Tokenizer

    from bertprobe.encoders.encoder import load_encoder

    model = Classifier.load(tiny_model_dir)
    encoder = load_encoder(model.encoder)
    ids, truncated = encoder.tokenize(TEXTS, model.card["features"]["max_length"])
    assert truncated == 1 and max(len(x) for x in ids) == 64
    encodings = Tokenizer.from_file(str(exported / "tokenizer.json")).encode_batch(TEXTS)
    assert [e.ids[: sum(e.attention_mask)] for e in encodings] == ids
    assert {len(e.ids) for e in encodings} == {64}  # padded to the longest of the batch
    assert [sum(e.attention_mask) for e in encodings] == [len(x) for x in ids]


def test_the_card_says_what_the_graph_is(exported, tiny_model_dir):
    import onnxruntime

    card = json.loads((exported / "card.json").read_text())
    source = Classifier.load(tiny_model_dir)
    assert card["classes"] == source.classes
    assert card["source_model"] == source.id
    assert card["encoder"]["fingerprint"] == source.encoder.fingerprint
    assert (card["pooling"], card["layers"], card["int8"]) == ("mean", [2], False)
    session = onnxruntime.InferenceSession(str(exported / "model.onnx"))
    assert [i.name for i in session.get_inputs()] == card["inputs"]
    assert [o.name for o in session.get_outputs()] == [card["output"]]
    assert [i.type for i in session.get_inputs()] == ["tensor(int64)"] * 2
    assert session.get_outputs()[0].type == "tensor(float)"
    assert sorted(p.name for p in exported.iterdir()) == sorted(EXPORT_FILES)


def _onnx_proba(folder: Path, texts: list[str]) -> np.ndarray:
    return ExportedClassifier(folder).predict_proba(texts, batch_size=7)  # a ragged last batch


@pytest.mark.parametrize(
    ("probe", "spec", "n_classes"),
    [
        (LinearProbe(cv=3), FeatureSpec("max", (-2, -1)), 3),  # softmax; two layers
        (OutOfCoreProbe(chunk_rows=32), FeatureSpec("cls", (1,)), 2),  # SGD, one sigmoid
        (OutOfCoreProbe(chunk_rows=32), FeatureSpec("mean", (-1,)), 3),  # SGD, one-vs-rest
        (LinearProbe(cv=3, scale=False), FeatureSpec("mean", (0,), max_length=8), 2),
    ],
)
def test_every_linear_head_matches_predict_proba(
    probe, spec, n_classes, tiny_distilbert, sentiment_rows, tmp_path
):
    texts = [t for t, _ in sentiment_rows]
    labels = [["neg", "pos", "so-so"][i % n_classes] for i in range(len(texts))]
    ref = resolve_encoder(str(tiny_distilbert))
    X, _ = embed(texts, ref, spec)
    model = Classifier(card={}, probe=probe.fit(X, labels), encoder=ref, spec=spec)
    folder = export_classifier(model, tmp_path / "export")
    card = json.loads((folder / "card.json").read_text())
    assert card["classes"] == model.classes and card["source_model"] is None
    assert card["max_length"] == (spec.max_length or 64)
    texts = TEXTS + texts[:10]
    assert np.abs(_onnx_proba(folder, texts) - model.predict_proba(texts)).max() < 1e-4


def test_int8_labels_mostly_agree_with_fp32(exported, tiny_model_dir, sentiment_rows, tmp_path):
    texts = [t for t, _ in sentiment_rows]
    int8 = export_classifier(tiny_model_dir, tmp_path / "int8", int8=True)
    card = json.loads((int8 / "card.json").read_text())
    assert card["int8"] is True
    assert (int8 / "model.onnx").stat().st_size < (exported / "model.onnx").stat().st_size
    quantized, full = _onnx_proba(int8, texts), _onnx_proba(exported, texts)
    agreement = np.mean(quantized.argmax(1) == full.argmax(1))
    assert agreement >= 0.9, agreement
    assert np.abs(quantized - full).max() > 0  # it is another graph, not the fp32 one


def test_a_head_that_differs_from_the_probe_is_caught_before_writing(
    tiny_model_dir, monkeypatch, tmp_path
):
    import dataclasses

    import bertprobe.export

    real = bertprobe.export.linear_readout

    def shifted(probe):
        head = real(probe)
        return dataclasses.replace(head, intercept=head.intercept + 0.5)

    monkeypatch.setattr(bertprobe.export, "linear_readout", shifted)
    with pytest.raises(RuntimeError, match="differs from LinearProbe.predict_proba"):
        export_classifier(tiny_model_dir, tmp_path / "out")
    assert not (tmp_path / "out").exists()


# --- a model that votes with a TF-IDF model (train --auto) -----------------------------------

# Rows beside the sentiment ones, so the voter's vocabulary holds words in other scripts, with
# underscores and digits (scikit-learn's \w is Unicode; so is Python's re).
UNICODE_ROWS = [
    ("a naïve café film, très bon", 1),
    ("été was dreadful", 0),
    ("straße über alles was lovely", 1),
    ("the film_noir was awful in 2024", 0),
]
# Texts the voter must score as scikit-learn does: unicode and case (É lowers to é, ß stays),
# punctuation, repeated words (sublinear tf: 1 + log(tf)), only unseen words (no known term:
# the intercept alone), no token at all (one-letter words, punctuation, empty).
VOTE_TEXTS = [
    "Café NAÏVE: the film was GOOD, good, good!!!",
    "the plot was awful awful awful awful",
    "zxqv blorptastic unseenword",
    "",
    "a ! ? ...",
    "the ending — was «lovely»; the score… dreadful?",
    "ÉTÉ été über STRASSE straße",
    "the film_noir was good123 in 2024",
    *TEXTS,
]


def _voting_model(tiny_distilbert, sentiment_rows, n_classes: int = 2) -> Classifier:
    """A probe and a TF-IDF voter (train --auto's pipeline) fitted on the same texts."""
    from bertprobe.heads.tfidf import tfidf_pipeline

    rows = sentiment_rows + UNICODE_ROWS
    texts = [t for t, _ in rows]
    labels = [
        y if n_classes == 2 else ["neg", "pos", "so-so"][i % 3] for i, (_, y) in enumerate(rows)
    ]
    ref = resolve_encoder(str(tiny_distilbert))
    spec = FeatureSpec("mean", (-1,))
    X, _ = embed(texts, ref, spec)
    probe = LinearProbe(cv=3).fit(X, labels)
    voter = tfidf_pipeline(cv=3).fit(texts, labels)
    return Classifier(card={}, probe=probe, encoder=ref, spec=spec, text_model=voter)


@pytest.fixture(scope="module", params=[2, 3], ids=["binary", "three-classes"])
def voting_export(request, tiny_distilbert, sentiment_rows, tmp_path_factory):
    model = _voting_model(tiny_distilbert, sentiment_rows, request.param)
    return model, export_classifier(model, tmp_path_factory.mktemp("vote") / "export")


@pytest.fixture
def voting_model_dir(tiny_distilbert, sentiment_rows, tmp_path) -> Path:
    return _voting_model(tiny_distilbert, sentiment_rows).save(tmp_path / "voting")


def test_a_voting_export_matches_predict_proba(voting_export):
    """ExportedClassifier gives the vote's probabilities (the mean of the graph's and the
    voter's), and the voter alone is scikit-learn's pipeline to float64 rounding."""
    model, folder = voting_export
    exported = ExportedClassifier(folder)
    expected = model.predict_proba(VOTE_TEXTS)
    ours = exported.predict_proba(VOTE_TEXTS, batch_size=5)
    assert ours.shape == expected.shape
    assert np.abs(ours - expected).max() < 1e-5
    assert exported.predict(VOTE_TEXTS) == model.predict(VOTE_TEXTS).tolist()
    assert exported.vote is not None
    voter = model.text_model.predict_proba(VOTE_TEXTS)
    assert np.abs(exported.vote.predict_proba(VOTE_TEXTS) - voter).max() < 1e-12
    # The vote moves the probabilities: without it the export would be far off.
    exported.vote = None
    assert np.abs(exported.predict_proba(VOTE_TEXTS) - expected).max() > 1e-3


def test_the_predictor_matches_a_voting_model_without_the_ml_stack(voting_export, tmp_path):
    model, folder = voting_export
    rows = predicted_rows(run_predictor(folder, VOTE_TEXTS, tmp_path))
    assert [r["text"] for r in rows] == VOTE_TEXTS
    ours = np.array([r["probabilities"] for r in rows])
    assert np.abs(ours - model.predict_proba(VOTE_TEXTS)).max() < 1e-5
    assert [r["label"] for r in rows] == model.predict(VOTE_TEXTS).tolist()


def test_a_voting_export_card_and_files(voting_export):
    model, folder = voting_export
    card = json.loads((folder / "card.json").read_text())
    assert card["format_version"] == 3
    assert card["vote"] == {"file": VOTE_FILE, "combine": "mean"}
    assert sorted(p.name for p in folder.iterdir()) == sorted([*EXPORT_FILES, VOTE_FILE])
    vote = json.loads((folder / VOTE_FILE).read_text(encoding="utf-8"))
    vectorizer, linear = model.text_model[0], model.text_model[-1]
    assert vote["classes"] == model.classes
    assert {vote["terms"][j]: j for j in range(len(vote["terms"]))} == vectorizer.vocabulary_
    assert "naïve café" in vote["terms"] and "straße" in vote["terms"]
    assert vote["idf"] == vectorizer.idf_.tolist()  # exact: JSON floats read back the same
    assert vote["coef"] == linear.coef_.tolist()
    assert (vote["ngram_range"], vote["sublinear_tf"]) == ([1, 2], True)
    assert vote["link"] == ("binary" if len(model.classes) == 2 else "softmax")


@pytest.mark.parametrize(
    ("ngram_range", "sublinear_tf", "n_classes"),
    [((1, 2), True, 2), ((1, 2), True, 3), ((1, 1), False, 2), ((2, 3), True, 3)],
)
def test_the_voter_arithmetic_is_scikit_learns(
    ngram_range, sublinear_tf, n_classes, sentiment_rows
):
    """TfidfVote against TfidfVectorizer + LogisticRegression for the settings it takes."""
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline

    from bertprobe.export import TfidfVote, vote_record

    rows = sentiment_rows + UNICODE_ROWS
    texts = [t for t, _ in rows]
    labels = [y if n_classes == 2 else i % 3 for i, (_, y) in enumerate(rows)]
    voter = make_pipeline(
        TfidfVectorizer(ngram_range=ngram_range, sublinear_tf=sublinear_tf),
        LogisticRegression(C=10.0),
    ).fit(texts, labels)
    vote = TfidfVote(vote_record(voter, sorted(set(labels))))
    assert np.abs(vote.predict_proba(VOTE_TEXTS) - voter.predict_proba(VOTE_TEXTS)).max() < 1e-12


@pytest.mark.parametrize(
    ("setting", "words"),
    [
        ({"strip_accents": "unicode"}, "strip_accents='unicode'"),
        ({"lowercase": False}, "lowercase=False"),
        ({"analyzer": "char_wb"}, "analyzer='char_wb'"),
        ({"token_pattern": r"\S+"}, "token_pattern="),
        ({"norm": "l1", "binary": True}, "binary=True, norm='l1'"),
    ],
)
def test_a_voter_with_other_settings_is_refused_in_one_line(
    setting, words, tiny_distilbert, sentiment_rows, tmp_path
):
    model = _voting_model(tiny_distilbert, sentiment_rows)
    model.text_model[0].set_params(**setting)
    with pytest.raises(BadInputError, match="TF-IDF voter has") as refused:
        export_classifier(model, tmp_path / "out")
    assert words in str(refused.value) and "\n" not in str(refused.value)
    assert not (tmp_path / "out").exists()


def test_a_voter_that_differs_from_its_predict_proba_is_caught_before_writing(
    tiny_distilbert, sentiment_rows, monkeypatch, tmp_path
):
    import bertprobe.export

    real = bertprobe.export.vote_record

    def shifted(text_model, classes):
        record = real(text_model, classes)
        return {**record, "intercept": [x + 0.5 for x in record["intercept"]]}

    monkeypatch.setattr(bertprobe.export, "vote_record", shifted)
    model = _voting_model(tiny_distilbert, sentiment_rows)
    with pytest.raises(RuntimeError, match="TF-IDF voter differs"):
        export_classifier(model, tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_int8_quantizes_the_graph_and_leaves_the_voter(voting_export, tmp_path):
    model, folder = voting_export
    int8 = export_classifier(model, tmp_path / "int8", int8=True)
    assert json.loads((int8 / "card.json").read_text())["int8"] is True
    assert (int8 / VOTE_FILE).read_bytes() == (folder / VOTE_FILE).read_bytes()
    texts = VOTE_TEXTS + [t for t, _ in UNICODE_ROWS]
    labels = ExportedClassifier(int8).predict(texts)
    assert np.mean(np.array(labels) == model.predict(texts)) >= 0.8


def test_cli_export_writes_the_folder(tiny_model_dir, tmp_path, capsys):
    code, out, err = run(
        ["export", "--model", tiny_model_dir, "--out", tmp_path / "e", "--json"], capsys
    )
    assert code == 0, err
    printed = json.loads(out)
    assert printed["out"] == str(tmp_path / "e") and printed["int8"] is False
    assert (tmp_path / "e" / "model.onnx").is_file()
    # Again into the same folder: an earlier export is replaced.
    code, out, err = run(["export", "--model", tiny_model_dir, "--out", tmp_path / "e"], capsys)
    assert code == 0, err
    assert "model.onnx" in out


@pytest.mark.parametrize("case", ["missing model", "out is a file", "out is another folder"])
def test_cli_export_bad_input_is_one_line(case, tiny_model_dir, tmp_path, capsys):
    model, out = tiny_model_dir, tmp_path / "out"
    if case == "missing model":
        model = tmp_path / "no-such-model"
    elif case == "out is a file":
        out.write_text("x")
    else:
        out.mkdir()
        (out / "notes.txt").write_text("mine")
    code, stdout, err = run(["export", "--model", model, "--out", out], capsys)
    assert code == 2 and stdout == ""
    assert err.startswith("bertprobe: error: ") and len(err.splitlines()) == 1, err
    assert "Traceback" not in err
    if case == "out is another folder":
        assert (out / "notes.txt").read_text() == "mine"


def test_cli_export_writes_a_voting_model(voting_model_dir, tmp_path, capsys):
    code, out, err = run(
        ["export", "--model", voting_model_dir, "--out", tmp_path / "o", "--json"], capsys
    )
    assert code == 0, err
    assert json.loads(out)["vote"] == {"file": VOTE_FILE, "combine": "mean"}
    texts = VOTE_TEXTS[:4]
    expected = Classifier.load(voting_model_dir).predict_proba(texts)
    assert np.abs(ExportedClassifier(tmp_path / "o").predict_proba(texts) - expected).max() < 1e-5


def test_the_guide_shows_the_predictor_that_is_tested():
    """The ONNX guide's predictor is examples/predict_onnx.py, included whole when the site is
    built (pymdownx.snippets, which fails the build on a missing file): the two cannot drift."""
    assert PREDICTOR.is_file()
    include = f'```py\n--8<-- "{PREDICTOR.relative_to(ROOT).as_posix()}"\n```'
    assert include in GUIDE.read_text(encoding="utf-8")


def test_exported_classifier_refuses_a_folder_that_is_not_an_export(tiny_model_dir):
    with pytest.raises(BadInputError, match="not a bertprobe ONNX export"):
        ExportedClassifier(tiny_model_dir)


@pytest.mark.slow
def test_minilm_int8_export_loses_at_most_half_a_point_on_sst2(tmp_path):
    """The issue's budget on a subset (bench/export_bench.py runs the full split): the bundled
    encoder, mean pooling, 1,000 SST-2 training rows; the int8 export against predict on the
    first 500 test rows, in batches of 32 in file order."""
    from bertprobe import EncoderOptions, train
    from bertprobe.data.files import LabelledTexts
    from bertprobe.datasets import load_sst2
    from bertprobe.training.target import accuracy

    full, test = load_sst2("train"), load_sst2("test")
    data = LabelledTexts(
        full.texts[:1000], full.labels[:1000], full.source, full.sha256, full.line_numbers[:1000]
    )
    model = train(data, encoding=EncoderOptions("minilm", pooling="mean")).model
    texts, labels = test.texts[:500], test.labels[:500]
    predicted = accuracy(labels, model.predict(texts))
    exported = ExportedClassifier(export_classifier(model, tmp_path / "int8", int8=True))
    quantized = accuracy(labels, exported.predict(texts, batch_size=32))
    assert predicted > 0.75  # a real model, else the comparison says nothing
    assert quantized >= predicted - 0.005, (quantized, predicted)


# --- long texts in windows (long="chunk") --------------------------------------------------

# Windows of 16 tokens (14 of text beside [CLS] and [SEP]) sharing 4: the texts below run to
# several windows, and the word that carries the label comes last, past the first window, so a
# graph that truncated would not see it.
CHUNK_MAX_LENGTH, CHUNK_STRIDE = 16, 4
FILLER = "the story of the film was about the cast and the music of the script "


def _long_texts(sentiment_rows) -> tuple[list[str], list[int]]:
    texts = [FILLER * (1 + i % 3) + text for i, (text, _) in enumerate(sentiment_rows)]
    return texts, [y for _, y in sentiment_rows]


def _chunk_model(window_pool: str, tiny_distilbert, sentiment_rows) -> Classifier:
    texts, labels = _long_texts(sentiment_rows)
    ref = resolve_encoder(str(tiny_distilbert))
    spec = FeatureSpec(
        "mean",
        (-1,),
        max_length=CHUNK_MAX_LENGTH,
        long="chunk",
        stride=CHUNK_STRIDE,
        window_pool=window_pool,
    )
    X, stats = embed(texts, ref, spec)
    assert stats.windows_per_text is not None and stats.windows_per_text > 3
    return Classifier(card={}, probe=LinearProbe(cv=3).fit(X, labels), encoder=ref, spec=spec)


@pytest.fixture(scope="module", params=["mean", "max"])
def chunk_export(request, tiny_distilbert, sentiment_rows, tmp_path_factory):
    model = _chunk_model(request.param, tiny_distilbert, sentiment_rows)
    return model, export_classifier(model, tmp_path_factory.mktemp("chunk") / "export")


def test_a_chunk_export_matches_predict_proba_and_truncating_would_not(
    chunk_export, sentiment_rows
):
    """The bug: a --long chunk model's export truncated at max length. Its probabilities now
    are predict_proba's; the same probe on truncated texts (what the export gave before) is
    far off on these texts, so this test fails on the old export."""
    import dataclasses

    model, folder = chunk_export
    texts = _long_texts(sentiment_rows)[0][:14] + TEXTS
    expected = model.predict_proba(texts)
    assert np.abs(_onnx_proba(folder, texts) - expected).max() < 1e-4
    truncating = dataclasses.replace(
        model, spec=dataclasses.replace(model.spec, long="truncate", stride=None)
    )
    assert np.abs(truncating.predict_proba(texts) - expected).max() > 0.05


def test_a_chunk_export_card_records_the_windows(chunk_export):
    import onnxruntime

    model, folder = chunk_export
    card = json.loads((folder / "card.json").read_text())
    assert card["format_version"] == 2
    assert (card["long"], card["stride"], card["window_pool"], card["max_length"]) == (
        "chunk",
        CHUNK_STRIDE,
        model.spec.window_pool,
        CHUNK_MAX_LENGTH,
    )
    assert card["inputs"] == ["input_ids", "attention_mask", "windows"]
    session = onnxruntime.InferenceSession(str(folder / "model.onnx"))
    assert [i.name for i in session.get_inputs()] == card["inputs"]


def test_the_chunk_tokenizer_cuts_the_windows_bertprobe_embeds(chunk_export, sentiment_rows):
    """tokenizer.json's truncation with stride gives LoadedEncoder.windows's windows, special
    tokens included, text by text and in order."""
    from tokenizers import Tokenizer

    from bertprobe.encoders.encoder import load_encoder

    model, folder = chunk_export
    texts = _long_texts(sentiment_rows)[0][:6] + TEXTS
    ids, owner = load_encoder(model.encoder).windows(texts, CHUNK_MAX_LENGTH, CHUNK_STRIDE)
    encodings = Tokenizer.from_file(str(folder / "tokenizer.json")).encode_batch(texts)
    windows = [(i, w) for i, e in enumerate(encodings) for w in (e, *e.overflowing)]
    assert [i for i, _ in windows] == owner
    assert [w.ids[: sum(w.attention_mask)] for _, w in windows] == ids
    assert len(ids) > 3 * len(texts)  # several windows a long text, else this proves little


def test_the_predictor_matches_a_chunk_model_without_the_ml_stack(
    chunk_export, sentiment_rows, tmp_path
):
    model, folder = chunk_export
    texts = _long_texts(sentiment_rows)[0][:6] + TEXTS[:2]
    rows = predicted_rows(run_predictor(folder, texts, tmp_path))
    ours = np.array([r["probabilities"] for r in rows])
    assert np.abs(ours - model.predict_proba(texts)).max() < 1e-4
    assert [r["label"] for r in rows] == model.predict(texts).tolist()


def test_a_chunk_export_quantizes(chunk_export, sentiment_rows, tmp_path):
    model, folder = chunk_export
    texts = _long_texts(sentiment_rows)[0]
    int8 = export_classifier(model, tmp_path / "int8", int8=True)
    agreement = np.mean(_onnx_proba(int8, texts).argmax(1) == _onnx_proba(folder, texts).argmax(1))
    assert agreement >= 0.8, agreement


def test_a_version_1_export_is_still_read(exported, tiny_model_dir, tmp_path):
    """An export written before format version 2 (no long, no multi_label) truncates and is
    single-label, for ExportedClassifier and the predictor alike."""
    import shutil

    old = tmp_path / "v1"
    shutil.copytree(exported, old)
    card = json.loads((old / "card.json").read_text())
    for key in ("long", "multi_label", "decision"):
        card.pop(key)
    card["format_version"] = 1
    (old / "card.json").write_text(json.dumps(card))
    expected = Classifier.load(tiny_model_dir).predict_proba(TEXTS)
    assert np.abs(_onnx_proba(old, TEXTS) - expected).max() < 1e-4
    rows = predicted_rows(run_predictor(old, TEXTS, tmp_path))
    assert np.abs(np.array([r["probabilities"] for r in rows]) - expected).max() < 1e-4


def test_an_export_from_a_newer_bertprobe_is_refused(exported, tmp_path):
    import shutil

    newer = tmp_path / "v9"
    shutil.copytree(exported, newer)
    card = json.loads((newer / "card.json").read_text())
    (newer / "card.json").write_text(json.dumps({**card, "format_version": 9}))
    with pytest.raises(BadInputError, match="format version 9.*upgrade bertprobe"):
        ExportedClassifier(newer)


# --- multi-label ----------------------------------------------------------------------------


def _multilabel_model(tiny_distilbert, sentiment_rows) -> Classifier:
    from bertprobe.heads.multilabel import MultiLabelProbe

    texts = [t for t, _ in sentiment_rows]
    # Three labels, some texts with none or several: "positive", "negative", "about-the-film".
    sets = [
        tuple(
            name
            for name, on in (
                ("positive", y == 1),
                ("negative", y == 0 and i % 3 != 0),  # some texts have no label
                ("film", "film" in t or "movie" in t),
            )
            if on
        )
        for i, (t, y) in enumerate(sentiment_rows)
    ]
    ref = resolve_encoder(str(tiny_distilbert))
    spec = FeatureSpec("mean", (-1,))
    X, _ = embed(texts, ref, spec)
    probe = MultiLabelProbe(cv=3, tune_thresholds=True).fit(X, sets)
    return Classifier(card={}, probe=probe, encoder=ref, spec=spec)


@pytest.fixture(scope="module")
def multilabel_export(tiny_distilbert, sentiment_rows, tmp_path_factory):
    model = _multilabel_model(tiny_distilbert, sentiment_rows)
    return model, export_classifier(model, tmp_path_factory.mktemp("multilabel") / "export")


def test_a_multilabel_export_matches_predict_proba_and_label_sets(
    multilabel_export, sentiment_rows
):
    model, folder = multilabel_export
    texts = [t for t, _ in sentiment_rows] + TEXTS
    exported = ExportedClassifier(folder)
    proba = exported.predict_proba(texts, batch_size=7)
    expected = model.predict_proba(texts)
    assert proba.shape == expected.shape == (len(texts), 3)
    assert np.abs(proba - expected).max() < 1e-4
    assert not np.allclose(proba.sum(axis=1), 1)  # per-label probabilities, not normalized
    assert exported.predict(texts) == model.predict(texts).tolist()
    assert len(set(model.predict(texts))) > 1  # not one set for all


def test_a_multilabel_export_card_holds_labels_and_thresholds(multilabel_export):
    model, folder = multilabel_export
    card = json.loads((folder / "card.json").read_text())
    assert card["multi_label"] is True and card["head"] == "multi-label"
    assert card["classes"] == model.classes == ["film", "negative", "positive"]
    thresholds = list(model.decision.thresholds)
    assert card["thresholds"] == thresholds  # for readers from before the decision
    by_label = dict(zip(card["classes"], thresholds, strict=True))
    assert card["decision"] == {"rule": "per-label", "thresholds": by_label}
    assert len(set(card["thresholds"])) > 1  # tuned: a wrong pairing of label and threshold shows


def test_the_predictor_prints_label_sets_for_a_multilabel_export(
    multilabel_export, sentiment_rows, tmp_path
):
    model, folder = multilabel_export
    texts = [t for t, _ in sentiment_rows][:8] + TEXTS[:2]
    rows = predicted_rows(run_predictor(folder, texts, tmp_path))
    assert [tuple(r["labels"]) for r in rows] == list(model.predict(texts))
    ours = np.array([r["probabilities"] for r in rows])
    assert np.abs(ours - model.predict_proba(texts)).max() < 1e-4


def test_a_probe_that_is_not_linear_is_refused_in_one_line(tiny_distilbert, tmp_path):
    from sklearn.dummy import DummyClassifier

    ref = resolve_encoder(str(tiny_distilbert))
    probe = DummyClassifier().fit(np.zeros((4, 64)), [0, 1, 0, 1])
    model = Classifier(card={}, probe=probe, encoder=ref, spec=FeatureSpec("mean", (-1,)))
    with pytest.raises(BadInputError, match="DummyClassifier.*scaler and a linear model") as err:
        export_classifier(model, tmp_path / "out")
    assert len(str(err.value).splitlines()) == 1
    assert not (tmp_path / "out").exists()
