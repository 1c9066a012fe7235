"""Solvers: the factored scaled system, closed-form maps from moments (plain, ridge, ridge-CV, rank), Adam."""

from ..core.params import AdamOptions
from .adam import fit_adam, paper_loss_grad
from .conditioning import default_rcond
from .factor import ScaledSystem, factor
from .lstsq import PrecisionWarning, RankWarning, reduce_rank, solve_affine
from .maps import fit_ridge_cv, maps_from_moments, moment_metrics
from .ridge_cv import RidgeCV, ridge_cv

__all__ = ["AdamOptions", "PrecisionWarning", "RankWarning", "RidgeCV", "ScaledSystem", "default_rcond", "factor",
           "fit_adam", "fit_ridge_cv", "maps_from_moments", "moment_metrics", "paper_loss_grad", "reduce_rank",
           "ridge_cv", "solve_affine"]
