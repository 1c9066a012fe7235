"""The ``lintwin`` command line: thin Typer commands over the library API."""

from __future__ import annotations

import time
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Optional

import typer

from . import api
from ._gpu import resolve_device
from .affine import AffineMap
from .demo import BUNDLED_MODELS, compare_report, run_demo, write_compare_outputs
from .errors import LintwinError, MapFileError
from .experiment import compare as run_compare
from .experiment import score as score_store
from .extract import extract_features
from .images import DEFAULT_FASHION_MNIST, concat_images, open_images
from .importer import import_features
from .networks import Head, NetworkSpec
from .report import metrics_table, plot_loss_curve, plot_ridge_cv
from .solvers import AdamOptions, RankWarning
from .store import FeatureStore
from .synthetic import write_synthetic_store

app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
                  help="Do two neural networks extract the same information? Fit and score affine "
                       "maps between their features.")


class Method(StrEnum):
    lstsq = "lstsq"
    adam = "adam"


class DeviceChoice(StrEnum):
    auto = "auto"
    cpu = "cpu"
    gpu = "gpu"


class PrecisionChoice(StrEnum):
    float32 = "float32"
    float64 = "float64"


class InitChoice(StrEnum):
    random = "random"
    lstsq = "lstsq"


@contextmanager
def _cli_errors() -> Iterator[None]:
    """Turn library errors into one line on stderr and exit 1; show solver warnings as notes."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", RankWarning)
        try:
            yield
        except LintwinError as exc:
            typer.echo(f"Error: {exc}", err=True)
            raise typer.Exit(1) from None
        finally:
            for w in caught:
                if issubclass(w.category, RankWarning):
                    typer.echo(f"Warning: {w.message}", err=True)


def _echo(text: str) -> None:
    typer.echo(text)


def _ridge_summary(mp: AffineMap) -> str:
    """One line on how ``--ridge auto`` chose λ for a map."""
    cv = mp.stats["ridge_cv"]
    return (f"{mp.name}: λ = {cv['chosen']:.4g} chosen by {cv['folds']}-fold CV over images ({cv['scored_by']}; "
            f"held-out relative error {min(cv['cv_error']):.4f})")


def _ridge(value: str) -> float | str:
    """``--ridge``: a number >= 0 or ``auto``."""
    if value == "auto":
        return value
    try:
        lam = float(value)
    except ValueError:
        raise typer.BadParameter(f"expected a number >= 0 or 'auto', got {value!r}", param_hint="--ridge") from None
    if lam < 0:
        raise typer.BadParameter(f"expected a number >= 0 or 'auto', got {value!r}", param_hint="--ridge")
    return lam


@contextmanager
def _maybe_dask(address: Optional[str]) -> Iterator[object]:
    """A Dask client for ``--dask ADDRESS``, or None without it."""
    if address is None:
        yield None
        return
    from .distributed import dask_client

    with dask_client(address, echo=lambda msg: typer.echo(msg, err=True)) as client:
        yield client


@app.command("import")
def import_cmd(
    file: Annotated[Path, typer.Argument(help=".npy or .npz file of features (rows x dim)")],
    store: Annotated[Path, typer.Option("--store", help="feature store (created if missing)")],
    name: Annotated[str, typer.Option("--name", help="network name, e.g. resnet152")],
    split: Annotated[str, typer.Option(help="split name")] = "train",
    key: Annotated[Optional[str], typer.Option(help="array name inside an .npz file")] = None,
    labels: Annotated[Optional[Path], typer.Option(help=".npy/.npz file of integer labels")] = None,
    labels_key: Annotated[Optional[str], typer.Option(help="labels array name inside an .npz file")] = None,
    chunk_rows: Annotated[Optional[int], typer.Option(min=1, help="rows per zarr chunk")] = None,
    overwrite: Annotated[bool, typer.Option(help="replace existing features of this network")] = False,
) -> None:
    """Import features computed elsewhere into a feature store."""
    with _cli_errors():
        s = import_features(store, file, name=name, split=split, key=key, labels=labels,
                            labels_key=labels_key, chunk_rows=chunk_rows, overwrite=overwrite)
        info = s.info(split, name)
        _echo(f"imported {info['rows']} x {info['dim']} features of {name} into {store} [{split}]")


@app.command()
def info(store: Annotated[Path, typer.Argument(help="feature store")]) -> None:
    """List the splits, networks, shapes and completeness of a feature store."""
    with _cli_errors():
        s = FeatureStore.open(store)
        for split in s.splits():
            labels = s.labels(split)
            _echo(f"{split}: {s.rows(split)} rows" + (f", labels for {len(set(labels.tolist()))} classes"
                                                      if labels is not None else ""))
            for net in s.networks(split):
                i = s.info(split, net)
                state = "complete" if i["rows_written"] == i["rows"] else f"INCOMPLETE {i['rows_written']}/{i['rows']}"
                _echo(f"  {net}: dim {i['dim']}, chunk {i['chunk_rows']} rows, {state}")


@app.command()
def synth(
    store: Annotated[Path, typer.Argument(help="feature store to write")],
    train: Annotated[int, typer.Option(min=1, help="training rows")] = 20000,
    val: Annotated[int, typer.Option(min=0, help="held-out rows")] = 5000,
    dim_a: Annotated[int, typer.Option(min=1)] = 512,
    dim_b: Annotated[int, typer.Option(min=1)] = 384,
    names: Annotated[tuple[str, str], typer.Option(help="the two network names")] = ("A", "B"),
    seed: Annotated[int, typer.Option()] = 0,
) -> None:
    """Write a store of realistic synthetic paired features (non-negative, correlated)."""
    with _cli_errors():
        write_synthetic_store(store, train=train, val=val, dim_a=dim_a, dim_b=dim_b, names=names, seed=seed)
        _echo(f"wrote {train} train + {val} val rows of {names[0]} ({dim_a}) and {names[1]} ({dim_b}) to {store}")


def _map_paths(out: Path, names: list[tuple[str, str]]) -> list[Path]:
    if len(names) == 1 and out.suffix == ".npz":
        return [out]
    if out.suffix == ".npz":
        raise LintwinError("--both writes two maps: give --out a directory, not a .npz file")
    return [out / f"{s}_to_{d}.npz" for s, d in names]


@app.command()
def solve(
    store: Annotated[Path, typer.Argument(help="feature store")],
    src: Annotated[str, typer.Option("--src", help="source network")],
    dst: Annotated[str, typer.Option("--dst", help="target network")],
    method: Annotated[Method, typer.Option(help="closed form or the paper's Adam")] = Method.lstsq,
    ridge: Annotated[str, typer.Option(help="ridge penalty λ on the weights, or 'auto' for K-fold CV over images")] = "0",
    folds: Annotated[int, typer.Option(min=2, help="folds for --ridge auto")] = 5,
    rank: Annotated[Optional[int], typer.Option(min=1, help="fit the best map of this rank")] = None,
    precision: Annotated[PrecisionChoice, typer.Option(help="float32 products summed in float64, or all float64")] = PrecisionChoice.float32,
    device: Annotated[DeviceChoice, typer.Option(help="auto uses the GPU when CuPy sees one")] = DeviceChoice.auto,
    both: Annotated[bool, typer.Option("--both", help="also fit dst→src from the same pass")] = False,
    split: Annotated[str, typer.Option(help="split to fit on")] = "train",
    eval_split: Annotated[Optional[str], typer.Option(help="held-out split (default: val if present)")] = None,
    out: Annotated[Optional[Path], typer.Option(help="map .npz file, or a directory with --both")] = None,
    lr: Annotated[float, typer.Option(help="Adam learning rate")] = 0.1,
    decay: Annotated[float, typer.Option(help="Adam lr decay per iteration")] = 1e-5,
    batch: Annotated[int, typer.Option(min=1, help="Adam batch rows")] = 2048,
    iterations: Annotated[int, typer.Option(min=1, help="Adam iterations")] = 100_000,
    seed: Annotated[int, typer.Option(help="Adam seed")] = 0,
    init: Annotated[InitChoice, typer.Option(help="Adam start: random or the closed-form map")] = InitChoice.random,
    block_rows: Annotated[Optional[int], typer.Option(min=1, help="rows per streamed block")] = None,
    dask: Annotated[Optional[str], typer.Option(help="accumulate on a Dask cluster: scheduler address or local[:N]")] = None,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="no progress bars")] = False,
) -> None:
    """Fit the affine map src→dst on a store split and report how well it maps."""
    with _cli_errors(), _maybe_dask(dask) as client:
        s = FeatureStore.open(store)
        t0 = time.perf_counter()
        adam = AdamOptions(lr=lr, decay=decay, batch=batch, iterations=iterations, seed=seed)
        maps = api.fit_store(s, src, dst, split=split, method=method.value, ridge=_ridge(ridge),
                             precision=precision.value, device=device.value, both=both, adam=adam, init=init.value,
                             block_rows=block_rows, progress=not quiet, dask_client=client, rank=rank, folds=folds)
        fit_seconds = time.perf_counter() - t0
        if eval_split is None and "val" in s.splits() and split != "val":
            eval_split = "val"
        splits = [split] + ([eval_split] if eval_split else [])
        results = []
        for mp in maps:
            for sp in splits:
                metrics = api.evaluate_store(mp, s, sp, device=device.value, progress=not quiet)
                mp.stats[f"{sp}_metrics"] = metrics
                results.append((mp.name, sp, metrics))
        _echo(metrics_table(results))
        for mp in maps:
            solver = mp.stats.get("solver")
            detail = f"solver {solver}, rank {mp.stats.get('rank')}" if solver else f"final batch loss {mp.stats['final_loss']:.4f}"
            if "map_rank" in mp.stats:
                detail += f", reduced to rank {mp.stats['map_rank']}"
            _echo(f"{mp.name}: {mp.method}, {mp.n_train} training rows, {detail}")
        for mp in maps:
            if "ridge_cv" in mp.stats:
                _echo(_ridge_summary(mp))
        _echo(f"fit time {fit_seconds:.2f} s (method {method.value}, device {resolve_device(device.value)})")
        if out is not None:
            for mp, path in zip(maps, _map_paths(out, [(m.src, m.dst) for m in maps])):
                mp.save(path)
                _echo(f"wrote {path}")
                if mp.loss_curve is not None:
                    png = plot_loss_curve({mp.name: mp.loss_curve}, path.with_suffix(".loss.png"))
                    _echo(f"wrote {png}")
                if "ridge_cv" in mp.stats:
                    png = plot_ridge_cv(mp.stats["ridge_cv"], path.with_suffix(".cv.png"))
                    _echo(f"wrote {png}")


@app.command()
def extract(
    backbone: Annotated[Path, typer.Argument(help="backbone ONNX file (NAME.backbone.onnx, sidecar NAME.json beside it)")],
    images: Annotated[list[Path], typer.Argument(help="image folder(s) (labels.csv, class sub-folders or plain), .npz or IDX file; several folders form one pool")],
    store: Annotated[Path, typer.Option("--store", help="feature store (created if missing)")],
    split: Annotated[str, typer.Option(help="split to write")] = "train",
    name: Annotated[Optional[str], typer.Option(help="network name (default: from the sidecar)")] = None,
    labels_csv: Annotated[Optional[Path], typer.Option(help="CSV of file,label for an image folder")] = None,
    augment: Annotated[bool, typer.Option(help="random resized crops and flips (seeded)")] = False,
    views: Annotated[int, typer.Option(min=1, help="augmented views per image")] = 1,
    seed: Annotated[int, typer.Option(help="augmentation seed")] = 0,
    batch: Annotated[int, typer.Option(min=1, help="images per backbone call")] = 64,
    sidecar: Annotated[Optional[Path], typer.Option(help="sidecar JSON if not beside the model")] = None,
    chunk_rows: Annotated[Optional[int], typer.Option(min=1, help="rows per zarr chunk (and per resume step)")] = None,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="no progress bar")] = False,
) -> None:
    """Run an ONNX backbone over images into a feature store (resumable)."""
    with _cli_errors():
        imgs = concat_images([open_images(p, labels_csv=labels_csv) for p in images])
        if imgs.skipped:
            _echo(f"skipped {len(imgs.skipped)} file(s) that could not be read: {', '.join(imgs.skipped[:10])}"
                  + (" ..." if len(imgs.skipped) > 10 else ""))
        s = extract_features(backbone, imgs, store, split=split, name=name, views=views, augment=augment,
                             seed=seed, batch=batch, sidecar=sidecar, chunk_rows=chunk_rows, progress=not quiet)
        resumed = f" (resumed at row {s.resumed_from})" if s.resumed_from else ""
        _echo(f"wrote {s.rows} x {s.dim} features of {s.name} to {store} [{split}]{resumed}")


@app.command()
def score(
    store: Annotated[Path, typer.Argument(help="feature store")],
    map_file: Annotated[Path, typer.Option("--map", help="map .npz from solve or compare")],
    head: Annotated[Path, typer.Option("--head", help="the target network's head ONNX file")],
    split: Annotated[str, typer.Option(help="labelled split to score")] = "val",
    device: Annotated[DeviceChoice, typer.Option()] = DeviceChoice.auto,
) -> None:
    """Classify mapped features with the target network's frozen head."""
    with _cli_errors():
        s = FeatureStore.open(store)
        amap = AffineMap.load(map_file)
        h = Head(head)
        spec_name = _head_network(head)
        if spec_name is not None and spec_name != amap.dst:
            raise MapFileError(f"map {amap.name} targets {amap.dst!r}, but {head.name} is the head of {spec_name!r}")
        r = score_store(s, amap, h, split, device=device.value)
        _echo(f"{r['map']} on {split}: {r['correct']}/{r['images']} correct ({100 * r['accuracy']:.2f}%)")
        if "agreement" in r:
            _echo(f"{amap.dst} on its own features: {r['own_correct']}/{r['images']} correct "
                  f"({100 * r['own_accuracy']:.2f}%); top-1 agreement with mapped: {100 * r['agreement']:.2f}%")


def _head_network(head: Path) -> Optional[str]:
    try:
        return NetworkSpec.for_model(head).name
    except LintwinError:
        return None


@app.command()
def compare(
    store: Annotated[Path, typer.Argument(help="feature store with train and val splits")],
    a: Annotated[str, typer.Option("--a", help="network A")],
    b: Annotated[str, typer.Option("--b", help="network B")],
    head_a: Annotated[Path, typer.Option("--head-a", help="A's head ONNX file")],
    head_b: Annotated[Path, typer.Option("--head-b", help="B's head ONNX file")],
    method: Annotated[Method, typer.Option()] = Method.lstsq,
    ridge: Annotated[str, typer.Option(help="ridge λ, or 'auto' for K-fold CV over images")] = "0",
    folds: Annotated[int, typer.Option(min=2, help="folds for --ridge auto")] = 5,
    rank: Annotated[Optional[int], typer.Option(min=1, help="fit the best maps of this rank")] = None,
    precision: Annotated[PrecisionChoice, typer.Option()] = PrecisionChoice.float32,
    device: Annotated[DeviceChoice, typer.Option()] = DeviceChoice.auto,
    split: Annotated[str, typer.Option(help="split to fit the maps on")] = "train",
    eval_split: Annotated[str, typer.Option(help="labelled held-out split")] = "val",
    out: Annotated[Path, typer.Option(help="directory for JSON, PNG and the two maps")] = Path("runs/compare"),
    lr: Annotated[float, typer.Option()] = 0.1,
    decay: Annotated[float, typer.Option()] = 1e-5,
    batch: Annotated[int, typer.Option(min=1)] = 2048,
    iterations: Annotated[int, typer.Option(min=1)] = 100_000,
    seed: Annotated[int, typer.Option()] = 0,
    init: Annotated[InitChoice, typer.Option()] = InitChoice.random,
    dask: Annotated[Optional[str], typer.Option(help="accumulate on a Dask cluster: scheduler address or local[:N]")] = None,
    quiet: Annotated[bool, typer.Option("--quiet", "-q")] = False,
) -> None:
    """Fit both maps and print the paper's Table 1 and Fig. 5 regions for networks A and B."""
    with _cli_errors(), _maybe_dask(dask) as client:
        s = FeatureStore.open(store)
        adam = AdamOptions(lr=lr, decay=decay, batch=batch, iterations=iterations, seed=seed)
        result, maps = run_compare(s, a, b, Head(head_a), Head(head_b), method=method.value, ridge=_ridge(ridge),
                                   precision=precision.value, device=device.value, adam=adam, init=init.value,
                                   fit_split=split, eval_split=eval_split, progress=not quiet, dask_client=client,
                                   rank=rank, folds=folds)
        _echo(compare_report(result))
        for m in maps:
            if "ridge_cv" in m.stats:
                _echo(_ridge_summary(m))
        j, png = write_compare_outputs(result, out, f"{a} vs {b}")
        for m in maps:
            m.save(out / f"{m.src}_to_{m.dst}.npz")
            if "ridge_cv" in m.stats:
                plot_ridge_cv(m.stats["ridge_cv"], out / f"{m.src}_to_{m.dst}.cv.png")
        _echo(f"wrote {j}, {png} and the maps to {out}")


@app.command()
def demo(
    data: Annotated[Path, typer.Option(help="Fashion-MNIST directory (IDX files)")] = DEFAULT_FASHION_MNIST,
    models: Annotated[Path, typer.Option(help="directory with the bundled networks")] = BUNDLED_MODELS,
    out: Annotated[Path, typer.Option(help="output directory")] = Path("runs/demo"),
    method: Annotated[Method, typer.Option()] = Method.lstsq,
    iterations: Annotated[int, typer.Option(min=1, help="Adam iterations")] = 100_000,
    train_limit: Annotated[Optional[int], typer.Option(min=1, help="use only the first N training images")] = None,
    quiet: Annotated[bool, typer.Option("--quiet", "-q")] = False,
) -> None:
    """The paper's experiment on the bundled Fashion-MNIST residual and Inception-style networks."""
    with _cli_errors():
        t0 = time.perf_counter()
        result, paths = run_demo(data=data, models=models, out=out, method=method.value,
                                 adam=AdamOptions(iterations=iterations), train_limit=train_limit,
                                 progress=not quiet, echo=_echo)
        _echo(compare_report(result))
        _echo(f"wrote {paths.json} and {paths.png} ({time.perf_counter() - t0:.0f} s)")


def main() -> None:
    app()


if __name__ == "__main__":
    main()
