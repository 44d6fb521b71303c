"""``bertprobe explain``: why a model gives texts their labels, word by word.

Prints each text with its words coloured by their share of the predicted class's score (green
for it, red against; rich's colours when rich is installed, else the terminal's basic ones),
then its strongest words; ``--json`` prints JSON Lines (one explanation a text, see
:meth:`bertprobe.model.explain.Explanation.to_dict`); ``--html OUT`` writes one page for all
the texts (:func:`bertprobe.report.write_explanation_page`).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from bertprobe.cli.inputs import gather_texts
from bertprobe.cli.options import FROM_FLAGS, RUN, TEXTS, ModelOpt, ThresholdOpt, shared
from bertprobe.cli.printing import note
from bertprobe.core.extras import require_extra
from bertprobe.data.files import ReadOptions, check_output_path
from bertprobe.encoders.options import RunOptions
from bertprobe.model.classifier import Classifier
from bertprobe.model.explain import Explanation, Word
from bertprobe.model.gradients import DEFAULT_STEPS

TextsOpt = Annotated[
    list[str] | None,
    typer.Argument(help="Texts to explain; '-' reads one text a line from stdin."),
]
InputOpt = Annotated[
    Path | None,
    typer.Option("--input", "-i", help="File of texts: one a line, or a table with a text column."),
]
MethodOpt = Annotated[
    str,
    typer.Option(
        "--method",
        help="auto: the exact split of the score where the model allows it (mean pooling, "
        "a linear head, no TF-IDF vote), else occlusion; exact; occlusion (leave one word out); "
        "integrated-gradients (Captum, any torch encoder with a linear head; --steps passes).",
    ),
]
StepsOpt = Annotated[
    int,
    typer.Option(
        "--steps", min=1, max=1000, help="integrated-gradients: points of the path integral."
    ),
]
OccludeOpt = Annotated[
    str,
    typer.Option("--occlude", help="Occlusion: delete the word, or mask each of its tokens."),
]
TopOpt = Annotated[int, typer.Option("--top", min=0, help="Strongest words listed per text.")]
HtmlOpt = Annotated[
    Path | None,
    typer.Option("--html", metavar="OUT", help="Also write one HTML page for all the texts."),
]
JsonLinesOpt = Annotated[
    bool, typer.Option("--json", help="Print JSON Lines: one explanation a text.")
]


@shared(run=RUN, reading=TEXTS)
def explain(
    texts: TextsOpt = None,
    model_dir: ModelOpt = Path("."),
    input_file: InputOpt = None,
    method: MethodOpt = "auto",
    occlude: OccludeOpt = "delete",
    steps: StepsOpt = DEFAULT_STEPS,
    top: TopOpt = 5,
    html: HtmlOpt = None,
    threshold: ThresholdOpt = None,
    as_json: JsonLinesOpt = False,
    run: RunOptions = FROM_FLAGS,
    reading: ReadOptions = FROM_FLAGS,
) -> None:
    """Why each text gets its label: every word's share of the class's score.

    For mean pooling the shares add up exactly to the score (each word's hidden state read
    out by the probe: evidence at that position, not the effect of deleting the word); other
    models leave one word out at a time; --method integrated-gradients follows the gradient
    from a text of pad tokens to the text.
    """
    if html is not None:
        require_extra("report")
        check_output_path(html, what="--html", folder=False)
    model = Classifier.load(model_dir)
    items = gather_texts(texts or [], input_file, reading)
    found = model.explain(
        items, run, method=method, occlude=occlude, threshold=threshold, steps=steps
    )
    if html is not None:
        from bertprobe.report import write_explanation_page

        note(f"wrote {write_explanation_page(model, found, html)}")
    if as_json:
        for e in found:
            typer.echo(json.dumps(e.to_dict()))
        return
    for note_line in sorted({e.note for e in found}):
        note(f"note: {note_line}")
    for e in found:
        _print(e, top)


def _print(e: Explanation, top: int) -> None:
    """One text: its label and probability, the text coloured, its strongest words."""
    label = ", ".join(str(y) for y in e.labels) or "(no label)"
    c = e.column
    given = f" (given at {e.decision[c]:+.3f})" if e.decision is not None and e.decision[c] else ""
    delta = f", delta {e.delta:.2g}" if e.delta is not None else ""
    head = f"{label}  p={e.proba[c]:.3f}  {e.score} {e.logits[c]:+.3f}{given}  [{e.method}{delta}]"
    scale = float(abs(e.scores[:, c]).max()) if len(e.words) else 0.0
    pieces: list[tuple[str, float | None]] = []
    at = 0
    for word, s in zip(e.words, e.scores[:, c], strict=True):
        pieces.append((e.text[at : word.start], None))
        pieces.append((word.text, float(s) / scale if scale else 0.0))
        at = word.end
    pieces.append((e.text[at:], None))
    strongest = ", ".join(f"{w.text} {e.scores[i, c]:+.3f}" for i, w in _top(e, top, c))
    try:
        from rich.console import Console
        from rich.text import Text
    except ImportError:  # rich is optional: the terminal's basic colours
        typer.echo(head)
        typer.echo("".join(_styled(text, s) for text, s in pieces))
    else:
        console = Console(highlight=False, soft_wrap=True)
        console.print(Text(head))
        line = Text()
        for text, s in pieces:
            line.append(text, style=_rich_style(s))
        console.print(line)
    if strongest:
        typer.echo(f"  top: {strongest}")


def _top(e: Explanation, k: int, column: int) -> list[tuple[int, Word]]:
    return [(int(i), e.words[i]) for i in e.ranking(column)[:k]]


def _rich_style(s: float | None) -> str:
    """A background from white to green (for the class) or red (against), by strength."""
    if s is None or abs(s) < 0.05:
        return ""
    a = min(1.0, abs(s))
    to = (26, 150, 65) if s > 0 else (215, 48, 39)
    r, g, b = (round(255 + (t - 255) * a * 0.8) for t in to)
    return f"black on rgb({r},{g},{b})"


def _styled(text: str, s: float | None) -> str:
    if s is None or abs(s) < 0.05:
        return text
    return typer.style(text, fg="green" if s > 0 else "red", bold=abs(s) >= 0.5)
