"""lintwin: do two neural networks extract the same information? Affine maps between features.

Fit ``M_{A→B}`` so that ``M [F_A(x); 1] ≈ F_B(x)`` (McNeely-White, Beveridge & Draper,
2020), in closed form from streamed moments or with the paper's Adam, on NumPy or CuPy.
"""

from .affine import AffineMap
from .api import (
    accumulate_arrays,
    accumulate_store,
    evaluate,
    evaluate_store,
    fit,
    fit_ridge_cv,
    fit_store,
    maps_from_moments,
)
from .core.fit_metrics import FitMetrics, paper_loss, row_cosine
from .core.moments import Moments
from .errors import LintwinError, MapFileError, ModelError, NonFiniteError, ShapeError, StoreError, UnsafePathError
from .experiments.neighbours_study import NeighbourAlignment, neighbour_matrix, neighbours
from .measures.similarity import Similarity, similarity
from .solvers import AdamOptions, PrecisionWarning, RankWarning
from .storage.store import FeatureStore

__all__ = [
    "AdamOptions",
    "AffineMap",
    "AffineMapRegressor",
    "FeatureStore",
    "FitMetrics",
    "LintwinError",
    "MapFileError",
    "ModelError",
    "Moments",
    "NeighbourAlignment",
    "NonFiniteError",
    "PrecisionWarning",
    "RankWarning",
    "ShapeError",
    "Similarity",
    "StoreError",
    "UnsafePathError",
    "accumulate_arrays",
    "accumulate_store",
    "evaluate",
    "evaluate_store",
    "fit",
    "fit_ridge_cv",
    "fit_store",
    "maps_from_moments",
    "neighbour_matrix",
    "neighbours",
    "paper_loss",
    "row_cosine",
    "similarity",
]

__version__ = "0.2.0"


def __getattr__(name: str):
    # The scikit-learn estimator is imported on first use, so scikit-learn stays optional.
    if name == "AffineMapRegressor":
        try:
            from .estimator import AffineMapRegressor
        except ModuleNotFoundError as exc:
            raise LintwinError(f"AffineMapRegressor needs scikit-learn ({exc.name} is missing): "
                               "pip install 'lintwin[sklearn]'") from None
        return AffineMapRegressor
    raise AttributeError(f"module 'lintwin' has no attribute {name!r}")
