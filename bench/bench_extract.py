"""Extraction throughput against the backbone alone, measured in the same run.

For each image source and number of decoding workers, ``lintwin.extract.extract_features``
runs end to end into a fresh store (decode, preprocess, backbone, checks, zarr writes), and
its images per second are set against the backbone's own rate on the same preprocessed
batches held in memory: the closer the ratio is to 1, the less the backbone waits.

    python bench/bench_extract.py [--fashion N] [--photos DIR] [--imagenet-models DIR] [--workers 1,2,4]

Sources: Fashion-MNIST test images with the bundled residual network (if the Debian package
is installed), and the ImageNet sample photos (JPEG, decoded and resized per image) with
MobileNetV2 and EfficientNet-Lite0 when ``models/imagenet_nets.py`` has exported them.
Results go to ``bench/results/extract_<cores>cpu.{txt,json}``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np

from lintwin.experiments.demo import BUNDLED_MODELS
from lintwin.networks.extract import extract_features
from lintwin.networks.images import DEFAULT_FASHION_MNIST, ImageSet, open_images
from lintwin.networks.onnx_models import Backbone, NetworkSpec

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "bench" / "results"


def backbone_rate(spec: NetworkSpec, images: ImageSet, batch: int, limit: int) -> float:
    """Images per second of the backbone alone, on batches preprocessed beforehand."""
    net = Backbone(spec.backbone_path)
    n = min(limit, len(images))
    x = np.stack([spec.preprocess(images.load(i)) for i in range(n)])
    net(x[:batch])  # warm up
    t0 = time.perf_counter()
    for lo in range(0, n, batch):
        net(x[lo : lo + batch])
    return n / (time.perf_counter() - t0)


def extraction_rate(spec: NetworkSpec, images: ImageSet, batch: int, workers: int, tmp: Path) -> float:
    """Images per second of a whole extraction into a fresh store."""
    store = tmp / f"{spec.name}_{workers}.zarr"
    t0 = time.perf_counter()
    extract_features(spec.backbone_path, images, store, split="val", batch=batch, workers=workers, progress=False)
    seconds = time.perf_counter() - t0
    shutil.rmtree(store)
    return len(images) / seconds


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--fashion", type=int, default=10000, help="Fashion-MNIST test images to extract")
    ap.add_argument("--photos", type=Path, default=ROOT.parent / "shared" / "data" / "imagenet-sample",
                    help="folder of photos with labels.csv")
    ap.add_argument("--photo-limit", type=int, default=1000, help="photos to extract")
    ap.add_argument("--imagenet-models", type=Path, default=ROOT / "models" / "imagenet",
                    help="exported ImageNet networks (models/imagenet_nets.py --out DIR)")
    ap.add_argument("--workers", default=",".join(str(w) for w in sorted({1, 2, min(os.cpu_count() or 1, 8)})),
                    help="comma-separated worker counts to try")
    ap.add_argument("--out", type=Path, default=None, help="results file stem (default bench/results/extract_<N>cpu)")
    args = ap.parse_args()
    workers = [int(w) for w in args.workers.split(",")]
    cases: list[tuple[str, NetworkSpec, ImageSet, int]] = []
    fashion = DEFAULT_FASHION_MNIST / "t10k-images-idx3-ubyte.gz"
    if fashion.is_file():
        imgs = open_images(fashion).subset(range(args.fashion))
        cases.append(("Fashion-MNIST 28x28 (IDX)", NetworkSpec.for_model(BUNDLED_MODELS / "fmnist-resnet.json"),
                      imgs, 500))
    else:
        print(f"skipping Fashion-MNIST: {fashion} not found")
    if (args.photos / "labels.csv").is_file() and (args.imagenet_models / "mobilenet_v2.json").is_file():
        photos = open_images(args.photos, workers=max(workers))
        photos = photos.subset(range(min(args.photo_limit, len(photos))))
        for name in ("mobilenet_v2", "efficientnet_lite0"):
            spec = NetworkSpec.for_model(args.imagenet_models / f"{name}.json")
            cases.append((f"ImageNet sample photos (JPEG), {name}", spec, photos, 32))
    else:
        print(f"skipping ImageNet photos: need {args.photos}/labels.csv and {args.imagenet_models}/mobilenet_v2.json")
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for label, spec, imgs, batch in cases:
            base = backbone_rate(spec, imgs, batch, limit=min(len(imgs), 2000 if batch > 100 else 256))
            for w in workers:
                rate = extraction_rate(spec, imgs, batch, w, Path(tmp))
                rows.append({"source": label, "network": spec.name, "images": len(imgs), "batch": batch,
                             "workers": w, "extract_img_s": rate, "backbone_img_s": base, "ratio": rate / base})
                print(f"{label}: {w} worker(s): {rate:,.0f} img/s extracting, backbone alone {base:,.0f} img/s "
                      f"({rate / base:.2f})", flush=True)
    cpus = os.cpu_count() or 1
    stem = args.out or RESULTS / f"extract_{cpus}cpu"
    stem.parent.mkdir(parents=True, exist_ok=True)
    meta = {"cpus": cpus, "machine": platform.processor() or platform.machine(), "python": platform.python_version(),
            "load_average_1min": os.getloadavg()[0]}
    Path(f"{stem}.json").write_text(json.dumps({"meta": meta, "rows": rows}, indent=2) + "\n")
    lines = [(f"Extraction throughput vs the backbone alone ({cpus} CPU cores, load average "
             f"{meta['load_average_1min']:.1f} at the end; python bench/bench_extract.py)"), "",
             f"{'source':50} {'images':>7} {'workers':>7} {'extract img/s':>14} {'backbone img/s':>15} {'ratio':>6}"]
    lines += [f"{r['source']:50} {r['images']:>7} {r['workers']:>7} {r['extract_img_s']:>14,.0f} "
              f"{r['backbone_img_s']:>15,.0f} {r['ratio']:>6.2f}" for r in rows]
    Path(f"{stem}.txt").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
