"""The README's Python blocks run, as written, on small data with the tiny encoder."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from bertprobe.data.files import LabelledTexts
from bertprobe.datasets import load_sst2

README = Path(__file__).resolve().parent.parent / "README.md"
# Guides whose blocks run after the README's, in the same folder (they use its models).
GUIDES = [README.parent / "docs" / "guides" / "explanations.md"]


def python_blocks(page: Path = README) -> list[str]:
    return re.findall(r"```python\n(.*?)```", page.read_text(encoding="utf-8"), flags=re.S)


def _subset(split: str, n: int) -> LabelledTexts:
    full = load_sst2(split)
    return LabelledTexts(
        full.texts[:n], full.labels[:n], full.source, full.sha256, full.line_numbers[:n]
    )


def test_the_readme_has_python_blocks():
    assert len(python_blocks()) >= 2
    assert all(python_blocks(guide) for guide in GUIDES)


def test_readme_python_blocks_run(tiny_distilbert, tmp_path, monkeypatch, capsys):
    """Each block runs in order in one folder, as a reader would paste them: the SST-2 files
    are 120-sentence subsets, the "minilm" encoder is the tiny DistilBERT."""
    import bertprobe.datasets

    (tmp_path / "data" / "sst2").mkdir(parents=True)
    for split in ("train", "test"):
        subset = _subset(split, 120)
        (tmp_path / "data" / "sst2" / f"{split}.tsv").write_text(
            "".join(f"{t}\t{y}\n" for t, y in zip(subset.texts, subset.labels, strict=True)),
            encoding="utf-8",
        )
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(bertprobe.datasets, "load_sst2", lambda split: _subset(split, 120))
    blocks = [(README, b) for b in python_blocks()]
    blocks += [(guide, b) for guide in GUIDES for b in python_blocks(guide)]
    for page, block in blocks:
        code = block.replace('"minilm"', repr(str(tiny_distilbert)))
        try:
            exec(compile(code, str(page), "exec"), {"__name__": "readme"})  # noqa: S102
        except Exception as exc:  # pragma: no cover - the failure message is the point
            pytest.fail(f"a block of {page.name} failed ({type(exc).__name__}: {exc}):\n{block}")
    printed = capsys.readouterr().out
    assert "a gorgeous" not in printed  # predictions print labels, not texts
    assert (tmp_path / "models" / "sst2" / "card.json").is_file()
