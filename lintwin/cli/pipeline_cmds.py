"""The experiment commands: extract features with ONNX backbones, score maps with heads, compare, demo."""

from __future__ import annotations

import time
from enum import StrEnum
from pathlib import Path
from typing import Annotated

import typer

from ..affine import AffineMap
from ..core.outputs import check_output_dir
from ..core.params import parse_ridge
from ..errors import LintwinError
from ..experiments.compare import compare as run_compare
from ..experiments.compare import score as score_store
from ..experiments.compare_tables import compare_output, compare_text
from ..experiments.demo import BUNDLED_MODELS, run_demo, write_compare_outputs
from ..experiments.report import plot_ridge_cv
from ..experiments.tables import OutputFormat
from ..networks.extract import default_workers, extract_features, extract_layers
from ..networks.images import DEFAULT_FASHION_MNIST, concat_images, open_images
from ..networks.onnx_models import Head
from ..networks.preprocess import augment_from_options
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
    FoldsOpt,
    InitChoice,
    InitOpt,
    IterationsOpt,
    LrOpt,
    Method,
    PrecisionChoice,
    PrecisionOpt,
    QuietOpt,
    RidgeCriterion,
    VariantOpt,
    app,
    cli_errors,
    echo,
    maybe_dask,
    ridge_summary,
)


class PoolChoice(StrEnum):
    avg = "avg"
    positions = "positions"
    cls = "cls"
    flatten = "flatten"


def _pair(value: str | None, option: str) -> tuple[float, float] | None:
    """``MIN,MAX`` for --scale and --ratio (None when not given)."""
    if value is None:
        return None
    try:
        lo, hi = (float(v) for v in value.split(","))
    except ValueError:
        raise typer.BadParameter(f"expected MIN,MAX, got {value!r}", param_hint=option) from None
    return lo, hi


@app.command()
def extract(
    backbone: Annotated[Path, typer.Argument(help="backbone ONNX file (NAME.backbone.onnx, sidecar NAME.json beside it); with --layers any ONNX model of images (NAME.onnx, sidecar NAME.json)")],
    images: Annotated[list[Path], typer.Argument(help="image folder(s) (labels.csv, class sub-folders or plain), .npz or IDX file; several folders form one pool")],
    store: Annotated[Path, typer.Option("--store", help="feature store (created if missing)")],
    split: Annotated[str, typer.Option(help="split to write")] = "train",
    name: Annotated[str | None, typer.Option(help="network name (default: from the sidecar)")] = None,
    labels_csv: Annotated[Path | None, typer.Option(help="CSV of file,label for an image folder (default: its labels.csv)")] = None,
    augment: Annotated[bool, typer.Option(help="random resized crops and flips (seeded per image and view)")] = False,
    views: Annotated[int, typer.Option(min=1, help="views per image (more than 1 needs --augment)")] = 1,
    seed: Annotated[int, typer.Option(help="augmentation seed")] = 0,
    scale: Annotated[str | None, typer.Option(help="augmentation: MIN,MAX share of the image area a crop covers (default 0.35,1.0)")] = None,
    ratio: Annotated[str | None, typer.Option(help="augmentation: MIN,MAX aspect (width/height) of a crop (default 0.75,1.333)")] = None,
    flip: Annotated[bool | None, typer.Option("--flip/--no-flip", help="augmentation: flip half the views left-right (default --flip)")] = None,
    centre_view: Annotated[bool, typer.Option("--centre-view", help="augmentation: view 0 of each image is the plain centre view")] = False,
    batch: Annotated[int, typer.Option(min=1, help="rows per backbone call (rounded up to whole images' views)")] = 64,
    workers: Annotated[int | None, typer.Option(min=1, help="processes decoding and preprocessing images (1: a thread; default: cores - 1, at most 8; results do not depend on it)")] = None,
    sidecar: Annotated[Path | None, typer.Option(help="sidecar JSON if not beside the model")] = None,
    chunk_rows: Annotated[int | None, typer.Option(min=1, help="rows per zarr chunk (and per resume step)")] = None,
    overwrite: Annotated[bool, typer.Option("--overwrite", help="replace this network's features in the split if they were made differently")] = False,
    layers: Annotated[str | None, typer.Option("--layers", help="store these tensors of the model instead of a backbone's output: comma-separated names (`lintwin layers MODEL` lists them), one array NAME+TENSOR per layer")] = None,
    pool: Annotated[PoolChoice | None, typer.Option("--pool", help="with --layers: avg (mean over positions or tokens), positions (one row per image and position, ids IMAGE#pK), cls (a token layer's first token) or flatten (all values; refused past 16,384) [default: avg]")] = None,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="no progress bar")] = False,
) -> None:
    """Run an ONNX backbone over images into a feature store, or store any layers of a model (--layers); resumable."""
    with cli_errors():
        if layers is None and pool is not None:
            raise LintwinError("--pool goes with --layers (a backbone's output is already one vector per image)")
        aug = augment_from_options(augment, scale=_pair(scale, "--scale"), ratio=_pair(ratio, "--ratio"), flip=flip,
                                   centre_view=centre_view) or False
        n_workers = default_workers() if workers is None else workers
        imgs = concat_images([open_images(p, labels_csv=labels_csv, workers=n_workers) for p in images])
        if imgs.skipped:
            echo(f"skipped {len(imgs.skipped)} file(s) that could not be read: {', '.join(imgs.skipped[:10])}"
                 + (" ..." if len(imgs.skipped) > 10 else ""))
        if layers is not None:
            r = extract_layers(backbone, imgs, store, split=split, layers=[t for t in layers.split(",") if t],
                               pool=(pool or PoolChoice.avg).value, name=name, views=views, augment=aug, seed=seed,
                               batch=batch, sidecar=sidecar, chunk_rows=chunk_rows, workers=n_workers,
                               overwrite=overwrite, progress=not quiet)
            resumed = f" (resumed at row {r.resumed_from})" if r.resumed_from else ""
            echo(f"wrote {r.rows} rows ({r.images} images x {views} view(s) x {r.rows // (r.images * views)} "
                 f"row(s) each) of {len(r.arrays)} layer(s) of {r.network} to {store} [{split}]{resumed}")
            for a in r.arrays:
                echo(f"  {a.array}: {a.layer.name} ({a.layer.op}, {a.layer.dims()}), pooling {a.pooling}, "
                     f"{a.dim} values per row")
            return
        s = extract_features(backbone, imgs, store, split=split, name=name, views=views, augment=aug,
                             seed=seed, batch=batch, sidecar=sidecar, chunk_rows=chunk_rows, workers=n_workers,
                             overwrite=overwrite, progress=not quiet)
        resumed = f" (resumed at row {s.resumed_from})" if s.resumed_from else ""
        echo(f"wrote {s.rows} x {s.dim} features of {s.name} to {store} [{split}]{resumed}")


@app.command()
def score(
    store: Annotated[Path, typer.Argument(help="feature store")],
    map_file: Annotated[Path, typer.Option("--map", help="map .npz from solve or compare")],
    head: Annotated[Path, typer.Option("--head", help="the target network's head ONNX file")],
    split: Annotated[str, typer.Option(help="labelled split to score")] = "val",
    device: Annotated[DeviceChoice, typer.Option(help="where to apply the map: auto (GPU if present), cpu or gpu")] = DeviceChoice.auto,
) -> None:
    """Classify mapped features with the target network's frozen head (refuses a head that is not the target's)."""
    with cli_errors():
        s = FeatureStore.open(store)
        amap = AffineMap.load(map_file)
        r = score_store(s, amap, Head(head), split, device=device.value)
        echo(f"{r['map']} on {split}: {r['correct']}/{r['images']} correct ({100 * r['accuracy']:.2f}%)")
        if "agreement" in r:
            echo(f"{amap.dst} on its own features: {r['own_correct']}/{r['images']} correct "
                 f"({100 * r['own_accuracy']:.2f}%); top-1 agreement with mapped: {100 * r['agreement']:.2f}%")


@app.command()
def compare(
    store: Annotated[Path, typer.Argument(help="feature store with train and val splits")],
    a: Annotated[str, typer.Option("--a", help="network A")],
    b: Annotated[str, typer.Option("--b", help="network B")],
    head_a: Annotated[Path, typer.Option("--head-a", help="A's head ONNX file")],
    head_b: Annotated[Path, typer.Option("--head-b", help="B's head ONNX file")],
    method: Annotated[Method, typer.Option(help="lstsq: closed form; adam: the paper's optimiser")] = Method.lstsq,
    ridge: Annotated[str, typer.Option(help=RIDGE_HELP)] = "0",
    folds: FoldsOpt = 5,
    ridge_criterion: Annotated[RidgeCriterion, typer.Option(help="--ridge auto: choose λ by held-out feature error or by the target head's top-1 agreement")] = RidgeCriterion.feature_error,
    rank: Annotated[int | None, typer.Option(min=1, help="fit the best maps of this rank")] = None,
    precision: PrecisionOpt = PrecisionChoice.float32,
    device: Annotated[DeviceChoice, typer.Option(help="auto (GPU if present), cpu or gpu")] = DeviceChoice.auto,
    split: Annotated[str, typer.Option(help="split to fit the maps on")] = "train",
    eval_split: Annotated[str, typer.Option(help="labelled held-out split")] = "val",
    in_sample: Annotated[bool, typer.Option("--in-sample", help="allow evaluating on images the maps were fitted on (the table is labelled in-sample)")] = False,
    out: Annotated[Path, typer.Option(help="directory for JSON, PNG and the two maps")] = Path("runs/compare"),
    lr: LrOpt = 0.1,
    decay: DecayOpt = 1e-5,
    batch: AdamBatchOpt = 2048,
    iterations: IterationsOpt = 100_000,
    seed: AdamSeedOpt = 0,
    init: InitOpt = InitChoice.random,
    adam_variant: VariantOpt = AdamVariant.tensorflow,
    bootstrap: Annotated[int, typer.Option(min=0, help="bootstrap resamples of the evaluation images for the "
                                                        "95% intervals of every accuracy and loss (0: none)")] = 2000,
    dask: DaskOpt = None,
    quiet: QuietOpt = False,
    fmt: Annotated[OutputFormat, typer.Option("--format", help="what to print: text, json (everything), csv (Table 1) or markdown")] = OutputFormat.text,
) -> None:
    """Fit both maps and print the paper's Table 1 and Fig. 5 regions for networks A and B."""
    with cli_errors():
        lam = parse_ridge(ridge)
        adam = AdamOptions(lr=lr, decay=decay, batch=batch, iterations=iterations, seed=seed,
                           variant=adam_variant.value).validate()
        check_output_dir(out, "--out")
        s = FeatureStore.open(store)
        with maybe_dask(dask) as client:
            result, maps = run_compare(s, a, b, Head(head_a), Head(head_b), method=method.value, ridge=lam,
                                       precision=precision.value, device=device.value, adam=adam, init=init.value,
                                       fit_split=split, eval_split=eval_split, progress=not quiet,
                                       dask_client=client, rank=rank, folds=folds, in_sample=in_sample,
                                       ridge_criterion=ridge_criterion.value, bootstrap=bootstrap)
        say = echo if fmt is OutputFormat.text else (lambda text: typer.echo(text, err=True))
        echo(compare_output(result, fmt))
        for m in maps:
            if "ridge_cv" in m.stats:
                say(ridge_summary(m))
        j, png = write_compare_outputs(result, out, f"{a} vs {b}")
        for m in maps:
            m.save(out / f"{m.src}_to_{m.dst}.npz")
            if "ridge_cv" in m.stats:
                say(f"wrote {plot_ridge_cv(m.stats['ridge_cv'], out / f'{m.src}_to_{m.dst}.cv.png')}")
        say(f"wrote {j}, {png} and the maps to {out}")


@app.command()
def demo(
    data: Annotated[Path, typer.Option(help="Fashion-MNIST directory (IDX files)")] = DEFAULT_FASHION_MNIST,
    models: Annotated[Path, typer.Option(help="directory with the bundled networks")] = BUNDLED_MODELS,
    out: Annotated[Path, typer.Option(help="output directory")] = Path("runs/demo"),
    method: Annotated[Method, typer.Option(help="lstsq: closed form; adam: the paper's optimiser")] = Method.lstsq,
    iterations: IterationsOpt = 100_000,
    train_limit: Annotated[int | None, typer.Option(min=1, help="use only the first N training images")] = None,
    workers: Annotated[int | None, typer.Option(min=1, help="processes preprocessing images (1: a thread; default: cores - 1, at most 8)")] = None,
    precision: PrecisionOpt = PrecisionChoice.float32,
    quiet: QuietOpt = False,
) -> None:
    """The paper's experiment on the bundled Fashion-MNIST residual and Inception-style networks."""
    with cli_errors():
        check_output_dir(out, "--out")
        t0 = time.perf_counter()
        result, paths = run_demo(data=data, models=models, out=out, method=method.value,
                                 adam=AdamOptions(iterations=iterations), train_limit=train_limit,
                                 workers=workers, precision=precision.value, progress=not quiet, echo=echo)
        echo(compare_text(result))
        echo(f"wrote {paths.json} and {paths.png} ({time.perf_counter() - t0:.0f} s)")
