"""``lintwin stitch`` (one stitched ONNX model, from a map file or fitted at any pair of layers) and ``stitch-sweep``."""

from __future__ import annotations

from enum import StrEnum
from pathlib import Path
from typing import Annotated

import typer

from ..affine import AffineMap
from ..core.files import strict_json
from ..core.outputs import check_output_dir
from ..core.params import parse_ridge
from ..errors import LintwinError
from ..experiments.layer_stitch import stitch_layers
from ..experiments.stitch_sweep import stitch_sweep
from ..experiments.stitch_sweep_report import stitch_sweep_output, write_stitch_sweep
from ..experiments.tables import OutputFormat
from ..networks.images import concat_images, open_images
from ..networks.resample import grid_text
from ..networks.stitch import check_stitched, stitch_outputs
from ..networks.stitch import stitch as do_stitch
from ..networks.stitched_layers import check_on_images
from ..storage.store import FeatureStore
from ._common import DeviceChoice, PrecisionChoice, app, cli_errors, echo

_LAYER_OPTIONS = ("--a", "--at-a", "--b", "--at-b", "--store")
_MAP_OPTIONS = ("--backbone", "--map", "--head")


class Pairing(StrEnum):
    all = "all"
    zip = "zip"


def _mode(given: dict[str, object]) -> str:
    """``map`` (--backbone --map --head) or ``layers`` (--a --at-a --b --at-b --store); one of them, complete."""
    layer = [k for k in _LAYER_OPTIONS if given[k] is not None]
    mapped = [k for k in _MAP_OPTIONS if given[k] is not None]
    if layer and mapped:
        raise LintwinError(f"{', '.join(mapped)} (stitch with a map file) and {', '.join(layer)} (fit a map between "
                           "two layers) do not go together: give one set")
    if layer:
        missing = [k for k in _LAYER_OPTIONS if given[k] is None]
        if missing:
            raise LintwinError(f"stitching at layers needs {', '.join(_LAYER_OPTIONS)}; missing {', '.join(missing)}")
        return "layers"
    missing = [k for k in _MAP_OPTIONS if given[k] is None]
    if missing:
        raise LintwinError(f"give either {', '.join(_MAP_OPTIONS)} (a map file) or {', '.join(_LAYER_OPTIONS)} (a map "
                           f"fitted between two layers); missing {', '.join(missing)}")
    return "map"


def _names(value: str) -> list[str]:
    return [t for t in value.split(",") if t]


@app.command()
def stitch(
    output: Annotated[Path, typer.Option("--output", "-o", help="stitched model file, NAME.onnx (with NAME.backbone.onnx, NAME.head.onnx and NAME.json beside it)")],
    backbone: Annotated[Path | None, typer.Option("--backbone", help="with --map: source network A's backbone ONNX (sidecar beside it)")] = None,
    map_file: Annotated[Path | None, typer.Option("--map", help="with --backbone: map A→B .npz from solve, compare or study")] = None,
    head: Annotated[Path | None, typer.Option("--head", help="with --map: target network B's head ONNX")] = None,
    a: Annotated[Path | None, typer.Option("--a", help="whole ONNX model A (image → logits; sidecar beside it): its front up to --at-a")] = None,
    at_a: Annotated[str | None, typer.Option("--at-a", help="A's tensor the map reads (`lintwin layers A` lists them)")] = None,
    b: Annotated[Path | None, typer.Option("--b", help="whole ONNX classifier B: its back from --at-b to the logits")] = None,
    at_b: Annotated[str | None, typer.Option("--at-b", help="B's tensor the map writes; a cut of B")] = None,
    store: Annotated[Path | None, typer.Option("--store", help="feature store holding both layers' rows (extract --layers ... --pool positions)")] = None,
    split: Annotated[list[str] | None, typer.Option("--split", help="split(s) holding the fitting rows (repeatable: layers of different grids live in different splits) [default: train]")] = None,
    ridge: Annotated[str, typer.Option(help="ridge λ of the map (a number >= 0) or 'auto' (K-fold CV over images)")] = "0",
    rank: Annotated[int | None, typer.Option(min=1, help="fit the best map of this rank")] = None,
    folds: Annotated[int, typer.Option("--folds", min=2, help="folds for --ridge auto")] = 5,
    precision: Annotated[PrecisionChoice, typer.Option(help="float32 products summed in float64, or all float64")] = PrecisionChoice.float32,
    device: Annotated[DeviceChoice, typer.Option(help="auto uses the GPU when CuPy sees one")] = DeviceChoice.auto,
    images: Annotated[Path | None, typer.Option(help="images to check the stitched model on (folder, .npz or IDX)")] = None,
    count: Annotated[int, typer.Option(min=1, help="images to check")] = 256,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="no progress bars")] = False,
) -> None:
    """Write one ONNX model: A's backbone, a map file and B's head; or A's front up to any layer, a per-position
    map fitted in closed form on stored rows, and B's back from any layer. Checked against the steps run separately."""
    with cli_errors():
        given = {"--a": a, "--at-a": at_a, "--b": b, "--at-b": at_b, "--store": store, "--backbone": backbone,
                 "--map": map_file, "--head": head}
        if _mode(given) == "map":
            assert backbone is not None and map_file is not None and head is not None
            inputs = [map_file] + ([images] if images is not None else [])
            stitch_outputs(output, backbone, head, also=inputs)
            amap = AffineMap.load(map_file)
            st = do_stitch(backbone, amap, head, output, also=inputs)
            echo(f"wrote {st.model} (image → {amap.dst}'s logits), {st.backbone.name} + {st.head.name} and the "
                 f"sidecar {st.sidecar.name}")
            if images is not None:
                c = check_stitched(st, backbone, amap, head, open_images(images), count=count)
                echo(f"checked on {c.images} images against backbone → map → head: max logit difference "
                     f"{c.max_logit_diff:.2e} (largest logit {c.max_logit:.2f}), top-1 agreement "
                     f"{100 * c.top1_agreement:.2f}%")
            return
        assert a is not None and b is not None and at_a is not None and at_b is not None and store is not None
        r = stitch_layers(a, at_a, b, at_b, FeatureStore.open(store), output, splits=split or ["train"],
                          ridge=parse_ridge(ridge), rank=rank, folds=folds, precision=precision.value,  # type: ignore[arg-type]
                          device=device.value, progress=not quiet)
        w = r.written
        how = f", resampled {grid_text(r.side_a.grid)} → {grid_text(r.side_b.grid)}" if w.resampled else ""
        echo(f"map {at_a} ({r.side_a.layer.dims()}) → {at_b} ({r.side_b.layer.dims()}){how}: "
             f"{r.amap.n_train:,} rows, train R² {r.amap.stats['train_metrics']['r2']:.4f}"
             + (f", λ {r.amap.options['chosen_ridge']:.4g} by {folds}-fold CV" if "chosen_ridge" in r.amap.options else ""))
        echo(f"stitched model vs A's front → map → B's back on a probe: max |Δ| {w.max_abs_diff:.3g} "
             f"({w.relative_diff:.3g} relative to the largest logit {w.max_abs_logit:.3g})")
        echo(f"wrote {w.files.model} (image → {b.name}'s logits), {w.files.backbone.name} + {w.files.head.name} and "
             f"the sidecar {w.files.sidecar.name}")
        if images is not None:
            c = check_on_images(w.files.model, r.side_a, r.side_b, r.amap, open_images(images), count=count)
            echo(f"checked on {c.images} images against the three steps: max logit difference {c.max_abs_diff:.2e} "
                 f"(largest logit {c.max_abs_logit:.2f}), top-1 agreement {100 * c.top1_agreement:.2f}%")


@app.command("stitch-sweep")
def stitch_sweep_cmd(
    a: Annotated[Path, typer.Option("--a", help="whole ONNX model A (sidecar beside it)")],
    b: Annotated[Path, typer.Option("--b", help="whole ONNX classifier B")],
    layers_a: Annotated[str, typer.Option("--layers-a", help="A's tensors, comma-separated")],
    layers_b: Annotated[str, typer.Option("--layers-b", help="B's tensors (cuts of B), comma-separated")],
    store: Annotated[Path, typer.Option("--store", help="feature store holding every layer's fitting rows")],
    images: Annotated[list[Path], typer.Option("--images", help="held-out labelled images (folder, .npz or IDX; repeatable: one pool)")],
    out: Annotated[Path, typer.Option("--out", help="directory for stitch_sweep.json, .csv and .png")],
    split: Annotated[list[str] | None, typer.Option("--split", help="split(s) holding the fitting rows (repeatable) [default: train]")] = None,
    labels_csv: Annotated[Path | None, typer.Option(help="CSV of file,label choosing and labelling the held-out images of a folder")] = None,
    pairing: Annotated[Pairing, typer.Option(help="all: every A layer with every B layer; zip: the i-th with the i-th")] = Pairing.all,
    ridge: Annotated[str, typer.Option(help="ridge λ of every map (a number >= 0) or 'auto' (K-fold CV over images)")] = "0",
    rank: Annotated[int | None, typer.Option(min=1, help="fit the best maps of this rank")] = None,
    folds: Annotated[int, typer.Option("--folds", min=2, help="folds for --ridge auto")] = 5,
    precision: Annotated[PrecisionChoice, typer.Option(help="float32 products summed in float64, or all float64")] = PrecisionChoice.float32,
    device: Annotated[DeviceChoice, typer.Option(help="auto uses the GPU when CuPy sees one")] = DeviceChoice.auto,
    bootstrap: Annotated[int, typer.Option(min=2, help="bootstrap resamples of the held-out images for the 95% intervals")] = 2000,
    seed: Annotated[int, typer.Option(help="bootstrap seed")] = 0,
    batch: Annotated[int, typer.Option(min=1, help="images per forward pass")] = 64,
    in_sample: Annotated[bool, typer.Option("--in-sample", help="allow held-out images that the maps were fitted on")] = False,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="no progress bars")] = False,
    fmt: Annotated[OutputFormat, typer.Option("--format", help="what to print: text, markdown, csv (one row per pair) or json (everything)")] = OutputFormat.text,
) -> None:
    """The stitching penalty (B's accuracy minus the stitched model's, with bootstrap intervals) of every layer pair."""
    with cli_errors():
        lam = parse_ridge(ridge)
        check_output_dir(out, "--out")
        say = echo if fmt is OutputFormat.text else (lambda text: typer.echo(text, err=True))
        imgs = concat_images([open_images(p, labels_csv=labels_csv) for p in images])
        sweep = stitch_sweep(a, b, _names(layers_a), _names(layers_b), FeatureStore.open(store), imgs,
                             splits=split or ["train"], pairing=pairing.value, ridge=lam, rank=rank, folds=folds,  # type: ignore[arg-type]
                             precision=precision.value, device=device.value, bootstrap=bootstrap, seed=seed,
                             batch=batch, in_sample=in_sample, progress=not quiet, echo=say)
        payload = strict_json(sweep.as_dict())
        echo(stitch_sweep_output(sweep, payload, fmt))
        paths = write_stitch_sweep(sweep, payload, out)
        say(f"wrote {', '.join(str(p) for p in paths)}")
