"""Benchmark tables in the docs are the ones bench/results gives (bench/tables.py)."""

from __future__ import annotations

import json
import re
import runpy
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_the_docs_tables_are_generated_from_the_results():
    tables = runpy.run_path(str(ROOT / "bench" / "tables.py"))
    files = [str(ROOT / "README.md"), *map(str, sorted((ROOT / "docs").rglob("*.md")))]
    assert tables["main"](["--check", *files]) == 0, "run: python bench/tables.py " + " ".join(
        files
    )


def test_a_table_copied_by_hand_is_caught(tmp_path):
    tables = runpy.run_path(str(ROOT / "bench" / "tables.py"))
    page = tmp_path / "page.md"
    page.write_text("<!-- table: active-learning -->\n| 99% |\n<!-- end table -->\n")
    assert tables["main"](["--check", str(page)]) == 1
    assert tables["main"]([str(page)]) == 0 and tables["main"](["--check", str(page)]) == 0
    assert "6,920 (all)" in page.read_text()


def test_headline_figures_are_written_once():
    """A figure a table generates (an accuracy to two decimals) appears outside the generated
    tables nowhere in the README, the CHANGELOG or the docs, and no page states a rate
    (sentences/s, requests/s, texts/s) in its prose: they live in bench/results/*.json and
    reach the pages through bench/tables.py only."""
    tables = runpy.run_path(str(ROOT / "bench" / "tables.py"))
    generated = "\n".join(table() for table in tables["TABLES"].values())
    percents = set(re.findall(r"\b\d+\.\d\d%", generated))
    demo = json.loads((ROOT / "bench" / "results" / "demo.json").read_text(encoding="utf-8"))
    headline = [100 * run["test_correct"] / demo["n_test"] for run in demo["runs"]]
    assert {f"{x:.2f}%" for x in headline} <= percents  # make demo's test accuracies
    percents |= {f"{x:.1f}%" for x in headline}  # nor restated rounded
    files = [ROOT / "README.md", ROOT / "CHANGELOG.md", *sorted((ROOT / "docs").rglob("*.md"))]
    for path in files:
        prose = tables["REGION"].sub("", path.read_text(encoding="utf-8"))
        copied = percents & set(re.findall(r"\b\d+\.\d\d?%", prose))
        assert not copied, f"{path.name} copies {sorted(copied)}; use a generated table"
        rates = re.findall(r"\b\d[\d,.]*/s\b|\b\d[\d,.]* (?:sentences|requests|texts)/s", prose)
        assert not rates, f"{path.name} states {rates} by hand; use a generated table"


def test_every_figure_file_is_named_by_a_table():
    """Each bench/results file feeds a table, which says where its figures come from."""
    tables = runpy.run_path(str(ROOT / "bench" / "tables.py"))
    generated = "\n".join(table() for table in tables["TABLES"].values())
    for result in sorted((ROOT / "bench" / "results").glob("*.json")):
        assert f"bench/results/{result.name}" in generated, f"no table reads {result.name}"
