"""What ``lintwin similarity --null K`` costs beyond its moments pass, on few rows of wide features.

Few images of wide features (372 rows x 1280 units, as a small labelled set through a large
network) make the measures, not the streaming pass, the cost: each side's eigendecompositions, the
CV-ridge R² fold by fold and every null sample. For each pair of widths this writes a synthetic
store, runs ``lintwin similarity STORE --a A --b B --null K --format json -q`` as a whole process and
reports its wall and CPU time against its own moments pass. ``--compare-with DIR`` runs the same command with
another lintwin source tree first on ``PYTHONPATH`` (an older checkout), in the same run, and reports
the largest difference between the two versions' values (shape angles compared through their cosine,
since an angle near 0 magnifies the rounding of its cosine).

    python bench/bench_similarity_cost.py [--rows 372] [--dims 1280x1280 1280x384] [--null 2]
                                          [--compare-with /path/to/old/src]
"""

from __future__ import annotations

import argparse
import json
import math
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from lintwin.experiments.report import format_table
from lintwin.storage.synthetic import write_synthetic_store

ROOT = Path(__file__).resolve().parents[1]


def run(store: Path, null: int, folds: int, src: Path | None) -> tuple[float, float, dict]:
    """Wall and CPU seconds (user + system) and JSON output of one ``lintwin similarity`` process (``src`` first
    on PYTHONPATH). CPU seconds are what a busy machine changes least."""
    env = dict(os.environ)
    if src is not None:
        env["PYTHONPATH"] = os.pathsep.join([str(src), env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    cmd = [sys.executable, "-m", "lintwin.cli", "similarity", str(store), "--a", "A", "--b", "B", "--null", str(null),
           "--folds", str(folds), "--format", "json", "-q"]
    before, t0 = resource.getrusage(resource.RUSAGE_CHILDREN), time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=store.parent, check=False)
    seconds, after = time.perf_counter() - t0, resource.getrusage(resource.RUSAGE_CHILDREN)
    if proc.returncode:
        raise SystemExit(proc.stderr[-2000:])
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return seconds, cpu, json.loads(proc.stdout)


def largest_difference(a: dict, b: dict) -> float:
    """Largest |difference| of two runs' values and null samples (shape angles through their cosine)."""
    def pairs() -> list[tuple[str, float | None, float | None]]:
        out = [(k, a["values"][k], b["values"].get(k)) for k in a["values"]]
        for k, xs in a.get("null", {}).get("samples", {}).items():
            out += [(k, x, y) for x, y in zip(xs, b["null"]["samples"][k])]
        return out

    worst = 0.0
    for key, x, y in pairs():
        if x is None or y is None:
            worst = worst if x is y else math.inf
            continue
        if key.startswith("shape_angle"):
            x, y = math.cos(x), math.cos(y)
        worst = max(worst, abs(x - y))
    return worst


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rows", type=int, default=372)
    ap.add_argument("--dims", nargs="+", default=["1280x1280", "1280x384"], help="widths of A and B, as AxB")
    ap.add_argument("--null", type=int, default=2)
    ap.add_argument("--folds", type=int, default=5)
    ap.add_argument("--compare-with", type=Path, default=None, help="another lintwin source tree (its parent of lintwin/)")
    ap.add_argument("--quick", action="store_true", help="60 rows of 200 x 200 and 200 x 64 (seconds)")
    ap.add_argument("--out", type=Path, default=ROOT / "bench" / "results")
    args = ap.parse_args()
    if args.quick:
        args.rows, args.dims = 60, ["200x200", "200x64"]
    load0 = os.getloadavg()[0]
    rows, results = [], []
    with tempfile.TemporaryDirectory() as tmp:
        for shape in args.dims:
            da, db = (int(x) for x in shape.lower().split("x"))
            store = Path(tmp) / f"s{da}_{db}.zarr"
            write_synthetic_store(store, train=args.rows, dim_a=da, dim_b=db)
            versions = ([("other", args.compare_with)] if args.compare_with else []) + [("this", None)]
            got = {}
            for label, src in versions:
                seconds, cpu, out = run(store, args.null, args.folds, src)
                got[label] = out
                moments = out["info"]["accumulate_seconds"]
                results.append({"dims": [da, db], "version": label, "seconds": seconds, "cpu_seconds": cpu,
                                "moments_seconds": moments})
                rows.append([f"{args.rows} x ({da} + {db})", label, f"{seconds:.1f}", f"{cpu:.1f}", f"{moments:.1f}",
                             f"{seconds / moments:.0f}x"])
            if "other" in got:
                diff = largest_difference(got["other"], got["this"])
                results[-1]["largest_difference_vs_other"] = diff
                old, new = results[-2], results[-1]
                rows.append(["", "other / this", f"{old['seconds'] / new['seconds']:.1f}x",
                             f"{old['cpu_seconds'] / new['cpu_seconds']:.1f}x", "", f"largest |Δ| {diff:.1e}"])
    text = (f"lintwin similarity --null {args.null} --folds {args.folds}, whole process; {os.cpu_count()} CPU cores, "
            f"load average {load0:.1f} at the start and {os.getloadavg()[0]:.1f} at the end (a shared machine)\n"
            + format_table(["features", "version", "seconds", "CPU s", "moments pass s", "whole / pass"], rows)
            + "\n")
    args.out.mkdir(parents=True, exist_ok=True)
    stem = args.out / ("similarity_cost_quick" if args.quick else f"similarity_cost_{args.rows}")
    stem.with_suffix(".json").write_text(json.dumps({"command": sys.argv, "results": results}, indent=2))
    stem.with_suffix(".txt").write_text(text)
    print(text)


if __name__ == "__main__":
    main()
