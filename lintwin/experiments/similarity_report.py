"""What ``lintwin similarity`` shows: the table of measures (with the null's p-values), its formats, the PNG."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from ..measures.similarity import Similarity
from .report import new_figure, save_figure
from .tables import OutputFormat, Table, fit_width

if TYPE_CHECKING:
    from matplotlib.figure import Figure

__all__ = ["measure_label", "plot_similarity", "similarity_figure", "similarity_output", "similarity_table"]

_LABELS = {
    "cka": "linear CKA",
    "cka_debiased": "debiased linear CKA",
    "cca_rho1": "CCA ρ1 (largest)",
    "cca_mean_rho": "CCA mean ρ",
    "cca_mean_rho2": "CCA mean ρ²",
    "svcca": "SVCCA (mean ρ)",
    "pwcca": "PWCCA",
    "procrustes": "Procrustes distance (0..2)",
}


def measure_label(key: str, a: str, b: str) -> str:
    """A person's name for a measure key (``r2_ab`` → ``R² A→B``)."""
    if key.startswith("shape_angle["):
        return f"shape angle α={key[12:-1]} (rad)"
    for prefix, what in (("r2cv_", "R² CV ridge"), ("r2_", "R²")):
        if key.startswith(prefix):
            src, dst = (a, b) if key.endswith("_ab") else (b, a)
            return f"{what} {src}→{dst}"
    return _LABELS.get(key, key)


def _p(entry: dict[str, Any]) -> str:
    if entry.get("p") is None:
        return "—"
    p = f"{entry['p']:.2g}"
    if entry["status"] == "degenerate":
        return f"{p} (degenerate)"
    return f"≤ {p}" if entry["as_alike"] == 0 else p


def similarity_table(sim: Similarity, null: dict[str, dict[str, Any]] | None = None,
                     name_of: Callable[[str], str] = str) -> Table:
    """One row per measure: value, and with a null its mean ± sd and permutation p-value."""
    a, b = (name_of(n) for n in sim.names)
    rows: list[list[object]] = []
    for key, v in sim.values.items():
        row: list[object] = [measure_label(key, a, b), "—" if v is None else float(v)]
        if null is not None:
            s = null.get(key)
            if s is None or s["mean"] is None:
                row += ["—", "—"]
            else:
                row += [f"{s['mean']:.4f} ± {s['sd']:.2g}" if s["sd"] is not None else f"{s['mean']:.4f}", _p(s)]
        rows.append(row)
    k = max((s["samples"] for s in (null or {}).values()), default=0)
    headers = ["measure", "value"] + (["null mean ± sd", f"p (K={k})"] if null is not None else [])
    legend = ["p = (1 + #null samples at least as alike as the value) / (K + 1), one-sided; "
              "'≤': no null sample came as close"] if null is not None else []
    return Table(headers, rows, legend=legend)


def similarity_output(sim: Similarity, null: dict[str, dict[str, Any]] | None, payload: dict[str, Any],
                      fmt: OutputFormat) -> str:
    """What ``similarity`` prints in ``fmt``: the table as text (≤ 100 columns), Markdown or CSV, or the JSON."""
    if fmt is OutputFormat.json:
        return json.dumps(payload, indent=2, allow_nan=False)
    if fmt is OutputFormat.text:
        return fit_width(lambda nm: similarity_table(sim, null, nm), list(sim.names)).text()
    table = similarity_table(sim, null)
    if fmt is OutputFormat.csv:
        table.headers = ["measure", "value"] + (["null_mean", "null_sd", "p"] if null is not None else [])
        table.rows = [[key, v] + ([null[key]["mean"], null[key]["sd"], null[key]["p"]] if null is not None and key in null
                                  else [None] * 3 if null is not None else [])
                      for key, v in sim.values.items()]
        return table.csv()
    return table.markdown()


def similarity_figure(sim: Similarity) -> Figure:
    """The CCA spectrum and the per-unit R² of both directions; a note in the panel when the CCA is degenerate."""
    fig, ax = new_figure(1, 2, figsize=(11, 4.2))
    left, right = ax[0, 0], ax[0, 1]
    left.plot(np.arange(1, len(sim.cca) + 1), sim.cca, lw=1.5)
    left.set(xlabel="canonical direction", ylabel="canonical correlation ρ", ylim=(0, 1.05),
             title=f"CCA spectrum\n{sim.names[0]}\nvs {sim.names[1]}")  # one name a line: layer names are long
    ranks = list(sim.info.get("rank", {}).values())
    if len(sim.cca) and ranks and sim.n - 1 <= max(ranks):
        left.text(0.5, 0.45, f"degenerate: {sim.n} rows for {max(ranks)} independent units,\n"
                  "so every canonical correlation is 1\nby construction, whatever the networks",
                  transform=left.transAxes, ha="center", va="center", fontsize=9,
                  bbox={"boxstyle": "round", "facecolor": "lightyellow", "edgecolor": "gray"})
    for name, r2 in sim.r2.items():
        vals = np.sort(r2[np.isfinite(r2)])[::-1]
        right.plot(np.arange(1, len(vals) + 1) / max(len(vals), 1), vals, lw=1.5, label=f"{name} (train fit)")
    for name, r2 in sim.r2_cv.items():
        vals = np.sort(r2[np.isfinite(r2)])[::-1]
        right.plot(np.arange(1, len(vals) + 1) / max(len(vals), 1), vals, lw=1, ls="--",
                   label=f"{name} (CV ridge, held out)")
    right.set(xlabel="fraction of target units (sorted)", ylabel="R² per target unit", ylim=(None, 1.05),
              title="linear predictivity per target unit")
    right.legend(fontsize=8, loc="lower left")
    return fig


def plot_similarity(sim: Similarity, path: Path) -> Path:
    """Write :func:`similarity_figure` as a PNG."""
    return save_figure(similarity_figure(sim), path)
