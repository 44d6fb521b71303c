"""Write the package's import graph into docs/architecture.md, from the code itself.

grimp (the graph import-linter checks) reads which layer imports which; the Mermaid chart
between the markers in docs/architecture.md is replaced with it. ``--check`` exits 1 when the
chart in the file is not the one the code makes (the test suite runs it).

    python docs/package_graph.py [--check]
"""

from __future__ import annotations

import sys
from pathlib import Path

import grimp

DOC = Path(__file__).with_name("architecture.md")
BEGIN, END = "<!-- package-graph:begin -->", "<!-- package-graph:end -->"
# The layers, top first, as pyproject.toml's contract names them.
LAYERS = [
    ["cli"],
    ["web"],
    ["mlflow"],
    ["serve", "label", "report", "ray_engine", "export"],
    ["model"],
    ["training"],
    ["heads", "encoders"],
    ["data"],
    ["core"],
]


def chart() -> str:
    """The Mermaid flowchart of which layer's modules import which (one arrow a pair)."""
    graph = grimp.build_graph("bertprobe", exclude_type_checking_imports=True)
    names = [name for layer in LAYERS for name in layer]
    lines = ["```mermaid", "flowchart TD"]
    for depth, layer in enumerate(LAYERS):
        members = " & ".join(layer)
        lines.append(f"    %% layer {depth + 1}: {members}")
    for importer in names:
        for imported in names:
            if importer != imported and graph.direct_import_exists(
                importer=f"bertprobe.{importer}", imported=f"bertprobe.{imported}", as_packages=True
            ):
                lines.append(f"    {importer} --> {imported}")
    lines.append("```")
    return "\n".join(lines)


def main(argv: list[str]) -> int:
    text = DOC.read_text(encoding="utf-8")
    start, stop = text.index(BEGIN) + len(BEGIN), text.index(END)
    made = f"\n{chart()}\n"
    if "--check" in argv:
        if text[start:stop] != made:
            print(f"{DOC}: the package graph is not the code's; run python docs/package_graph.py")
            return 1
        return 0
    DOC.write_text(text[:start] + made + text[stop:], encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
