"""The Ray engine on a real local Ray instance (no mocks): embed and predict --ray against the
single-process commands, a worker killed mid-run, and bad input failing before any task."""

from __future__ import annotations

import json
import os
import signal
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from bertprobe import Classifier
from bertprobe.core.ray_cluster import local_runtime_env
from bertprobe.datasets import load_sst2
from bertprobe.encoders.features import embed_file, parquet_job
from bertprobe.encoders.options import EncoderOptions, RunOptions
from bertprobe.ray_engine import RayOptions, input_files, ray_embed
from test_cli import run

ray = pytest.importorskip("ray")
# One local Ray at a time: every Ray test runs in one xdist worker (make test runs two).
pytestmark = pytest.mark.xdist_group("ray")


@pytest.fixture(scope="module")
def local_ray():
    """A local Ray instance of 2 CPUs for the module; the engine joins it (already running)."""
    ray.init(num_cpus=2, include_dashboard=False, runtime_env=local_runtime_env())
    yield
    ray.shutdown()


@pytest.fixture(scope="module")
def four_files(tmp_path_factory) -> tuple[Path, list[str]]:
    """360 SST-2 sentences over four files of four formats, and all the texts in order (each
    file several batches of the runs below, so that actors share files)."""
    texts = load_sst2("train").texts[:360]
    folder = tmp_path_factory.mktemp("ray") / "inputs"
    folder.mkdir()
    a, b, c, d = texts[:120], texts[120:210], texts[210:300], texts[300:]
    (folder / "a.txt").write_text("\n".join(a) + "\n", encoding="utf-8")
    (folder / "b.tsv").write_text("".join(f"{t}\t1\n" for t in b), encoding="utf-8")
    (folder / "c.jsonl").write_text(
        "".join(json.dumps({"id": i, "text": t}) + "\n" for i, t in enumerate(c)),
        encoding="utf-8",
    )
    pq.write_table(pa.table({"text": d, "label": [0] * len(d)}), folder / "d.parquet")
    return folder, texts


def _single_process_file(texts: list[str], tmp_path: Path) -> Path:
    path = tmp_path / "all.txt"
    path.write_text("\n".join(texts) + "\n", encoding="utf-8")
    return path


MINILM_MEAN = EncoderOptions("minilm", pooling="mean", run=RunOptions(use_cache=False))


@pytest.fixture(scope="module")
def minilm_vectors(four_files, tmp_path_factory) -> np.ndarray:
    """The four files' texts embedded by MiniLM in one process: what Ray's runs must give."""
    _, texts = four_files
    folder = tmp_path_factory.mktemp("one-process")
    out = folder / "expected.npy"
    embed_file(_single_process_file(texts, folder), out, "minilm", MINILM_MEAN.spec)
    return np.load(out)


def test_inputs_are_a_file_a_folder_or_a_glob(four_files):
    folder, _ = four_files
    names = ["a.txt", "b.tsv", "c.jsonl", "d.parquet"]
    assert [p.name for p in input_files(folder)] == names
    assert [p.name for p in input_files(str(folder / "*.t*"))] == ["a.txt", "b.tsv"]
    assert input_files(folder / "c.jsonl") == [folder / "c.jsonl"]


def test_work_items_cover_every_row_once_in_whole_batches(four_files):
    """One large file is split so every actor gets work; each run of rows reads back exactly
    the texts the single-process reader gives for it."""
    from bertprobe.data.files import ReadOptions
    from bertprobe.ray_engine import _check_inputs, _ranges, _read_range

    folder, texts = four_files
    checked = _check_inputs(input_files(folder), ReadOptions(), 16)
    assert checked.counts == [120, 90, 90, 60] and checked.n_rows == 360
    items = _ranges(checked, actors=2, batch_rows=16)
    assert len(items) > len(checked.files)  # the files are split between the actors
    assert all(
        (item["stop"] - item["start"]) % 16 == 0 or item["stop"] in checked.counts for item in items
    )
    read = [
        text
        for item in items
        for rows in _read_range(item["source"], item["start"], item["stop"], ReadOptions(), 16)
        for text in rows["text"]
    ]
    assert read == texts


@pytest.mark.slow
def test_ray_embed_equals_single_process_embed(
    local_ray, four_files, minilm_vectors, tmp_path, capsys
):
    folder, _ = four_files
    expected = minilm_vectors

    code, stdout, err = run(
        [
            "embed",
            folder,
            "--encoder",
            "minilm",
            "--pooling",
            "mean",
            "--no-cache",
            "--out",
            tmp_path / "X.npy",
            "--ray",
            "local",
            "--chunk-size",
            "32",
            "--json",
        ],
        capsys,
    )
    assert code == 0, err
    assert json.loads(stdout)["n"] == 360 and json.loads(stdout)["files"] == 4
    np.testing.assert_allclose(np.load(tmp_path / "X.npy"), expected, atol=1e-5)

    # A folder: Parquet shards whose source and row put every row back in input order.
    stats = ray_embed(
        str(folder / "*"), tmp_path / "shards", encoding=MINILM_MEAN, ray=RayOptions(batch_rows=32)
    )
    shards = pq.read_table(tmp_path / "shards").to_pydict()
    order = sorted(range(len(shards["row"])), key=lambda i: (shards["file"][i], shards["row"][i]))
    keys = [(Path(shards["source"][i]).name, shards["row"][i]) for i in order]
    assert len(set(keys)) == len(keys) == stats.n_texts == 360  # every row once
    assert keys[120] == ("b.tsv", 0) and keys[-1] == ("d.parquet", 59)
    vectors = np.asarray([shards["vector"][i] for i in order], dtype=np.float32)
    np.testing.assert_allclose(vectors, expected, atol=1e-5)


def test_train_out_of_core_from_features_written_by_ray(
    local_ray, tiny_distilbert, sentiment_tsv, tmp_path, capsys
):
    encoder = ["--encoder", tiny_distilbert, "--pooling", "mean", "--no-cache"]
    out = tmp_path / "X.parquet"
    on_ray = ["--ray", "local", "--actors", "1"]
    code, _, err = run(["embed", sentiment_tsv, *encoder, "--out", out, *on_ray], capsys)
    assert code == 0, err
    assert [s["rows"] for s in parquet_job(out)["sources"]] == [100]
    train = ["train", sentiment_tsv, *encoder, "--out-of-core"]
    code, _, err = run([*train, "--features", out, "--out", tmp_path / "m1"], capsys)
    assert code == 0, err
    code, _, err = run([*train, "--out", tmp_path / "m2"], capsys)
    assert code == 0, err
    texts = [line.split("\t")[0] for line in sentiment_tsv.read_text().splitlines()]
    from_ray = Classifier.load(tmp_path / "m1").predict_proba(texts)
    embedded_here = Classifier.load(tmp_path / "m2").predict_proba(texts)
    np.testing.assert_allclose(from_ray, embedded_here, atol=1e-4)


@pytest.mark.slow
def test_ray_predict_equals_single_process_predict(
    local_ray, tiny_model_dir, four_files, tmp_path, capsys
):
    folder, texts = four_files
    model = Classifier.load(tiny_model_dir)
    expected_out = tmp_path / "expected.jsonl"
    model.predict_file(_single_process_file(texts, tmp_path), expected_out)
    expected = [json.loads(line) for line in expected_out.read_text().splitlines()]
    code, _, err = run(
        ["predict", "-m", tiny_model_dir, "-i", folder, "-o", tmp_path / "p.jsonl", "--ray"]
        + ["local", "--actors", "2", "--chunk-size", "32"],
        capsys,
    )
    assert code == 0 and "wrote 360 predictions from 4 files" in err, err
    rows = [json.loads(line) for line in (tmp_path / "p.jsonl").read_text().splitlines()]
    assert [r["text"] for r in rows] == [r["text"] for r in expected]
    assert [r["label"] for r in rows] == [r["label"] for r in expected]
    for got, want in zip(rows, expected, strict=True):
        for c, p in want["probabilities"].items():
            assert abs(got["probabilities"][c] - p) <= 2e-6

    # A decision threshold decides the labels on the actors as it does in one process.
    cut = float(np.median([r["probabilities"]["1"] for r in expected]))
    model.predict_file(_single_process_file(texts, tmp_path), tmp_path / "cut.jsonl", threshold=cut)
    cut_expected = [json.loads(line)["label"] for line in (tmp_path / "cut.jsonl").open()]
    assert 0 < sum(cut_expected) < len(cut_expected)
    assert cut_expected != [r["label"] for r in expected]  # the threshold moved some labels
    code, _, err = run(
        ["predict", "-m", tiny_model_dir, "-i", folder, "-o", tmp_path / "cut.parquet"]
        + ["--ray", "local", "--actors", "1", "--chunk-size", "32", "--threshold", str(cut)],
        capsys,
    )
    assert code == 0, err
    table = pq.read_table(tmp_path / "cut.parquet")  # Parquet: the same columns as JSON Lines
    assert table.column_names == ["text", "label", "p_0", "p_1"]
    assert table.column("label").to_pylist() == cut_expected


def test_ray_labels_with_a_multi_label_model_as_one_process_does(
    local_ray, tiny_distilbert, four_files, tmp_path, capsys
):
    from bertprobe import TrainOptions

    folder, texts = four_files
    train = load_sst2("train")
    sets = [
        [name for name, on in (("positive", y == 1), ("long", len(t.split()) > 18)) if on]
        for t, y in zip(train.texts[:300], train.labels[:300], strict=True)
    ]
    model = Classifier.fit(
        train.texts[:300],
        sets,
        encoding=EncoderOptions(str(tiny_distilbert), pooling="mean"),
        options=TrainOptions(multi_label=True, cv=3, n_jobs=1),
    )
    model_dir = model.save(tmp_path / "ml")
    model.predict_file(_single_process_file(texts, tmp_path), tmp_path / "expected.jsonl")
    expected = [json.loads(line) for line in (tmp_path / "expected.jsonl").open()]
    assert {len(r["labels"]) for r in expected} >= {0, 1}  # sets of several sizes
    code, _, err = run(
        ["predict", "-m", model_dir, "-i", folder, "-o", tmp_path / "p.parquet", "--ray", "local"]
        + ["--actors", "1", "--chunk-size", "32"],
        capsys,
    )
    assert code == 0 and "wrote 360 predictions from 4 files" in err, err
    table = pq.read_table(tmp_path / "p.parquet").to_pydict()
    assert table["labels"] == [r["labels"] for r in expected]
    for i, want in enumerate(expected):
        for c, p in want["probabilities"].items():
            assert abs(table[f"p_{c}"][i] - p) <= 2e-6
    code, _, err = run(
        ["predict", "-m", model_dir, "-i", folder, "-o", tmp_path / "shards", "--ray", "local"]
        + ["--actors", "1", "--chunk-size", "32"],
        capsys,
    )
    assert code == 0, err
    shards = pq.read_table(tmp_path / "shards").to_pydict()
    order = sorted(range(len(shards["row"])), key=lambda i: (shards["file"][i], shards["row"][i]))
    assert [list(shards["labels"][i]) for i in order] == [r["labels"] for r in expected]


def _map_workers() -> list[int]:
    """Ray's actor processes of the engine (their title names the callable class)."""
    pids = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                cmdline = (entry / "cmdline").read_bytes()
            except OSError:
                continue
            if b"MapWorker" in cmdline and b"_Worker" in cmdline:
                pids.append(int(entry.name))
    return pids


@pytest.mark.slow
def test_a_worker_killed_mid_run_costs_no_row(local_ray, four_files, minilm_vectors, tmp_path):
    folder, texts = four_files
    killed: list[tuple[int, int]] = []

    def kill_one_worker(n_done: int) -> None:
        workers = _map_workers()
        if not killed and workers and n_done < len(texts):
            os.kill(workers[0], signal.SIGKILL)
            killed.append((workers[0], n_done))

    stats = ray_embed(
        folder,
        tmp_path / "X.npy",
        encoding=MINILM_MEAN,
        ray=RayOptions(actors=2, batch_rows=16),
        on_batch=kill_one_worker,
    )
    assert killed and killed[0][1] < 360, killed  # a worker died with rows still to do
    assert stats.n_texts == 360
    np.testing.assert_allclose(np.load(tmp_path / "X.npy"), minilm_vectors, atol=1e-5)


def test_bad_input_under_ray_fails_before_any_task_with_the_usual_line(
    tiny_model_dir, four_files, tmp_path, capsys
):
    import shutil

    folder = shutil.copytree(four_files[0], tmp_path / "inputs")  # one file is spoilt below
    out = tmp_path / "p.jsonl"
    base = ["predict", "-m", tiny_model_dir, "-o", out, "--ray", "local"]
    code, _, err = run([*base, "-i", tmp_path / "missing"], capsys)
    assert code == 2 and "missing: no such file, folder or pattern" in err
    code, _, err = run([*base, "-i", tmp_path / "nothing-*.txt"], capsys)
    assert code == 2 and "no file matches this pattern" in err

    (folder / "c.jsonl").write_text('{"text": "fine"}\n{"text": ""}\n', encoding="utf-8")
    code, _, err = run([*base, "-i", folder], capsys)
    assert code == 2 and err.count("\n") == 1
    assert f"{folder / 'c.jsonl'}: empty text on lines 2" in err and "--drop-empty" in err

    tampered = tmp_path / "tampered"
    tampered.mkdir()
    for f in Path(tiny_model_dir).iterdir():
        (tampered / f.name).write_bytes(f.read_bytes())
    card = json.loads((tampered / "card.json").read_text())
    card["features"]["pooling"] = "max"
    (tampered / "card.json").write_text(json.dumps(card))
    code, _, plain = run(["predict", "-m", tampered, "good"], capsys)
    code_ray, _, err = run(
        ["predict", "-m", tampered, "-i", folder, "-o", out, "--ray", "local"], capsys
    )
    assert code == code_ray == 2 and err == plain and "restore it or retrain" in err
    assert not out.exists()


def test_ray_flags_need_ray_and_ray_needs_its_extra(tiny_model_dir, tmp_path, capsys, monkeypatch):
    texts = tmp_path / "t.txt"
    texts.write_text("good\n", encoding="utf-8")
    argv = ["predict", "-m", tiny_model_dir, "-i", texts, "-o", tmp_path / "p.jsonl"]
    code, _, err = run([*argv, "--actors", "2"], capsys)
    assert code == 2 and "--actors and --actor-cpus apply to --ray only" in err
    code, _, err = run(["predict", "-m", tiny_model_dir, "good", "--ray", "local"], capsys)
    assert code == 2 and "--ray labels files: give --input" in err
    monkeypatch.setitem(__import__("sys").modules, "ray", None)
    code, _, err = run([*argv, "--ray", "local"], capsys)
    assert code == 2 and "bertprobe[ray] is not installed" in err and "pip install" in err
