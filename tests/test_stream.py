"""Streamed batch prediction: predict --input FILE --output OUT, a chunk at a time, resumably."""

from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
import sys
import time
import tracemalloc
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from bertprobe import Classifier
from bertprobe.datasets import load_sst2
from bertprobe.encoders.options import RunOptions
from bertprobe.model.stream import predict_file
from test_cli import run


@pytest.fixture
def texts_file(tmp_path):
    texts = load_sst2("dev").texts[:150]
    path = tmp_path / "texts.txt"
    path.write_text("\n".join(texts) + "\n", encoding="utf-8")
    return path, texts


def _stdout_rows(model_dir, path, capsys):
    code, stdout, err = run(["predict", "--model", model_dir, "--input", path], capsys)
    assert code == 0, err
    return stdout


def test_streamed_predictions_equal_the_in_memory_ones_in_every_format(
    tiny_model_dir, texts_file, tmp_path, capsys
):
    path, texts = texts_file
    expected = _stdout_rows(tiny_model_dir, path, capsys)  # the whole file in memory, to stdout
    assert len(expected.splitlines()) == 150
    argv = ["predict", "--model", tiny_model_dir, "--input", path, "--chunk-size", "40"]

    code, _, err = run([*argv, "--output", tmp_path / "p.jsonl"], capsys)
    assert code == 0 and "wrote 150 predictions" in err
    assert (tmp_path / "p.jsonl").read_text(encoding="utf-8") == expected
    assert not (tmp_path / "p.jsonl.partial").exists()

    rows = [json.loads(line) for line in expected.splitlines()]
    code, _, _ = run([*argv, "--output", tmp_path / "p.csv"], capsys)
    table = list(csv.DictReader((tmp_path / "p.csv").open(encoding="utf-8", newline="")))
    assert code == 0 and [r["text"] for r in table] == texts
    assert [r["label"] for r in table] == [str(r["label"]) for r in rows]
    assert [float(r["p_1"]) for r in table] == [r["probabilities"]["1"] for r in rows]

    code, _, _ = run([*argv, "--output", tmp_path / "p.parquet"], capsys)
    frame = pq.read_table(tmp_path / "p.parquet").to_pydict()
    assert code == 0 and list(frame) == ["text", "label", "p_0", "p_1"]
    assert frame["text"] == texts and frame["label"] == [r["label"] for r in rows]
    assert frame["p_0"] == [r["probabilities"]["0"] for r in rows]


def test_texts_as_arguments_can_go_to_parquet(tiny_model_dir, tmp_path, capsys):
    out = tmp_path / "p.parquet"
    code, _, err = run(["predict", "--model", tiny_model_dir, "good", "bad", "-o", out], capsys)
    assert code == 0 and "wrote 2 predictions" in err
    assert pq.read_table(out).column("text").to_pylist() == ["good", "bad"]


def test_an_interrupted_run_resumes_without_recomputing_and_writes_the_same_file(
    tiny_model_dir, texts_file, tmp_path
):
    path, _ = texts_file
    model = Classifier.load(tiny_model_dir)
    run_options = RunOptions(use_cache=False)  # nothing comes from the cache: resume alone
    whole = model.predict_file(path, tmp_path / "whole.jsonl", run_options, chunk_size=32)
    out = tmp_path / "p.jsonl"

    def stop_after_two_chunks(n_done):
        if n_done >= 64:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        predict_file(
            model, path, out, run=run_options, chunk_size=32, on_chunk=stop_after_two_chunks
        )
    assert not out.exists()  # complete or absent
    assert len(list((tmp_path / "p.jsonl.partial").glob("part-*.parquet"))) == 2

    computed: list[int] = []
    stats = predict_file(model, path, out, run=run_options, chunk_size=32, on_chunk=computed.append)
    assert stats.n_resumed == 64 and whole.n_resumed == 0
    assert computed == [96, 128, 150]  # only the chunks not already stored
    assert out.read_bytes() == (tmp_path / "whole.jsonl").read_bytes()
    assert not (tmp_path / "p.jsonl.partial").exists()


def test_parts_of_another_job_are_not_reused(tiny_model_dir, texts_file, tmp_path):
    path, _ = texts_file
    model = Classifier.load(tiny_model_dir)
    out = tmp_path / "p.jsonl"

    def stop(n_done):
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        predict_file(model, path, out, chunk_size=32, on_chunk=stop)
    # Other chunking: the stored part would not line up with this run's chunks.
    stats = predict_file(model, path, out, chunk_size=50)
    assert stats.n_resumed == 0
    with pytest.raises(KeyboardInterrupt):
        predict_file(model, path, out, chunk_size=32, on_chunk=stop)
    path.write_text("a different file\nwith two texts\n", encoding="utf-8")
    stats = predict_file(model, path, out, chunk_size=32)
    assert stats.n_resumed == 0 and len(out.read_text().splitlines()) == 2


def test_a_bad_row_late_in_the_file_fails_before_any_work(tiny_model_dir, tmp_path, capsys):
    path = tmp_path / "texts.tsv"
    path.write_text("".join(f"text {i}\t1\n" for i in range(3000)) + "\t0\n", encoding="utf-8")
    out = tmp_path / "p.jsonl"
    code, _, err = run(
        ["predict", "-m", tiny_model_dir, "-i", path, "-o", out, "--chunk-size", "100"], capsys
    )
    assert code == 2 and "empty text on lines 3001" in err and "--drop-empty" in err
    assert len(err.strip().splitlines()) == 1
    assert not out.exists() and not (tmp_path / "p.jsonl.partial").exists()


def test_memory_while_predicting_does_not_grow_with_the_file(tiny_model_dir, tmp_path):
    model = Classifier.load(tiny_model_dir)
    words = load_sst2("train").texts
    peaks = {}
    for n in (1_000, 8_000):
        path = tmp_path / f"{n}.txt"
        path.write_text("\n".join(f"{words[i % 500]} {i}" for i in range(n)), encoding="utf-8")
        tracemalloc.start()
        try:
            model.predict_file(
                path, tmp_path / f"{n}.jsonl", RunOptions(batch_size=64), chunk_size=500
            )
            peaks[n] = tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()
    # Eight times the texts: the same peak, within noise (a whole-file read would be ~8x).
    assert peaks[8_000] < 1.5 * peaks[1_000], peaks


def _predict_process(model_dir: Path, path: Path, out: Path) -> subprocess.Popen:
    argv = [sys.executable, "-m", "bertprobe", "predict", "-m", model_dir, "-i", path, "-o", out]
    argv += ["--chunk-size", "2000", "--batch-size", "128", "--no-cache"]
    return subprocess.Popen(
        [str(a) for a in argv],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)},
    )


def _peak_rss_until_exit(proc: subprocess.Popen) -> int:
    """The child's own peak RSS in bytes: its VmHWM, read until it exits. (getrusage and wait4
    count the pages it shared with this process between fork and exec: the test process's size.)
    """
    peak = 0
    status = Path(f"/proc/{proc.pid}/status")
    while proc.poll() is None:
        try:
            for line in status.read_text().splitlines():
                if line.startswith("VmHWM:"):
                    peak = max(peak, int(line.split()[1]) * 1024)
        except OSError:  # it has just exited
            pass
        time.sleep(0.05)
    return peak


@pytest.mark.slow
def test_sigkill_then_rerun_equals_an_uninterrupted_run_with_flat_memory(tiny_model_dir, tmp_path):
    """The issue's test: a generated file (80k lines, 40 chunks; BERTPROBE_STREAM_LINES=200000
    for the issue's size), peak RSS under 1 GB, kill -9 mid-run, run again: the same bytes as
    an uninterrupted run. test_memory_while_predicting_does_not_grow_with_the_file measures
    the growth with the file itself."""
    n = int(os.environ.get("BERTPROBE_STREAM_LINES", "80000"))
    # Short generated lines (a few tokens each): the test is about the stream, not the encoder.
    words = sorted({w for t in load_sst2("train").texts[:300] for w in t.split()})
    path = tmp_path / "big.txt"
    lines = (f"{words[i % len(words)]} {words[(7 * i) % len(words)]} {i}" for i in range(n))
    path.write_text("\n".join(lines) + "\n", "utf-8")

    whole = tmp_path / "whole.parquet"
    proc = _predict_process(tiny_model_dir, path, whole)
    peak_rss = _peak_rss_until_exit(proc)
    assert proc.returncode == 0, proc.stderr.read() if proc.stderr else ""
    assert 0 < peak_rss < 1 << 30, peak_rss

    out = tmp_path / "p.parquet"
    proc = _predict_process(tiny_model_dir, path, out)
    parts = tmp_path / "p.parquet.partial"
    deadline = time.monotonic() + 600
    while len(list(parts.glob("part-*.parquet"))) < 3 and proc.poll() is None:
        assert time.monotonic() < deadline
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    stored = len(list(parts.glob("part-*.parquet")))
    assert 0 < stored < n // 2000 and not out.exists()

    proc = _predict_process(tiny_model_dir, path, out)
    _, err = proc.communicate(timeout=1800)
    assert proc.returncode == 0 and f"resumed after {stored * 2000:,}" in err.decode()
    assert out.read_bytes() == whole.read_bytes()
    assert pq.read_table(out).num_rows == n
