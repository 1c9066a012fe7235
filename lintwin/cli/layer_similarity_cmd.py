"""``lintwin layer-similarity``: every stored layer of A against every stored layer of B, from one pass."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from ..core.files import strict_json
from ..core.outputs import check_output_dir
from ..core.params import parse_bytes
from ..experiments.layer_similarity import MEASURES, layer_similarity
from ..experiments.layer_similarity_report import layer_similarity_output, write_layer_similarity
from ..experiments.tables import OutputFormat
from ..storage.store import FeatureStore
from ._common import DeviceChoice, PrecisionChoice, app, cli_errors, echo


def _names(value: str | None) -> list[str] | None:
    return None if value is None else [t for t in value.split(",") if t]


@app.command("layer-similarity")
def layer_similarity_cmd(
    store: Annotated[Path, typer.Argument(help="feature store holding layers of both networks (extract --layers)")],
    a: Annotated[str, typer.Option("--a", help="network A (the name its layers were extracted under)")],
    b: Annotated[str, typer.Option("--b", help="network B (the same as A for one network's self-similarity)")],
    out: Annotated[Path, typer.Option("--out", help="directory for layer_similarity.json and the heatmap PNGs")],
    split: Annotated[list[str] | None, typer.Option("--split", help="split holding layers (repeatable: per-position "
                                                                     "rows of each grid live in their own split) "
                                                                     "[default: train]")] = None,
    layers_a: Annotated[str | None, typer.Option("--layers-a", help="A's layers to compare, comma-separated tensor "
                                                                    "names, in this order (default: every stored one)")] = None,
    layers_b: Annotated[str | None, typer.Option("--layers-b", help="B's layers, likewise")] = None,
    measures: Annotated[str, typer.Option("--measures", help=f"comma-separated, from {', '.join(MEASURES)}")] = "cka",
    null: Annotated[int, typer.Option("--null", min=0, help="permutation-null repetitions for every A x B cell "
                                                            "(0: none, else >= 2; one pass each)")] = 0,
    seed: Annotated[int, typer.Option(help="seed of the permutation null")] = 0,
    precision: Annotated[PrecisionChoice, typer.Option(help="float32 products summed in float64, or all float64")] = PrecisionChoice.float64,
    device: Annotated[DeviceChoice, typer.Option(help="auto uses the GPU when CuPy sees one")] = DeviceChoice.auto,
    max_memory: Annotated[str | None, typer.Option("--max-memory", help="bound on the moments of one pass, e.g. 8G; "
                                                                        "beyond it, passes over groups of layers "
                                                                        "(default: half the memory available)")] = None,
    block_images: Annotated[int | None, typer.Option("--block-images", min=1, help="samples (images x views) per "
                                                                                   "streamed block")] = None,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="no progress bars")] = False,
    fmt: Annotated[OutputFormat, typer.Option("--format", help="what to print: text or markdown (each A layer's most "
                                                               "alike B layer), csv (every cell) or json (everything)")] = OutputFormat.text,
) -> None:
    """Similarity of every stored layer of A with every stored layer of B (and each with itself), exact, one pass."""
    with cli_errors():
        budget = parse_bytes(max_memory) if max_memory is not None else None
        check_output_dir(out, "--out")
        say = echo if fmt is OutputFormat.text else (lambda text: typer.echo(text, err=True))
        result = layer_similarity(FeatureStore.open(store), a, b, splits=split or ["train"], layers_a=_names(layers_a),
                                  layers_b=_names(layers_b), measures=_names(measures) or [], null=null, seed=seed,
                                  precision=precision.value, device=device.value, max_memory=budget,
                                  block_samples=block_images, progress=not quiet, echo=say)
        payload = strict_json(result.as_dict())
        echo(layer_similarity_output(result, payload, fmt))
        for note in result.notes:
            typer.echo(f"Note: {note}", err=True)
        paths = write_layer_similarity(result, payload, out)
        say(f"wrote {', '.join(str(p) for p in paths)}")
