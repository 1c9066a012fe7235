"""The one definition of the ``solve --both`` benchmark (used by bench_solve_process.py and bench_pipeline.py).

The job: fit A→B and B→A on the training split of a store (realistic synthetic features, 1536 ↔ 2048
by default) and score both maps on the held-out split. Three timings of the same run, each in its
own process, best of ``repeats`` alternating runs:

- **lintwin**: ``lintwin solve STORE --src A --dst B --both`` as a whole process (start-up, reading
  the store, both maps, the held-out pass), wall time and peak RSS;
- **floor**: what no implementation can skip, on data already in memory: one ``ssyrk`` of the joined
  training rows [A B] plus lintwin's two solves from their moments, timed in-process (loading not timed);
- **Ridge**: two scikit-learn ``Ridge(alpha=1e-8, solver="cholesky")`` fits (one per direction) on
  the training rows in memory, timed in-process (loading not timed).

Ratios: lintwin / floor (the goal: at most 1.5) and Ridge / lintwin (the goal: at least 3).
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

LOAD = """
import sys, time
import numpy as np
from lintwin import FeatureStore
s = FeatureStore.open(sys.argv[1])
a, b = np.asarray(s.features("train", "A")[:]), np.asarray(s.features("train", "B")[:])
"""

RIDGE = LOAD + """
from sklearn.linear_model import Ridge
t = time.perf_counter()
for x, y in ((a, b), (b, a)):
    Ridge(alpha=1e-8, solver="cholesky").fit(x, y)
print("__SECONDS__", time.perf_counter() - t)
"""

FLOOR = LOAD + """
from scipy.linalg import blas
from lintwin.api import accumulate_arrays
from lintwin.solvers import maps_from_moments
z = np.empty((a.shape[0], a.shape[1] + b.shape[1]), np.float32)
z[:, : a.shape[1]], z[:, a.shape[1]:] = a, b
c = np.zeros((z.shape[1], z.shape[1]), np.float32, order="F")
blas.ssyrk(1.0, z[:256].T, beta=0.0, c=c, trans=0, overwrite_c=1)  # warm up
t = time.perf_counter()
blas.ssyrk(1.0, z.T, beta=0.0, c=c, trans=0, overwrite_c=1)
syrk = time.perf_counter() - t
m = accumulate_arrays(a, b)
t = time.perf_counter()
maps_from_moments(m, both=True)
solves = time.perf_counter() - t
print("__SYRK__", syrk, solves)
print("__SECONDS__", syrk + solves)
"""

WRAPPER = ("import resource, subprocess, sys, time; t=time.perf_counter(); "
           "r=subprocess.run(sys.argv[1:], capture_output=True, text=True); "
           "s=time.perf_counter()-t; sys.stdout.write(r.stdout); sys.stderr.write(r.stderr); "
           "print('__RSS__', resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024, s); "
           "sys.exit(r.returncode)")


def run_child(cmd: list[str], code: Path | None = None) -> tuple[float, float, str]:
    """``(wall seconds, peak RSS MB, stdout)`` of a child process; ``code`` is the lintwin tree it imports."""
    env = dict(os.environ)
    if code is not None:
        env["PYTHONPATH"] = str(code)
    proc = subprocess.run([sys.executable, "-c", WRAPPER, *cmd], capture_output=True, text=True, env=env)
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(cmd[:5])} failed:\n{proc.stderr[-3000:]}")
    body, tail = proc.stdout.rsplit("__RSS__", 1)
    rss, seconds = (float(v) for v in tail.split())
    return seconds, rss, body


def timed(body: str) -> float:
    """The in-process time a child printed (``__SECONDS__ s``)."""
    return float(body.rsplit("__SECONDS__", 1)[1].split()[0])


def measure(store: Path, *, repeats: int = 2, codes: dict[str, Path | None] | None = None) -> dict[str, dict]:
    """Best-of-``repeats`` seconds (and peak RSS) of the floor, Ridge and lintwin on ``store``, alternating.

    ``codes`` maps labels to lintwin trees to time (None: the installed one); each repeat runs the
    floor, Ridge and every tree's ``lintwin solve --both`` back to back, so all see the same machine.
    """
    codes = codes or {"": None}
    lintwin = [sys.executable, "-m", "lintwin.cli", "solve", str(store), "--src", "A", "--dst", "B", "--both", "-q",
               "--device", "cpu"]
    names = {label: f"lintwin solve --both{f' ({label})' if label else ''}" for label in codes}
    runs: dict[str, list[tuple[float, float]]] = {"floor (ssyrk + 2 solves)": [], "2 x sklearn Ridge": []}
    runs |= {name: [] for name in names.values()}
    for _ in range(repeats):
        _, rss, out = run_child([sys.executable, "-c", FLOOR, str(store)])
        runs["floor (ssyrk + 2 solves)"].append((timed(out), rss))
        _, rss, out = run_child([sys.executable, "-c", RIDGE, str(store)])
        runs["2 x sklearn Ridge"].append((timed(out), rss))
        for label, code in codes.items():
            seconds, rss, _ = run_child(lintwin, code)
            runs[names[label]].append((seconds, rss))
        print("  ", {k: round(v[-1][0], 2) for k, v in runs.items()}, flush=True)
    best = {k: min(v) for k, v in runs.items()}
    out: dict[str, dict] = {k: {"seconds": v[0], "peak_rss_mb": v[1]} for k, v in best.items()}
    floor, ridge = best["floor (ssyrk + 2 solves)"][0], best["2 x sklearn Ridge"][0]
    out["ratios"] = {name: {"lintwin_over_floor": best[name][0] / floor, "ridge_over_lintwin": ridge / best[name][0]}
                     for name in names.values()}
    return out


def table(result: dict[str, dict]) -> list[str]:
    """The result as text lines (seconds, peak RSS, the two ratios of each lintwin tree)."""
    lines = [f"{'process':<36}{'seconds':>9}{'peak RSS MB':>13}"]
    lines += [f"{k:<36}{v['seconds']:>9.2f}{v['peak_rss_mb']:>13.0f}" for k, v in result.items() if k != "ratios"]
    lines.append("")
    for name, r in result["ratios"].items():
        lines.append(f"{name}: lintwin / floor {r['lintwin_over_floor']:.2f}x (goal <= 1.5); "
                     f"Ridge / lintwin {r['ridge_over_lintwin']:.2f}x (goal >= 3)")
    lines.append("(lintwin: whole process; floor and Ridge: in-process on data in memory, loading not timed)")
    return lines
