"""Every layer of the ImageNet pair (MobileNetV2 ↔ EfficientNet-Lite0): extraction, stitch sweep, layer × layer CKA.

Fitting pool: half of the 1,000 ImageNet sample photos (the even rows of labels.csv) plus the
3,781 CC0 clothing photos (train, validation and test folders); held out: the other 500 ImageNet
photos. Steps (each resumable; run them in order):

    python bench/layers_imagenet.py extract    # layers of both whole models into OUT/layers.zarr
    python bench/layers_imagenet.py extract-sweep  # or only what sweep and similarity read (about 5 GB)
    python bench/layers_imagenet.py extract-bench  # or only what bench/bench_layers.py reads (avg + every 14 x 14)
    python bench/layers_imagenet.py sweep      # stitch-sweep at six matched depths, ridge by CV
    python bench/layers_imagenet.py control    # the same with MobileNetV2's architecture, random weights (seed 0)
    python bench/layers_imagenet.py similarity # layer x layer CKA of all block outputs (avg-pooled)

Models come from ``python models/imagenet_nets.py`` (``models/imagenet``); OUT defaults to
``runs/layers-imagenet``. Every step runs the ``lintwin`` command line and prints each command.
"""

from __future__ import annotations

import csv
import re
from pathlib import Path

from layer_steps import main, run

from lintwin.networks.layers import read_model
from lintwin.networks.onnx_models import ModelSpec

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared" / "data"
MODELS = ROOT / "models" / "imagenet"
A, B = "mobilenet_v2", "efficientnet_lite0"
BLOCKS = {A: r"^/features/features\.(\d+)/", B: r"^/_blocks\.(\d+)/"}
# matched depths for the sweep (grid 56, 28, 14, 14, 7, then the classifier inputs)
SWEEP = {A: ["/features/features.3/Add_output_0", "/features/features.6/Add_output_0",
             "/features/features.10/Add_output_0", "/features/features.13/Add_output_0",
             "/features/features.16/Add_output_0", "/Flatten_output_0"],
         B: ["/_blocks.2/Add_output_0", "/_blocks.4/Add_output_0", "/_blocks.7/Add_output_0",
             "/_blocks.10/Add_output_0", "/_blocks.14/Add_output_0", "/Flatten_output_0"]}


def block_outputs(net: str) -> list[tuple[str, tuple[int, ...]]]:
    """The last cut inside each block of ``net``, with its shape (C, H, W)."""
    path = MODELS / f"{net}.onnx"
    graph = read_model(path, ModelSpec.for_model(path).preprocess)
    last: dict[int, tuple[str, tuple[int, ...]]] = {}
    for name, layer in graph.layers.items():
        m = re.match(BLOCKS[net], name)
        if m and layer.separates:
            last[int(m.group(1))] = (name, layer.shape)
    return [last[k] for k in sorted(last) if not (net == A and k in (0, 18))]  # MobileNetV2's stem and head conv


def halves(out: Path) -> tuple[Path, Path]:
    """CSVs (paths relative to the shared data folder) of the fitting pool and of the held-out photos.

    Fitting: the even rows of the ImageNet sample's labels.csv and every clothing photo (labelled by
    its class folder; the labels are not ImageNet's and are not used). Held out: the odd rows.
    """
    rows = list(csv.DictReader((SHARED / "imagenet-sample" / "labels.csv").open()))
    clothing = SHARED / "clothing-small"
    classes = sorted(p.name for p in (clothing / "train").iterdir() if p.is_dir())
    photos = sorted(p.relative_to(SHARED) for part in ("train", "validation", "test")
                    for p in (clothing / part).rglob("*") if p.is_file())
    fit = [[f"imagenet-sample/{r['file']}", r["class_index"]] for r in rows[0::2]]
    fit += [[str(p), classes.index(p.parts[2])] for p in photos]
    held = [[f"imagenet-sample/{r['file']}", r["class_index"]] for r in rows[1::2]]
    paths = (out / "fit_pool.csv", out / "held_out.csv")
    for path, part in zip(paths, (fit, held)):
        with path.open("w", newline="") as fh:
            w = csv.writer(fh)
            w.writerow(["file", "label"])
            w.writerows(part)
    return paths


def extract(out: Path, *, every_14: bool = True, sweep_grids: bool = True) -> None:
    """Every block output averaged over positions; per position the sweep's (``sweep_grids``) and every 14 x 14 one (``every_14``)."""
    fit, _ = halves(out)
    store = out / "layers.zarr"
    for net in (A, B):
        model = MODELS / f"{net}.onnx"
        blocks = block_outputs(net)
        by_grid: dict[tuple[int, ...], list[str]] = {}
        for name, shape in blocks:
            if (sweep_grids and name in SWEEP[net]) or (every_14 and shape[1] == 14):  # every 14 x 14 one is for bench_layers.py
                by_grid.setdefault(shape[1:], []).append(name)
        common = ["--store", store, "--labels-csv", fit, "--workers", 1, "--batch", 32, "-q"]
        run("extract", model, SHARED, *common, "--split", "avg", "--pool", "avg",
            "--layers", ",".join([n for n, _ in blocks] + ["/Flatten_output_0"]))
        for grid, names in sorted(by_grid.items(), reverse=True):
            run("extract", model, SHARED, *common, "--split", f"p{grid[0]}", "--pool", "positions",
                "--layers", ",".join(names))


def sweep(out: Path, model_a: Path = MODELS / f"{A}.onnx", folder: str = "sweep") -> None:
    _, held = halves(out)
    run("stitch-sweep", "--a", model_a, "--b", MODELS / f"{B}.onnx", "--layers-a", ",".join(SWEEP[A]),
        "--layers-b", ",".join(SWEEP[B]), "--store", out / "layers.zarr", "--split", "p56", "--split", "p28",
        "--split", "p14", "--split", "p7", "--split", "avg", "--pairing", "zip", "--ridge", "auto",
        "--images", SHARED, "--labels-csv", held, "--out", out / folder, "-q")


def control(out: Path) -> None:
    """The random-feature control: A's architecture with random weights, its sweep layers stored, stitched into B."""
    fit, _ = halves(out)
    random = out / f"{A}-random.onnx"
    if not random.is_file():
        run("randomize", MODELS / f"{A}.onnx", "-o", random, "--seed", 0)
    shapes = dict(block_outputs(A))
    by_grid: dict[int, list[str]] = {}
    for name in SWEEP[A][:-1]:  # the last is the classifier input, a vector
        by_grid.setdefault(shapes[name][1], []).append(name)
    common = ["--store", out / "layers.zarr", "--labels-csv", fit, "--workers", 1, "--batch", 32, "-q"]
    run("extract", random, SHARED, *common, "--split", "avg", "--pool", "avg", "--layers", SWEEP[A][-1])
    for grid, names in sorted(by_grid.items(), reverse=True):
        run("extract", random, SHARED, *common, "--split", f"p{grid}", "--pool", "positions", "--layers", ",".join(names))
    sweep(out, random, "control-random")


def similarity(out: Path) -> None:
    blocks_a, blocks_b = ([n for n, _ in block_outputs(net)] + ["/Flatten_output_0"] for net in (A, B))
    run("layer-similarity", out / "layers.zarr", "--a", A, "--b", B, "--split", "avg", "--layers-a",
        ",".join(blocks_a), "--layers-b", ",".join(blocks_b), "--out", out / "similarity", "-q")


if __name__ == "__main__":
    main(__doc__, {"extract": extract, "extract-sweep": lambda out: extract(out, every_14=False),
                   "extract-bench": lambda out: extract(out, sweep_grids=False), "sweep": sweep,
                   "control": control, "similarity": similarity}, ROOT / "runs" / "layers-imagenet")
