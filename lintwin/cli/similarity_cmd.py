"""``lintwin similarity``: every second-moment similarity measure of two networks, with a permutation null."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Annotated, Any

import numpy as np
import typer

from ..api import accumulate_store
from ..core.files import atomic_write
from ..core.folds import accumulate_folds
from ..core.gpu import resolve_device
from ..core.moments import Moments
from ..errors import LintwinError
from ..experiments.report import format_table, new_figure, save_figure
from ..measures.null import store_null
from ..measures.similarity import Similarity, similarity
from ..storage.store import FeatureStore
from ._common import DeviceChoice, PrecisionChoice, app, cli_errors, echo, maybe_dask

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


def _label(key: str, a: str, b: str) -> str:
    if key.startswith("shape_angle["):
        return f"shape angle α={key[12:-1]} (rad)"
    for prefix, what in (("r2cv_", "R² CV ridge"), ("r2_", "R²")):
        if key.startswith(prefix):
            src, dst = (a, b) if key.endswith("_ab") else (b, a)
            return f"{what} {src}→{dst}"
    return _LABELS.get(key, key)


def accumulate_with_folds(store: FeatureStore, a: str, b: str, *, split: str, folds: int, precision: str,
                          device: str, block_rows: int | None, progress: bool) -> tuple[Moments, list[Moments]]:
    """One pass: the moments with kernel sums, and (``folds`` >= 2) those of each image fold they merge from."""
    if folds < 2:
        return accumulate_store(store, a, b, split=split, precision=precision, device=device, block_rows=block_rows,
                                progress=progress, kernel=True), []
    parts = accumulate_folds(store, a, b, k=folds, split=split, precision=precision, device=device,
                             progress=progress, kernel=True, block_rows=block_rows)
    return Moments.merged(parts), parts


def _finite(x: Any) -> Any:
    """``x`` with NaN/Inf floats as None (strict JSON)."""
    if isinstance(x, dict):
        return {str(k): _finite(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_finite(v) for v in x]
    if isinstance(x, (float, np.floating)):
        return float(x) if np.isfinite(x) else None
    if isinstance(x, np.integer):
        return int(x)
    return x


def _table(sim: Similarity, null: dict[str, Any] | None) -> str:
    a, b = sim.names
    rows = []
    for key, v in sim.values.items():
        row: list[object] = [_label(key, a, b), "—" if v is None else float(v)]
        if null is not None:
            s = null.get(key)
            if s is None or s["mean"] is None:
                row += ["—", "—"]
            else:
                row += [f"{s['mean']:.4f} ± {s['sd']:.2g}" if s["sd"] is not None else f"{s['mean']:.4f}",
                        "—" if s["z"] is None else f"{s['z']:.1f}"]
        rows.append(row)
    headers = ["measure", "value"] + (["null mean ± sd", "z"] if null is not None else [])
    return format_table(headers, rows)


def _plot(sim: Similarity, path: Path) -> Path:
    fig, ax = new_figure(1, 2, figsize=(11, 4))
    ax[0, 0].plot(np.arange(1, len(sim.cca) + 1), sim.cca, lw=1.5)
    ax[0, 0].set(xlabel="canonical direction", ylabel="canonical correlation ρ", ylim=(0, 1.02),
                 title=f"CCA spectrum\n{sim.names[0]}\nvs {sim.names[1]}")  # one name a line: layer names are long
    for name, r2 in sim.r2.items():
        vals = np.sort(r2[np.isfinite(r2)])[::-1]
        ax[0, 1].plot(np.arange(1, len(vals) + 1) / max(len(vals), 1), vals, lw=1.5, label=f"{name} (train fit)")
    for name, r2 in sim.r2_cv.items():
        vals = np.sort(r2[np.isfinite(r2)])[::-1]
        ax[0, 1].plot(np.arange(1, len(vals) + 1) / max(len(vals), 1), vals, lw=1, ls="--",
                      label=f"{name} (CV ridge, held out)")
    ax[0, 1].set(xlabel="fraction of target units (sorted)", ylabel="R² per target unit", ylim=(None, 1.02),
                 title="linear predictivity per target unit")
    ax[0, 1].legend(fontsize=8, loc="upper center", bbox_to_anchor=(0.5, -0.25))  # below: long names cover no curve
    return save_figure(fig, path)


@app.command("similarity")
def similarity_cmd(
    store: Annotated[Path, typer.Argument(help="feature store")],
    a: Annotated[str, typer.Option("--a", help="network A")],
    b: Annotated[str, typer.Option("--b", help="network B")],
    split: Annotated[str, typer.Option(help="split to measure on")] = "train",
    out: Annotated[Path | None, typer.Option(help="directory for the JSON and the PNG")] = None,
    null: Annotated[int, typer.Option("--null", min=0, help="permutation-null repetitions (0: none, else >= 2)")] = 0,
    seed: Annotated[int, typer.Option(help="seed of the permutation null")] = 0,
    folds: Annotated[int, typer.Option(min=0, help="image folds for the CV-ridge R² (0: skip it)")] = 5,
    svcca_keep: Annotated[float, typer.Option(help="SVCCA: fraction of variance kept per side")] = 0.99,
    alpha: Annotated[list[float] | None, typer.Option(help="shape-metric α (repeatable; default 0, 0.5, 1)")] = None,
    precision: Annotated[PrecisionChoice, typer.Option(help="float32 products summed in float64, or all float64")] = PrecisionChoice.float64,
    device: Annotated[DeviceChoice, typer.Option(help="auto uses the GPU when CuPy sees one")] = DeviceChoice.auto,
    block_rows: Annotated[int | None, typer.Option(min=1, help="rows per streamed block")] = None,
    dask: Annotated[str | None, typer.Option(help="accumulate on a Dask cluster (no debiased CKA, no CV R²)")] = None,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="no progress bars")] = False,
) -> None:
    """Similarity of networks A and B on a split: CKA, CCA, SVCCA, PWCCA, shape metrics, R²; with --null K a z-score."""
    with cli_errors(), maybe_dask(dask) as client:
        if null == 1:
            raise LintwinError("--null needs at least 2 repetitions (for the null's sd), or 0 for none")
        if folds == 1:
            raise LintwinError("--folds must be 0 (no CV-ridge R²) or at least 2")
        alphas = tuple(alpha) if alpha else (0.0, 0.5, 1.0)
        for x in alphas:
            if not 0.0 <= x <= 1.0:
                raise LintwinError(f"--alpha must be in [0, 1], got {x}")
        if not 0.0 < svcca_keep <= 1.0:
            raise LintwinError(f"--svcca-keep must be in (0, 1], got {svcca_keep}")
        if out is not None and out.exists() and not out.is_dir():
            raise LintwinError(f"--out {out} is a file; give a directory for the JSON and the PNG")
        s = FeatureStore.open(store)
        for name in (a, b):
            s.features(split, name)
        if s.rows(split) < 4:
            raise LintwinError(f"split {split!r} has {s.rows(split)} rows; similarity needs at least 4")
        dev = resolve_device(device.value)
        t0 = time.perf_counter()
        if client is not None:
            from ..core.distributed import accumulate_dask

            m = accumulate_dask(client, s, a, b, split=split, precision=precision.value, device=device.value,
                                progress=not quiet)
            parts: list[Moments] = []
        else:
            m, parts = accumulate_with_folds(s, a, b, split=split, folds=folds, precision=precision.value,
                                             device=dev, block_rows=block_rows, progress=not quiet)
        seconds = time.perf_counter() - t0
        sim = similarity(m, svcca_keep=svcca_keep, alphas=alphas, folds=parts if folds >= 2 else None)
        if client is not None:
            sim.info["notes"].append("accumulated on Dask: no kernel sums (debiased CKA omitted) and no folds "
                                     "(CV-ridge R² omitted)")
        elif folds < 2:
            sim.info["notes"].append("--folds 0: CV-ridge R² omitted")
        sim.info["accumulate_seconds"] = seconds
        null_summary = None
        payload = sim.as_dict()
        if null:
            def measure(mm: Moments) -> dict[str, float | None]:
                return similarity(mm, svcca_keep=svcca_keep, alphas=alphas).values

            res = store_null(s, a, b, measure, split=split, repeats=null, seed=seed, precision=precision.value,
                             kernel=client is None, block_rows=block_rows, device=dev, progress=not quiet)
            null_summary = res.summary(sim.values)
            payload["null"] = res.as_dict(sim.values)
            payload["null"]["scheme"] = ("B read at a random cyclic row offset from A, rows shuffled within each "
                                         "block; CV-ridge R² is not recomputed under the null")
        echo(f"{a} vs {b} on {split!r}: {sim.n} rows, dims {m.dim_a} + {m.dim_b}, {precision.value} moments "
             f"({seconds:.1f} s)")
        echo(_table(sim, null_summary))
        info = sim.info
        dropped = {k: len(v) for k, v in info["constant_units"].items()}
        echo(f"constant units dropped: {dropped}; rank kept (rcond {info['rcond']:.1e}, scaled space): {info['rank']}; "
             f"SVCCA dims: {info['svcca']['dims']}; PWCCA weights from {info['pwcca_weights_from']}")
        if "ridge_cv" in info:
            echo("CV ridge λ: " + ", ".join(f"{k} {v['chosen_ridge']:.4g}" for k, v in info["ridge_cv"].items()))
        for note in info["notes"] + info.get("predictivity_notes", []):
            typer.echo(f"Note: {note}", err=True)
        if out is not None:
            stem = f"similarity_{a}_{b}_{split}"
            text = json.dumps(_finite(payload), indent=2, allow_nan=False)
            try:
                out.mkdir(parents=True, exist_ok=True)
                path = atomic_write(out / f"{stem}.json", lambda fh: fh.write(text.encode()))
                png = _plot(sim, out / f"{stem}.png")
            except OSError as exc:
                raise LintwinError(f"cannot write to {out}: {exc.strerror or exc}") from None
            echo(f"wrote {path} and {png}")
