"""MLflow, for real: a tracking server on a free loopback port (sqlite backend, artifacts it
serves from a temporary folder), runs read back with MlflowClient, the pyfunc flavour, the
registry's aliases served and reloaded, and the failures a user meets (a server that is not
there, an alias that is not set, a server that goes away mid-run)."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import numpy as np
import pytest

mlflow = pytest.importorskip("mlflow")
pd = pytest.importorskip("pandas")

from bertprobe import Classifier, EncoderOptions, TrainOptions, train  # noqa: E402
from bertprobe.cli import main  # noqa: E402
from bertprobe.core.errors import ModelFolderError  # noqa: E402
from bertprobe.mlflow import MlflowTracker, Tracking, load_model, log_model, save_model  # noqa: E402
from bertprobe.training.callbacks import TrainingCallback  # noqa: E402
from services import cli_service, free_port  # noqa: E402

# Meant to keep these in one worker, sharing one tracking server. pytest 9 no longer reads the
# node id xdist 3.8 rewrites for its groups, so each worker may start its own (Servers, once).
pytestmark = pytest.mark.xdist_group("mlflow")

KEY = "mlflow-test-key"
TEXTS = ["the film was good", "the plot was awful", "this movie was lovely", "the cast was bad"]


def run(argv, capsys):
    with pytest.raises(SystemExit) as info:
        main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return info.value.code, out, err


@contextmanager
def tracking_server(folder: Path) -> Iterator[tuple[str, subprocess.Popen]]:
    """``mlflow server`` with a sqlite backend and served artifacts under ``folder``: its URL
    and its process."""
    folder.mkdir(parents=True, exist_ok=True)
    port = free_port()
    log = open(folder / "server.log", "wb")  # noqa: SIM115 - closed below, after the server
    server = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "mlflow",
            "server",
            "--backend-store-uri",
            f"sqlite:///{folder / 'mlflow.db'}",
            "--artifacts-destination",
            str(folder / "artifacts"),
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--workers",
            "1",
        ],  # fmt: skip
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,  # stopped with its workers below
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while True:
            assert server.poll() is None, (folder / "server.log").read_text()[-2000:]
            assert time.monotonic() < deadline, "the tracking server did not start"
            try:
                if httpx.get(url + "/health", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                time.sleep(0.25)
        yield url, server
    finally:
        stop(server)
        log.close()


def stop(server: subprocess.Popen) -> None:
    if server.poll() is None:
        os.killpg(server.pid, signal.SIGTERM)
        try:
            server.wait(timeout=5)
        except subprocess.TimeoutExpired:
            os.killpg(server.pid, signal.SIGKILL)
            server.wait()


class Servers:
    """The tracking server the tests share (a start costs 10 to 25 s), started when first
    asked for and again only if a test stopped it; every one stopped at the end."""

    def __init__(self, folder: Path) -> None:
        self.folder, self.started = folder, contextlib.ExitStack()
        self.current: tuple[str, subprocess.Popen] | None = None
        self.starts = 0

    def get(self) -> tuple[str, subprocess.Popen]:
        if self.current is None or self.current[1].poll() is not None:
            self.starts += 1
            place = self.folder / f"server-{self.starts}"
            self.current = self.started.enter_context(tracking_server(place))
        return self.current


@pytest.fixture(scope="session")
def servers(tmp_path_factory) -> Iterator[Servers]:
    # Session, not module: xdist may run another module's tests between these (same worker).
    found = Servers(tmp_path_factory.mktemp("mlflow"))
    with found.started:
        yield found


@pytest.fixture
def running(servers) -> tuple[str, subprocess.Popen]:
    """A tracking server that answers now, and its process."""
    return servers.get()


@pytest.fixture
def server(running) -> str:
    return running[0]


@pytest.fixture
def tracked_env(server, monkeypatch):
    """MLflow's own variable names the server, as a user would set it."""
    monkeypatch.setenv("MLFLOW_TRACKING_URI", server)
    monkeypatch.setenv("MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT", "true")  # the test's own runs
    mlflow.set_tracking_uri(server)
    return server


def _answers(model: Classifier) -> np.ndarray:
    return model.predict_proba(TEXTS)


def test_a_tracked_training_is_read_back_from_the_server(
    tracked_env, tiny_distilbert, sentiment_tsv, tmp_path, capsys
):
    """train --track --register --alias with fine-tuning: the card's options as parameters,
    its figures and each epoch's dev score as metrics, the tags, the report, the registered
    model, whose pyfunc answers as the folder does."""
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
            "--finetune",
            "--epochs",
            "3",
            "--patience",
            "2",
            "--out",
            out,
            "--track",
            tracked_env,
            "--experiment",
            "tracked-training",
            "--register",
            "tracked",
            "--alias",
            "champion",
            "--json",
        ],  # fmt: skip
        capsys,
    )
    assert code == 0, err
    summary = json.loads(stdout)  # MLflow printed nothing on standard output
    assert summary["mlflow_complete"] is True and summary["mlflow_registered_version"] == "1"
    card = json.loads((out / "card.json").read_text())
    client = mlflow.MlflowClient(tracked_env)
    tracked = client.get_run(summary["mlflow_run_id"])
    experiment = client.get_experiment(tracked.info.experiment_id)
    assert experiment.name == "tracked-training" and tracked.info.status == "FINISHED"

    params = tracked.data.params
    assert params["features.pooling"] == "mean"
    assert params["probe.C"] == str(card["probe"]["C"])
    assert params["finetune.epochs"] == "3" and params["finetune.patience"] == "2"
    assert params["data.train.sha256"] == card["data"]["train"]["sha256"]
    metrics = tracked.data.metrics
    assert metrics["test_accuracy"] == pytest.approx(card["metrics"]["test_accuracy"])
    assert metrics["cv_accuracy"] == pytest.approx(card["metrics"]["cv_accuracy"])
    by_c = client.get_metric_history(tracked.info.run_id, "cv_accuracy_by_C")
    assert len(by_c) == len(card["probe"]["c_grid"])
    dev = client.get_metric_history(tracked.info.run_id, "finetune/eval_accuracy")
    assert [m.value for m in sorted(dev, key=lambda m: m.step)] == pytest.approx(
        card["finetune"]["dev_history"]
    )
    assert "seconds/featurize" in metrics and "finetune/train_loss" in metrics
    tags = tracked.data.tags
    assert tags["encoder.fingerprint"] == card["encoder"]["fingerprint"]
    assert tags["encoder.base_fingerprint"] == card["encoder"]["base"]["fingerprint"]
    assert tags["bertprobe.model_id"] == card["id"]
    artifacts = {a.path for a in client.list_artifacts(tracked.info.run_id, "report")}
    assert "report/report.html" in artifacts and any(p.endswith(".png") for p in artifacts)
    assert {a.path for a in client.list_artifacts(tracked.info.run_id, "tables")} >= {
        "tables/cv_by_C.json"
    }

    version = client.get_model_version_by_alias("tracked", "champion")
    assert version.version == "1" and version.run_id == tracked.info.run_id
    pyfunc = mlflow.pyfunc.load_model("models:/tracked@champion")
    answered = pyfunc.predict(pd.DataFrame({"text": TEXTS}))
    assert list(answered.columns) == ["0", "1"]
    np.testing.assert_allclose(answered.to_numpy(), _answers(Classifier.load(out)), atol=1e-6)


def test_the_pyfunc_flavour_answers_as_the_model_and_keeps_its_checks(tiny_model_dir, tmp_path):
    """save_model / log_model / load_model: the probabilities to 1e-6 (a DataFrame, a list),
    the signature; an altered file in the saved flavour is refused when MLflow loads it."""
    model = Classifier.load(tiny_model_dir)
    saved = tmp_path / "flavour"
    save_model(model, saved)
    pyfunc = mlflow.pyfunc.load_model(str(saved))
    np.testing.assert_allclose(
        pyfunc.predict(pd.DataFrame({"text": TEXTS})).to_numpy(), _answers(model), atol=1e-6
    )
    np.testing.assert_allclose(pyfunc.predict(TEXTS).to_numpy(), _answers(model), atol=1e-6)
    assert [t.name for t in pyfunc.metadata.get_input_schema().input_types()] == ["string"]
    assert load_model(saved).card["id"] == model.card["id"]

    # a tracked run in a local folder (MLflow's file store), the model logged into it
    with MlflowTracker(Tracking(uri=str(tmp_path / "mlruns"))) as tracker:
        info = log_model(tiny_model_dir, name="model")
        again = mlflow.pyfunc.load_model(info.model_uri)
        np.testing.assert_allclose(again.predict(TEXTS).to_numpy(), _answers(model), atol=1e-6)
    assert tracker.broken is None and mlflow.active_run() is None

    probe = saved / "bertprobe" / "probe.skops"
    probe.write_bytes(probe.read_bytes() + b"\0")
    with pytest.raises(ModelFolderError, match="altered"):
        mlflow.pyfunc.load_model(str(saved))


@pytest.mark.slow
def test_a_registered_alias_is_served_predicted_and_followed_on_reload(
    tracked_env, tiny_model_dir, flipped_model_dir, tmp_path, capsys
):
    """serve / predict / evaluate from models:/NAME@champion; the alias moved to a model with
    swapped labels, POST /v1/admin/reload serves it (SIGHUP reloads the same way: see
    test_serve_ops); `mlflow models serve` answers the probabilities too."""
    client = mlflow.MlflowClient(tracked_env)
    with mlflow.start_run():
        first = log_model(tiny_model_dir, registered_model_name="served")
        second = log_model(flipped_model_dir, registered_model_name="served")
    client.set_registered_model_alias("served", "champion", first.registered_model_version)
    uri = "models:/served@champion"
    one, other = Classifier.load(tiny_model_dir), Classifier.load(flipped_model_dir)

    code, stdout, err = run(["predict", "-m", uri, *TEXTS], capsys)
    assert code == 0, err
    assert [json.loads(line)["label"] for line in stdout.splitlines()] == list(one.predict(TEXTS))
    rows = tmp_path / "rows.tsv"
    labelled = zip(TEXTS, one.predict(TEXTS), strict=True)
    rows.write_text("".join(f"{t}\t{y}\n" for t, y in labelled), encoding="utf-8")
    code, stdout, err = run(["evaluate", rows, "-m", uri, "--json"], capsys)
    assert code == 0 and json.loads(stdout)["accuracy"] == 1.0, err

    key = {"Authorization": f"Bearer {KEY}"}
    errors = tmp_path / "serve.txt"
    env = {"BERTPROBE_API_KEY": KEY, "MLFLOW_TRACKING_URI": tracked_env}

    def labels(url: str) -> list:
        answer = httpx.post(url + "/v1/predict", json={"texts": TEXTS}, headers=key, timeout=30)
        assert answer.status_code == 200, answer.text
        return [p["label"] for p in answer.json()["predictions"]]

    with cli_service(["--model", uri], errors, env=env) as (url, _):
        assert labels(url) == list(one.predict(TEXTS))
        client.set_registered_model_alias("served", "champion", second.registered_model_version)
        reloaded = httpx.post(url + "/v1/admin/reload", headers=key, timeout=120)
        assert reloaded.status_code == 200, reloaded.text
        assert reloaded.json()["model_path"] == uri
        assert labels(url) == list(other.predict(TEXTS)) != list(one.predict(TEXTS))

    port = free_port()
    path = os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", "")])
    scoring = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "mlflow",
            "models",
            "serve",
            "-m",
            uri,
            "--env-manager",
            "local",
            "--host",
            "127.0.0.1",
            "-p",
            str(port),
        ],  # fmt: skip
        env={**os.environ, "PATH": path},  # it starts uvicorn by name
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    try:
        deadline = time.monotonic() + 120
        while True:
            assert scoring.poll() is None and time.monotonic() < deadline
            try:
                if httpx.get(f"http://127.0.0.1:{port}/ping", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                time.sleep(0.25)
        body = {"dataframe_split": {"columns": ["text"], "data": [[t] for t in TEXTS]}}
        answer = httpx.post(f"http://127.0.0.1:{port}/invocations", json=body, timeout=60)
        rows = answer.json()["predictions"]
        served = np.array([[row["0"], row["1"]] for row in rows])
        np.testing.assert_allclose(served, _answers(other), atol=1e-6)  # the alias moved
    finally:
        stop(scoring)


def test_no_server_or_no_alias_is_one_line_and_exit_2(
    tracked_env, tiny_distilbert, sentiment_tsv, tmp_path, capsys
):
    nobody = f"http://127.0.0.1:{free_port()}"
    argv = ["train", sentiment_tsv, "--encoder", tiny_distilbert, "--cv", "3"]
    started = time.monotonic()
    code, _, err = run([*argv, "--out", tmp_path / "m", "--track", nobody], capsys)
    assert code == 2 and len(err.strip().splitlines()) == 1, err
    assert f"tracking URI {nobody}: nothing answers there" in err
    assert time.monotonic() - started < 60  # not MLflow's minutes of retries
    assert not (tmp_path / "m").exists()  # checked before any work

    code, _, err = run(["predict", "-m", "models:/nobody@champion", "fine"], capsys)
    assert code == 2 and len(err.strip().splitlines()) == 1, err
    assert "models:/nobody@champion" in err

    code, _, err = run([*argv, "--register", "x"], capsys)
    assert code == 2 and "--register applies to a tracked run only" in err


def test_compare_and_sweep_are_tracked_runs(
    tracked_env, tiny_distilbert, narrow_distilbert, sentiment_tsv, capsys
):
    """compare --track: the recommendation, a nested run an encoder with its score; sweep
    --track: a metric a candidate scored and the table."""
    client = mlflow.MlflowClient(tracked_env)
    encoders = f"{tiny_distilbert},{narrow_distilbert}"
    common = ["--cv", "3", "--finalists", "1", "--no-tfidf", "--track", tracked_env, "--json"]
    code, stdout, err = run(
        ["compare", sentiment_tsv, "--encoders", encoders, *common, "--experiment", "compared"],
        capsys,
    )
    assert code == 0, err
    found = json.loads(stdout)
    parent = client.get_run(found["mlflow_run_id"])
    assert parent.data.params["compare.recommended"] == found["recommended"]
    children = client.search_runs(
        [parent.info.experiment_id],
        filter_string=f"tags.mlflow.parentRunId = '{parent.info.run_id}'",
    )
    scores = {child.data.params["encoder"]: child.data.metrics["cv_score"] for child in children}
    assert scores == pytest.approx({row["encoder"]: row["cv_score"] for row in found["rows"]})

    code, stdout, err = run(
        ["sweep", sentiment_tsv, "--encoder", tiny_distilbert, *common[:-1], "--json"], capsys
    )
    assert code == 0, err
    swept = json.loads(stdout)
    metrics = client.get_run(swept["mlflow_run_id"]).data.metrics
    scored = {row["name"]: row["cv_accuracy"] for row in swept["rows"] if row["cv_accuracy"]}
    assert {k.removeprefix("sweep/"): v for k, v in metrics.items()} == pytest.approx(scored)


class _StopServer(TrainingCallback):
    """Stops the tracking server once the vectors are made: mid-run, before the folder."""

    def __init__(self, server: subprocess.Popen) -> None:
        self.server = server

    def on_stage_end(self, stage: str, run, seconds: float) -> None:
        if stage == "featurize":
            stop(self.server)


# It stops the shared server: a test after it that needs one starts another.
def test_training_keeps_its_model_folder_when_the_server_goes_away(
    running, tiny_distilbert, sentiment_rows, tmp_path, capsys
):
    """A warning line, the model saved and right, no run left active in this process."""
    url, server = running
    texts = [t for t, _ in sentiment_rows]
    data = tmp_path / "train.tsv"
    data.write_text("".join(f"{t}\t{y}\n" for t, y in sentiment_rows), encoding="utf-8")
    with MlflowTracker(Tracking(uri=url)) as tracker:
        result = train(
            data,
            test=data,
            encoding=EncoderOptions(str(tiny_distilbert), pooling="mean"),
            options=TrainOptions(cv=3),
            out=tmp_path / "model",
            callbacks=[tracker, _StopServer(server)],
        )
    assert tracker.broken is not None
    assert "warning: tracking stopped" in capsys.readouterr().err
    assert mlflow.active_run() is None
    saved = Classifier.load(tmp_path / "model")
    assert saved.card["metrics"]["test_accuracy"] == result.test_accuracy
    np.testing.assert_allclose(saved.predict_proba(texts), result.model.predict_proba(texts))
