"""Table 1 for MobileNetV2 ↔ EfficientNet-Lite0 as the unlabelled fitting pool grows.

Evaluation split: the 500 ImageNet sample photos with an even index (labels used only here).
Fitting pools (labels never used), each with seeded augmented views:
  1. the 500 other ImageNet photos (odd index), ``--views`` views each;
  2. pool 1 plus the 3,781 CC0 clothing photos of ../shared/data/clothing-small
     (train, validation and test folders), ``--clothing-views`` views each.
Each pool is fitted with plain least squares and with ridge chosen by 5-fold CV over images.

    python bench/pool_growth.py [--models models/imagenet] [--out runs/pool]
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from lintwin import FeatureStore
from lintwin.experiments.compare import compare
from lintwin.experiments.compare_tables import compare_text
from lintwin.networks.extract import extract_features
from lintwin.networks.images import concat_images, open_images
from lintwin.networks.onnx_models import Head, NetworkSpec

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared" / "data"
NETS = ("mobilenet_v2", "efficientnet_lite0")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--models", type=Path, default=ROOT / "models" / "imagenet")
    ap.add_argument("--views", type=int, default=8)
    ap.add_argument("--clothing-views", type=int, default=2)
    ap.add_argument("--out", type=Path, default=ROOT / "runs" / "pool")
    args = ap.parse_args()
    photos = open_images(SHARED / "imagenet-sample")
    val = photos.subset(range(0, len(photos), 2))
    odd = photos.subset(range(1, len(photos), 2))
    clothing = concat_images([open_images(SHARED / "clothing-small" / part) for part in ("train", "validation", "test")])
    specs = [NetworkSpec.for_model(args.models / f"{n}.json") for n in NETS]
    path = args.out / "features.zarr"
    for spec in specs:
        extract_features(spec.backbone_path, val, path, split="val", batch=32)
        extract_features(spec.backbone_path, odd, path, split="pool_imagenet", augment=True, views=args.views,
                         seed=0, batch=32)
        extract_features(spec.backbone_path, clothing, path, split="pool_clothing", augment=True,
                         views=args.clothing_views, seed=1, batch=32)
    store = FeatureStore.open(path)
    _join_pools(store, ["pool_imagenet", "pool_clothing"], "pool_both")
    heads = [Head(s.head_path) for s in specs]
    summary = {}
    for pool in ("pool_imagenet", "pool_both"):
        for ridge in (0.0, "auto"):
            result, maps = compare(store, NETS[0], NETS[1], heads[0], heads[1], ridge=ridge, fit_split=pool,
                                   eval_split="val")
            label = f"{pool}, ridge {ridge}"
            print(f"\n== {label}: {store.rows(pool)} fitting rows")
            print(compare_text(result))
            summary[label] = {"rows": store.rows(pool), "table": result.table,
                              "chosen_ridge": [m.options.get("chosen_ridge") for m in maps]}
    (args.out / "pool_growth.json").write_text(json.dumps(summary, indent=2) + "\n")


def _join_pools(store: FeatureStore, parts: list[str], name: str) -> None:
    """Write the concatenation of pool splits as one split (rows, ids; no labels)."""
    import numpy as np

    s = FeatureStore.open(store.path, mode="r+")
    rows = sum(s.rows(p) for p in parts)
    for net in NETS:
        info = s.info(parts[0], net)
        arr = s.open_features_for_write(name, net, rows=rows, dim=info["dim"], source="+".join(parts),
                                        model_sha256=info.get("model_sha256"))
        if FeatureStore.rows_written(arr) == rows:
            continue
        arr = s.open_features_for_write(name, net, rows=rows, dim=info["dim"], source="+".join(parts),
                                        model_sha256=info.get("model_sha256"), overwrite=True)
        FeatureStore.write_rows(arr, 0, np.concatenate([s.features(p, net)[:] for p in parts]))
    s.set_ids(name, np.concatenate([s.ids(p) for p in parts]))


if __name__ == "__main__":
    main()
