"""``bertprobe suggest``: the pool texts to label next."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, cast

import typer

from bertprobe.cli.options import FROM_FLAGS, RUN, TEXTS, shared
from bertprobe.cli.printing import note
from bertprobe.core.errors import BadInputError
from bertprobe.data.files import ReadOptions, check_output_path
from bertprobe.encoders.options import EncoderOptions, RunOptions
from bertprobe.encoders.pooling import POOLINGS, check_pooling
from bertprobe.model.classifier import Classifier
from bertprobe.model.suggest import Strategy, Suggestion
from bertprobe.model.suggest import suggest as suggest_texts

PoolOpt = Annotated[
    Path,
    typer.Option(
        "--pool", help="Unlabelled texts to choose from: one a line, or a table with a text column."
    ),
]
CountOpt = Annotated[int, typer.Option("--n", help="How many texts to suggest.")]
SuggestModelOpt = Annotated[
    Path | None,
    typer.Option(
        "--model", "-m", help="Model folder: suggest the texts it is least sure of, varied."
    ),
]
SuggestEncoderOpt = Annotated[
    str | None,
    typer.Option(
        "--encoder",
        "-e",
        help="No model yet: suggest texts that stand for the pool, from this encoder's vectors "
        "(hub name, local folder, or 'minilm').",
    ),
]
PoolingOpt = Annotated[
    str,
    typer.Option(help=f"--encoder: how token vectors become one: {', '.join(POOLINGS)}."),
]
LabelledOpt = Annotated[
    Path | None,
    typer.Option("--labelled", help="Texts labelled already (a training file): skipped."),
]
OutOpt = Annotated[
    Path | None,
    typer.Option(
        "--out",
        help="Also write the texts as a TSV with an empty label column: fill it in and it is "
        "a training file.",
    ),
]
# Not the shared --json: this command prints one JSON object a suggestion, not one in all.
JsonLinesOpt = Annotated[
    bool, typer.Option("--json", help="Print JSON Lines: row, score, reason, text.")
]
SeedOpt = Annotated[int, typer.Option(min=0, help="Seeds the clustering.")]
StrategyOpt = Annotated[
    str,
    typer.Option(
        help="uncertain: the model's least sure texts, varied (texts that stand for the pool "
        "with no model); typical: TypiClust, the most typical text of each group of the pool "
        "no label covers (no model needed)."
    ),
]


@shared(run=RUN, reading=TEXTS)
def suggest(
    pool: PoolOpt,
    n: CountOpt = 20,
    model_dir: SuggestModelOpt = None,
    encoder: SuggestEncoderOpt = None,
    pooling: PoolingOpt = "mean",
    labelled: LabelledOpt = None,
    out: OutOpt = None,
    seed: SeedOpt = 0,
    strategy: StrategyOpt = "uncertain",
    as_json: JsonLinesOpt = False,
    run: RunOptions = FROM_FLAGS,
    reading: ReadOptions = FROM_FLAGS,
) -> None:
    """The pool texts to label next: with --model, those it is least sure of, one per kind;
    with --encoder (no model yet), texts that stand for the pool.

    Prints one text a line (row in the pool, uncertainty, text), or JSON Lines with --json.
    """
    # Checked here as well as in the library, so a bad count fails before a model loads.
    if n < 1:
        raise BadInputError(f"--n {n}: ask for at least 1 text to label")
    if (model_dir is None) == (encoder is None):
        raise BadInputError(
            "give --model DIR (suggest what it is least sure of) or --encoder NAME (no model "
            "yet: suggest texts that stand for the pool), "
            + ("not both" if model_dir is not None else "one of them")
        )
    if out is not None:
        check_output_path(out, what="--out", folder=False)
    model = Classifier.load(model_dir) if model_dir is not None else None
    encoding = (
        EncoderOptions(encoder, pooling=check_pooling(pooling)) if encoder is not None else None
    )
    picks = suggest_texts(
        pool,
        n=n,
        model=model,
        encoding=encoding,
        labelled=labelled,
        run=run,
        seed=seed,
        reading=reading,
        strategy=cast(Strategy, strategy),
    )
    if out is not None:
        _write_tsv(out, picks)
        note(f"wrote {len(picks)} texts to {out}; fill in the label column to train on them")
    for pick in picks:
        if as_json:
            typer.echo(json.dumps(_record(pick)))
        else:
            score = "-" if pick.score is None else f"{pick.score:.3f}"
            typer.echo(f"{pick.row}\t{score}\t{pick.text}")


def _record(pick: Suggestion) -> dict[str, object]:
    return {"row": pick.row, "score": pick.score, "reason": pick.reason, "text": pick.text}


def _write_tsv(path: Path, picks: list[Suggestion]) -> None:
    # The header names the columns so the reader finds them; TSV files are read without
    # quoting, so a tab or line break inside a text becomes a space.
    lines = ["text\tlabel\n"]
    lines += [" ".join(pick.text.split()) + "\t\n" for pick in picks]
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(lines), encoding="utf-8")
