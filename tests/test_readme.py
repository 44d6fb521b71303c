"""Every code block of the README and the documentation site (docs/) runs, or is checked.

- ```python blocks run, as written, page by page in one scratch folder: the SST-2 files are
  120-sentence subsets in data/sst2/, ``load_sst2`` gives the same subsets, the "minilm"
  encoder is the tiny DistilBERT, and models/sst2 holds a model trained as the first
  classifier page trains it (the guides load it). A page's blocks run in order, so a block may
  use what an earlier block of its page made.
- ```bash blocks: every ``bertprobe`` command line is parsed by the CLI itself (command,
  options, values, ranges; nothing runs); every ``make`` target exists in the Makefile.
- The shell blocks of the front door (the README, the first-classifier page) also run, command
  by command, in the scratch folder (``serve`` is only parsed: it listens until stopped).
- A block that cannot run says so on the line before it: ``<!-- docs: no-run (why) -->``.
"""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import pytest

from bertprobe.data.files import LabelledTexts
from bertprobe.datasets import load_sst2

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"
# The pages of the site, and the README; the changelog page only includes CHANGELOG.md.
PAGES = [README, *sorted((ROOT / "docs").rglob("*.md"))]
FENCE = re.compile(
    r"^(?P<indent> *)```(?P<lang>[\w-]*)[^\n]*\n(?P<code>.*?)^(?P=indent)```", re.M | re.S
)
NO_RUN = re.compile(r"<!-- docs: no-run \((?P<why>[^)]+)\) -->\s*$")
# Languages of code meant to run; other fences (text, json, console output, mermaid) show
# data or output.
RUNNABLE = {"python", "py", "bash", "sh", "shell"}
SHOWN = {"", "text", "json", "console", "mermaid"}
# Shell operators: a command line is split at them (a `bertprobe` command piped into another).
OPERATORS = {"|", "||", "&&", ";", "&", "(", ")", ">", ">>", "<", "$("}


def code_blocks(page: Path) -> list[tuple[str, str, str | None]]:
    """``(language, code, no-run reason or None)`` for each fenced block of ``page``."""
    text = page.read_text(encoding="utf-8")
    blocks = []
    for match in FENCE.finditer(text):
        before = text[: match.start()].rstrip("\n").rsplit("\n", 1)[-1]
        marked = NO_RUN.search(before)
        blocks.append((match["lang"], match["code"], marked["why"] if marked else None))
    return blocks


def python_blocks(page: Path = README) -> list[str]:
    return [code for lang, code, why in code_blocks(page) if lang == "python" and why is None]


def command_lines(code: str) -> list[list[str]]:
    """The ``bertprobe ...`` commands of a shell block, as argument lists (after the name)."""
    found = []
    for line in code.replace("\\\n", " ").splitlines():
        lexer = shlex.shlex(line, posix=False, punctuation_chars=True)
        lexer.whitespace_split = True
        lexer.commenters = "#"
        words: list[str] = []
        for token in [*lexer, ";"]:
            if token in OPERATORS or set(token) <= set("|&;<>()"):
                if words[:1] == ["bertprobe"]:
                    found.append(words[1:])
                words = ["<redirected>"] if token in {">", ">>", "<"} else []
            else:
                words.append(shlex.split(token)[0] if token.strip("'\"") else token)
    return found


def _subset(split: str, n: int) -> LabelledTexts:
    full = load_sst2(split)
    return LabelledTexts(
        full.texts[:n], full.labels[:n], full.source, full.sha256, full.line_numbers[:n]
    )


def test_the_pages_have_code_and_every_block_is_known():
    assert len(python_blocks()) >= 1
    assert len(PAGES) >= 20
    for page in PAGES:
        for lang, _code, why in code_blocks(page):
            where = f"{page.relative_to(ROOT)}: a ```{lang} block"
            assert lang in RUNNABLE | SHOWN, f"{where}: unknown language; runnable or shown?"
            if lang in {"py", "sh", "shell"}:
                assert why, f"{where}: use ```python / ```bash, or mark it no-run with a reason"


def test_no_run_markers_need_a_reason_and_a_block():
    for page in PAGES:
        text = page.read_text(encoding="utf-8")
        for match in re.finditer(r"^<!-- docs: no-run.*?-->", text, flags=re.M):
            assert NO_RUN.fullmatch(match.group(0)), f"{page.name}: {match.group(0)}: why?"
            after = text[match.end() :].lstrip(" ")
            assert after.startswith("\n```"), f"{page.name}: {match.group(0)} marks no block"


def test_command_lines_are_split_as_a_shell_would():
    code = (
        "cat reviews.txt | bertprobe predict --model m -   # a comment\n"
        "bertprobe train films.tsv --label-sep '|' --out x \\\n    --json > out.json\n"
        'kill -HUP $(pgrep -f "bertprobe serve")\n'
    )
    assert command_lines(code) == [
        ["predict", "--model", "m", "-"],
        ["train", "films.tsv", "--label-sep", "|", "--out", "x", "--json"],
    ]


@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(ROOT)))
def test_shell_blocks_parse(page):
    """Every `bertprobe` command line of the page parses: the command exists, its options
    exist, and their values are of the right type and in range. `make` targets exist."""
    import click
    import typer

    from bertprobe.cli import app

    root = typer.main.get_command(app)
    makefile = (ROOT / "Makefile").read_text(encoding="utf-8")
    targets = set(re.findall(r"^([\w-]+):", makefile, flags=re.M))
    for lang, code, why in code_blocks(page):
        if lang not in {"bash", "sh", "shell"} or why is not None:
            continue
        for argv in command_lines(code):
            context = root.context_class(root, info_name="bertprobe")
            command = root.get_command(context, argv[0]) if argv else None
            assert command is not None, f"{page.name}: no command: bertprobe {' '.join(argv)}"
            try:
                command.make_context(argv[0], argv[1:], parent=context)
            except (click.exceptions.Exit, click.ClickException, Exception) as exc:
                message = exc.format_message() if hasattr(exc, "format_message") else exc
                pytest.fail(f"{page.name}: bertprobe {' '.join(argv)}\n  {message}")
        for target in re.findall(r"^make ([\w-]+)", code, flags=re.M):
            assert target in targets, f"{page.name}: make {target}: no such target"


@pytest.fixture(scope="module")
def scratch(tiny_distilbert, tmp_path_factory) -> Path:
    """The folder the pages' Python runs in: SST-2 subsets, and models/sst2 trained."""
    from bertprobe import EncoderOptions, train

    folder = tmp_path_factory.mktemp("docs")
    (folder / "data" / "sst2").mkdir(parents=True)
    for split in ("train", "test"):
        subset = _subset(split, 120)
        (folder / "data" / "sst2" / f"{split}.tsv").write_text(
            "".join(f"{t}\t{y}\n" for t, y in zip(subset.texts, subset.labels, strict=True)),
            encoding="utf-8",
        )
    subset = _subset("train", 120)  # a CSV with a header, as the first-classifier page has
    (folder / "reviews.csv").write_text(
        "review,stars\n"
        + "".join(f'"{t}",{y}\n' for t, y in zip(subset.texts, subset.labels, strict=True)),
        encoding="utf-8",
    )
    train(
        str(folder / "data" / "sst2" / "train.tsv"),
        encoding=EncoderOptions(str(tiny_distilbert), pooling="mean"),
        out=str(folder / "models" / "sst2"),
    )
    return folder


PYTHON_PAGES = [page for page in PAGES if python_blocks(page)]


@pytest.mark.parametrize("page", PYTHON_PAGES, ids=lambda p: str(p.relative_to(ROOT)))
def test_python_blocks_run(page, scratch, tiny_distilbert, monkeypatch, capsys):
    """The page's blocks run in order, as a reader would paste them."""
    import bertprobe.datasets

    monkeypatch.chdir(scratch)
    monkeypatch.setattr(bertprobe.datasets, "load_sst2", lambda split: _subset(split, 120))
    for block in python_blocks(page):
        code = block.replace('"minilm"', repr(str(tiny_distilbert)))
        try:
            exec(compile(code, str(page), "exec"), {"__name__": "docs"})  # noqa: S102
        except Exception as exc:  # pragma: no cover - the failure message is the point
            pytest.fail(f"a block of {page.name} failed ({type(exc).__name__}: {exc}):\n{block}")
    printed = capsys.readouterr().out
    assert printed.strip(), f"{page.name}: its blocks print nothing to check"


FRONT_DOOR = [README, ROOT / "docs" / "getting-started" / "first-classifier.md"]


@pytest.mark.parametrize("page", FRONT_DOOR, ids=lambda p: str(p.relative_to(ROOT)))
def test_front_door_commands_run(page, scratch, tiny_distilbert, monkeypatch, capsys):
    """Each command of the page's shell blocks runs and exits 0, in order."""
    from bertprobe.cli import main

    monkeypatch.chdir(scratch)
    ran = 0
    for lang, code, why in code_blocks(page):
        if lang != "bash" or why is not None:
            continue
        for argv in command_lines(code):
            if argv[0] == "serve":
                continue
            argv = [str(tiny_distilbert) if a == "minilm" else a for a in argv]
            argv = [a for a in argv if a != "<redirected>"]
            try:
                main(argv)
            except SystemExit as exc:
                assert exc.code in (0, None), (
                    f"{page.name}: bertprobe {' '.join(argv)} exited {exc.code}:\n"
                    f"{capsys.readouterr().err[-2000:]}"
                )
            ran += 1
    assert ran >= 4


def test_the_readme_is_the_front_door():
    """Short, the two set-up commands exactly, a Python and a CLI example, a generated table,
    and a link to every page of the site."""
    text = README.read_text(encoding="utf-8")
    assert len(text.splitlines()) <= 200
    assert "make demo   # fresh clone" in text and "make test   # fresh clone" in text
    assert python_blocks() and "<!-- table: demo -->" in text
    for page in sorted((ROOT / "docs").rglob("*.md")):
        name = page.relative_to(ROOT).as_posix()
        if name not in {"docs/changelog.md", "docs/index.md"}:
            assert f"({name})" in text, f"the README does not link {name}"
