"""``--revision``: a hub encoder pinned to a branch, tag or commit, and the commit recorded.

The hub is a local fake: a Hugging Face cache folder holding two commits of the tiny DistilBERT
with different weights, ``refs/main`` at the newer and a tag ``v1`` at the older. Nothing is
downloaded (``HF_HUB_OFFLINE=1``); ``snapshot_download(..., local_files_only=True)`` resolves
a revision through ``refs/`` or ``snapshots/`` as it does in a real cache.
"""

from __future__ import annotations

import ast
import hashlib
import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from bertprobe import Classifier
from bertprobe.cli import main
from bertprobe.core.errors import EncoderNotFoundError
from bertprobe.encoders.embedder import TextEmbedder
from bertprobe.encoders.hub import resolve_encoder
from bertprobe.encoders.options import EncoderOptions
from bertprobe.model import persist

REPO = "acme/tiny-bert"
OLD = hashlib.sha1(b"older weights").hexdigest()  # noqa: S324 a made-up commit hash
NEW = hashlib.sha1(b"newer weights").hexdigest()  # noqa: S324 a made-up commit hash
SRC = Path(__file__).resolve().parent.parent / "src" / "bertprobe"


@pytest.fixture(scope="module")
def hub_cache(tiny_distilbert, tmp_path_factory) -> Path:
    """A Hugging Face cache with two commits of ``acme/tiny-bert``: ``main`` -> NEW (the tiny
    DistilBERT as it is), tag ``v1`` -> OLD (the same tokenizer, other weights)."""
    import torch
    from transformers import DistilBertModel

    root = tmp_path_factory.mktemp("hub")
    repo = root / "models--acme--tiny-bert"
    shutil.copytree(tiny_distilbert, repo / "snapshots" / NEW)
    shutil.copytree(tiny_distilbert, repo / "snapshots" / OLD)
    model = DistilBertModel.from_pretrained(tiny_distilbert)
    torch.manual_seed(1)
    with torch.no_grad():
        for weight in model.parameters():
            weight.add_(0.5 * torch.randn_like(weight))
    model.save_pretrained(repo / "snapshots" / OLD)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(NEW)
    (repo / "refs" / "v1").write_text(OLD)
    return root


@pytest.fixture
def hub(hub_cache, monkeypatch) -> Path:
    """The fake cache as the Hugging Face cache of this test (read at call time, not import)."""
    import huggingface_hub.constants

    monkeypatch.setenv("HF_HUB_CACHE", str(hub_cache))
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(hub_cache))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    return hub_cache


def snapshot(hub: Path, commit: str) -> Path:
    return (hub / "models--acme--tiny-bert" / "snapshots" / commit).resolve()


def run(argv, capsys) -> tuple[int, str, str]:
    with pytest.raises(SystemExit) as info:
        main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return info.value.code, out, err


def train_cli(data, out, *more) -> list:
    return ["train", data, "--encoder", REPO, "--pooling", "mean", "--cv", "3", "--out", out, *more]


def test_a_revision_resolves_to_its_commit_and_its_own_weights(hub):
    main_ref = resolve_encoder(REPO)
    by_tag = resolve_encoder(REPO, "v1")
    by_hash = resolve_encoder(REPO, OLD)
    assert (main_ref.revision, main_ref.path) == (NEW, snapshot(hub, NEW))
    assert by_tag == by_hash  # a tag and the commit it names are the same encoder
    assert (by_tag.revision, by_tag.path) == (OLD, snapshot(hub, OLD))
    assert by_tag.fingerprint != main_ref.fingerprint
    assert resolve_encoder(REPO, "main") == main_ref
    assert EncoderOptions(REPO, revision="v1").resolve() == by_tag


def test_train_on_a_pinned_revision_records_it_and_loading_fetches_it_again(
    hub, sentiment_tsv, tmp_path, capsys
):
    out = tmp_path / "pinned"
    code, stdout, err = run(train_cli(sentiment_tsv, out, "--revision", "v1"), capsys)
    assert code == 0, err
    encoder_line = next(line for line in stdout.splitlines() if line.startswith("encoder "))
    assert f"commit {OLD}" in encoder_line

    card = json.loads((out / "card.json").read_text())
    old = resolve_encoder(str(snapshot(hub, OLD)))
    assert card["encoder"]["name"] == REPO
    assert card["encoder"]["revision"] == OLD  # the commit, not the tag the user gave
    assert card["encoder"]["fingerprint"] == old.fingerprint
    assert card["format_version"] == persist.FORMAT_VERSION  # no bump: see _revision_record

    # Loading resolves the recorded commit, not main (whose weights would be refused).
    model = Classifier.load(out)
    assert (model.encoder.revision, model.encoder.path) == (OLD, snapshot(hub, OLD))
    code, stdout, err = run(["evaluate", sentiment_tsv, "--model", out], capsys)
    assert code == 0, err
    assert f"encoder   {REPO}, commit {OLD}" in stdout.splitlines()


def test_the_pinned_revision_gives_other_vectors_than_main(hub, sentiment_rows):
    texts = [t for t, _ in sentiment_rows[:6]]
    pinned = TextEmbedder(REPO, revision=OLD, pooling="mean", use_cache=False).fit(texts)
    latest = TextEmbedder(REPO, pooling="mean", use_cache=False).fit(texts)
    assert pinned.encoder_ref_.revision == OLD and latest.encoder_ref_.revision == NEW
    assert not np.allclose(pinned.transform(texts), latest.transform(texts))


def test_without_revision_the_commit_of_main_is_recorded(hub, sentiment_tsv, tmp_path, capsys):
    out = tmp_path / "latest"
    code, stdout, err = run(train_cli(sentiment_tsv, out, "--json"), capsys)
    assert code == 0, err
    assert json.loads(stdout)["encoder_revision"] == NEW
    assert json.loads((out / "card.json").read_text())["encoder"]["revision"] == NEW


def test_an_old_hub_card_without_a_revision_still_loads_from_main(
    hub, sentiment_tsv, tmp_path, capsys
):
    out = tmp_path / "old-card"
    code, _, err = run(train_cli(sentiment_tsv, out), capsys)
    assert code == 0, err
    card = json.loads((out / "card.json").read_text())
    del card["encoder"]["revision"]  # as bertprobe wrote it before --revision
    card["seal"] = persist._seal(card)
    (out / "card.json").write_text(json.dumps(card))
    model = Classifier.load(out)
    assert (model.encoder.revision, model.encoder.path) == (NEW, snapshot(hub, NEW))


def test_a_local_encoder_records_no_revision(tiny_model_dir):
    card = json.loads((tiny_model_dir / "card.json").read_text())
    assert "revision" not in card["encoder"]
    assert Classifier.load(tiny_model_dir).encoder.revision is None


@pytest.mark.parametrize(
    ("encoder", "revision", "words"),
    [
        (REPO, "v9", "at revision 'v9' is not a local folder, not in the Hugging Face cache"),
        (REPO, "0" * 40, "not in the Hugging Face cache"),
        ("TINY", "v1", "is a local folder, not a hub name: it has no revision 'v1'"),
        ("minilm", "v1", "is bundled with bertprobe, not a hub name"),
    ],
)
def test_a_revision_that_cannot_be_is_one_line_and_exit_2(
    hub, sentiment_tsv, tiny_distilbert, tmp_path, capsys, encoder, revision, words
):
    encoder = str(tiny_distilbert) if encoder == "TINY" else encoder
    argv = train_cli(sentiment_tsv, tmp_path / "out", "--revision", revision)
    argv[argv.index(REPO)] = encoder
    code, stdout, err = run(argv, capsys)
    assert code == 2 and stdout == ""
    assert err.count("\n") == 1 and words in err and "revision=" not in err
    assert not (tmp_path / "out").exists()
    with pytest.raises(EncoderNotFoundError, match="revision"):
        resolve_encoder(encoder, revision)


def test_finetuning_a_pinned_base_records_its_commit(hub, sentiment_tsv, tmp_path, capsys):
    out = tmp_path / "tuned"
    argv = train_cli(sentiment_tsv, out, "--revision", "v1", "--finetune", "--epochs", "1")
    code, stdout, err = run(argv, capsys)
    assert code == 0, err
    base = json.loads((out / "card.json").read_text())["encoder"]["base"]
    assert base == {
        "name": REPO,
        "fingerprint": resolve_encoder(REPO, OLD).fingerprint,
        "revision": OLD,
    }
    assert f"tuned from commit {OLD}" in stdout
    assert Classifier.load(out).encoder.name == f"{REPO} (fine-tuned)"


def _hub_calls(tree: ast.AST, lines: list[str]):
    for node in ast.walk(tree):
        if isinstance(node, ast.Call):
            func = node.func
            name = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", "")
            if name in ("from_pretrained", "snapshot_download", "hf_hub_download"):
                yield node, lines[node.lineno - 1]


def test_every_hub_call_in_the_package_is_pinned_or_says_why_not():
    """What bandit's B615 checks, kept by the tests (ruff's S rules have no such check): a call
    that could download passes revision=, or loads a local folder and is marked so."""
    unpinned = []
    for path in sorted(SRC.rglob("*.py")):
        text = path.read_text(encoding="utf-8")
        for call, line in _hub_calls(ast.parse(text), text.splitlines()):
            pinned = any(k.arg == "revision" for k in call.keywords)
            if not pinned and "# nosec B615" not in line:
                unpinned.append(f"{path.relative_to(SRC)}:{call.lineno}")
    assert unpinned == []
