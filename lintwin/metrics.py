"""How well mapped features match the true ones: cosine, R² and the paper's loss.

All three are accumulated over chunks (:class:`FitMetrics`) so they can be computed on a
store without loading it. The paper's loss is E(x, y) = ||x/||x|| - y/||y||||², averaged
over rows; it equals 2 - 2 cos(x, y).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ._xp import namespace

__all__ = ["FitMetrics", "row_cosine", "paper_loss"]

_TINY = 1e-30


def _row_norms(x: Any, xp: Any) -> Any:
    return xp.sqrt(xp.sum(x * x, axis=1))


def row_cosine(p: Any, y: Any) -> Any:
    """Cosine similarity of each row of ``p`` with the same row of ``y``."""
    xp = namespace(p, y)
    denom = _row_norms(p, xp) * _row_norms(y, xp)
    return xp.sum(p * y, axis=1) / xp.maximum(denom, xp.asarray(_TINY, dtype=denom.dtype))


def paper_loss(p: Any, y: Any) -> float:
    """The paper's loss E averaged over rows."""
    xp = namespace(p, y)
    return float(xp.mean(2.0 - 2.0 * row_cosine(p, y)))


@dataclass
class FitMetrics:
    """Streaming cosine / paper loss / variance-weighted R² of predictions against targets.

    R² here is ``1 - SS_res / SS_tot`` summed over all output dimensions (variance-weighted),
    which stays meaningful when some feature dimensions are nearly constant.
    """

    n: int = 0
    sum_cos: float = 0.0
    ss_res: float = 0.0
    sum_sq: float = 0.0
    sum_y: Any = None

    def update(self, p: Any, y: Any) -> "FitMetrics":
        xp = namespace(p, y)
        p64, y64 = xp.astype(p, xp.float64), xp.astype(y, xp.float64)
        self.n += int(y.shape[0])
        self.sum_cos += float(xp.sum(row_cosine(p64, y64)))
        r = p64 - y64
        self.ss_res += float(xp.sum(r * r))
        self.sum_sq += float(xp.sum(y64 * y64))
        s = xp.sum(y64, axis=0)
        self.sum_y = s if self.sum_y is None else self.sum_y + s
        return self

    def result(self) -> dict[str, float]:
        if self.n == 0:
            return {"rows": 0, "mean_cosine": float("nan"), "paper_loss": float("nan"), "r2": float("nan")}
        xp = namespace(self.sum_y)
        ss_tot = self.sum_sq - float(xp.sum(self.sum_y * self.sum_y)) / self.n
        cos = self.sum_cos / self.n
        return {
            "rows": self.n,
            "mean_cosine": cos,
            "paper_loss": 2.0 - 2.0 * cos,
            "r2": 1.0 - self.ss_res / ss_tot if ss_tot > 0 else float("nan"),
        }
