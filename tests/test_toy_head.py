"""A head of one's own, added in this one file: a nearest-centroid head, registered, trained by
``train`` for one label a text and for label sets, and found working in every way out.

What docs/architecture.md says adding a head takes, and nothing more: a class that meets
:class:`bertprobe.heads.base.Head` (``fit``, ``predict_proba``, ``classes_``,
``card_record``), :func:`bertprobe.heads.base.register_head` (so its folder loads), and the
capabilities it can offer (here ``linear_readout``: the export and exact explanations;
``fixed_estimator``: the report's learning curve). ``TrainOptions(head=...)`` trains it.
"""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.base import BaseEstimator, ClassifierMixin, clone
from sklearn.utils.validation import check_is_fitted, validate_data

from bertprobe import EncoderOptions, ReadOptions, TrainOptions, train
from bertprobe.heads.base import register_head
from bertprobe.heads.linear import LinearHead
from conftest import label_set, write_tsv
from ways_out import (
    check_evaluate,
    check_explain,
    check_export,
    check_folder,
    check_predict_file,
    check_report,
    check_service,
)


@register_head
class NearestCentroidHead(ClassifierMixin, BaseEstimator):
    """Each class's mean of the standardized vectors; a row's probabilities are the softmax of
    minus half its squared distance to each centroid, over ``temperature``.

    ``-|z - c|^2 / 2 = c . z - |c|^2 / 2 - |z|^2 / 2``, and the last term is every class's, so
    the softmax is of ``c . z - |c|^2 / 2``: a linear read-out of the standardized vectors.
    """

    def __init__(self, temperature: float = 8.0) -> None:
        self.temperature = temperature

    def fit(self, X, y, unlabelled=None) -> NearestCentroidHead:
        X, y = validate_data(self, X, y)
        self.classes_ = np.unique(y)
        self.mean_ = X.mean(axis=0)
        self.scale_ = X.std(axis=0) + 1e-9
        Z = (X - self.mean_) / self.scale_
        self.centroids_ = np.stack([Z[y == c].mean(axis=0) for c in self.classes_])
        return self

    def _scores(self, X) -> np.ndarray:
        check_is_fitted(self, "centroids_")
        X = validate_data(self, X, reset=False)
        Z = (X - self.mean_) / self.scale_
        centroids = self.centroids_
        return (Z @ centroids.T - 0.5 * (centroids**2).sum(axis=1)) / self.temperature

    def predict_proba(self, X) -> np.ndarray:
        scores = self._scores(X)
        scores -= scores.max(axis=1, keepdims=True)
        exp = np.exp(scores)
        return exp / exp.sum(axis=1, keepdims=True)

    def predict(self, X) -> np.ndarray:
        return self.classes_[self.predict_proba(X).argmax(axis=1)]

    def linear_readout(self) -> LinearHead:
        """The softmax's scores as a scaler and a linear model (two classes: one score, the
        second class's minus the first's, as a binary logistic regression has)."""
        check_is_fitted(self, "centroids_")
        coef = self.centroids_ / self.temperature
        intercept = -0.5 * (self.centroids_**2).sum(axis=1) / self.temperature
        if len(self.classes_) == 2:
            coef, intercept = (coef[1] - coef[0])[None], intercept[1:] - intercept[:1]
            return LinearHead(self.mean_, self.scale_, coef, intercept, "binary")
        return LinearHead(self.mean_, self.scale_, coef, intercept, "softmax")

    def fixed_estimator(self) -> NearestCentroidHead:
        return clone(self)

    def card_record(self) -> dict:
        return {"solver": "nearest centroid", "temperature": self.temperature}


@pytest.fixture(scope="module")
def files(tmp_path_factory, sentiment_rows):
    root = tmp_path_factory.mktemp("toy")
    multi = [(t, label_set(t, y)) for t, y in sentiment_rows]
    return {
        "single": (write_tsv(root / "single.tsv", sentiment_rows),) * 2,
        "multi": (write_tsv(root / "multi.tsv", multi),) * 2,
    }


@pytest.mark.parametrize("target", ["single", "multi"])
def test_a_head_of_ones_own_works_in_every_way_out(
    target, files, tiny_distilbert, sentiment_rows, tmp_path
):
    train_file, test_file = files[target]
    out = tmp_path / "model"
    result = train(
        train_file,
        test=test_file,
        encoding=EncoderOptions(str(tiny_distilbert), pooling="mean"),
        options=TrainOptions(cv=3, head=NearestCentroidHead(), multi_label=target == "multi"),
        reading=ReadOptions(label_sep="|") if target == "multi" else ReadOptions(),
        out=out,
    )
    texts = [t for t, _ in sentiment_rows[:10]]
    expected = result.model.predict_proba(texts)
    # It learned: the test figures are those of a classifier, not of a coin.
    assert (result.test_accuracy or 0) > 0.6
    assert "centroid" in str(result.model.card["probe"]).lower()  # the card says what it is

    loaded = check_folder(out, texts, expected)
    check_evaluate(loaded, texts)
    check_explain(loaded, texts)  # exact: its linear read-out splits the score
    assert loaded.explain(texts[:1])[0].method == "exact"
    check_predict_file(loaded, texts, tmp_path)
    check_service(loaded, texts, expected)
    check_report(out, test_file, tmp_path)
    check_export(loaded, texts, expected, tmp_path)


def test_an_unregistered_head_is_refused_when_its_folder_loads(
    tiny_distilbert, sentiment_rows, tmp_path
):
    """The trusted list is the registered heads: a class nobody registered does not load."""
    from bertprobe.core.errors import ModelFolderError
    from bertprobe.model.classifier import Classifier

    class Unregistered(NearestCentroidHead):
        pass

    Unregistered.__qualname__ = "Unregistered"  # a module-level name skops can record
    globals()["Unregistered"] = Unregistered
    out = tmp_path / "model"
    train(
        write_tsv(tmp_path / "train.tsv", sentiment_rows),
        encoding=EncoderOptions(str(tiny_distilbert), pooling="mean"),
        options=TrainOptions(cv=3, head=Unregistered()),
        out=out,
    )
    with pytest.raises(ModelFolderError, match="register it with"):
        Classifier.load(out)
