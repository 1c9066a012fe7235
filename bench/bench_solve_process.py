"""`lintwin solve --both` as a whole process against two scikit-learn Ridge fits, in the same run.

Both sides start from the same zarr store of realistic synthetic features (1536-dim "A",
2048-dim "B") and do the same job: fit A→B and B→A on the training split and score both maps
on the held-out split. Each runs as its own process, timed from start to exit (imports, reading
the store, fitting, scoring), with its peak RSS. The Ridge side loads the features into memory
(what a scikit-learn user does) and fits ``Ridge(alpha=1e-8, solver="cholesky")`` once per
direction; lintwin streams the store once for both maps and scores the held-out split in one
more pass (the training R² comes from the moments).

    python bench/bench_solve_process.py --rows 100000            # the issue's shape
    python bench/bench_solve_process.py --rows 20000 --dims 256 384 --repeats 1   # quick
"""

from __future__ import annotations

import argparse
import os
import platform
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

RIDGE = """
import sys, time
import numpy as np
from sklearn.linear_model import Ridge
from lintwin import FeatureStore
s = FeatureStore.open(sys.argv[1])
a, b = s.features("train", "A")[:], s.features("train", "B")[:]
va, vb = s.features("val", "A")[:], s.features("val", "B")[:]
for x, y, vx, vy in ((a, b, va, vb), (b, a, vb, va)):
    m = Ridge(alpha=1e-8, solver="cholesky").fit(x, y)
    p = m.predict(vx)
    print("val R2", 1 - ((p - vy) ** 2).sum() / ((vy - vy.mean(0)) ** 2).sum())
"""


def run_child(cmd: list[str]) -> tuple[float, float, str]:
    """Like :func:`timed`, reading the child's own peak RSS through a tiny wrapper."""
    wrapper = ("import resource, subprocess, sys, time; t=time.perf_counter(); "
               "r=subprocess.run(sys.argv[1:], capture_output=True, text=True); "
               "s=time.perf_counter()-t; sys.stdout.write(r.stdout); sys.stderr.write(r.stderr); "
               "print('__RSS__', resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024, s); "
               "sys.exit(r.returncode)")
    proc = subprocess.run([sys.executable, "-c", wrapper, *cmd], capture_output=True, text=True)
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(cmd[:4])} failed:\n{proc.stderr}")
    body, tail = proc.stdout.rsplit("__RSS__", 1)
    rss, seconds = (float(v) for v in tail.split())
    return seconds, rss, body


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rows", type=int, default=100_000)
    ap.add_argument("--val", type=int, default=10_000)
    ap.add_argument("--dims", type=int, nargs=2, default=[1536, 2048])
    ap.add_argument("--repeats", type=int, default=2, help="runs of each side, alternating; the best is kept")
    ap.add_argument("--work", type=Path, default=ROOT / "runs" / "bench_solve")
    ap.add_argument("--out", type=Path, default=ROOT / "bench" / "results")
    args = ap.parse_args()

    from lintwin.storage.synthetic import write_synthetic_store

    store = args.work / f"s_{args.rows}_{args.dims[0]}_{args.dims[1]}.zarr"
    if not store.exists():
        write_synthetic_store(store, train=args.rows, val=args.val, dim_a=args.dims[0], dim_b=args.dims[1])
    lintwin_cmd = [sys.executable, "-m", "lintwin.cli", "solve", str(store), "--src", "A", "--dst", "B", "--both",
                   "-q", "--device", "cpu"]
    ridge_cmd = [sys.executable, "-c", RIDGE, str(store)]
    runs: dict[str, list[tuple[float, float]]] = {"lintwin solve --both": [], "2 x sklearn Ridge": []}
    for _ in range(args.repeats):
        for label, cmd in (("lintwin solve --both", lintwin_cmd), ("2 x sklearn Ridge", ridge_cmd)):
            seconds, rss, out = run_child(cmd)
            runs[label].append((seconds, rss))
            print(f"{label}: {seconds:.2f} s, peak RSS {rss:.0f} MB", flush=True)
    best = {k: min(v) for k, v in runs.items()}
    ratio = best["2 x sklearn Ridge"][0] / best["lintwin solve --both"][0]
    lines = [
        f"solve --both as a whole process vs two Ridge fits: {args.rows} train + {args.val} val rows, "
        f"{args.dims[0]} <-> {args.dims[1]}",
        f"machine: {platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}; "
        f"best of {args.repeats} alternating runs each",
        "",
        f"{'process':<24}{'wall s':>10}{'peak RSS MB':>14}",
    ]
    lines += [f"{k:<24}{v[0]:>10.2f}{v[1]:>14.0f}" for k, v in best.items()]
    lines += ["", f"ratio (Ridge / lintwin): {ratio:.2f}x",
              f"command: python bench/bench_solve_process.py --rows {args.rows} --dims {args.dims[0]} {args.dims[1]}"]
    text = "\n".join(lines) + "\n"
    print(text)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / f"solve_process_{args.rows}_{args.dims[0]}_{args.dims[1]}.txt").write_text(text)


if __name__ == "__main__":
    main()
