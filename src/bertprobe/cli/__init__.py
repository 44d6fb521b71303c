"""The ``bertprobe`` command line: train, evaluate, predict, embed, explain, sweep, suggest,
label, report, serve, export.

Each command parses its flags into the library's option objects, makes one library call
(:func:`bertprobe.train`, :class:`bertprobe.Classifier`, :func:`bertprobe.sweep`,
:func:`bertprobe.report.build_report`, ...) and prints what came back. Results go to standard
output (``--json`` for one JSON object); progress and notes go to standard error. A problem with
the input is one line on standard error and exit status 2.

The modules: :mod:`~bertprobe.cli.options` declares the flags that several commands share,
once; :mod:`~bertprobe.cli.train` (train, sweep), :mod:`~bertprobe.cli.predict` (evaluate,
predict, embed), :mod:`~bertprobe.cli.explain`, :mod:`~bertprobe.cli.suggest`,
:mod:`~bertprobe.cli.label`,
:mod:`~bertprobe.cli.report`, :mod:`~bertprobe.cli.serve` and :mod:`~bertprobe.cli.export` hold
the commands;
:mod:`~bertprobe.cli.printing` what they print without ``--json``; :mod:`~bertprobe.cli.errors`
the library's words as flags. This module makes the app and keeps the error contract
(:func:`main`).
"""

from __future__ import annotations

import sys
from typing import Annotated

import typer

from bertprobe import __version__
from bertprobe.cli import compare, explain, export, label, predict, report, serve, suggest, train
from bertprobe.cli.errors import in_cli_words, one_line
from bertprobe.cli.printing import note
from bertprobe.core.errors import BertprobeError

__all__ = ["app", "main"]

app = typer.Typer(
    name="bertprobe",
    help="Sentence classifiers from a frozen transformer encoder and a linear probe.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
    # Plain click formatting: usage errors are the usage line and one error line, whether or
    # not rich happens to be installed.
    rich_markup_mode=None,
)


def _print_version(value: bool) -> None:
    if value:
        typer.echo(f"bertprobe {__version__}")
        raise typer.Exit()


@app.callback()
def _options(
    version: Annotated[
        bool,
        typer.Option(
            "--version", callback=_print_version, is_eager=True, help="Print the version and exit."
        ),
    ] = False,
) -> None:
    """Sentence classifiers from a frozen transformer encoder and a linear probe."""


# Registered here, in the order --help lists them, rather than by decorators in the command
# modules: those then need no app to import, and importing one registers nothing by surprise.
app.command("train")(train.train)
app.command("evaluate")(predict.evaluate)
app.command("predict")(predict.predict)
app.command("embed")(predict.embed)
app.command("explain")(explain.explain)
app.command("sweep")(train.sweep)
app.command("compare")(compare.compare)
app.command("suggest")(suggest.suggest)
app.command("label")(label.label)
app.command("report")(report.report)
app.command("serve")(serve.serve)
app.command("export")(export.export)


def main(argv: list[str] | None = None) -> None:
    """Entry point: run the CLI; input problems become one line on stderr and exit 2.

    Usage errors (an unknown option or command, a missing argument, a value out of range) are
    left to the CLI library in its standalone mode: it prints the usage and one error line and
    exits 2. Catching its exception classes here instead broke when typer began raising its own
    vendored copies of click's; the standalone contract is the public one.
    """
    try:
        app(args=argv, prog_name="bertprobe")
    except BertprobeError as exc:
        note(f"bertprobe: error: {one_line(in_cli_words(exc))}")
        sys.exit(2)
    except BrokenPipeError:
        sys.exit(0)  # `bertprobe predict ... | head` closed the pipe: not an error
    except OSError as exc:
        if exc.filename is None:
            raise
        # A path the user named that the system refuses (too long, no permission, disk full):
        # their input or their machine, not a bug; the readers say more where they can.
        note(
            f"bertprobe: error: {one_line(str(exc.filename))}: {exc.strerror}; check the "
            "path, its permissions and the free space"
        )
        sys.exit(2)
    except SystemExit as exc:
        if exc.code == 130:  # the library's exit status for Ctrl-C
            note(
                "bertprobe: interrupted; finished batches are in the embedding cache, run the "
                "same command again to resume"
            )
        raise
