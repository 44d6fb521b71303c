"""Fine-tuning: the tuned encoder lands in the model folder and everything else uses it as is."""

from __future__ import annotations

import json
import shutil
import signal
import sys
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from bertprobe import (
    Classifier,
    EncoderOptions,
    FinetuneOptions,
    ModelFolderError,
    ReadOptions,
    RunOptions,
    TrainOptions,
    resolve_encoder,
    train,
)
from bertprobe.cli import main
from bertprobe.training.callbacks import TrainingCallback
from bertprobe.training.finetune import FinetuneInterrupted


def run(argv, capsys):
    with pytest.raises(SystemExit) as info:
        main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return info.value.code, out, err


def _tuned_cli(data, encoder, out, *more):
    return [
        "train",
        data,
        "--encoder",
        encoder,
        "--pooling",
        "mean",
        "--cv",
        "3",
        "--finetune",
        "--epochs",
        "2",
        "--lr",
        "5e-4",
        "--out",
        out,
        *more,
    ]


@pytest.fixture
def tuned_model(tiny_distilbert, sentiment_tsv, tmp_path, capsys):
    out = tmp_path / "tuned"
    code, stdout, err = run(_tuned_cli(sentiment_tsv, tiny_distilbert, out, "--json"), capsys)
    assert code == 0, err
    return out, json.loads(stdout)


def test_finetune_writes_the_tuned_encoder_into_the_model_folder(tuned_model, tiny_distilbert):
    from safetensors.numpy import load_file

    out, summary = tuned_model
    assert summary["epochs_run"] == 2 and summary["finetune_seconds"] > 0
    assert 0.5 <= summary["dev_accuracy"] <= 1 and summary["test_accuracy"] is None
    for name in ("config.json", "model.safetensors", "tokenizer.json"):
        assert (out / "encoder" / name).is_file()
    card = json.loads((out / "card.json").read_text())
    base = resolve_encoder(str(tiny_distilbert))
    assert card["encoder"]["folder"] == "encoder"
    assert card["encoder"]["base"]["fingerprint"] == base.fingerprint
    assert card["encoder"]["fingerprint"] != base.fingerprint
    assert "encoder/model.safetensors" in card["files"]
    assert card["finetune"]["epochs_run"] == 2 and len(card["finetune"]["dev_history"]) == 2
    tuned = load_file(out / "encoder" / "model.safetensors")
    original = load_file(tiny_distilbert / "model.safetensors")
    shared = sorted(set(tuned) & set(original))
    assert shared and any(not np.allclose(tuned[k], original[k]) for k in shared)
    # The checkpoints went once the folder held the tuned encoder.
    assert not list((out.parent / "cache" / "finetune").glob("*/checkpoints"))


def test_a_tuned_model_evaluates_predicts_and_embeds_like_any(tuned_model, sentiment_tsv, capsys):
    out, _ = tuned_model
    code, stdout, err = run(["evaluate", sentiment_tsv, "--model", out, "--json"], capsys)
    assert code == 0, err
    assert json.loads(stdout)["accuracy"] >= 0.9
    code, stdout, err = run(
        ["predict", "--model", out, "a wonderful film", "an awful film"], capsys
    )
    assert code == 0, err
    assert [json.loads(line)["label"] for line in stdout.splitlines()] == [1, 0]
    vectors = out.parent / "X.npy"
    code, _, err = run(
        [
            "embed",
            sentiment_tsv,
            "--encoder",
            out / "encoder",
            "--pooling",
            "mean",
            "--out",
            vectors,
        ],
        capsys,
    )
    assert code == 0, err
    model = Classifier.load(out)
    X, _ = model.embed(["a wonderful film"], RunOptions(use_cache=False))
    texts = [line.split("\t")[0] for line in sentiment_tsv.read_text().splitlines()]
    row = texts.index("a wonderful film") if "a wonderful film" in texts else None
    if row is not None:  # the same encoder gives the same vector whichever way it is reached
        np.testing.assert_allclose(np.load(vectors)[row], X[0], atol=1e-5)
    saved_again = Classifier.load(model.save(out.parent / "copy"))
    assert saved_again.card["encoder"]["fingerprint"] == model.card["encoder"]["fingerprint"]


def test_an_altered_tuned_encoder_is_refused(tuned_model, tmp_path):
    out, _ = tuned_model
    altered = tmp_path / "altered"
    shutil.copytree(out, altered)
    weights = altered / "encoder" / "model.safetensors"
    data = bytearray(weights.read_bytes())
    data[-1] ^= 0xFF
    weights.write_bytes(bytes(data))
    with pytest.raises(ModelFolderError, match=r"encoder/model.safetensors was altered"):
        Classifier.load(altered)


def test_ctrl_c_saves_a_checkpoint_and_the_same_call_resumes(
    tiny_distilbert, sentiment_tsv, tmp_path, monkeypatch
):
    import bertprobe.training._tuning

    encoding = EncoderOptions(str(tiny_distilbert), pooling="mean", run=RunOptions(batch_size=8))
    tuning = FinetuneOptions(epochs=2, lr=5e-4)
    ending = bertprobe.training._tuning.EpochBars.on_step_end
    before = signal.getsignal(signal.SIGINT)  # ignored, not Python's, when run in the background

    def press_ctrl_c_at_step_3(self, args, state, control, **kwargs):
        ending(self, args, state, control, **kwargs)
        if state.global_step == 3:
            signal.raise_signal(signal.SIGINT)

    with monkeypatch.context() as patched:
        patched.setattr(bertprobe.training._tuning.EpochBars, "on_step_end", press_ctrl_c_at_step_3)
        with pytest.raises(FinetuneInterrupted, match="same command resumes"):
            train(sentiment_tsv, encoding=encoding, options=TrainOptions(cv=3), finetune=tuning)
    saved = list((tmp_path / "cache" / "finetune").glob("*/checkpoints/checkpoint-*"))
    assert [p.name for p in saved] == ["checkpoint-4"]  # the step after Ctrl-C, then it stopped
    assert signal.getsignal(signal.SIGINT) is before  # the handler is put back

    result = train(sentiment_tsv, encoding=encoding, options=TrainOptions(cv=3), finetune=tuning)
    assert result.finetune is not None and result.finetune.resumed_from_step == 4
    assert result.finetune.epochs_run == 2
    assert result.model.predict(["a wonderful film"]).tolist() in ([0], [1])


def test_ctrl_c_in_the_cli_exits_130_saying_how_to_resume(
    tiny_distilbert, sentiment_tsv, tmp_path, monkeypatch, capsys
):
    import bertprobe.training._tuning

    def press_ctrl_c(self, args, state, control, **kwargs):
        signal.raise_signal(signal.SIGINT)

    monkeypatch.setattr(bertprobe.training._tuning.EpochBars, "on_step_end", press_ctrl_c)
    code, stdout, err = run(_tuned_cli(sentiment_tsv, tiny_distilbert, tmp_path / "m"), capsys)
    assert code == 130 and stdout == ""
    assert "run the same command again to resume" in err and "Traceback" not in err
    assert not (tmp_path / "m").exists()


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--epochs", "3"], "--epochs apply to tuning the encoder only; add --finetune"),
        (["--finetune", "--lr", "-1"], "is not a positive number"),
        (["--finetune", "--lr", "fast"], "Invalid value for '--lr'"),
        (["--finetune", "--dev-share", "1.5"], "is not a share between 0 and 1"),
        (["--finetune", "--epochs", "0"], "Invalid value for '--epochs'"),
    ],
)
def test_finetune_options_are_checked_in_one_line(
    extra, message, tiny_distilbert, sentiment_tsv, capsys
):
    code, stdout, err = run(["train", sentiment_tsv, "--encoder", tiny_distilbert, *extra], capsys)
    assert code == 2 and stdout == "" and message in err and "Traceback" not in err


def test_a_dev_file_with_labels_the_training_lacks_is_refused_before_any_work(
    tiny_distilbert, sentiment_tsv, tmp_path, capsys, monkeypatch
):
    import bertprobe.encoders.options

    def must_not_run(*args, **kwargs):
        raise AssertionError("the encoder was loaded before the dev file was checked")

    monkeypatch.setattr(bertprobe.encoders.options, "load_encoder", must_not_run)
    dev = tmp_path / "dev.tsv"
    dev.write_text("a good film\t1\na so-so film\t2\n", encoding="utf-8")
    code, _, err = run(
        ["train", sentiment_tsv, "--encoder", tiny_distilbert, "--finetune", "--dev", dev], capsys
    )
    assert code == 2
    assert err.strip() == (
        f"bertprobe: error: {dev}: dev labels the training data lacks: 2; use dev rows of the "
        "training labels only"
    )
    assert not (tmp_path / "cache" / "finetune").exists()


def test_too_few_rows_for_a_dev_share_is_one_line(tiny_distilbert, tmp_path, capsys):
    data = tmp_path / "small.tsv"
    data.write_text("".join(f"{w} film\t{y}\n" for w, y in [("good", 1), ("bad", 0)] * 3))
    code, _, err = run(
        ["train", data, "--encoder", tiny_distilbert, "--cv", "2", "--finetune"], capsys
    )
    assert code == 2 and "too few for a dev share of 0.1" in err and "--dev-share" in err


@pytest.mark.slow  # the bundled MiniLM, fine-tuned for real on a small SST-2 subset
def test_finetuning_minilm_on_sst2_beats_chance_and_keeps_its_best_epoch(tmp_path, capsys):
    from bertprobe.datasets import load_sst2

    train_set, test_set = load_sst2("train"), load_sst2("test")
    for name, data, n in (("train", train_set, 400), ("test", test_set, 200)):
        rows = zip(data.texts[:n], (data.labels or [])[:n], strict=True)
        (tmp_path / f"{name}.tsv").write_text("".join(f"{t}\t{y}\n" for t, y in rows))
    code, stdout, err = run(
        [
            "train",
            tmp_path / "train.tsv",
            "--test",
            tmp_path / "test.tsv",
            "--encoder",
            "minilm",
            "--pooling",
            "mean",
            "--finetune",
            "--epochs",
            "2",
            "--out",
            tmp_path / "m",
            "--json",
        ],
        capsys,
    )
    assert code == 0, err
    summary = json.loads(stdout)
    assert summary["epochs_run"] == 2 and summary["test_accuracy"] > 0.7
    card = json.loads((tmp_path / "m" / "card.json").read_text())
    history = card["finetune"]["dev_history"]
    assert card["finetune"]["dev_accuracy"] == max(history)
    assert Path(tmp_path / "m" / "encoder" / "tokenizer.json").is_file()
    assert sys.modules.get("accelerate") is not None  # the Trainer's machinery did the work


def test_a_finished_fine_tuning_is_not_redone_when_the_probe_was_interrupted(
    tiny_distilbert, sentiment_tsv, monkeypatch
):
    from transformers import Trainer

    encoding = EncoderOptions(str(tiny_distilbert), pooling="mean")
    tuning = FinetuneOptions(epochs=1, lr=5e-4)
    first = train(sentiment_tsv, encoding=encoding, options=TrainOptions(cv=3), finetune=tuning)

    def must_not_train(*args, **kwargs):
        raise AssertionError("fine-tuned again")

    monkeypatch.setattr(Trainer, "train", must_not_train)
    again = train(sentiment_tsv, encoding=encoding, options=TrainOptions(cv=3), finetune=tuning)
    assert again.finetune is not None and first.finetune is not None
    assert again.finetune.dev_history == first.finetune.dev_history
    assert again.model.encoder.fingerprint == first.model.encoder.fingerprint


def test_a_small_training_set_gets_enough_steps_unless_epochs_are_given(
    tiny_distilbert, sentiment_tsv, tmp_path
):
    encoding = EncoderOptions(str(tiny_distilbert), pooling="mean", run=RunOptions(batch_size=8))
    runs = {}
    for tuning in (FinetuneOptions(lr=5e-4, min_steps=350), FinetuneOptions(lr=5e-4, epochs=2)):
        out = tmp_path / f"epochs-{tuning.epochs}"
        train(
            sentiment_tsv, encoding=encoding, options=TrainOptions(cv=3), finetune=tuning, out=out
        )
        runs[tuning.epochs] = json.loads((out / "card.json").read_text())["finetune"]
    # 90 training rows (10 of the 100 are dev rows) make 12 batches of 8: 350 steps take 30
    # epochs, scored every 2nd (at most 25 scores, each of which saves a checkpoint)
    assert runs[None]["epochs_run"] == 30 and runs[None]["dev_epochs"] == list(range(2, 31, 2))
    assert runs[None]["best_epoch"] in runs[None]["dev_epochs"]
    assert runs[None]["min_steps"] == 350 and runs[None]["epochs"] is None
    assert runs[2]["epochs_run"] == 2 and runs[2]["dev_epochs"] == [1, 2]
    assert FinetuneOptions(min_steps=0).epochs_for(90, 8) == 4  # never fewer than the default


@given(
    logits=st.lists(
        st.tuples(st.floats(-20, 20), st.floats(-20, 20)), min_size=1, max_size=30
    ).flatmap(
        lambda rows: st.tuples(
            st.just(np.array(rows)),
            st.lists(st.integers(0, 1), min_size=len(rows), max_size=len(rows)),
            st.lists(st.integers(0, 1), min_size=len(rows), max_size=len(rows)),
        )
    )
)
def test_the_epoch_kept_has_the_best_dev_accuracy_and_loss_only_breaks_ties(logits):
    from transformers import EvalPrediction

    from bertprobe.training.target import dev_scores as _dev_scores

    scores, labels, other_labels = logits
    a = _dev_scores(EvalPrediction(predictions=scores, label_ids=np.array(labels)))
    b = _dev_scores(EvalPrediction(predictions=scores, label_ids=np.array(other_labels)))
    assert a["accuracy"] - 1 / len(labels) < a["selection"] <= a["accuracy"]
    if a["accuracy"] != b["accuracy"]:
        assert (a["selection"] > b["selection"]) == (a["accuracy"] > b["accuracy"])


def test_between_epochs_of_equal_dev_accuracy_the_lower_loss_is_kept():
    from transformers import EvalPrediction

    from bertprobe.training.target import dev_scores as _dev_scores

    labels = np.array([0, 1, 1, 0])
    unsure = np.array([[0.1, 0.0], [0.0, 0.1], [0.1, 0.0], [0.0, 0.1]])  # 2 of 4 right
    sure = 10 * unsure
    first, later = (_dev_scores(EvalPrediction(p, labels)) for p in (sure, unsure))
    assert first["accuracy"] == later["accuracy"] == 0.5
    assert later["selection"] > first["selection"]  # sure and wrong costs more than unsure


# --- fine-tuning on windows (long="chunk") -------------------------------------------------


def test_finetuning_in_chunk_mode_trains_on_every_window_and_scores_dev_texts(
    tiny_distilbert, long_rows_tsv, tmp_path, monkeypatch
):
    import transformers

    import bertprobe.training.finetune
    from bertprobe.encoders.encoder import load_encoder

    path, rows = long_rows_tsv
    seen: dict = {}
    tune = bertprobe.training.finetune.finetune
    init = transformers.Trainer.__init__

    def tune_and_see(train_rows, dev_rows, **kwargs):
        seen.update(train_rows=train_rows, dev_rows=dev_rows)
        return tune(train_rows, dev_rows, **kwargs)

    def see_datasets(self, *args, **kwargs):
        seen.update(train=kwargs["train_dataset"], dev=kwargs["eval_dataset"])
        init(self, *args, **kwargs)

    monkeypatch.setattr(bertprobe.training.finetune, "finetune", tune_and_see)
    monkeypatch.setattr(transformers.Trainer, "__init__", see_datasets)
    encoding = EncoderOptions(
        str(tiny_distilbert),
        pooling="mean",
        max_length=16,
        long="chunk",
        stride=4,
        run=RunOptions(batch_size=8, use_cache=False),
    )
    out = tmp_path / "model"
    result = train(
        path,
        encoding=encoding,
        options=TrainOptions(cv=2),
        finetune=FinetuneOptions(epochs=2, lr=5e-4, dev_share=0.2),
        out=out,
    )
    tuned = result.finetune
    assert tuned is not None and (tuned.n_train, tuned.n_dev) == (16, 4)
    tokenizer = load_encoder(str(tiny_distilbert)).tokenizer
    for part, texts in (("train", seen["train_rows"]), ("dev", seen["dev_rows"])):
        data = seen[part]
        assert len(data) > len(texts.texts)  # windows, more than texts
        for k, text in enumerate(texts.texts):  # each text's windows, all of them, in one part
            own = [i for i, owner in enumerate(data.owner) if owner == k]
            windows = tokenizer(
                text, truncation=True, max_length=16, stride=4, return_overflowing_tokens=True
            )["input_ids"]
            assert [data.ids[i] for i in own] == windows
            # its text's label (classes 0 and 1 are label indices 0 and 1)
            assert {data.labels[i] for i in own} == {texts.labels[k]}
    assert not set(seen["train_rows"].texts) & set(seen["dev_rows"].texts)
    assert tuned.n_train_windows == len(seen["train"]) and tuned.n_dev_windows == len(seen["dev"])
    # dev accuracy is per text: a share of the 4 dev texts, not of their windows
    assert len(tuned.dev_history) == 2
    assert all(round(4 * score) == 4 * score for score in tuned.dev_history)

    model = Classifier.load(out)
    assert (model.spec.long, model.spec.stride) == ("chunk", 4)
    assert model.card["encoder"]["folder"] == "encoder"
    predicted = model.predict([t for t, _ in rows[:3]] + ["the film was good"])
    assert set(predicted.tolist()) <= {0, 1}


def test_dev_scores_of_windows_pool_each_texts_probabilities():
    from transformers import EvalPrediction

    from bertprobe.training.target import dev_scores as _dev_scores

    # text 7 (label 1): windows sure of 1, then unsure of 0 -> mean favours 1, right
    # text 3 (label 0): one window, sure of 1 -> wrong; text 5 (label 0): sure of 0 -> right
    logits = np.array([[0.0, 4.0], [0.2, 0.0], [0.0, 3.0], [3.0, 0.0], [0.1, 0.0]])
    labels = np.array([1, 1, 0, 0, 1])
    texts = np.array([7, 7, 3, 5, 7])  # the Trainer's evaluation order is its own
    windows = _dev_scores(EvalPrediction(logits, labels))
    per_text = _dev_scores(EvalPrediction(logits, (labels, texts)))
    assert per_text["accuracy"] == pytest.approx(2 / 3)
    assert windows["accuracy"] == pytest.approx(2 / 5)
    assert 2 / 3 - 1 / 3 < per_text["selection"] <= 2 / 3


def test_chunk_mode_tunes_in_a_job_folder_of_its_own(tiny_distilbert, sentiment_rows, tmp_path):
    from bertprobe.data.files import LabelledTexts
    from bertprobe.training.finetune import workdir_for

    data = LabelledTexts(
        texts=[t for t, _ in sentiment_rows],
        labels=[y for _, y in sentiment_rows],
        source="rows",
        sha256="",
        line_numbers=list(range(len(sentiment_rows))),
    )
    folders = {
        workdir_for(
            tmp_path, data, data, EncoderOptions(str(tiny_distilbert), **more), FinetuneOptions()
        )
        for more in ({}, {"long": "chunk"}, {"long": "chunk", "stride": 4})
    }
    assert len(folders) == 3


# --- label sets (several labels per text) ----------------------------------------------------

EARLY = ("the film", "this movie", "the acting", "the plot", "the ending")
CLASSES = ["positive", "early"]  # not sorted: the head's outputs follow the order given


def _label_set(text: str, sentiment: int) -> tuple[str, ...]:
    """``positive`` (the sentiment word) and ``early`` (one of the first five subjects)."""
    early = text.rsplit(" was ", 1)[0] in EARLY
    return tuple(name for name, on in (("early", early), ("positive", sentiment == 1)) if on)


def _label_sets(rows, source="label sets"):
    from bertprobe.data.files import LabelledTexts

    return LabelledTexts(
        texts=[t for t, _ in rows],
        labels=[_label_set(t, y) for t, y in rows],
        source=source,
        sha256="",
        line_numbers=list(range(len(rows))),
    )


def _watch_the_trainer(monkeypatch) -> dict:
    """The Trainer each call builds, and the datasets it was given."""
    import transformers

    seen: dict = {}
    init = transformers.Trainer.__init__

    def see(self, *args, **kwargs):
        seen.update(trainer=self, train=kwargs["train_dataset"], dev=kwargs["eval_dataset"])
        init(self, *args, **kwargs)

    monkeypatch.setattr(transformers.Trainer, "__init__", see)
    return seen


def test_label_sets_split_into_dev_by_text_with_a_seeded_shuffle(sentiment_rows):
    from bertprobe.core.errors import BadInputError
    from bertprobe.training.target import LABEL_SETS

    def split_dev(data, options, dev=None):
        return LABEL_SETS.split_dev(data, options, dev, CLASSES)

    data = _label_sets(sentiment_rows)
    options = FinetuneOptions(dev_share=0.2, seed=3)
    train_rows, dev_rows = split_dev(data, options)
    assert (len(train_rows), len(dev_rows)) == (80, 20)
    assert sorted(train_rows.texts + dev_rows.texts) == sorted(data.texts)  # each text whole
    assert not set(train_rows.texts) & set(dev_rows.texts)
    for part in (train_rows, dev_rows):  # every text keeps its own label set
        assert all(
            y == _label_set(t, 1 if "positive" in y else 0)
            for t, y in zip(part.texts, part.labels, strict=True)
        )
    assert split_dev(data, options)[1].texts == dev_rows.texts  # seeded
    other = split_dev(data, FinetuneOptions(dev_share=0.2, seed=4))[1]
    assert other.texts != dev_rows.texts
    # a dev file is checked against the classes; one-label rows are not label sets
    dev = _label_sets(sentiment_rows[:4], "dev.tsv")
    dev.labels[0] = ("positive", "late")
    with pytest.raises(BadInputError, match=r"dev.tsv: dev labels the training data lacks: late"):
        split_dev(data, options, dev)
    plain = _label_sets(sentiment_rows)
    plain.labels[:] = [y for _, y in sentiment_rows]
    with pytest.raises(BadInputError, match="is not a label set"):
        split_dev(plain, options)
    with pytest.raises(BadInputError, match="too few for a dev share"):
        split_dev(_label_sets(sentiment_rows[:1]), options)


def test_multi_label_fine_tuning_learns_with_sigmoid_outputs_and_keeps_the_best_dev_f1(
    tiny_distilbert, sentiment_rows, tmp_path, monkeypatch
):
    from bertprobe.training.finetune import finetune
    from bertprobe.training.target import LABEL_SETS

    seen = _watch_the_trainer(monkeypatch)
    data = _label_sets(sentiment_rows)
    options = FinetuneOptions(epochs=3, lr=5e-4)
    train_rows, dev_rows = LABEL_SETS.split_dev(data, options, None, CLASSES)
    encoding = EncoderOptions(str(tiny_distilbert), pooling="mean", run=RunOptions(batch_size=8))
    tuned = finetune(
        train_rows,
        dev_rows,
        encoding=encoding,
        options=options,
        workdir=tmp_path / "job",
        target=LABEL_SETS,
        classes=CLASSES,
    )
    assert tuned.label_sets and (tuned.n_train, tuned.n_dev) == (90, 10)
    # one sigmoid output per label, in the order given, trained on 0/1 rows
    model = seen["trainer"].model
    assert model.loss == "binary-cross-entropy" and model.head.out_features == 2
    k = train_rows.texts.index("the film was good")
    assert seen["train"].labels[k] == [1.0, 1.0]
    k = train_rows.texts.index("the score was awful")
    assert seen["train"].labels[k] == [0.0, 0.0]
    # the loss falls; a dev F1 and an exact-match accuracy per epoch; the best F1 is kept
    losses = [e["loss"] for e in seen["trainer"].state.log_history if "loss" in e]
    assert len(losses) >= 3 and losses[-1] < losses[0]
    assert tuned.dev_epochs == [1, 2, 3] and len(tuned.dev_history) == 3
    assert tuned.dev_f1_history is not None and len(tuned.dev_f1_history) == 3
    assert tuned.dev_f1_micro == max(tuned.dev_f1_history) > 0
    assert tuned.dev_f1_history[tuned.best_epoch - 1] == tuned.dev_f1_micro
    assert tuned.dev_accuracy == tuned.dev_history[tuned.best_epoch - 1]
    assert all(round(10 * a) == pytest.approx(10 * a) for a in tuned.dev_history)  # per text
    # the record beside the tuned encoder says so, and a second call reads it
    record = json.loads((tmp_path / "job" / "finetuned.json").read_text())
    assert record["dev_f1_history"] == tuned.dev_f1_history
    again = finetune(
        train_rows,
        dev_rows,
        encoding=encoding,
        options=options,
        workdir=tmp_path / "job",
        target=LABEL_SETS,
        classes=CLASSES,
    )
    assert again.label_sets and again.dev_f1_history == tuned.dev_f1_history


def test_label_sets_without_classes_are_refused(tiny_distilbert, sentiment_rows, tmp_path):
    from bertprobe.core.errors import BadInputError
    from bertprobe.training.finetune import finetune

    data = _label_sets(sentiment_rows)
    with pytest.raises(BadInputError, match="the labels are label sets; tune with the label-set"):
        finetune(
            data, data, encoding=EncoderOptions(str(tiny_distilbert)), workdir=tmp_path / "job"
        )
    assert not (tmp_path / "job").exists()


def test_multi_label_fine_tuning_on_windows_gives_each_window_its_texts_label_set(
    tiny_distilbert, long_rows_tsv, tmp_path, monkeypatch
):
    from bertprobe.data.files import LabelledTexts
    from bertprobe.encoders.encoder import load_encoder
    from bertprobe.training.finetune import finetune
    from bertprobe.training.target import LABEL_SETS

    _, rows = long_rows_tsv
    # label sets by the first sentence's subject and the review's sentiment
    data = LabelledTexts(
        texts=[t for t, _ in rows],
        labels=[_label_set(t.split(" . ")[0], y) for t, y in rows],
        source="reviews",
        sha256="",
        line_numbers=list(range(len(rows))),
    )
    assert {len(y) for y in data.labels or []} == {0, 1, 2}
    seen = _watch_the_trainer(monkeypatch)
    options = FinetuneOptions(epochs=2, lr=5e-4, dev_share=0.2)
    train_rows, dev_rows = LABEL_SETS.split_dev(data, options, None, CLASSES)
    encoding = EncoderOptions(
        str(tiny_distilbert),
        pooling="mean",
        max_length=16,
        long="chunk",
        stride=4,
        run=RunOptions(batch_size=8),
    )
    tuned = finetune(
        train_rows,
        dev_rows,
        encoding=encoding,
        options=options,
        workdir=tmp_path / "job",
        target=LABEL_SETS,
        classes=CLASSES,
    )
    assert (tuned.n_train, tuned.n_dev) == (16, 4) and tuned.label_sets
    tokenizer = load_encoder(str(tiny_distilbert)).tokenizer
    for part, texts in (("train", train_rows), ("dev", dev_rows)):
        windows = seen[part]
        assert len(windows) > len(texts.texts)
        for k, text in enumerate(texts.texts):
            own = [i for i, owner in enumerate(windows.owner) if owner == k]
            assert [windows.ids[i] for i in own] == tokenizer(
                text, truncation=True, max_length=16, stride=4, return_overflowing_tokens=True
            )["input_ids"]
            expected = [float(name in (texts.labels or [])[k]) for name in CLASSES]
            assert all(windows.labels[i] == expected for i in own)
    assert tuned.n_dev_windows == len(seen["dev"]) > tuned.n_dev
    # exact match per text: a share of the 4 dev texts, not of their windows
    assert all(round(4 * a) == pytest.approx(4 * a) for a in tuned.dev_history)


def test_dev_scores_of_label_sets_pool_each_texts_window_probabilities():
    from transformers import EvalPrediction

    from bertprobe.training.target import dev_set_scores as _dev_set_scores

    # text 7 truly (1, 0): windows (sure 1, sure 0) and (unsure 0, unsure 1): mean -> (1, 0)
    # text 3 truly (0, 1): one window, (1, 1) -> one false positive
    logits = np.array([[4.0, -4.0], [-0.2, 0.2], [3.0, 3.0]])
    labels = np.array([[1.0, 0.0], [1.0, 0.0], [0.0, 1.0]])
    texts = np.array([7, 7, 3])
    per_text = _dev_set_scores(EvalPrediction(logits, (labels, texts)))
    windows = _dev_set_scores(EvalPrediction(logits, labels))
    # texts: tp 2, fp 1, fn 0 -> F1 4/5; windows: tp 2, fp 2, fn 1 -> 4/7
    assert per_text["f1_micro"] == pytest.approx(4 / 5) and per_text["accuracy"] == 0.5
    assert windows["f1_micro"] == pytest.approx(4 / 7) and windows["accuracy"] == pytest.approx(
        1 / 3
    )
    assert 4 / 5 - 1 / (4 + 2) ** 2 < per_text["selection"] < 4 / 5  # 4 cells, 2 positives
    sure = _dev_set_scores(EvalPrediction(10 * logits[[0, 2]], labels[[0, 2]]))
    unsure = _dev_set_scores(EvalPrediction(logits[[0, 2]] / 10, labels[[0, 2]]))
    assert sure["f1_micro"] == unsure["f1_micro"]  # the same decisions, at 0.5
    assert sure["bce"] > unsure["bce"] and unsure["selection"] > sure["selection"]


@given(
    shape=st.tuples(st.integers(1, 12), st.integers(1, 4)),
    data=st.data(),
)
def test_the_epoch_kept_has_the_best_dev_micro_f1_and_bce_only_breaks_ties(shape, data):
    from transformers import EvalPrediction

    from bertprobe.training.target import dev_set_scores as _dev_set_scores

    cells = st.lists(st.floats(-20, 20), min_size=shape[1], max_size=shape[1])
    flags = st.lists(st.integers(0, 1), min_size=shape[1], max_size=shape[1])
    rows = st.lists(cells, min_size=shape[0], max_size=shape[0])
    truth = st.lists(flags, min_size=shape[0], max_size=shape[0])
    Y = np.array(data.draw(truth), dtype=float)
    a, b = (_dev_set_scores(EvalPrediction(np.array(data.draw(rows)), Y)) for _ in range(2))
    assert a["f1_micro"] - 1 / (Y.size + Y.sum()) ** 2 < a["selection"] <= a["f1_micro"]
    if a["f1_micro"] != b["f1_micro"]:
        assert (a["selection"] > b["selection"]) == (a["f1_micro"] > b["f1_micro"])


def test_multi_label_jobs_tune_in_folders_of_their_own(tiny_distilbert, sentiment_rows, tmp_path):
    from bertprobe.training.finetune import workdir_for
    from bertprobe.training.target import LABEL_SETS, ONE_LABEL

    data = _label_sets(sentiment_rows)
    encoding, options = EncoderOptions(str(tiny_distilbert)), FinetuneOptions()
    folders = {
        workdir_for(tmp_path, data, data, encoding, options, target, classes)
        for target, classes in ((ONE_LABEL, ()), (LABEL_SETS, CLASSES), (LABEL_SETS, CLASSES[::-1]))
    }
    assert len(folders) == 3  # single-label, and each order of the head's outputs
    assert (
        workdir_for(tmp_path, data, data, encoding, options, LABEL_SETS, CLASSES) in folders
    )  # stable


@pytest.fixture
def ml_tsv(tmp_path, sentiment_rows):
    path = tmp_path / "genres.tsv"
    path.write_text(
        "".join(f"{t}\t{'|'.join(_label_set(t, y))}\n" for t, y in sentiment_rows),
        encoding="utf-8",
    )
    return path


def test_train_fine_tunes_for_label_sets_and_the_model_predicts_them(
    tiny_distilbert, ml_tsv, sentiment_rows, tmp_path
):
    out = tmp_path / "genres"
    result = train(
        ml_tsv,
        encoding=EncoderOptions(str(tiny_distilbert), pooling="mean"),
        options=TrainOptions(multi_label=True, cv=3),
        reading=ReadOptions(label_sep="|"),
        finetune=FinetuneOptions(epochs=1, lr=5e-4),
        out=out,
    )
    tuned = result.finetune
    assert tuned is not None and tuned.label_sets and tuned.dev_f1_history is not None
    assert (tuned.n_train, tuned.n_dev, tuned.epochs_run) == (90, 10, 1)
    model = Classifier.load(out)
    assert model.card["encoder"]["folder"] == "encoder"
    assert model.card["encoder"]["fingerprint"] != resolve_encoder(str(tiny_distilbert)).fingerprint
    texts = [t for t, _ in sentiment_rows[:6]]
    predicted = model.predict(texts)
    assert len(predicted) == 6 and all(set(labels) <= set(CLASSES) for labels in predicted)
    np.testing.assert_allclose(
        model.predict_proba(texts), result.model.predict_proba(texts), atol=1e-5
    )


def test_the_card_of_a_multi_label_fine_tuning_says_so(tiny_distilbert, ml_tsv, tmp_path):
    out = tmp_path / "genres"
    train(
        ml_tsv,
        encoding=EncoderOptions(str(tiny_distilbert), pooling="mean"),
        options=TrainOptions(multi_label=True, cv=3),
        reading=ReadOptions(label_sep="|"),
        finetune=FinetuneOptions(epochs=1, lr=5e-4),
        out=out,
    )
    record = json.loads((out / "card.json").read_text())["finetune"]
    assert record["multi_label"] is True and len(record["dev_f1_history"]) == 1


def test_a_multi_label_dev_file_is_read_as_label_sets(tiny_distilbert, ml_tsv, tmp_path, capsys):
    from bertprobe.core.errors import BadInputError

    dev = tmp_path / "dev.tsv"
    dev.write_text("the film was good\tpositive|late\n", encoding="utf-8")
    with pytest.raises(BadInputError, match="dev labels the training data lacks: late"):
        train(
            ml_tsv,
            encoding=EncoderOptions(str(tiny_distilbert), pooling="mean"),
            options=TrainOptions(multi_label=True, cv=3),
            reading=ReadOptions(label_sep="|"),
            finetune=FinetuneOptions(epochs=1, dev=dev),
        )
    assert not (tmp_path / "cache" / "finetune").exists()


class _Told(TrainingCallback):
    """Records what training tells a callback; asks to stop at the ``stop_at``-th evaluation."""

    def __init__(self, stop_at: int | None = None) -> None:
        self.stages: list[str] = []
        self.evaluations: list[tuple[str, float, float]] = []
        self.logged: list[str] = []
        self.ended = None
        self.stop_at = stop_at

    def on_stage_end(self, stage, run, seconds):
        self.stages.append(stage)

    def on_tuning_log(self, tuning, step, epoch, logs):
        self.logged += [f"{tuning}/{key}" for key in logs]

    def on_tuning_evaluate(self, tuning, step, epoch, metrics):
        self.evaluations.append((tuning, epoch, metrics["eval_accuracy"]))
        return self.stop_at is not None and len(self.evaluations) >= self.stop_at

    def on_train_end(self, result):
        self.ended = result


def test_callbacks_hear_every_stage_and_epoch_and_can_stop_a_tuning(
    tiny_distilbert, sentiment_tsv, tmp_path
):
    """Each stage by name, each epoch's dev score (as the card records it), the result; a
    callback that asks to stop ends fine-tuning after that evaluation."""
    told = _Told()
    encoding = EncoderOptions(str(tiny_distilbert), pooling="mean")
    result = train(
        sentiment_tsv,
        encoding=encoding,
        options=TrainOptions(cv=3),
        finetune=FinetuneOptions(epochs=3, lr=5e-4),
        out=tmp_path / "all",
        callbacks=[told],
    )
    assert "adapt_encoder" in told.stages and "fit_head" in told.stages
    assert told.ended is result and result.out == tmp_path / "all"
    card = json.loads((tmp_path / "all" / "card.json").read_text())["finetune"]
    assert [a for _, _, a in told.evaluations] == pytest.approx(card["dev_history"])
    assert {t for t, _, _ in told.evaluations} == {"finetune"} and "finetune/loss" in told.logged
    assert card["stopped_early"] is False and len(card["loss_history"]) == 3

    stopper = _Told(stop_at=1)
    stopped = train(
        sentiment_tsv,
        encoding=encoding,
        options=TrainOptions(cv=3),
        finetune=FinetuneOptions(epochs=3, lr=5e-4, seed=1),
        callbacks=[stopper],
    )
    assert len(stopper.evaluations) == 1
    assert stopped.finetune.epochs_run == 1 and stopped.finetune.stopped_early is True


def test_patience_stops_when_the_dev_score_stalls_and_keeps_the_best_epoch(
    tiny_distilbert, sentiment_tsv, sentiment_rows, tmp_path, capsys
):
    """With the learning rate 0 after warm-up the dev score cannot move: patience 1 stops
    after the second evaluation, the first epoch kept; the report plots the curve."""
    out = tmp_path / "patient"
    argv = _tuned_cli(sentiment_tsv, tiny_distilbert, out, "--patience", "1")
    argv[argv.index("--epochs") + 1] = "6"
    argv[argv.index("--lr") + 1] = "1e-12"
    code, stdout, err = run([*argv, "--test", sentiment_tsv], capsys)
    assert code == 0, err
    card = json.loads((out / "card.json").read_text())["finetune"]
    assert card["patience"] == 1 and card["stopped_early"] is True
    assert card["epochs_run"] == 2 and card["best_epoch"] == 1
    assert "(best: epoch 1; 1 of 1 without better)" in err
    code, _, err = run(["report", sentiment_tsv, "-m", out, "--out", tmp_path / "r"], capsys)
    assert code == 0, err
    assert (tmp_path / "r" / "training_curve.png").stat().st_size > 1000
    assert "Training curve" in (tmp_path / "r" / "report.html").read_text()

    code, _, err = run([*_tuned_cli(sentiment_tsv, tiny_distilbert, out)[:1], sentiment_tsv,
                        "--encoder", tiny_distilbert, "--patience", "1"], capsys)  # fmt: skip
    assert code == 2 and "--patience" in err and "add --finetune" in err
