"""Bootstrap confidence intervals for Table 1's accuracies and losses, resampling evaluation images.

Resampling is paired: each bootstrap replicate draws one multiset of images (multinomial counts)
and scores every configuration on it, so a loss (own accuracy minus mapped accuracy) keeps the
correlation between its two terms. Intervals are percentile intervals, in percent.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ..errors import LintwinError, ShapeError

__all__ = ["bootstrap_table", "default_losses"]


def default_losses(keys: list[str]) -> dict[str, tuple[str, str]]:
    """``{"X→Y": ("Y", "X→Y")}`` for every mapped configuration ``X→Y`` whose target ``Y`` is a key."""
    out = {}
    for k in keys:
        if "→" in k:
            target = k.split("→", 1)[1]
            if target in keys:
                out[k] = (target, k)
    return out


def bootstrap_table(hits: dict[str, np.ndarray], *, losses: dict[str, tuple[str, str]] | None = None,
                    n_boot: int = 2000, level: float = 0.95, seed: int = 0, batch: int = 200) -> dict[str, Any]:
    """Percentile intervals of each accuracy (``100·mean(hits[k])``) and each loss, in percent.

    ``hits`` maps a configuration (e.g. ``"A"``, ``"B"``, ``"A→B"``, ``"B→A"``) to its per-image
    correct vector (bool, one entry per evaluation image, same order for all). ``losses`` maps a
    loss name to ``(own, mapped)``: loss = accuracy(own) − accuracy(mapped); by default every
    ``"X→Y"`` against ``"Y"`` (:func:`default_losses`).
    """
    if not hits:
        raise LintwinError("bootstrap_table needs at least one configuration")
    if not 0.0 < level < 1.0:
        raise LintwinError(f"level must be in (0, 1), got {level}")
    if n_boot < 2:
        raise LintwinError(f"n_boot must be at least 2, got {n_boot}")
    arrs = {k: np.asarray(v) for k, v in hits.items()}
    sizes = {k: v.shape for k, v in arrs.items()}
    n = next(iter(arrs.values())).shape[0] if arrs else 0
    if any(v.ndim != 1 or v.shape[0] != n for v in arrs.values()):
        raise ShapeError(f"hits must be 1-D vectors of one length (one entry per image), got shapes {sizes}")
    if n == 0:
        raise ShapeError("hits are empty: no evaluation images")
    for k, v in arrs.items():
        if v.dtype != bool and not np.isin(v, (0, 1)).all():
            raise LintwinError(f"hits[{k!r}] must be booleans (correct or not per image)")
    losses = default_losses(list(arrs)) if losses is None else losses
    for name, (own, mapped) in losses.items():
        if own not in arrs or mapped not in arrs:
            raise LintwinError(f"loss {name!r} refers to unknown configurations {own!r}, {mapped!r}")
    keys = list(arrs)
    H = np.stack([arrs[k].astype(np.float64) for k in keys], axis=1)  # images x configurations
    rng = np.random.default_rng(seed)
    reps = np.empty((n_boot, len(keys)))
    for lo in range(0, n_boot, batch):
        hi = min(lo + batch, n_boot)
        counts = rng.multinomial(n, np.full(n, 1.0 / n), size=hi - lo)  # paired: one draw for all columns
        reps[lo:hi] = counts @ H / n
    reps *= 100.0
    point = 100.0 * H.mean(axis=0)
    q = [50.0 * (1.0 - level), 50.0 * (1.0 + level)]

    def interval(est: float, samples: np.ndarray) -> dict[str, float]:
        low, high = np.percentile(samples, q)
        return {"estimate": float(est), "low": float(low), "high": float(high)}

    col = {k: i for i, k in enumerate(keys)}
    acc = {k: interval(point[i], reps[:, i]) for k, i in col.items()}
    loss = {name: interval(point[col[o]] - point[col[m]], reps[:, col[o]] - reps[:, col[m]])
            for name, (o, m) in losses.items()}
    return {"images": int(n), "n_boot": int(n_boot), "level": level, "seed": seed, "accuracy": acc, "loss": loss}
