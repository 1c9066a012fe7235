"""The block pipeline on the CPU, each ratio against its competitor or ceiling measured in the same run.

- **accumulate**: ``lintwin.accumulate_store`` from a zarr store (reading and decoding included)
  against the in-memory ``ssyrk`` of the same joined rows [A B] (data loaded beforehand, not timed),
  at each ``--rows`` (1536 ↔ 2048 by default). Goal: at least 80 % of the ``ssyrk`` rate.
- **solve**: ``lintwin solve --both`` as a whole process against its floor and two scikit-learn
  Ridge fits (the definition in ``bench/solve_job.py``). Goals: within 1.5x of the floor, at least
  3x faster than Ridge.
- **extract**: extraction of the ImageNet sample photos against the backbone alone on the same
  preprocessed images (``bench/bench_extract.py``'s two functions). Goal: at least 90 %.
- **memory**: peak RSS of the accumulation at each ``--rows`` (flat in the row count; goal < 1 GB).

Each lintwin measurement runs in its own process; ``--code DIR`` (repeatable, ``LABEL=DIR``) runs
them with another lintwin tree first on the path -- the code before a change, say -- alternating
with this tree in the same run, so before and after see the same machine.

    python bench/bench_pipeline.py --rows 100000 200000 --code before=/tmp/lintwin-before
    python bench/bench_pipeline.py --quick        # tiny sizes, every part (the test suite runs this)
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import sys
import tempfile
import time
from pathlib import Path

import solve_job

ROOT = Path(__file__).resolve().parents[1]

ACCUMULATE = """
import sys, time
import lintwin
s = lintwin.FeatureStore.open(sys.argv[1])
t = time.perf_counter()
m = lintwin.accumulate_store(s, "A", "B", device="cpu", progress=False)
m.comoment
print("__SECONDS__", time.perf_counter() - t)
"""

SYRK = solve_job.LOAD + """
from scipy.linalg import blas
z = np.empty((a.shape[0], a.shape[1] + b.shape[1]), np.float32)
z[:, : a.shape[1]], z[:, a.shape[1]:] = a, b
c = np.zeros((z.shape[1], z.shape[1]), np.float32, order="F")
blas.ssyrk(1.0, z[:256].T, beta=0.0, c=c, trans=0, overwrite_c=1)
t = time.perf_counter()
blas.ssyrk(1.0, z.T, beta=0.0, c=c, trans=0, overwrite_c=1)
print("__SECONDS__", time.perf_counter() - t)
"""


def synthetic(work: Path, rows: int, val: int, dims: list[int]) -> Path:
    from lintwin.storage.synthetic import write_synthetic_store

    path = work / f"s_{rows}_{dims[0]}_{dims[1]}.zarr"
    if not path.exists():
        write_synthetic_store(path, train=rows, val=val, dim_a=dims[0], dim_b=dims[1])
    return path


def accumulate(store: Path, rows: int, d: int, codes: dict[str, Path | None], repeats: int) -> dict:
    """Best-of seconds of the in-memory ssyrk and of each code's accumulation, alternating; ratios and peak RSS."""
    runs: dict[str, list[tuple[float, float]]] = {"ssyrk in memory": []} | {f"lintwin ({k})": [] for k in codes}
    for _ in range(repeats):
        _, rss, out = solve_job.run_child([sys.executable, "-c", SYRK, str(store)])
        runs["ssyrk in memory"].append((solve_job.timed(out), rss))
        for label, code in codes.items():
            _, rss, out = solve_job.run_child([sys.executable, "-c", ACCUMULATE, str(store)], code)
            runs[f"lintwin ({label})"].append((solve_job.timed(out), rss))
        print("  ", {k: round(v[-1][0], 2) for k, v in runs.items()}, flush=True)
    best = {k: min(v) for k, v in runs.items()}
    ceiling = best["ssyrk in memory"][0]
    flops = rows * d * (d + 1)  # a SYRK's multiply-adds, twice
    return {k: {"seconds": s, "gflops": flops / s / 1e9, "of_ssyrk": ceiling / s,
                "peak_rss_mb": max(r for _, r in runs[k])} for k, (s, _) in best.items()}


def extraction(photos: Path, models: Path, limit: int, workers: int) -> list[dict]:
    from bench_extract import backbone_rate, extraction_rate

    from lintwin.networks.images import open_images
    from lintwin.networks.onnx_models import NetworkSpec

    images = open_images(photos, workers=workers)
    images = images.subset(range(min(limit, len(images))))
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for name in ("mobilenet_v2", "efficientnet_lite0"):
            spec = NetworkSpec.for_model(models / f"{name}.json")
            base = backbone_rate(spec, images, 32, limit=min(len(images), 256))
            rate = extraction_rate(spec, images, 32, workers, Path(tmp))
            rows.append({"network": name, "images": len(images), "workers": workers, "extract_img_s": rate,
                         "backbone_img_s": base, "ratio": rate / base})
            print("  ", rows[-1], flush=True)
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rows", type=int, nargs="+", default=[100_000, 200_000], help="training rows of each store")
    ap.add_argument("--dims", type=int, nargs=2, default=[1536, 2048])
    ap.add_argument("--val", type=int, default=10_000, help="held-out rows (the solve's scoring pass)")
    ap.add_argument("--repeats", type=int, default=2, help="alternating runs of each; the best is kept")
    ap.add_argument("--parts", nargs="+", default=["accumulate", "solve", "extract"],
                    choices=["accumulate", "solve", "extract"], help="what to measure")
    ap.add_argument("--code", action="append", default=[], help="LABEL=DIR: also run the lintwin tree at DIR")
    ap.add_argument("--photos", type=Path, default=ROOT.parent / "shared" / "data" / "imagenet-sample")
    ap.add_argument("--imagenet-models", type=Path, default=ROOT / "models" / "imagenet")
    ap.add_argument("--photo-limit", type=int, default=1000, help="photos to extract")
    ap.add_argument("--workers", type=int, default=1, help="decoding workers of the extraction")
    ap.add_argument("--quick", action="store_true", help="tiny sizes, every part (a smoke run)")
    ap.add_argument("--work", type=Path, default=ROOT / "runs" / "bench_pipeline")
    ap.add_argument("--out", type=Path, default=ROOT / "bench" / "results")
    args = ap.parse_args()
    if args.quick:
        args.rows, args.dims, args.val, args.repeats, args.photo_limit = [3000, 6000], [48, 64], 500, 1, 40
    codes: dict[str, Path | None] = {"this tree": None} | {
        k: Path(v).resolve() for k, v in (c.split("=", 1) for c in args.code)}
    args.work.mkdir(parents=True, exist_ok=True)
    load = [os.getloadavg()[0]]
    result: dict = {"machine": {"cpus": os.cpu_count(), "machine": platform.machine(),
                                "python": platform.python_version(), "shared": True}, "accumulate": {}}
    lines = [f"block pipeline on the CPU ({os.cpu_count()} cores, a machine shared with other work: compare "
             "ratios, not seconds)", ""]
    d = sum(args.dims)
    if "accumulate" in args.parts:
        lines.append(f"accumulation from a zarr store vs in-memory ssyrk of [A B] ({args.dims[0]} + {args.dims[1]}), "
                     f"best of {args.repeats}")
        lines.append(f"{'rows':>9}  {'run':<28}{'seconds':>9}{'GFLOP/s':>9}{'of ssyrk':>10}{'peak RSS MB':>13}")
        for rows in args.rows:
            store = synthetic(args.work, rows, args.val, args.dims)
            print(f"accumulate, {rows} rows", flush=True)
            got = accumulate(store, rows, d, codes, args.repeats)
            result["accumulate"][str(rows)] = got
            lines += [f"{rows:>9}  {k:<28}{v['seconds']:>9.2f}{v['gflops']:>9.1f}{v['of_ssyrk']:>9.0%}"
                      f"{v['peak_rss_mb']:>13.0f}" for k, v in got.items()]
            load.append(os.getloadavg()[0])
        lines.append("")
    if "solve" in args.parts:
        store = synthetic(args.work, args.rows[0], args.val, args.dims)
        print(f"solve --both, {args.rows[0]} rows", flush=True)
        got = result["solve"] = solve_job.measure(store, repeats=args.repeats, codes=codes)
        lines += [f"solve --both, {args.rows[0]} train + {args.val} val rows (bench/solve_job.py), best of "
                  f"{args.repeats}"]
        lines += solve_job.table(got) + [""]
        load.append(os.getloadavg()[0])
    if "extract" in args.parts:
        if (args.photos / "labels.csv").is_file() and (args.imagenet_models / "mobilenet_v2.json").is_file():
            print("extraction", flush=True)
            rows = extraction(args.photos, args.imagenet_models, args.photo_limit, args.workers)
            result["extract"] = rows
            lines.append(f"extraction of the ImageNet sample photos vs the backbone alone ({args.workers} decoding "
                         "worker(s), batch 32)")
            lines += [f"  {r['network']:<20}{r['images']:>6} images  extract {r['extract_img_s']:6.1f} img/s  backbone "
                      f"{r['backbone_img_s']:6.1f} img/s  ratio {r['ratio']:.2f} (goal >= 0.90)" for r in rows]
            lines.append("")
            load.append(os.getloadavg()[0])
        else:
            lines += [f"extraction skipped: need {args.photos}/labels.csv and {args.imagenet_models}/mobilenet_v2.json",
                      ""]
    result["machine"]["load_average_1min"] = load
    lines.append(f"load average (1 min) during the run: {', '.join(f'{x:.1f}' for x in load)}")
    cmd = " ".join(["python bench/bench_pipeline.py", *sys.argv[1:]])
    lines.append(f"command: {cmd}")
    text = "\n".join(lines) + "\n"
    print(text)
    args.out.mkdir(parents=True, exist_ok=True)
    stem = args.out / ("pipeline_quick" if args.quick else f"pipeline_{'_'.join(map(str, args.rows))}")
    stem.with_suffix(".txt").write_text(text)
    stem.with_suffix(".json").write_text(json.dumps(result, indent=2) + "\n")
    if args.quick:
        shutil.rmtree(args.work, ignore_errors=True)


if __name__ == "__main__":
    t0 = time.perf_counter()
    main()
    print(f"({time.perf_counter() - t0:.0f} s)")
