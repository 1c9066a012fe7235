"""How well mapped features match the true ones: cosine, R² and the paper's loss.

All are accumulated over chunks (:class:`FitMetrics`) so they can be computed on a store
without loading it, with every running sum kept on the chunks' device (one sync at the end).
The paper's loss is E(x, y) = ||x/||x|| - y/||y||||² averaged over rows, with 0/0 read as 0
(an all-zero row has no direction): E = 2 - 2 cos(x, y) for non-zero rows, 1 when exactly one
of the two rows is zero and 0 when both are.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from ..errors import NonFiniteError
from .xp import namespace

__all__ = ["FitMetrics", "MapMetricsSink", "paper_loss", "paper_loss_rows", "row_cosine"]


def _unit_rows(x: Any, xp: Any) -> tuple[Any, Any]:
    """Rows scaled to unit norm (zero rows stay zero) and the 0/1 indicator of non-zero rows."""
    norm = xp.sqrt(xp.sum(x * x, axis=1, keepdims=True))
    nonzero = norm > 0
    return x / xp.where(nonzero, norm, xp.ones_like(norm)), xp.astype(xp.reshape(nonzero, (-1,)), x.dtype)


def row_cosine(p: Any, y: Any) -> Any:
    """Cosine similarity of each row of ``p`` with the same row of ``y`` (0 where either row is zero)."""
    xp = namespace(p, y)
    u, _ = _unit_rows(p, xp)
    v, _ = _unit_rows(y, xp)
    return xp.sum(u * v, axis=1)


def paper_loss_rows(p: Any, y: Any) -> Any:
    """The paper's loss E of each row, straight from its definition ||p/||p|| − y/||y||||²."""
    xp = namespace(p, y)
    u, nu = _unit_rows(p, xp)
    v, nv = _unit_rows(y, xp)
    return nu + nv - 2.0 * xp.sum(u * v, axis=1)


def paper_loss(p: Any, y: Any) -> float:
    """The paper's loss E averaged over rows."""
    xp = namespace(p, y)
    return float(xp.mean(paper_loss_rows(p, y)))


@dataclass
class FitMetrics:
    """Streaming cosine / paper loss / variance-weighted R² of predictions against targets.

    R² is ``1 - SS_res / SS_tot`` summed over all output dimensions (variance-weighted), which
    stays meaningful when some feature dimensions are nearly constant. ``r2_best_scale`` is the
    R² of ``s·p`` with the scale s that fits best: the R² that scale-free maps (the paper's
    Adam, whose loss ignores the prediction's norm) can be judged by.
    """

    n: int = 0
    sums: dict[str, Any] | None = None

    def update(self, p: Any, y: Any) -> "FitMetrics":
        """Add a block of predictions ``p`` and targets ``y``.

        Products are taken in the inputs' dtype and every sum is accumulated in float64, so
        float32 blocks are never copied to float64 (the relative rounding of one product,
        ~6e-8 in float32, is far below the metrics' printed precision).
        """
        xp = namespace(p, y)
        f64 = xp.float64
        # Three row reductions give cosine, loss and the scale-free R² terms together.
        pp = xp.sum(p * p, axis=1, dtype=f64)
        yy = xp.sum(y * y, axis=1, dtype=f64)
        py = xp.sum(p * y, axis=1, dtype=f64)
        nz_p, nz_y = pp > 0, yy > 0
        both = nz_p & nz_y
        cos = xp.where(both, py / xp.sqrt(xp.where(both, pp * yy, xp.ones_like(pp))), xp.zeros_like(pp))
        r = p - y
        part = {
            "cos": xp.sum(cos),
            "loss": xp.sum(xp.astype(nz_p, f64) + xp.astype(nz_y, f64) - 2.0 * cos),
            "ss_res": xp.sum(r * r, dtype=f64),
            "yy": xp.sum(yy),
            "pp": xp.sum(pp),
            "py": xp.sum(py),
            "y": xp.sum(y, axis=0, dtype=f64),
        }
        self.sums = part if self.sums is None else {k: self.sums[k] + part[k] for k in part}
        self.n += int(y.shape[0])
        return self

    def is_finite(self) -> bool:
        """False when NaN/Inf reached the sums (one sync)."""
        if self.sums is None:
            return True
        xp = namespace(self.sums["y"])
        return bool(xp.all(xp.isfinite(xp.stack([self.sums[k] for k in ("cos", "ss_res", "yy", "pp", "py")])))
                    & xp.all(xp.isfinite(self.sums["y"])))

    def result(self, scale_free: bool = False) -> dict[str, Any]:
        """Averages and R²; with ``scale_free`` the reported ``r2`` is the best-scale R² (and says so)."""
        nan = float("nan")
        if self.n == 0 or self.sums is None:
            return {"rows": 0, "mean_cosine": nan, "paper_loss": nan, "r2": nan, "r2_best_scale": nan,
                    "r2_kind": "plain"}
        xp = namespace(self.sums["y"])
        s = {k: float(v) for k, v in self.sums.items() if k != "y"}
        ss_tot = s["yy"] - float(xp.sum(self.sums["y"] * self.sums["y"])) / self.n
        r2 = 1.0 - s["ss_res"] / ss_tot if ss_tot > 0 else nan
        best_res = s["yy"] - s["py"] ** 2 / s["pp"] if s["pp"] > 0 else s["yy"]
        r2_scaled = 1.0 - best_res / ss_tot if ss_tot > 0 else nan
        return {
            "rows": self.n,
            "mean_cosine": s["cos"] / self.n,
            "paper_loss": s["loss"] / self.n,
            "r2": r2_scaled if scale_free else r2,
            "r2_plain": r2,
            "r2_best_scale": r2_scaled,
            "r2_kind": "best scale" if scale_free else "plain",
        }


class MapMetricsSink:
    """Feature metrics of maps in one pass: ``maps[k]`` applied to its source block, scored against its target.

    ``index`` gives each network's block position in the source; maps are any objects with ``src``,
    ``dst`` and ``apply`` (:class:`~lintwin.affine.AffineMap`).
    """

    def __init__(self, maps: Sequence[Any], index: dict[str, int]):
        self.maps, self.index = list(maps), index
        self.metrics = [FitMetrics() for _ in self.maps]

    def update(self, lo: int, blocks: Sequence[Any]) -> None:
        for mp, acc in zip(self.maps, self.metrics):
            acc.update(mp.apply(blocks[self.index[mp.src]]), blocks[self.index[mp.dst]])

    def is_finite(self) -> bool:
        return all(acc.is_finite() for acc in self.metrics)

    def check_finite(self) -> None:
        if not self.is_finite():
            raise NonFiniteError("NaN or Inf reached the feature metrics of " + ", ".join(
                f"{mp.src}→{mp.dst}" for mp in self.maps))
