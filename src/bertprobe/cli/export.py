"""``bertprobe export``: the whole classifier as one ONNX graph."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from bertprobe.cli.options import JsonOpt, ModelOpt
from bertprobe.core.extras import require_extra

OutOpt = Annotated[
    Path,
    typer.Option(help="Folder to write: model.onnx, tokenizer.json and card.json."),
]
Int8Opt = Annotated[
    bool,
    typer.Option("--int8", help="Quantize the graph's weights to int8 (smaller, faster on CPUs)."),
]


def export(
    model_dir: ModelOpt,
    out: OutOpt,
    int8: Int8Opt = False,
    as_json: JsonOpt = False,
) -> None:
    """Write the whole classifier as one ONNX graph (token ids to probabilities), to run with
    onnxruntime and tokenizers alone."""
    require_extra("onnx")
    from bertprobe.export import export_classifier

    folder = export_classifier(model_dir, out, int8=int8)
    card = json.loads((folder / "card.json").read_text(encoding="utf-8"))
    if as_json:
        typer.echo(json.dumps({"out": str(folder), **card}))
        return
    size = (folder / "model.onnx").stat().st_size / 1e6
    typer.echo(
        f"wrote     {folder / 'model.onnx'} ({size:.1f} MB, {'int8' if int8 else 'fp32'}), "
        "tokenizer.json, card.json"
    )
    typer.echo(f"classes   {', '.join(str(c) for c in card['classes'])}")
    typer.echo(
        f"graph     {', '.join(card['inputs'])} (int64 [batch, seq]) -> {card['output']} "
        "(float32 [batch, class])"
    )
