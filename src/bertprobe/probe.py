"""The linear probe: standardized features into a logistic regression whose C is chosen by
stratified k-fold cross-validation on the training data only.

scikit-learn's :class:`~sklearn.linear_model.LogisticRegressionCV` does the search: it walks the
C path with warm starts and can run the folds in parallel, which is much faster than the
recipe's ``GridSearchCV`` over a fresh ``LogisticRegression`` per grid point.

Example:
    >>> import numpy as np
    >>> from bertprobe.probe import LinearProbe
    >>> rng = np.random.default_rng(0)
    >>> X = rng.normal(size=(200, 8)); y = (X[:, 0] > 0).astype(int)
    >>> probe = LinearProbe(cv=5).fit(X, y)
    >>> bool(probe.cv_accuracy_ > 0.9)
    True
"""

from __future__ import annotations

import warnings
from collections import Counter

import numpy as np
from sklearn.base import BaseEstimator, ClassifierMixin
from sklearn.exceptions import ConvergenceWarning
from sklearn.linear_model import LogisticRegressionCV
from sklearn.model_selection import StratifiedKFold
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import StandardScaler
from sklearn.utils.multiclass import check_classification_targets
from sklearn.utils.validation import check_is_fitted, validate_data

from bertprobe.errors import BadInputError

# The recipe's grid, kept so its numbers can be reproduced (`--c-grid seed`).
SEED_C_GRID = tuple(np.linspace(0.0001, 100, 20).tolist())
# Our default: log-spaced, which covers strong to weak regularization evenly.
DEFAULT_C_GRID = tuple(np.logspace(-4, 2, 13).tolist())
# Seven points over the same range: for ranking many candidate features quickly (the sweep).
COARSE_C_GRID = tuple(np.logspace(-4, 2, 7).tolist())
C_GRIDS = {"default": DEFAULT_C_GRID, "coarse": COARSE_C_GRID, "seed": SEED_C_GRID}


def parse_c_grid(value: str) -> tuple[float, ...]:
    """``"default"``, ``"coarse"``, ``"seed"`` or a comma list of positive numbers."""
    if value in C_GRIDS:
        return C_GRIDS[value]
    try:
        grid = tuple(float(v) for v in value.split(",") if v.strip())
    except ValueError:
        grid = ()
    if not grid or any(c <= 0 for c in grid):
        raise BadInputError(f"--c-grid {value!r} is not 'default', 'coarse', 'seed' or a comma "
                            "list of positive numbers (e.g. 0.01,0.1,1,10)")
    return grid


class LinearProbe(ClassifierMixin, BaseEstimator):
    """StandardScaler + LogisticRegression with C picked by stratified k-fold CV.

    Parameters are stored as given (scikit-learn convention); learned state ends in ``_``:
    ``classes_``, ``C_``, ``cv_accuracy_`` (mean CV accuracy at ``C_``), ``cv_scores_`` (array
    of shape (n_folds, n_Cs)), ``Cs_``, ``n_iter_`` and the fitted ``pipeline_``. Labels may be
    ints or strings, two classes or more.
    """

    def __init__(
        self,
        Cs: tuple[float, ...] | str = "default",
        cv: int = 5,
        scale: bool = True,
        max_iter: int = 1000,
        tol: float = 1e-4,
        class_weight: str | dict | None = None,
        n_jobs: int | None = None,
        random_state: int | None = 0,
    ) -> None:
        self.Cs = Cs
        self.cv = cv
        self.scale = scale
        self.max_iter = max_iter
        self.tol = tol
        self.class_weight = class_weight
        self.n_jobs = n_jobs
        self.random_state = random_state

    def fit(self, X, y) -> LinearProbe:
        X, y = validate_data(self, X, y, dtype=[np.float32, np.float64])
        check_classification_targets(y)
        check_trainable(y, self.cv)
        grid = parse_c_grid(self.Cs) if isinstance(self.Cs, str) else tuple(self.Cs)
        folds = StratifiedKFold(n_splits=self.cv, shuffle=True, random_state=self.random_state)
        search = LogisticRegressionCV(
            Cs=list(grid),
            l1_ratios=(0.0,),
            cv=folds,
            scoring="accuracy",
            max_iter=self.max_iter,
            tol=self.tol,
            class_weight=self.class_weight,
            n_jobs=self.n_jobs,
            random_state=self.random_state,
            use_legacy_attributes=False,
        )
        steps = [("scale", StandardScaler())] if self.scale else []
        with warnings.catch_warnings():
            # Near-separable features make the weakest regularization (largest C) stop at
            # max_iter; CV then prefers a smaller C anyway. n_iter_ keeps the record.
            warnings.simplefilter("ignore", ConvergenceWarning)
            self.pipeline_ = Pipeline([*steps, ("logreg", search)]).fit(X, y)
        self.classes_ = search.classes_
        self.Cs_ = np.asarray(search.Cs_)
        self.cv_scores_ = np.asarray(search.scores_)[:, 0, :]  # (folds, l1_ratios=1, Cs)
        self.C_ = float(search.C_)
        self.n_iter_ = np.asarray(search.n_iter_)
        self.cv_accuracy_ = float(self.cv_scores_[:, np.argmin(np.abs(self.Cs_ - self.C_))].mean())
        return self

    def predict(self, X) -> np.ndarray:
        check_is_fitted(self, "pipeline_")
        X = validate_data(self, X, reset=False, dtype=[np.float32, np.float64])
        return self.pipeline_.predict(X)

    def predict_proba(self, X) -> np.ndarray:
        """Class probabilities, columns in the order of ``classes_``."""
        check_is_fitted(self, "pipeline_")
        X = validate_data(self, X, reset=False, dtype=[np.float32, np.float64])
        return self.pipeline_.predict_proba(X)

    def decision_function(self, X) -> np.ndarray:
        check_is_fitted(self, "pipeline_")
        X = validate_data(self, X, reset=False, dtype=[np.float32, np.float64])
        return self.pipeline_.decision_function(X)


def check_trainable(y, n_folds: int) -> None:
    """Refuse labels a cross-validated classifier cannot learn from, saying why."""
    counts = Counter(np.asarray(y).tolist())
    if len(counts) < 2:
        only = next(iter(counts), None)
        raise BadInputError(f"the training labels hold one class only ({only!r}); a classifier "
                            "needs examples of at least two classes")
    if n_folds < 2:
        raise BadInputError(f"cv={n_folds} folds; cross-validation needs at least 2")
    rare = sorted((label for label, n in counts.items() if n < n_folds), key=str)
    if rare:
        listed = ", ".join(f"{label!r} ({counts[label]})" for label in rare[:5])
        raise BadInputError(f"too few examples of class {listed} for {n_folds}-fold "
                            f"cross-validation; add examples or lower --cv to at most "
                            f"{min(counts.values())}")
