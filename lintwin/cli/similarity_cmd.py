"""``lintwin similarity``: every second-moment similarity measure of two networks, with a permutation null."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from ..core.files import atomic_write, strict_json
from ..core.outputs import check_output_dir
from ..errors import LintwinError
from ..experiments.pair_similarity import pair_similarity
from ..experiments.similarity_report import measure_label, plot_similarity, similarity_output
from ..experiments.tables import OutputFormat
from ..measures.similarity import DEFAULT_ALPHAS
from ..storage.store import FeatureStore
from ._common import DeviceChoice, PrecisionChoice, app, cli_errors, echo, maybe_dask


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
    precision: Annotated[PrecisionChoice, typer.Option(
        help="float32 products summed in float64, all float64, or tf32 (a GPU's tensor cores; emulated on the CPU)")] = PrecisionChoice.float64,
    device: Annotated[DeviceChoice, typer.Option(help="auto uses the GPU when CuPy sees one")] = DeviceChoice.auto,
    block_rows: Annotated[int | None, typer.Option(min=1, help="rows per streamed block")] = None,
    dask: Annotated[str | None, typer.Option(help="accumulate on a Dask cluster (no debiased CKA, no CV R²)")] = None,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="no progress bars")] = False,
    fmt: Annotated[OutputFormat, typer.Option("--format", help="what to print: text, json (everything), csv or markdown (the table)")] = OutputFormat.text,
) -> None:
    """Similarity of networks A and B on a split: CKA, CCA, SVCCA, PWCCA, shape metrics, R²; with --null K p-values."""
    with cli_errors(), maybe_dask(dask) as client:
        if out is not None:
            check_output_dir(out, "--out")  # before any work: a long run never fails at its end for want of a place
        s = FeatureStore.open(store)
        res = pair_similarity(s, a, b, split=split, folds=folds, null=null, seed=seed, svcca_keep=svcca_keep,
                              alphas=tuple(alpha) if alpha else DEFAULT_ALPHAS, precision=precision.value,
                              device=device.value, block_rows=block_rows, dask_client=client, progress=not quiet)
        sim, m = res.similarity, res.moments
        null_summary = res.null_summary()
        notes = res.null.notes(null_summary, lambda key: measure_label(key, a, b)) if res.null is not None else []
        payload = strict_json(res.as_dict())
        say = echo if fmt is OutputFormat.text else (lambda text: typer.echo(text, err=True))
        say(f"{a} vs {b} on {split!r}: {sim.n} rows, dims {m.dim_a} + {m.dim_b}, {precision.value} moments "
            f"({res.seconds:.1f} s)")
        echo(similarity_output(sim, null_summary, payload, fmt))
        info = sim.info
        dropped = {k: len(v) for k, v in info["constant_units"].items()}
        say(f"constant units dropped: {dropped}; rank kept (rcond {info['rcond']:.1e}, scaled space): {info['rank']}; "
            f"SVCCA dims: {info['svcca']['dims']}; PWCCA weights from {info['pwcca_weights_from']}")
        if "ridge_cv" in info:
            say("CV ridge λ: " + ", ".join(f"{k} {v['chosen_ridge']:.4g}" for k, v in info["ridge_cv"].items()))
        for note in notes + info["notes"] + info.get("predictivity_notes", []):
            typer.echo(f"Note: {note}", err=True)
        if out is not None:
            stem = f"similarity_{a}_{b}_{split}"
            text = json.dumps(payload, indent=2, allow_nan=False)
            try:
                out.mkdir(parents=True, exist_ok=True)
                path = atomic_write(out / f"{stem}.json", lambda fh: fh.write(text.encode()))
                png = plot_similarity(sim, out / f"{stem}.png")
            except OSError as exc:
                raise LintwinError(f"cannot write to {out}: {exc.strerror or exc}") from None
            say(f"wrote {path} and {png}")
