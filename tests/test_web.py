"""`bertprobe export --web`: the page runs the classifier in Chromium from a static folder served
on the loopback, answers as `predict` does for every kind of model export takes, labels a dropped
file, and asks no other host for anything."""

from __future__ import annotations

import csv
import io
import json
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from urllib.parse import urlsplit

import numpy as np
import pytest

from bertprobe import Classifier
from bertprobe.core.errors import BadInputError
from bertprobe.web import (
    ASSETS,
    ENV_ASSETS,
    PACKAGES,
    WebOptions,
    check_page_tokenizer,
    export_web,
    find_web_assets,
)
from browser import static_server
from test_cli import run
from test_export import (
    TEXTS,
    VOTE_TEXTS,
    _chunk_model,
    _long_texts,
    _multilabel_model,
    _voting_model,
)

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = (
    "a gorgeous, witty, seductive movie",
    "the plot is a mess and the jokes fall flat",
    "the film was good",
)


@pytest.fixture(scope="session")
def web_assets() -> Path:
    """The page's npm libraries (make installs them); CI must have them, elsewhere skip."""
    try:
        return find_web_assets()
    except BadInputError as missing:
        if os.environ.get("CI"):
            pytest.fail(f"{missing}; make test installs them")
        pytest.skip(str(missing))


# --- a static server on the loopback, and the page in Chromium --------------------------------


@pytest.fixture(scope="module")
def browser():
    from playwright.sync_api import sync_playwright

    from browser import open_browser

    with sync_playwright() as p:
        chromium = open_browser(p)
        yield chromium
        chromium.close()


@contextmanager
def web_page(browser, folder: Path, isolate: bool = False) -> Iterator:
    """The folder's page, loaded from a loopback server (``isolate``: with the headers that
    allow WASM threads), its model ready. Every request the page (or a worker of it) makes is
    recorded in ``page.requests``; one to another origin is aborted, and the test fails on it
    when the block ends."""
    with static_server(folder, isolate) as url:
        context = browser.new_context(accept_downloads=True)
        requests: list[str] = []
        context.on("request", lambda r: requests.append(r.url))

        def only_ours(route):
            if route.request.url.startswith(url) or route.request.url.startswith("blob:"):
                route.continue_()
            else:
                route.abort()

        context.route("**/*", only_ours)
        page = context.new_page()
        problems: list[str] = []
        page.on("pageerror", lambda e: problems.append(str(e)))
        page.on("console", lambda m: problems.append(m.text) if m.type == "error" else None)
        page.goto(url)
        page.evaluate("() => window.bertprobe.loaded.then(() => true)")
        page.requests = requests
        page.base_url = url
        yield page
        context.close()
        origin = urlsplit(url)
        others = [
            r for r in requests if urlsplit(r).netloc != origin.netloc and not r.startswith("blob:")
        ]
        assert others == [], f"the page asked other hosts: {others}"
        assert problems == []


def page_proba(page, texts: list[str]) -> np.ndarray:
    """The page's own classifier on texts (what its boxes call)."""
    rows = page.evaluate(
        "async (texts) => (await (await window.bertprobe.loaded).predictProba(texts, 7))"
        ".map((row) => Array.from(row))",
        texts,
    )
    return np.array(rows)


def shown(page) -> tuple[str, dict[str, float], str]:
    """What the page shows for the last text: its label(s), each bar's probability, the note."""
    bars = page.eval_on_selector_all(
        "#bars .bar", "bars => bars.map(b => [b.dataset.label, Number(b.dataset.p)])"
    )
    return page.inner_text("#label"), dict(bars), page.inner_text("#long-note")


def classify(page, text: str | None = None, example: int | None = None) -> None:
    page.evaluate("() => { document.getElementById('result').style.display = 'none'; }")
    if example is not None:
        page.locator("button.example").nth(example).click()
    else:
        page.fill("#text", text or "")
        page.click("#classify")
    page.wait_for_selector("#result", state="visible")


# --- a plain model, fp32: the examples, predict_proba to 1e-3, a dropped file, no other host ---


@pytest.fixture(scope="module")
def fp32_page(web_assets, tiny_model_dir, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("web") / "page"
    return export_web(tiny_model_dir, out, WebOptions(fp32=True, examples=EXAMPLES))


def test_the_folder_holds_the_page_the_graph_and_pinned_libraries(fp32_page, web_assets):
    names = sorted(str(p.relative_to(fp32_page)) for p in fp32_page.rglob("*") if p.is_file())
    assert names == sorted(
        [
            "index.html",
            "classifier.js",
            "model.onnx",
            "tokenizer.json",
            "card.json",
            "vendor/ort.wasm.min.mjs",
            "vendor/ort-wasm-simd-threaded.mjs",
            "vendor/ort-wasm-simd-threaded.wasm",
            "vendor/tokenizers.min.mjs",
            "vendor/LICENSE.tokenizers",
            "vendor/papaparse.min.js",
        ]
    )
    card = json.loads((fp32_page / "card.json").read_text())
    assert card["int8"] is False and card["web"]["packages"] == PACKAGES
    import hashlib

    page = (fp32_page / "index.html").read_text()
    for name, entry in card["web"]["files"].items():
        assert hashlib.sha256((fp32_page / name).read_bytes()).hexdigest() == entry["sha256"]
        if name.endswith((".mjs", ".js", ".wasm")) and name != "vendor/ort-wasm-simd-threaded.wasm":
            assert entry["integrity"] in page, name  # the browser checks it
    assert "wasmIntegrity" in page


def test_the_page_answers_the_examples_as_predict_does(browser, fp32_page, tiny_model_dir):
    model = Classifier.load(tiny_model_dir)
    expected = model.predict_proba(list(EXAMPLES))
    with web_page(browser, fp32_page) as page:
        assert page.locator("button.example").all_inner_texts() == list(EXAMPLES)
        assert "fp32" in page.inner_text("#model")
        for i, text in enumerate(EXAMPLES):
            classify(page, example=i)
            assert page.input_value("#text") == text
            label, bars, note = shown(page)
            assert label == str(model.predict([text])[0])
            assert list(bars) == [str(c) for c in model.classes]
            assert np.abs(np.array(list(bars.values())) - expected[i]).max() < 1e-3
            assert note == ""
        # Texts of every length in one batch: padded, truncated (one is past 64 tokens), empty.
        texts = [*TEXTS, EXAMPLES[0]]
        assert np.abs(page_proba(page, texts) - model.predict_proba(texts)).max() < 1e-3
        # A text past the model's max length says it is truncated.
        classify(page, text=TEXTS[2])
        assert "truncated" in shown(page)[2] and "reads the first 64" in shown(page)[2]
        requests = page.requests
    assert any(r.endswith("/model.onnx") for r in requests)
    assert any(r.endswith("/vendor/ort-wasm-simd-threaded.wasm") for r in requests)


def test_the_page_runs_on_wasm_threads_where_the_host_allows(browser, fp32_page, tiny_model_dir):
    """Served with COOP/COEP headers the page is cross-origin isolated and runs onnxruntime on
    several threads (workers of its own files; up to 4), with the same numbers."""
    model = Classifier.load(tiny_model_dir)
    with web_page(browser, fp32_page, isolate=True) as page:
        isolated, threads, cores = page.evaluate(
            "async () => [self.crossOriginIsolated,"
            " (await window.bertprobe.loaded).ort.env.wasm.numThreads,"
            " navigator.hardwareConcurrency]"
        )
        proba = page_proba(page, TEXTS)
    assert isolated and threads == min(4, cores) and (threads > 1 or cores == 1)
    assert np.abs(proba - model.predict_proba(TEXTS)).max() < 1e-3


def test_a_request_to_another_host_is_blocked_and_would_be_caught(browser, fp32_page, tmp_path):
    """Two nets: the page's Content-Security-Policy lets it connect to its own origin only, and
    the test's interception (above) records and fails on any request elsewhere; each is shown
    to catch a request the page's script makes to another host."""
    import shutil

    csp = "violates the following Content Security Policy"
    with pytest.raises(AssertionError, match=csp), web_page(browser, fp32_page) as page:
        page.evaluate("() => fetch('http://example.org/x').catch(() => null)")
    assert not any("example.org" in r for r in page.requests)
    without_csp = shutil.copytree(fp32_page, tmp_path / "no-csp")
    index = without_csp / "index.html"
    html = index.read_text()
    start = html.index('<meta http-equiv="Content-Security-Policy"')
    index.write_text(html[:start] + html[html.index(">", start) + 1 :])
    with (
        pytest.raises(AssertionError, match="asked other hosts"),
        web_page(browser, without_csp) as page,
    ):
        page.evaluate("() => fetch('http://example.org/x').catch(() => null)")


@pytest.mark.parametrize(
    "name",
    [
        "vendor/ort.wasm.min.mjs",
        "vendor/ort-wasm-simd-threaded.mjs",
        "vendor/ort-wasm-simd-threaded.wasm",
        "vendor/tokenizers.min.mjs",
        "vendor/papaparse.min.js",
        "classifier.js",
    ],
)
def test_a_library_changed_after_the_export_is_refused_by_the_browser(
    name, browser, fp32_page, tmp_path
):
    """Each script and the WASM carry their integrity: a file changed on the host (one byte
    added) is not run, and the page says it could not load."""
    import shutil

    folder = shutil.copytree(fp32_page, tmp_path / "changed")
    with (folder / name).open("ab") as f:
        f.write(b"\n")
    with static_server(folder) as url:
        page = browser.new_page()
        errors: list[str] = []
        page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
        page.on("pageerror", lambda e: errors.append(str(e)))
        page.goto(url)
        if name.endswith("papaparse.min.js"):  # a classic script: the page runs without it
            page.wait_for_function("() => typeof Papa === 'undefined'")
        else:
            page.wait_for_function(
                "() => !window.bertprobe ||"
                " document.getElementById('model').textContent.includes('could not')",
                timeout=60_000,
            )
        page.close()
    digest = "Failed to find a valid digest in the 'integrity' attribute for resource"
    assert any(digest in e and e.split("'")[3].endswith("/" + name) for e in errors), errors


def _drop(page, name: str, content: str) -> None:
    """Drop a file on the page's drop zone, as a user's drag and drop does."""
    page.evaluate(
        """([name, content]) => {
            const data = new DataTransfer();
            data.items.add(new File([content], name, {type: "text/plain"}));
            const zone = document.getElementById("drop");
            zone.dispatchEvent(new DragEvent("dragover", {dataTransfer: data, bubbles: true}));
            zone.dispatchEvent(new DragEvent("drop", {dataTransfer: data, bubbles: true}));
        }""",
        [name, content],
    )


def test_a_dropped_file_of_1000_lines_is_labelled_and_downloaded(
    browser, fp32_page, tiny_model_dir, sentiment_rows, tmp_path
):
    model = Classifier.load(tiny_model_dir)
    texts = [f"{sentiment_rows[i % len(sentiment_rows)][0]} {i}" for i in range(1000)]
    texts[5] = 'a "quoted", comma\ttabbed film'
    written = io.StringIO()
    writer = csv.writer(written, delimiter="\t", lineterminator="\n")
    writer.writerows([["id", "text", "label"], *([i, t, "?"] for i, t in enumerate(texts))])
    content = written.getvalue()
    with web_page(browser, fp32_page) as page:
        _drop(page, "reviews.tsv", content)
        page.wait_for_selector("#file-row", state="visible")
        assert page.inner_text("#file-rows") == "1000"
        assert page.eval_on_selector("#column", "s => s.selectedOptions[0].textContent") == "text"
        page.click("#label-all")
        page.wait_for_selector("#download", state="visible", timeout=120_000)
        assert page.inner_text("#progress").startswith("labelled 1000 texts")
        with page.expect_download() as download:
            page.click("#download")
        saved = tmp_path / "labelled.csv"
        download.value.save_as(saved)
        assert download.value.suggested_filename == "reviews-labelled.csv"
    rows = list(csv.DictReader(io.StringIO(saved.read_text(encoding="utf-8"))))
    assert len(rows) == 1000
    assert list(rows[0]) == ["id", "text", "label", *(f"p_{c}" for c in model.classes)]
    assert [r["text"] for r in rows] == texts and [r["id"] for r in rows] == list(
        map(str, range(1000))
    )
    proba = np.array([[float(r[f"p_{c}"]) for c in model.classes] for r in rows])
    assert np.abs(proba - model.predict_proba(texts)).max() < 1e-3
    assert [r["label"] for r in rows] == [str(y) for y in model.predict(texts)]


def test_lines_typed_in_the_box_are_labelled(browser, fp32_page, tiny_model_dir):
    model = Classifier.load(tiny_model_dir)
    lines = ["the film was good", "", "the film was awful", TEXTS[2]]
    with web_page(browser, fp32_page) as page:
        page.fill("#lines", "\n".join(lines))
        page.click("#label-all")
        page.wait_for_selector("#download", state="visible")
        cells = page.eval_on_selector_all("#preview tr td", "tds => tds.map(td => td.textContent)")
        note = page.inner_text("#many-note")
    texts = [t for t in lines if t]
    assert cells[0::2] == texts
    assert cells[1::2] == [str(y) for y in model.predict(texts)]
    assert note.startswith("1 of the texts were longer") and "truncated" in note


# --- every kind of model export takes -----------------------------------------------------------


@pytest.mark.parametrize("n_classes", [2, 3], ids=["binary", "three-classes"])
def test_a_voting_model_in_the_page(
    n_classes, browser, web_assets, tiny_distilbert, sentiment_rows, tmp_path
):
    """The TF-IDF vote computed in JavaScript: scikit-learn's numbers on Unicode, case,
    punctuation, repeats and unknown words (one sigmoid, or a softmax), and the page's vote is
    predict_proba's."""
    model = _voting_model(tiny_distilbert, sentiment_rows, n_classes)
    folder = export_web(model, tmp_path / "vote", WebOptions(fp32=True))
    texts = [*VOTE_TEXTS, "ΣΟΦΟΣ σοφος İstanbul ǅemal", "naïve café 2024 film_noir"]
    with web_page(browser, folder) as page:
        assert "TF-IDF vote" in page.inner_text("#model")
        voter = page.evaluate(
            "async (texts) => (await window.bertprobe.loaded).vote.predictProba(texts)", texts
        )
        proba = page_proba(page, texts)
        classify(page, text=texts[0])
        label = shown(page)[0]
    assert np.abs(np.array(voter) - model.text_model.predict_proba(texts)).max() < 1e-9
    assert np.abs(proba - model.predict_proba(texts)).max() < 1e-3
    assert label == str(model.predict(texts[:1])[0])


@pytest.mark.parametrize("window_pool", ["mean", "max"])
def test_a_chunk_model_in_the_page(
    window_pool, browser, web_assets, tiny_distilbert, sentiment_rows, tmp_path
):
    model = _chunk_model(window_pool, tiny_distilbert, sentiment_rows)
    folder = export_web(model, tmp_path / "chunk", WebOptions(fp32=True))
    texts = _long_texts(sentiment_rows)[0][:14] + TEXTS
    with web_page(browser, folder) as page:
        assert "long texts in windows" in page.inner_text("#model")
        proba = page_proba(page, texts)
        classify(page, text=texts[2])
        label, _, note = shown(page)
    assert np.abs(proba - model.predict_proba(texts)).max() < 1e-3
    assert label == str(model.predict(texts[2:3])[0])
    assert "windows of up to 16 tokens overlapping by 4" in note and window_pool in note


def test_a_multi_label_model_in_the_page(
    browser, web_assets, tiny_distilbert, sentiment_rows, tmp_path
):
    model = _multilabel_model(tiny_distilbert, sentiment_rows)
    folder = export_web(model, tmp_path / "multi", WebOptions(fp32=True))
    texts = [t for t, _ in sentiment_rows][:30] + TEXTS
    expected = [list(labels) for labels in model.predict(texts)]
    with web_page(browser, folder) as page:
        proba = page_proba(page, texts)
        labels = page.evaluate(
            "async (texts) => { const c = await window.bertprobe.loaded;"
            " return (await c.predictProba(texts)).map((row) => c.labelsOf(row)); }",
            texts,
        )
        film = next(i for i, t in enumerate(texts) if "film" in t)
        classify(page, text=texts[film])
        label, bars, _ = shown(page)
        marks = page.eval_on_selector_all(".bar .threshold", "m => m.length")
    assert np.abs(proba - model.predict_proba(texts)).max() < 1e-3
    assert labels == [[str(x) for x in row] for row in expected]
    assert len({tuple(s) for s in expected}) > 1
    assert label == (", ".join(map(str, expected[film])) or "(none)")
    assert list(bars) == [str(c) for c in model.classes] and marks == len(model.classes)


def test_the_cli_writes_an_int8_page_by_default(
    browser, web_assets, tiny_model_dir, sentiment_rows, tmp_path, capsys
):
    code, out, err = run(
        ["export", "--model", tiny_model_dir, "--out", tmp_path / "s", "--web"], capsys
    )
    assert code == 0, err
    assert "index.html" in out and "static file server" in out
    card = json.loads((tmp_path / "s" / "card.json").read_text())
    assert card["int8"] is True
    model = Classifier.load(tiny_model_dir)
    texts = [t for t, _ in sentiment_rows]
    with web_page(browser, tmp_path / "s") as page:
        assert "int8" in page.inner_text("#model")
        labels = page_proba(page, texts).argmax(axis=1)
    agreement = np.mean([model.classes[i] for i in labels] == model.predict(texts))
    assert agreement >= 0.9, agreement
    # Again into the same folder: an earlier export is replaced.
    code, out, err = run(
        ["export", "--model", tiny_model_dir, "--out", tmp_path / "s", "--web", "--fp32"], capsys
    )
    assert code == 0, (
        err and json.loads((tmp_path / "s" / "card.json").read_text())["int8"] is False
    )


# --- refused in one line, exit 2 ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("case", "words"),
    [
        ("out is another folder", "is not a bertprobe ONNX export"),
        ("no libraries", "lack onnxruntime-web/dist/ort.wasm.min.mjs"),
        ("altered library", "SHA-256 differs"),
        ("fp32 without web", "--fp32 goes with --web"),
        ("fp32 and int8", "choose one"),
    ],
)
def test_cli_web_bad_input_is_one_line(case, words, web_assets, tiny_model_dir, tmp_path, capsys):
    import shutil

    out = tmp_path / "out"
    argv = ["export", "--model", tiny_model_dir, "--out", out, "--web"]
    if case == "out is another folder":
        out.mkdir()
        (out / "notes.txt").write_text("mine")
    elif case == "no libraries":
        argv += ["--web-assets", tmp_path / "empty"]
        (tmp_path / "empty").mkdir()
    elif case == "altered library":
        copy = tmp_path / "assets" / "node_modules"
        shutil.copytree(web_assets, copy)
        (copy / "papaparse" / "papaparse.min.js").write_text("alert(1)")
        argv += ["--web-assets", copy.parent]
    elif case == "fp32 without web":
        argv = ["export", "--model", tiny_model_dir, "--out", out, "--fp32"]
    else:
        argv += ["--fp32", "--int8"]
    code, stdout, err = run(argv, capsys)
    assert code == 2 and stdout == ""
    assert err.startswith("bertprobe: error: ") and len(err.splitlines()) == 1, err
    assert words in err
    if case == "out is another folder":
        assert sorted(p.name for p in out.iterdir()) == ["notes.txt"]
    else:
        assert not out.exists()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".out.")]  # no scratch left


def test_a_tokenizer_the_page_cannot_build_is_refused(tiny_model_dir):
    tokenizer = {
        "model": {"type": "WordPiece"},
        "normalizer": {"type": "Sequence", "normalizers": [{"type": "NFC"}, {"type": "Weird"}]},
    }
    with pytest.raises(BadInputError, match="has a Weird normalizer") as refused:
        check_page_tokenizer(tokenizer)
    assert "\n" not in str(refused.value)
    check_page_tokenizer({**tokenizer, "normalizer": {"type": "NFC"}})


def test_the_env_variable_names_the_libraries(web_assets, monkeypatch, tmp_path):
    monkeypatch.setenv(ENV_ASSETS, str(tmp_path))
    with pytest.raises(BadInputError, match=str(tmp_path)):
        find_web_assets()
    monkeypatch.setenv(ENV_ASSETS, str(web_assets))
    assert find_web_assets() == web_assets


def test_the_pins_are_web_package_json_and_its_lock():
    package = json.loads((ROOT / "web" / "package.json").read_text())
    lock = json.loads((ROOT / "web" / "package-lock.json").read_text())
    assert package["dependencies"] == PACKAGES
    for name, version in PACKAGES.items():
        assert lock["packages"][f"node_modules/{name}"]["version"] == version
        assert lock["packages"][f"node_modules/{name}"]["integrity"].startswith("sha512-")
    assert {a.package for a in ASSETS} == set(PACKAGES)


# --- the bundled MiniLM, int8, on SST-2 -----------------------------------------------------------


@pytest.mark.slow
def test_minilm_int8_page_agrees_with_predict_on_sst2(browser, web_assets, tmp_path):
    """An int8 page of a MiniLM model labels 300 SST-2 test sentences as `predict` does, 97% of
    them or more (bench/web_bench.py measures 500 and the speed)."""
    from bertprobe import EncoderOptions, TrainOptions, train
    from bertprobe.data.files import LabelledTexts
    from bertprobe.datasets import load_sst2

    full, n = load_sst2("train"), 600
    data = LabelledTexts(
        full.texts[:n], full.labels[:n], full.source, full.sha256, full.line_numbers[:n]
    )
    model = train(
        data,
        encoding=EncoderOptions("minilm", pooling="mean"),
        options=TrainOptions(Cs="coarse", cv=3, n_jobs=1),
    ).model
    folder = export_web(model, tmp_path / "minilm")
    texts = load_sst2("test").texts[:300]
    with web_page(browser, folder) as page:
        labels = page_proba(page, texts).argmax(axis=1)
    expected = model.predict(texts)
    agreement = np.mean([model.classes[i] for i in labels] == expected)
    assert agreement >= 0.97, agreement


def test_the_guides_python_block_runs(web_assets, tiny_model_dir, tmp_path, monkeypatch):
    """docs/guides/browser.md's block, as written, with the tiny model as models/sst2."""
    from test_readme import python_blocks

    (tmp_path / "models").mkdir()
    (tmp_path / "models" / "sst2").symlink_to(tiny_model_dir)
    monkeypatch.chdir(tmp_path)
    [block] = python_blocks(ROOT / "docs" / "guides" / "browser.md")
    exec(compile(block, "browser.md", "exec"), {"__name__": "guide"})  # noqa: S102
    page = (tmp_path / "site" / "index.html").read_text(encoding="utf-8")
    assert "a gorgeous, witty film" in page and (tmp_path / "site" / "vendor").is_dir()
