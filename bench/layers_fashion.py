"""Every layer of the bundled Fashion-MNIST networks: layer x layer CKA per pair, a stitch sweep with its controls.

    python bench/layers_fashion.py extract     # layers into OUT/layers.zarr (test set; the first 10,000 train images)
    python bench/layers_fashion.py similarity  # layer x layer CKA: resnet vs inception, vs resnet-s1, vs vit
    python bench/layers_fashion.py sweep       # resnet → inception at matched depths, and the two controls

The heatmaps use the 10,000 test images (the residual network against the Inception-style one and
against its seed-1 twin, per position, compared on the coarser grid, and averaged over positions
with a 19-repetition permutation null; the vision transformer's tokens against the residual
network's maps after averaging over positions).
The sweep fits every map on the first 10,000 training images (per position; ridge λ by 5-fold CV
over images) and scores on the 10,000 test images. Controls: the residual network's block
outputs stitched into its own next block (within-network), and the same architecture with random
weights (``lintwin randomize``, seed 0) stitched into the Inception-style network (random features).
OUT defaults to ``runs/layers-fashion``. Every step runs the ``lintwin`` command line and prints
each command.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from layer_steps import main, run

from lintwin.networks.images import read_idx

ROOT = Path(__file__).resolve().parents[1]
MODELS = ROOT / "models" / "fashion"
DATA = Path("/usr/share/datasets/fashion-mnist")
TEST, TRAIN = DATA / "t10k-images-idx3-ubyte.gz", DATA / "train-images-idx3-ubyte.gz"
FIT_IMAGES = 10_000

# block outputs (cuts) of each network, by grid
RESNET = {28: ["/body/body.0/body.0.2/Relu_output_0", "/body/body.1/relu/Relu_output_0"],
          14: ["/body/body.2/relu/Relu_output_0", "/body/body.3/relu/Relu_output_0"],
          7: ["/body/body.4/relu/Relu_output_0", "/body/body.5/relu/Relu_output_0",
              "/body/body.6/body.6.2/Relu_output_0"]}
INCEPTION = {28: ["/body/body.0/body.0.2/Relu_output_0"],
             14: ["/body/body.1/MaxPool_output_0", "/body/body.2/Concat_output_0", "/body/body.3/Concat_output_0"],
             7: ["/body/body.4/MaxPool_output_0", "/body/body.5/Concat_output_0"]}
VIT = ["/Transpose_output_0"] + [f"/blocks/blocks.{k}/Add_1_output_0" for k in range(4)]
NETS = {"fmnist-resnet": RESNET, "fmnist-resnet-s1": RESNET, "fmnist-inception": INCEPTION}
# the sweep: matched depths (grid of A → grid of B)
SWEEP_A = ["/body/body.2/relu/Relu_output_0", "/body/body.3/relu/Relu_output_0", "/body/body.4/relu/Relu_output_0",
           "/body/body.5/relu/Relu_output_0", "features"]
SWEEP_B = ["/body/body.2/Concat_output_0", "/body/body.3/Concat_output_0", "/body/body.4/MaxPool_output_0",
           "/body/body.5/Concat_output_0", "features"]
# within-network control: each block output of the residual network into its next one
NEXT_A = ["/body/body.2/relu/Relu_output_0", "/body/body.3/relu/Relu_output_0", "/body/body.4/relu/Relu_output_0",
          "/body/body.5/relu/Relu_output_0"]
NEXT_B = ["/body/body.3/relu/Relu_output_0", "/body/body.4/relu/Relu_output_0", "/body/body.5/relu/Relu_output_0",
          "/body/body.6/body.6.2/Relu_output_0"]


def extract(out: Path) -> None:
    store = out / "layers.zarr"
    fit = out / "fit.npz"
    if not fit.is_file():  # the first 10,000 training images and their labels, as an .npz image source
        np.savez(fit, images=read_idx(TRAIN)[:FIT_IMAGES],
                 labels=read_idx(DATA / "train-labels-idx1-ubyte.gz")[:FIT_IMAGES])
    random = out / "fmnist-resnet-random.onnx"
    if not random.is_file():
        run("randomize", MODELS / "fmnist-resnet.onnx", "-o", random, "--seed", 0)
    models = {**{n: MODELS / f"{n}.onnx" for n in NETS}, "fmnist-resnet-random": random}
    for name, model in models.items():
        grids = RESNET if "resnet" in name else INCEPTION
        every = [t for ts in grids.values() for t in ts]
        for images, prefix in ((TEST, "test"), (fit, "fit")):
            if prefix == "fit" and name == "fmnist-resnet-s1":
                continue  # not in the sweep
            if prefix == "test" and name == "fmnist-resnet-random":
                continue  # not in the heatmaps
            run("extract", model, images, "--store", store, "--split", f"{prefix}-avg", "--pool", "avg",
                "--layers", ",".join([*every, "features"]), "--workers", 1, "-q")
            for grid, tensors in grids.items():
                if prefix == "fit" and grid == 28:
                    continue  # the sweep starts at 14 x 14
                run("extract", model, images, "--store", store, "--split", f"{prefix}-p{grid}", "--pool", "positions",
                    "--layers", ",".join(tensors), "--workers", 1, "-q")
    run("extract", MODELS / "fmnist-vit.onnx", TEST, "--store", store, "--split", "test-avg", "--pool", "avg",
        "--layers", ",".join([*VIT, "features"]), "--workers", 1, "-q")


def similarity(out: Path) -> None:
    store = out / "layers.zarr"
    per_position = [x for g in (28, 14, 7) for x in ("--split", f"test-p{g}")]
    run("layer-similarity", store, "--a", "fmnist-resnet", "--b", "fmnist-inception", *per_position,
        "--out", out / "similarity-resnet-inception", "-q")
    run("layer-similarity", store, "--a", "fmnist-resnet", "--b", "fmnist-inception", "--split", "test-avg",
        "--null", 19, "--out", out / "similarity-resnet-inception-pooled", "-q")
    run("layer-similarity", store, "--a", "fmnist-resnet", "--b", "fmnist-resnet-s1", *per_position,
        "--out", out / "similarity-resnet-seeds", "-q")
    run("layer-similarity", store, "--a", "fmnist-resnet", "--b", "fmnist-resnet-s1", "--split", "test-avg",
        "--null", 19, "--out", out / "similarity-resnet-seeds-pooled", "-q")
    run("layer-similarity", store, "--a", "fmnist-resnet", "--b", "fmnist-vit", "--split", "test-avg",
        "--out", out / "similarity-resnet-vit", "-q")


def sweep(out: Path) -> None:
    store = out / "layers.zarr"
    splits = [x for g in (14, 7) for x in ("--split", f"fit-p{g}")] + ["--split", "fit-avg"]
    common = ["--store", store, *splits, "--images", TEST, "--ridge", "auto", "--pairing", "zip", "-q"]
    resnet, inception = MODELS / "fmnist-resnet.onnx", MODELS / "fmnist-inception.onnx"
    run("stitch-sweep", "--a", resnet, "--b", inception, "--layers-a", ",".join(SWEEP_A), "--layers-b",
        ",".join(SWEEP_B), *common, "--out", out / "sweep-resnet-inception")
    run("stitch-sweep", "--a", resnet, "--b", resnet, "--layers-a", ",".join(NEXT_A), "--layers-b", ",".join(NEXT_B),
        *common, "--out", out / "control-within-resnet")
    run("stitch-sweep", "--a", out / "fmnist-resnet-random.onnx", "--b", inception, "--layers-a", ",".join(SWEEP_A),
        "--layers-b", ",".join(SWEEP_B), *common, "--out", out / "control-random-resnet")


if __name__ == "__main__":
    main(__doc__, {"extract": extract, "similarity": similarity, "sweep": sweep}, ROOT / "runs" / "layers-fashion")
