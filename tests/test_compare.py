"""Which encoder (compare, bertprobe compare): two tiny encoders of different widths compared on
one-word sentiment rows; the recommendation's rule; the command's table, JSON, plot and bad
input."""

from __future__ import annotations

import json
from types import SimpleNamespace

import numpy as np
import pytest

from bertprobe import Comparison, TrainOptions, compare, load_encoder
from bertprobe.core.errors import BadInputError, EncoderNotFoundError
from bertprobe.training.compare import compare_encoders, recommend
from bertprobe.training.sweep import run_sweep
from test_cli import run

OPTIONS = TrainOptions(Cs="coarse", cv=3, poolings=("cls", "mean"), n_jobs=1)


@pytest.fixture(scope="module")
def compared(tiny_distilbert, narrow_distilbert, sentiment_rows) -> Comparison:
    texts = [t for t, _ in sentiment_rows]
    labels = [y for _, y in sentiment_rows]
    return compare_encoders(
        texts, labels, [str(tiny_distilbert), str(narrow_distilbert)], options=OPTIONS
    )


def test_each_encoder_gets_its_sweep_speed_and_size(
    compared, tiny_distilbert, narrow_distilbert, sentiment_rows
):
    wide, narrow = compared.rows
    assert (wide.hidden_size, wide.layers) == (64, 2)
    assert (narrow.hidden_size, narrow.layers) == (32, 3)
    assert wide.parameters > narrow.parameters > 0
    assert wide.size_mb > narrow.size_mb > 0
    assert wide.texts_per_second > 0 and narrow.texts_per_second > 0
    # Each row's sweep is the sweep --auto runs on that encoder alone: same candidates, same
    # best, same CV score.
    texts = [t for t, _ in sentiment_rows]
    labels = [y for _, y in sentiment_rows]
    for row, folder in ((wide, tiny_distilbert), (narrow, narrow_distilbert)):
        alone = run_sweep(
            texts, labels, load_encoder(str(folder)), poolings=("cls", "mean"), cv=3,
            Cs=OPTIONS.grid, n_jobs=1, tfidf=False,
        )  # fmt: skip
        assert [r.name for r in row.sweep.rows] == [r.name for r in alone.rows]
        assert row.best.name == alone.best.name
        assert row.score == pytest.approx(alone.best.cv_accuracy)
        assert row.score > 0.8  # one word decides the label: every encoder finds it
    assert compared.tfidf_cv_accuracy is not None and compared.tfidf_cv_accuracy > 0.8


def test_the_recommendation_is_one_of_them_with_reasons(compared):
    names = [r.encoder for r in compared.rows]
    assert compared.recommended in names
    assert compared.reasons[0].startswith(f"{compared.recommended}: CV accuracy")
    other = next(n for n in names if n != compared.recommended)
    assert any(r.startswith(other) or other in r for r in compared.reasons[1:])
    assert "TF-IDF" in compared.reasons[-1]
    record = json.loads(json.dumps(compared.to_dict()))
    assert record["recommended"] == compared.recommended
    assert [r["hidden_size"] for r in record["rows"]] == [64, 32]
    assert all(r["seconds_per_1000"] > 0 and r["sweep"]["best"] for r in record["rows"])


def _row(name: str, score: float, seconds: float, spread: float = 0.005):
    best = SimpleNamespace(name="layer 1 mean")
    return SimpleNamespace(
        encoder=name, score=score, spread=spread, seconds_per_1000=seconds, best=best
    )


@pytest.mark.parametrize(
    "small_score, expected",
    [
        (0.85, "big"),  # 6 points lower: beyond the noise, the better one is worth its cost
        (0.905, "small"),  # half a point lower: within the noise, the faster one
    ],
)
def test_a_faster_encoder_is_recommended_only_within_the_noise(small_score, expected):
    rows = [_row("small", small_score, 3.0), _row("big", 0.91, 30.0)]
    chosen, reasons = recommend(rows, floor=0.80)
    assert chosen == expected
    if expected == "small":
        assert "within the folds' noise" in reasons[1] and "10.0x the time" in reasons[1]
    else:
        assert "points lower" in reasons[1] and "10.0x faster" in reasons[1]
    assert "TF-IDF + logistic regression alone: 80.00% (above it" in reasons[-1]


def test_compare_reads_a_file_and_refuses_bad_encoder_lists(
    tiny_distilbert, sentiment_tsv, tmp_path
):
    found = compare(sentiment_tsv, [str(tiny_distilbert)], options=OPTIONS, tfidf=False)
    assert found.recommended == str(tiny_distilbert) and found.tfidf_cv_accuracy is None
    assert found.n_train == len(sentiment_tsv.read_text(encoding="utf-8").splitlines())
    with pytest.raises(BadInputError, match="names one twice"):
        compare(sentiment_tsv, [str(tiny_distilbert)] * 2, options=OPTIONS)
    with pytest.raises(BadInputError, match="at least one encoder"):
        compare(sentiment_tsv, [" "], options=OPTIONS)
    with pytest.raises(EncoderNotFoundError):
        compare(sentiment_tsv, [str(tmp_path / "no-such-encoder")], options=OPTIONS)


def test_compare_command_prints_a_table_json_and_a_plot(
    tiny_distilbert, narrow_distilbert, sentiment_tsv, tmp_path, capsys
):
    encoders = f"{tiny_distilbert},{narrow_distilbert}"
    common = ["--cv", "3", "--poolings", "mean", "--jobs", "1"]
    code, out, err = run(["compare", sentiment_tsv, "--encoders", encoders, *common], capsys)
    assert code == 0, err
    assert "recommend " in out and "TF-IDF + LR (no encoder)" in out
    table = [
        line
        for line in out.splitlines()
        if "distilbert" in line and not line.startswith(("  - ", "recommend"))
    ]
    assert len(table) == 2
    plot = tmp_path / "plots" / "encoders.png"
    code, out, err = run(
        ["compare", sentiment_tsv, "--encoders", encoders, *common, "--json", "--plot", plot],
        capsys,
    )
    record = json.loads(out)
    assert code == 0 and record["plot"] == str(plot)
    assert plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert {r["encoder"] for r in record["rows"]} == {str(tiny_distilbert), str(narrow_distilbert)}
    assert np.isfinite([r["cv_score"] for r in record["rows"]]).all()


@pytest.mark.parametrize(
    "encoders, words",
    [
        ("", "at least one encoder"),
        ("{tiny},{tiny}", "names one twice"),
        ("{tiny},{tmp}/missing", "is not a model folder"),
    ],
)
def test_compare_bad_input_is_one_line_and_exit_2(
    tiny_distilbert, sentiment_tsv, tmp_path, capsys, encoders, words
):
    encoders = encoders.replace("{tiny}", str(tiny_distilbert)).replace("{tmp}", str(tmp_path))
    code, out, err = run(["compare", sentiment_tsv, "--encoders", encoders, "--cv", "3"], capsys)
    assert code == 2 and out == ""
    assert len(err.strip().splitlines()) == 1 and words in err, err


def test_compare_reads_long_texts_in_windows(tiny_distilbert, narrow_distilbert, long_rows_tsv):
    """The encoding options apply to every encoder: long texts read in windows of 16 tokens."""
    from bertprobe import EncoderOptions

    path, _ = long_rows_tsv
    found = compare(
        path,
        [str(tiny_distilbert), str(narrow_distilbert)],
        encoding=EncoderOptions(max_length=16, long="chunk"),
        options=TrainOptions(Cs="coarse", cv=3, poolings=("mean",), n_jobs=1),
        tfidf=False,
    )
    for row in found.rows:
        assert row.sweep.embed.n_windows > row.sweep.embed.n_computed  # several per text
        assert row.score > 0.5


# --- train --auto --encoders: the encoder chosen first, then everything else on it -------------


@pytest.mark.parametrize("out_of_core", [False, True], ids=["in-memory", "out-of-core"])
def test_auto_chooses_among_encoders_then_trains_on_the_one_recommended(
    out_of_core, tiny_distilbert, narrow_distilbert, sentiment_tsv, tmp_path
):
    from bertprobe import EncoderOptions, load_model, train

    names = (str(tiny_distilbert), str(narrow_distilbert))
    options = TrainOptions(
        Cs="coarse", cv=3, poolings=("mean",), n_jobs=1, auto=True, encoders=",".join(names),
        out_of_core=out_of_core,
    )  # fmt: skip
    assert options.encoders == names
    result = train(
        sentiment_tsv, encoding=EncoderOptions("minilm"), options=options, out=tmp_path / "m"
    )
    chosen = result.comparison.recommended
    assert chosen in names and result.model.encoder.name == chosen
    assert result.sweep.encoder == chosen  # the features' sweep ran on the chosen encoder
    record = result.to_dict()["compare"]
    assert record["recommended"] == chosen and len(record["rows"]) == 2
    assert "sweep" not in record["rows"][0]  # the card keeps the summary, not every sweep
    card = load_model(tmp_path / "m").card
    assert card["compare"]["recommended"] == chosen
    assert load_model(tmp_path / "m").predict(["the film was wonderful"])[0] == 1


def test_encoders_need_auto_and_say_so(tiny_distilbert, narrow_distilbert, sentiment_tsv, capsys):
    with pytest.raises(BadInputError, match="is part of auto=True's choice"):
        TrainOptions(encoders="minilm,other")
    encoders = f"{tiny_distilbert},{narrow_distilbert}"
    code, out, err = run(["train", sentiment_tsv, "--encoders", encoders, "--cv", "3"], capsys)
    assert code == 2 and out == "" and len(err.strip().splitlines()) == 1
    assert "--encoders" in err and "--auto" in err, err
    code, out, err = run(
        ["train", sentiment_tsv, "--auto", "--encoders", encoders, "--cv", "3",
         "--poolings", "mean", "--jobs", "1"],
        capsys,
    )  # fmt: skip
    assert code == 0, err
    assert "encoders  2 compared on" in out and "chose " in out
