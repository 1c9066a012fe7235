"""Layer commands: list the tensors of an ONNX model that can serve as layers, split a model at one, randomize it."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from ..core.outputs import check_output_dir
from ..networks.cut import split_model
from ..networks.layers import read_model
from ..networks.onnx_models import ModelSpec, sidecar_path
from ..networks.random_weights import randomize_model
from ._common import app, cli_errors, echo


@app.command()
def layers(
    model: Annotated[Path, typer.Argument(help="ONNX model of images (a whole classifier, or a backbone)")],
    as_json: Annotated[bool, typer.Option("--json", help="print a JSON list of the layers (name, op, shape, "
                                                          "values, kind, separates, classifier_input)")] = False,
    sidecar: Annotated[Path | None, typer.Option(help="sidecar giving the input size where the model leaves it "
                                                      "open (default: MODEL.json beside the model, if any)")] = None,
) -> None:
    """List a model's layers (name, op, shape, values per image), marking the cuts and the classifier input."""
    with cli_errors():
        pre = None
        if sidecar is not None or sidecar_path(model).is_file():
            pre = ModelSpec.for_model(model, sidecar).preprocess
        graph = read_model(model, pre)
        rows = list(graph.layers.values())
        if as_json:
            echo(json.dumps([la.as_dict() for la in rows], indent=2))
            return
        probed = sum(la.shape_from == "probe" for la in rows)
        how = "shape inference" + (f"; {probed} of them by a probe run on a blank image" if probed else "")
        echo(f"{model.name}: input {graph.input_name} N x {' x '.join(map(str, graph.input_shape))}, "
             f"{len(rows)} layers (shapes by {how}); cut = every path from the image passes through it")
        width = max([len(la.name) for la in rows] + [4])
        op_w = max([len(la.op) for la in rows] + [2])
        shape_w = max([len(la.dims()) for la in rows] + [5])
        echo(f"{'name':<{width}}  {'op':<{op_w}}  {'shape':<{shape_w}}  {'values':>9}  cut")
        for la in rows:
            mark = "  <- classifier input" if la.classifier_input else ""
            echo(f"{la.name:<{width}}  {la.op:<{op_w}}  {la.dims():<{shape_w}}  {la.values:>9,}  "
                 f"{'yes' if la.separates else 'no':<3}{mark}".rstrip())


@app.command()
def split(
    model: Annotated[Path, typer.Argument(help="whole ONNX classifier (image -> logits)")],
    out: Annotated[Path, typer.Option("--out", help="directory for NAME.backbone.onnx, NAME.head.onnx, NAME.json")],
    name: Annotated[str, typer.Option("--name", help="network name for the parts and the sidecar")],
    at: Annotated[str | None, typer.Option("--at", help="tensor to cut at (default: the classifier's input, "
                                                        "found automatically)")] = None,
    preprocess: Annotated[Path | None, typer.Option("--preprocess", help="sidecar JSON with the model's "
                                                                         "preprocessing (default: MODEL.json "
                                                                         "beside the model)")] = None,
) -> None:
    """Split a whole classifier into backbone + head + sidecar at a tensor, checked: the cut must separate the graph
    and head(backbone(x)) must equal the model."""
    with cli_errors():
        check_output_dir(out, "--out")
        r = split_model(model, out, name, at=at, preprocess=preprocess)
        flat = "" if r.cut.kind == "vector" else f", flattened to N x {r.feature_dim}"
        echo(f"cut {model.name} at {r.cut.name} ({r.cut.op}, {r.cut.dims()}{flat})")
        echo(f"head(backbone(x)) vs {model.name} on a probe: max |Δ| {r.max_abs_diff:.3g} "
             f"({r.relative_diff:.3g} relative to max |output| {r.max_abs_output:.3g})")
        echo(f"wrote {r.backbone}, {r.head} and {r.sidecar}")


@app.command()
def randomize(
    model: Annotated[Path, typer.Argument(help="ONNX model of images (sidecar NAME.json beside it)")],
    output: Annotated[Path, typer.Option("--output", "-o", help="the copy with random weights, NAME.onnx (its sidecar "
                                                                  "NAME.json is written beside it)")],
    seed: Annotated[int, typer.Option(help="seed of the random weights")] = 0,
) -> None:
    """Write the same architecture with random weights (He-normal Conv/Gemm/MatMul weights, zero biases): the
    random-feature control of a stitching penalty."""
    with cli_errors():
        r = randomize_model(model, output, seed=seed)
        echo(f"wrote {r.model} ({r.weights} weight tensors redrawn, {r.biases} biases zeroed, seed {seed}) and "
             f"{r.sidecar}")

