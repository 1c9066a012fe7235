"""Human-readable output: metric tables and plots (PNG)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from ..core.files import atomic_write

if TYPE_CHECKING:
    from .compare import Regions

__all__ = ["format_table", "new_figure", "save_figure", "metrics_table", "plot_loss_curve", "plot_regions", "plot_ridge_cv", "regions_text",
           "table1_text"]


def new_figure(nrows: int = 1, ncols: int = 1, figsize: tuple[float, float] = (7, 4)) -> tuple[Any, Any]:
    """A matplotlib figure and axes on the non-interactive Agg backend (no display needed)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt.subplots(nrows, ncols, figsize=figsize, squeeze=False)


def save_figure(fig: Any, path: str | Path) -> Path:
    """Lay out, write as PNG (creating the folder; atomically, as every output) and close ``fig``."""
    import matplotlib.pyplot as plt

    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        atomic_write(path, lambda fh: fig.savefig(fh, format="png", dpi=110))
    finally:
        plt.close(fig)
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


def plot_loss_curve(curves: dict[str, np.ndarray], path: str | Path, *, reference: dict[str, float] | None = None,
                    title: str = "Adam training loss") -> Path:
    """Write a PNG of per-iteration loss (smoothed), with optional horizontal reference lines."""
    fig, axes = new_figure()
    ax = axes[0, 0]
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
    return save_figure(fig, path)


def table1_text(table: Sequence[dict]) -> str:
    """The paper's Table 1 layout: description, mapping, correct, percent, loss (with 95% intervals if known)."""
    with_ci = any("percent_ci" in r for r in table)
    rows = []
    for r in table:
        loss = "" if r["loss"] is None else f"{r['loss']:+.2f}"
        row = [r["description"], r["mapping"], r["correct"], f"{r['percent']:.2f}%", loss]
        if with_ci:
            lo, hi = r["percent_ci"]
            row.insert(4, f"[{lo:.2f}, {hi:.2f}]")
            row.append("" if r["loss"] is None else "[{:+.2f}, {:+.2f}]".format(*r["loss_ci"]))
        rows.append(tuple(row))
    headers = ["description", "mapping", "correct", "percent", "loss (pp)"]
    if with_ci:
        headers = headers[:4] + ["95% CI"] + headers[4:] + ["95% CI (pp)"]
    return format_table(headers, rows)


def region_labels(a: str, b: str) -> dict[str, str]:
    """Names of the Fig. 5 regions; keys say who is right: A (network a), B (network b), M (a→b)."""
    m = f"{a}→{b}"
    return {
        "ABM": "all three right", "AB-": f"{a} and {b} right, {m} wrong", "A-M": f"{a} and {m} right, {b} wrong",
        "-BM": f"{b} and {m} right, {a} wrong", "A--": f"only {a} right", "-B-": f"only {b} right",
        "--M": f"only {m} right", "---": "all three wrong",
    }


def regions_text(reg: Regions) -> str:
    """Fig. 5 as text: one count per subset of {A, B, A→B} that labels an image correctly."""
    a, b = reg.a, reg.b
    lines = [f"Fig. 5 regions, target {b} ({a}→{b} = {b}'s head on mapped {a} features):"]
    labels = region_labels(a, b)
    width = max(len(label) for label in labels.values())
    lines += [f"  {label:<{width}}  {reg.counts[key]:>7}" for key, label in labels.items()]
    lines.append(f"  {b} misses {reg.b_errors}; mapped {a} features fix {reg.fixed_by_map} of them "
                 f"and break {reg.broken_by_map} that {b} got right")
    return "\n".join(lines)


def plot_regions(regions: Sequence[Regions], path: str | Path, title: str = "") -> Path:
    """Fig. 5 as a three-set Venn diagram per direction (circles A, B, A→B; counts in regions)."""
    from matplotlib.patches import Circle

    fig, axes = new_figure(1, len(regions), figsize=(6 * len(regions), 5.6))
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
        ax.text(-1.35, 1.45, names["A"], color=colours["A"], fontsize=10, ha="left")
        ax.text(1.35, 1.45, names["B"], color=colours["B"], fontsize=10, ha="right")
        ax.text(0.0, -1.75, names["M"], color=colours["M"], fontsize=10, ha="center")
        for key, (x, y) in spots.items():
            ax.text(x, y, f"{reg.counts[key]:,}", ha="center", va="center", fontsize=11)
        ax.text(0.0, -2.15, f"all wrong: {reg.counts['---']:,}   ·   {b} misses {reg.b_errors:,}, "
                f"mapped {a} fixes {reg.fixed_by_map:,}", ha="center", fontsize=9)
        ax.set_xlim(-2.0, 2.0)
        ax.set_ylim(-2.4, 1.7)
        ax.set_aspect("equal")
        ax.axis("off")
        ax.set_title(f"target {b}: {a}→{b}")
    if title:
        fig.suptitle(title)
    return save_figure(fig, path)


def plot_ridge_cv(cv: dict, path: str | Path) -> Path:
    """The K-fold CV curve that decided λ (held-out feature error, or top-1 agreement), chosen λ marked."""
    fig, axes = new_figure(figsize=(6.5, 4))
    ax = axes[0, 0]
    by_agreement = cv.get("scored_by") == "top-1 agreement" and cv.get("agreement")
    values = [100 * a for a in cv["agreement"]] if by_agreement else cv["cv_error"]
    ax.plot(cv["lambdas"], values, marker="o", markersize=3)
    ax.axvline(cv["chosen"], color="gray", linestyle="--", linewidth=1)
    chosen = values[cv["lambdas"].index(cv["chosen"])]
    ax.annotate(f"λ = {cv['chosen']:.3g}", (cv["chosen"], chosen), textcoords="offset points", xytext=(5, 8),
                fontsize=9)
    ax.set_xscale("log")
    ax.set_xlabel("ridge λ")
    ax.set_ylabel("held-out top-1 agreement with the target (%)" if by_agreement
                  else "held-out SSE / held-out variance")
    ax.set_title(f"{cv['direction']}: {cv['folds']}-fold CV over images, criterion {cv.get('scored_by')}")
    return save_figure(fig, path)
