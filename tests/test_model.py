"""The library's training entry point: the same job as ``bertprobe train``, from Python."""

from __future__ import annotations

import json

import numpy as np
import pytest

from bertprobe import (
    BadInputError,
    EncoderOptions,
    ReadOptions,
    RunOptions,
    TrainOptions,
    load_model,
    train,
)
from bertprobe.cli import main
from bertprobe.data.files import LabelledTexts


def test_train_from_python_saves_a_model_that_predicts_like_the_cli(
    tiny_distilbert, sentiment_rows, sentiment_tsv, tmp_path, capsys
):
    texts, labels = [t for t, _ in sentiment_rows], [y for _, y in sentiment_rows]
    data = LabelledTexts(texts, labels, "memory", "", list(range(1, len(texts) + 1)))
    result = train(
        data,
        test=sentiment_tsv,
        encoding=EncoderOptions(str(tiny_distilbert), pooling="mean"),
        options=TrainOptions(cv=3),
        out=tmp_path / "from-python",
    )
    assert result.n_train == result.n_test == 100
    assert result.test_accuracy is not None and result.test_accuracy > 0.9
    assert result.model.card["features"]["pooling"] == "mean"
    loaded = load_model(tmp_path / "from-python")
    np.testing.assert_allclose(
        loaded.predict_proba(texts[:5]), result.model.predict_proba(texts[:5]), atol=1e-6
    )

    # The CLI is a shell over the same call: the same summary, key for key.
    with pytest.raises(SystemExit):
        main(
            [
                "train",
                str(sentiment_tsv),
                "--test",
                str(sentiment_tsv),
                "--encoder",
                str(tiny_distilbert),
                "--pooling",
                "mean",
                "--cv",
                "3",
                "--json",
            ]
        )
    from_cli = json.loads(capsys.readouterr().out)
    from_python = result.to_dict()
    assert set(from_cli) == set(from_python)
    assert from_cli["cv_accuracy"] == pytest.approx(from_python["cv_accuracy"])
    assert from_cli["C"] == pytest.approx(from_python["C"])


@pytest.mark.parametrize(
    ("make", "words"),
    [
        (lambda: TrainOptions(cv=1), "cv=1"),
        (lambda: TrainOptions(n_jobs=0), "n_jobs=0"),
        (lambda: TrainOptions(Cs=(0.1, -1.0)), "Cs="),
        (lambda: TrainOptions(finalists=-1), "finalists=-1"),
        (lambda: EncoderOptions(pooling="sum"), "unknown pooling 'sum'"),
        (lambda: RunOptions(batch_size=0), "batch_size=0"),
        (lambda: RunOptions(backend="tensorflow"), "unknown backend"),
    ],
)
def test_options_are_checked_when_built_in_library_words(make, words):
    with pytest.raises(BadInputError, match=words.replace("(", r"\(")):
        make()


def test_options_are_frozen_and_parse_their_strings():
    encoding = EncoderOptions("minilm", layers="-2,-1")
    assert encoding.layers == (-2, -1)
    with pytest.raises(AttributeError):
        encoding.pooling = "mean"  # type: ignore[misc]
    assert TrainOptions(Cs="0.1,1", poolings="mean,cls").poolings == ("mean", "cls")
    assert ReadOptions(text_col=0).text_col == 0


def test_train_refuses_test_labels_of_another_kind_before_loading_the_encoder(
    sentiment_rows, sentiment_tsv, tmp_path
):
    words = tmp_path / "words.tsv"
    words.write_text(
        "".join(f"{t}\t{'good' if y else 'bad'}\n" for t, y in sentiment_rows), encoding="utf-8"
    )
    # An encoder that cannot be loaded: the label check must come first.
    with pytest.raises(BadInputError, match="none of its labels"):
        train(sentiment_tsv, test=words, encoding=EncoderOptions(str(tmp_path / "no-encoder")))


def test_a_fitted_pipeline_saves_as_a_model_folder(tiny_distilbert, sentiment_rows, tmp_path):
    """Pipeline(TextEmbedder, LinearProbe) -> Classifier.from_pipeline -> save -> load: the
    loaded model answers as the pipeline does, and the CLI can use the folder."""
    from sklearn.pipeline import make_pipeline

    from bertprobe import Classifier, LinearProbe, TextEmbedder

    texts, labels = [t for t, _ in sentiment_rows], [y for _, y in sentiment_rows]
    pipeline = make_pipeline(
        TextEmbedder(str(tiny_distilbert), pooling="max", layers="0,-1"), LinearProbe(cv=3)
    ).fit(texts, labels)
    folder = Classifier.from_pipeline(pipeline).save(tmp_path / "from-pipeline")
    loaded = Classifier.load(folder)
    assert loaded.spec.pooling == "max" and loaded.spec.layers == (0, -1)
    np.testing.assert_allclose(
        loaded.predict_proba(texts[:7]), pipeline.predict_proba(texts[:7]), atol=1e-6
    )
    # A loaded model saves again to a folder that loads the same.
    again = Classifier.load(loaded.save(tmp_path / "copy"))
    assert again.classes == loaded.classes and again.card["features"] == loaded.card["features"]


def test_from_pipeline_refuses_other_pipelines():
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    from bertprobe import BertprobeError, Classifier

    with pytest.raises(BertprobeError, match="a TextEmbedder, then a head"):
        Classifier.from_pipeline(make_pipeline(StandardScaler(), LogisticRegression()))


@pytest.mark.parametrize("out_of_core", [False, True], ids=["in-memory", "out-of-core"])
def test_train_calls_the_hooks_around_each_stage_of_its_preset(
    out_of_core, tiny_distilbert, sentiment_tsv
):
    from bertprobe.training.pipeline import IN_MEMORY, OUT_OF_CORE, StageHooks

    seen: list[tuple[str, str]] = []
    hooks = StageHooks(
        on_start=lambda name, run: seen.append(("start", name)),
        on_end=lambda name, run, seconds: seen.append(("end", name)) if seconds >= 0 else None,
    )
    train(
        sentiment_tsv,
        encoding=EncoderOptions(str(tiny_distilbert), pooling="mean"),
        options=TrainOptions(cv=3, out_of_core=out_of_core),
        hooks=hooks,
    )
    preset = OUT_OF_CORE if out_of_core else IN_MEMORY
    assert seen == [(when, s.__name__) for s in preset for when in ("start", "end")]
