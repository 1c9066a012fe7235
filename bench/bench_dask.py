"""Dask scale-out of the moment accumulation: 1 and 2 local workers against one process.

Same store, same block size, measured in the same run: the single-process streaming
accumulation (lintwin.accumulate_store) and lintwin.accumulate_dask on LocalClusters of
1 and 2 single-threaded worker processes, each worker accumulating two large row ranges (one
d×d float64 matrix shipped per range, not per chunk). On one machine the workers share its cores and
memory bandwidth, so this measures the framework's overhead and the scaling a second
worker process buys here, not a second machine.

    python bench/bench_dask.py [--rows 200000] [--dims 1536 2048] [--quick]
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np

from lintwin import accumulate_store
from lintwin.experiments.report import format_table
from lintwin.storage.synthetic import write_synthetic_store

ROOT = Path(__file__).resolve().parents[1]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rows", type=int, default=100_000)
    ap.add_argument("--dims", type=int, nargs=2, default=[1536, 2048])
    ap.add_argument("--block-rows", type=int, default=4096)
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--out", type=Path, default=ROOT / "bench" / "results")
    args = ap.parse_args()
    if args.quick:
        args.rows, args.dims, args.block_rows = 20_000, [192, 256], 2000
    from distributed import Client, LocalCluster

    from lintwin.core.distributed import accumulate_dask
    from lintwin.storage.source import StoreSource

    da, db = args.dims
    d = da + db
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        store = write_synthetic_store(Path(tmp) / "s.zarr", train=args.rows, dim_a=da, dim_b=db,
                                      chunk_rows=args.block_rows)
        t0 = time.perf_counter()
        ref = accumulate_store(store, "A", "B", block_rows=args.block_rows, progress=False)
        base = time.perf_counter() - t0
        rows.append(("single process (2 BLAS threads)", base, 1.0, 0.0))
        for workers in (1, 2):
            with LocalCluster(n_workers=workers, threads_per_worker=1, processes=True, host="127.0.0.1",
                              dashboard_address="127.0.0.1:0", worker_dashboard_address="127.0.0.1:0") as cluster, Client(cluster) as client:
                accumulate_dask(client, StoreSource(store, "train", ["A", "B"]), progress=False)  # warm up
                t0 = time.perf_counter()
                m = accumulate_dask(client, StoreSource(store, "train", ["A", "B"]), progress=False)
                sec = time.perf_counter() - t0
            err = float(np.abs(m.comoment - ref.comoment).max() / np.abs(ref.comoment).max())
            rows.append((f"dask, {workers} worker(s) x 1 thread ({2 * workers} ranges, "
                         f"{2 * workers * d * d * 8 / 2**20:.0f} MiB of moments shipped)", sec, base / sec, err))
    flops = args.rows * d * (d + 1)
    table = format_table(["accumulation", "seconds", "speed vs single", "GFLOP/s", "max rel diff"],
                         [(name, f"{s:.2f}", f"{r:.2f}x", f"{flops / s / 1e9:.0f}", f"{e:.1e}") for name, s, r, e in rows])
    head = f"n = {args.rows:,}, A {da} + B {db}, blocks of {args.block_rows} rows"
    print(head)
    print(table)
    args.out.mkdir(parents=True, exist_ok=True)
    tag = "quick" if args.quick else str(args.rows)
    (args.out / f"dask_{tag}.txt").write_text(head + "\n" + table + "\n")
    (args.out / f"dask_{tag}.json").write_text(json.dumps({"rows": args.rows, "dims": args.dims, "results": rows}))


if __name__ == "__main__":
    main()
