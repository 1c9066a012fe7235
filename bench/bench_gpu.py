"""The block pipeline on a GPU, against the device's own ceilings, in one command; results name the device.

    python bench/bench_gpu.py                 # on a machine with a GPU and lintwin[gpu] (CuPy)
    python bench/bench_gpu.py --numpy         # the same script end to end with NumPy at tiny sizes

Measured in one run, each number beside its ceiling or competitor:

- **ceilings**: the device's SGEMM (zᵀz of one block), SYRK (cuBLAS), TF32 GEMM and DGEMM rates,
  and host→device bandwidth from pinned memory, on blocks of the pass's size;
- **accumulation** from a zarr store (``--store-rows``; reading, decoding, pinned buffers, the copy
  stream, the fused kernel, SYRK and the float64 merge) and from pinned host memory at each
  ``--rows`` (200k–2M), in float32, TF32 and float64, each with its rate against SYRK (float64:
  DGEMM) and against the host→device bound, and TF32's and float32's moment error against float64;
- **both maps** from the moments (solves on the device), and the paper's **Adam** per iteration,
  extrapolated to its 100k iterations for both directions;
- **competitors** when installable: ``torch.linalg.lstsq`` and cuML ``LinearRegression`` on the same
  rows in device memory (both directions);
- **similarity** at ``--similarity-rows`` (exact, one pass with kernel sums, every measure) against
  minibatch CKA (Nguyen et al.'s unbiased estimator) at two batch sizes;
- **extraction** against the backbone alone, when the ImageNet networks are exported
  (``models/imagenet_nets.py``) and the sample photos are there.

Results: ``bench/results/gpu_<device>.{txt,json}``.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import re
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from lintwin.api import fit
from lintwin.core.driver import JoinedBlocks, accumulate
from lintwin.core.params import AdamOptions
from lintwin.core.placement import placement
from lintwin.core.xp import to_numpy
from lintwin.measures.similarity import similarity
from lintwin.solvers import maps_from_moments
from lintwin.storage.source import StoreSource
from lintwin.storage.synthetic import SyntheticPair, write_synthetic_store

ROOT = Path(__file__).resolve().parents[1]


class RepeatSource:
    """``rows`` rows made by repeating one pinned host block (the device pipeline without decoding)."""

    def __init__(self, host: np.ndarray, dims: tuple[int, int], rows: int):
        self.host, self.dims, self.rows, self.names = host, dims, rows, ("A", "B")

    def blocks(self) -> Iterator[tuple[int, JoinedBlocks]]:
        step = self.host.shape[0]
        for lo in range(0, self.rows, step):
            yield lo, JoinedBlocks(self.host[: min(step, self.rows - lo)], self.dims)


class Device:
    """The namespace under test: CuPy on GPU 0, or NumPy (``--numpy``); timing that waits for the device."""

    def __init__(self, numpy_mode: bool):
        self.numpy_mode = numpy_mode
        if numpy_mode:
            self.xp, self.place = np, placement("cpu")
            self.name = f"numpy-{platform.machine()}-{os.cpu_count()}cpu"
        else:
            import cupy

            self.xp, self.place = cupy, placement("gpu")
            props = cupy.cuda.runtime.getDeviceProperties(0)
            self.name = props["name"].decode() if isinstance(props["name"], bytes) else str(props["name"])

    def sync(self) -> None:
        if not self.numpy_mode:
            self.xp.cuda.Device().synchronize()

    def time(self, f: Any, repeats: int = 3) -> float:
        """Best wall seconds of ``f()`` over ``repeats`` runs, the device drained before and after."""
        best = math.inf
        for _ in range(repeats):
            self.sync()
            t = time.perf_counter()
            f()
            self.sync()
            best = min(best, time.perf_counter() - t)
        return best


def ceilings(dev: Device, block: np.ndarray) -> dict[str, float]:
    """Rows per second of the device's own products of one block, and host→device GB/s."""
    xp, rows, d = dev.xp, block.shape[0], block.shape[1]
    z = xp.asarray(block)
    z64 = xp.asarray(block.astype(np.float64))
    out: dict[str, float] = {}
    out["sgemm_rows_s"] = rows / dev.time(lambda: z.T @ z)
    out["dgemm_rows_s"] = rows / dev.time(lambda: z64.T @ z64)
    if dev.numpy_mode:
        from scipy.linalg import blas

        out["syrk_rows_s"] = rows / dev.time(lambda: blas.ssyrk(1.0, block.T, trans=0))
        out["tf32_gemm_rows_s"] = float("nan")  # no TF32 on the CPU
        out["h2d_gb_s"] = block.nbytes / dev.time(lambda: np.copyto(np.empty_like(block), block)) / 1e9
    else:
        import cupy
        from cupy_backends.cuda.libs import cublas

        g = cupy.empty((d, d), cupy.float32)
        out["syrk_rows_s"] = rows / dev.time(lambda: cupy.cublas.syrk("T", z, out=g))
        handle = cupy.cuda.device.get_cublas_handle()
        mode = cublas.getMathMode(handle)
        cublas.setMathMode(handle, getattr(cublas, "CUBLAS_TF32_TENSOR_OP_MATH", 3))  # cuBLAS's value
        try:
            out["tf32_gemm_rows_s"] = rows / dev.time(lambda: cupy.cublas.gemm("T", "N", z, z, out=g))
        finally:
            cublas.setMathMode(handle, mode)
        pinned = dev.place.host_empty(block.shape, np.float32)
        pinned[...] = block
        out["h2d_gb_s"] = block.nbytes / dev.time(lambda: z.set(pinned)) / 1e9
    flops = lambda r, n: r * d * d * n / 1e9  # noqa: E731  (multiply-adds counted twice)
    out["sgemm_gflops"] = flops(out["sgemm_rows_s"], 2)
    out["syrk_gflops"] = flops(out["syrk_rows_s"], 1)
    out["dgemm_gflops"] = flops(out["dgemm_rows_s"], 2)
    return out


def moments_error(m: Any, ref: Any) -> float:
    c, r = to_numpy(m.comoment), to_numpy(ref.comoment)
    return float(np.abs(c - r).max() / np.abs(r).max())


def minibatch_cka(xp: Any, a: Any, b: Any, batch: int) -> float:
    """Nguyen et al.'s minibatch CKA: unbiased HSIC averaged over batches (Gram matrices on the device)."""
    def hsic(K: Any, L: Any) -> Any:
        n = K.shape[0]
        K = K - xp.diag(xp.diag(K))
        L = L - xp.diag(xp.diag(L))
        kl = xp.sum(K, axis=1) @ xp.sum(L, axis=1)
        return (xp.sum(K * L) + xp.sum(K) * xp.sum(L) / ((n - 1) * (n - 2)) - 2.0 / (n - 2) * kl) / (n * (n - 3))

    kl = kk = ll = 0.0
    for lo in range(0, a.shape[0] - batch + 1, batch):
        x, y = a[lo : lo + batch].astype(xp.float64), b[lo : lo + batch].astype(xp.float64)
        K, L = x @ x.T, y @ y.T
        kl, kk, ll = kl + hsic(K, L), kk + hsic(K, K), ll + hsic(L, L)
    return float(kl / xp.sqrt(kk * ll))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--numpy", action="store_true", help="run with NumPy at tiny sizes (no GPU needed)")
    ap.add_argument("--rows", type=int, nargs="+", default=[200_000, 1_000_000, 2_000_000],
                    help="rows of the in-memory accumulations")
    ap.add_argument("--store-rows", type=int, default=200_000, help="rows of the zarr store pass")
    ap.add_argument("--dims", type=int, nargs=2, default=[1536, 2048])
    ap.add_argument("--block", type=int, default=16384, help="rows per block")
    ap.add_argument("--adam-iterations", type=int, default=50, help="Adam iterations timed (per direction)")
    ap.add_argument("--similarity-rows", type=int, default=1_000_000)
    ap.add_argument("--photos", type=Path, default=ROOT.parent / "shared" / "data" / "imagenet-sample")
    ap.add_argument("--imagenet-models", type=Path, default=ROOT / "models" / "imagenet")
    ap.add_argument("--work", type=Path, default=ROOT / "runs" / "bench_gpu")
    ap.add_argument("--out", type=Path, default=ROOT / "bench" / "results")
    args = ap.parse_args()
    if args.numpy:
        args.rows, args.store_rows, args.dims, args.block = [4000, 8000], 4000, [48, 64], 1000
        args.adam_iterations, args.similarity_rows = 5, 8000
    dev = Device(args.numpy)
    xp, place, dims = dev.xp, dev.place, tuple(args.dims)
    d = sum(dims)
    res: dict[str, Any] = {"device": dev.name, "numpy_mode": args.numpy, "dims": dims, "block": args.block}
    lines = [f"lintwin block pipeline on {dev.name}" + (" (NumPy, tiny sizes: a smoke run)" if args.numpy else ""), ""]

    gen = SyntheticPair(*dims, seed=0)
    a_np, b_np = gen.arrays(args.block)
    host = place.host_empty((args.block, d), np.float32)
    host[:, : dims[0]], host[:, dims[0] :] = a_np, b_np
    ceil = res["ceilings"] = ceilings(dev, np.ascontiguousarray(host))
    lines += [f"ceilings (block of {args.block} rows): SGEMM {ceil['sgemm_gflops']:.0f} GFLOP/s, SYRK "
              f"{ceil['syrk_gflops']:.0f} GFLOP/s, DGEMM {ceil['dgemm_gflops']:.0f} GFLOP/s, TF32 GEMM "
              f"{ceil['tf32_gemm_rows_s'] * d * d * 2 / 1e9:.0f} GFLOP/s, host→device {ceil['h2d_gb_s']:.1f} GB/s",
              f"  as rows/s: SYRK {ceil['syrk_rows_s']:,.0f}, SGEMM {ceil['sgemm_rows_s']:,.0f}, host→device "
              f"{ceil['h2d_gb_s'] * 1e9 / (4 * d):,.0f}", ""]
    h2d_rows = ceil["h2d_gb_s"] * 1e9 / (4 * d)

    def row(label: str, rows: int, seconds: float, precision: str) -> str:
        if precision == "float64":
            top, name = ceil["dgemm_rows_s"], "DGEMM"
        elif precision == "tf32":
            top, name = ceil["tf32_gemm_rows_s"], "TF32 GEMM"
        else:
            top, name = ceil["syrk_rows_s"], "SYRK"
        rate = rows / seconds
        return (f"  {label:<34}{rows:>10,}  {seconds:8.2f} s  {rate:>12,.0f} rows/s  {rate / top:6.0%} of {name}"
                f"  {rate / h2d_rows:6.0%} of host→device")

    precisions = ["float32", "float64"] + ([] if args.numpy else ["tf32"])
    args.work.mkdir(parents=True, exist_ok=True)
    store_path = args.work / f"s_{args.store_rows}_{dims[0]}_{dims[1]}.zarr"
    if not store_path.exists():
        write_synthetic_store(store_path, train=args.store_rows, val=min(10_000, args.store_rows // 10),
                              dim_a=dims[0], dim_b=dims[1])
    source = StoreSource(store_path, "train", ["A", "B"])
    lines.append("accumulation (rows, seconds, rate, share of the device's product and of host→device)")
    res["accumulate"] = {}
    for precision in precisions:
        seconds = dev.time(lambda p=precision: accumulate(source, placement=place, precision=p).comoment, repeats=1)
        res["accumulate"][f"store {precision}"] = seconds
        lines.append(row(f"zarr store, {precision}", args.store_rows, seconds, precision))
    moments: dict[str, Any] = {}
    for rows in args.rows:
        src = RepeatSource(host, dims, rows)
        for precision in precisions:
            box: dict[str, Any] = {}

            def run(p: str = precision, s: RepeatSource = src) -> None:
                box["m"] = accumulate(s, placement=place, precision=p)
                box["m"].comoment

            seconds = dev.time(run, repeats=1)
            moments[precision] = box["m"]
            res["accumulate"][f"memory {rows} {precision}"] = seconds
            lines.append(row(f"pinned host memory, {precision}", rows, seconds, precision))
        for precision in precisions:
            if precision != "float64":
                err = moments_error(moments[precision], moments["float64"])
                res["accumulate"][f"error {rows} {precision}"] = err
                lines.append(f"    {precision} moments against float64: max relative error {err:.1e}")
    lines.append("")

    m = moments["float32"]
    t = dev.time(lambda: maps_from_moments(m, both=True), repeats=1)
    res["both_maps_seconds"] = t
    lines.append(f"both maps from the moments ({d} features): {t:.2f} s")
    a_dev, b_dev = xp.asarray(a_np), xp.asarray(b_np)
    opts = AdamOptions(iterations=args.adam_iterations, batch=min(2048, args.block))
    t = dev.time(lambda: fit(a_dev, b_dev, method="adam", adam=opts), repeats=1) / args.adam_iterations
    res["adam_seconds_per_iteration"] = t
    lines.append(f"Adam: {t * 1e3:.2f} ms/iteration (batch {opts.batch}) → {2 * 100_000 * t:,.0f} s for the paper's "
                 "2 x 100k iterations")

    comp: dict[str, Any] = {}
    x1 = xp.concat([a_dev, xp.ones((a_dev.shape[0], 1), dtype=xp.float32)], axis=1)
    y1 = xp.concat([b_dev, xp.ones((b_dev.shape[0], 1), dtype=xp.float32)], axis=1)
    try:
        import torch

        tdev = "cpu" if args.numpy else "cuda"
        tx, ty = torch.as_tensor(to_numpy(x1), device=tdev), torch.as_tensor(to_numpy(y1), device=tdev)
        tb, ta = torch.as_tensor(b_np, device=tdev), torch.as_tensor(a_np, device=tdev)

        def torch_lstsq() -> None:
            torch.linalg.lstsq(tx, tb)
            torch.linalg.lstsq(ty, ta)
            if tdev == "cuda":
                torch.cuda.synchronize()

        comp["torch.linalg.lstsq"] = dev.time(torch_lstsq, repeats=1)
    except Exception as exc:  # noqa: BLE001  (not installed, or no CUDA build)
        comp["torch.linalg.lstsq"] = f"skipped: {type(exc).__name__}: {exc}"[:200]
    try:
        from cuml.linear_model import LinearRegression

        comp["cuML LinearRegression"] = dev.time(lambda: (LinearRegression().fit(a_dev, b_dev),
                                                          LinearRegression().fit(b_dev, a_dev)), repeats=1)
    except Exception as exc:  # noqa: BLE001
        comp["cuML LinearRegression"] = f"skipped: {type(exc).__name__}: {exc}"[:200]
    own = dev.time(lambda: maps_from_moments(accumulate(RepeatSource(host, dims, args.block), placement=place),
                                             both=True), repeats=1)
    comp["lintwin (accumulate + both maps)"] = own
    res["competitors"] = {"rows": args.block, **comp}
    lines.append(f"both directions on {args.block:,} rows in memory: " + "; ".join(
        f"{k} {v:.2f} s" if isinstance(v, float) else f"{k} {v}" for k, v in comp.items()))

    src = RepeatSource(host, dims, args.similarity_rows)
    t0 = time.perf_counter()
    sim = similarity(accumulate(src, placement=place, precision="float64", kernel=True))
    dev.sync()
    exact_s = time.perf_counter() - t0
    res["similarity"] = {"rows": args.similarity_rows, "seconds": exact_s, "cka": sim.values.get("cka")}
    lines.append(f"similarity, {args.similarity_rows:,} rows: exact (every measure) {exact_s:.2f} s, "
                 f"CKA {sim.values.get('cka'):.6f}")
    for batch in (1024, 4096):
        if batch > args.block:
            continue
        reps = args.similarity_rows // args.block
        t0 = time.perf_counter()
        for _ in range(reps):
            cka = minibatch_cka(xp, a_dev, b_dev, batch)
        dev.sync()
        res["similarity"][f"minibatch {batch}"] = {"seconds": time.perf_counter() - t0, "cka": cka}
        lines.append(f"  minibatch CKA (batch {batch}): {time.perf_counter() - t0:.2f} s, CKA {cka:.6f}")

    if (args.photos / "labels.csv").is_file() and (args.imagenet_models / "mobilenet_v2.json").is_file():
        sys.path.insert(0, str(Path(__file__).parent))
        from bench_extract import backbone_rate, extraction_rate

        from lintwin.networks.images import open_images
        from lintwin.networks.onnx_models import NetworkSpec

        images = open_images(args.photos)
        images = images.subset(range(min(len(images), 16 if args.numpy else 1000)))
        res["extract"] = []
        with tempfile.TemporaryDirectory() as tmp:
            for name in ("mobilenet_v2", "efficientnet_lite0"):
                spec = NetworkSpec.for_model(args.imagenet_models / f"{name}.json")
                base = backbone_rate(spec, images, 64, limit=min(len(images), 256))
                rate = extraction_rate(spec, images, 64, os.cpu_count() or 1, Path(tmp))
                res["extract"].append({"network": name, "extract_img_s": rate, "backbone_img_s": base})
                lines.append(f"extraction {name}: {rate:.0f} img/s, backbone alone {base:.0f} img/s "
                             f"({rate / base:.2f})")
    else:
        lines.append("extraction skipped: export the ImageNet networks (models/imagenet_nets.py) and give --photos")
    lines += ["", "command: " + " ".join(["python bench/bench_gpu.py", *sys.argv[1:]])]
    text = "\n".join(lines) + "\n"
    print(text)
    args.out.mkdir(parents=True, exist_ok=True)
    stem = args.out / f"gpu_{re.sub(r'[^A-Za-z0-9]+', '-', dev.name).strip('-').lower()}"
    stem.with_suffix(".txt").write_text(text)
    stem.with_suffix(".json").write_text(json.dumps(res, indent=2, default=str) + "\n")


if __name__ == "__main__":
    main()
