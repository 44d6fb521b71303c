"""The service as a Ray Serve deployment, on a real local Ray instance (no mocks): two replicas
answer as the model does, a replica's process killed under a request stream, a rolling model
swap under a request stream, a reload through the HTTP API, the CLI's runner, bad input.

One Ray instance (2 CPUs) and one deployment of two replicas (half a CPU each) serve the
whole module: starting them is most of its time.
"""

from __future__ import annotations

import os
import signal
import threading
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from pathlib import Path

import httpx
import numpy as np
import pytest

from bertprobe.core.errors import BadInputError, BertprobeError
from bertprobe.core.ray_cluster import local_runtime_env
from bertprobe.model.classifier import load_model
from bertprobe.serve import BatchingConfig, ServeConfig, ServeSecurity
from services import free_port

# One local Ray (and its Serve proxy on one port) at a time: every Ray test in one xdist worker.
pytestmark = [pytest.mark.slow, pytest.mark.xdist_group("ray")]
ray = pytest.importorskip("ray")
serve = pytest.importorskip("ray.serve")

from bertprobe.serve.ray_serve import (  # noqa: E402 - after the skip: it needs ray
    RayOptions,
    deploy,
    run_on_ray,
    served_folder,
    undeploy,
)

KEY = "test-key-0123456789"
AUTH = {"Authorization": f"Bearer {KEY}"}
TEXTS = ["the film was great", "the plot was awful", "the cast was lovely"]
# Half a CPU a replica: two, and the two more a swap starts at once (surge 100%), fit in 2.
SHAPE = RayOptions(replicas=2, num_cpus=0.5, surge_percent=100)
KEYED = ServeConfig(security=ServeSecurity(api_key=KEY))


@pytest.fixture(scope="module")
def cluster():
    """A local Ray instance of 2 CPUs for the module; deploy() joins it (already running)."""
    ray.init(
        num_cpus=2, include_dashboard=False, runtime_env=local_runtime_env(), log_to_driver=False
    )
    yield
    serve.shutdown()
    ray.shutdown()


@pytest.fixture(scope="module")
def service(cluster, tiny_model_dir):
    """The tiny model on two replicas; each test leaves it serving the tiny model."""
    port = free_port()
    started = time.monotonic()
    config = replace(KEYED, batching=BatchingConfig(max_wait_ms=2))
    info = deploy(tiny_model_dir, config, replace(SHAPE, port=port))
    print(f"deployed 2 replicas in {time.monotonic() - started:.1f} s")
    yield info
    undeploy(info.name)


def port_of(deployment) -> int:
    return int(deployment.url.rsplit(":", 1)[1].strip("/"))


def expected_rows(model_dir: Path) -> tuple[str, dict[str, list[float]]]:
    model = load_model(model_dir)
    rows = model.predict_proba(TEXTS)
    return model.id, {t: row.tolist() for t, row in zip(TEXTS, rows, strict=True)}


def rows_of(body: dict) -> list[list[float]]:
    return [[p["probabilities"][c] for c in ("0", "1")] for p in body["predictions"]]


def replica_actors(app: str) -> list[str]:
    """The names of the live replica actors of ``app``'s deployment."""
    return sorted(
        actor["name"]
        for actor in ray.util.list_named_actors(all_namespaces=True)
        if actor["name"].startswith(f"SERVE_REPLICA::{app}#")
    )


def wait_for_replicas(app: str, count: int, timeout_s: float = 120) -> list[str]:
    """Wait until ``app`` runs ``count`` healthy replicas and nothing else; their names."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        status = serve.status().applications.get(app)
        if status is not None and status.status == "RUNNING":
            [deployment] = status.deployments.values()
            states = deployment.replica_states
            if states.get("RUNNING", 0) == count and sum(states.values()) == count:
                names = replica_actors(app)
                if len(names) == count:
                    return names
        time.sleep(0.25)
    raise AssertionError(f"{app} did not get back to {count} running replicas")


@dataclass
class Call:
    start: float
    end: float
    status: int  # 0: no HTTP answer (the connection failed)
    body: str
    retry_status: int | None = None  # the one retry of a failed call


class Stream:
    """Clients posting /v1/predict in a loop, each failed call recorded, then retried once
    (what a client of a service on Ray Serve should do). Each client pauses ``pause_s``
    between calls: on 2 cores a stream as fast as it is answered starves the new replicas a
    swap starts."""

    def __init__(self, url: str, clients: int = 4, pause_s: float = 0.02) -> None:
        self.url, self.clients, self.pause_s = url, clients, pause_s
        self.calls: list[Call] = []
        self.answers: list[tuple[float, dict]] = []  # (time answered, body) of every 200
        self.stop = threading.Event()
        self.pool = ThreadPoolExecutor(clients)

    def __enter__(self) -> Stream:
        self.futures = [self.pool.submit(self._loop) for _ in range(self.clients)]
        return self

    def __exit__(self, *exc) -> None:
        self.stop.set()
        for future in self.futures:
            future.result(timeout=120)
        self.pool.shutdown()

    def _post(self, client: httpx.Client) -> tuple[int, str]:
        try:
            answer = client.post(self.url + "v1/predict", json={"texts": TEXTS})
        except httpx.HTTPError as exc:
            return 0, f"{type(exc).__name__}: {exc}"
        if answer.status_code == 200:
            self.answers.append((time.monotonic(), answer.json()))
        return answer.status_code, answer.text

    def _loop(self) -> None:
        with httpx.Client(timeout=60, headers=AUTH) as client:
            while not self.stop.is_set():
                start = time.monotonic()
                status, body = self._post(client)
                call = Call(start, time.monotonic(), status, body)
                if status != 200:
                    call.retry_status, _ = self._post(client)
                self.calls.append(call)
                self.stop.wait(self.pause_s)

    def failures(self) -> list[Call]:
        return [call for call in self.calls if call.status != 200]


# --- (d) bad input: one line, before Ray is touched ------------------------------------------


def test_a_folder_that_is_not_a_model_is_one_line(tmp_path):
    (tmp_path / "notes.txt").write_text("not a model", encoding="utf-8")
    for folder in (tmp_path, tmp_path / "missing"):
        with pytest.raises(BertprobeError) as caught:  # ModelFolderError, as the CLI shows it
            # Refused before any connection.
            deploy(folder, ray=RayOptions(address="ray://127.0.0.1:1"))
        message = str(caught.value)
        assert "\n" not in message and "Traceback" not in message
        assert str(folder) in message


def test_bad_options_are_one_line(tiny_model_dir):
    cases = {
        "autoscaling between 3 and 1": {"autoscaling": (3, 1)},
        "outside the autoscaling range": {"autoscaling": (2, 4), "replicas": 5},
        "needs a GPU reserved": {"device": "cuda"},
        "replicas=0": {"replicas": 0},
        "unknown backend": {"backend": "tpu"},
    }
    serving = {"device", "backend"}  # the service's options; the rest are the replicas'
    for words, options in cases.items():
        with pytest.raises(BadInputError, match=words) as caught:
            config = ServeConfig(**{k: v for k, v in options.items() if k in serving})
            shape = {k: v for k, v in options.items() if k not in serving}
            deploy(tiny_model_dir, config, RayOptions(address="ray://127.0.0.1:1", **shape))
        assert "\n" not in str(caught.value)


# --- (a) two replicas answer as the model does -------------------------------------------------


def test_two_replicas_answer_as_the_model_does(service, tiny_model_dir):
    model_id, want = expected_rows(tiny_model_dir)
    assert len(wait_for_replicas(service.name, 2)) == 2
    with httpx.Client(base_url=service.url, timeout=60) as client:
        health = client.get("healthz")
        assert health.status_code == 200 and health.json()["status"] == "ok"
        assert client.post("v1/predict", json={"texts": TEXTS}).status_code == 401  # the key
        # Both replicas answer: Ray spreads these over them; each answer is the model's.
        for _ in range(10):
            answer = client.post("v1/predict", json={"texts": TEXTS}, headers=AUTH)
            assert answer.status_code == 200, answer.text
            body = answer.json()
            assert body["model"] == model_id and answer.headers["X-Model-ID"] == body["model_id"]
            assert np.allclose(rows_of(body), [want[t] for t in TEXTS], atol=1e-6)
        # The client's request id comes back, once (Ray's proxy keeps the one it was sent).
        traced = client.post(
            "v1/predict", json={"texts": TEXTS}, headers={**AUTH, "X-Request-ID": "trace-1"}
        )
        assert traced.headers.get_list("x-request-id") == ["trace-1"]
        # The service's own limits and errors, unchanged behind Ray's proxy.
        empty = client.post("v1/predict", json={"texts": []}, headers=AUTH)
        assert empty.status_code == 422 and "texts" in empty.json()["detail"]
        metrics = client.get("metrics")
        assert metrics.status_code == 200 and "bertprobe_requests_total" in metrics.text
        assert client.get("openapi.json").json()["paths"].keys() >= {"/v1/predict", "/healthz"}


# --- (b) a replica's process killed under a request stream -------------------------------------


def test_a_killed_replica_fails_only_its_requests_in_flight(service):
    """Ray Serve's guarantee: a request the dead replica had accepted fails (the proxy answers
    500: it does not run a request twice); a request not yet accepted by it is routed to the
    other replica; the controller starts a replacement. So every failure started before the
    kill, there are at most as many as requests could be in flight, and one retry answers."""
    [victim, survivor] = wait_for_replicas(service.name, 2)
    # A lambda travels by value: the replica cannot import this test module.
    pid = ray.get(
        ray.get_actor(victim, namespace="serve").__ray_call__.remote(lambda _: os.getpid())
    )
    with Stream(service.url) as stream:
        time.sleep(1.5)  # the stream runs on both replicas
        killed_at = time.monotonic()
        os.kill(pid, signal.SIGKILL)
        time.sleep(3)  # the stream goes on while one replica is down and being replaced
    after = [call for call in stream.calls if call.start > killed_at]
    failures = stream.failures()
    print(
        f"{len(stream.calls)} requests, {len(after)} after the kill, {len(failures)} failed: "
        f"{Counter(call.status for call in failures)} {[c.body[:160] for c in failures]}"
    )
    assert len(after) > 20, "the stream stalled after the kill"
    for call in failures:
        assert call.start <= killed_at < call.end, f"a request sent after the kill failed: {call}"
        assert call.status in (0, 500), call
        assert call.retry_status == 200, f"its retry failed too: {call}"
    assert len(failures) <= stream.clients  # one in flight a client, at most
    names = wait_for_replicas(service.name, 2)
    assert survivor in names and victim not in names  # replaced, the survivor kept


# --- (c) a rolling swap under a request stream ----------------------------------------------


def test_a_rolling_swap_fails_no_request(service, tiny_model_dir, flipped_model_dir):
    expected = dict([expected_rows(tiny_model_dir), expected_rows(flipped_model_dir)])
    old_id, new_id = (load_model(d).id for d in (tiny_model_dir, flipped_model_dir))
    before = wait_for_replicas(service.name, 2)
    port = port_of(service)
    # A lighter stream than the kill's: the new replicas start on the 2 cores it shares.
    with Stream(service.url, clients=2, pause_s=0.05) as stream:
        time.sleep(1)
        started = time.monotonic()
        swapped = deploy(flipped_model_dir, KEYED, replace(SHAPE, port=port))
        swap_seconds = time.monotonic() - started
        done_at = time.monotonic()
        time.sleep(1)
    print(f"rolling swap of 2 replicas: {swap_seconds:.1f} s, {len(stream.calls)} requests")
    assert swapped.url == service.url and swapped.folder == str(flipped_model_dir.resolve())
    assert stream.failures() == []
    seen = Counter(body["model"] for _, body in stream.answers)
    assert seen[old_id] > 0 and seen[new_id] > 0, seen
    for _, body in stream.answers:  # each answer wholly one model's
        want = expected[body["model"]]
        assert np.allclose(rows_of(body), [want[t] for t in TEXTS], atol=1e-6)
    # Once deploy() has returned, every replica serves the new model.
    late = [body["model"] for at, body in stream.answers if at > done_at + 0.5]
    assert late and set(late) == {new_id}, Counter(late)
    assert not set(before) & set(wait_for_replicas(service.name, 2))  # all replaced


# --- a reload through the HTTP API reaches every replica -------------------------------------


def test_admin_reload_swaps_every_replica(service, tiny_model_dir, flipped_model_dir):
    # To the model not served now (the tests before may have swapped it): no swap back after.
    served = served_folder(service.name)
    other = tiny_model_dir if served != str(tiny_model_dir.resolve()) else flipped_model_dir
    new_id = load_model(other).id
    before = wait_for_replicas(service.name, 2)
    with httpx.Client(base_url=service.url, timeout=60, headers=AUTH) as client:
        refused = client.post("v1/admin/reload", json={"model": str(other / "missing")})
        assert refused.status_code == 422 and "serves on" in refused.json()["detail"]
        answer = client.post("v1/admin/reload", json={"model": str(other)})
        assert answer.status_code == 200, answer.text
        assert answer.json()["model"] == new_id
        # The answer comes once the rolling update has started; it ends when every replica
        # has been replaced.
        deadline = time.monotonic() + 120
        while set(before) & set(replica_actors(service.name)) and time.monotonic() < deadline:
            time.sleep(0.25)
        wait_for_replicas(service.name, 2)
        models = {
            client.post("v1/predict", json={"texts": TEXTS}).json()["model"] for _ in range(10)
        }
    assert models == {new_id}
    assert served_folder(service.name) == str(other.resolve())


# --- the CLI's runner: SIGHUP swaps, SIGTERM removes the deployment ----------------------------


def test_run_on_ray_swaps_on_hangup_and_removes_itself_on_term(service, tiny_model_dir):
    ready: list = []
    events: list[str] = []

    def drive() -> None:
        deadline = time.monotonic() + 180
        while not ready and time.monotonic() < deadline:
            time.sleep(0.1)
        first = replica_actors("cli")
        with httpx.Client(timeout=60, headers=AUTH) as client:
            url = ready[0].url + "v1/predict"
            events.append(f"before {client.post(url, json={'texts': TEXTS}).status_code}")
            os.kill(os.getpid(), signal.SIGHUP)
            while set(first) & set(replica_actors("cli")) and time.monotonic() < deadline:
                time.sleep(0.25)
            events.append(f"after {client.post(url, json={'texts': TEXTS}).status_code}")
        os.kill(os.getpid(), signal.SIGTERM)

    driver = threading.Thread(target=drive, daemon=True)
    driver.start()
    run_on_ray(  # joins the module's Ray, so it must leave Ray and Serve running
        tiny_model_dir,
        KEYED,
        RayOptions(
            port=port_of(service), replicas=1, num_cpus=0.25, name="cli", route_prefix="/cli"
        ),
        on_ready=ready.append,
    )
    driver.join(timeout=30)
    assert ready and ready[0].url.endswith("/cli/") and not ready[0].started_ray
    assert events == ["before 200", "after 200"]
    assert "cli" not in serve.status().applications
    assert service.name in serve.status().applications  # the other application serves on
