"""Solvers: closed-form maps from moments (``lstsq``) and the paper's Adam (``adam``)."""

from .adam import AdamOptions, fit_adam, paper_loss_grad
from .conditioning import default_rcond
from .lstsq import PrecisionWarning, RankWarning, check_ridge, reduce_rank, solve_affine
from .ridge_cv import RidgeCV, ridge_cv

__all__ = ["AdamOptions", "PrecisionWarning", "RankWarning", "RidgeCV", "check_ridge", "default_rcond", "fit_adam",
           "paper_loss_grad", "reduce_rank", "ridge_cv", "solve_affine"]
