"""Human-readable output: metric tables and plots (PNG)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

__all__ = ["format_table", "metrics_table", "plot_loss_curve"]


def format_table(headers: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    """Plain aligned text table (right-aligned numbers, left-aligned text)."""
    cells = [[_fmt(c) for c in r] for r in rows]
    widths = [max(len(h), *(len(r[i]) for r in cells)) if cells else len(h) for i, h in enumerate(headers)]
    def line(vals: Sequence[str], raw: Sequence[object] | None = None) -> str:
        out = []
        for i, v in enumerate(vals):
            numeric = raw is not None and isinstance(raw[i], (int, float, np.number))
            out.append(v.rjust(widths[i]) if numeric else v.ljust(widths[i]))
        return "  ".join(out).rstrip()
    sep = "  ".join("-" * w for w in widths)
    return "\n".join([line(headers), sep, *(line(c, r) for c, r in zip(cells, rows))])


def _fmt(v: object) -> str:
    if isinstance(v, (float, np.floating)):
        return f"{v:.4f}" if abs(v) >= 1e-3 or v == 0 else f"{v:.3e}"
    return str(v)


def metrics_table(results: Sequence[tuple[str, str, dict]]) -> str:
    """Rows of (map name, split, metrics dict from :class:`FitMetrics`)."""
    rows = [(name, split, m["rows"], m["mean_cosine"], m["r2"], m["paper_loss"]) for name, split, m in results]
    return format_table(["map", "split", "rows", "mean cos", "R²", "paper loss"], rows)


def plot_loss_curve(curves: dict[str, np.ndarray], path: str | Path, *, reference: dict[str, float] | None = None,
                    title: str = "Adam training loss") -> Path:
    """Write a PNG of per-iteration loss (smoothed), with optional horizontal reference lines."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4))
    for label, curve in curves.items():
        curve = np.asarray(curve, dtype=float)
        k = max(1, len(curve) // 200)
        smooth = np.convolve(curve, np.ones(k) / k, mode="valid")
        ax.plot(np.arange(len(smooth)) + k, smooth, label=f"{label} (batch loss, mean of {k})")
    for label, value in (reference or {}).items():
        ax.axhline(value, linestyle="--", linewidth=1, color="gray")
        ax.annotate(label, (0, value), textcoords="offset points", xytext=(4, 3), fontsize=8, color="gray")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("iteration")
    ax.set_ylabel("paper loss E (mean over batch)")
    ax.set_title(title)
    ax.legend(fontsize=8)
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
