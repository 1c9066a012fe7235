"""Solvers: closed-form maps from moments (``lstsq``) and the paper's Adam (``adam``)."""

from .adam import AdamOptions, fit_adam, paper_loss_grad
from .lstsq import RankWarning, default_rcond, solve_affine

__all__ = ["AdamOptions", "RankWarning", "default_rcond", "fit_adam", "paper_loss_grad", "solve_affine"]
