"""bertprobe label: the labelling session (answers kept at once, undo, resume, the refitted
probe), the command's bad input, and the page driven in Chromium."""

from __future__ import annotations

import threading
import time

import pytest

from bertprobe.cli import main
from bertprobe.core.errors import BadInputError
from bertprobe.data.files import read_labelled
from bertprobe.datasets import load_sst2
from bertprobe.encoders.options import EncoderOptions
from bertprobe.label import HEADER, LabellingSession, check_labels, create_label_app
from services import free_port

POOL = load_sst2("dev").texts[:40]


@pytest.fixture(scope="module")
def encoding(tiny_distilbert) -> EncoderOptions:
    return EncoderOptions(str(tiny_distilbert), pooling="mean")


@pytest.fixture
def pool_txt(tmp_path):
    path = tmp_path / "pool.txt"
    path.write_text("".join(f"{t}\n" for t in POOL), encoding="utf-8")
    return path


def open_session(pool, out, encoding, **options) -> LabellingSession:
    return LabellingSession(pool, ["pos", "neg"], out, encoding=encoding, **options)


def label_some(session: LabellingSession, count: int, start: int = 0) -> list[tuple[str, str]]:
    """Answer ``count`` texts as asked, pos and neg in turn; (text, label) in order."""
    done = []
    for i in range(start, start + count):
        item = session.current()
        assert item is not None
        label = ("pos", "neg")[i % 2]
        session.answer(item.row, label)
        done.append((item.text, label))
    return done


def file_rows(path) -> list[tuple[str, str]]:
    data = read_labelled(path)
    return list(zip(data.texts, map(str, data.labels), strict=True))


def test_each_answer_is_in_the_file_and_synced_before_answer_returns(
    pool_txt, tmp_path, encoding, monkeypatch
):
    import bertprobe.label as label_module

    synced: list[int] = []
    real_fsync = label_module.os.fsync
    monkeypatch.setattr(label_module.os, "fsync", lambda fd: synced.append(fd) or real_fsync(fd))
    out = tmp_path / "labelled.tsv"
    session = open_session(pool_txt, out, encoding, n=5)
    assert not out.exists()  # nothing written before the first answer
    answered = []
    for i in range(3):
        answered += label_some(session, 1, start=i)
        text = out.read_text(encoding="utf-8")
        assert text.startswith(HEADER)
        assert file_rows(out) == answered
        assert len(synced) >= i + 1
    state = session.state()
    assert state["counts"] == {"pos": 2, "neg": 1}
    assert (state["labelled"], state["pool"]) == (3, len(POOL))


def test_undo_takes_back_answers_and_skips(pool_txt, tmp_path, encoding):
    out = tmp_path / "labelled.tsv"
    session = open_session(pool_txt, out, encoding, n=5)
    first = session.current()
    session.answer(first.row, "pos")
    second = session.current()
    session.answer(second.row, "neg")
    third = session.current()
    session.skip(third.row)
    assert session.current().row != third.row
    assert session.undo() == third.row  # the skip
    assert session.current().row == third.row
    assert session.undo() == second.row  # the answer: its line is cut from the file
    assert file_rows(out) == [(first.text, "pos")]
    assert session.current().row == second.row
    assert session.counts() == {"pos": 1, "neg": 0}
    assert session.undo() == first.row
    assert out.read_bytes() == b""  # the header went with the first answer
    assert session.undo() is None
    session.answer(first.row, "neg")  # the header comes back with the next answer
    assert file_rows(out) == [(first.text, "neg")]


def test_undo_refuses_to_cut_a_file_changed_since(pool_txt, tmp_path, encoding):
    out = tmp_path / "labelled.tsv"
    session = open_session(pool_txt, out, encoding, n=5)
    label_some(session, 2)
    with open(out, "a", encoding="utf-8") as fh:
        fh.write("added by hand\tpos\n")
    before = out.read_bytes()
    with pytest.raises(BadInputError, match="changed after the last answer"):
        session.undo()
    assert out.read_bytes() == before


def test_a_new_session_resumes_where_the_file_stops(pool_txt, tmp_path, encoding):
    out = tmp_path / "labelled.tsv"
    first = open_session(pool_txt, out, encoding, n=5)
    done = label_some(first, 4)
    # A text labelled elsewhere, not in the pool, and a last line cut short by a crash.
    with open(out, "a", encoding="utf-8") as fh:
        fh.write("an old favourite , labelled last week\tpos")
    again = open_session(pool_txt, out, encoding, n=5)
    assert again.resumed == 5
    assert again.labelled == 4  # the extra text trains the probe but is not a pool text
    assert again.counts() == {"pos": 3, "neg": 2}
    assert out.read_text(encoding="utf-8").endswith("labelled last week\tpos\n")
    asked = []
    for _ in range(len(POOL) - 4):
        item = again.current()
        asked.append(item.text)
        again.skip(item.row)
    assert len(set(asked)) == len(POOL) - 4  # every text not labelled yet, once
    assert not set(asked) & {text for text, _ in done}
    assert again.current().text in asked  # only skipped texts are left: asked again


def test_each_text_comes_with_a_proposal_and_taking_it_or_not_is_counted(
    pool_txt, tmp_path, encoding
):
    out = tmp_path / "labelled.tsv"
    # Two pool texts describe the labels: the zero-shot head proposes each its own label.
    pos_text, neg_text = POOL[0].strip(), POOL[1].strip()
    session = open_session(
        pool_txt, out, encoding, n=4, descriptions={"pos": pos_text, "neg": neg_text}
    )
    rows = {text: row for row, text in enumerate(session.texts)}
    X = session.X[[rows[pos_text], rows[neg_text]]]
    assert session.zero_shot.predict(X).tolist() == ["pos", "neg"]
    item = session.current()
    assert item.proposed_by == "zero-shot"
    assert item.proposed == session.zero_shot.predict(session.X[[item.row]])[0]
    session.answer(item.row, item.proposed)
    other = session.current()
    wrong = "neg" if other.proposed == "pos" else "pos"
    session.answer(other.row, wrong)
    assert (session.agreed, session.corrected) == (1, 1)
    state = session.state()
    assert (state["agreed"], state["corrected"]) == (1, 1)
    assert state["item"]["proposed"] in ("pos", "neg")
    session.undo()  # the correction is taken back with its answer
    assert (session.agreed, session.corrected) == (1, 0)
    # Once the probe is fitted, it proposes.
    label_some(session, 6)
    session.wait(timeout=60)
    assert session.model is not None
    item = session.next_batch()[0]
    assert item.proposed_by == "model"
    assert item.proposed == session.model.predict(session.X[[item.row]])[0]


def test_descriptions_of_a_label_the_page_does_not_offer_are_refused(pool_txt, tmp_path, encoding):
    with pytest.raises(BadInputError, match="describes 'meh', not one of labels=pos,neg"):
        open_session(pool_txt, tmp_path / "out.tsv", encoding, descriptions={"meh": "so-so"})


def test_the_probe_refits_after_a_batch_and_gives_a_cv_estimate(pool_txt, tmp_path, encoding):
    out = tmp_path / "labelled.tsv"
    session = open_session(pool_txt, out, encoding, n=6)
    first_batch = session.next_batch()
    assert len(first_batch) == 6
    assert {item.reason for item in first_batch} == {"representative"}  # a cold start
    assert session.retrain() is None and "3 answers of each label" in session.waiting_for()
    label_some(session, 6)  # the batch is done: the fit runs in the background
    session.wait(timeout=60)
    estimate = session.estimate
    assert estimate is not None and 0 <= estimate.accuracy <= 1
    assert (estimate.n, estimate.folds) == (6, 3)
    assert session.current().reason == "uncertain"  # the next batch is the probe's choice
    label_some(session, 4)
    later = session.retrain()
    assert later.n == 10 and later.folds == 5
    assert [e.n for e in session.estimates][-1] == 10
    assert session.state()["estimate"]["n"] == 10


def test_pool_labels_are_refused_unless_asked_for(tmp_path, encoding):
    pool = tmp_path / "pool.tsv"
    pool.write_text(
        "".join(f"{t}\t{('pos', 'neg')[i % 2]}\n" for i, t in enumerate(POOL[:8]))
        + "".join(f"{t}\t\n" for t in POOL[8:20]),
        encoding="utf-8",
    )
    # Every row labelled: refused, saying so.
    labelled = tmp_path / "labelled_pool.tsv"
    labelled.write_text(
        "".join(f"{t}\t{('pos', 'neg')[i % 2]}\n" for i, t in enumerate(POOL[:12])),
        encoding="utf-8",
    )
    with pytest.raises(BadInputError, match="holds labels .*use_pool_labels=True"):
        open_session(labelled, tmp_path / "out.tsv", encoding)
    session = open_session(labelled, tmp_path / "out.tsv", encoding, n=2, use_pool_labels=True)
    assert session.from_pool == 12 and session.labelled == 12
    assert len(file_rows(tmp_path / "out.tsv")) == 12
    assert session.current() is None  # nothing left to ask
    # Labels outside --labels are refused.
    other = tmp_path / "other_pool.tsv"
    other.write_text("".join(f"{t}\tmeh\n" for t in POOL[:12]), encoding="utf-8")
    with pytest.raises(BadInputError, match="'meh', not one of labels=pos,neg"):
        open_session(other, tmp_path / "out2.tsv", encoding, use_pool_labels=True)


@pytest.mark.parametrize(
    "labels, n, pool_size, out_text, message",
    [
        (["pos", "neg"], 0, 40, None, "n=0: ask for at least 1"),
        (["pos", "neg"], 41, 40, None, "40 distinct texts, fewer than a batch of n=41"),
        (["pos"], 5, 40, None, "one label leaves nothing to choose"),
        (["pos", "pos"], 5, 40, None, "'pos' is given twice"),
        (["pos", ""], 5, 40, None, "a label is empty"),
        (["01", "1"], 5, 40, None, "'01' reads back from a file as 1"),
        (["pos", "neg"], 5, 40, "text\tlabel\nfine\tpos\nmeh\tso-so\n", "line 3 .*'so-so'"),
        (["pos", "neg"], 5, 40, "", "give a .tsv file"),
    ],
)
def test_bad_input_is_one_line(
    pool_txt, tmp_path, encoding, labels, n, pool_size, out_text, message
):
    out = tmp_path / ("labelled.csv" if out_text == "" else "labelled.tsv")
    if out_text:
        out.write_text(out_text, encoding="utf-8")
    with pytest.raises(BadInputError, match=message) as info:
        LabellingSession(POOL[:pool_size], labels, out, encoding=encoding, n=n)
    assert "\n" not in str(info.value)


def test_labels_are_checked():
    assert check_labels("pos, neg,neutral") == ("pos", "neg", "neutral")
    with pytest.raises(BadInputError, match="tab, quote or line break"):
        check_labels(["a\tb", "c"])


# --- the command --------------------------------------------------------------------------------


def run(argv, capsys):
    with pytest.raises(SystemExit) as info:
        main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return info.value.code, out, err


@pytest.mark.parametrize(
    "extra, out_text, pool_kind, message",
    [
        (["--n", "0"], None, "txt", "--n 0: ask for at least 1 text a batch"),
        (["--n", "41"], None, "txt", "fewer than a batch of --n 41"),
        (["--labels", "pos"], None, "txt", "--labels pos: one label leaves nothing"),
        ([], "text\tlabel\nfine\tmaybe\n", "txt", "'maybe', not one of --labels pos,neg"),
        ([], None, "labelled", "holds labels .*pass --use-pool-labels"),
        ([], None, "same", "is the pool file"),
        (
            ["--zero-shot", "meh=so-so"],
            None,
            "txt",
            "--zero-shot describes 'meh', not one of --labels pos,neg",
        ),
        (["--zero-shot", "=so-so"], None, "txt", "--zero-shot '=so-so': the label is empty"),
        (["--template", "a review"], None, "txt", "--template 'a review': put {} where"),
    ],
)
def test_command_bad_input_exits_2_with_one_line(
    tmp_path, capsys, tiny_distilbert, extra, out_text, pool_kind, message
):
    pool = tmp_path / "pool.tsv"
    if pool_kind == "labelled":
        pool.write_text("".join(f"{t}\t{i % 2}\n" for i, t in enumerate(POOL)), encoding="utf-8")
    else:
        pool.write_text("".join(f"{t}\n" for t in POOL), encoding="utf-8")
    out = pool if pool_kind == "same" else tmp_path / "labelled.tsv"
    if out_text is not None:
        out.write_text(out_text, encoding="utf-8")
    argv = ["label", pool, "--labels", "pos,neg", "--out", out, "--encoder", tiny_distilbert]
    code, stdout, err = run([*argv, "--port", str(free_port()), *extra], capsys)
    assert code == 2
    assert len(err.strip().splitlines()) == 1, err
    assert err.startswith("bertprobe: error: ")
    import re

    assert re.search(message, err), err


def test_command_prints_the_address_and_serves(tmp_path, capsys, tiny_distilbert, monkeypatch):
    import uvicorn

    served = []
    monkeypatch.setattr(
        uvicorn.Server, "run", lambda self, sockets=None: served.append(sockets[0].getsockname())
    )
    pool = tmp_path / "pool.txt"
    pool.write_text("".join(f"{t}\n" for t in POOL), encoding="utf-8")
    port = free_port()
    argv = ["label", pool, "--labels", "pos,neg", "--out", tmp_path / "out.tsv"]
    code, _, err = run([*argv, "--encoder", tiny_distilbert, "--port", port], capsys)
    assert code == 0, err
    assert f"http://127.0.0.1:{port}/" in err
    assert served == [("127.0.0.1", port)]


# --- the page in a browser ----------------------------------------------------------------------


@pytest.fixture
def page_url(pool_txt, tmp_path, encoding):
    import uvicorn

    out = tmp_path / "labelled.tsv"
    session = open_session(pool_txt, out, encoding, n=10)
    port = free_port()
    server = uvicorn.Server(
        uvicorn.Config(create_label_app(session), host="127.0.0.1", port=port, log_level="warning")
    )
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        assert time.monotonic() < deadline, "the server did not start"
        time.sleep(0.05)
    yield f"http://127.0.0.1:{port}", out
    server.should_exit = True
    thread.join(timeout=30)
    session.wait(timeout=30)


def test_the_page_labels_with_keys_undoes_and_shows_an_estimate(page_url):
    from playwright.sync_api import sync_playwright

    from browser import open_browser

    url, out = page_url
    with sync_playwright() as p:
        browser = open_browser(p)
        page = browser.new_page()
        problems: list[str] = []
        page.on("pageerror", lambda e: problems.append(str(e)))
        page.goto(url + "/")
        page.wait_for_selector("#text[data-row]")
        assert page.locator("button.label").all_inner_texts() == ["1pos", "2neg"]

        def shown() -> tuple[str, str]:
            return page.get_attribute("#text", "data-row"), page.inner_text("#text")

        def press(key: str) -> None:
            row, _ = shown()
            page.keyboard.press(key)
            page.wait_for_function(
                "row => document.getElementById('text').dataset.row !== row", arg=row
            )

        answered = []
        for i in range(4):
            _, text = shown()
            press("1" if i % 2 == 0 else "2")
            answered.append((text, "pos" if i % 2 == 0 else "neg"))
        undone_text = answered[-1][0]
        page.keyboard.press("u")  # the last answer comes back, and leaves the file
        page.wait_for_function(
            "text => document.getElementById('text').textContent === text", arg=undone_text
        )
        answered.pop()
        assert page.inner_text("#counts li[data-label='neg'] .count") == "1"
        assert page.inner_text("#counts li[data-label='pos'] .count") == "2"
        assert file_rows(out) == answered
        proposed = page.get_attribute("button.label.proposed", "data-label")
        assert proposed in ("pos", "neg")
        assert page.inner_text("#proposal").startswith(f"Enter: {proposed}")
        _, text = shown()
        press("Enter")  # one key takes the pre-selected label
        answered.append((text, proposed))
        assert file_rows(out) == answered
        page.keyboard.press("u")
        page.wait_for_function(
            "text => document.getElementById('text').textContent === text", arg=text
        )
        answered.pop()
        press("s")  # skipped: not in the file
        for i in range(8):
            _, text = shown()
            press("2" if i % 2 == 0 else "1")
            answered.append((text, "neg" if i % 2 == 0 else "pos"))
        assert file_rows(out) == answered  # every answer is in the file as soon as it is given
        counts = {
            label: page.inner_text(f"#counts li[data-label='{label}'] .count")
            for label in ("pos", "neg")
        }
        assert counts == {"pos": "6", "neg": "5"}
        assert page.inner_text("#progress-text").startswith(f"11 / {len(POOL)} labelled")
        # A batch of 10 is done: the probe is refitted in the background and its estimate shown.
        page.wait_for_function(
            "document.getElementById('estimate').textContent.includes('%')", timeout=30000
        )
        estimate = page.inner_text("#estimate")
        browser.close()
    assert "answers (" in estimate and "folds" in estimate
    assert problems == []
