"""MkDocs hooks (mkdocs.yml ``hooks:``): what the site generates instead of copying.

- The command reference: reference/cli.md's ``<!-- cli-reference -->`` becomes a section per
  command, walked from the click command tree typer makes of ``bertprobe.cli.app``: its help,
  usage line, arguments and options with their help, defaults and ranges (click's own help
  records, what ``--help`` prints). typer vendors its own click, which mkdocs-click does not
  recognise, hence this walk.
- The HTTP API: the OpenAPI schema of the service, built at build time by
  :func:`bertprobe.serve.create_app` around a model trained on 40 SST-2 sentences with the
  bundled encoder, written to ``build/docs/openapi.json`` for reference/http-api.md (rendered
  by neoteroi-mkdocs) and into the site as ``openapi.json``.
- The model card: reference/model-folder.md's ``<!-- card-example -->`` becomes the card of
  that model, as saved.
- Error messages: reference/errors.md's ``<!-- error-examples -->`` becomes what the CLI prints
  for a few bad command lines, run in-process when the site is built, with their exit status.
- The benchmark tables: a page whose ``<!-- table: NAME -->`` regions differ from what
  ``bench/tables.py`` makes of ``bench/results/*.json`` fails the build (run
  ``python bench/tables.py FILE`` to refresh it).
- Sphinx roles left in docstrings (``:func:`~bertprobe.train```) show as code.
"""

from __future__ import annotations

import contextlib
import inspect
import io
import json
import re
import shutil
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
SCHEMA = ROOT / "build" / "docs" / "openapi.json"
EXAMPLE_MODEL = ROOT / "build" / "docs" / "sst2-40"
CARD_MARKER = "<!-- card-example -->"
ERRORS_MARKER = "<!-- error-examples -->"
# A role as markdown renders it (":func:<code>~x.y</code>", ":meth:<code>y &lt;x.y&gt;</code>"),
# or left whole inside a code span (a type in a parameters table).
ROLE = re.compile(
    r":(?:mod|class|func|meth|attr|data|exc|obj):(?:<code>~?([\w.]+)(?: &lt;[\w.]+&gt;)?</code>"
    r"|`~?([\w.]+)`)"
)


CLI_MARKER = "<!-- cli-reference -->"


def _cell(text: str) -> str:
    return " ".join(text.split()).replace("|", "\\|")


def cli_reference() -> str:
    """Markdown for every command of ``bertprobe``: help, usage, arguments, options."""
    import typer

    from bertprobe.cli import app

    root = typer.main.get_command(app)
    context = root.context_class(root, info_name="bertprobe")
    parts = []
    for name in root.list_commands(context):
        command = root.get_command(context, name)
        if command is None or command.hidden:
            continue
        ctx = command.context_class(command, parent=context, info_name=name)
        parts += [f"## `bertprobe {name}`", "", inspect.cleandoc(command.help or ""), ""]
        parts += ["```text", ctx.get_usage(), "```", ""]
        params = [p for p in command.get_params(ctx) if not getattr(p, "hidden", False)]
        arguments = [p for p in params if p.param_type_name == "argument"]
        options = [p for p in params if p.param_type_name == "option"]
        for title, group in (("Arguments", arguments), ("Options", options)):
            records = [r for r in (p.get_help_record(ctx) for p in group) if r]
            if not records:
                continue
            parts += [f"**{title}**", "", "| | |", "| --- | --- |"]
            parts += [f"| `{_cell(flags)}` | {_cell(text)} |" for flags, text in records]
            parts.append("")
    return "\n".join(parts)


def _tables() -> Any:
    if str(ROOT / "bench") not in sys.path:
        sys.path.insert(0, str(ROOT / "bench"))
    import tables

    return tables


def error_examples() -> str:
    """Bad command lines run through the CLI's entry point: what it prints, its exit status."""
    from bertprobe.cli import main

    edited = EXAMPLE_MODEL.parent / "sst2-40-edited"
    if edited.exists():
        shutil.rmtree(edited)
    shutil.copytree(EXAMPLE_MODEL, edited)
    card = json.loads((edited / "card.json").read_text(encoding="utf-8"))
    card["features"]["pooling"] = "cls"
    (edited / "card.json").write_text(json.dumps(card, indent=2), encoding="utf-8")
    cases = [
        ("a missing file", ["train", "reviews.csv", "--encoder", "minilm"]),
        (
            "an unknown column",
            ["train", "data/sst2/train.tsv", "--text-col", "review", "--encoder", "minilm"],
        ),
        ("a folder that is not a model", ["predict", "--model", "data/sst2", "a fine film"]),
        (
            "a model folder whose card was edited",
            ["predict", "--model", "build/docs/sst2-40-edited", "a fine film"],
        ),
        ("a value outside an option's range", ["train", "data/sst2/train.tsv", "--cv", "1"]),
        ("an unknown command", ["fit", "data/sst2/train.tsv"]),
    ]
    parts = []
    for what, argv in cases:
        err = io.StringIO()
        with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
            try:
                main(argv)
                status: Any = 0
            except SystemExit as exc:
                status = exc.code
        shown = " ".join(a if " " not in a else f'"{a}"' for a in argv)
        parts += [
            f"{what.capitalize()}:",
            "",
            "```console",
            f"$ bertprobe {shown}",
            err.getvalue().replace(str(ROOT) + "/", "").rstrip(),
            f"$ echo $?\n{status}",
            "```",
            "",
        ]
    return "\n".join(parts)


def openapi_schema() -> dict:
    """The service's OpenAPI schema, for a small single-label model behind an API key."""
    from bertprobe import Classifier, EncoderOptions, RunOptions, TrainOptions
    from bertprobe.datasets import load_sst2
    from bertprobe.serve import ServeConfig, ServeSecurity, create_app

    sst2 = load_sst2("train")
    model = Classifier.fit(
        sst2.texts[:40],
        sst2.labels[:40],
        encoding=EncoderOptions("minilm", pooling="mean", run=RunOptions(use_cache=False)),
        options=TrainOptions(cv=2),
    )
    if EXAMPLE_MODEL.exists():
        shutil.rmtree(EXAMPLE_MODEL)
    model.save(EXAMPLE_MODEL)  # a saved model has its card's id; its card is shown too
    model = Classifier.load(EXAMPLE_MODEL)
    app = create_app(model, ServeConfig(security=ServeSecurity(api_key="key-for-the-schema")))
    schema = app.openapi()
    # The description names the throwaway model; the reference describes any model.
    schema["info"]["description"] = (
        "A bertprobe model served by `bertprobe serve`; `GET /v1/model` gives its card."
    )
    schema["info"]["version"] = "bertprobe"
    return schema


def on_pre_build(config: Any) -> None:
    SCHEMA.parent.mkdir(parents=True, exist_ok=True)
    SCHEMA.write_text(json.dumps(openapi_schema(), indent=2) + "\n", encoding="utf-8")


def on_page_markdown(markdown: str, page: Any, config: Any, files: Any) -> str:
    from mkdocs.exceptions import PluginError

    if CLI_MARKER in markdown:
        markdown = markdown.replace(CLI_MARKER, cli_reference())
    if ERRORS_MARKER in markdown:
        markdown = markdown.replace(ERRORS_MARKER, error_examples())
    if CARD_MARKER in markdown:
        card = (EXAMPLE_MODEL / "card.json").read_text(encoding="utf-8")
        markdown = markdown.replace(CARD_MARKER, f"```json\n{card.strip()}\n```")
    if "<!-- table: " in markdown and _tables().render(markdown) != markdown:
        raise PluginError(
            f"stale benchmark tables in docs/{page.file.src_path}; run: "
            f"python bench/tables.py docs/{page.file.src_path}"
        )
    return markdown


def on_page_content(html: str, page: Any, config: Any, files: Any) -> str:
    def short(match: re.Match) -> str:
        name = (match.group(1) or match.group(2)).rsplit(".", 1)[-1]
        return name if match.group(2) else f"<code>{name}</code>"

    return ROLE.sub(short, html)


def on_files(files: Any, config: Any) -> Any:
    from mkdocs.structure.files import File

    files.append(File.generated(config, "openapi.json", abs_src_path=str(SCHEMA)))
    return files
