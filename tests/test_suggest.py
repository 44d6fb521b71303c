"""suggest(): what to label next, with a model (uncertain, varied) or without (representative)."""

from __future__ import annotations

import json

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bertprobe.cli import main
from bertprobe.core.errors import BadInputError
from bertprobe.data.files import read_labelled
from bertprobe.encoders.options import EncoderOptions, RunOptions
from bertprobe.heads.decision import Decision
from bertprobe.model.classifier import Classifier
from bertprobe.model.suggest import STRATEGIES, Suggestion, suggest, typical, uncertainty
from bertprobe.training.options import TrainOptions
from conftest import write_tsv

SUBJECTS = ["the film", "this movie", "the plot", "the cast", "the music", "the story"]
WORDS = ["good", "bad", "great", "awful", "fine", "dull", "long", "odd", "lovely", "boring"]
# Texts the model has not seen: subjects and words mixed, some carrying no sentiment word.
POOL = [f"{s} was {w}" for s in SUBJECTS for w in WORDS] + [
    f"{s} was {a} and {b}" for s in SUBJECTS for a, b in [("good", "bad"), ("great", "dull")]
]


@pytest.fixture(scope="module")
def model(tiny_distilbert, sentiment_rows) -> Classifier:
    texts, labels = zip(*sentiment_rows, strict=True)
    return Classifier.fit(
        list(texts),
        list(labels),
        encoding=EncoderOptions(str(tiny_distilbert), pooling="mean"),
        options=TrainOptions(cv=3),
    )


@pytest.fixture(scope="module")
def encoding(tiny_distilbert) -> EncoderOptions:
    return EncoderOptions(str(tiny_distilbert), pooling="mean")


def run(argv, capsys):
    with pytest.raises(SystemExit) as info:
        main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return info.value.code, out, err


def test_uncertainty_scores_margins():
    two = uncertainty(np.array([[0.5, 0.5], [0.2, 0.8], [1.0, 0.0]]))
    assert two.tolist() == pytest.approx([1.0, 0.4, 0.0])
    several = uncertainty(np.array([[0.4, 0.4, 0.2], [0.7, 0.2, 0.1]]))
    assert several.tolist() == pytest.approx([1.0, 0.5])
    # Multi-label: the label nearest its threshold decides, scaled by the room on its side.
    multi = uncertainty(
        np.array([[0.2, 0.9], [0.6, 0.99]]), Decision.per_label(["a", "b"], [0.2, 0.5])
    )
    assert multi.tolist() == pytest.approx([1.0, 0.5])


def test_suggestions_are_among_the_most_uncertain(model):
    picks = suggest(POOL, n=4, model=model)
    assert all(isinstance(p, Suggestion) and p.reason == "uncertain" for p in picks)
    assert len({p.row for p in picks}) == 4
    assert all(POOL[p.row] == p.text for p in picks)
    # The same scores from predict_proba: closeness to 0.5 of the second class.
    p1 = model.predict_proba(POOL)[:, 1]
    closeness = 1 - np.abs(2 * p1 - 1)
    for pick in picks:
        assert pick.score == pytest.approx(closeness[pick.row], abs=1e-6)
    k = min(len(POOL), 10 * 4)
    kth = np.sort(closeness)[::-1][k - 1]
    assert all(p.score is not None and p.score >= kth - 1e-9 for p in picks)
    scores = [p.score for p in picks]
    assert scores == sorted(scores, reverse=True)  # most uncertain first


def test_near_duplicates_do_not_fill_the_batch(model):
    # The text the model is least sure of, in 16 spellings the (lower-casing) encoder reads
    # alike: by uncertainty alone they would fill the batch; the clustering puts them in one
    # group, so one of them is picked and the rest of the batch is other texts.
    scores = uncertainty(model.predict_proba(POOL))
    hardest = POOL[int(np.argmax(scores))]
    words = hardest.split()
    copies = [
        " ".join(w.upper() if mask >> i & 1 else w for i, w in enumerate(words))
        for mask in range(2 ** len(words))
    ]
    pool = [*copies, *POOL]
    family = set(copies)
    by_score = np.argsort(-uncertainty(model.predict_proba(pool)), kind="stable")
    assert all(pool[i] in family for i in by_score[:4])  # uncertainty alone: all copies
    picks = suggest(pool, n=4, model=model)
    assert sum(p.text in family for p in picks) == 1
    assert picks[0].text in family  # still the most uncertain first


def test_cold_start_is_representative_and_repeatable(encoding):
    picks = suggest(POOL, n=5, encoding=encoding, seed=3)
    assert len({p.text for p in picks}) == 5
    assert all(p.score is None and p.reason == "representative" for p in picks)
    assert picks == suggest(POOL, n=5, encoding=encoding, seed=3)
    # One text per cluster: with as many clusters as texts, each text is its own.
    few = POOL[:3]
    assert sorted(p.row for p in suggest(few, n=3, encoding=encoding)) == [0, 1, 2]


def test_typical_takes_the_densest_text_of_each_group_no_label_covers():
    rng = np.random.default_rng(0)
    centres = np.array([[0.0, 0.0], [10.0, 0.0], [0.0, 10.0]])
    sizes = [40, 30, 20]
    X = np.vstack(
        [c + rng.normal(scale=0.5, size=(k, 2)) for c, k in zip(centres, sizes, strict=True)]
    )
    group = np.repeat([0, 1, 2], sizes)

    def near_centre(rows):  # the densest text of a group lies near its centre
        return all(np.linalg.norm(X[r] - centres[group[r]]) < 0.5 for r in rows)

    picks = typical(X, 3)
    assert group[picks].tolist() == [0, 1, 2] and near_centre(picks)  # largest group first
    # A label in the largest group covers it: the next two groups.
    picks = typical(X, 2, labelled=np.array([[0.2, 0.1]]))
    assert group[picks].tolist() == [1, 2] and near_centre(picks)
    # Every group covered: the densest of the rest.
    assert len(typical(X, 1, labelled=centres + 0.1)) == 1


def test_typical_suggestions_skip_the_labelled_and_say_why(encoding):
    picks = suggest(POOL, n=6, encoding=encoding, labelled=POOL[:10], strategy="typical")
    assert len({p.row for p in picks}) == 6 and all(p.row >= 10 for p in picks)
    assert all(p.reason == "typical" and p.score is None for p in picks)
    assert picks == suggest(POOL, n=6, encoding=encoding, labelled=POOL[:10], strategy="typical")


def test_labelled_and_duplicate_texts_are_skipped(model, tmp_path):
    labelled = write_tsv(tmp_path / "done.tsv", [(t, 1) for t in POOL[:30]])
    pool = POOL + [f"  {POOL[40]} "]  # a duplicate after stripping: counts once
    picks = suggest(pool, n=len(POOL) - 30, model=model, labelled=labelled)
    assert {p.text for p in picks} == set(POOL[30:])
    rest = suggest(pool, n=2, model=model, labelled=POOL[:-2])
    assert {p.row for p in rest} == {len(POOL) - 2, len(POOL) - 1}
    with pytest.raises(BadInputError, match=r"^pool: 2 texts not yet labelled .*at most 2"):
        suggest(pool, n=3, model=model, labelled=POOL[:-2])


@pytest.mark.parametrize(
    ("pool", "kwargs", "words"),
    [
        (POOL, {"n": 0}, "n=0"),
        (POOL, {"n": 1, "seed": -1}, "seed=-1"),
        ([], {"n": 1}, "no texts"),
        (["one text"], {"n": 2}, "1 text not yet labelled"),
        (["one", " "], {"n": 1}, "text 1 is empty"),
        (POOL, {"n": 1, "strategy": "nope"}, "strategy='nope': choose one of uncertain, typical"),
    ],
)
def test_bad_input_is_one_line(encoding, pool, kwargs, words):
    with pytest.raises(BadInputError) as info:
        suggest(pool, encoding=encoding, **kwargs)
    assert words in str(info.value) and "\n" not in str(info.value)


def test_model_or_encoding(model, encoding):
    for kwargs in ({}, {"model": model, "encoding": encoding}):
        with pytest.raises(BadInputError, match="give a model"):
            suggest(POOL, n=1, **kwargs)


def test_a_labelled_pool_file_is_refused(encoding, tmp_path, sentiment_rows):
    path = write_tsv(tmp_path / "pool.tsv", sentiment_rows)
    with pytest.raises(BadInputError, match=r"pool.tsv holds labels in its label column"):
        suggest(path, n=2, encoding=encoding)
    # A file of texts with an empty label column (as --out writes) is a pool.
    path.write_text("".join(f"{t}\t\n" for t in POOL), encoding="utf-8")
    assert len(suggest(path, n=2, encoding=encoding)) == 2
    # A second column with a different value on every row is an id, not a label.
    path.write_text("".join(f"{t}\t{i}\n" for i, t in enumerate(POOL)), encoding="utf-8")
    assert len(suggest(path, n=2, encoding=encoding)) == 2


def test_cli_prints_and_writes_a_tsv_to_label(tiny_model_dir, tmp_path, capsys):
    pool = tmp_path / "pool.txt"
    pool.write_text("\n".join(POOL) + "\n", encoding="utf-8")
    out = tmp_path / "next" / "to_label.tsv"
    argv = ["suggest", "--pool", pool, "--n", 3, "--model", tiny_model_dir, "--out", out]
    code, stdout, err = run(argv, capsys)
    assert code in (0, None), err
    lines = stdout.splitlines()
    assert len(lines) == 3
    row, score, text = lines[0].split("\t")
    assert POOL[int(row)] == text and 0 <= float(score) <= 1
    assert "wrote 3 texts" in err
    # Filled in, the file is a training file.
    filled = out.read_text(encoding="utf-8").replace("\t\n", "\t1\n")
    out.write_text(filled, encoding="utf-8")
    read = read_labelled(out)
    assert read.texts == [line.split("\t")[2] for line in lines] and read.labels == [1, 1, 1]

    code, stdout, err = run([*argv[:7], "--json"], capsys)
    assert code in (0, None), err
    records = [json.loads(line) for line in stdout.splitlines()]
    assert [r["text"] for r in records] == [line.split("\t")[2] for line in lines]
    assert {r["reason"] for r in records} == {"uncertain"}


def test_cli_cold_start(tiny_distilbert, tmp_path, capsys):
    pool = tmp_path / "pool.txt"
    pool.write_text("\n".join(POOL) + "\n", encoding="utf-8")
    code, stdout, err = run(
        ["suggest", "--pool", pool, "--n", 2, "--encoder", tiny_distilbert, "--json"], capsys
    )
    assert code in (0, None), err
    assert [json.loads(line)["score"] for line in stdout.splitlines()] == [None, None]


@pytest.mark.parametrize(
    ("extra", "words"),
    [
        (["--n", "0", "--encoder", "minilm"], "--n 0"),
        ([], "--model DIR"),
        (["--model", "m", "--encoder", "minilm"], "not both"),
        (["--n", "99", "--encoder", "TINY"], "at most 72"),
        (["--encoder", "TINY", "--strategy", "x"], "--strategy 'x': choose one of"),
    ],
)
def test_cli_bad_input_exits_2(tiny_distilbert, tmp_path, capsys, extra, words):
    pool = tmp_path / "pool.txt"
    pool.write_text("\n".join(POOL) + "\n", encoding="utf-8")
    extra = [str(tiny_distilbert) if a == "TINY" else a for a in extra]
    code, _, err = run(["suggest", "--pool", pool, *extra], capsys)
    assert code == 2
    assert len(err.strip().splitlines()) == 1 and words in err


def test_cli_labelled_pool_names_the_flag(tiny_distilbert, sentiment_tsv, capsys):
    code, _, err = run(
        ["suggest", "--pool", sentiment_tsv, "--n", 2, "--encoder", tiny_distilbert], capsys
    )
    assert code == 2 and "pass them as --labelled" in err


@settings(
    max_examples=15,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(
    size=st.integers(min_value=1, max_value=len(POOL)),
    n=st.integers(min_value=1, max_value=12),
    done=st.integers(min_value=0, max_value=10),
    cold=st.booleans(),
    strategy=st.sampled_from(STRATEGIES),
)
def test_any_pool_gives_n_distinct_unlabelled_rows(model, encoding, size, n, done, cold, strategy):
    pool = POOL[:size]
    labelled = pool[:done]
    left = len(pool) - min(done, size)
    options = {"encoding": encoding} if cold else {"model": model}
    options["strategy"] = strategy
    if n > left:
        with pytest.raises(BadInputError, match=f"at most {left}"):
            suggest(pool, n=n, labelled=labelled, run=RunOptions(), **options)
        return
    picks = suggest(pool, n=n, labelled=labelled, **options)
    rows = [p.row for p in picks]
    assert len(rows) == n == len(set(rows))
    assert all(0 <= r < size and pool[r] == p.text for r, p in zip(rows, picks, strict=True))
    assert not {p.text for p in picks} & set(labelled)
