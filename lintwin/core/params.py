"""Every user-facing setting, declared and validated once (the API, the CLI and the study share it).

As scikit-learn's ``validate_params``: each setting has one check with one message, and
:class:`FitSettings` adds the rules between settings (an option that would be silently ignored is
refused, naming the option that makes it meaningful). Everything here runs before any work.
"""

from __future__ import annotations

import math
import re
from dataclasses import asdict, dataclass, field, replace
from typing import Any

from ..errors import LintwinError
from .placement import check_device

__all__ = [
    "ADAM_VARIANTS", "CRITERIA", "INITS", "METHODS", "PRECISIONS", "AdamOptions", "FitSettings", "check_alpha",
    "check_folds", "check_method", "check_null_repeats", "check_precision", "check_rank", "check_ridge",
    "check_ridge_criterion", "check_svcca_keep", "parse_bytes", "parse_ridge",
]

METHODS = ("lstsq", "adam")
INITS = ("random", "lstsq")
CRITERIA = ("feature-error", "agreement")
PRECISIONS = ("float32", "float64", "tf32")
ADAM_VARIANTS = ("tensorflow", "kingma")

Ridge = float | tuple[float, float] | str


def _one_of(name: str, value: Any, choices: tuple[str, ...]) -> str:
    if value not in choices:
        quoted = " or ".join(repr(c) for c in choices) if len(choices) == 2 else ", ".join(map(repr, choices))
        raise LintwinError(f"{name} must be {quoted}, got {value!r}")
    return value


def check_method(method: str) -> str:
    return _one_of("method", method, METHODS)


def check_precision(precision: str) -> str:
    return _one_of("precision", precision, PRECISIONS)


def check_ridge_criterion(criterion: str) -> str:
    return _one_of("ridge criterion", criterion, CRITERIA)


def check_ridge(ridge: Any) -> float:
    """A ridge λ as a float, refusing NaN, infinities and negative values."""
    try:
        lam = float(ridge)
    except (TypeError, ValueError):
        raise LintwinError(f"ridge must be a number >= 0, got {ridge!r}") from None
    if not math.isfinite(lam) or lam < 0:
        raise LintwinError(f"ridge must be a finite number >= 0, got {ridge!r}")
    return lam


def check_ridge_spec(ridge: Any) -> Ridge:
    """One λ, one per direction ``(λ_AB, λ_BA)``, or ``"auto"``."""
    if isinstance(ridge, str):
        if ridge != "auto":
            raise LintwinError(f"ridge must be a number >= 0 or 'auto', got {ridge!r}")
        return ridge
    if isinstance(ridge, (list, tuple)):
        if len(ridge) != 2:
            raise LintwinError(f"ridge takes one λ or two (one per direction), got {len(ridge)}")
        return (check_ridge(ridge[0]), check_ridge(ridge[1]))
    return check_ridge(ridge)


def parse_ridge(value: str) -> Ridge:
    """``--ridge``: ``auto``, one number >= 0, or two numbers ``a,b`` (one per direction)."""
    if value == "auto":
        return value
    parts = value.split(",")
    try:
        lams = [float(p) for p in parts]
    except ValueError:
        raise LintwinError(f"--ridge expects a number >= 0, two as 'λ_AB,λ_BA', or 'auto', got {value!r}") from None
    if len(lams) > 2 or any(not math.isfinite(lam) or lam < 0 for lam in lams):
        raise LintwinError(f"--ridge expects finite numbers >= 0 (one, or two as 'λ_AB,λ_BA'), got {value!r}")
    return lams[0] if len(lams) == 1 else (lams[0], lams[1])


def check_rank(rank: int | None, dims: tuple[int, int] | None = None) -> int | None:
    """``None`` or a rank >= 1 (at most the narrower width when ``dims`` are known)."""
    if rank is None:
        return None
    if dims is not None and not 1 <= rank <= min(dims):
        raise LintwinError(f"rank must be between 1 and {min(dims)} (the narrower network's width), got {rank}")
    if rank < 1:
        raise LintwinError(f"rank must be >= 1, got {rank}")
    return int(rank)


def check_folds(folds: int) -> int:
    if folds < 2:
        raise LintwinError(f"cross-validation needs at least 2 folds, got {folds}")
    return int(folds)


def check_alpha(alpha: float) -> float:
    if not 0.0 <= alpha <= 1.0:
        raise LintwinError(f"--alpha must be in [0, 1] (the shape metrics' α), got {alpha}")
    return float(alpha)


def check_svcca_keep(keep: float) -> float:
    if not 0.0 < keep <= 1.0:
        raise LintwinError(f"--svcca-keep must be in (0, 1] (the share of variance SVCCA keeps), got {keep}")
    return float(keep)


def check_null_repeats(repeats: int) -> int:
    if repeats < 2:
        raise LintwinError(f"a permutation null needs at least 2 repetitions (for its sd), got {repeats}")
    return int(repeats)


def parse_bytes(text: str) -> int:
    """``--max-memory``: a byte count with an optional K/M/G/T suffix (powers of 1024)."""
    m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([KMGT]?)(?:i?B)?\s*", text, re.IGNORECASE)
    if not m:
        raise LintwinError(f"--max-memory must be a size such as 8G, 512M or 1000000, got {text!r}")
    scale = 1024 ** " KMGT".index(m.group(2).upper() or " ")
    return int(float(m.group(1)) * scale)


@dataclass(frozen=True)
class AdamOptions:
    """The paper's Adam settings are the defaults."""

    lr: float = 0.1
    decay: float = 1e-5  # lr_t = lr * (1 - decay) ** t
    beta1: float = 0.9
    beta2: float = 0.999
    eps: float = 1e-8
    batch: int = 2048
    iterations: int = 100_000
    seed: int = 0
    variant: str = "tensorflow"  # where ε enters: TensorFlow 1 (the paper's) or Kingma & Ba

    def validate(self) -> AdamOptions:
        """Refuse settings that cannot give a meaningful fit (before any work is done)."""
        def bad(what: str, value: object) -> LintwinError:
            return LintwinError(f"{what}, got {value!r}")

        if not (math.isfinite(self.lr) and self.lr > 0):
            raise bad("the Adam learning rate must be a finite number > 0", self.lr)
        if not (math.isfinite(self.decay) and 0 <= self.decay < 1):
            raise bad("the learning-rate decay must be in [0, 1)", self.decay)
        for name, beta in (("beta1", self.beta1), ("beta2", self.beta2)):
            if not (math.isfinite(beta) and 0 <= beta < 1):
                raise bad(f"{name} must be in [0, 1)", beta)
        if not (math.isfinite(self.eps) and self.eps > 0):
            raise bad("eps must be a finite number > 0", self.eps)
        if self.batch < 1 or self.iterations < 1:
            raise bad("batch and iterations must be >= 1", (self.batch, self.iterations))
        if self.variant not in ADAM_VARIANTS:
            raise bad(f"the Adam variant must be one of {', '.join(ADAM_VARIANTS)}", self.variant)
        return self

    def as_dict(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class FitSettings:
    """How maps are fitted; :meth:`validated` checks each setting and the rules between them."""

    method: str = "lstsq"
    ridge: Ridge = 0.0
    rank: int | None = None
    folds: int = 5
    precision: str = "float32"
    init: str = "random"
    ridge_criterion: str = "feature-error"
    adam: AdamOptions = field(default_factory=AdamOptions)
    device: str = "auto"

    @property
    def closed_form(self) -> bool:
        """Whether the closed form runs (the method itself, or Adam's start)."""
        return self.method == "lstsq" or self.init == "lstsq"

    def validated(self, *, dask: bool = False) -> FitSettings:
        """The same settings, normalised (ridge as numbers or ``"auto"``), or one refusal."""
        check_method(self.method)
        _one_of("init", self.init, INITS)
        check_precision(self.precision)
        check_device(self.device)
        check_ridge_criterion(self.ridge_criterion)
        ridge = check_ridge_spec(self.ridge)
        check_rank(self.rank)
        check_folds(self.folds)
        (self.adam or AdamOptions()).validate()
        if self.method == "adam" and self.rank is not None:
            raise LintwinError("--rank applies to the closed-form map; use --method lstsq")
        if self.method == "adam" and self.init != "lstsq" and ridge not in (0.0, (0.0, 0.0)):
            raise LintwinError("--ridge applies to the closed-form map; with --method adam it is used only for "
                               "Adam's closed-form start: add --init lstsq, or drop --ridge")
        if self.ridge_criterion != "feature-error" and ridge != "auto":
            raise LintwinError("--ridge-criterion chooses λ under --ridge auto; add --ridge auto, or drop "
                               "--ridge-criterion")
        if dask and self.method != "lstsq":
            raise LintwinError("--dask runs the closed-form accumulation; use it with --method lstsq")
        if dask and ridge == "auto":
            raise LintwinError("--ridge auto accumulates fold moments on one machine; drop --dask")
        return replace(self, ridge=ridge, adam=self.adam or AdamOptions())
