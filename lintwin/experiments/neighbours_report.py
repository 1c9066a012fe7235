"""Text tables and the size-curve figure of a neighbourhood alignment."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from .report import format_table, new_figure, save_figure

__all__ = ["alignment_text", "curve_text", "matrix_text", "plot_curve", "plot_matrix"]


def _num(v: float | None, fmt: str = "{:.4f}") -> str:
    return "—" if v is None else fmt.format(v)


def _null_cells(point: dict[str, Any], key: str) -> list[str]:
    s = (point.get("null") or {}).get(key)
    if not s:
        return []
    return [f"{_num(s['mean'])} ± {_num(s['sd'], '{:.2g}')}", _num(s["z"], "{:.1f}"), _num(s["p_value"], "{:.3g}")]


def alignment_text(res: dict[str, Any]) -> str:
    """The whole-split result: one row per measure, with the null and the bootstrap interval."""
    has_null = "null" in res
    point = {"null": res.get("null")}
    boot = res.get("bootstrap")
    rows = []
    for key, label in (("mutual_knn", f"mutual k-NN (k={res['k']})"), ("cknna", f"CKNNA (k={res['k']})")):
        interval = "—"
        if key == "mutual_knn" and boot:
            interval = f"[{boot['low']:.4f}, {boot['high']:.4f}]"
        row: list[object] = [label, "—" if res[key] is None else float(res[key]), interval]
        rows.append(row + (_null_cells(point, key) if has_null else []))
    headers = ["measure", "value", f"{int(100 * boot['level'])}% bootstrap" if boot else "bootstrap"]
    headers += ["null mean ± sd", "z", "p"] if has_null else []
    return format_table(headers, rows)


def curve_text(curve: list[dict[str, Any]]) -> str:
    """One row per sample size."""
    has_null = any("null" in p for p in curve)
    rows = []
    for p in curve:
        row: list[object] = [p["rows"], p["mutual_knn"], "—" if p["cknna"] is None else p["cknna"],
                             p["chance_mutual_knn"], f"{p['mutual_knn'] / p['chance_mutual_knn']:.1f}"]
        if has_null:
            row += _null_cells(p, "mutual_knn")
        rows.append(row)
    headers = ["rows", "mutual k-NN", "CKNNA", "chance k/(n-1)", "× chance"] + (["null mean ± sd", "z", "p"] if has_null else [])
    return format_table(headers, rows)


def matrix_text(res: dict[str, Any], key: str = "mutual_knn") -> str:
    names = res["names"]
    rows = [[names[i]] + ["—" if v is None else float(v) for v in res[key][i]] for i in range(len(names))]
    return format_table([key] + names, rows)


def plot_curve(res: dict[str, Any], path: str | Path) -> Path:
    """Mutual k-NN and CKNNA against the number of rows (log scale), with the null band and chance."""
    curve = res["curve"]
    n = np.array([p["rows"] for p in curve], dtype=float)
    fig, ax = new_figure(1, 2, figsize=(12, 4.5))
    for col, (key, label) in enumerate((("mutual_knn", f"mutual k-NN (k={res['k']})"), ("cknna", "CKNNA"))):
        a = ax[0, col]
        vals = np.array([np.nan if p[key] is None else p[key] for p in curve], dtype=float)
        a.plot(n, vals, "o-", lw=1.8, color="C0", label=f"{res['a']} vs {res['b']}")
        nulls = [(p.get("null") or {}).get(key) for p in curve]
        if all(s and s["mean"] is not None and s["sd"] is not None for s in nulls):
            mean = np.array([s["mean"] for s in nulls])
            sd = np.array([s["sd"] for s in nulls])
            a.fill_between(n, mean - 2 * sd, mean + 2 * sd, color="C1", alpha=0.3, label="permutation null ± 2 sd")
            a.plot(n, mean, "--", color="C1", lw=1.2)
        if key == "mutual_knn":
            a.plot(n, [p["chance_mutual_knn"] for p in curve], ":", color="grey", lw=1.2, label="chance k/(n−1)")
        a.set_xscale("log")
        a.set(xlabel="rows (nested random subsets; last = whole split)", ylabel=label,
              title=f"{label} against sample size ({res['metric']})")
        a.grid(True, which="both", alpha=0.3)
        a.legend(fontsize=8, loc="best")
    return save_figure(fig, path)


def plot_matrix(res: dict[str, Any], path: str | Path) -> Path:
    """Heat maps of mutual k-NN and CKNNA between every pair of arrays, values written in the cells."""
    names = res["names"]
    m = len(names)
    side = max(4.5, 0.9 * m + 2.5)
    fig, ax = new_figure(1, 2, figsize=(2 * side + 1, side))
    for col, (key, label) in enumerate((("mutual_knn", f"mutual k-NN (k={res['k']})"), ("cknna", "CKNNA"))):
        a = ax[0, col]
        vals = np.array([[np.nan if v is None else v for v in row] for row in res[key]], dtype=float)
        off = vals.copy()
        np.fill_diagonal(off, np.nan)  # the diagonal (an array with itself) would flatten the colour scale
        top = np.nanmax(off) if np.isfinite(off).any() else 1.0
        im = a.imshow(off, vmin=0, vmax=top, cmap="viridis")
        for i in range(m):
            for j in range(m):
                if np.isfinite(vals[i, j]):
                    a.text(j, i, f"{vals[i, j]:.3f}", ha="center", va="center", fontsize=8,
                           color="black" if i == j or off[i, j] > 0.6 * top else "white")
        a.set_xticks(range(m), names, rotation=35, ha="right", fontsize=8)
        a.set_yticks(range(m), names, fontsize=8)
        a.set_title(f"{label}, {res['rows']} rows ({res['metric']})", fontsize=10)
        fig.colorbar(im, ax=a, fraction=0.046, pad=0.04)
    return save_figure(fig, path)
