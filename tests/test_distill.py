"""Distillation: a student encoder taught by a saved teacher model, then the usual probe."""

from __future__ import annotations

import json
import signal

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bertprobe import (
    Classifier,
    DistillOptions,
    EncoderOptions,
    FinetuneOptions,
    RunOptions,
    TrainOptions,
    train,
)
from bertprobe.cli import main
from bertprobe.core.errors import BadInputError
from bertprobe.data.files import LabelledTexts
from bertprobe.model.persist import CARD_FILE
from bertprobe.training import distill as distill_module
from bertprobe.training.augment import augment_texts
from bertprobe.training.distill import teacher_probabilities
from bertprobe.training.finetune import FinetuneInterrupted
from bertprobe.training.target import LABEL_SETS, ONE_LABEL
from conftest import label_set, write_tsv


def run(argv, capsys):
    with pytest.raises(SystemExit) as info:
        main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return info.value.code, out, err


def _student(encoder, **run):
    return EncoderOptions(str(encoder), pooling="mean", run=RunOptions(batch_size=8, **run))


QUICK = FinetuneOptions(epochs=2, lr=5e-4)


class CountingTeacher:
    """A teacher that counts the texts it is asked about (and can fail on a call)."""

    def __init__(self, model: Classifier, fail_on_call: int | None = None) -> None:
        self.model, self.card, self.calls, self.texts = model, model.card, 0, 0
        self.fail_on_call = fail_on_call

    classes = property(lambda self: self.model.classes)
    target = property(lambda self: self.model.target)
    decision = property(lambda self: self.model.decision)

    def predict_proba(self, texts, run=None):
        self.calls += 1
        if self.calls == self.fail_on_call:
            raise KeyboardInterrupt
        self.texts += len(texts)
        return self.model.predict_proba(texts, run or RunOptions())


def test_a_student_from_texts_alone_decides_as_its_teacher(
    flipped_model_dir, narrow_distilbert, sentiment_rows
):
    """The teacher's labels are every gold label swapped: a student taught by it (and its
    decisions as labels) agrees with it, and so with none of the gold labels."""
    texts = [t for t, _ in sentiment_rows]
    teacher = Classifier.load(flipped_model_dir)
    student = Classifier.distill(
        teacher,
        texts,
        student=_student(narrow_distilbert),
        options=DistillOptions(teacher=teacher, gold_weight=0, tuning=QUICK),
        train_options=TrainOptions(cv=3),
    )
    assert "(distilled)" in student.encoder.name
    assert student.agreement(teacher, texts) >= 0.9  # chance: 0.5
    gold = np.array([y for _, y in sentiment_rows])
    assert np.mean(student.predict(texts) == gold) <= 0.1


def test_the_card_names_the_teacher_and_evaluate_shows_agreement(
    tiny_model_dir, narrow_distilbert, sentiment_tsv, tmp_path, capsys
):
    out = tmp_path / "student"
    code, stdout, err = run(
        ["train", sentiment_tsv, "--test", sentiment_tsv, "--encoder", narrow_distilbert,
         "--pooling", "mean", "--cv", "3", "--distill", tiny_model_dir, "--augment", "2",
         "--epochs", "2", "--lr", "5e-4", "--out", out, "--json"],
        capsys,
    )  # fmt: skip
    assert code == 0, err
    summary = json.loads(stdout)
    card = json.loads((out / CARD_FILE).read_text())
    teacher = Classifier.load(tiny_model_dir)
    record = card["distill"]
    assert record["teacher"]["id"] == teacher.id and record["augment"] == 2
    assert record["n_taught"] == record["n_train"] > record["n_augmented"] > 0
    assert card["metrics"]["teacher_test_agreement"] == record["teacher_test_agreement"]
    assert summary["teacher_test_agreement"] == record["teacher_test_agreement"]

    code, stdout, err = run(
        ["evaluate", sentiment_tsv, "-m", out, "--teacher", tiny_model_dir, "--json"], capsys
    )
    assert code == 0, err
    texts = [line.split("\t")[0] for line in sentiment_tsv.read_text().splitlines()]
    student = Classifier.load(out)
    assert json.loads(stdout)["teacher_agreement"] == pytest.approx(
        student.agreement(teacher, texts)
    )
    # The same agreement the training run measured on that (same) test file.
    assert json.loads(stdout)["teacher_agreement"] == pytest.approx(
        record["teacher_test_agreement"]
    )
    code, stdout, _ = run(
        ["evaluate", sentiment_tsv, "-m", out, "--teacher", tiny_model_dir], capsys
    )
    assert code == 0 and "teacher" in stdout and "decides as it on" in stdout


def test_the_teachers_probabilities_are_computed_once(tiny_model_dir, narrow_distilbert, tmp_path):
    """A second student of the same teacher on the same texts reads the teacher's
    probabilities from the cache; the teacher is not asked again."""
    texts = [f"text number {i} was good" for i in range(30)]
    teacher = CountingTeacher(Classifier.load(tiny_model_dir))
    first, cached = teacher_probabilities(teacher, texts, cache_dir=tmp_path)
    assert not cached and teacher.texts == 30
    again, cached = teacher_probabilities(teacher, texts, cache_dir=tmp_path)
    assert cached and teacher.texts == 30
    np.testing.assert_array_equal(first, again)
    np.testing.assert_allclose(first, teacher.model.predict_proba(texts), atol=1e-6)
    # Other texts, or another backend: asked again.
    teacher_probabilities(teacher, texts[:10], cache_dir=tmp_path)
    assert teacher.texts == 40


def test_an_interrupted_teacher_pass_keeps_its_finished_parts(
    tiny_model_dir, tmp_path, monkeypatch
):
    monkeypatch.setattr(distill_module, "TEACHER_PART", 8)
    texts = [f"text number {i} was bad" for i in range(30)]  # parts of 8, 8, 8, 6
    teacher = CountingTeacher(Classifier.load(tiny_model_dir), fail_on_call=3)
    with pytest.raises(KeyboardInterrupt):
        teacher_probabilities(teacher, texts, cache_dir=tmp_path)
    assert teacher.texts == 16  # two parts done
    teacher.fail_on_call = None
    proba, cached = teacher_probabilities(teacher, texts, cache_dir=tmp_path)
    assert not cached and teacher.texts == 30  # only the parts left
    np.testing.assert_allclose(proba, teacher.model.predict_proba(texts), atol=1e-6)
    assert [p.name for p in (tmp_path / "teacher").iterdir()] == [
        p.name for p in (tmp_path / "teacher").glob("*.npy") if ".part" not in p.name
    ]


def test_a_second_student_does_not_pay_the_teacher_again(
    tiny_model_dir, narrow_distilbert, sentiment_tsv, tmp_path
):
    teacher = CountingTeacher(Classifier.load(tiny_model_dir))
    options = DistillOptions(teacher=teacher, augment=1, tuning=QUICK)
    encoding = _student(narrow_distilbert)
    first = train(sentiment_tsv, encoding=encoding, options=TrainOptions(cv=3), distill=options,
                  out=tmp_path / "one")  # fmt: skip
    asked = teacher.texts
    assert asked == first.finetune.n_taught and first.finetune.teacher_seconds > 0
    second = train(sentiment_tsv, encoding=encoding, options=TrainOptions(cv=3), distill=options,
                   out=tmp_path / "two")  # fmt: skip
    assert teacher.texts == asked and second.finetune.teacher_seconds == 0
    texts = ["the film was good", "the plot was awful"]
    np.testing.assert_allclose(
        second.model.predict_proba(texts), first.model.predict_proba(texts), atol=1e-4
    )


def test_a_resumed_distillation_equals_an_uninterrupted_one(
    tiny_model_dir, narrow_distilbert, sentiment_tsv, tmp_path, monkeypatch
):
    import bertprobe.training._tuning

    teacher = Classifier.load(tiny_model_dir)
    options = DistillOptions(teacher=teacher, augment=1, tuning=QUICK)
    texts = ["the film was good", "the plot was awful", "this movie was lovely"]

    def student(cache):
        return train(
            sentiment_tsv,
            encoding=_student(narrow_distilbert, cache_dir=tmp_path / cache),
            options=TrainOptions(cv=3),
            distill=options,
        )

    whole = student("whole").model.predict_proba(texts)
    ending = bertprobe.training._tuning.EpochBars.on_step_end

    def press_ctrl_c_at_step_5(self, args, state, control, **kwargs):
        ending(self, args, state, control, **kwargs)
        if state.global_step == 5:
            signal.raise_signal(signal.SIGINT)

    with monkeypatch.context() as patched:
        patched.setattr(bertprobe.training._tuning.EpochBars, "on_step_end", press_ctrl_c_at_step_5)
        with pytest.raises(FinetuneInterrupted, match="same command resumes"):
            student("resumed")
    resumed = student("resumed")
    assert resumed.finetune.resumed_from_step == 6
    assert resumed.finetune.teacher_seconds == 0  # the teacher's labels were kept too
    np.testing.assert_allclose(resumed.model.predict_proba(texts), whole, atol=1e-4)


def test_a_label_set_teacher_teaches_a_label_set_student(
    tiny_distilbert, narrow_distilbert, sentiment_rows, tmp_path
):
    rows = [(t, label_set(t, y)) for t, y in sentiment_rows]
    data = write_tsv(tmp_path / "sets.tsv", rows)
    from bertprobe import ReadOptions

    reading = ReadOptions(label_sep="|")
    options = TrainOptions(cv=3, multi_label=True)
    teacher = train(data, encoding=EncoderOptions(str(tiny_distilbert), pooling="mean"),
                    options=options, reading=reading, out=tmp_path / "teacher").model  # fmt: skip
    student = train(data, test=data, encoding=_student(narrow_distilbert), options=options,
                    reading=reading, distill=DistillOptions(teacher=teacher, tuning=QUICK),
                    out=tmp_path / "student")  # fmt: skip
    texts = [t for t, _ in rows]
    assert student.model.target.label_sets
    assert student.model.agreement(teacher, texts) >= 0.8  # chance: about 0.25
    assert student.finetune.teacher_test_agreement == pytest.approx(
        student.model.agreement(teacher, texts)
    )


def test_a_teacher_of_another_kind_or_other_labels_is_one_line(
    tiny_model_dir, narrow_distilbert, sentiment_rows, tmp_path, capsys
):
    sets = write_tsv(tmp_path / "sets.tsv", [(t, label_set(t, y)) for t, y in sentiment_rows])
    base = ["--encoder", narrow_distilbert, "--pooling", "mean", "--cv", "3"]
    code, _, err = run(["train", sets, "--multi-label", "--label-sep", "|", *base,
                        "--distill", tiny_model_dir], capsys)  # fmt: skip
    assert code == 2 and "teacher predicts one label a text" in err and "Traceback" not in err
    other = write_tsv(tmp_path / "other.tsv", [(t, y + 5) for t, y in sentiment_rows])
    code, _, err = run(["train", other, *base, "--distill", tiny_model_dir], capsys)
    assert code == 2 and "5, 6 are not among the teacher's classes" in err
    code, _, err = run(["train", other, *base, "--distill", tmp_path / "nothing-here"], capsys)
    assert code == 2 and "nothing-here" in err and "Traceback" not in err
    code, _, err = run(["train", other, *base, "--augment", "2"], capsys)
    assert code == 2 and "--augment applies to --distill only" in err
    code, _, err = run(["train", other, *base, "--temperature", "2"], capsys)
    assert code == 2 and "--temperature applies to --distill only" in err


def test_an_unsaved_teacher_is_refused(sentiment_rows, tiny_distilbert, narrow_distilbert):
    texts, labels = [t for t, _ in sentiment_rows], [y for _, y in sentiment_rows]
    unsaved = Classifier.fit(texts, labels, encoding=EncoderOptions(str(tiny_distilbert)),
                             options=TrainOptions(cv=3))  # fmt: skip
    with pytest.raises(BadInputError, match="not a saved model"):
        Classifier.distill(unsaved, texts, labels, student=_student(narrow_distilbert))


@pytest.mark.parametrize(
    ("field", "value"), [("augment", -1), ("temperature", 0), ("gold_weight", 1.5)]
)
def test_distill_options_are_checked_when_built(field, value):
    with pytest.raises(BadInputError, match=f"{field}="):
        DistillOptions(teacher="models/x", **{field: value})


@settings(max_examples=50, deadline=None)
@given(
    proba=st.lists(st.floats(0.001, 1), min_size=2, max_size=5),
    temperature=st.floats(0.25, 8),
)
def test_soft_targets_are_distributions_flatter_at_higher_temperature(proba, temperature):
    p = np.asarray(proba) / np.sum(proba)
    soft = ONE_LABEL.soften(p[None, :], temperature)[0]
    assert soft.sum() == pytest.approx(1) and np.all(soft > 0)
    assert np.argmax(soft) == np.argmax(p) or np.isclose(soft.max(), soft[np.argmax(p)])
    assert np.allclose(ONE_LABEL.soften(p[None, :], 1.0)[0], p)
    entropy = lambda q: -np.sum(q * np.log(q))  # noqa: E731
    if temperature > 1:
        assert entropy(soft) >= entropy(p) - 1e-9
    sets = LABEL_SETS.soften(p[None, :], temperature)[0]  # each label on its own
    assert np.all((sets - 0.5) * (p - 0.5) >= -1e-12)  # the same side of 0.5
    assert np.allclose(LABEL_SETS.soften(p[None, :], 1.0)[0], np.clip(p, 1e-12, 1 - 1e-12))


def test_the_taught_texts_are_the_training_texts_their_copies_and_the_pool(narrow_distilbert):
    from bertprobe.training.distill import texts_to_teach

    train_rows = LabelledTexts.from_lists(["a b c d", "e f g h", "i j k l"], [0, 1, 0])
    dev_rows = LabelledTexts.from_lists(["m n o p"], [1])
    pool = LabelledTexts.from_lists(["q r s", "m n o p"], None)
    options = DistillOptions(teacher=None, augment=2)
    taught, n_copies = texts_to_teach(
        train_rows, dev_rows, pool, options, _student(narrow_distilbert)
    )
    assert taught[:3] == train_rows.texts and taught[-1] == "q r s"  # never the dev text
    assert n_copies == len(taught) - 4 and 0 < n_copies <= 6
    assert "[MASK]" in " ".join(taught)  # DistilBERT's mask token


@settings(max_examples=40, deadline=None)
@given(
    texts=st.lists(st.text(st.sampled_from("ab c"), min_size=1, max_size=20), max_size=8),
    copies=st.integers(0, 4),
    seed=st.integers(0, 3),
)
def test_augmented_copies_are_new_texts_and_reproducible(texts, copies, seed):
    made = augment_texts(texts, copies, seed=seed)
    assert made == augment_texts(texts, copies, seed=seed)
    assert len(made) == len(set(made)) and not set(made) & set(texts)
    assert len(made) <= copies * len(texts)
