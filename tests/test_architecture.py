"""The architecture page's package graph is the one the code makes (docs/package_graph.py)."""

from __future__ import annotations

import runpy
from pathlib import Path

DOCS = Path(__file__).resolve().parents[1] / "docs"


def test_the_package_graph_in_the_docs_is_the_codes():
    graph = runpy.run_path(str(DOCS / "package_graph.py"))
    assert graph["main"](["--check"]) == 0, "run: python docs/package_graph.py"
    chart = graph["chart"]()
    # The layers point down: nothing below the shells imports them.
    assert "model --> serve" not in chart and "core --> data" not in chart
    assert "training --> heads" in chart


def test_the_graphs_layers_are_the_contracts():
    """A layer added to pyproject.toml's contract is drawn too (export --web's ``web`` was not)."""
    import tomllib

    contracts = tomllib.loads((DOCS.parent / "pyproject.toml").read_text())["tool"]["importlinter"]
    [layers] = [c["layers"] for c in contracts["contracts"] if c["id"] == "layers"]
    graph = runpy.run_path(str(DOCS / "package_graph.py"))
    assert [" | ".join(layer) for layer in graph["LAYERS"]] == layers
