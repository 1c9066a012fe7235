"""Closed-form lintwin against what a user would otherwise pick, on the paper's shapes.

For each n (rows) it writes realistic synthetic features (1536-dim "A" and 2048-dim "B":
non-negative, half zeros, correlated, related through a shared latent) to a zarr store with
lintwin's own store code, then measures in the same run, each competitor in its own
process (so peak RSS is its own):

- lintwin lstsq, both maps from one streaming pass over the store (float32 products on
  shifted blocks, and --precision float64);
- scikit-learn LinearRegression() and Ridge(alpha=1e-8, solver="cholesky"), one fit per
  direction, on the features already in memory (loading is not timed);
- scipy.linalg.lstsq (gelsd) in float64 on [F, 1]: the accuracy reference;
- the paper's Adam (lintwin --method adam, paper settings) timed per iteration and
  extrapolated to 100k iterations; a fixed budget from random init, the iterations it
  needs to reach the closed-form map's val loss, and a warm start from the closed form;
- the BLAS ceiling: float32 GEMM (A^T B) and SYRK ([A B]^T [A B]) of the same shapes.

    python bench/bench_solvers.py --quick                  # < 1 minute, small shapes
    python bench/bench_solvers.py --sizes 20000 50000 100000 200000
    python bench/bench_solvers.py --sizes 1000000 --only lintwin sk_ridge   # memory at scale
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
COMPETITORS = ["lintwin", "lintwin64", "sk_ridge", "sk_linreg", "scipy", "adam"]


# --------------------------------------------------------------------------- workers
def _load(store_path: str, split: str = "train") -> tuple[np.ndarray, np.ndarray]:
    from lintwin import FeatureStore

    s = FeatureStore.open(store_path)
    return s.features(split, "A")[:], s.features(split, "B")[:]


def _save(out: Path, maps: dict[str, tuple[np.ndarray, np.ndarray]]) -> None:
    np.savez(out, **{f"{k}_W": w for k, (w, _) in maps.items()}, **{f"{k}_b": b for k, (_, b) in maps.items()})


def worker(name: str, store: str, out: Path, args: argparse.Namespace) -> dict:
    """Fit both directions with one competitor; return timings, save (W, b) per direction."""
    info: dict = {}
    if name in ("lintwin", "lintwin64"):
        from lintwin import FeatureStore, accumulate_store, maps_from_moments

        s = FeatureStore.open(store)
        t0 = time.perf_counter()
        m = accumulate_store(s, "A", "B", precision="float64" if name == "lintwin64" else "float32",
                             device="cpu", progress=False)
        t1 = time.perf_counter()
        ab, ba = maps_from_moments(m, both=True)
        t2 = time.perf_counter()
        info.update(seconds=t2 - t0, accumulate_seconds=t1 - t0, solve_seconds=t2 - t1)
        _save(out, {"ab": (ab.weight, ab.bias), "ba": (ba.weight, ba.bias)})
    elif name in ("sk_ridge", "sk_linreg"):
        from sklearn.linear_model import LinearRegression, Ridge

        a, b = _load(store)
        t0 = time.perf_counter()
        maps = {}
        for key, x, y in (("ab", a, b), ("ba", b, a)):
            est = Ridge(alpha=1e-8, solver="cholesky") if name == "sk_ridge" else LinearRegression()
            est.fit(x, y)
            maps[key] = (est.coef_, est.intercept_)
        info["seconds"] = time.perf_counter() - t0
        _save(out, maps)
    elif name == "scipy":
        import scipy.linalg

        a, b = _load(store)
        t0 = time.perf_counter()
        maps = {}
        for key, x, y in (("ab", a, b), ("ba", b, a)):
            x1 = np.hstack([x.astype(np.float64), np.ones((len(x), 1))])
            coef = scipy.linalg.lstsq(x1, y.astype(np.float64), lapack_driver="gelsd", check_finite=False)[0]
            del x1
            maps[key] = (coef[:-1].T, coef[-1])
        info["seconds"] = time.perf_counter() - t0
        _save(out, maps)
    elif name == "adam":
        info.update(_adam_worker(store, out, args))
    info["peak_rss_mb"] = peak_rss_mb()
    return info


def peak_rss_mb() -> float:
    """This process's peak resident set (VmHWM): unlike ru_maxrss it does not carry over the
    memory of the parent that forked it before exec."""
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _adam_worker(store_path: str, out: Path, args: argparse.Namespace) -> dict:
    """Paper's Adam, A→B: per-iteration time, a fixed budget, iterations to the closed form's val loss."""
    from lintwin import AdamOptions, AffineMap, FeatureStore, evaluate
    from lintwin.solvers import fit_adam
    from lintwin.storage.batches import StoreBatches

    s = FeatureStore.open(store_path)
    a_val, b_val = _load(store_path, "val")
    closed_val = args.closed_val_loss
    like = np.zeros(1, np.float32)
    info: dict = {}
    opts = AdamOptions(iterations=args.adam_iters)
    t0 = time.perf_counter()
    fit_adam(StoreBatches(s, "train", "A", "B", batch=opts.batch), src_dim=a_val.shape[1], dst_dim=b_val.shape[1],
             options=opts, like=like, progress=False)
    per_it = (time.perf_counter() - t0) / args.adam_iters
    info.update(seconds_per_iteration=per_it, seconds=per_it * 100_000 * 2, extrapolated=True)

    trace: list[tuple[int, float]] = []

    def monitor(t: int, w: np.ndarray, b: np.ndarray) -> bool:
        loss = evaluate(AffineMap(w, b), a_val, b_val)["paper_loss"]
        trace.append((t, loss))
        return False

    budget = AdamOptions(iterations=args.adam_budget)
    t0 = time.perf_counter()
    w, b, _ = fit_adam(StoreBatches(s, "train", "A", "B", batch=budget.batch), src_dim=a_val.shape[1],
                       dst_dim=b_val.shape[1], options=budget, like=like, progress=False, monitor=monitor,
                       monitor_every=max(1, args.adam_budget // 20))
    info["budget_seconds"] = time.perf_counter() - t0
    reached = next((t for t, loss in trace if loss <= closed_val), None)
    info.update(budget_iterations=args.adam_budget, val_trace=trace, iterations_to_closed_form=reached)
    maps = {"ab": (w, b)}
    closed = np.load(args.closed_maps)
    warm = AdamOptions(iterations=args.adam_budget, lr=args.warm_lr)
    w2, b2, _ = fit_adam(StoreBatches(s, "train", "A", "B", batch=warm.batch), src_dim=a_val.shape[1],
                         dst_dim=b_val.shape[1], options=warm, like=like, init=(closed["ab_W"], closed["ab_b"]),
                         progress=False)
    maps["ab_warm"] = (w2, b2)
    _save(out, maps)
    return info


def run_worker(name: str, store: Path, tmp: Path, args: argparse.Namespace, extra: list[str] = ()) -> dict:
    out = tmp / f"{name}.npz"
    cmd = [sys.executable, __file__, "--worker", name, "--store", str(store), "--maps", str(out),
           "--adam-iters", str(args.adam_iters), "--adam-budget", str(args.adam_budget),
           "--warm-lr", str(args.warm_lr), *extra]
    limit = int(args.mem_limit_gb * 2**30) if args.mem_limit_gb else None

    def cap_memory() -> None:  # a clean MemoryError instead of the kernel's OOM killer
        if limit:
            resource.setrlimit(resource.RLIMIT_AS, (limit, limit))

    proc = subprocess.run(cmd, capture_output=True, text=True, preexec_fn=cap_memory)
    if proc.returncode != 0:
        tail = (proc.stderr or "").strip().splitlines()[-1:] or [f"exit {proc.returncode}"]
        return {"failed": f"{tail[0]} (exit {proc.returncode})"}
    info = json.loads(proc.stdout.strip().splitlines()[-1])
    info["maps"] = str(out)
    return info


# --------------------------------------------------------------------------- main
def blas_ceiling(a: np.ndarray, b: np.ndarray) -> dict:
    """GFLOP/s of float32 GEMM A^T B and SYRK Z^T Z (Z = [A B]) on the same shapes, best of 2."""
    from scipy.linalg.blas import ssyrk

    z = np.hstack([a, b])
    n, da, db, d = len(a), a.shape[1], b.shape[1], z.shape[1]
    times = {}
    for key, fn in (("gemm", lambda: a.T @ b), ("syrk", lambda: ssyrk(1.0, z.T, trans=0))):  # z.T is F-ordered: no copy
        best = np.inf
        for _ in range(2):
            t0 = time.perf_counter()
            fn()
            best = min(best, time.perf_counter() - t0)
        times[key] = best
    return {"gemm_gflops": 2 * n * da * db / times["gemm"] / 1e9, "syrk_gflops": n * d * (d + 1) / times["syrk"] / 1e9,
            "syrk_seconds": times["syrk"]}


def metrics(maps_file: str, store_path: Path, key: str, ref: dict | None, src: str, dst: str,
            ref_key: str | None = None) -> dict:
    from lintwin import AffineMap, FeatureStore, evaluate_store

    z = np.load(maps_file)
    w, b = z[f"{key}_W"], z[f"{key}_b"]
    m = evaluate_store(AffineMap(np.asarray(w, np.float64), np.asarray(b, np.float64), src=src, dst=dst),
                       FeatureStore.open(store_path), "val", device="cpu", progress=False)
    out = {"val_r2": m["r2"], "val_cosine": m["mean_cosine"], "val_paper_loss": m["paper_loss"]}
    if ref is not None:
        r = ref[f"{ref_key or key}_W"]
        out["w_rel_err"] = float(np.linalg.norm(w - r) / np.linalg.norm(r))
    return out


def bench_size(n: int, args: argparse.Namespace, work: Path) -> dict:
    from lintwin import FeatureStore
    from lintwin.storage.synthetic import write_synthetic_store

    da, db = args.dims
    store = work / f"synthetic_n{n}_{da}x{db}.zarr"
    if not (store / "zarr.json").exists() or not _complete(store):
        print(f"[n={n}] writing store {store}", flush=True)
        write_synthetic_store(store, train=n, val=args.val, dim_a=da, dim_b=db, seed=1)
    row: dict = {"n": n, "dims": [da, db]}
    only = args.only or COMPETITORS
    if any(c in only for c in ("sk_ridge", "sk_linreg", "scipy")) and n * (da + db) * 4 < 0.4 * _ram():
        a = FeatureStore.open(store).features("train", "A")[:]
        b = FeatureStore.open(store).features("train", "B")[:]
        row["ceiling"] = blas_ceiling(a, b)
        del a, b
    results: dict[str, dict] = {}
    for name in [c for c in COMPETITORS if c in only and c != "adam"]:
        print(f"[n={n}] {name} ...", flush=True)
        results[name] = run_worker(name, store, work, args)
        print(f"[n={n}] {name}: {_short(results[name])}", flush=True)
    # The float64 reference: scipy's gelsd; where it was not run (it takes ~20 min at n = 200k
    # here), lintwin's all-float64 solve, which matches it to 1e-9 wherever both ran.
    ref_name = "scipy" if "maps" in results.get("scipy", {}) else "lintwin64"
    ref = dict(np.load(results[ref_name]["maps"])) if "maps" in results.get(ref_name, {}) else None
    row["reference"] = ref_name if ref is not None else None
    for info in results.values():
        if "maps" in info:
            for key, (s, d) in (("ab", ("A", "B")), ("ba", ("B", "A"))):
                info[key] = metrics(info["maps"], store, key, ref, s, d)
    if "adam" in only and "maps" in results.get("lintwin", {}):
        closed_val = results["lintwin"]["ab"]["val_paper_loss"]
        print(f"[n={n}] adam ...", flush=True)
        info = run_worker("adam", store, work, args, ["--closed-val-loss", str(closed_val),
                                                      "--closed-maps", results["lintwin"]["maps"]])
        if "maps" in info:
            info["ab"] = metrics(info["maps"], store, "ab", ref, "A", "B")
            info["ab_warm"] = metrics(info["maps"], store, "ab_warm", ref, "A", "B", ref_key="ab")
        results["adam"] = info
    row["results"] = results
    d = da + db
    lw = results.get("lintwin", {})
    if "accumulate_seconds" in lw:
        lw["accumulate_gflops"] = n * d * (d + 1) / lw["accumulate_seconds"] / 1e9
    return row


def _complete(store: Path) -> bool:
    from lintwin import FeatureStore, LintwinError

    try:
        s = FeatureStore.open(store)
        for split in ("train", "val"):
            for net in ("A", "B"):
                s.features(split, net)
        return True
    except LintwinError:
        return False


def _ram() -> int:
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")


def _short(info: dict) -> str:
    if "failed" in info:
        return "FAILED: " + info["failed"]
    return f"{info['seconds']:.2f} s, peak RSS {info['peak_rss_mb']:.0f} MB"


def table(rows: list[dict]) -> str:
    from lintwin.experiments.report import format_table

    lines = []
    for row in rows:
        n, res = row["n"], row["results"]
        base = res.get("lintwin", {}).get("seconds")
        body = []
        for name, info in res.items():
            if "failed" in info:
                body.append((name, "failed", "", "", "", "", "", "", info["failed"][:60]))
                continue
            ab = info.get("ab", {})
            ratio = f"{info['seconds'] / base:.1f}x" if base else ""
            err = ab.get("w_rel_err")
            body.append((name, f"{info['seconds']:.2f}" + ("*" if info.get("extrapolated") else ""), ratio,
                         f"{info['peak_rss_mb']:.0f}", "" if err is None else f"{err:.1e}",
                         f"{ab.get('val_r2', float('nan')):.4f}", f"{ab.get('val_cosine', float('nan')):.4f}",
                         f"{ab.get('val_paper_loss', float('nan')):.4f}", ""))
        c = row.get("ceiling")
        lw = res.get("lintwin", {})
        head = (f"n = {n:,}, A {row['dims'][0]} ↔ B {row['dims'][1]}, both directions; "
                f"W error against {row.get('reference')}")
        if c and "accumulate_gflops" in lw:
            head += (f"; BLAS ceiling GEMM {c['gemm_gflops']:.0f} GFLOP/s, SYRK {c['syrk_gflops']:.0f} GFLOP/s; "
                     f"lintwin accumulation {lw['accumulate_gflops']:.0f} GFLOP/s "
                     f"({100 * lw['accumulate_gflops'] / c['syrk_gflops']:.0f}% of SYRK)")
        lines += [head, format_table(["solver", "seconds", "vs lintwin", "peak RSS MB", "W rel err (A→B)",
                                      "val R²", "val cos", "val loss", "note"], body)]
        adam = res.get("adam", {})
        if "ab" in adam:
            lines.append(f"  Adam: {1000 * adam['seconds_per_iteration']:.1f} ms/iteration (batch 2048) → "
                         f"{adam['seconds']:.0f} s for 2 x 100k iterations (* extrapolated); after "
                         f"{adam['budget_iterations']} iterations val loss {adam['ab']['val_paper_loss']:.4f}, "
                         f"cos {adam['ab']['val_cosine']:.4f}; reached the closed form's val loss after "
                         f"{adam['iterations_to_closed_form'] or 'more than ' + str(adam['budget_iterations'])} "
                         f"iterations; warm-started from the closed form: val loss "
                         f"{adam['ab_warm']['val_paper_loss']:.4f}, cos {adam['ab_warm']['val_cosine']:.4f}")
        lines.append("")
    return "\n".join(lines)


def plot(rows: list[dict], path: Path) -> None:
    from lintwin.experiments.report import new_figure, save_figure

    fig, axes = new_figure(figsize=(7, 4.5))
    ax = axes[0, 0]
    names = sorted({k for r in rows for k, v in r["results"].items() if "seconds" in v and k != "adam"})
    for name in names:
        pts = [(r["n"], r["results"][name]["seconds"]) for r in rows if "seconds" in r["results"].get(name, {})]
        ax.plot(*zip(*pts), marker="o", label=name)
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("training rows n")
    ax.set_ylabel("seconds, both directions")
    ax.set_title("Fitting both affine maps (1536 ↔ 2048)")
    ax.legend()
    save_figure(fig, path)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="small shapes, under a minute")
    ap.add_argument("--sizes", type=int, nargs="+", default=[20000, 50000, 100000, 200000])
    ap.add_argument("--dims", type=int, nargs=2, default=[1536, 2048])
    ap.add_argument("--val", type=int, default=10000)
    ap.add_argument("--only", nargs="+", choices=COMPETITORS)
    ap.add_argument("--adam-iters", type=int, default=50, help="iterations timed to extrapolate to 100k")
    ap.add_argument("--adam-budget", type=int, default=1000, help="iterations of the fixed-budget Adam runs")
    ap.add_argument("--warm-lr", type=float, default=1e-4, help="Adam lr when warm-started from the closed form")
    ap.add_argument("--work", type=Path, default=None, help="where stores go (default: a temp dir)")
    ap.add_argument("--mem-limit-gb", type=float, default=None,
                    help="address-space cap per competitor process, so an oversized fit fails with MemoryError")
    ap.add_argument("--out", type=Path, default=ROOT / "bench" / "results")
    ap.add_argument("--worker", help=argparse.SUPPRESS)
    ap.add_argument("--store", help=argparse.SUPPRESS)
    ap.add_argument("--maps", type=Path, help=argparse.SUPPRESS)
    ap.add_argument("--closed-val-loss", type=float, help=argparse.SUPPRESS)
    ap.add_argument("--closed-maps", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.worker:
        print(json.dumps(worker(args.worker, args.store, args.maps, args)))
        return
    if args.quick:
        args.sizes, args.dims, args.val = [4000], [96, 128], 1000
        args.adam_iters, args.adam_budget = 20, 300
    args.out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=args.work) as tmp:
        work = args.work or Path(tmp)
        work.mkdir(parents=True, exist_ok=True)
        rows = [bench_size(n, args, Path(tmp) if args.work is None else work) for n in args.sizes]
    text = table(rows)
    print(text)
    tag = "quick" if args.quick else "_".join(str(n) for n in args.sizes)
    if args.only and not args.quick:
        tag += "_" + "-".join(args.only)
    meta = {"machine": f"{platform.machine()}, {os.cpu_count()} cores, {_ram() / 2**30:.0f} GiB",
            "python": platform.python_version(), "numpy": np.__version__, "command": " ".join(sys.argv)}
    (args.out / f"solvers_{tag}.json").write_text(json.dumps({"meta": meta, "rows": rows}, indent=2, default=str))
    (args.out / f"solvers_{tag}.txt").write_text(text + "\n")
    if len(rows) > 1:
        plot(rows, args.out / f"solvers_{tag}.png")


if __name__ == "__main__":
    main()
