"""Several labels per text: reading, the probe, train / evaluate / predict / report through the
library and the CLI, saving and loading, the service, and bad input.

The data: the one-word sentiment rows with two labels, ``positive`` (the sentiment) and
``early`` (the text's subject is one of the first five subjects: a property of the words), so a
text has both, one or none.
"""

from __future__ import annotations

import csv
import json
import shutil
import socket
import threading
import time

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from bertprobe import EncoderOptions, ReadOptions, TrainOptions, train
from bertprobe.core.errors import BadInputError, ModelFolderError
from bertprobe.data.files import LabelledTexts
from bertprobe.data.multilabel import read_multilabel
from bertprobe.heads.multilabel import MultiLabelProbe
from bertprobe.model.classifier import Classifier, load_model
from bertprobe.model.persist import CARD_FILE
from test_cli import run

EARLY = ("the film", "this movie", "the acting", "the plot", "the ending")


def label_set(text: str, sentiment: int) -> tuple[str, ...]:
    early = text.rsplit(" was ", 1)[0] in EARLY
    return tuple(name for name, on in (("early", early), ("positive", sentiment == 1)) if on)


@pytest.fixture(scope="module")
def ml_rows(sentiment_rows):
    return [(t, label_set(t, y)) for t, y in sentiment_rows]


@pytest.fixture(scope="module")
def ml_files(tmp_path_factory, ml_rows):
    root = tmp_path_factory.mktemp("multilabel")
    sep = root / "genres.tsv"  # no header, labels joined by "|", empty cell = no label
    sep.write_text("".join(f"{t}\t{'|'.join(s)}\n" for t, s in ml_rows), encoding="utf-8")
    cols = root / "genres.csv"  # a header, one 0/1 column per label
    cols.write_text(
        "text,positive,early\n"
        + "".join(f"{t},{int('positive' in s)},{int('early' in s)}\n" for t, s in ml_rows),
        encoding="utf-8",
    )
    return {"sep": sep, "cols": cols, "root": root}


@pytest.fixture(scope="module")
def ml_model(tiny_distilbert, ml_files, tmp_path_factory):
    out = tmp_path_factory.mktemp("ml-model") / "genres"
    result = train(
        ml_files["sep"],
        test=ml_files["sep"],
        encoding=EncoderOptions(str(tiny_distilbert), pooling="mean"),
        options=TrainOptions(multi_label=True, cv=3, n_jobs=1),
        reading=ReadOptions(label_sep="|"),
        out=out,
    )
    return result, out


# --- reading ---------------------------------------------------------------------------------


def test_reading_joined_labels_keeps_texts_with_no_label(ml_files, ml_rows):
    data = read_multilabel(ml_files["sep"], ReadOptions(label_sep="|"))
    assert data.texts == [t for t, _ in ml_rows]
    assert data.labels == [s for _, s in ml_rows]
    assert () in data.labels and ("early", "positive") in data.labels


def test_reading_01_columns_by_name_and_without_header_by_index(ml_files, ml_rows, tmp_path):
    by_name = read_multilabel(ml_files["cols"], ReadOptions(label_cols="positive,early"))
    assert by_name.labels == [s for _, s in ml_rows]
    headerless = tmp_path / "cols.tsv"
    headerless.write_text("a fine film\t1\t0\na dull one\tfalse\tTRUE\n", encoding="utf-8")
    data = read_multilabel(headerless, ReadOptions(label_cols=(1, 2)))
    assert data.labels == [("1",), ("2",)]  # no header: labels named by column index


def test_reading_label_lists_from_json_lines_and_parquet(tmp_path):
    lines = tmp_path / "rows.jsonl"
    lines.write_text(
        '{"text": "good", "labels": ["pos", "short"]}\n{"text": "bad", "labels": []}\n'
        '{"text": "fine", "labels": "pos|long"}\n',
        encoding="utf-8",
    )
    expected = [("pos", "short"), (), ("long", "pos")]
    assert read_multilabel(lines).labels == expected
    table = tmp_path / "rows.parquet"
    pq.write_table(pa.table({"text": ["good", "bad"], "tags": [["a", "b"], []]}), table)
    assert read_multilabel(table, ReadOptions(label_col="tags")).labels == [("a", "b"), ()]


def test_reading_parquet_bool_columns(tmp_path):
    path = tmp_path / "rows.parquet"
    table = {"text": ["good", "bad", "fine"], "pos": [True, False, True], "long": [0, 1, 1]}
    pq.write_table(pa.table(table), path)
    data = read_multilabel(path, ReadOptions(label_cols="pos,long"))
    assert data.labels == [("pos",), ("long",), ("long", "pos")]


@pytest.mark.parametrize(
    ("content", "reading", "message"),
    [
        ("text,a,b\nfine,1,2\nok,0,1\n", {"label_cols": "a,b"}, r"other than 0 or 1 on lines 2"),
        ("text,a,b\nfine,1,0\n", {"label_cols": "a,c"}, r"no column 'c' \(text, a, b\)"),
        ("text,a,b\nfine,1,0\n", {"label_cols": "text,a"}, r"names the text column"),
        ("text,a\nfine\n", {"label_cols": "a"}, r"too few columns on lines 2"),
    ],
)
def test_bad_multilabel_files_are_refused_in_one_line(tmp_path, content, reading, message):
    path = tmp_path / "bad.csv"
    path.write_text(content, encoding="utf-8")
    with pytest.raises(BadInputError, match=message) as info:
        read_multilabel(path, ReadOptions(**reading))
    assert "\n" not in str(info.value)


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"label_sep": ""}, "splits nothing"),
        ({"label_sep": "|", "label_cols": "a,b"}, "do not combine"),
        ({"label_col": "tags", "label_cols": "a,b"}, "do not combine"),
        ({"label_cols": "a,a"}, "names a column twice"),
    ],
)
def test_contradictory_read_options_are_refused(options, message):
    with pytest.raises(BadInputError, match=message):
        ReadOptions(**options)


# --- the probe -------------------------------------------------------------------------------


def test_probe_learns_each_label_and_tunes_thresholds():
    rng = np.random.default_rng(0)
    X = rng.normal(size=(240, 6))
    Y = np.column_stack([X[:, 0] > 0.5, X[:, 1] + 0.3 * X[:, 2] > 0]).astype(int)
    plain = MultiLabelProbe("coarse", cv=3, classes=["a", "b"]).fit(X, Y)
    assert plain.classes_.tolist() == ["a", "b"]
    assert plain.thresholds_.tolist() == [0.5, 0.5] and plain.cv_f1_ is None
    assert (plain.predict(X) == Y).mean() > 0.9
    proba = plain.predict_proba(X)
    assert proba.shape == (240, 2) and not np.allclose(proba.sum(axis=1), 1)
    tuned = MultiLabelProbe("coarse", cv=3, classes=["a", "b"], tune_thresholds=True).fit(X, Y)
    assert np.all((tuned.thresholds_ > 0) & (tuned.thresholds_ < 1))
    assert not np.allclose(tuned.thresholds_, 0.5)
    assert np.all(tuned.cv_f1_ > 0.8)
    assert tuned.decision().labels(np.array([[0.99, 0.01]])) == [("a",)]


@pytest.mark.parametrize(
    ("labels", "message"),
    [
        ([("a",)] * 30, r"holds 1 label \('a'\)"),
        ([("a",), ("b",)] * 14 + [("a", "c")] * 2, r"'c' \(on 2 of 30\)"),
    ],
)
def test_probe_refuses_labels_it_cannot_learn(labels, message):
    X = np.random.default_rng(0).normal(size=(len(labels), 4))
    with pytest.raises(BadInputError, match=message):
        MultiLabelProbe(cv=3).fit(X, labels)


# --- library ---------------------------------------------------------------------------------


def test_library_train_scores_and_saves(ml_model, ml_rows):
    result, out = ml_model
    summary = result.to_dict()
    assert summary["multi_label"] and summary["labels"] == ["early", "positive"]
    assert summary["test_f1_micro"] > 0.9 and summary["test_f1_macro"] > 0.9
    assert set(summary["test_per_label"]) == {"early", "positive"}
    assert summary["label_counts"] == {"": 25, "early": 50, "positive": 50}
    card = json.loads((out / CARD_FILE).read_text())
    assert card["kind"] == "multi-label-probe" and card["labels"] == ["early", "positive"]
    assert card["probe"]["thresholds"] == {"early": 0.5, "positive": 0.5}
    assert card["multi_label"]["label_sep"] == "|"
    model = result.model
    assert model.decision.label_sets
    texts = [t for t, _ in ml_rows]
    predicted = model.predict(texts)  # a label set a text, as fit takes them
    right = np.mean([p == s for p, (_, s) in zip(predicted, ml_rows, strict=True)])
    assert right > 0.9
    assert model.decision.indicator(model.predict_proba(texts[:3])).shape == (3, 2)
    with pytest.warns(FutureWarning, match=r"indicator=True\) is deprecated"):
        old = model.predict(texts[:3], indicator=True)  # the 0/1 matrix, one release more
    assert old.tolist() == [[int(c in p) for c in model.classes] for p in predicted[:3]]
    with pytest.warns(FutureWarning, match="predict_labels"):
        assert model.predict_labels(texts[:3]) == [list(p) for p in predicted[:3]]


def test_save_load_round_trip_predicts_the_same(ml_model, ml_rows, tmp_path):
    result, out = ml_model
    texts = [t for t, _ in ml_rows[:20]]
    loaded = load_model(out)
    assert isinstance(loaded.probe, MultiLabelProbe)
    assert np.array_equal(loaded.predict_proba(texts), result.model.predict_proba(texts))
    again = Classifier.load(loaded.save(tmp_path / "again"))
    assert np.array_equal(again.predict_proba(texts), loaded.predict_proba(texts))
    assert again.card["multi_label"] == loaded.card["multi_label"]
    assert again.card["probe"]["thresholds"] == loaded.card["probe"]["thresholds"]


def test_classifier_fit_takes_label_lists(tiny_distilbert, ml_rows):
    texts = [t for t, _ in ml_rows]
    model = Classifier.fit(
        texts,
        [list(s) for _, s in ml_rows],
        encoding=EncoderOptions(str(tiny_distilbert), pooling="mean"),
        options=TrainOptions(multi_label=True, tune_thresholds=True, cv=3, n_jobs=1),
    )
    assert model.classes == ["early", "positive"]
    scores = model.evaluate(texts, ["|".join(s) for _, s in ml_rows])
    assert scores.to_dict()["test_f1_micro"] > 0.9


def test_a_card_whose_thresholds_were_edited_is_refused(ml_model, tmp_path):
    _, out = ml_model
    folder = tmp_path / "edited"
    shutil.copytree(out, folder)
    card = json.loads((folder / CARD_FILE).read_text())
    card["probe"]["thresholds"]["early"] = 0.1
    (folder / CARD_FILE).write_text(json.dumps(card))
    with pytest.raises(ModelFolderError, match="thresholds differ"):
        load_model(folder)


@pytest.mark.parametrize(
    "edit",
    [
        lambda d: d["thresholds"].update(early=0.1),  # another threshold
        lambda d: d.update(rule="argmax"),  # another rule
        lambda d: d.pop("thresholds"),  # no longer a decision
    ],
)
def test_a_card_whose_decision_was_edited_is_refused(ml_model, tmp_path, edit):
    _, out = ml_model
    folder = tmp_path / "edited"
    shutil.copytree(out, folder)
    card = json.loads((folder / CARD_FILE).read_text())
    edit(card["decision"])
    (folder / CARD_FILE).write_text(json.dumps(card))
    with pytest.raises(ModelFolderError, match="does not describe the head"):
        load_model(folder)


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"tune_thresholds": True}, "add multi_label=True"),
    ],
)
def test_train_options_that_do_not_combine(options, message):
    with pytest.raises(BadInputError, match=message):
        TrainOptions(**options)


def test_label_sep_without_multi_label_is_refused(ml_files):
    data = LabelledTexts.from_lists(["a", "b"], ["x|y", "y"])
    for given in (ml_files["sep"], data):
        with pytest.raises(BadInputError, match="add multi_label=True"):
            train(given, reading=ReadOptions(label_sep="|"))


# --- CLI -------------------------------------------------------------------------------------


@pytest.mark.slow
def test_cli_train_evaluate_predict_report(tiny_distilbert, ml_files, ml_rows, tmp_path, capsys):
    out = tmp_path / "cols-model"
    cols = ml_files["cols"]
    code, stdout, err = run(
        ["train", cols, "--test", cols, "--multi-label", "--label-cols", "positive,early"]
        + ["--tune-thresholds", "--encoder", tiny_distilbert, "--pooling", "mean", "--cv", "3"]
        + ["--jobs", "1", "--out", out, "--json"],
        capsys,
    )
    assert code == 0, err
    trained = json.loads(stdout)
    assert trained["labels"] == ["positive", "early"]  # the columns' order
    assert trained["test_f1_micro"] > 0.9

    # evaluate reads the file as the training file was read (the card says how)
    code, stdout, err = run(["evaluate", cols, "--model", out, "--json"], capsys)
    assert code == 0, err
    scores = json.loads(stdout)
    assert scores["test_f1_micro"] == pytest.approx(trained["test_f1_micro"])
    assert scores["test_f1_macro"] == pytest.approx(trained["test_f1_macro"])
    assert scores["per_label"]["early"]["support"] == 50
    code, stdout, _ = run(["evaluate", cols, "--model", out], capsys)
    assert code == 0 and "micro" in stdout and "positive" in stdout

    code, stdout, _ = run(["predict", "--model", out, "the film was great"], capsys)
    line = json.loads(stdout)
    p, thresholds = line["probabilities"], trained["thresholds"]
    assert set(p) == {"positive", "early"}
    assert line["labels"] == [c for c in ("positive", "early") if p[c] >= thresholds[c]]
    assert "positive" in line["labels"]

    texts = tmp_path / "texts.txt"
    texts.write_text("".join(f"{t}\n" for t, _ in ml_rows[:10]), encoding="utf-8")
    for name in ("p.jsonl", "p.csv", "p.parquet"):
        code, _, err = run(["predict", "-m", out, "-i", texts, "-o", tmp_path / name], capsys)
        assert code == 0, err
    jsonl = [json.loads(x) for x in (tmp_path / "p.jsonl").read_text().splitlines()]
    rows = list(csv.DictReader((tmp_path / "p.csv").open(encoding="utf-8")))
    parquet = pq.read_table(tmp_path / "p.parquet").to_pylist()
    assert len(jsonl) == len(rows) == len(parquet) == 10
    for a, b, c in zip(jsonl, rows, parquet, strict=True):
        assert b["labels"] == "|".join(a["labels"]) and c["labels"] == a["labels"]
        assert float(b["p_early"]) == a["probabilities"]["early"] == c["p_early"]

    report = tmp_path / "report"
    code, stdout, err = run(["report", cols, "--model", out, "--out", report, "--json"], capsys)
    assert code == 0, err
    found = json.loads(stdout)
    assert set(found["per_label"]) == {"positive", "early"}
    page = (report / "report.html").read_text(encoding="utf-8")
    assert "Per-label scores" in page and "data:image/png;base64," in page
    assert (report / "per_label_f1.png").read_bytes().startswith(b"\x89PNG")


def test_cli_trains_a_multi_label_model_out_of_core(tiny_distilbert, ml_files, tmp_path, capsys):
    """Streamed: one SGD probe a label, each alpha chosen on its held-out rows; label sets
    read from the 0/1 columns a chunk at a time, texts not kept."""
    out = tmp_path / "streamed"
    cols = ml_files["cols"]
    args = ["train", cols, "--test", cols, "--multi-label", "--label-cols", "positive,early"]
    args += ["--out-of-core", "--encoder", tiny_distilbert, "--pooling", "mean", "--out", out]
    code, stdout, err = run(args, capsys)
    assert code == 0, err
    assert "alpha" in stdout and "held out" in stdout and "F1 micro" in stdout
    card = json.loads((out / CARD_FILE).read_text())
    assert card["probe"]["solver"] == "sgd-out-of-core one-vs-rest"
    assert set(card["probe"]["alpha"]) == {"positive", "early"}
    model = load_model(out)
    assert model.decision.label_sets and model.classes == ["positive", "early"]
    texts = ["the film was great", "the ending was awful"]
    sets = list(model.predict(texts))
    proba = model.predict_proba(texts)
    assert sets == [
        tuple(c for j, c in enumerate(model.classes) if row[j] >= 0.5) for row in proba
    ]  # fmt: skip


def test_a_label_never_given_is_refused_out_of_core_naming_it(tiny_distilbert, tmp_path):
    from bertprobe.heads.multilabel import StreamingMultiLabelProbe

    X = np.random.default_rng(0).normal(size=(40, 3))
    Y = np.column_stack([X[:, 0] > 0, np.zeros(40)]).astype(int)
    with pytest.raises(BadInputError, match="label 'never'") as refused:
        StreamingMultiLabelProbe(classes=["some", "never"]).fit(X, Y)
    assert "\n" not in str(refused.value)


def test_cli_multi_label_with_class_weights_and_a_metric(
    tiny_distilbert, ml_files, tmp_path, capsys
):
    out = tmp_path / "weighted"
    code, stdout, err = run(
        ["train", ml_files["sep"], "--test", ml_files["sep"], "--multi-label"]
        + ["--class-weight", "balanced", "--metric", "roc_auc", "--encoder", tiny_distilbert]
        + ["--pooling", "mean", "--cv", "3", "--jobs", "1", "--out", out, "--json"],
        capsys,
    )
    assert code == 0, err
    assert json.loads(stdout)["test_f1_micro"] > 0.5
    probe = json.loads((out / CARD_FILE).read_text())["probe"]
    assert (probe["class_weight"], probe["scoring"]) == ("balanced", "roc_auc")
    assert set(probe["cv_score"]) == {"early", "positive"}
    assert all(0.5 < v <= 1.0 for v in probe["cv_score"].values())
    for fitted in load_model(out).probe.estimator_.estimators_:
        assert (fitted.class_weight, fitted.scoring) == ("balanced", "roc_auc")
    code, _, err = run(["evaluate", ml_files["sep"], "--model", out], capsys)
    assert code == 0, err


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["train", "{sep}", "--label-sep", "|"], "add --multi-label"),
        (["train", "{sep}", "--tune-thresholds"], "add --multi-label"),
        (["train", "{cols}", "--multi-label", "--label-cols", "positive,nosuch"], "'nosuch'"),
        (
            ["train", "{cols}", "--multi-label", "--label-cols", "positive,early", "--cv", "60"],
            "at least 60 texts with each label",
        ),
        (["evaluate", "{sep}", "--model", "{single}", "--label-sep", "|"], "one label per text"),
        (["train", "{sep}", "--multi-label", "--label-sep", ""], "splits nothing"),
    ],
)
def test_cli_bad_multilabel_input_is_one_line_exit_2(
    argv, message, ml_files, tiny_model_dir, tiny_distilbert, capsys
):
    paths = {"sep": ml_files["sep"], "cols": ml_files["cols"], "single": tiny_model_dir}
    argv = [a.format(**{k: str(v) for k, v in paths.items()}) for a in argv]
    code, _, err = run(
        [*argv, "--encoder", tiny_distilbert] if argv[0] == "train" else argv, capsys
    )
    assert code == 2
    assert err.startswith("bertprobe: error: ") and len(err.splitlines()) == 1, err
    assert message in err


# --- service ---------------------------------------------------------------------------------


def test_service_answers_label_sets_with_probabilities(ml_model):
    from fastapi.testclient import TestClient

    from bertprobe.serve import create_app

    model = load_model(ml_model[1])
    texts = ["the film was great", "the music was awful"]
    with TestClient(create_app(model)) as client:
        body = client.post("/v1/predict", json={"texts": texts}).json()
        schema = client.get("/openapi.json").json()["components"]["schemas"]
    expected = model.predict_proba(texts)
    for prediction, row, labels in zip(
        body["predictions"], expected, model.predict(texts), strict=True
    ):
        assert prediction["labels"] == list(labels)
        assert [prediction["probabilities"][c] for c in model.classes] == pytest.approx(
            row.tolist(), abs=1e-6
        )
    assert "MultiLabelPredictResponse" in schema and "PredictResponse" not in schema


@pytest.mark.slow
def test_service_openapi_conformance_for_a_multilabel_model(ml_model):
    """schemathesis against the multi-label app: no 5xx, every answer fits its schema."""
    import schemathesis
    import uvicorn
    from hypothesis import HealthCheck, given, settings

    from bertprobe.serve import create_app

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    app = create_app(load_model(ml_model[1]))
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        assert time.monotonic() < deadline, "the server did not start"
        time.sleep(0.05)
    try:
        schema = schemathesis.openapi.from_url(f"http://127.0.0.1:{port}/openapi.json")
        operation = next(
            r.ok() for r in schema.get_all_operations() if r.ok().path == "/v1/predict"
        )

        @given(case=operation.as_strategy())
        @settings(max_examples=25, deadline=None, suppress_health_check=list(HealthCheck))
        def conforms(case):
            case.call_and_validate()

        conforms()
    finally:
        server.should_exit = True
        thread.join(timeout=30)


def test_label_issues_of_a_multi_label_run_find_the_flipped_labels():
    """Label by label out of fold: rows whose "a" was removed or added against the features
    lead the ranking, named "+a"/"-a" as given and suggested."""
    from bertprobe.data.files import LabelledTexts
    from bertprobe.encoders.options import EncoderOptions
    from bertprobe.training.options import TrainOptions
    from bertprobe.training.pipeline import TrainingRun, fit_head, out_of_fold

    rng = np.random.default_rng(0)
    X = rng.normal(size=(300, 6))
    sets = [tuple(n for n, on in (("a", x[0] > 0), ("b", x[1] > 0)) if on) for x in X]
    # "a" given against clear evidence (|x0| > 1), or withheld: five rows spread over the set
    flipped = [int(i) for i in np.flatnonzero(np.abs(X[:, 0]) > 1)[::20][:5]]
    for i in flipped:
        sets[i] = tuple(sorted(set(sets[i]) ^ {"a"}))
    data = LabelledTexts.from_lists([f"text {i}" for i in range(len(X))], sets)
    run = TrainingRun(
        data, None, EncoderOptions(), TrainOptions(multi_label=True, label_issues=True, cv=3)
    )
    run.classes, run.X_train = ["a", "b"], X
    fit_head(run)
    out_of_fold(run)
    assert run.label_issues is not None
    top = run.label_issues[: 2 * len(flipped)]
    assert set(flipped) <= {issue.index for issue in top}
    by_row = {issue.index: issue for issue in top}
    for i in flipped:
        given = "+a" if "a" in sets[i] else "-a"
        assert by_row[i].label == given and by_row[i].suggested == {"+a": "-a", "-a": "+a"}[given]


@pytest.mark.parametrize("target", ["single", "multi"])
def test_label_issues_out_of_core_find_the_flipped_labels(target):
    """Out of core: each fold's probabilities from a streaming head trained on the other folds
    a chunk at a time; the flipped rows lead the ranking (one label, and label by label)."""
    from bertprobe.encoders.options import EncoderOptions
    from bertprobe.heads.multilabel import StreamingMultiLabelProbe
    from bertprobe.heads.probe import OutOfCoreProbe
    from bertprobe.training.options import TrainOptions
    from bertprobe.training.pipeline import TrainingRun, out_of_fold_by_chunks

    rng = np.random.default_rng(0)
    X = rng.normal(size=(1200, 6))
    Y = np.column_stack([X[:, 0] > 0, X[:, 1] > 0]).astype(int)
    flipped = [int(i) for i in np.flatnonzero(np.abs(X[:, 0]) > 1.2)[::40][:6]]
    Y[flipped, 0] = 1 - Y[flipped, 0]
    labels = Y if target == "multi" else Y[:, 0]
    options = TrainOptions(out_of_core=True, label_issues=True, multi_label=target == "multi")
    run = TrainingRun(None, None, EncoderOptions(), options)
    run.classes = ["a", "b"] if target == "multi" else None

    def vectors(rows):
        return (X[i : i + rows] for i in range(0, len(X), rows))

    run.chunk_sources["train"] = (lambda rows: vectors(300), labels, "")
    head = StreamingMultiLabelProbe(classes=["a", "b"]) if target == "multi" else OutOfCoreProbe()
    run.head = head.fit(X, labels)
    out_of_fold_by_chunks(run)
    assert run.label_issues is not None
    top = {issue.index for issue in run.label_issues[: 2 * len(flipped)]}
    assert set(flipped) <= top
    if target == "multi":
        assert {issue.label[1:] for issue in run.label_issues[: len(flipped)]} == {"a"}


def test_a_label_set_sample_keeps_each_drawn_text_with_its_own_labels(tmp_path):
    """Out of core with --auto: the sample's texts come from a second pass; each must still
    sit beside its own row's label set, drawn from the whole file, not its head."""
    from bertprobe.training.inputs import label_set_sample

    rows = [
        (f"row {i}", "|".join(n for n, on in (("a", i % 2), ("b", i % 3 == 0)) if on))
        for i in range(500)
    ]
    path = tmp_path / "sets.tsv"
    path.write_text("".join(f"{t}\t{s}\n" for t, s in rows), encoding="utf-8")
    sample, classes = label_set_sample(path, ReadOptions(label_sep="|"), 60)
    assert classes == ["a", "b"] and len(sample) == 60
    by_text = dict(rows)
    for text, labels in zip(sample.texts, sample.labels or [], strict=True):
        assert "|".join(labels) == by_text[text]
    drawn = [int(text.split()[1]) for text in sample.texts]
    assert drawn == sorted(drawn) and max(drawn) > 250  # in file order, from all of it


def rare_label_data(seed: int = 0, n: int = 400):
    """Label "rare" on about 8% of rows, weakly signalled by one noisy feature; "common" on
    about half, clearly signalled."""
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, 8))
    rare = X[:, 0] + rng.normal(scale=0.8, size=n) > 1.9
    common = X[:, 1] > 0
    sets = [
        tuple(name for name, on in (("common", c), ("rare", r)) if on)
        for c, r in zip(common, rare, strict=True)
    ]
    return X, sets, rare


def test_balanced_weights_and_a_metric_reach_each_labels_probe():
    X, sets, rare = rare_label_data()
    assert 0.04 < rare.mean() < 0.15
    plain = MultiLabelProbe(cv=3).fit(X, sets)
    weighted = MultiLabelProbe(cv=3, class_weight="balanced", scoring="balanced_accuracy").fit(
        X, sets
    )
    for fitted in weighted.estimator_.estimators_:
        assert (fitted.class_weight, fitted.scoring) == ("balanced", "balanced_accuracy")
    j = weighted.classes_.tolist().index("rare")
    found_plain = plain.predict(X)[:, j].astype(bool)
    found_weighted = weighted.predict(X)[:, j].astype(bool)
    # Unweighted, a rare weak label is mostly "never"; weighted, most of its rows are found.
    assert found_weighted[rare].mean() > found_plain[rare].mean() + 0.2
    record = weighted.card_record()
    assert record["class_weight"] == "balanced" and record["scoring"] == "balanced_accuracy"
    assert record["cv_score"]["rare"] == pytest.approx(weighted.cv_score_[j])
    assert "cv_score" not in plain.card_record()
    with pytest.raises(BadInputError, match="class_weight="):
        MultiLabelProbe(cv=3, class_weight={"rare": 2.0}).fit(X, sets)


def test_auto_chooses_among_encoders_by_the_mean_over_labels(
    tiny_distilbert, narrow_distilbert, ml_files
):
    """Several labels a text: each encoder's sweep ranks by the mean over labels, and the
    model trains on the one recommended."""
    names = (str(tiny_distilbert), str(narrow_distilbert))
    result = train(
        ml_files["sep"],
        encoding=EncoderOptions("minilm", pooling="mean"),
        options=TrainOptions(
            multi_label=True, auto=True, encoders=names, poolings="mean", cv=3, n_jobs=1
        ),
        reading=ReadOptions(label_sep="|"),
    )
    found = result.comparison
    assert found is not None and result.model.encoder.name == found.recommended
    assert {r.encoder for r in found.rows} == set(names)
    assert all(r.sweep.best.cv_accuracy is not None for r in found.rows)
    assert isinstance(result.model.probe, MultiLabelProbe)
