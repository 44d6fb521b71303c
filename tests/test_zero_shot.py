"""From zero labels: the zero-shot head (its rules, every way out, both targets), self-training
on the pool it labels, and the CLI's --zero-shot.

The tiny random DistilBERT drives the mechanics (a random encoder gives descriptions no
meaning, but every way out must still agree with the model); the bundled MiniLM, on SST-2,
checks that descriptions do classify (slow)."""

from __future__ import annotations

import json

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

from bertprobe import BadInputError, Classifier, EncoderOptions, ReadOptions, TrainOptions, train
from bertprobe.cli import app
from bertprobe.heads.decision import Decision
from bertprobe.heads.linear import linear_readout
from bertprobe.heads.zeroshot import ZeroShotHead, descriptions_of
from bertprobe.training.zeroshot import ZeroShot, surest
from conftest import label_set, write_tsv
from test_cli_fuzz import run_in_process
from ways_out import (
    check_evaluate,
    check_explain,
    check_export,
    check_folder,
    check_predict_file,
    check_report,
    check_service,
)

DESCRIBED = {"0": ["bad", "awful"], "1": ["good", "great"]}


# --- the head on vectors ---------------------------------------------------------------------


@settings(max_examples=25, deadline=None)
@given(
    seed=st.integers(0, 10_000),
    n_classes=st.integers(2, 4),
    label_sets=st.booleans(),
    temperature=st.sampled_from(["auto", 0.05, 1.0]),
)
def test_the_linear_read_out_gives_the_heads_probabilities(
    seed, n_classes, label_sets, temperature
):
    """What the export and the exact explanations read is the head itself, for any pool."""
    rng = np.random.default_rng(seed)
    vectors = rng.normal(size=(n_classes, 6))
    pool = rng.normal(size=(40, 6)) + rng.normal(size=6) * 3
    head = ZeroShotHead(
        vectors, [f"c{k}" for k in range(n_classes)], temperature=temperature,
        label_sets=label_sets,
    ).fit(pool)  # fmt: skip
    readout = linear_readout(head)
    scores = readout.scores(pool)
    if readout.link == "binary":
        expected = np.column_stack(
            [1 / (1 + np.exp(scores[:, 0])), 1 / (1 + np.exp(-scores[:, 0]))]
        )
    elif readout.link == "multi-label":
        expected = 1 / (1 + np.exp(-scores))
    else:
        exp = np.exp(scores - scores.max(axis=1, keepdims=True))
        expected = exp / exp.sum(axis=1, keepdims=True)
    np.testing.assert_allclose(head.predict_proba(pool), expected, atol=1e-9)
    assert Decision.for_head(head).label_sets == label_sets


def test_centring_takes_away_what_every_text_of_the_pool_shares():
    """A class whose description lies close to the pool's common direction wins every text
    without centring; centred, each text goes to the class it leans to."""
    rng = np.random.default_rng(0)
    common = np.array([5.0, 0, 0, 0])
    labels = np.array([[3.0, 1, 0, 0], [1.0, -1, 0, 0]])  # 'up' leans to the common direction
    side = rng.choice([-1.0, 1.0], size=200)
    pool = common + np.column_stack([np.zeros(200), side, rng.normal(size=(200, 2)) * 0.1])
    head = ZeroShotHead(labels, ["up", "down"]).fit(pool)
    units = labels / np.linalg.norm(labels, axis=1, keepdims=True)
    raw = (pool @ units.T).argmax(axis=1)
    assert len(set(raw)) == 1  # uncentred, one class takes all
    assert np.array_equal(head.predict(pool), np.where(side > 0, "up", "down"))


def test_each_label_of_a_label_set_head_is_on_for_its_own_group():
    rng = np.random.default_rng(1)
    labels = np.eye(3)[:2]
    carries = rng.random((300, 2)) < [0.2, 0.5]
    pool = carries * 2.0 @ labels + rng.normal(size=(300, 3)) * 0.3
    head = ZeroShotHead(labels, ["a", "b"], label_sets=True).fit(pool)
    decided = head.decision().indicator(head.predict_proba(pool))
    assert (decided == carries).mean() > 0.95


@pytest.mark.parametrize(
    ("descriptions", "template", "words"),
    [
        ({"a": "x"}, "{}", "two classes or more"),
        ({"a": "x", "b": ""}, "{}", "empty description"),
        ({"a": "x", "b": []}, "{}", "empty description"),
        ({"a": "x", "b": "y"}, "no slot", "put {} where"),
        (["a", "b"], "{}", "two classes or more"),
    ],
)
def test_descriptions_that_cannot_describe_are_refused(descriptions, template, words):
    with pytest.raises(BadInputError, match=words):
        descriptions_of(descriptions, template)


def test_surest_takes_the_same_number_of_each_class():
    proba = np.array([[0.9, 0.1], [0.8, 0.2], [0.7, 0.3], [0.6, 0.4], [0.4, 0.6], [0.1, 0.9]])
    zero_shot = ZeroShot(descriptions={"a": "x", "b": "y"}, per_class=2)
    assert surest(proba, zero_shot).tolist() == [0, 1, 4, 5]
    # A share of the pool divided among the classes: all 6 texts, 3 a class; the model gives
    # the second class only 2.
    share = ZeroShot(descriptions={"a": "x", "b": "y"}, per_class=1.0)
    assert surest(proba, share).tolist() == [0, 1, 2, 4, 5]


@pytest.mark.parametrize(
    ("options", "param"),
    [({"rounds": -1}, "rounds"), ({"rounds": 1.5}, "rounds"), ({"per_class": 0}, "per_class"),
     ({"per_class": 1.5}, "per_class"), ({"per_class": True}, "per_class")],
)  # fmt: skip
def test_self_training_options_are_checked_when_built(options, param):
    with pytest.raises(BadInputError) as raised:
        ZeroShot(descriptions={"a": "x", "b": "y"}, **options)
    assert raised.value.params == (param,)


# --- the model, every way out ----------------------------------------------------------------


@pytest.fixture(scope="module")
def files(tmp_path_factory, sentiment_rows):
    root = tmp_path_factory.mktemp("zero-shot")
    pool = root / "pool.txt"
    pool.write_text("".join(f"{t} indeed\n" for t, _ in sentiment_rows), encoding="utf-8")
    multi = [(t, label_set(t, y, "1")) for t, y in sentiment_rows]
    return {
        "pool": pool,
        "single": write_tsv(root / "single.tsv", sentiment_rows),
        "multi": write_tsv(root / "multi.tsv", multi),
    }


# Longer than a window of max_length 8 (stride 2), so chunk mode takes several.
PADDING = " , as everyone who saw it on that rainy evening agreed"


@pytest.mark.parametrize("text", ["truncate", "chunk"])
@pytest.mark.parametrize("target", ["single", "multi"])
def test_the_zero_shot_head_works_in_every_way_out(
    target, text, files, tiny_distilbert, sentiment_rows, tmp_path
):
    described = DESCRIBED if target == "single" else {"early": "the film", "1": ["good", "great"]}
    out = tmp_path / "model"
    windows = {"max_length": 8, "long": "chunk", "stride": 2} if text == "chunk" else {}
    result = train(
        None,
        test=files[target],
        encoding=EncoderOptions(str(tiny_distilbert), pooling="mean", **windows),
        options=TrainOptions(multi_label=target == "multi"),
        reading=ReadOptions(label_sep="|") if target == "multi" else ReadOptions(),
        unlabelled=files["pool"],
        zero_shot=ZeroShot(descriptions=described),
        out=out,
    )
    assert result.test_accuracy is not None and result.n_train == 0
    card = result.model.card
    assert card["probe"]["solver"] == "zero-shot"
    assert card["zero_shot"]["descriptions"] == {
        k: [v] if isinstance(v, str) else v for k, v in described.items()
    }
    assert card["data"]["unlabelled"]["n"] == len(sentiment_rows)
    assert "train" not in card["data"]

    texts = [t + (PADDING if i % 3 == 0 else "") for i, (t, _) in enumerate(sentiment_rows[:10])]
    expected = result.model.predict_proba(texts)
    loaded = check_folder(out, texts, expected)
    check_evaluate(loaded, texts)
    check_explain(loaded, texts)
    assert loaded.explain(texts[:1])[0].method == "exact"  # a linear read-out
    check_predict_file(loaded, texts, tmp_path)
    check_service(loaded, texts, expected)
    check_report(out, files[target], tmp_path)
    check_export(loaded, texts, expected, tmp_path)


def test_from_descriptions_is_the_trained_zero_shot_model(files, tiny_distilbert, sentiment_rows):
    encoding = EncoderOptions(str(tiny_distilbert), pooling="mean")
    pool = [t for t, _ in sentiment_rows]
    model = Classifier.from_descriptions(DESCRIBED, pool, encoding=encoding)
    trained = train(
        None, encoding=encoding, unlabelled=pool, zero_shot=ZeroShot(descriptions=DESCRIBED)
    ).model
    np.testing.assert_allclose(model.predict_proba(pool), trained.predict_proba(pool))
    assert model.classes == ["0", "1"]


# --- self-training ---------------------------------------------------------------------------


def test_self_training_learns_from_the_surest_texts_of_each_class(
    files, tiny_distilbert, sentiment_rows, tmp_path
):
    result = train(
        None,
        test=files["single"],
        encoding=EncoderOptions(str(tiny_distilbert), pooling="mean"),
        options=TrainOptions(cv=3),
        unlabelled=files["pool"],
        zero_shot=ZeroShot(descriptions=DESCRIBED, rounds=2, per_class=12),
        out=tmp_path / "model",
    )
    rounds = result.self_trained["rounds"]
    assert rounds and all(sum(r["pseudo_labels"].values()) > 0 for r in rounds if "changed" in r)
    assert rounds[0]["pseudo_labels"] == {"0": 12, "1": 12}
    assert result.n_train == 24  # the last round's pseudo-labels are its training set
    assert result.model.probe.card_record()["solver"] == "lbfgs-cv"  # a probe now
    card = result.model.card["zero_shot"]
    assert card["self_training"]["rounds"] == rounds and card["rounds"] == 2
    assert Classifier.load(tmp_path / "model").predict(["a good film"]).shape == (1,)


def test_labels_beside_descriptions_train_every_round_with_the_surest_pool_texts(
    files, tiny_distilbert, sentiment_rows, tmp_path
):
    """A few labels and the classes' descriptions: the zero-shot head's surest pool texts
    join the labels (one round even with rounds=0: the head alone would ignore them), and
    none of the labelled texts is taken from the pool again."""
    labelled = write_tsv(tmp_path / "few.tsv", sentiment_rows[:6] + sentiment_rows[-6:])
    pool = [t for t, _ in sentiment_rows] + [f"{t} indeed" for t, _ in sentiment_rows]
    result = train(
        labelled,
        encoding=EncoderOptions(str(tiny_distilbert), pooling="mean"),
        options=TrainOptions(cv=3),
        unlabelled=pool,
        zero_shot=ZeroShot(descriptions=DESCRIBED, per_class=12),
    )
    record = result.self_trained
    assert record["n_labelled"] == 12
    assert record["n_pool"] == len(pool) - 12  # the labelled texts are set aside
    assert [r["pseudo_labels"] for r in record["rounds"]] == [{"0": 12, "1": 12}]
    assert result.n_train == 12 + 24
    assert result.model.probe.card_record()["solver"] == "lbfgs-cv"
    # The same from Python's from_descriptions, the labels given as lists.
    few = sentiment_rows[:6] + sentiment_rows[-6:]
    model = Classifier.from_descriptions(
        DESCRIBED, pool, encoding=EncoderOptions(str(tiny_distilbert), pooling="mean"),
        options=TrainOptions(cv=3), per_class=12,
        texts=[t for t, _ in few], labels=[str(y) for _, y in few],
    )  # fmt: skip
    np.testing.assert_allclose(model.predict_proba(pool), result.model.predict_proba(pool))
    with pytest.raises(BadInputError, match="together"):
        Classifier.from_descriptions(DESCRIBED, pool, texts=["a good film"])


def test_labels_the_descriptions_do_not_name_are_refused(files, tiny_distilbert, tmp_path):
    rows = [("a good film", "1"), ("a bad one", "0"), ("so-so", "meh")]
    labelled = write_tsv(tmp_path / "other.tsv", rows)
    with pytest.raises(BadInputError, match="the label meh is not among the classes") as raised:
        train(
            labelled,
            encoding=EncoderOptions(str(tiny_distilbert), pooling="mean"),
            unlabelled=files["pool"],
            zero_shot=ZeroShot(descriptions=DESCRIBED),
        )
    assert raised.value.params == ("zero_shot",)


def test_self_training_stops_where_a_class_has_too_few_texts(files, tiny_distilbert):
    """Fewer surest texts of a class than the folds C is chosen by: the round is not run, and
    the zero-shot head stays the model (said in the record)."""
    result = train(
        None,
        encoding=EncoderOptions(str(tiny_distilbert), pooling="mean"),
        options=TrainOptions(cv=5),
        unlabelled=files["pool"],
        zero_shot=ZeroShot(descriptions=DESCRIBED, rounds=1, per_class=3),
    )
    assert result.self_trained["rounds"] == [
        {"round": 1, "stopped": "too few texts of a class", "0": 3, "1": 3}
    ]
    assert result.model.probe.card_record()["solver"] == "zero-shot"


def test_self_training_for_label_sets_is_refused_in_one_line(files, tiny_distilbert):
    with pytest.raises(BadInputError, match="rounds=0") as raised:
        train(
            None,
            encoding=EncoderOptions(str(tiny_distilbert), pooling="mean"),
            options=TrainOptions(multi_label=True),
            unlabelled=files["pool"],
            zero_shot=ZeroShot(descriptions=DESCRIBED, rounds=1),
        )
    assert raised.value.params == ("rounds",)


# --- the CLI ---------------------------------------------------------------------------------


def test_train_zero_shot_from_the_command_line(files, tiny_distilbert, tmp_path):
    args = [
        "train", "--zero-shot", "0=bad", "--zero-shot", "0=awful", "--zero-shot", "1=good",
        "--unlabelled", str(files["pool"]), "--test", str(files["single"]),
        "--encoder", str(tiny_distilbert), "--pooling", "mean", "--out", str(tmp_path / "m"),
    ]  # fmt: skip
    result = CliRunner().invoke(app, [*args, "--json"])
    assert result.exit_code == 0, result.output
    summary = json.loads(result.output)
    assert summary["zero_shot"] is True and summary["labels"] == ["0", "1"]
    card = json.loads((tmp_path / "m" / "card.json").read_text())
    assert card["zero_shot"]["descriptions"] == {"0": ["bad", "awful"], "1": ["good"]}
    printed = CliRunner().invoke(app, args[:-2] + ["--template", "a {} film"])
    assert printed.exit_code == 0, printed.output
    assert "no labels: 2 classes described" in printed.output
    assert "zero-shot from 3 description(s)" in printed.output


@pytest.mark.parametrize(
    ("args", "words"),
    [
        ([], "--zero-shot"),
        (["--zero-shot", "0=bad", "--zero-shot", "1=good"], "--unlabelled"),
        (["--zero-shot", "=bad", "--zero-shot", "1=good"], "the label is empty"),
        (["--zero-shot", "0=bad"], "two classes or more"),
        (["--zero-shot", "0=x", "--zero-shot", "1=y", "--template", "no slot"], "--template"),
        (["--rounds", "1"], "--zero-shot"),
    ],
)
def test_zero_shot_flags_that_cannot_work_are_one_line_errors(args, words, files, tiny_distilbert):
    unlabelled = ["--unlabelled", str(files["pool"])] if "--unlabelled" not in words else []
    code, _, said = run_in_process(["train", *args, *unlabelled, "--encoder", str(tiny_distilbert)])
    assert code == 2, said
    assert said.startswith("bertprobe: error: ") and said.count("\n") == 1, said
    assert words in said


# --- a real encoder --------------------------------------------------------------------------


@pytest.mark.slow
def test_descriptions_classify_sst2_with_the_bundled_encoder():
    """Names in a sentence, centred on a pool: well past chance on SST-2 (70.8% on the whole
    test set; bench/fewshot_bench.py --zero-shot has the figures)."""
    from bertprobe.datasets import load_sst2

    pool, test = load_sst2("train"), load_sst2("test")
    model = Classifier.from_descriptions(
        {"0": "negative", "1": "positive"},
        pool.texts[:1500],
        encoding=EncoderOptions("minilm", pooling="mean"),
        template="This is a {} review.",
    )
    assert model.evaluate(test.texts[:400], test.labels[:400]).accuracy > 0.64
