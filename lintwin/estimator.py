"""A scikit-learn estimator around :func:`lintwin.fit` (needs ``pip install lintwin[sklearn]``)."""

from __future__ import annotations

from typing import Any

from sklearn.base import BaseEstimator, RegressorMixin, TransformerMixin

from .affine import AffineMap
from .api import fit, maps_from_moments
from .core.moments import Moments, check_pair
from .core.xp import namespace
from .errors import LintwinError
from .solvers import AdamOptions

__all__ = ["AffineMapRegressor"]


class AffineMapRegressor(RegressorMixin, TransformerMixin, BaseEstimator):
    """Fits ``Y ≈ X W^T + b``; a regressor, or a transformer step mapping features in a Pipeline.

    Parameters mirror :func:`lintwin.fit` (``ridge`` may be ``"auto"``; ``rank`` limits the
    map's rank). After ``fit``, ``map_`` holds the :class:`AffineMap`, ``coef_``
    (n_targets x n_features) and ``intercept_`` its arrays.

    ``partial_fit`` streams: each call adds its rows to running joint moments (``moments_``)
    and re-solves the closed form, so data that never fits in memory -- features of a large
    model, batch by batch -- gives exactly the map of all rows seen (linear probes).
    """

    def __init__(self, method: str = "lstsq", ridge: float | str = 0.0, rank: int | None = None, folds: int = 5,
                 precision: str = "float32", iterations: int = 100_000, lr: float = 0.1, batch: int = 2048,
                 seed: int = 0, init: str = "random"):
        self.method = method
        self.ridge = ridge
        self.rank = rank
        self.folds = folds
        self.precision = precision
        self.iterations = iterations
        self.lr = lr
        self.batch = batch
        self.seed = seed
        self.init = init

    def fit(self, X: Any, y: Any) -> "AffineMapRegressor":
        adam = AdamOptions(lr=self.lr, batch=self.batch, iterations=self.iterations, seed=self.seed)
        amap = fit(X, y, method=self.method, ridge=self.ridge, rank=self.rank,  # type: ignore[arg-type]
                   folds=self.folds, precision=self.precision, adam=adam, init=self.init)  # type: ignore[arg-type]
        if hasattr(self, "moments_"):
            del self.moments_
        return self._set_map(amap)  # type: ignore[arg-type]

    def partial_fit(self, X: Any, y: Any) -> "AffineMapRegressor":
        """Add a batch of rows to the running moments and re-solve (closed form, fixed ridge only)."""
        if self.method != "lstsq" or self.ridge == "auto":
            raise LintwinError("partial_fit streams the closed form: use method='lstsq' with a fixed ridge")
        y2 = y if y.ndim == 2 else namespace(y).reshape(y, (-1, 1))
        check_pair(X, y2, ("X", "y"))
        if not hasattr(self, "moments_"):
            self.moments_ = Moments(int(X.shape[1]), int(y2.shape[1]), names=("X", "y"), precision=self.precision)  # type: ignore[arg-type]
        self.moments_.update(X, y2)
        (amap,) = maps_from_moments(self.moments_, ridge=float(self.ridge), rank=self.rank)
        return self._set_map(amap)

    def _set_map(self, amap: AffineMap) -> "AffineMapRegressor":
        self.map_ = amap
        self.coef_, self.intercept_ = amap.weight, amap.bias
        self.n_features_in_ = amap.src_dim
        return self

    def _fitted(self) -> AffineMap:
        if not hasattr(self, "map_"):
            raise LintwinError("this AffineMapRegressor is not fitted yet; call fit first")
        return self.map_

    def predict(self, X: Any) -> Any:
        return self._fitted().apply(X)

    def transform(self, X: Any) -> Any:
        return self.predict(X)
