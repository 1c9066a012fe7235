"""What a study writes for people: heatmap PNGs, one JSON with everything, a short Markdown report."""

from __future__ import annotations

import json
import math
import statistics
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from ..core.files import atomic_write, jsonable
from ..core.outputs import check_output_dir
from ..core.safe_paths import checked_path
from .report import new_figure, save_figure
from .study import StudyResult
from .tables import OutputFormat, Table, fit_width

if TYPE_CHECKING:
    from matplotlib.figure import Figure

__all__ = ["STUDY_FOLDERS", "accuracy_table", "check_study_out", "matrix_figure", "pairs_table", "study_figures",
           "study_markdown", "study_output", "study_text", "write_study"]

STUDY_FOLDERS = ("moments", "maps/fitted", "maps/heads", "stitched")  # what a study writes below --out

SIMILARITY_LABEL = {"cka": "linear CKA", "svcca": "SVCCA (mean canonical correlation,\n99% of the variance kept)",
                    "pwcca": "PWCCA (projection-weighted\ncanonical correlation)"}
KIND_LABEL = {"fitted": "maps fitted on features (closed form)", "heads": "maps from the heads alone (no images)"}


def matrix_figure(matrix: list[list[float | None]], names: list[str], *, title: str, unit: str,
                  cmap: str = "viridis_r", fmt: str = "{:.2f}", center: float | None = None,
                  identity: float | None = None, limits: tuple[float, float] | None = None) -> Figure:
    """An N×N heatmap, every cell labelled with its value; sized to its labels so nothing is clipped.

    Maps: source networks down, target networks across. A symmetric measure (``identity``: its
    value for a network with itself, drawn on the diagonal) labels both axes "network".
    """
    values = np.array([[np.nan if v is None else float(v) for v in row] for row in matrix])
    if identity is not None:
        np.fill_diagonal(values, identity)
    n = len(names)
    label_in = 0.07 * max(len(x) for x in names) + 0.35       # 8-pt tick labels, and the axis label beside them
    title_in = 0.085 * max(len(line) for line in title.splitlines()) + 0.3
    cell = 0.72
    width = max(label_in + n * cell + 1.6, title_in, 4.0)   # colour bar and its label: about 1.6 in
    height = label_in + n * cell + 0.35 * (title.count("\n") + 1) + 0.5
    fig, axes = new_figure(figsize=(width, height))
    ax = axes[0, 0]
    finite = values[np.isfinite(values)]
    kw: dict[str, Any] = {}
    if limits is not None:
        kw = {"vmin": limits[0], "vmax": limits[1]}
    elif center is not None and finite.size:
        span = max(float(np.abs(finite - center).max()), 1e-12)
        kw = {"vmin": center - span, "vmax": center + span}
    im = ax.imshow(values, cmap=cmap, aspect="auto", **kw)
    fig.colorbar(im, ax=ax, label=unit, shrink=0.9)
    ax.set_xticks(range(n), names, rotation=90, fontsize=8)
    ax.set_yticks(range(n), names, fontsize=8)
    if identity is not None:
        ax.set_xlabel("network")
        ax.set_ylabel("network")
    else:
        ax.set_xlabel("target network (its head)")
        ax.set_ylabel("source network (features mapped)")
    for i in range(n):
        for j in range(n):
            if np.isfinite(values[i, j]):
                r, g, b, _ = im.cmap(im.norm(values[i, j]))
                dark = 0.299 * r + 0.587 * g + 0.114 * b < 0.5
                ax.text(j, i, fmt.format(values[i, j]), ha="center", va="center", fontsize=7,
                        color="white" if dark else "black")
    ax.set_title(title, fontsize=10)
    return fig


def _pair_summary(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One entry per unordered pair: mean loss of the two directions and their asymmetry."""
    by_key = {(r["src"], r["dst"]): r for r in rows}
    out, seen = [], set()
    for (a, b), r in by_key.items():
        if (b, a) in seen or (b, a) not in by_key:
            continue
        seen.add((a, b))
        back = by_key[(b, a)]
        out.append({"a": a, "b": b, "loss_ab": r["loss"], "loss_ba": back["loss"],
                    "mean_loss": (r["loss"] + back["loss"]) / 2, "asymmetry": r["loss"] - back["loss"]})
    return sorted(out, key=lambda p: p["mean_loss"])


def _heads_summary(res: StudyResult) -> str:
    """How closely the head-only maps' accuracy follows the source network's own accuracy."""
    rows = res.ordered("heads")
    gaps = [abs(r["accuracy"] - res.own_accuracy[res.networks.index(r["src"])]) for r in rows]
    same = sum(g == 0 for g in gaps)
    return (f"head-swap accuracy equals the source's own accuracy in {same} of {len(rows)} ordered pairs "
            f"(largest difference {max(gaps):.2f} pp)")


def accuracy_table(res: StudyResult, name_of: Callable[[str], str] = str) -> Table:
    """The accuracy matrix of the study's maps: source features down, target heads across."""
    kind = res.kind
    acc = res.matrices[kind]["accuracy"]
    rows: list[list[object]] = [[name_of(src)] + [f"{v:.2f}" for v in acc[i]] for i, src in enumerate(res.networks)]
    return Table(["source \\ target"] + [name_of(n) for n in res.networks], rows,
                 title=(f"Top-1 accuracy (%) on {res.images} {res.eval_split} images, {KIND_LABEL[kind]}; row = "
                        "source features, column = target head, diagonal = the network itself:"))


def _headline(res: StudyResult) -> list[str]:
    kind = res.kind
    lines = []
    med = res.median_loss(kind)
    if med is not None:
        lines.append(f"median loss over {len(res.ordered(kind))} ordered pairs: {med:.2f} pp")
    if kind == "fitted" and "heads" in res.pairs:
        lines.append(f"head-only maps (reproduce the source's logits, not its features): {_heads_summary(res)}")
    return lines


def study_text(res: StudyResult) -> str:
    """The accuracy matrix of the main maps and the headline numbers, as text at most 100 columns wide."""
    return "\n".join([fit_width(lambda nm: accuracy_table(res, nm), res.networks).text()] + _headline(res))


def pairs_table(res: StudyResult) -> Table:
    """One row per ordered pair and kind of map: accuracy, loss, agreement, R², Fig. 5 counts."""
    rows: list[list[object]] = []
    for kind in res.matrices:
        for r in res.ordered(kind):
            rows.append([kind, r["src"], r["dst"], r["accuracy"], r["loss"], r["agreement"],
                         r["feature_metrics"].get("r2"), r["target_errors"], r["fixed"], r["broken"]])
    return Table(["maps", "source", "target", "accuracy", "loss", "agreement", "r2", "target_errors", "fixed",
                  "broken"], rows)


def study_output(res: StudyResult, fmt: OutputFormat) -> str:
    """What ``study`` prints in ``fmt``: text, everything as JSON, one CSV row per ordered pair, or Markdown."""
    if fmt is OutputFormat.text:
        return study_text(res)
    if fmt is OutputFormat.json:
        return json.dumps(res.as_dict(), indent=1, default=jsonable, allow_nan=True)
    if fmt is OutputFormat.csv:
        return pairs_table(res).csv()
    return "\n\n".join([accuracy_table(res).markdown()] + _headline(res))


def study_markdown(res: StudyResult, pictures: dict[str, str]) -> str:
    """A short report a person reads: median loss, most and least interchangeable pairs, asymmetry."""
    kind = "heads" if res.method == "heads" else "fitted"
    rows = res.ordered(kind)
    pairs = _pair_summary(rows)
    nets = ", ".join(f"{n} ({d}-dim, {a:.2f}%)" for n, d, a in zip(res.networks, res.dims, res.own_accuracy))
    md = [f"# Interchangeability study of {len(res.networks)} networks", "",
          f"Networks (feature dim, own top-1 accuracy on {res.images} `{res.eval_split}` images): {nets}.", ""]
    if kind == "fitted":
        mode = res.moments.get("mode")
        how = ("one pass over the joint moments of all networks" if mode == "joint"
               else "one pass per pair (the joint moments did not fit in memory)")
        md += [(f"Maps: closed-form least squares on `{res.fit_split}` ({res.n_train} rows, {how}; "
               f"{'reused saved moments' if res.moments.get('reused') else 'moments saved for reruns'})."), ""]
    else:
        md += ["Maps: from the heads' weights alone (no images).", ""]
    med = res.median_loss(kind)
    md += [(f"**Median loss over {len(rows)} ordered pairs: {med:.2f} percentage points** "
           "(loss = target's own accuracy − accuracy of its head on mapped source features; negative = a gain)."), ""]
    if len(pairs) == 1:
        p = pairs[0]
        md += [f"One pair: {p['a']} ↔ {p['b']} (losses {p['loss_ab']:+.2f} / {p['loss_ba']:+.2f} pp).", ""]
    elif pairs:
        best, worst = pairs[0], pairs[-1]
        md += [(f"Most interchangeable pair (smallest mean of the two directions' losses): {best['a']} ↔ {best['b']} "
                f"(losses {best['loss_ab']:+.2f} / "
               f"{best['loss_ba']:+.2f} pp). Least: {worst['a']} ↔ {worst['b']} (losses {worst['loss_ab']:+.2f} / "
               f"{worst['loss_ba']:+.2f} pp)."), ""]
    md += ["| pair A ↔ B | loss A→B (pp) | loss B→A (pp) | asymmetry (pp) |", "|---|---:|---:|---:|"]
    md += [f"| {p['a']} ↔ {p['b']} | {p['loss_ab']:+.2f} | {p['loss_ba']:+.2f} | {p['asymmetry']:+.2f} |"
           for p in pairs]
    md += ["", ("Per ordered pair (target B's head on mapped A features; Fig. 5 counts: of B's errors, how many the "
           "mapped features fix; of B's correct answers, how many they break):"), "",
           "| A → B | accuracy (%) | loss (pp) | agreement with B (%) | R² | B's errors | fixed | broken |",
           "|---|---:|---:|---:|---:|---:|---:|---:|"]
    for r in sorted(rows, key=lambda r: r["loss"]):
        r2 = r["feature_metrics"]["r2"]
        r2s = "n/a" if r2 is None or (isinstance(r2, float) and math.isnan(r2)) else f"{r2:.3f}"
        md.append(f"| {r['src']} → {r['dst']} | {r['accuracy']:.2f} | {r['loss']:+.2f} | {r['agreement']:.2f} | "
                  f"{r2s} | {r['target_errors']} | {r['fixed']} | {r['broken']} |")
    if kind == "fitted" and "heads" in res.pairs:
        h = res.ordered("heads")
        exact = all(r["map_stats"].get("exact") for r in h)
        how = ("exactly, for every pair" if exact
               else "exactly where B has no more classes than feature dimensions, in least squares elsewhere")
        md += ["", "## Maps from the heads alone", "",
               (f"Each head-only map sends A's features to the point of B's feature space where B's head gives A's "
               f"logits ({how}). Its head-swap accuracy is therefore A's own accuracy where exact, "
               "whatever the features: it measures the heads, not whether the two networks extract the same "
               "information. Its R² against B's actual features is the telling number."), "",
               (f"{_heads_summary(res).capitalize()}; median R² against B's features "
               f"{statistics.median(r['feature_metrics']['r2'] for r in h):.3f} (fitted maps: "
               f"{statistics.median(r['feature_metrics']['r2'] for r in rows):.3f})."), ""]
    if res.notes:
        md += ["", "Notes:", ""] + [f"- {n}" for n in res.notes]
    if pictures:
        md += ["", "Pictures: " + ", ".join(f"[{k}]({v})" for k, v in pictures.items()), ""]
    return "\n".join(md) + "\n"


def check_study_out(out: Path) -> None:
    """Refuse, before any work, an ``--out`` that cannot be written, or a folder below it that is a link."""
    check_output_dir(out, "--out")
    for sub in STUDY_FOLDERS:
        checked_path(out, sub, what="the --out folder")


def study_figures(res: StudyResult) -> dict[str, Figure]:
    """Every heatmap a study writes, by file stem: loss, accuracy, R² (per kind of map) and similarity."""
    figs: dict[str, Figure] = {}
    for kind, mats in res.matrices.items():
        tag = "" if kind == "fitted" else "heads_"
        label = KIND_LABEL[kind]
        figs[f"{tag}loss"] = matrix_figure(mats["loss"], res.networks,
                                           title=f"loss (pp): target's own accuracy\n− mapped accuracy; {label}",
                                           unit="percentage points", cmap="RdBu_r", fmt="{:+.2f}", center=0.0)
        figs[f"{tag}accuracy"] = matrix_figure(mats["accuracy"], res.networks, title=f"top-1 accuracy (%)\n{label}",
                                               unit="%", cmap="viridis")
        figs[f"{tag}r2"] = matrix_figure(mats["r2"], res.networks, fmt="{:.3f}",
                                         title=f"R² of mapped against true target features\n{label}", unit="R²",
                                         cmap="viridis")
    for key, mat in res.similarity.items():
        if key in ("cka", "svcca", "pwcca"):
            figs[f"similarity_{key}"] = matrix_figure(
                mat, res.networks, fmt="{:.3f}", unit=key, cmap="viridis", identity=1.0, limits=(0.0, 1.0),
                title=f"{SIMILARITY_LABEL[key]}\nsymmetric, from the same moments; diagonal: a network with itself")
    return figs


def write_study(res: StudyResult, out: Path) -> dict[str, Path]:
    """Write heatmaps, ``study.json`` and ``report.md`` under ``out``; return their paths."""
    out.mkdir(parents=True, exist_ok=True)
    paths = {stem: save_figure(fig, out / f"{stem}.png") for stem, fig in study_figures(res).items()}
    data = json.dumps(res.as_dict(), indent=1, default=jsonable, allow_nan=True)
    paths["json"] = atomic_write(out / "study.json", lambda fh: fh.write(data.encode()))
    md = study_markdown(res, {k: v.name for k, v in paths.items() if v.suffix == ".png"})
    paths["report"] = atomic_write(out / "report.md", lambda fh: fh.write(md.encode()))
    return paths
