"""Table 1 and the Fig. 5 regions of a comparison as tables, in every output format.

The header names the fit that produced the maps (least squares, ridge λ, ridge-CV with its
criterion and the λ chosen, a rank, or the paper's Adam), read from the maps themselves.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

from .compare import CompareResult, Regions
from .report import region_labels
from .tables import OutputFormat, Table, fit_width

__all__ = ["compare_output", "compare_text", "describe_fit", "regions_table", "table1"]


def _lam(v: Any) -> str:
    return f"{float(v):.4g}"


def describe_fit(maps: list[dict[str, Any]]) -> str:
    """How the maps were fitted, e.g. ``ridge-CV (5-fold over images, criterion feature-error): λ A→B = 3200, ...``."""
    if not maps:
        return "no maps"
    opts = [m.get("options", {}) for m in maps]
    names = [m["map"] for m in maps]
    rank = opts[0].get("rank")
    suffix = f", rank {rank}" if rank is not None else ""
    if maps[0].get("method") == "adam":
        o = opts[0]
        ridge = f", ridge λ = {_lam(o['ridge'])}" if o.get("ridge") else ""
        return (f"the paper's Adam ({o.get('iterations')} iterations, lr {o.get('lr')}, {o.get('variant')} variant, "
                f"init {o.get('init')}{ridge})")
    if opts[0].get("ridge") == "auto":
        cv = maps[0].get("stats", {}).get("ridge_cv", {})
        chosen = ", ".join(f"λ {n} = {_lam(o.get('chosen_ridge'))}" for n, o in zip(names, opts))
        return (f"ridge-CV ({opts[0].get('folds', cv.get('folds'))}-fold over images, criterion "
                f"{opts[0].get('ridge_criterion', 'feature-error')}): {chosen}{suffix}")
    lams = [float(o.get("ridge") or 0.0) for o in opts]
    if any(lams):
        if len(set(lams)) == 1:
            return f"ridge λ = {_lam(lams[0])}{suffix}"
        return "ridge " + ", ".join(f"λ {n} = {_lam(v)}" for n, v in zip(names, lams)) + suffix
    return f"least squares (lstsq){suffix}"


def table1(result: CompareResult, name_of: Callable[[str], str] = str) -> Table:
    """The paper's Table 1: description, mapping, correct, percent (95% CI), loss in pp (95% CI)."""
    a, b = result.a, result.b
    na, nb = name_of(a), name_of(b)
    labels = [(na, f"C_{na}(F_{na})"), (nb, f"C_{nb}(F_{nb})"), (f"{na}→{nb}", f"C_{nb}(M_{na}→{nb} F_{na})"),
              (f"{nb}→{na}", f"C_{na}(M_{nb}→{na} F_{nb})")]
    with_ci = any("percent_ci" in r for r in result.table)
    rows: list[list[object]] = []
    for (desc, mapping), r in zip(labels, result.table):
        row: list[object] = [desc, mapping, r["correct"], f"{r['percent']:.2f}%"]
        if with_ci:
            row.append("[{:.2f}, {:.2f}]".format(*r["percent_ci"]))
        row.append("" if r["loss"] is None else f"{r['loss']:+.2f}")
        if with_ci:
            row.append("" if r["loss"] is None else "[{:+.2f}, {:+.2f}]".format(*r["loss_ci"]))
        rows.append(row)
    headers = ["description", "mapping", "correct", "percent"] + (["95% CI"] if with_ci else []) + ["loss (pp)"] + \
        (["95% CI (pp)"] if with_ci else [])
    fit = describe_fit(result.maps)
    if result.in_sample:
        title = (f"Table 1, IN-SAMPLE ({result.images} {result.eval_split} images that the maps were also fitted on "
                 f"[{result.fit_split}, {fit}]; losses are not held-out figures):")
    else:
        title = f"Table 1 ({result.images} {result.eval_split} images; maps fitted on {result.fit_split} with {fit}):"
    return Table(headers, rows, title=title)


def regions_table(reg: Regions, name_of: Callable[[str], str] = str) -> Table:
    """Fig. 5 as a table: one count per subset of {A, B, A→B} that labels an image correctly."""
    a, b = name_of(reg.a), name_of(reg.b)
    rows: list[list[object]] = [[label, reg.counts[key]] for key, label in region_labels(a, b).items()]
    return Table(["images right under", "count"], rows,
                 title=f"Fig. 5 regions, target {b} ({a}→{b} = {b}'s head on mapped {a} features):",
                 legend=[f"{b} misses {reg.b_errors}; mapped {a} features fix {reg.fixed_by_map} of them and break "
                         f"{reg.broken_by_map} that {b} got right"])


def _tables(result: CompareResult) -> list[Table]:
    names = [result.a, result.b]
    return [fit_width(lambda nm: table1(result, nm), names)] + \
        [fit_width(lambda nm, r=reg: regions_table(r, nm), names) for reg in result.regions]


def compare_text(result: CompareResult) -> str:
    """Table 1 and both Fig. 5 region lists as text, at most 100 columns wide (aliases where names are long)."""
    return "\n\n".join(t.text() for t in _tables(result))


def compare_output(result: CompareResult, fmt: OutputFormat) -> str:
    """What ``compare`` and ``demo`` print in ``fmt``: text, everything as JSON, Table 1 as CSV, or Markdown."""
    if fmt is OutputFormat.text:
        return compare_text(result)
    if fmt is OutputFormat.json:
        return json.dumps(result.as_dict(), indent=2)
    if fmt is OutputFormat.csv:
        return table1(result).csv()
    return "\n\n".join(t.markdown() for t in [table1(result)] + [regions_table(r) for r in result.regions])
