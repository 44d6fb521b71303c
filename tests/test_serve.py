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
from bertprobe.serve import BatchingConfig, ServeLimits, create_app


@pytest.fixture(scope="module")
def model(tiny_model_dir):
    return load_model(tiny_model_dir)


@pytest.fixture
def client(model):
    app = create_app(
        model,
        limits=ServeLimits(max_texts=8, max_chars=200, max_body_bytes=4000),
        batching=BatchingConfig(max_batch=64, max_wait_ms=50),
    )
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
    batcher = client.app.state.served.batcher
    assert batcher.largest_batch > 1  # requests really were gathered
    assert batcher.batches < len(texts)


# --- against a real server on loopback ---------------------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


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
    assert {op.path for op in operations} >= {"/v1/predict", "/v1/model", "/healthz"}
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
