"""``lintwin demo``: the whole experiment, offline, on the bundled Fashion-MNIST networks."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from ..core.files import atomic_write
from ..errors import LintwinError
from ..networks.extract import extract_features
from ..networks.images import DEFAULT_FASHION_MNIST, FASHION_MNIST_INSTALL, open_images
from ..networks.onnx_models import Head, NetworkSpec
from ..solvers import AdamOptions
from ..storage.store import FeatureStore
from .compare import CompareResult, compare
from .report import plot_regions

__all__ = ["BUNDLED_MODELS", "DemoPaths", "run_demo", "write_compare_outputs"]

BUNDLED_MODELS = Path(__file__).resolve().parents[2] / "models" / "fashion"
NETWORKS = ("fmnist-resnet", "fmnist-inception")


@dataclass
class DemoPaths:
    store: Path
    json: Path
    png: Path


def write_compare_outputs(result: CompareResult, out: Path, title: str) -> tuple[Path, Path]:
    """Write the comparison as JSON and the Fig. 5 regions as PNG under ``out``."""
    out.mkdir(parents=True, exist_ok=True)
    j = out / f"compare_{result.a}_{result.b}.json"
    text = json.dumps(result.as_dict(), indent=2) + "\n"
    atomic_write(j, lambda fh: fh.write(text.encode()))
    png = plot_regions(result.regions, out / f"fig5_{result.a}_{result.b}.png", title=title)
    return j, png


def fashion_mnist_file(data: Path, part: str) -> Path:
    """The IDX images file ``part`` (train or t10k) of Fashion-MNIST under ``data``, gzipped or not."""
    for name in (f"{part}-images-idx3-ubyte.gz", f"{part}-images-idx3-ubyte"):
        if (data / name).is_file():
            return data / name
    raise LintwinError(f"Fashion-MNIST not found under {data} (no {part}-images-idx3-ubyte[.gz]); install the "
                       f"Debian package with '{FASHION_MNIST_INSTALL}', or pass --data DIR")


def run_demo(*, data: Path = DEFAULT_FASHION_MNIST, models: Path = BUNDLED_MODELS, out: Path = Path("runs/demo"),
             method: str = "lstsq", adam: AdamOptions | None = None, train_limit: int | None = None,
             workers: int | None = None, precision: str = "float32", progress: bool = True,
             echo=print) -> tuple[CompareResult, DemoPaths]:
    """Extract both bundled networks on Fashion-MNIST train/test, fit both maps, score, report."""
    train_file, test_file = (fashion_mnist_file(data, part) for part in ("train", "t10k"))
    specs = [NetworkSpec.for_model(models / f"{n}.json") for n in NETWORKS]
    train = open_images(train_file)
    if train_limit:
        train = train.subset(range(min(train_limit, len(train))))
    test = open_images(test_file)
    store_path = out / "features.zarr"
    for spec in specs:
        for split, images in (("train", train), ("val", test)):
            s = extract_features(spec.backbone_path, images, store_path, split=split, name=spec.name,
                                 batch=500, workers=workers, progress=progress)
            if s.resumed_from:
                echo(f"resumed {spec.name} {split} at row {s.resumed_from}")
    store = FeatureStore.open(store_path)
    heads = [Head(spec.head_path) for spec in specs]
    result, _ = compare(store, specs[0].name, specs[1].name, heads[0], heads[1], method=method, adam=adam,
                        precision=precision,
                        progress=progress)
    j, png = write_compare_outputs(result, out, "Fashion-MNIST: residual vs Inception-style network")
    return result, DemoPaths(store_path, j, png)
