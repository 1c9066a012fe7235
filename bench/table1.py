"""The paper's Table 1 for lintwin's two real network pairs, closed form and Adam.

- Fashion-MNIST: fmnist-resnet vs fmnist-inception (bundled), maps fitted on the 60,000
  training images, scored on the 10,000 test images.
- ImageNet: MobileNetV2 vs EfficientNet-Lite0 (export them first with models/imagenet_nets.py)
  on the 1,000 photos of ../shared/data/imagenet-sample: the 500 photos with an odd index
  form the fitting pool (with ``--views`` seeded augmented views each; labels unused), the
  500 with an even index are the evaluation split. Each photo is of a different class, so
  no evaluation class is seen while fitting.

    python bench/table1.py [--pair fashion|imagenet|both] [--adam-iterations 20000] [--out runs/table1]
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from lintwin import AdamOptions, FeatureStore
from lintwin.experiments.compare import compare
from lintwin.experiments.compare_tables import compare_text
from lintwin.experiments.demo import BUNDLED_MODELS, write_compare_outputs
from lintwin.networks.extract import extract_features
from lintwin.networks.images import DEFAULT_FASHION_MNIST, open_images
from lintwin.networks.onnx_models import Head, NetworkSpec

ROOT = Path(__file__).resolve().parents[1]
PHOTOS = ROOT.parent / "shared" / "data" / "imagenet-sample"


def build_fashion(out: Path) -> tuple[FeatureStore, list[NetworkSpec]]:
    specs = [NetworkSpec.for_model(BUNDLED_MODELS / f"{n}.json") for n in ("fmnist-resnet", "fmnist-inception")]
    train = open_images(DEFAULT_FASHION_MNIST / "train-images-idx3-ubyte.gz")
    test = open_images(DEFAULT_FASHION_MNIST / "t10k-images-idx3-ubyte.gz")
    path = out / "fashion.zarr"
    for spec in specs:
        extract_features(spec.backbone_path, train, path, split="train", batch=500)
        extract_features(spec.backbone_path, test, path, split="val", batch=500)
    return FeatureStore.open(path), specs


def build_imagenet(out: Path, models: Path, views: int) -> tuple[FeatureStore, list[NetworkSpec]]:
    specs = [NetworkSpec.for_model(models / f"{n}.json") for n in ("mobilenet_v2", "efficientnet_lite0")]
    photos = open_images(PHOTOS)
    val = photos.subset(range(0, len(photos), 2))
    pool = photos.subset(range(1, len(photos), 2))
    path = out / f"imagenet_v{views}.zarr"
    for spec in specs:
        extract_features(spec.backbone_path, val, path, split="val", batch=32)
        extract_features(spec.backbone_path, pool, path, split="train", augment=True, views=views, seed=0, batch=32)
    return FeatureStore.open(path), specs


def run(store: FeatureStore, specs: list[NetworkSpec], out: Path, label: str, adam_iterations: int,
        ridge: float, methods: tuple[str, ...] = ("lstsq", "adam")) -> dict:
    heads = [Head(s.head_path) for s in specs]
    results = {}
    for method in methods:
        t0 = time.perf_counter()
        adam = AdamOptions(iterations=adam_iterations)
        result, _ = compare(store, specs[0].name, specs[1].name, heads[0], heads[1], method=method, ridge=ridge,
                            adam=adam)
        seconds = time.perf_counter() - t0
        print(f"\n== {label}, {method}" + (f" ({adam_iterations} iterations, paper settings otherwise)"
                                           if method == "adam" else f" (ridge {ridge})") + f": {seconds:.0f} s")
        print(compare_text(result))
        write_compare_outputs(result, out / f"{label}_{method}", f"{label}: {method}")
        results[method] = {"seconds": seconds, **result.as_dict()}
    return results


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--pair", choices=["fashion", "imagenet", "both"], default="both")
    ap.add_argument("--adam-iterations", type=int, default=20000)
    ap.add_argument("--views", type=int, default=8, help="augmented views per ImageNet fitting photo")
    ap.add_argument("--imagenet-ridge", type=float, default=0.0)
    ap.add_argument("--methods", nargs="+", choices=["lstsq", "adam"], default=["lstsq", "adam"])
    ap.add_argument("--models", type=Path, default=ROOT / "models" / "imagenet")
    ap.add_argument("--out", type=Path, default=ROOT / "runs" / "table1")
    args = ap.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    summary = {}
    if args.pair in ("fashion", "both"):
        store, specs = build_fashion(args.out)
        summary["fashion"] = run(store, specs, args.out, "fashion", args.adam_iterations, 0.0, tuple(args.methods))
    if args.pair in ("imagenet", "both"):
        store, specs = build_imagenet(args.out, args.models, args.views)
        summary["imagenet"] = run(store, specs, args.out, "imagenet", args.adam_iterations, args.imagenet_ridge,
                                  tuple(args.methods))
    (args.out / f"table1_{args.pair}.json").write_text(json.dumps(summary, indent=2, default=str) + "\n")


if __name__ == "__main__":
    main()
