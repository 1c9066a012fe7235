"""Exact similarity from one streaming pass against the minibatch CKA estimator, in the same run.

Writes a synthetic store (lintwin.synthetic: ReLU features of a shared latent) of ROWS rows of
DIM_A + DIM_B features, then

1. times ``lintwin similarity`` as a whole process (every measure: exact linear and debiased CKA, the
   CCA spectrum, SVCCA, PWCCA, shape metrics, R²; ``--folds 0``, no null), float32 products
   summed in float64, and reads its exact values from the JSON;
2. runs the minibatch estimator a user would otherwise run over the same store, for several batch
   sizes: Nguyen et al. (2021)'s average of unbiased HSIC over minibatches (as torch-cka and its
   clones do), CKA = mean HSIC(K,L) / sqrt(mean HSIC(K,K) mean HSIC(L,L)), and the naive mean of
   per-batch linear CKA (feature-space form); each with its own compute time (the shared store reads
   are counted in both) and its error against the exact linear CKA.

    python bench/bench_similarity.py [--rows 200000] [--dims 1536 2048] [--batches 256 1024 4096]
"""

from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from lintwin.experiments.report import format_table
from lintwin.storage.store import FeatureStore
from lintwin.storage.synthetic import write_synthetic_store

ROOT = Path(__file__).resolve().parents[1]


def hsic_unbiased(K: np.ndarray, L: np.ndarray) -> float:
    """Song et al. (2012) unbiased HSIC of two Gram matrices (diagonals are zeroed here)."""
    n = K.shape[0]
    K = K - np.diag(np.diag(K))
    L = L - np.diag(np.diag(L))
    kl = K.sum(1) @ L.sum(1)
    return float((np.sum(K * L) + K.sum() * L.sum() / ((n - 1) * (n - 2)) - 2.0 / (n - 2) * kl) / (n * (n - 3)))


def minibatch_cka(store: FeatureStore, batch: int, seed: int = 0) -> dict[str, float]:
    """Minibatch CKA over one shuffled epoch of the store's train split (float32 Grams, float64 sums)."""
    fa, fb = store.features("train", "A"), store.features("train", "B")
    n = fa.shape[0]
    rng = np.random.default_rng(seed)
    t0 = time.perf_counter()
    kl = kk = ll = t_hsic = t_naive = 0.0
    naive = []
    read = 0.0
    chunk = max(batch, 16384)
    for lo in range(0, n - n % batch, chunk):  # read contiguous chunks, shuffle within them into batches
        t1 = time.perf_counter()
        a, b = np.asarray(fa[lo : lo + chunk]), np.asarray(fb[lo : lo + chunk])
        read += time.perf_counter() - t1
        perm = rng.permutation(a.shape[0])
        for s in range(0, a.shape[0] - batch + 1, batch):
            x, y = a[perm[s : s + batch]], b[perm[s : s + batch]]
            t1 = time.perf_counter()
            K, L = x @ x.T, y @ y.T
            kl += hsic_unbiased(K, L)
            kk += hsic_unbiased(K, K)
            ll += hsic_unbiased(L, L)
            t2 = time.perf_counter()
            xc, yc = x - x.mean(0), y - y.mean(0)
            naive.append(float(np.sum((xc.T @ yc) ** 2) / (np.linalg.norm(xc.T @ xc) * np.linalg.norm(yc.T @ yc))))
            t_hsic += t2 - t1
            t_naive += time.perf_counter() - t2
    total = time.perf_counter() - t0
    return {"cka_minibatch": kl / math.sqrt(kk * ll), "cka_naive_mean": float(np.mean(naive)),
            "seconds_minibatch": total - t_naive, "seconds_naive": total - t_hsic, "read_seconds": read,
            "batches": len(naive)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rows", type=int, default=200_000)
    ap.add_argument("--dims", type=int, nargs=2, default=[1536, 2048])
    ap.add_argument("--batches", type=int, nargs="+", default=[256, 1024, 4096])
    ap.add_argument("--store", type=Path, default=None, help="reuse or create the store here (default: a temp dir)")
    ap.add_argument("--out", type=Path, default=ROOT / "bench" / "results")
    args = ap.parse_args()
    da, db = args.dims
    with tempfile.TemporaryDirectory(dir=ROOT / "runs" if (ROOT / "runs").is_dir() else None) as tmp:
        path = args.store or Path(tmp) / "s.zarr"
        t0 = time.perf_counter()
        if not path.exists():
            write_synthetic_store(path, train=args.rows, dim_a=da, dim_b=db)
        write_s = time.perf_counter() - t0
        store = FeatureStore.open(path)
        load0 = os.getloadavg()[0]
        assert store.rows("train") == args.rows and store.info("train", "A")["dim"] == da
        out_dir = Path(tmp) / "sim"
        cmd = [str(Path(sys.executable).parent / "lintwin"), "similarity", str(path), "--a", "A", "--b", "B",
               "--folds", "0", "--precision", "float32", "--device", "cpu", "--out", str(out_dir), "-q"]
        t0 = time.perf_counter()
        proc = subprocess.run(cmd, check=False, capture_output=True, text=True)
        exact_s = time.perf_counter() - t0
        if proc.returncode:
            raise SystemExit(proc.stderr)
        exact = json.loads((out_dir / "similarity_A_B_train.json").read_text())
        cka = exact["values"]["cka"]
        rows = [["lintwin similarity (exact, one pass)", "—", f"{exact_s:.1f}", f"{cka:.6f}", "0",
                 f"{exact['values']['cka_debiased']:.6f}"]]
        results = {"rows": args.rows, "dims": [da, db], "write_store_seconds": write_s, "command": " ".join(cmd[1:]),
                   "exact": {"seconds": exact_s, "accumulate_seconds": exact["info"]["accumulate_seconds"],
                             "values": exact["values"], "cca_spectrum_len": len(exact["cca_spectrum"])},
                   "minibatch": []}
        for batch in args.batches:
            r = minibatch_cka(store, batch)
            r["batch"] = batch
            r["error_minibatch"] = r["cka_minibatch"] - cka
            r["error_naive"] = r["cka_naive_mean"] - cka
            results["minibatch"].append(r)
            rows.append([f"minibatch CKA, Nguyen et al. (batch {batch})", str(r["batches"]), f"{r['seconds_minibatch']:.1f}",
                         f"{r['cka_minibatch']:.6f}", f"{r['error_minibatch']:+.2e}", "—"])
            rows.append([f"mean of per-batch CKA (batch {batch})", str(r["batches"]), f"{r['seconds_naive']:.1f}",
                         f"{r['cka_naive_mean']:.6f}", f"{r['error_naive']:+.2e}", "—"])
    results["load_average_1min"] = {"start": load0, "end": os.getloadavg()[0]}
    text = (f"{args.rows} rows of {da} + {db} features (synthetic, lintwin.synthetic), {os.cpu_count()} CPU cores, "
            f"load average {load0:.1f} at the start and {os.getloadavg()[0]:.1f} at the end (other work on the "
            "machine slows every row alike)\n"
            + format_table(["estimator", "batches", "seconds", "linear CKA", "error vs exact", "debiased CKA"], rows)
            + f"\nexact run: {exact_s:.1f} s whole process ({results['exact']['accumulate_seconds']:.1f} s streaming "
              f"pass), {results['exact']['cca_spectrum_len']} canonical correlations, mean ρ "
              f"{exact['values']['cca_mean_rho']:.4f}\n")
    args.out.mkdir(parents=True, exist_ok=True)
    stem = args.out / f"similarity_{args.rows}_{da}_{db}"
    stem.with_suffix(".json").write_text(json.dumps(results, indent=2))
    stem.with_suffix(".txt").write_text(text)
    print(text)


if __name__ == "__main__":
    main()
