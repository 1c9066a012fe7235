"""Layers of the ImageNet pair: per-position accumulation against the SYRK ceiling, and layer-similarity against
computing each pair's CKA separately in memory. Both measured in the same run as what they are compared with.

Needs the store of ``python bench/layers_imagenet.py extract`` or, smaller, ``extract-bench`` (4,281
fitting images: 500 ImageNet sample photos and 3,781 clothing photos).

    python bench/bench_layers.py accumulate [--store runs/layers-imagenet/layers.zarr]
    python bench/bench_layers.py similarity [--store ...] [--config positions|pooled] [--images N]

``accumulate``: one mid-network layer of each network per position (MobileNetV2 features.13, 96
channels, and EfficientNet-Lite0 block 10, 112 channels, both 14 x 14: 4,281 x 196 = 839,076 rows
of 208 values), accumulated (a) streamed from the store by ``LayerSource`` through the pass
driver, (b) from the same rows already in memory (``ArraySource``), against (c) the ceiling: the
bare BLAS product zᵀz of blocks of the same shape in memory. Useful work is n·d² flops (the
symmetric product of n rows of d values), in float32 (lintwin's default) and float64.

``similarity``: ``layer_similarity`` over all block outputs (one streaming pass of joint moments,
float64) against the in-memory approach of CKA libraries: every layer's rows loaded as float64,
then each distinct pair's linear CKA computed separately (centred XᵀY, XᵀX, YᵀY per pair; the
diagonals of A x A and B x B are 1 by definition). Each runs in its own process; time is measured
inside it (after imports), peak memory is its maximum resident set size. ``positions``: the 13 block outputs at 14 x 14 (839,076 rows, 1,120 values); ``pooled``:
all 35 block outputs and classifier inputs averaged over positions (4,281 rows, 5,872 values).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from lintwin.core.driver import ArraySource, accumulate, run_pass
from lintwin.experiments.layer_similarity import layer_similarity
from lintwin.experiments.report import format_table
from lintwin.networks.layer_source import GridSink, LayerSource, stored_layers
from lintwin.storage.store import FeatureStore

ROOT = Path(__file__).resolve().parents[1]
A, B = "mobilenet_v2", "efficientnet_lite0"
MID = (f"{A}+features.features.13.Add", f"{B}+_blocks.10.Add")


def _peak_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def _load(store: FeatureStore, split: str, arrays: tuple[str, ...]) -> list[np.ndarray]:
    return [np.asarray(store.features(split, a)[:]) for a in arrays]


def bench_accumulate(store: FeatureStore, repeats: int) -> dict:
    layers = [la for la in stored_layers(store, ["p14"]) if la.array in MID]
    layers.sort(key=lambda la: MID.index(la.array))
    n, d = layers[0].samples * layers[0].rows_per_sample, sum(la.dim for la in layers)
    flops = float(n) * d * d
    rows = _load(store, "p14", MID)
    block = LayerSource(store, layers).block_samples * layers[0].rows_per_sample
    out = {"rows": n, "dims": [la.dim for la in layers], "block_rows": block, "repeats": repeats, "results": {}}
    for precision in ("float32", "float64"):
        dtype = np.float32 if precision == "float32" else np.float64
        z = np.random.default_rng(0).standard_normal((block, d)).astype(dtype)
        timings = {"streamed from the store": [], "from memory (ArraySource)": [], "ceiling: zᵀz of blocks": []}
        for _ in range(repeats):
            t0 = time.perf_counter()
            sink = GridSink(layers, [0, 1], (14, 14), precision=precision)
            run_pass(LayerSource(store, layers), [sink])
            timings["streamed from the store"].append(time.perf_counter() - t0)
            t0 = time.perf_counter()
            accumulate(ArraySource(rows, names=("a", "b"), block_rows=block), precision=precision)  # type: ignore[arg-type]
            timings["from memory (ArraySource)"].append(time.perf_counter() - t0)
            t0 = time.perf_counter()
            for lo in range(0, n, block):
                zz = z[: min(block, n - lo)]
                _ = zz.T @ zz
            timings["ceiling: zᵀz of blocks"].append(time.perf_counter() - t0)
        best = {k: min(v) for k, v in timings.items()}
        ceiling = best["ceiling: zᵀz of blocks"]
        out["results"][precision] = {k: {"seconds": s, "rows_per_s": n / s, "gflops": flops / s / 1e9,
                                         "of_ceiling": ceiling / s} for k, s in best.items()}
    return out


def _child(args: argparse.Namespace) -> None:
    """One side of the similarity benchmark, in its own process: prints a JSON line with time and peak memory."""
    store = FeatureStore.open(args.store)
    splits = ["p14"] if args.config == "positions" else ["avg"]
    la = [x for x in stored_layers(store, splits, A)]
    lb = [x for x in stored_layers(store, splits, B)]
    t0 = time.perf_counter()
    n = la[0].samples if args.images is None else min(args.images, la[0].samples)
    if args.side == "stream":
        res = layer_similarity(store, A, B, splits=splits, samples=n, progress=False, echo=lambda _: None)
        values = {"ab": res.measures["cka"], "aa": res.self_a["cka"], "bb": res.self_b["cka"]}
    else:
        layers = la + lb
        data = []
        for x in layers:  # every layer in memory, float64, centred (as a CKA library holds it)
            v = np.asarray(store.features(x.split, x.array)[: n * x.rows_per_sample], dtype=np.float64)
            data.append(v - v.mean(axis=0))

        def cka(x: np.ndarray, y: np.ndarray) -> float:
            return float(np.sum((x.T @ y) ** 2) / np.sqrt(np.sum((x.T @ x) ** 2) * np.sum((y.T @ y) ** 2)))

        def square(first: int, count: int) -> list[list[float]]:  # each distinct pair once, mirrored
            m = np.ones((count, count))
            for i in range(count):
                for j in range(i + 1, count):
                    m[i, j] = m[j, i] = cka(data[first + i], data[first + j])
            return m.tolist()

        k = len(la)
        values = {"ab": [[cka(data[i], data[k + j]) for j in range(len(lb))] for i in range(k)],
                  "aa": square(0, k), "bb": square(k, len(lb))}
    seconds = time.perf_counter() - t0
    rows = n * la[0].rows_per_sample
    print(json.dumps({"seconds": seconds, "peak_mib": _peak_mib(), "values": values, "rows": rows,
                      "layers": [len(la), len(lb)], "sum_dims": sum(x.dim for x in la + lb)}))


def bench_similarity(store_path: Path, config: str, images: int | None) -> dict:
    probe = "import resource, lintwin, numpy, zarr; print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)"
    base = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True)
    out = {"config": config, "import_peak_mib": float(base.stdout), "sides": {}}
    for side in ("stream", "memory"):
        more = [] if images is None else ["--images", str(images)]
        proc = subprocess.run([sys.executable, __file__, "child", "--store", str(store_path), "--config", config,
                               "--side", side, *more], capture_output=True, text=True, check=False)
        if proc.returncode != 0:
            out["sides"][side] = {"failed": proc.stderr[-500:]}
            continue
        out["sides"][side] = json.loads(proc.stdout.strip().splitlines()[-1])
    got = [out["sides"][s].get("values") for s in ("stream", "memory")]
    if all(got):
        out["max_abs_difference"] = max(float(np.nanmax(np.abs(np.asarray(got[0][k], float) - np.asarray(got[1][k], float))))
                                        for k in ("ab", "aa", "bb"))
    for s in out["sides"].values():
        s.pop("values", None)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("what", choices=["accumulate", "similarity", "child"])
    ap.add_argument("--store", type=Path, default=ROOT / "runs" / "layers-imagenet" / "layers.zarr")
    ap.add_argument("--config", choices=["positions", "pooled"], default="positions")
    ap.add_argument("--side", choices=["stream", "memory"], default="stream")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--images", type=int, default=None, help="similarity: the first N images only")
    ap.add_argument("--out", type=Path, default=ROOT / "bench" / "results")
    args = ap.parse_args()
    if args.what == "child":
        _child(args)
        return
    load = os.getloadavg()
    args.out.mkdir(parents=True, exist_ok=True)
    if args.what == "accumulate":
        res = bench_accumulate(FeatureStore.open(args.store), args.repeats)
        table = [[precision, how, f"{r['rows_per_s']:,.0f}", f"{r['gflops']:.1f}", f"{100 * r['of_ceiling']:.0f} %"]
                 for precision, rs in res["results"].items() for how, r in rs.items()]
        text = (f"per-position moments, {res['rows']:,} rows of {'+'.join(map(str, res['dims']))} values "
                f"(blocks of {res['block_rows']:,} rows), best of {res['repeats']}\n"
                + format_table(["precision", "how", "rows/s", "GFLOP/s", "of ceiling"], table))
        stem = "layers_accumulate"
    else:
        res = bench_similarity(args.store, args.config, args.images)
        rows = [[side, f"{s.get('seconds', float('nan')):.1f}", f"{s.get('peak_mib', float('nan')):,.0f}"]
                for side, s in res["sides"].items()]
        first = next(iter(s for s in res["sides"].values() if "rows" in s), {})
        text = (f"layer x layer CKA of {first.get('layers')} layers (Σd = {first.get('sum_dims')}), "
                f"{first.get('rows', 0):,} rows each; peak memory includes {res['import_peak_mib']:.0f} MiB of imports; "
                f"max |Δ CKA| {res.get('max_abs_difference', float('nan')):.2e}\n"
                + format_table(["approach", "seconds", "peak MiB"], rows))
        stem = f"layers_similarity_{args.config}_{first.get('rows', 0)}"
    res["load_average"] = load
    text += f"\nload average at the start {load[0]:.1f} (2 CPU cores shared with other work)"
    print(text)
    (args.out / f"{stem}.txt").write_text(text + "\n")
    (args.out / f"{stem}.json").write_text(json.dumps(res, indent=2) + "\n")


if __name__ == "__main__":
    main()
