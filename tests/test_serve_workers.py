"""`bertprobe serve --workers N`: several HTTP processes on one port, answering as one service
(the right rows for every request, one /metrics, a reload reaching every worker)."""

from __future__ import annotations

import json
import signal
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor

import httpx
import numpy as np
import pytest

from bertprobe.model.classifier import load_model
from services import cli_service, metric_samples

KEY = "workers-key-0123456789"
AUTH = {"Authorization": f"Bearer {KEY}"}
pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not hasattr(signal, "SIGHUP"), reason="workers need SIGHUP, POSIX"),
]


def access_lines(errors) -> list[dict]:
    return [json.loads(x) for x in errors.read_text().splitlines() if x.startswith("{")]


def test_two_workers_answer_400_concurrent_requests_as_one_service(
    tiny_model_dir, flipped_model_dir, tmp_path
):
    model, flipped = load_model(tiny_model_dir), load_model(flipped_model_dir)
    words = ["good", "great", "awful", "boring", "lovely", "dreadful", "brilliant", "bad"]
    texts = [f"{words[i % 8]} film number {i}" for i in range(400)]
    expected = model.predict_proba(texts)
    errors = tmp_path / "stderr.txt"
    args = ["--model", str(tiny_model_dir), "--workers", "2", "--max-queue", "4096"]
    with cli_service(args, errors, env={"BERTPROBE_API_KEY": KEY}) as (url, _):
        # Both workers up before the burst: one still warming up its model takes no
        # connection, and the other then answers all 400 (seen once in CI under load).
        deadline = time.monotonic() + 120
        while len({x["worker"] for x in access_lines(errors) if x["path"] == "/healthz"}) < 2:
            assert time.monotonic() < deadline, "the second worker never answered /healthz"
            httpx.get(url + "/healthz", timeout=10)  # a new connection each time
            time.sleep(0.05)

        def ask(i: int) -> tuple[int, list[float] | str]:
            with httpx.Client(timeout=60, headers=AUTH) as client:
                answer = client.post(url + "/v1/predict", json={"texts": [texts[i]]})
            if answer.status_code != 200:
                return answer.status_code, answer.text
            probabilities = answer.json()["predictions"][0]["probabilities"]
            return 200, [probabilities[str(c)] for c in model.classes]

        with ThreadPoolExecutor(64) as pool:
            answers = list(pool.map(ask, range(400)))
        statuses = Counter(status for status, _ in answers)
        assert statuses == {200: 400}, [a for a in answers if a[0] != 200][:3]
        rows = np.array([row for _, row in answers])
        assert np.allclose(rows, expected, atol=1e-5)  # each request got its own text's row

        # One /metrics for the service: every worker's requests and texts, summed.
        samples = metric_samples(httpx.get(url + "/metrics").text)
        assert (
            samples[
                "bertprobe_requests_total",
                (("method", "POST"), ("route", "/v1/predict"), ("status", "200")),
            ]
            == 400
        )  # noqa: E501
        assert samples["bertprobe_texts_total", ()] >= 400  # and the warm-ups' texts
        predicted = [line for line in access_lines(errors) if line["path"] == "/v1/predict"]
        workers = {line["worker"] for line in predicted}
        assert len(workers) == 2, workers  # the kernel spread the connections over both
        old_model = {line["model_id"] for line in predicted}

        # A reload sent to one worker reaches every worker (each replaced, one at a time).
        reloaded = httpx.post(
            url + "/v1/admin/reload", json={"model": str(flipped_model_dir)}, headers=AUTH
        )
        assert reloaded.status_code == 200, reloaded.text
        assert reloaded.json()["model"] == flipped.id
        deadline = time.monotonic() + 240
        while True:
            seen = Counter(
                httpx.post(url + "/v1/predict", json={"texts": ["good"]}, headers=AUTH).json()[
                    "model"
                ]
                for _ in range(20)
            )
            if seen == {flipped.id: 20}:
                break
            assert time.monotonic() < deadline, f"the reload did not reach every worker: {seen}"
            time.sleep(1)
        # The new model answered from the replacements only. (Its own lines, not the last 20
        # lines: a replaced worker's last lines can reach the log after its successor's first.)
        answering = [
            line
            for line in access_lines(errors)
            if line["path"] == "/v1/predict" and line["model_id"] not in old_model
        ]
        new_workers = {line["worker"] for line in answering}
        assert answering and new_workers.isdisjoint(workers)  # answered by the replacements
        samples = metric_samples(httpx.get(url + "/metrics").text)
        assert samples["bertprobe_reloads_total", (("outcome", "ok"),)] == 1
        # Counters outlive the workers that counted them: the service's totals.
        assert (
            samples[
                "bertprobe_requests_total",
                (("method", "POST"), ("route", "/v1/predict"), ("status", "200")),
            ]
            >= 420
        )  # noqa: E501


def test_sighup_replaces_every_worker_and_a_broken_folder_is_refused(tiny_model_dir, tmp_path):
    import shutil

    folder = shutil.copytree(tiny_model_dir, tmp_path / "model")
    errors = tmp_path / "stderr.txt"
    args = ["--model", str(folder), "--workers", "2", "--no-model-process"]
    with cli_service(args, errors, env={"BERTPROBE_API_KEY": KEY}) as (url, server):
        server.send_signal(signal.SIGHUP)
        deadline = time.monotonic() + 240
        while errors.read_text().count("Application startup complete") < 4:
            assert time.monotonic() < deadline, errors.read_text()[-2000:]
            time.sleep(0.5)
        for _ in range(10):
            assert httpx.get(url + "/healthz").status_code == 200
        assert server.poll() is None
        # A folder altered on disk: the admin route refuses it, no worker restarts.
        with open(folder / "probe.skops", "ab") as probe:
            probe.write(b"\0")
        refused = httpx.post(url + "/v1/admin/reload", json={}, headers=AUTH)
        assert refused.status_code == 422
        assert "probe.skops was altered" in refused.json()["detail"]
        time.sleep(2)
        assert errors.read_text().count("Application startup complete") == 4
        assert httpx.post(url + "/v1/predict", json={"texts": ["good"]}, headers=AUTH).is_success
