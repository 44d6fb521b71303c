"""Parquet in and out: reading rows (train, evaluate, predict, embed, report), writing vectors."""

from __future__ import annotations

import json

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bertprobe.core.errors import BadInputError
from bertprobe.data.files import iter_chunks, read_labelled, read_texts, scan_file
from bertprobe.encoders.features import (
    iter_feature_rows,
    iter_parquet_vectors,
    parquet_job,
    write_vectors_parquet,
)
from bertprobe.model.classifier import Classifier
from test_cli import run


@pytest.fixture
def sentiment_parquet(tmp_path, sentiment_rows):
    path = tmp_path / "sentiment.parquet"
    table = pa.table(
        {
            "id": list(range(len(sentiment_rows))),
            "review": [t for t, _ in sentiment_rows],
            "stars": [y for _, y in sentiment_rows],
        }
    )
    pq.write_table(table, path, row_group_size=16)  # several row groups
    return path


def test_a_parquet_file_reads_as_the_same_rows_as_its_tsv(
    sentiment_parquet, sentiment_tsv, sentiment_rows
):
    from_tsv = read_labelled(sentiment_tsv)
    from_parquet = read_labelled(sentiment_parquet, text_col="review", label_col="stars")
    assert from_parquet.texts == from_tsv.texts and from_parquet.labels == from_tsv.labels
    assert from_parquet.line_numbers == list(range(1, len(sentiment_rows) + 1))
    by_index = read_labelled(sentiment_parquet, text_col=1, label_col=2)
    assert by_index.labels == from_tsv.labels
    # "review" is a recognised text column; the label needs naming ("stars" is not known).
    assert read_texts(sentiment_parquet).texts == from_tsv.texts
    chunks = list(iter_chunks(sentiment_parquet, 30, label_col="stars", want_labels=True))
    assert [len(c) for c in chunks] == [30, 30, 30, 10]
    assert scan_file(sentiment_parquet).sha256 == from_parquet.sha256


@pytest.mark.parametrize(
    ("table", "options", "message"),
    [
        (
            {"text": ["good", None, " "], "label": [1, 0, 1]},
            {},
            "empty text on rows 2, 3; fill them in or pass drop_empty=True",
        ),
        (
            {"text": ["good", "bad"], "label": [1, None]},
            {},
            "missing label on rows 2",
        ),
        (
            {"text": ["good"], "label": [1]},
            {"label_col": "stars"},
            "no column 'stars' (text, label); pass label_col=",
        ),
        (
            {"text": ["good"], "label": [1]},
            {"text_col": 5},
            "text_col=5 is out of range (the file has 2 columns",
        ),
    ],
)
def test_bad_parquet_rows_are_named_by_row(tmp_path, table, options, message):
    path = tmp_path / "bad.parquet"
    pq.write_table(pa.table(table), path)
    with pytest.raises(BadInputError, match="^" + str(path) + ": ") as info:
        read_labelled(path, **options)
    assert message in str(info.value)


def test_a_file_that_is_not_parquet_is_one_line_and_exit_2(tiny_model_dir, tmp_path, capsys):
    path = tmp_path / "texts.parquet"
    path.write_text("just text\n", encoding="utf-8")
    code, _, err = run(["predict", "--model", tiny_model_dir, "--input", path], capsys)
    assert code == 2 and len(err.strip().splitlines()) == 1
    assert f"{path} is not a readable Parquet file" in err
    missing = tmp_path / "missing.parquet"
    code, _, err = run(["evaluate", "--model", tiny_model_dir, missing], capsys)
    assert code == 2 and f"{missing}: no such file" in err


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    rows=st.lists(
        st.tuples(
            st.text(min_size=1, max_size=30).filter(lambda t: t.strip()),
            st.one_of(st.integers(-5, 5), st.sampled_from(["pos", "neg", "0"])),
        ),
        min_size=1,
        max_size=20,
    )
)
def test_parquet_and_json_lines_read_alike(tmp_path_factory, rows):
    """Any texts and labels: a Parquet file and the same rows as JSON Lines read the same."""
    folder = tmp_path_factory.mktemp("rows")
    labels = [str(y) for _, y in rows]  # one type a column, as Parquet requires
    pq.write_table(
        pa.table({"text": [t for t, _ in rows], "label": labels}), folder / "rows.parquet"
    )
    with open(folder / "rows.jsonl", "w", encoding="utf-8") as fh:
        for (text, _), label in zip(rows, labels, strict=True):
            fh.write(json.dumps({"text": text, "label": label}) + "\n")
    a = read_labelled(folder / "rows.parquet")
    b = read_labelled(folder / "rows.jsonl")
    assert a.texts == b.texts and a.labels == b.labels


def test_train_evaluate_predict_and_report_read_parquet(
    tiny_distilbert, sentiment_parquet, sentiment_tsv, tmp_path, capsys
):
    model = tmp_path / "model"
    columns = ["--text-col", "review", "--label-col", "stars"]
    code, stdout, err = run(
        [
            "train",
            sentiment_parquet,
            "--test",
            sentiment_parquet,
            "--encoder",
            tiny_distilbert,
            "--pooling",
            "mean",
            "--cv",
            "3",
            *columns,
            "--out",
            model,
            "--json",
        ],
        capsys,
    )
    assert code == 0, err
    trained = json.loads(stdout)
    assert trained["n_train"] == 100
    code, stdout, _ = run(["evaluate", "-m", model, sentiment_parquet, *columns, "--json"], capsys)
    from_parquet = json.loads(stdout)
    code_tsv, stdout, _ = run(["evaluate", "-m", model, sentiment_tsv, "--json"], capsys)
    assert code == code_tsv == 0
    assert from_parquet["accuracy"] == json.loads(stdout)["accuracy"] == trained["test_accuracy"]

    out = tmp_path / "labels.parquet"
    code, _, err = run(
        ["predict", "-m", model, "-i", sentiment_parquet, "--text-col", "review", "-o", out],
        capsys,
    )
    assert code == 0, err
    predicted = pq.read_table(out)
    assert predicted.num_rows == 100 and predicted.column_names == ["text", "label", "p_0", "p_1"]

    code, stdout, err = run(
        ["report", "-m", model, sentiment_parquet, *columns, "--out", tmp_path / "r", "--json"],
        capsys,
    )
    assert code == 0, err
    assert json.loads(stdout)["accuracy"] == trained["test_accuracy"]


def test_train_out_of_core_from_parquet(tiny_distilbert, sentiment_parquet, tmp_path, capsys):
    code, stdout, err = run(
        [
            "train",
            sentiment_parquet,
            "--encoder",
            tiny_distilbert,
            "--pooling",
            "mean",
            "--label-col",
            "stars",
            "--out-of-core",
            "--json",
        ],
        capsys,
    )
    assert code == 0, err
    assert json.loads(stdout)["n_train"] == 100


def test_embed_writes_parquet_ids_and_vectors_equal_to_the_npy(
    tiny_distilbert, sentiment_parquet, tmp_path, capsys
):
    argv = ["embed", sentiment_parquet, "--encoder", tiny_distilbert, "--pooling", "mean"]
    code, _, err = run([*argv, "--out", tmp_path / "X.npy", "--chunk-size", "30"], capsys)
    assert code == 0, err
    code, stdout, err = run(
        [*argv, "--out", tmp_path / "X.parquet", "--chunk-size", "30", "--json"], capsys
    )
    assert code == 0, err
    assert json.loads(stdout)["n"] == 100
    table = pq.read_table(tmp_path / "X.parquet")
    assert table.column_names == ["id", "vector"]
    assert table.column("id").to_pylist() == list(range(100))
    vectors = np.concatenate(list(iter_parquet_vectors(tmp_path / "X.parquet", 40)))
    assert vectors.dtype == np.float32
    np.testing.assert_array_equal(
        vectors, np.concatenate(list(iter_feature_rows(tmp_path / "X.npy")))
    )
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith("X.")) == [
        "X.npy",
        "X.parquet",
    ]
    code, _, err = run([*argv, "--out", tmp_path / "X.csv"], capsys)
    assert code == 2 and "name the file *.npy or *.parquet" in err


def test_train_out_of_core_from_embed_parquet_features_equals_embedding_again(
    tiny_distilbert, sentiment_tsv, tmp_path, capsys
):
    encoder = ["--encoder", tiny_distilbert, "--pooling", "mean"]
    code, _, err = run(["embed", sentiment_tsv, *encoder, "--out", tmp_path / "X.parquet"], capsys)
    assert code == 0, err
    job = parquet_job(tmp_path / "X.parquet")
    assert job is not None and job["pooling"] == "mean"
    assert job["sources"] == [
        {"path": str(sentiment_tsv), "sha256": scan_file(sentiment_tsv).sha256, "rows": 100}
    ]
    train = ["train", sentiment_tsv, *encoder, "--out-of-core", "--json"]
    code, stdout, err = run(
        [*train, "--no-cache", "--features", tmp_path / "X.parquet", "--out", tmp_path / "m1"],
        capsys,
    )
    assert code == 0, err
    assert json.loads(stdout)["n_train"] == 100
    code, _, err = run([*train, "--out", tmp_path / "m2"], capsys)
    assert code == 0, err
    texts = read_labelled(sentiment_tsv).texts
    from_features = Classifier.load(tmp_path / "m1").predict_proba(texts)
    embedded_again = Classifier.load(tmp_path / "m2").predict_proba(texts)
    np.testing.assert_allclose(from_features, embedded_again, atol=1e-6)


def test_train_refuses_features_of_another_file_or_other_options(
    tiny_distilbert, sentiment_tsv, sentiment_parquet, tmp_path, capsys
):
    encoder = ["--encoder", tiny_distilbert, "--pooling", "mean"]
    for source, name in ((sentiment_parquet, "other.parquet"), (sentiment_tsv, "cls.parquet")):
        pooling = ["--pooling", "cls"] if name == "cls.parquet" else []
        code, _, err = run(["embed", source, *encoder, *pooling, "--out", tmp_path / name], capsys)
        assert code == 0, err
    write_vectors_parquet([np.zeros((100, 64), np.float32)], tmp_path / "bare.parquet")
    train = ["train", sentiment_tsv, *encoder, "--out-of-core", "--features"]
    cases = [
        ("other.parquet", f"holds the vectors of {sentiment_parquet}, not of {sentiment_tsv}"),
        ("cls.parquet", "made with other options: pooling 'cls' (here 'mean')"),
        ("bare.parquet", "does not say how its vectors were made"),
    ]
    for name, message in cases:
        code, _, err = run([*train, tmp_path / name], capsys)
        assert code == 2 and message in err, (name, err)
    code, _, err = run(["train", sentiment_tsv, "--features", tmp_path / "cls.parquet"], capsys)
    assert code == 2 and "--features (precomputed training vectors) is for --out-of-core" in err
