"""`lintwin solve --both` as a whole process against its floor and two scikit-learn Ridge fits, in the same run.

The definition (what is timed, how, and the ratios) is ``bench/solve_job.py``'s, shared with
``bench/bench_pipeline.py``: lintwin as a whole process (start-up, reading, both maps, held-out
pass); the floor (in-memory ``ssyrk`` of [A B] plus the two solves) and two
``Ridge(solver="cholesky")`` fits timed in-process on data in memory.

    python bench/bench_solve_process.py --rows 100000            # the issue's shape
    python bench/bench_solve_process.py --rows 20000 --dims 256 384 --repeats 1   # quick
"""

from __future__ import annotations

import argparse
import json
import os
import platform
from pathlib import Path

import solve_job

ROOT = Path(__file__).resolve().parents[1]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rows", type=int, default=100_000)
    ap.add_argument("--val", type=int, default=10_000)
    ap.add_argument("--dims", type=int, nargs=2, default=[1536, 2048])
    ap.add_argument("--repeats", type=int, default=2, help="runs of each, alternating; the best is kept")
    ap.add_argument("--work", type=Path, default=ROOT / "runs" / "bench_solve")
    ap.add_argument("--out", type=Path, default=ROOT / "bench" / "results")
    args = ap.parse_args()

    from lintwin.storage.synthetic import write_synthetic_store

    store = args.work / f"s_{args.rows}_{args.dims[0]}_{args.dims[1]}.zarr"
    if not store.exists():
        write_synthetic_store(store, train=args.rows, val=args.val, dim_a=args.dims[0], dim_b=args.dims[1])
    result = solve_job.measure(store, repeats=args.repeats)
    lines = [f"solve --both: {args.rows} train + {args.val} val rows, {args.dims[0]} <-> {args.dims[1]}",
             f"machine: {platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}, load average "
             f"{os.getloadavg()[0]:.1f} (shared); best of {args.repeats} alternating runs each", ""]
    lines += solve_job.table(result)
    lines += [f"command: python bench/bench_solve_process.py --rows {args.rows} --dims {args.dims[0]} {args.dims[1]}"]
    text = "\n".join(lines) + "\n"
    print(text)
    args.out.mkdir(parents=True, exist_ok=True)
    stem = args.out / f"solve_process_{args.rows}_{args.dims[0]}_{args.dims[1]}"
    stem.with_suffix(".txt").write_text(text)
    stem.with_suffix(".json").write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
