"""The HTTP service: answers, limits, dynamic batching, OpenAPI conformance, the web page."""

from __future__ import annotations

import socket
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import httpx
import numpy as np
import pytest
import schemathesis
import uvicorn
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, given, settings

from bertprobe.model.classifier import load_model
from bertprobe.serve import BatchingConfig, ServeConfig, ServeLimits, create_app
from services import free_port


@pytest.fixture(scope="module")
def model(tiny_model_dir):
    return load_model(tiny_model_dir)


@pytest.fixture
def client(model):
    config = ServeConfig(
        limits=ServeLimits(max_texts=8, max_chars=200, max_body_bytes=4000),
        batching=BatchingConfig(max_batch=64, max_wait_ms=50),
    )
    app = create_app(model, config)
    with TestClient(app) as c:  # runs the lifespan: the batching worker starts and stops
        yield c


def test_predict_returns_each_texts_own_answer(client, model):
    texts = ["the film was great", "the plot was awful", "the cast was lovely"]
    response = client.post("/v1/predict", json={"texts": texts})
    assert response.status_code == 200
    body = response.json()
    assert body["model"] == model.id
    expected = model.predict_proba(texts)
    for prediction, row in zip(body["predictions"], expected, strict=True):
        assert [prediction["probabilities"][str(c)] for c in model.classes] == pytest.approx(
            row.tolist(), abs=1e-6
        )
        assert prediction["label"] == model.classes[int(np.argmax(row))]


def test_model_card_health_and_page(client, model):
    assert client.get("/v1/model").json() == model.card
    assert client.get("/healthz").json() == {"status": "ok", "model": model.id}
    page = client.get("/")
    assert page.status_code == 200 and "Classify" in page.text
    assert "/v1/predict" in client.get("/openapi.json").json()["paths"]


@pytest.mark.parametrize(
    ("payload", "status", "detail"),
    [
        ({"texts": []}, 422, None),
        ({"texts": ["fine", 3]}, 422, None),
        ({"texts": "not a list"}, 422, None),
        ({"text": ["fine"]}, 422, None),
        ({"texts": ["ok"] * 9}, 422, "texts: List should have at most 8 items"),
        ({"texts": ["fine", "x" * 201]}, 422, "texts.1: String should have at most 200"),
        ({"texts": ["fine", "   "]}, 422, "texts.1: String should match pattern"),
        ({"texts": [""]}, 422, "texts.0: String should have at least 1 character"),
        ({"texts": ["y" * 150] * 30}, 413, "request body over 4,000 bytes"),
    ],
)
def test_limits_answer_with_clear_4xx(client, payload, status, detail):
    response = client.post("/v1/predict", json=payload)
    assert response.status_code == status
    if detail is not None:
        assert detail in response.json()["detail"]


def test_concurrent_requests_are_batched_and_never_mixed(client, model):
    texts = [
        f"the {subject} was {word}"
        for subject in ("film", "plot", "cast", "story")
        for word in ("great", "awful", "lovely", "boring", "good", "bad")
    ]
    expected = dict(zip(texts, model.predict_proba(texts), strict=True))

    def ask(text: str):
        return text, client.post("/v1/predict", json={"texts": [text]}).json()

    with ThreadPoolExecutor(max_workers=len(texts)) as pool:
        answers = list(pool.map(ask, texts))
    for text, body in answers:
        probabilities = body["predictions"][0]["probabilities"]
        assert [probabilities[str(c)] for c in model.classes] == pytest.approx(
            expected[text].tolist(), abs=1e-6
        ), text
    batcher = client.app.state.slot.served.batcher
    assert batcher.largest_batch > 1  # requests really were gathered
    assert batcher.batches < len(texts)


# --- against a real server on loopback ---------------------------------------------------------


@pytest.fixture(scope="module")
def live_url(model):
    port = free_port()
    server = uvicorn.Server(
        uvicorn.Config(create_app(model), host="127.0.0.1", port=port, log_level="warning")
    )
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        assert time.monotonic() < deadline, "the server did not start"
        time.sleep(0.05)
    yield f"http://127.0.0.1:{port}"
    server.should_exit = True
    thread.join(timeout=30)


def test_shutdown_finishes_requests_in_flight(tiny_model_dir):
    slow = load_model(tiny_model_dir)
    answer = slow.predict_proba

    def slow_predict_proba(texts, *args, **options):
        time.sleep(1.0)  # the request is in flight when the server is told to stop
        return answer(texts, *args, **options)

    slow.predict_proba = slow_predict_proba
    port = free_port()
    server = uvicorn.Server(
        uvicorn.Config(
            create_app(slow),
            host="127.0.0.1",
            port=port,
            log_level="warning",
            timeout_graceful_shutdown=10,
        )
    )
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    while not server.started:
        time.sleep(0.05)
    with ThreadPoolExecutor(max_workers=1) as pool:
        pending = pool.submit(
            httpx.post,
            f"http://127.0.0.1:{port}/v1/predict",
            json={"texts": ["the film was great"]},
            timeout=30,
        )
        time.sleep(0.3)
        server.should_exit = True
        response = pending.result()
    thread.join(timeout=30)
    assert response.status_code == 200
    assert len(response.json()["predictions"]) == 1
    assert not thread.is_alive()


def test_openapi_conformance_no_5xx(live_url):
    """schemathesis generates requests from /openapi.json: no 5xx, every answer fits the schema."""
    schema = schemathesis.openapi.from_url(f"{live_url}/openapi.json")
    operations = [result.ok() for result in schema.get_all_operations()]
    assert {op.path for op in operations} >= {"/v1/predict", "/v1/explain", "/v1/model", "/healthz"}
    for operation in operations:

        @given(case=operation.as_strategy())
        @settings(max_examples=40, deadline=None, suppress_health_check=list(HealthCheck))
        def conforms(case):
            case.call_and_validate()

        conforms()


def test_web_page_classifies_a_typed_sentence(live_url):
    from playwright.sync_api import sync_playwright

    from browser import open_browser

    with sync_playwright() as p:
        browser = open_browser(p)
        page = browser.new_page()
        problems: list[str] = []
        page.on("pageerror", lambda e: problems.append(str(e)))
        page.goto(live_url + "/")
        page.fill("#text", "the film was wonderful")
        page.click("#classify")
        page.wait_for_selector("#result", state="visible", timeout=15000)
        label = page.inner_text("#label")
        bars = page.locator(".bar").count()
        browser.close()
    assert label in ("0", "1")
    assert bars == 2
    assert problems == []


def test_connections_to_the_listening_socket_turn_nagle_off():
    """Each answer on a kept-alive connection must leave at once: with Nagle's algorithm on, a
    response written in two parts waits for the client's delayed ACK (about 40 ms)."""
    import asyncio

    from bertprobe.serve import listen_socket

    async def accepted_nodelay() -> int:
        seen: asyncio.Future[int] = asyncio.get_running_loop().create_future()

        def connected(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            sock = writer.get_extra_info("socket")
            seen.set_result(sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY))
            writer.close()

        server = await asyncio.start_server(connected, sock=listen_socket("127.0.0.1", 0))
        port = server.sockets[0].getsockname()[1]
        async with server:
            _, writer = await asyncio.open_connection("127.0.0.1", port)
            value = await asyncio.wait_for(seen, 10)
            writer.close()
        return value

    assert asyncio.run(accepted_nodelay()) != 0


# --- POST /v1/explain ----------------------------------------------------------------------------


def test_explain_answers_words_whose_scores_add_up_to_the_logit(client, model):
    texts = ["the film was great", "the plot was <b>awful</b> 😀 & dull"]
    response = client.post("/v1/explain", json={"texts": texts})
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["model"] == model.id and response.headers["x-model"] == model.id
    expected = model.explain(texts)
    for answer, text, want in zip(body["explanations"], texts, expected, strict=True):
        assert answer["text"] == text and answer["method"] == "exact"
        assert "evidence read out at its position" in answer["note"]
        assert answer["labels"] == list(want.labels)
        for c in map(str, model.classes):  # mean pooling, a linear head: the split is exact
            total = answer["constant"][c] + sum(w["scores"][c] for w in answer["words"])
            assert total == pytest.approx(answer["logits"][c], abs=1e-4)
        for word in answer["words"]:
            assert text[word["start"] : word["end"]] == word["text"]
        assert [w["text"] for w in answer["words"]] == [w.text for w in want.words]
    occluded = client.post("/v1/explain", json={"texts": texts[:1], "method": "occlusion"})
    assert occluded.json()["explanations"][0]["method"] == "occlusion-delete"


@pytest.mark.parametrize(
    ("payload", "status", "detail"),
    [
        ({"texts": ["ok"] * 9}, 422, "texts: List should have at most 8 items"),
        ({"texts": ["fine", "x" * 201]}, 422, "texts.1: String should have at most 200"),
        ({"texts": ["fine"], "method": "integrated-gradients"}, 422, "method: Input should be"),
        ({"texts": ["fine"], "threshold": 0.5}, 422, "threshold: Extra inputs"),
        ({"texts": ["y" * 150] * 30}, 413, "request body over 4,000 bytes"),
    ],
)
def test_explain_has_the_limits_of_predict(client, payload, status, detail):
    response = client.post("/v1/explain", json=payload)
    assert response.status_code == status
    assert detail in response.json()["detail"]


def test_explain_exact_for_a_model_it_cannot_split_is_a_422(
    tiny_distilbert, sentiment_rows, tmp_path
):
    from bertprobe import LinearProbe, resolve_encoder, save_model
    from bertprobe.encoders.encode import embed
    from bertprobe.encoders.options import FeatureSpec

    ref = resolve_encoder(str(tiny_distilbert))
    spec = FeatureSpec("cls", (-1,))
    X, stats = embed([t for t, _ in sentiment_rows], ref, spec)
    probe = LinearProbe(cv=3).fit(X, [y for _, y in sentiment_rows])
    folder = save_model(tmp_path / "cls", probe, ref, spec, max_length=stats.max_length)
    with TestClient(create_app(load_model(folder))) as c:
        refused = c.post("/v1/explain", json={"texts": ["fine"], "method": "exact"})
        auto = c.post("/v1/explain", json={"texts": ["the film was fine"]})
    assert refused.status_code == 422
    assert "cls pooling is not linear" in refused.json()["detail"]
    assert auto.status_code == 200
    assert auto.json()["explanations"][0]["method"] == "occlusion-delete"


def test_explain_needs_the_key_and_is_counted_like_predict(model):
    from prometheus_client.parser import text_string_to_metric_families

    from bertprobe.serve import ServeSecurity

    key = "explain-key-0123456789"
    app = create_app(
        model, ServeConfig(security=ServeSecurity(api_key=key), limits=ServeLimits(max_texts=4))
    )
    body = {"texts": ["the film was great", "a mess"]}
    with TestClient(app) as c:
        missing = c.post("/v1/explain", json=body)
        wrong = c.post("/v1/explain", json=body, headers={"Authorization": "Bearer nope"})
        right = c.post("/v1/explain", json=body, headers={"Authorization": f"Bearer {key}"})
        too_many = c.post(
            "/v1/explain", json={"texts": ["a"] * 5}, headers={"Authorization": f"Bearer {key}"}
        )
        page = c.get("/metrics").text
        schema = c.get("/openapi.json").json()
    assert missing.status_code == 401 and missing.headers["www-authenticate"] == "Bearer"
    assert wrong.status_code == 401 and right.status_code == 200 and too_many.status_code == 422
    samples = {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(page)
        for s in family.samples
    }

    def requests(status):
        key = (("method", "POST"), ("route", "/v1/explain"), ("status", status))
        return samples.get(("bertprobe_requests_total", key), 0)

    assert requests("200") == 1 and requests("401") == 2 and requests("422") == 1
    assert samples["bertprobe_request_duration_seconds_count", (("route", "/v1/explain"),)] == 4
    assert samples["bertprobe_texts_total", ()] == 2  # the explained texts ran the encoder
    assert samples["bertprobe_rejected_requests_total", (("reason", "unauthorized"),)] == 2
    route = schema["paths"]["/v1/explain"]["post"]
    assert route["security"] and {"401", "413", "422", "503", "504"} <= set(route["responses"])


def test_web_page_shades_the_words_under_the_answer(live_url):
    from playwright.sync_api import sync_playwright

    from browser import open_browser

    text = "the film was <b>wonderful</b> 😀 & fun"
    with sync_playwright() as p:
        browser = open_browser(p)
        page = browser.new_page()
        problems: list[str] = []
        page.on("pageerror", lambda e: problems.append(str(e)))
        failed: list[str] = []
        page.on("response", lambda r: failed.append(r.url) if r.status >= 400 else None)
        page.goto(live_url + "/")
        page.fill("#text", text)
        page.click("#classify")
        page.wait_for_selector("#words .w", timeout=15000)
        words = page.eval_on_selector_all(
            "#words .w",
            "ws => ws.map(w => [w.textContent, getComputedStyle(w).backgroundColor, w.title])",
        )
        shown = page.inner_text("#words")
        bold = page.locator("#why b").count()
        browser.close()
    assert problems == [] and [u for u in failed if "favicon" not in u] == []
    assert shown == text and bold == 0  # the text as written, none of it read as HTML
    assert "wonderful" in [w for w, _, _ in words]
    assert all(bg.startswith("rgba(") and title.count(":") == 2 for _, bg, title in words)


def test_batcher_gathers_each_kind_of_work_apart_in_one_queue():
    import asyncio

    from bertprobe.serve import Batcher

    calls: list[tuple[str, list[str]]] = []

    def predict(texts):
        calls.append(("predict", list(texts)))
        return np.array([[len(t)] for t in texts])

    def explain(texts):
        calls.append(("explain", list(texts)))
        return [f"why {t}" for t in texts]

    async def scenario():
        batcher = Batcher(predict, BatchingConfig(max_batch=16, max_wait_ms=50))
        await batcher.start()
        answers = await asyncio.gather(
            batcher.submit(["a"]),
            batcher.submit(["bb", "c"], explain),
            batcher.submit(["ddd"]),
            batcher.submit(["e"], explain),
        )
        await batcher.stop()
        return answers

    answers = asyncio.run(scenario())
    assert [a.tolist() if isinstance(a, np.ndarray) else a for a in answers] == [
        [[1]],
        ["why bb", "why c"],
        [[3]],
        ["why e"],
    ]
    assert calls == [("predict", ["a", "ddd"]), ("explain", ["bb", "c", "e"])]


def test_explain_waits_in_the_queue_of_predict_and_is_shed_when_it_is_full(tiny_model_dir):
    slow_model = load_model(tiny_model_dir)
    answer = slow_model.predict_proba
    slow = threading.Event()

    def slow_predict_proba(texts, *args, **options):
        if slow.is_set():
            time.sleep(0.8)
        return answer(texts, *args, **options)

    slow_model.predict_proba = slow_predict_proba
    app = create_app(slow_model, ServeConfig(limits=ServeLimits(max_queue=1)))
    with TestClient(app) as c, ThreadPoolExecutor(2) as pool:
        slow.set()
        running = pool.submit(c.post, "/v1/predict", json={"texts": ["in the encoder"]})
        time.sleep(0.3)
        waiting = pool.submit(c.post, "/v1/explain", json={"texts": ["waits in the queue"]})
        time.sleep(0.2)
        refused = c.post("/v1/explain", json={"texts": ["one too many"]})
        assert running.result().status_code == 200 and waiting.result().status_code == 200
    assert refused.status_code == 503 and int(refused.headers["retry-after"]) >= 1
    assert "the encoder's queue is full: 1 of 1" in refused.json()["detail"]


def test_every_status_for_a_body_that_is_not_utf8_json_is_in_the_schema(model):
    """A body of bytes that are not UTF-8 (or not JSON) gets an answer the schema lists, with
    the error body it documents, on every route that reads a body."""
    from bertprobe.serve import ServeSecurity

    key = "s3cret-key"
    app = create_app(model, ServeConfig(security=ServeSecurity(api_key=key)))
    headers = {"Authorization": f"Bearer {key}", "Content-Type": "application/json"}
    with TestClient(app) as c:
        paths = c.get("/openapi.json").json()["paths"]
        for path in ("/v1/predict", "/v1/explain", "/v1/admin/reload"):
            for body in (b'{"texts": ["\xff\xfe"]}', b"\xff\xfe not json", b'{"texts": ['):
                response = c.post(path, content=body, headers=headers)
                documented = paths[path]["post"]["responses"]
                assert str(response.status_code) in documented, (path, body, response.text)
                assert isinstance(response.json()["detail"], (str, list))
