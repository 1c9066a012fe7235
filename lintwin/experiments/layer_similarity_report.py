"""What ``lintwin layer-similarity`` shows: heatmaps with layer names on the axes, a best-match table, its formats."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from matplotlib.figure import Figure

from ..core.files import atomic_write
from .layer_similarity import LayerSimilarity
from .report import new_figure, save_figure
from .similarity_report import measure_label
from .tables import OutputFormat, Table, fit_width

__all__ = ["heatmap_figure", "layer_label", "layer_similarity_output", "self_similarity_figure",
           "write_layer_similarity"]

_BOUNDED = ("cka", "cka_debiased", "cca_rho1", "cca_mean_rho", "cca_mean_rho2", "svcca", "pwcca")


def layer_label(tensor: str) -> str:
    """A layer's name for axes and tables: the tensor name without the exporter's ``/`` and ``_output_0``."""
    return tensor.lstrip("/").removesuffix("_output_0") or tensor


def _array(matrix: Sequence[Sequence[float | None]]) -> np.ndarray:
    return np.asarray([[np.nan if v is None else float(v) for v in row] for row in matrix], dtype=float)


def _panel(fig: Figure, ax: Any, values: np.ndarray, rows: list[str], cols: list[str], measure: str,
           title: str) -> None:
    bounded = measure in _BOUNDED
    finite = values[np.isfinite(values)]
    vmin, vmax = (0.0, 1.0) if bounded or not finite.size else (float(finite.min()), float(finite.max()))
    im = ax.imshow(values, cmap="magma", vmin=vmin, vmax=vmax, aspect="auto", interpolation="nearest")
    size = 8 if max(len(rows), len(cols)) <= 24 else 6
    ax.set_xticks(range(len(cols)), cols, rotation=90, fontsize=size)
    ax.set_yticks(range(len(rows)), rows, fontsize=size)
    ax.set_title(title, fontsize=9)
    fig.colorbar(im, ax=ax, shrink=0.8, label=measure_label(measure, "row layer", "column layer"))


def _size(rows: list[str], cols: list[str], panels: int) -> tuple[float, float]:
    """Inches: cells of about 0.22 in, plus room for the longest names (about 0.055 in a character at 8 pt)."""
    label_w = 0.055 * max(map(len, rows)) + 1.4
    label_h = 0.055 * max(map(len, cols)) + 1.0
    return (panels * (0.22 * len(cols) + label_w), 0.22 * len(rows) + label_h)


def heatmap_figure(result: LayerSimilarity, measure: str = "cka") -> Figure:
    """The A × B matrix of ``measure``: A's layers down, B's layers across, names on the axes."""
    rows = [layer_label(la.tensor) for la in result.layers_a]
    cols = [layer_label(la.tensor) for la in result.layers_b]
    fig, ax = new_figure(figsize=_size(rows, cols, 1))
    _panel(fig, ax[0, 0], _array(result.measures[measure]), rows, cols, measure,
           f"{measure_label(measure, 'A', 'B')}, {_rows_kind(result)}\nrows: {result.a}\ncolumns: {result.b}")
    return fig


def _rows_kind(result: LayerSimilarity) -> str:
    per_position = any(g for row in result.grids for g in row)
    return f"{result.samples:,} images" + (", per position" if per_position else "")


def self_similarity_figure(result: LayerSimilarity, measure: str = "cka") -> Figure:
    """A × A and B × B side by side (one panel when A is B)."""
    sides = [(result.a, result.layers_a, result.self_a)]
    if result.a != result.b or result.layers_b != result.layers_a:
        sides.append((result.b, result.layers_b, result.self_b))
    labels = [[layer_label(la.tensor) for la in layers] for _, layers, _ in sides]
    longest = max(labels, key=len)
    fig, ax = new_figure(1, len(sides), figsize=_size(longest, longest, len(sides)))
    for k, ((net, _, mats), names) in enumerate(zip(sides, labels)):
        _panel(fig, ax[0, k], _array(mats[measure]), names, names, measure,
               f"{measure_label(measure, 'A', 'B')}, {_rows_kind(result)}\n{net} against itself")
    return fig


def _table(result: LayerSimilarity, measure: str, name_of: Any = str) -> Table:
    """For each layer of A, the layer of B it is most alike under ``measure`` (the largest value; smallest distance)."""
    values = _array(result.measures[measure])
    lower = measure.startswith(("procrustes", "shape_angle"))
    null = (result.null or {}).get(measure)
    rows: list[list[object]] = []
    for r, la in enumerate(result.layers_a):
        line = values[r]
        if not np.isfinite(line).any():
            rows.append([layer_label(la.tensor), "—", None, "", ""])
            continue
        c = int(np.nanargmin(line) if lower else np.nanargmax(line))
        g = result.grids[r][c]
        row: list[object] = [layer_label(la.tensor), layer_label(result.layers_b[c].tensor), float(line[c]),
                             " x ".join(map(str, g)) if g else "per image", result.rows[r][c]]
        if null is not None:
            p = null["p"][r][c]
            row.append("—" if p is None else f"{p:.2g}")
        rows.append(row)
    headers = [f"layer of {name_of(result.a)}", f"most alike layer of {name_of(result.b)}",
               measure_label(measure, "A", "B"), "grid", "rows"] + (["p"] if null is not None else [])
    return Table(headers, rows)


def _csv_rows(result: LayerSimilarity) -> Table:
    null = result.null or {}
    headers = ["measure", "layer_a", "layer_b", "value", "grid", "rows"] + (["null_mean", "null_sd", "p"] if null else [])
    rows: list[list[object]] = []
    for k, matrix in result.measures.items():
        for r, la in enumerate(result.layers_a):
            for c, lb in enumerate(result.layers_b):
                g = result.grids[r][c]
                row: list[object] = [k, la.tensor, lb.tensor, matrix[r][c], "x".join(map(str, g)) if g else "image",
                                     result.rows[r][c]]
                if null:
                    row += [null[k]["mean"][r][c], null[k]["sd"][r][c], null[k]["p"][r][c]]
                rows.append(row)
    return Table(headers, rows)


def layer_similarity_output(result: LayerSimilarity, payload: dict[str, Any], fmt: OutputFormat) -> str:
    """What the command prints: per measure, each A layer's most alike B layer (text, Markdown), every cell (CSV), or the JSON."""
    if fmt is OutputFormat.json:
        return json.dumps(payload, indent=2, allow_nan=False)
    if fmt is OutputFormat.csv:
        return _csv_rows(result).csv()
    parts = []
    for k in result.measures:
        table = (fit_width(lambda nm, k=k: _table(result, k, nm), [result.a, result.b]) if fmt is OutputFormat.text
                 else _table(result, k))
        parts.append(table.text() if fmt is OutputFormat.text else table.markdown())
    return "\n\n".join(parts)


def write_layer_similarity(result: LayerSimilarity, payload: dict[str, Any], out: Path) -> list[Path]:
    """``out/layer_similarity.json`` and, per measure, the A × B and the self-similarity heatmaps."""
    out.mkdir(parents=True, exist_ok=True)
    text = json.dumps(payload, indent=2, allow_nan=False)
    paths = [atomic_write(out / "layer_similarity.json", lambda fh: fh.write(text.encode()))]
    for k in result.measures:
        stem = k.replace("[", "_").replace("]", "")
        if result.a != result.b:
            paths.append(save_figure(heatmap_figure(result, k), out / f"layer_similarity_{stem}.png"))
        paths.append(save_figure(self_similarity_figure(result, k), out / f"self_similarity_{stem}.png"))
    return paths
