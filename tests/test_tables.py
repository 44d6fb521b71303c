"""Benchmark tables in the docs are the ones bench/results gives (bench/tables.py)."""

from __future__ import annotations

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
