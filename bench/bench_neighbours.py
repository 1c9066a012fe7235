"""Exact mutual k-NN at scale: ``lintwin neighbours`` against FAISS used directly and the dense n×n approach.

For each row count, on a synthetic store (lintwin.synthetic: ReLU features of a shared latent) of
DIM_A + DIM_B features, each method runs in its own process (time = wall clock of the work, peak
memory = that process's maximum resident set):

1. ``lintwin neighbours STORE --a A --b B --k 10 --bootstrap 0`` (the whole command: reading the
   store, both exact lists, mutual k-NN and CKNNA);
2. FAISS used directly, as a user would: both arrays loaded into memory, rows L2-normalised in
   float32, ``IndexFlatIP`` search for k+1, the row itself dropped, mutual k-NN by set intersection
   (float32 ranks: near-ties may be ordered differently from the float64 order lintwin certifies);
3. the dense approach of platonic-rep's ``metrics.py`` (``mutual_knn``), written here in PyTorch on
   the CPU: the n×n similarity matrix, a full descending ``argsort`` of each row, two dense n×n
   masks. Its memory grows as n² (measured per n², extrapolated to where 24 GB stop it); it runs
   only at the ``--dense-rows`` sizes, on the first rows of the store, with lintwin on the same rows.

    python bench/bench_neighbours.py [--rows 100000 200000] [--dims 1536 2048] [--dense-rows 2000 5000 10000]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
K = 10


def _peak_mib() -> float:
    """This process's peak resident memory (VmHWM: unlike ru_maxrss, not inherited from the parent across exec)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024.0
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def child_lintwin(store: str, rows: int, out: str) -> dict:
    from lintwin.cli import app

    args = ["neighbours", store, "--a", "A", "--b", "B", "--k", str(K), "--bootstrap", "0", "--out", out, "-q"]
    if rows:
        args += ["--split", "dense"]
    t0 = time.perf_counter()
    try:
        app(args, standalone_mode=False)
    except SystemExit as exc:
        if exc.code:
            raise
    seconds = time.perf_counter() - t0
    res = json.loads((Path(out) / "neighbours.json").read_text())
    return {"seconds": seconds, "mutual_knn": res["mutual_knn"], "cknna": res["cknna"],
            "rechecked_rows": {k: v["rechecked_rows"] for k, v in res["lists"].items()}}


def _load(store: str, name: str, rows: int) -> np.ndarray:
    from lintwin.storage.store import FeatureStore

    s = FeatureStore.open(store)
    split = "dense" if rows else "train"
    return np.concatenate([x for _, (x,) in s.iter_blocks(split, [name])])


def child_faiss(store: str, rows: int) -> dict:
    import faiss

    t0 = time.perf_counter()
    lists = []
    for name in ("A", "B"):
        x = _load(store, name, rows)
        faiss.normalize_L2(x)
        index = faiss.IndexFlatIP(x.shape[1])
        index.add(x)
        _, idx = index.search(x, K + 1)
        own = idx == np.arange(x.shape[0])[:, None]
        keep = np.where(own.any(1)[:, None], ~own, np.arange(K + 1)[None, :] < K)  # drop self, else the last
        lists.append(idx[keep].reshape(x.shape[0], K))
        del x, index
    mk = float(np.mean([np.intersect1d(a, b).size for a, b in zip(*lists)]) / K)
    return {"seconds": time.perf_counter() - t0, "mutual_knn": mk}


def child_dense(store: str, rows: int) -> dict:
    import torch

    torch.set_num_threads(os.cpu_count() or 1)
    t0 = time.perf_counter()
    masks = []
    for name in ("A", "B"):
        x = torch.from_numpy(_load(store, name, rows))
        x = torch.nn.functional.normalize(x, p=2, dim=-1)
        sim = x @ x.T
        sim.fill_diagonal_(-1e8)
        knn = sim.argsort(dim=1, descending=True)[:, :K]
        del sim
        m = torch.zeros(rows, rows)
        m[torch.arange(rows)[:, None], knn] = 1.0
        masks.append(m)
    mk = float(((masks[0] * masks[1]).sum(dim=1) / K).mean())
    return {"seconds": time.perf_counter() - t0, "mutual_knn": mk}


def run_child(method: str, store: Path, rows: int, tmp: Path) -> dict:
    cmd = [sys.executable, __file__, "--child", method, "--store", str(store), "--child-rows", str(rows),
           "--child-out", str(tmp / f"{method}-{rows}")]
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if proc.returncode:
        return {"failed": proc.stderr.strip().splitlines()[-1] if proc.stderr.strip() else f"exit {proc.returncode}"}
    return json.loads(proc.stdout.strip().splitlines()[-1])


def dense_store(src: Path, dst: Path, rows: int) -> None:
    """A copy of the first ``rows`` rows of A and B as split 'dense' of a new store."""
    from lintwin.storage.store import FeatureStore

    s = FeatureStore.open(src)
    d = FeatureStore.create(dst)
    ids = [f"r{i}" for i in range(rows)]
    for name in ("A", "B"):
        x = np.asarray(s.features("train", name)[:rows])
        arr = d.open_features_for_write("dense", name, rows=rows, dim=x.shape[1], ids=ids)
        FeatureStore.write_rows(arr, 0, x)
    d.close()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rows", type=int, nargs="+", default=[100_000, 200_000])
    ap.add_argument("--dims", type=int, nargs=2, default=[1536, 2048])
    ap.add_argument("--dense-rows", type=int, nargs="*", default=[2000, 5000, 10000])
    ap.add_argument("--store-dir", type=Path, default=ROOT / "runs", help="where the synthetic stores are kept")
    ap.add_argument("--out", type=Path, default=ROOT / "bench" / "results")
    ap.add_argument("--child", choices=["lintwin", "faiss", "dense"], help=argparse.SUPPRESS)
    ap.add_argument("--store", help=argparse.SUPPRESS)
    ap.add_argument("--child-rows", type=int, default=0, help=argparse.SUPPRESS)
    ap.add_argument("--child-out", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        fn = {"lintwin": lambda: child_lintwin(args.store, args.child_rows, args.child_out),
              "faiss": lambda: child_faiss(args.store, args.child_rows),
              "dense": lambda: child_dense(args.store, args.child_rows)}[args.child]
        res = fn()
        res["peak_mib"] = _peak_mib()
        print(json.dumps(res))
        return

    from lintwin.experiments.report import format_table
    from lintwin.storage.synthetic import write_synthetic_store

    da, db = args.dims
    load0 = os.getloadavg()[0]
    results: dict = {"dims": [da, db], "k": K, "cpu_cores": os.cpu_count(), "runs": []}
    table = []
    args.store_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=args.store_dir) as tmp_name:
        tmp = Path(tmp_name)
        big = max(args.rows)
        path = args.store_dir / f"bench-neighbours-{big}-{da}-{db}.zarr"
        if not path.exists():
            write_synthetic_store(path, train=big, dim_a=da, dim_b=db)
        for rows in sorted(args.dense_rows):
            sub = tmp / f"dense-{rows}.zarr"
            dense_store(path, sub, rows)
            for method in ("dense", "lintwin", "faiss"):
                r = run_child(method, sub, rows, tmp) | {"method": method, "rows": rows}
                results["runs"].append(r)
                table.append(_row(r))
        bytes_per_n2 = [r["peak_mib"] * 2**20 / r["rows"] ** 2 for r in results["runs"]
                        if r["method"] == "dense" and "peak_mib" in r and r["rows"] >= 5000]
        if bytes_per_n2:
            per = min(bytes_per_n2)
            results["dense_bytes_per_n2"] = per
            results["dense_rows_in_24GB"] = int(np.sqrt(24e9 / per))
        for rows in sorted(args.rows):
            store = path
            if rows != big:
                store = tmp / f"rows-{rows}.zarr"
                write_synthetic_store(store, train=rows, dim_a=da, dim_b=db)
            for method in ("lintwin", "faiss"):
                r = run_child(method, store, 0, tmp) | {"method": method, "rows": rows}
                results["runs"].append(r)
                table.append(_row(r))
    results["load_average_1min"] = {"start": load0, "end": os.getloadavg()[0]}
    lines = [f"mutual k-NN (k={K}) of {da} + {db} features (synthetic, lintwin.synthetic), {os.cpu_count()} CPU cores "
             f"shared with other work: load average {load0:.1f} at the start, {os.getloadavg()[0]:.1f} at the end",
             format_table(["method", "rows", "seconds", "peak MiB", "mutual k-NN", "note"], table)]
    if "dense_bytes_per_n2" in results:
        lines.append(f"dense approach: {results['dense_bytes_per_n2']:.1f} bytes per n² at its peak, so 24 GB hold at "
                     f"most n = {results['dense_rows_in_24GB']} rows")
    text = "\n".join(lines) + "\n"
    args.out.mkdir(parents=True, exist_ok=True)
    stem = args.out / f"neighbours_{'_'.join(str(r) for r in sorted(args.rows))}_{da}_{db}"
    stem.with_suffix(".json").write_text(json.dumps(results, indent=2))
    stem.with_suffix(".txt").write_text(text)
    print(text)


def _row(r: dict) -> list[object]:
    if "failed" in r:
        return [r["method"], r["rows"], "—", "—", "—", f"failed: {r['failed'][:60]}"]
    note = ""
    if r["method"] == "lintwin":
        note = f"CKNNA {r['cknna']:.4f}; rows rechecked {sum(r['rechecked_rows'].values())}"
    return [r["method"], r["rows"], f"{r['seconds']:.1f}", f"{r['peak_mib']:.0f}", f"{r['mutual_knn']:.6f}", note]


if __name__ == "__main__":
    main()
