"""Which engine finds the top-k candidates faster here: FAISS's flat search or a blocked GEMM + ``argpartition``.

Both get the same float32, L2-normalised rows and return, per row, the ``pool + 1`` largest inner
products (what ``lintwin.measures.topk`` asks its engine for: pool = max(2k, k + 16) = 26 for
k = 10, plus the row itself). Each shape is timed for both engines alternately, ``--repeats``
times, and the median is kept, so a busy machine slows both alike.

    python bench/bench_knn_engines.py [--shapes 20000x1536 60000x128] [--k 10] [--block 4096]
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

import faiss
import numpy as np

from lintwin.experiments.report import format_table

ROOT = Path(__file__).resolve().parents[1]


def gemm_argpartition(x: np.ndarray, width: int, block: int) -> np.ndarray:
    """Top-``width`` columns per row of x·xᵀ, block of query rows by block (NumPy's BLAS + argpartition)."""
    out = np.empty((x.shape[0], width), dtype=np.int64)
    for lo in range(0, x.shape[0], block):
        s = x[lo:lo + block] @ x.T
        out[lo:lo + block] = np.argpartition(s, -width, axis=1)[:, -width:]
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--shapes", nargs="+", default=["20000x1536", "60000x128"])
    ap.add_argument("--k", type=int, default=10)
    ap.add_argument("--block", type=int, default=4096)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--out", type=Path, default=ROOT / "bench" / "results")
    args = ap.parse_args()
    width = max(2 * args.k, args.k + 16) + 1
    rows, results = [], []
    load0 = os.getloadavg()[0]
    for shape in args.shapes:
        n, d = (int(v) for v in shape.split("x"))
        x = np.random.default_rng(0).standard_normal((n, d)).astype(np.float32)
        x /= np.linalg.norm(x, axis=1, keepdims=True)
        times: dict[str, list[float]] = {"faiss": [], "gemm": []}
        for _ in range(args.repeats):
            t0 = time.perf_counter()
            _, fi = faiss.knn(x, x, width, metric=faiss.METRIC_INNER_PRODUCT)
            times["faiss"].append(time.perf_counter() - t0)
            t0 = time.perf_counter()
            gi = gemm_argpartition(x, width, args.block)
            times["gemm"].append(time.perf_counter() - t0)
        agree = float(np.mean([len(set(a) & set(b)) / width for a, b in zip(fi[:1000], gi[:1000])]))
        f, g = float(np.median(times["faiss"])), float(np.median(times["gemm"]))
        results.append({"rows": n, "dim": d, "width": width, "faiss_seconds": times["faiss"],
                        "gemm_seconds": times["gemm"], "median_ratio_gemm_over_faiss": g / f,
                        "candidate_agreement": agree})
        rows.append([f"{n} x {d}", f"{f:.2f}", f"{g:.2f}", f"{g / f:.2f}", f"{agree:.4f}"])
    text = (f"top-{width} candidates per row of x·xᵀ, {os.cpu_count()} CPU cores shared with other work (load average "
            f"{load0:.1f} at the start, {os.getloadavg()[0]:.1f} at the end); median of {args.repeats} alternating runs\n"
            + format_table(["rows x dim", "FAISS s", "GEMM+argpartition s", "ratio", "same candidates"], rows) + "\n")
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "knn_engines.json").write_text(json.dumps(results, indent=2))
    (args.out / "knn_engines.txt").write_text(text)
    print(text)


if __name__ == "__main__":
    main()
