"""Shared fixtures: a tiny random DistilBERT, the bundled MiniLM, small labelled files."""

from __future__ import annotations

import os

# One thread a process for torch's kernels (and the processes the tests start): the test models
# are tiny, where a second thread costs more in hand-offs than it computes (the composition
# grid took 118 s with two threads, 89 s with one, on 2 cores), and `make test` runs a pytest
# worker on each core. Set before torch is first imported, which reads it then.
os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("MKL_NUM_THREADS", "1")

import re  # noqa: E402 - after the threads are set
from collections import Counter  # noqa: E402
from pathlib import Path  # noqa: E402

import pytest  # noqa: E402

from bertprobe.datasets import load_sst2  # noqa: E402

# Tests never reach the network: hub names must fail fast and the same way everywhere.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

SPECIALS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]


@pytest.fixture(autouse=True)
def _isolated_cache(tmp_path, monkeypatch):
    """Each test gets its own embedding cache folder."""
    monkeypatch.setenv("BERTPROBE_CACHE_DIR", str(tmp_path / "cache"))


def build_tiny_distilbert(folder: Path, dim: int = 64, n_layers: int = 2) -> Path:
    """A small random DistilBERT (``n_layers`` layers, ``dim`` wide) with a WordPiece vocab
    from SST-2 words, saved in ``folder``."""
    import torch
    from transformers import DistilBertConfig, DistilBertModel, DistilBertTokenizerFast

    words = Counter(w for t in load_sst2("train").texts for w in re.findall(r"\w+|[^\w\s]", t))
    vocab = SPECIALS + [w for w, _ in words.most_common(3000)]
    (folder / "vocab.txt").write_text("\n".join(vocab) + "\n", encoding="utf-8")
    # from_pretrained on a folder with vocab.txt works across transformers 4 and 5.
    tokenizer = DistilBertTokenizerFast.from_pretrained(
        folder, do_lower_case=True, model_max_length=64
    )
    assert tokenizer.tokenize("the film was good") == ["the", "film", "was", "good"]
    tokenizer.save_pretrained(folder)
    config = DistilBertConfig(
        vocab_size=len(vocab),
        dim=dim,
        n_layers=n_layers,
        n_heads=2,
        hidden_dim=2 * dim,
        max_position_embeddings=64,
    )
    torch.manual_seed(0)
    DistilBertModel(config).eval().save_pretrained(folder)
    return folder


@pytest.fixture(scope="session")
def tiny_distilbert(tmp_path_factory) -> Path:
    """A small random DistilBERT (2 layers, 64 dims) with a WordPiece vocab from SST-2 words."""
    return build_tiny_distilbert(tmp_path_factory.mktemp("tiny-distilbert"))


@pytest.fixture(scope="session")
def narrow_distilbert(tmp_path_factory) -> Path:
    """Another tiny random DistilBERT, narrower and deeper (3 layers, 32 dims): a second
    encoder of another width, for comparing encoders."""
    return build_tiny_distilbert(tmp_path_factory.mktemp("narrow-distilbert"), 32, 3)


@pytest.fixture(scope="session")
def sentiment_rows() -> list[tuple[str, int]]:
    """Short texts whose label is carried by one word: learnable even from random features."""
    good = ["good", "great", "wonderful", "brilliant", "lovely"]
    bad = ["bad", "awful", "terrible", "boring", "dreadful"]
    subjects = [
        "the film",
        "this movie",
        "the acting",
        "the plot",
        "the ending",
        "the score",
        "the cast",
        "the script",
        "the story",
        "the music",
    ]
    rows = []
    for i, subject in enumerate(subjects):
        for j in range(5):
            rows.append((f"{subject} was {good[(i + j) % 5]}", 1))
            rows.append((f"{subject} was {bad[(i + j) % 5]}", 0))
    return rows


def label_set(text: str, label: int, positive: str = "positive") -> str:
    """A sentiment row's label set for the label-set tests: "early" when the text starts with
    one of three subjects, ``positive`` when its label is 1 ("|"-joined, possibly empty)."""
    early = text.startswith(("the film", "this movie", "the acting"))
    return "|".join(name for name, on in (("early", early), (positive, label == 1)) if on)


def write_tsv(path: Path, rows) -> Path:
    path.write_text("".join(f"{t}\t{y}\n" for t, y in rows), encoding="utf-8")
    return path


@pytest.fixture
def sentiment_tsv(tmp_path, sentiment_rows) -> Path:
    return write_tsv(tmp_path / "sentiment.tsv", sentiment_rows)


@pytest.fixture(scope="session")
def tiny_model_dir(tiny_distilbert, sentiment_rows, tmp_path_factory) -> Path:
    """A saved model (tiny DistilBERT, mean pooling) trained on the one-word sentiment rows."""
    from bertprobe import LinearProbe, resolve_encoder, save_model
    from bertprobe.encoders.encode import embed
    from bertprobe.encoders.options import FeatureSpec

    ref = resolve_encoder(str(tiny_distilbert))
    spec = FeatureSpec("mean", (-1,))
    X, stats = embed([t for t, _ in sentiment_rows], ref, spec)
    probe = LinearProbe(cv=3).fit(X, [y for _, y in sentiment_rows])
    return save_model(
        tmp_path_factory.mktemp("models") / "tiny", probe, ref, spec, max_length=stats.max_length
    )


@pytest.fixture(scope="session")
def flipped_model_dir(tiny_distilbert, sentiment_rows, tmp_path_factory) -> Path:
    """A second model on the same encoder whose labels are swapped: every answer differs."""
    from bertprobe import LinearProbe, resolve_encoder, save_model
    from bertprobe.encoders.encode import embed
    from bertprobe.encoders.options import FeatureSpec

    ref = resolve_encoder(str(tiny_distilbert))
    spec = FeatureSpec("mean", (-1,))
    X, stats = embed([t for t, _ in sentiment_rows], ref, spec)
    probe = LinearProbe(cv=3).fit(X, [1 - y for _, y in sentiment_rows])
    folder = tmp_path_factory.mktemp("models") / "flipped"
    return save_model(folder, probe, ref, spec, max_length=stats.max_length)


@pytest.fixture
def long_rows_tsv(tmp_path, sentiment_rows):
    """Reviews of five same-label sentences each: 20-30 tokens, two to four windows of 16."""
    by_label: dict[int, list[str]] = {0: [], 1: []}
    for text, label in sentiment_rows:
        by_label[label].append(text)
    rows = [
        (" . ".join(texts[i : i + 5]), label)
        for label, texts in by_label.items()
        for i in range(0, len(texts), 5)
    ]
    path = tmp_path / "long.tsv"
    path.write_text("".join(f"{t}\t{y}\n" for t, y in rows), encoding="utf-8")
    return path, rows
