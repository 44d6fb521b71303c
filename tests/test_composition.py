"""Every training mode with every target and text mode, and every way out of the model.

One cell a combination of mode (plain, auto, out of core, auto out of core, fine-tuned,
fine-tuned out of core, contrastive, contrastive out of core, self-trained on unlabelled texts,
distilled from a teacher model, distilled out of core) x target (one label,
several labels) x text mode (truncate, chunk). Each cell trains a tiny model (the random tiny
DistilBERT) into a folder and checks every way out against the model in memory: the folder
loaded again, ``evaluate``, the report, the HTTP service and the ONNX export (and Ray actors
for a cell of each mode). Every cell trains; docs/architecture.md holds the table.
"""

from __future__ import annotations

import numpy as np
import pytest
from typer.testing import CliRunner

from bertprobe import (
    ContrastiveOptions,
    DistillOptions,
    EncoderOptions,
    FinetuneOptions,
    ReadOptions,
    TrainOptions,
    train,
)
from bertprobe.cli import app
from bertprobe.model.classifier import Classifier
from conftest import label_set, write_tsv
from ways_out import check_evaluate, check_export, check_report, check_service

MODES = (
    "plain",
    "auto",
    "out_of_core",
    "auto_out_of_core",
    "finetune",
    "finetune_out_of_core",
    "contrastive",
    "contrastive_out_of_core",
    "unlabelled",
    "distill",
    "distill_out_of_core",
)
TARGETS = ("single", "multi")
TEXTS = ("truncate", "chunk")
# Longer than a chunk window (max_length 8 with a stride of 2), so chunk mode takes several.
PADDING = " , as everyone who saw it on that rainy evening agreed"


def _texts(rows):
    return [f"{text}{PADDING}" if i % 3 == 0 else text for i, (text, _) in enumerate(rows)]


@pytest.fixture(scope="module")
def files(tmp_path_factory, sentiment_rows):
    root = tmp_path_factory.mktemp("composition")
    texts = _texts(sentiment_rows)
    labels = [y for _, y in sentiment_rows]
    single = list(zip(texts, labels, strict=True))
    multi = [(t, label_set(t, y)) for t, y in single]
    return {
        "single": (
            write_tsv(root / "single.tsv", single),
            write_tsv(root / "single_test.tsv", single[::2]),
        ),
        "multi": (
            write_tsv(root / "multi.tsv", multi),
            write_tsv(root / "multi_test.tsv", multi[::2]),
        ),
        "texts": texts[:12],
        # texts without labels, none of the training or test ones, for self-training
        "pool": [f"{text} , or so it seemed" for text in texts],
    }


@pytest.fixture(scope="module")
def teachers(files, tiny_distilbert, tmp_path_factory):
    """A plain model of each target, saved: the distilled cells' teachers."""
    root = tmp_path_factory.mktemp("teachers")
    return {
        target: _train_cell(
            ("plain", target, "truncate"), files, tiny_distilbert, root / target
        ).model
        for target in TARGETS
    }


def _options(mode: str, target: str, text: str, encoder: str, teachers=None):
    encoding = EncoderOptions(
        encoder,
        pooling="mean",
        max_length=8 if text == "chunk" else 32,
        long=text,
        **({"stride": 2} if text == "chunk" else {}),
    )
    options = dict(cv=3, Cs="0.1,1", multi_label=target == "multi")
    if mode in ("auto", "auto_out_of_core"):
        options.update(auto=True, poolings="mean,cls", finalists=1)
    if "out_of_core" in mode:
        options.update(out_of_core=True, label_issues=True)
    tunings = {
        "finetune": FinetuneOptions(epochs=1, lr=5e-4) if "finetune" in mode else None,
        "contrastive": ContrastiveOptions(pairs_per_text=2, min_pairs=0, lr=5e-4)
        if "contrastive" in mode
        else None,
        "distill": DistillOptions(
            teacher=teachers[target], augment=1, tuning=FinetuneOptions(epochs=1, lr=5e-4)
        )
        if "distill" in mode
        else None,
    }
    reading = ReadOptions(label_sep="|") if target == "multi" else ReadOptions()
    return encoding, options, tunings, reading


CELLS = [(m, t, x) for m in MODES for t in TARGETS for x in TEXTS]


def _train_cell(cell, files, tiny_distilbert, out, teachers=None):
    mode, target, text = cell
    encoding, options, tunings, reading = _options(
        mode, target, text, str(tiny_distilbert), teachers
    )
    train_file, test_file = files[target]
    return train(
        train_file,
        test=test_file,
        encoding=encoding,
        options=TrainOptions(**options),
        reading=reading,
        **tunings,
        unlabelled=files["pool"] if mode == "unlabelled" else None,
        out=out,
    )


@pytest.mark.parametrize(("mode", "target", "text"), CELLS, ids=["-".join(c) for c in CELLS])
def test_every_way_out_follows_the_model(
    mode, target, text, files, tiny_distilbert, tmp_path, request
):
    test_file = files[target][1]
    out = tmp_path / "model"
    teachers = request.getfixturevalue("teachers") if "distill" in mode else None
    result = _train_cell((mode, target, text), files, tiny_distilbert, out, teachers)
    texts = files["texts"]
    expected = result.model.predict_proba(texts)
    if "out_of_core" in mode:  # each fold's probabilities from a head that never saw it
        assert result.label_issues is not None
    assert expected.shape == (len(texts), 2)

    # The folder, loaded again (the card decides the features: windows, layers, encoder).
    loaded = Classifier.load(out)
    assert loaded.spec == result.model.spec and loaded.spec.long == text
    if "finetune" in mode:  # the folder holds the tuned encoder, the card says how it was tuned
        assert "(fine-tuned)" in loaded.encoder.name and "finetune" in loaded.card
    if "contrastive" in mode:
        assert "(contrastive-tuned)" in loaded.encoder.name
        assert loaded.card["contrastive"]["n_pairs"] > 0
    if "distill" in mode:  # the card names the teacher and what it taught
        assert "(distilled)" in loaded.encoder.name
        record = loaded.card["distill"]
        assert record["teacher"]["id"] == teachers[target].id
        assert 0 < record["n_augmented"] < record["n_taught"]
        in_memory = "out_of_core" not in mode  # out of core, the test set streams: no agreement
        assert (record["teacher_test_agreement"] is not None) == in_memory
    if "auto" in mode:  # the sweep chose the features, and the card and --json say which
        assert result.sweep is not None and loaded.card["sweep"]["choice"] == result.sweep.choice
        assert result.to_dict()["auto"] == result.sweep.choice
    np.testing.assert_allclose(loaded.predict_proba(texts), expected, atol=1e-4)

    check_evaluate(loaded, texts)  # the same decisions as predict
    check_service(loaded, texts, expected)
    check_report(out, test_file, tmp_path)
    check_export(loaded, texts, expected, tmp_path)


# Ray actors load the model folder and answer as one process does; a cell per mode (a local
# Ray instance and its actors take seconds each, so not every cell).
RAY_CELLS = [
    ("plain", "multi", "chunk"),
    ("auto", "single", "chunk"),
    ("out_of_core", "single", "truncate"),
    ("finetune", "single", "chunk"),
]


@pytest.fixture(scope="module")
def local_ray():
    ray = pytest.importorskip("ray")
    from bertprobe.core.ray_cluster import local_runtime_env

    ray.init(num_cpus=2, include_dashboard=False, runtime_env=local_runtime_env())
    yield
    ray.shutdown()


@pytest.mark.slow
@pytest.mark.xdist_group("ray")  # one local Ray at a time, beside the Ray tests' own
@pytest.mark.parametrize("cell", RAY_CELLS, ids=["-".join(c) for c in RAY_CELLS])
def test_ray_actors_answer_as_one_process(cell, local_ray, files, tiny_distilbert, tmp_path):
    import json

    out = tmp_path / "model"
    model = _train_cell(cell, files, tiny_distilbert, out).model
    inputs = tmp_path / "texts.txt"
    inputs.write_text("\n".join(files["texts"]) + "\n", encoding="utf-8")
    model.predict_file(inputs, tmp_path / "one.jsonl")
    args = ["predict", "-m", str(out), "-i", str(inputs), "-o", str(tmp_path / "ray.jsonl")]
    # One actor: the rows' order over several actors is test_ray.py's; here the cell's model.
    args += ["--ray", "local", "--actors", "1", "--chunk-size", "4"]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    one = [json.loads(line) for line in (tmp_path / "one.jsonl").open()]
    on_ray = [json.loads(line) for line in (tmp_path / "ray.jsonl").open()]
    decided = "labels" if cell[1] == "multi" else "label"
    assert [r[decided] for r in on_ray] == [r[decided] for r in one]
    for got, want in zip(on_ray, one, strict=True):
        for c, p in want["probabilities"].items():
            assert abs(got["probabilities"][c] - p) <= 1e-4
