"""The CLI end to end on the tiny DistilBERT, and every kind of bad input."""

from __future__ import annotations

import csv
import io
import json
import shutil
import subprocess
import sys

import numpy as np
import pytest

from bertprobe.cli import main


def run(argv, capsys, stdin: str | None = None, monkeypatch=None):
    if stdin is not None:
        monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(stdin.encode())))
    with pytest.raises(SystemExit) as info:
        main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return info.value.code, out, err


@pytest.fixture
def trained_model(tiny_distilbert, sentiment_tsv, tmp_path, capsys):
    out = tmp_path / "model"
    code, stdout, err = run(
        [
            "train",
            sentiment_tsv,
            "--test",
            sentiment_tsv,
            "--encoder",
            tiny_distilbert,
            "--pooling",
            "mean",
            "--cv",
            "3",
            "--out",
            out,
            "--json",
        ],
        capsys,
    )
    assert code == 0, err
    return out, json.loads(stdout)


def test_train_json_has_the_documented_fields(trained_model):
    out, result = trained_model
    for key in (
        "cv_accuracy",
        "test_accuracy",
        "C",
        "n_train",
        "n_test",
        "encoder",
        "pooling",
        "layer",
        "embed_seconds",
        "fit_seconds",
    ):
        assert key in result
    assert result["n_train"] == result["n_test"] == 100
    assert result["test_accuracy"] > 0.9  # evaluated on its own training data here
    assert result["layer"] == -1 and result["pooling"] == "mean"
    assert (out / "card.json").is_file() and (out / "probe.skops").is_file()


def test_evaluate_agrees_with_train(trained_model, sentiment_tsv, capsys):
    out, trained = trained_model
    code, stdout, _ = run(["evaluate", "--model", out, sentiment_tsv, "--json"], capsys)
    assert code == 0
    result = json.loads(stdout)
    assert result["accuracy"] == pytest.approx(trained["test_accuracy"])
    assert np.asarray(result["confusion_matrix"]).sum() == 100
    assert set(result["per_class"]) == {"0", "1"}
    code, stdout, _ = run(["evaluate", "--model", out, sentiment_tsv], capsys)
    assert code == 0 and "accuracy" in stdout and "precision" in stdout


def test_predict_from_arguments_stdin_files_and_to_csv(
    trained_model, tmp_path, capsys, monkeypatch
):
    out, _ = trained_model
    code, stdout, _ = run(
        ["predict", "--model", out, "the film was great", "the plot was awful"], capsys
    )
    assert code == 0
    rows = [json.loads(line) for line in stdout.splitlines()]
    assert [r["text"] for r in rows] == ["the film was great", "the plot was awful"]
    assert all(set(r["probabilities"]) == {"0", "1"} for r in rows)
    assert all(abs(sum(r["probabilities"].values()) - 1) < 1e-5 for r in rows)
    assert all(str(r["label"]) == max(r["probabilities"], key=r["probabilities"].get) for r in rows)

    code, stdout, _ = run(
        ["predict", "--model", out, "-"],
        capsys,
        stdin="one text\nanother, with a comma\n",
        monkeypatch=monkeypatch,
    )
    assert code == 0 and len(stdout.splitlines()) == 2

    texts = tmp_path / "texts.txt"
    texts.write_text("first\nsecond\nthird\n", encoding="utf-8")
    target = tmp_path / "predictions.csv"
    code, _, err = run(["predict", "--model", out, "--input", texts, "--output", target], capsys)
    assert code == 0 and "wrote 3 predictions" in err
    table = list(csv.DictReader(target.open(encoding="utf-8")))
    assert [r["text"] for r in table] == ["first", "second", "third"]
    assert set(table[0]) == {"text", "label", "p_0", "p_1"}


def test_embed_writes_vectors_in_input_order(tiny_distilbert, sentiment_tsv, tmp_path, capsys):
    target = tmp_path / "feats.npy"
    code, stdout, _ = run(
        [
            "embed",
            sentiment_tsv,
            "--encoder",
            tiny_distilbert,
            "--pooling",
            "max",
            "--layer",
            "0,-1",
            "--out",
            target,
            "--json",
        ],
        capsys,
    )
    assert code == 0
    assert json.loads(stdout)["n"] == 100
    X = np.load(target)
    assert X.shape == (100, 128)
    code, stdout, _ = run(
        [
            "embed",
            sentiment_tsv,
            "--encoder",
            tiny_distilbert,
            "--pooling",
            "max",
            "--layer",
            "0,-1",
            "--out",
            target,
            "--json",
        ],
        capsys,
    )
    assert json.loads(stdout)["n_cached"] == 100
    assert np.array_equal(np.load(target), X)


BAD_INPUTS = {
    "missing file": (["train", "{tmp}/nope.tsv"], "no such file"),
    "empty file": (["train", "{empty}"], "is empty"),
    "unknown column": (["train", "{header}", "--text-col", "review"], "no column 'review'"),
    "empty texts": (["train", "{blank_text}"], "empty text on lines 2, 4"),
    "missing labels": (["train", "{no_label}"], "missing label on lines 3"),
    "single class": (["train", "{one_class}"], "one class only"),
    "rare class": (["train", "{rare}"], "too few examples of class 2"),
    "undecodable": (["train", "{latin1}"], "line 2 is not valid UTF-8"),
    "unknown encoder": (
        ["train", "{good}", "--encoder", "distilbert-base-uncased"],
        "--encoder minilm",
    ),
    "not a model folder": (
        ["evaluate", "--model", "{tmp}", "{good}"],
        "not a bertprobe model folder",
    ),
    "bad layer": (
        ["train", "{good}", "--encoder", "{tiny}", "--layer", "9"],
        "layer 9 does not exist",
    ),
    "bad pooling": (["train", "{good}", "--pooling", "sum"], "unknown pooling 'sum'"),
    "bad c grid": (["train", "{good}", "--c-grid", "a,b"], "--c-grid"),
    "no texts to predict": (["predict", "--model", "{tmp}"], "not a bertprobe model folder"),
    "precomputed vectors in memory": (
        ["train", "{good}", "--features", "{tmp}/x.parquet"],
        "--features (precomputed training vectors) is for --out-of-core training",
    ),
    "embed to wrong suffix": (["embed", "{good}", "--out", "{tmp}/x.csv"], "name the file"),
    "serve a folder that is not a model": (
        ["serve", "--model", "{tmp}"],
        "not a bertprobe model folder",
    ),
    "test labels of another kind": (
        ["train", "{good}", "--test", "{words}", "--encoder", "{tiny}"],
        "none of its labels (bad, good) is one of",
    ),
    "train --out an existing file": (
        ["train", "{good}", "--out", "{good}"],
        "is a file, and a folder is written there",
    ),
    "train --out under a file": (
        ["train", "{good}", "--out", "{good}/model"],
        "is a file, so nothing can be written under it",
    ),
    "embed --out a folder": (
        ["embed", "{good}", "--out", "{folder}"],
        "is a folder; give the path of a file",
    ),
    "predict --output a folder": (
        ["predict", "--model", "{model}", "hi", "--output", "{tmp}"],
        "is a folder; give the path of a file",
    ),
    "report --out an existing file": (
        ["report", "--model", "{model}", "{good}", "--out", "{good}"],
        "is a file, and a folder is written there",
    ),
    "device without a GPU": (
        ["train", "{good}", "--encoder", "{tiny}", "--device", "cuda"],
        "sees no CUDA GPU",
    ),
    "not a device": (
        ["embed", "{good}", "--encoder", "{tiny}", "--out", "{tmp}/x.npy", "--device", "tpu"],
        "device 'tpu' is not one bertprobe runs on",
    ),
    "file name too long": (["train", "x" * 300], "File name too long"),
}


@pytest.mark.parametrize("case", sorted(BAD_INPUTS))
def test_bad_input_is_one_line_and_exit_2(
    case, tmp_path, tiny_distilbert, tiny_model_dir, sentiment_rows, capsys
):
    files = {
        "empty": "",
        "header": "sentence\tlabel\nfine\t1\nbad\t0\n",
        "blank_text": "good\t1\n \t0\nfine\t1\n\t0\n",
        "no_label": "good\t1\nbad\t0\nfine\t\n",
        "one_class": "good\t1\nfine\t1\n",
        "rare": "".join(f"t{i}\t{i % 2}\n" for i in range(20)) + "odd\t2\n",
        "good": "".join(f"{t}\t{y}\n" for t, y in sentiment_rows),
        "words": "".join(f"{t}\t{'good' if y else 'bad'}\n" for t, y in sentiment_rows),
    }
    paths = {name: tmp_path / f"{name}.tsv" for name in files}
    for name, text in files.items():
        paths[name].write_text(text, encoding="utf-8")
    paths["latin1"] = tmp_path / "latin1.tsv"
    paths["latin1"].write_bytes("fine\t1\ncaf\u00e9\t0\n".encode("latin-1"))
    argv_template, expected = BAD_INPUTS[case]
    (tmp_path / "folder.npy").mkdir()
    argv = [
        a.format(
            tmp=tmp_path,
            tiny=tiny_distilbert,
            model=tiny_model_dir,
            folder=tmp_path / "folder.npy",
            **paths,
        )
        for a in argv_template
    ]
    code, stdout, err = run(argv, capsys)
    assert code == 2
    assert err.startswith("bertprobe: error: ") and err.count("\n") == 1, err
    assert expected in err
    assert "Traceback" not in err and stdout == ""


def test_interrupt_says_how_to_resume(monkeypatch, sentiment_tsv, tiny_distilbert, capsys):
    import bertprobe.training.pipeline

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(bertprobe.training.pipeline, "embed", interrupted)
    code, _, err = run(["train", sentiment_tsv, "--encoder", tiny_distilbert], capsys)
    assert code == 130
    assert "run the same command again to resume" in err


def test_console_script_reports_errors_without_traceback(tmp_path):
    exe = shutil.which("bertprobe", path=str(__import__("pathlib").Path(sys.executable).parent))
    assert exe is not None, "the bertprobe console script is not installed"
    proc = subprocess.run(
        [exe, "train", str(tmp_path / "missing.tsv")], capture_output=True, text=True, timeout=120
    )
    assert proc.returncode == 2
    assert (
        proc.stderr.strip() == f"bertprobe: error: {tmp_path / 'missing.tsv'}: no such file; "
        "check the path"
    )
    help_text = subprocess.run([exe, "--help"], capture_output=True, text=True, timeout=120)
    assert help_text.returncode == 0
    for command in ("train", "evaluate", "predict", "embed"):
        assert command in help_text.stdout


USAGE_ERRORS = {
    "unknown option": (["predict", "--model", "x", "--nosuch"], "No such option: --nosuch"),
    "missing argument": (["sweep"], "Missing argument"),
    "extra argument": (["evaluate", "--model", "m", "a.tsv", "b.tsv"], "unexpected extra"),
    "unknown command": (["trian"], "No such command 'trian'"),
    "not a number": (["train", "x.tsv", "--cv", "five"], "'--cv'"),
    "jobs 0": (["train", "x.tsv", "--jobs", "0"], "0 processes cannot run anything"),
    "too few folds": (["train", "x.tsv", "--cv", "1"], "'--cv'"),
    "batch size 0": (["embed", "x.tsv", "--out", "x.npy", "--batch-size", "0"], "'--batch-size'"),
    "port past 65535": (["serve", "--model", "m", "--port", "70000"], "'--port'"),
    "negative wait": (["serve", "--model", "m", "--max-wait-ms", "-1"], "'--max-wait-ms'"),
    "flag with a value": (["train", "x.tsv", "--json=yes"], "does not take a value"),
}


@pytest.mark.parametrize("case", sorted(USAGE_ERRORS))
def test_usage_errors_print_usage_and_one_error_line_exit_2(case):
    """Through the installed console script: the CLI library's usage message, one error line,
    exit 2, and no traceback, whatever typer or click release is installed."""
    argv, expected = USAGE_ERRORS[case]
    proc = subprocess.run([_console_script(), *argv], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2, proc.stderr
    # click prints no usage line for an option given a value it does not take
    assert proc.stderr.startswith("Usage: bertprobe") or case == "flag with a value"
    errors = [line for line in proc.stderr.splitlines() if line.startswith("Error: ")]
    assert len(errors) == 1 and expected in errors[0], proc.stderr
    assert "Traceback" not in proc.stderr + proc.stdout


def _console_script() -> str:
    from pathlib import Path

    exe = shutil.which("bertprobe", path=str(Path(sys.executable).parent))
    assert exe is not None, "the bertprobe console script is not installed"
    return exe


def test_a_taken_port_is_one_line_and_exit_2(tiny_model_dir, capsys):
    import socket

    with socket.create_server(("127.0.0.1", 0)) as taken:
        port = taken.getsockname()[1]
        code, stdout, err = run(["serve", "--model", tiny_model_dir, "--port", port], capsys)
    assert code == 2
    assert (
        err.startswith("bertprobe: error: cannot listen on 127.0.0.1:") and err.count("\n") == 1
    ), err
    assert "Traceback" not in err and "INFO" not in err


def test_evaluate_matches_labels_by_text_and_counts_unseen_ones(
    trained_model, tmp_path, sentiment_rows, capsys
):
    """A file whose labels are "0"/"1" as JSON strings is the same labels as the model's 0/1;
    a label the model never saw is reported, and counts as an error, not a crash."""
    out, trained = trained_model
    as_strings = tmp_path / "strings.jsonl"
    as_strings.write_text(
        "".join(json.dumps({"text": t, "label": str(y)}) + "\n" for t, y in sentiment_rows),
        encoding="utf-8",
    )
    code, stdout, _ = run(["evaluate", "--model", out, as_strings, "--json"], capsys)
    assert code == 0
    assert json.loads(stdout)["accuracy"] == pytest.approx(trained["test_accuracy"])

    with_unseen = tmp_path / "unseen.tsv"
    with_unseen.write_text(
        "".join(f"{t}\t{y}\n" for t, y in sentiment_rows[:10]) + "so-so film\tneutral\n",
        encoding="utf-8",
    )
    code, stdout, err = run(["evaluate", "--model", out, with_unseen, "--json"], capsys)
    assert code == 0 and "labels the model never saw: neutral" in err
    result = json.loads(stdout)
    assert result["labels"] == ["0", "1", "neutral"]
    assert result["per_class"]["neutral"]["support"] == 1
    assert result["per_class"]["neutral"]["recall"] == 0
    assert result["accuracy"] <= 10 / 11


def test_outputs_are_checked_before_any_work(
    sentiment_tsv, tiny_distilbert, tmp_path, monkeypatch, capsys
):
    """train --out pointing at a file fails before the encoder is even loaded."""
    import bertprobe.encoders.options

    def must_not_run(*args, **kwargs):
        raise AssertionError("work started before --out was checked")

    monkeypatch.setattr(bertprobe.encoders.options, "load_encoder", must_not_run)
    code, _, err = run(
        ["train", sentiment_tsv, "--encoder", tiny_distilbert, "--out", sentiment_tsv], capsys
    )
    assert code == 2 and "is a file, and a folder is written there" in err


def test_predict_refuses_a_card_edited_in_a_decisive_field(tiny_model_dir, tmp_path, capsys):
    model = tmp_path / "model"
    shutil.copytree(tiny_model_dir, model)
    card = json.loads((model / "card.json").read_text())
    card["features"]["pooling"] = "cls"  # the hand edit that used to answer from wrong features
    (model / "card.json").write_text(json.dumps(card, indent=2))
    code, stdout, err = run(["predict", "--model", model, "the film was great"], capsys)
    assert code == 2 and stdout == ""
    assert err == (
        f"bertprobe: error: {model / 'card.json'} was edited in a field that decides predictions "
        "(features.pooling); restore it or retrain\n"
    )


def test_version_prints_the_package_version():
    from bertprobe import __version__

    proc = subprocess.run(
        [_console_script(), "--version"], capture_output=True, text=True, timeout=120
    )
    assert proc.returncode == 0 and proc.stdout.strip() == f"bertprobe {__version__}"


def test_library_errors_name_parameters_and_the_cli_names_its_flags(tmp_path, capsys):
    from bertprobe import BadInputError, ReadOptions

    path = tmp_path / "two.tsv"
    path.write_text("good\t1\nbad\t0\n", encoding="utf-8")
    with pytest.raises(BadInputError, match="label_col=5 is out of range"):
        ReadOptions(label_col=5).read_labelled(path)
    code, _, err = run(["train", path, "--label-col", "5"], capsys)
    assert code == 2 and f"{path}: --label-col 5 is out of range" in err
    with pytest.raises(BadInputError, match=r"^Cs='0.1,x' is not"):
        from bertprobe import TrainOptions

        TrainOptions(Cs="0.1,x")
    code, _, err = run(["train", path, "--c-grid", "0.1,x"], capsys)
    assert code == 2 and "bertprobe: error: --c-grid '0.1,x' is not" in err
