"""A scikit-learn estimator around :func:`lintwin.fit` (needs ``pip install lintwin[sklearn]``)."""

from __future__ import annotations

from typing import Any

from sklearn.base import BaseEstimator, RegressorMixin, TransformerMixin

from .affine import AffineMap
from .api import fit
from .errors import LintwinError
from .solvers import AdamOptions

__all__ = ["AffineMapRegressor"]


class AffineMapRegressor(RegressorMixin, TransformerMixin, BaseEstimator):
    """Fits ``Y ≈ X W^T + b``; a regressor, or a transformer step mapping features in a Pipeline.

    Parameters mirror :func:`lintwin.fit`. After ``fit``, ``map_`` holds the
    :class:`AffineMap`, ``coef_`` (n_targets x n_features) and ``intercept_`` its arrays.
    """

    def __init__(self, method: str = "lstsq", ridge: float = 0.0, precision: str = "float32",
                 iterations: int = 100_000, lr: float = 0.1, batch: int = 2048, seed: int = 0,
                 init: str = "random"):
        self.method = method
        self.ridge = ridge
        self.precision = precision
        self.iterations = iterations
        self.lr = lr
        self.batch = batch
        self.seed = seed
        self.init = init

    def fit(self, X: Any, y: Any) -> "AffineMapRegressor":
        adam = AdamOptions(lr=self.lr, batch=self.batch, iterations=self.iterations, seed=self.seed)
        self.map_: AffineMap = fit(X, y, method=self.method, ridge=self.ridge,  # type: ignore[arg-type]
                                   precision=self.precision, adam=adam, init=self.init)  # type: ignore[arg-type]
        self.coef_, self.intercept_ = self.map_.weight, self.map_.bias
        self.n_features_in_ = self.map_.src_dim
        return self

    def _fitted(self) -> AffineMap:
        if not hasattr(self, "map_"):
            raise LintwinError("this AffineMapRegressor is not fitted yet; call fit first")
        return self.map_

    def predict(self, X: Any) -> Any:
        return self._fitted().apply(X)

    def transform(self, X: Any) -> Any:
        return self.predict(X)
