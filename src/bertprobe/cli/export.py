"""``bertprobe export``: the whole classifier as one ONNX graph, or (``--web``) a static page
that runs it in the browser."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from bertprobe.cli.options import JsonOpt, ModelOpt
from bertprobe.core.errors import BadInputError
from bertprobe.core.extras import require_extra

OutOpt = Annotated[
    Path,
    typer.Option(
        help="Folder to write: model.onnx, tokenizer.json and card.json (with --web, the page "
        "and its libraries too)."
    ),
]
Int8Opt = Annotated[
    bool,
    typer.Option("--int8", help="Quantize the graph's weights to int8 (smaller, faster on CPUs)."),
]
WebOpt = Annotated[
    bool,
    typer.Option(
        "--web",
        help="Write a static page (index.html) that runs the classifier in the browser, from "
        "any static file server; the graph is int8 unless --fp32.",
    ),
]
Fp32Opt = Annotated[
    bool,
    typer.Option("--fp32", help="With --web: keep the graph in float32 (about 4x the download)."),
]
WebAssetsOpt = Annotated[
    Path | None,
    typer.Option(
        "--web-assets",
        help="With --web: an npm install holding the page's libraries (onnxruntime-web, "
        "@huggingface/tokenizers, papaparse at bertprobe's pinned versions); by default "
        "$BERTPROBE_WEB_ASSETS, the one make installs, or the user cache.",
    ),
]


def export(
    model_dir: ModelOpt,
    out: OutOpt,
    int8: Int8Opt = False,
    web: WebOpt = False,
    fp32: Fp32Opt = False,
    web_assets: WebAssetsOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Write the whole classifier as one ONNX graph (token ids to probabilities), to run with
    onnxruntime and tokenizers alone; with --web, as a page that runs it in the browser."""
    if not web and (fp32 or web_assets is not None):
        raise BadInputError(f"{'--fp32' if fp32 else '--web-assets'} goes with --web")
    if fp32 and int8:
        raise BadInputError("--fp32 and --int8 ask for both; choose one")
    require_extra("onnx")
    if web:
        from bertprobe.web import WebOptions, export_web

        folder = export_web(model_dir, out, WebOptions(fp32=fp32, web_assets=web_assets))
    else:
        from bertprobe.export import export_classifier

        folder = export_classifier(model_dir, out, int8=int8)
    card = json.loads((folder / "card.json").read_text(encoding="utf-8"))
    if as_json:
        typer.echo(json.dumps({"out": str(folder), **card}))
        return
    size = (folder / "model.onnx").stat().st_size / 1e6
    typer.echo(
        f"wrote     {folder / 'model.onnx'} ({size:.1f} MB, {'int8' if card['int8'] else 'fp32'}), "
        "tokenizer.json, card.json"
    )
    typer.echo(f"classes   {', '.join(str(c) for c in card['classes'])}")
    typer.echo(
        f"graph     {', '.join(card['inputs'])} (int64 [batch, seq]) -> {card['output']} "
        "(float32 [batch, class])"
    )
    if web:
        total = sum(p.stat().st_size for p in folder.rglob("*") if p.is_file()) / 1e6
        typer.echo(
            f"page      {folder / 'index.html'} ({total:.1f} MB in all): publish the folder "
            "with any static file server, e.g. python -m http.server -d "
            f"{folder} (not file://)"
        )
