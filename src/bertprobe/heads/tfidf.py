"""The TF-IDF voter: word 1-2-gram TF-IDF into a CV-tuned logistic regression."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

# TF-IDF vectors are unit length and sparse: their useful C values sit higher than a probe's.
TFIDF_C_GRID = tuple(np.logspace(-1, 2, 7).tolist())


def tfidf_pipeline(cv: int = 5, Cs: Sequence[float] = TFIDF_C_GRID, n_jobs: int | None = None):
    """The no-transformer baseline: word 1-2-gram TF-IDF into a CV-tuned logistic regression."""
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.linear_model import LogisticRegressionCV
    from sklearn.model_selection import StratifiedKFold
    from sklearn.pipeline import make_pipeline

    return make_pipeline(
        TfidfVectorizer(ngram_range=(1, 2), sublinear_tf=True, min_df=1),
        LogisticRegressionCV(
            Cs=list(Cs),
            l1_ratios=(0.0,),
            scoring="accuracy",
            cv=StratifiedKFold(cv, shuffle=True, random_state=0),
            max_iter=1000,
            n_jobs=n_jobs,
            use_legacy_attributes=False,
        ),
    )
