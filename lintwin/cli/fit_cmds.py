"""``lintwin solve``: fit maps on a store split and report how well they map."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Annotated, Optional

import typer

from .. import api
from ..affine import AffineMap
from ..core.outputs import check_output_dir, check_output_file
from ..core.params import parse_ridge
from ..core.placement import placement
from ..errors import LintwinError
from ..experiments.report import metrics_table, plot_loss_curve, plot_ridge_cv
from ..solvers import AdamOptions
from ..storage.store import FeatureStore
from ._common import (
    RIDGE_HELP,
    AdamBatchOpt,
    AdamSeedOpt,
    AdamVariant,
    DaskOpt,
    DecayOpt,
    DeviceChoice,
    DeviceOpt,
    FoldsOpt,
    InitChoice,
    InitOpt,
    IterationsOpt,
    LrOpt,
    Method,
    PrecisionChoice,
    PrecisionOpt,
    QuietOpt,
    VariantOpt,
    app,
    cli_errors,
    echo,
    maybe_dask,
    ridge_summary,
)

OUT_HELP = ("where to write the map: a file path (written exactly there, an .npz archive whatever its suffix); "
            "with --both a directory that receives SRC_to_DST.npz and DST_to_SRC.npz")


def map_paths(out: Path, names: list[tuple[str, str]]) -> list[Path]:
    """The file(s) ``--out`` names: ``out`` itself for one map, ``out/SRC_to_DST.npz`` for each of two."""
    if len(names) == 1:
        check_output_file(out, "--out")
        return [out]
    if out.suffix == ".npz":
        raise LintwinError("--both writes two maps: give --out a directory, not a .npz file")
    check_output_dir(out, "--out")
    return [out / f"{s}_to_{d}.npz" for s, d in names]


def _detail(mp: AffineMap) -> str:
    """What the fit of one map reported, in one line (each condition figure named)."""
    st = mp.stats
    if mp.method == "adam":
        return f"Adam ({mp.options['variant']} variant), final batch loss {st['final_loss']:.4f}"
    effective = st["dim"] - st.get("constant_units", 0)
    text = f"solver {st['solver']}, rank {st['rank']} of {effective}"
    if st.get("constant_units"):
        text += f" ({st['constant_units']} constant unit(s) got zero weight)"
    if "map_rank" in st:
        text += f", reduced to rank {st['map_rank']}"
    text += f", condition {'≥' if st.get('condition_is_lower_bound') else '≈'} {st['condition']:.3g} (whole scaled system"
    if st["rank"] < effective:
        text += f"; the retained rank-{st['rank']} system's ≈ {st['retained_condition']:.3g}"
    text += ")"
    return text + (f", expected relative error of W ≈ {st['expected_error']:.1e} and of the mapped features ≈ "
                   f"{st['prediction_error']:.1e} ({st['precision']} products; first-order estimates, not bounds)")


@app.command()
def solve(
    store: Annotated[Path, typer.Argument(help="feature store")],
    src: Annotated[str, typer.Option("--src", help="source network")],
    dst: Annotated[str, typer.Option("--dst", help="target network")],
    method: Annotated[Method, typer.Option(help="closed form or the paper's Adam")] = Method.lstsq,
    ridge: Annotated[str, typer.Option(help=RIDGE_HELP)] = "0",
    folds: FoldsOpt = 5,
    rank: Annotated[Optional[int], typer.Option(min=1, help="fit the best map of this rank")] = None,
    precision: PrecisionOpt = PrecisionChoice.float32,
    device: DeviceOpt = DeviceChoice.auto,
    both: Annotated[bool, typer.Option("--both", help="also fit dst→src from the same pass")] = False,
    split: Annotated[str, typer.Option(help="split to fit on")] = "train",
    eval_split: Annotated[Optional[str], typer.Option(help="held-out split (default: val if present)")] = None,
    train_pass: Annotated[bool, typer.Option(
        "--train-pass", help="also score the training split row by row (cosine, paper loss); without it the "
                             "training R² comes exactly from the moments, at no cost")] = False,
    out: Annotated[Optional[Path], typer.Option(help=OUT_HELP)] = None,
    lr: LrOpt = 0.1,
    decay: DecayOpt = 1e-5,
    batch: AdamBatchOpt = 2048,
    iterations: IterationsOpt = 100_000,
    seed: AdamSeedOpt = 0,
    init: InitOpt = InitChoice.random,
    adam_variant: VariantOpt = AdamVariant.tensorflow,
    block_rows: Annotated[Optional[int], typer.Option(min=1, help="rows per streamed block")] = None,
    dask: DaskOpt = None,
    quiet: QuietOpt = False,
) -> None:
    """Fit the affine map src→dst on a store split and report how well it maps."""
    with cli_errors():
        lam = parse_ridge(ridge)
        adam = AdamOptions(lr=lr, decay=decay, batch=batch, iterations=iterations, seed=seed,
                           variant=adam_variant.value).validate()
        s = FeatureStore.open(store)
        for name in (src, dst):
            s.features(split, name)
        if eval_split is None and "val" in s.splits() and split != "val":
            eval_split = "val"
        if eval_split is not None:
            for name in (src, dst):
                s.features(eval_split, name)
        paths = map_paths(out, [(src, dst), (dst, src)][: 2 if both else 1]) if out is not None else []
        with maybe_dask(dask) as client:
            t0 = time.perf_counter()
            fitted = api.fit_store(s, src, dst, split=split, method=method.value, ridge=lam,
                                   precision=precision.value, device=device.value, both=both, adam=adam,
                                   init=init.value, block_rows=block_rows, progress=not quiet, dask_client=client,
                                   rank=rank, folds=folds)
        maps = list(fitted) if both else [fitted]
        fit_seconds = time.perf_counter() - t0
        if train_pass or any("train_metrics" not in mp.stats for mp in maps):
            train = api.evaluate_store_maps(maps, s, split, device=device.value, progress=not quiet)
        else:
            train = [{"rows": mp.n_train, "mean_cosine": "—", "r2": mp.stats["train_metrics"]["r2"],
                      "paper_loss": "—"} for mp in maps]
        held = (api.evaluate_store_maps(maps, s, eval_split, device=device.value, progress=not quiet)
                if eval_split is not None else [None] * len(maps))
        results = []
        for mp, tr, ev in zip(maps, train, held):
            mp.stats[f"{split}_metrics"] = tr
            results.append((mp.name, split, tr))
            if ev is not None:
                mp.stats[f"{eval_split}_metrics"] = ev
                results.append((mp.name, eval_split, ev))
        echo(metrics_table(results))
        if any(mp.method == "adam" for mp in maps):
            echo("R² of Adam maps is taken after the best scale: the paper's loss ignores the prediction's norm, "
                 "so their scale is arbitrary")
        elif not train_pass:
            echo(f"{split}: R² exact from the moments (add --train-pass for cosine and paper loss)")
        for mp in maps:
            echo(f"{mp.name}: {mp.method}, {mp.n_train} training rows, {_detail(mp)}")
        for mp in maps:
            if "ridge_cv" in mp.stats:
                echo(ridge_summary(mp))
        echo(f"fit time {fit_seconds:.2f} s (method {method.value}, device {placement(device.value).describe()})")
        for mp, path in zip(maps, paths):
            mp.save(path)
            echo(f"wrote {path}")
            if mp.loss_curve is not None:
                echo(f"wrote {plot_loss_curve({mp.name: mp.loss_curve}, path.with_name(path.stem + '.loss.png'))}")
            if "ridge_cv" in mp.stats:
                echo(f"wrote {plot_ridge_cv(mp.stats['ridge_cv'], path.with_name(path.stem + '.cv.png'))}")
        if out is None:
            echo(f"no map written (no --out): give --out MAP.npz{', or a directory with --both,' if both else ''} "
                 "to save the map(s) for score, stitch or compare")
