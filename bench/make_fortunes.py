"""A topic task that is not sentiment, for the few-labels benchmark: fortune-cookie texts by topic.

The texts are Debian's ``fortunes`` package (BSD fortune(6)'s data files, DFSG-free, in Debian
main): each file holds the fortunes of one topic, separated by lines of ``%``. Five topics with
at least 500 fortunes are kept (:data:`TOPICS`); each fortune becomes one line (whitespace runs
as one space), fortunes over 600 characters and repeats are dropped, 500 are drawn a topic
(seed 0), and 100 of each topic go to the test split, the rest to the training split. They are
quotations and jokes more than articles, so a topic is often said by a word or two: harder for
a sentence encoder than news topics, and unlike SST-2 in every way.

Writes bench/data/fortunes/{train,test}.tsv (``text<TAB>topic``). With no folder given, the
package is fetched from Debian's archive (``apt-get download fortunes``) and unpacked with
``dpkg-deb``:

    .venv/bin/python bench/make_fortunes.py [--from /usr/share/games/fortunes]
"""

from __future__ import annotations

import argparse
import subprocess
import tempfile
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "bench" / "data" / "fortunes"
# Each topic's file in the package, and the label the data set gives it.
TOPICS = {
    "computers": "computers",
    "politics": "politics",
    "science": "science",
    "songs-poems": "poetry",
    "work": "work",
}
PER_TOPIC = 500
TEST_PER_TOPIC = 100
MAX_CHARS = 600


def fortunes_folder(given: Path | None, scratch: Path) -> Path:
    """The folder of fortune files: ``given``, or Debian's package fetched into ``scratch``."""
    if given is not None:
        return given
    subprocess.run(["apt-get", "download", "fortunes"], cwd=scratch, check=True)  # noqa: S607
    package = next(scratch.glob("fortunes_*.deb"))
    subprocess.run(["dpkg-deb", "-x", str(package), str(scratch / "x")], check=True)  # noqa: S607
    return scratch / "x" / "usr" / "share" / "games" / "fortunes"


def read_topic(path: Path) -> list[str]:
    """The fortunes of one file, each as one line, repeats and long ones dropped."""
    seen: dict[str, None] = {}
    for block in path.read_text(encoding="utf-8", errors="replace").split("\n%\n"):
        text = " ".join(block.replace("%", " ").split())
        if text and len(text) <= MAX_CHARS:
            seen.setdefault(text)
    return list(seen)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--from", dest="folder", type=Path, default=None)
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    train, test = [], []
    taken: set[str] = set()
    with tempfile.TemporaryDirectory() as scratch:
        folder = fortunes_folder(args.folder, Path(scratch))
        for name, label in TOPICS.items():
            texts = [t for t in read_topic(folder / name) if t not in taken]
            drawn = [texts[i] for i in rng.permutation(len(texts))[:PER_TOPIC]]
            taken.update(drawn)
            test += [(t, label) for t in drawn[:TEST_PER_TOPIC]]
            train += [(t, label) for t in drawn[TEST_PER_TOPIC:]]
    OUT.mkdir(parents=True, exist_ok=True)
    for split, rows in (("train", train), ("test", test)):
        order = rng.permutation(len(rows))
        lines = [f"{rows[i][0]}\t{rows[i][1]}\n" for i in order]
        (OUT / f"{split}.tsv").write_text("".join(lines), encoding="utf-8")
        print(f"{OUT / f'{split}.tsv'}: {len(rows)} texts")


if __name__ == "__main__":
    main()
