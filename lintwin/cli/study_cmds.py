"""``lintwin study``: every ordered pair of N networks, fitted from one pass and scored in one more."""

from __future__ import annotations

from enum import StrEnum
from pathlib import Path
from typing import Annotated

import typer

from ..core.params import parse_bytes, parse_ridge
from ..errors import LintwinError
from ..experiments.hints import require_eval_split
from ..experiments.study import resolve_heads, run_study
from ..experiments.study_report import check_study_out, study_output, write_study
from ..experiments.tables import OutputFormat
from ..networks.onnx_models import NetworkSpec
from ..networks.stitch import stitch as do_stitch
from ..solvers import AdamOptions
from ..storage.store import FeatureStore
from ._common import (
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
    ListOptions,
    LrOpt,
    PrecisionChoice,
    PrecisionOpt,
    QuietOpt,
    VariantOpt,
    app,
    cli_errors,
    echo,
    maybe_dask,
)


class StudyMethod(StrEnum):
    lstsq = "lstsq"
    adam = "adam"
    heads = "heads"


@app.command(cls=ListOptions)
def study(
    store: Annotated[Path, typer.Argument(help="feature store holding every network's features")],
    nets: Annotated[list[str], typer.Option("--nets", help="networks to study (two or more): --nets a b c")],
    heads: Annotated[list[Path] | None, typer.Option("--heads", help="their head ONNX files, in --nets order")] = None,
    models: Annotated[Path | None, typer.Option(help="folder with each network's NAME.json sidecar (instead of --heads)")] = None,
    split: Annotated[str, typer.Option(help="split to fit the maps on")] = "train",
    eval_split: Annotated[str, typer.Option(help="labelled held-out split to score on")] = "val",
    method: Annotated[StudyMethod, typer.Option(
        help="closed form (plus head-only maps), the paper's Adam for every ordered pair, or head-only maps")
    ] = StudyMethod.lstsq,
    ridge: Annotated[str, typer.Option(help="ridge penalty λ ≥ 0 for every pair, or 'auto': λ per ordered pair by "
                                            "K-fold CV over images, from one pass")] = "0",
    folds: FoldsOpt = 5,
    iterations: IterationsOpt = 100_000,
    lr: LrOpt = 0.1,
    decay: DecayOpt = 1e-5,
    batch: AdamBatchOpt = 2048,
    seed: AdamSeedOpt = 0,
    init: InitOpt = InitChoice.random,
    adam_variant: VariantOpt = AdamVariant.tensorflow,
    rank: Annotated[int | None, typer.Option(min=1, help="fit the best maps of this rank")] = None,
    precision: PrecisionOpt = PrecisionChoice.float32,
    device: DeviceOpt = DeviceChoice.auto,
    max_memory: Annotated[str | None, typer.Option(help="memory for the joint moments, e.g. 8G (default: half the available RAM)")] = None,
    block_rows: Annotated[int | None, typer.Option(min=1, help="rows per streamed block")] = None,
    stitch_pair: Annotated[tuple[str, str] | None, typer.Option("--stitch", help="also write the stitched ONNX model A→B: --stitch A B")] = None,
    dask: DaskOpt = None,
    out: Annotated[Path, typer.Option(help="directory for the matrices, pictures, report, maps and saved moments")] = Path("runs/study"),
    quiet: QuietOpt = False,
    fmt: Annotated[OutputFormat, typer.Option("--format", help="what to print: text, json (everything), csv (one row per ordered pair) or markdown")] = OutputFormat.text,
) -> None:
    """Map every ordered pair of N networks (one pass) and score all maps with every head (one more pass)."""

    say = echo if fmt is OutputFormat.text else (lambda text: typer.echo(text, err=True))
    with cli_errors():
        check_study_out(out)
        if stitch_pair is not None:
            for name in stitch_pair:
                if name not in nets:
                    raise LintwinError(f"--stitch {stitch_pair[0]} {stitch_pair[1]}: {name!r} is not among --nets")
        s = FeatureStore.open(store)
        require_eval_split(s, eval_split, split, in_sample_option=False)
        head_paths = resolve_heads(s, eval_split, nets, heads, models)
        if stitch_pair is not None:  # refuse a missing sidecar before the passes, not after
            backbone = NetworkSpec.for_model(head_paths[nets.index(stitch_pair[0])]).backbone_path
        with maybe_dask(dask) as client:
            result, maps = run_study(s, nets, head_paths, method=method.value, ridge=parse_ridge(ridge), rank=rank,
                                     precision=precision.value, device=device.value, split=split,
                                     eval_split=eval_split, out=out,
                                     max_memory=parse_bytes(max_memory) if max_memory else None,
                                     block_rows=block_rows, progress=not quiet, dask_client=client, echo=say,
                                     folds=folds, init=init.value,
                                     adam=AdamOptions(lr=lr, decay=decay, batch=batch, iterations=iterations,
                                                      seed=seed, variant=adam_variant.value))
        echo(study_output(result, fmt))
        for kind, kmaps in maps.items():
            folder = out / "maps" / kind
            folder.mkdir(parents=True, exist_ok=True)
            for mp in kmaps.values():
                mp.save(folder / f"{mp.src}_to_{mp.dst}.npz")
        paths = write_study(result, out)
        say(f"wrote {paths['report']}, {paths['json']}, {len([p for p in paths.values() if p.suffix == '.png'])} "
            f"heatmaps and {sum(len(k) for k in maps.values())} maps under {out}")
        if stitch_pair is not None:
            a, b = stitch_pair
            kind = "heads" if method.value == "heads" else "fitted"
            st = do_stitch(backbone, maps[kind][(a, b)], head_paths[nets.index(b)],
                           out / "stitched" / f"{a}_to_{b}.onnx")
            say(f"wrote the stitched model {st.model} (image → {b}'s logits through {a}'s features), sidecar "
                 f"{st.sidecar}; check it on images with lintwin stitch ... --images")
