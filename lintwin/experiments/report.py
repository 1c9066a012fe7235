"""Human-readable output: metric tables and plots (PNG)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from ..core.files import atomic_write

if TYPE_CHECKING:
    from matplotlib.figure import Figure

    from .compare import Regions

__all__ = ["format_table", "loss_curve_figure", "metrics_table", "new_figure", "plot_loss_curve", "plot_regions",
           "plot_ridge_cv", "region_labels", "regions_figure", "ridge_cv_figure", "save_figure"]


def new_figure(nrows: int = 1, ncols: int = 1, figsize: tuple[float, float] = (7, 4)) -> tuple[Figure, Any]:
    """A figure with constrained layout on the Agg canvas (no pyplot, no display, no global state) and its axes.

    matplotlib is imported here, when a figure is drawn: commands that draw none start without it.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=figsize, layout="constrained")
    FigureCanvasAgg(fig)
    return fig, fig.subplots(nrows, ncols, squeeze=False)


def save_figure(fig: Figure, path: str | Path) -> Path:
    """Write ``fig`` as PNG (creating the folder; atomically, as every output)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(path, lambda fh: fig.savefig(fh, format="png", dpi=110))
    return path


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


def loss_curve_figure(curves: dict[str, np.ndarray], *, reference: dict[str, float] | None = None,
                      title: str = "Adam training loss") -> Figure:
    """Per-iteration loss (smoothed, log-log), with optional horizontal reference lines labelled at the right."""
    fig, axes = new_figure(figsize=(7, 4.2))
    ax = axes[0, 0]
    for label, curve in curves.items():
        curve = np.asarray(curve, dtype=float)
        k = max(1, len(curve) // 200)
        smooth = np.convolve(curve, np.ones(k) / k, mode="valid")
        ax.plot(np.arange(len(smooth)) + k, smooth, label=f"{label} (batch loss, mean of {k})")
    for label, value in (reference or {}).items():
        ax.axhline(value, linestyle="--", linewidth=1, color="gray", label=f"{label}: {value:.4g}")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("iteration")
    ax.set_ylabel("paper loss E (mean over batch)")
    ax.set_title(title)
    ax.legend(fontsize=8, loc="upper right")
    return fig


def plot_loss_curve(curves: dict[str, np.ndarray], path: str | Path, *, reference: dict[str, float] | None = None,
                    title: str = "Adam training loss") -> Path:
    """Write :func:`loss_curve_figure` as a PNG."""
    return save_figure(loss_curve_figure(curves, reference=reference, title=title), path)


def region_labels(a: str, b: str) -> dict[str, str]:
    """Names of the Fig. 5 regions; keys say who is right: A (network a), B (network b), M (a→b)."""
    m = f"{a}→{b}"
    return {
        "ABM": "all three right", "AB-": f"{a} and {b} right, {m} wrong", "A-M": f"{a} and {m} right, {b} wrong",
        "-BM": f"{b} and {m} right, {a} wrong", "A--": f"only {a} right", "-B-": f"only {b} right",
        "--M": f"only {m} right", "---": "all three wrong",
    }


def regions_figure(regions: Sequence[Regions], title: str = "") -> Figure:
    """Fig. 5 as a three-set Venn diagram per direction (circles A, B, A→B; counts in regions)."""
    from matplotlib.patches import Circle

    fig, axes = new_figure(1, len(regions), figsize=(6 * len(regions), 6.0))
    axes = axes[0]
    centres = {"A": (-0.55, 0.35), "B": (0.55, 0.35), "M": (0.0, -0.55)}
    colours = {"A": "tab:blue", "B": "tab:orange", "M": "tab:green"}
    spots = {"A--": (-1.0, 0.6), "-B-": (1.0, 0.6), "--M": (0.0, -1.1), "AB-": (0.0, 0.75),
             "A-M": (-0.62, -0.35), "-BM": (0.62, -0.35), "ABM": (0.0, 0.05)}
    for ax, reg in zip(axes, regions):
        a, b = reg.a, reg.b
        names = {"A": f"{a} right", "B": f"{b} right", "M": f"{a}→{b} right"}
        for k, (x, y) in centres.items():
            ax.add_patch(Circle((x, y), 1.0, alpha=0.25, color=colours[k]))
            ax.add_patch(Circle((x, y), 1.0, fill=False, color=colours[k], linewidth=1.5))
        ax.text(-1.55, 1.45, names["A"], color=colours["A"], fontsize=9, ha="left")
        ax.text(1.55, 1.62, names["B"], color=colours["B"], fontsize=9, ha="right", va="bottom")
        ax.text(0.0, -1.75, names["M"], color=colours["M"], fontsize=9, ha="center")
        for key, (x, y) in spots.items():
            ax.text(x, y, f"{reg.counts[key]:,}", ha="center", va="center", fontsize=11)
        ax.text(0.0, -2.1, f"all three wrong: {reg.counts['---']:,}", ha="center", fontsize=9)
        ax.text(0.0, -2.4, f"{b} misses {reg.b_errors:,}; mapped {a} fixes {reg.fixed_by_map:,}",
                ha="center", fontsize=9)
        ax.set_xlim(-2.1, 2.1)
        ax.set_ylim(-2.6, 2.0)
        ax.set_aspect("equal")
        ax.axis("off")
        ax.set_title(f"target {b}:\n{a}→{b}", fontsize=10)
    if title:
        fig.suptitle(title)
    return fig


def plot_regions(regions: Sequence[Regions], path: str | Path, title: str = "") -> Path:
    """Write :func:`regions_figure` as a PNG."""
    return save_figure(regions_figure(regions, title), path)


def ridge_cv_figure(cv: dict) -> Figure:
    """The K-fold CV curve that decided λ (held-out feature error, or top-1 agreement), chosen λ marked."""
    fig, axes = new_figure(figsize=(6.5, 4.4))
    ax = axes[0, 0]
    by_agreement = cv.get("scored_by") == "top-1 agreement" and cv.get("agreement")
    values = [100 * a for a in cv["agreement"]] if by_agreement else cv["cv_error"]
    ax.plot(cv["lambdas"], values, marker="o", markersize=3)
    chosen = values[cv["lambdas"].index(cv["chosen"])]
    ax.axvline(cv["chosen"], color="gray", linestyle="--", linewidth=1, label=f"chosen λ = {cv['chosen']:.3g}")
    ax.plot([cv["chosen"]], [chosen], marker="o", color="tab:red", markersize=6)
    ax.set_xscale("log")
    ax.set_xlabel("ridge λ")
    ax.set_ylabel("held-out top-1 agreement (%)" if by_agreement else "held-out SSE / variance")
    ax.legend(fontsize=8, loc="best")
    ax.set_title(f"{cv['direction']}: {cv['folds']}-fold CV over images\ncriterion {cv.get('scored_by')}",
                 fontsize=10)
    return fig


def plot_ridge_cv(cv: dict, path: str | Path) -> Path:
    """Write :func:`ridge_cv_figure` as a PNG."""
    return save_figure(ridge_cv_figure(cv), path)
