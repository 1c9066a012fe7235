"""What ``lintwin stitch-sweep`` shows: the penalty table, its formats, and the penalty curve or heatmap."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
from matplotlib.figure import Figure

from ..core.files import atomic_write
from .layer_similarity_report import layer_label
from .report import new_figure, save_figure
from .stitch_sweep import StitchSweep
from .tables import OutputFormat, Table

__all__ = ["stitch_sweep_figure", "stitch_sweep_output", "write_stitch_sweep"]


def _interval(e: dict[str, float]) -> str:
    return f"{e['estimate']:.2f} [{e['low']:.2f}, {e['high']:.2f}]"


def _table(sweep: StitchSweep) -> Table:
    level = round(100 * sweep.settings["level"])
    rows: list[list[object]] = [[layer_label(r["layer_a"]), layer_label(r["layer_b"]),
                                 " x ".join(map(str, r["grid_b"])) or "vector", r["correct"], _interval(r["accuracy"]),
                                 _interval(r["penalty"])] for r in sweep.rows]
    b, a = sweep.own["B"], sweep.own["A"]
    return Table(["A's layer", "B's layer", "grid", "correct", f"accuracy % [{level}%]", f"penalty pp [{level}%]"],
                 rows, title=f"stitching {Path(sweep.model_a).name} into {Path(sweep.model_b).name} on "
                             f"{sweep.images:,} held-out images",
                 legend=[(f"B ({Path(sweep.model_b).name}) alone: {b['correct']} correct, {_interval(b)} %; "
                          f"A ({Path(sweep.model_a).name}) alone: {a['correct']} correct, {_interval(a)} %"),
                         ("penalty = B's accuracy minus the stitched model's (negative: a gain); paired bootstrap "
                          f"intervals over the images ({sweep.settings['bootstrap']} resamples)")])


def stitch_sweep_output(sweep: StitchSweep, payload: dict[str, Any], fmt: OutputFormat) -> str:
    """The table as text, Markdown or CSV (one row per pair with interval bounds), or the JSON."""
    if fmt is OutputFormat.json:
        return json.dumps(payload, indent=2, allow_nan=False)
    if fmt is OutputFormat.csv:
        rows = [[r["layer_a"], r["layer_b"], "x".join(map(str, r["grid_b"])), r["correct"],
                 *(round(r[k][e], 6) for k in ("accuracy", "penalty") for e in ("estimate", "low", "high"))]
                for r in sweep.rows]
        return Table(["layer_a", "layer_b", "grid", "correct", "accuracy", "accuracy_low", "accuracy_high",
                      "penalty", "penalty_low", "penalty_high"], rows).csv()
    table = _table(sweep)
    return table.text() if fmt is OutputFormat.text else table.markdown()


def _grid_of(sweep: StitchSweep) -> bool:
    """Whether the pairs fill a grid of at least 2 x 2 (drawn as a heatmap; otherwise as a curve)."""
    return sweep.pairing == "all" and len(sweep.layers_a) > 1 and len(sweep.layers_b) > 1


def stitch_sweep_figure(sweep: StitchSweep) -> Figure:
    """The penalty with its interval per pair (a curve), or as a heatmap of A's layers x B's layers."""
    level = round(100 * sweep.settings["level"])
    if _grid_of(sweep):
        la, lb = [layer_label(t) for t in sweep.layers_a], [layer_label(t) for t in sweep.layers_b]
        values = np.full((len(la), len(lb)), np.nan)
        for r in sweep.rows:
            values[sweep.layers_a.index(r["layer_a"]), sweep.layers_b.index(r["layer_b"])] = r["penalty"]["estimate"]
        width = 0.6 * len(lb) + 0.065 * max(map(len, la)) + 2.5
        height = 0.45 * len(la) + 0.065 * max(map(len, lb)) + 1.8
        fig, ax = new_figure(figsize=(width, height))
        ax = ax[0, 0]
        span = float(np.nanmax(np.abs(values))) or 1.0
        im = ax.imshow(values, cmap="RdBu_r", vmin=-span, vmax=span, aspect="auto")
        ax.set_xticks(range(len(lb)), lb, rotation=90, fontsize=8)
        ax.set_yticks(range(len(la)), la, fontsize=8)
        for (i, j), v in np.ndenumerate(values):
            if np.isfinite(v):
                ax.text(j, i, f"{v:.1f}", ha="center", va="center", fontsize=7,
                        color="white" if abs(v) > 0.6 * span else "black")
        fig.colorbar(im, ax=ax, shrink=0.8, label="penalty (pp)")
        ax.set_xlabel(f"layer of B ({Path(sweep.model_b).name})")
        ax.set_ylabel(f"layer of A ({Path(sweep.model_a).name})")
        ax.set_title(f"stitching penalty, {sweep.images:,} held-out images\n(B's accuracy minus the stitched "
                     "model's)", fontsize=9)
        return fig
    labels = [f"{layer_label(r['layer_a'])}\n→ {layer_label(r['layer_b'])}" for r in sweep.rows]
    est = np.asarray([r["penalty"]["estimate"] for r in sweep.rows])
    low = est - np.asarray([r["penalty"]["low"] for r in sweep.rows])
    high = np.asarray([r["penalty"]["high"] for r in sweep.rows]) - est
    longest = max(len(s) for lab in labels for s in lab.split("\n"))
    upright = len(labels) <= 6  # few pairs: names written level, two lines each
    width = max(6.0, len(labels) * (0.075 * longest + 0.3) + 1.5) if upright else max(5.5, 0.9 * len(labels) + 2.5)
    height = 4.2 if upright else 3.2 + 0.065 * longest
    fig, ax = new_figure(figsize=(width, height))
    ax = ax[0, 0]
    x = np.arange(len(labels))
    ax.errorbar(x, est, yerr=[low, high], marker="o", capsize=3, lw=1.5, label=f"penalty, {level}% interval")
    ax.axhline(0.0, color="gray", lw=0.8, ls="--")
    ax.set_xticks(x, labels, rotation=0 if upright else 90, fontsize=7)
    ax.set_ylabel("penalty (percentage points)")
    ax.set_title(f"stitching {Path(sweep.model_a).name} into {Path(sweep.model_b).name}\n{sweep.images:,} held-out "
                 f"images; B alone {sweep.own['B']['estimate']:.2f} %", fontsize=9)
    ax.legend(fontsize=8, loc="best")
    return fig


def write_stitch_sweep(sweep: StitchSweep, payload: dict[str, Any], out: Path) -> list[Path]:
    """``out/stitch_sweep.json``, ``.csv`` and ``.png``."""
    out.mkdir(parents=True, exist_ok=True)
    text = json.dumps(payload, indent=2, allow_nan=False)
    csv = stitch_sweep_output(sweep, payload, OutputFormat.csv) + "\n"
    return [atomic_write(out / "stitch_sweep.json", lambda fh: fh.write(text.encode())),
            atomic_write(out / "stitch_sweep.csv", lambda fh: fh.write(csv.encode())),
            save_figure(stitch_sweep_figure(sweep), out / "stitch_sweep.png")]
