"""How far lintwin's maps are from float64 least squares, against the errors lintwin estimates for them.

For both directions of a pair of networks in a store, the map fitted with float32 products and with
float64 products is compared with ``scipy.linalg.lstsq`` (gelsd, float64, on ``[F, 1]``): the
relative error of W and of the held-out predictions, next to the two estimates every fit reports
(``expected_error`` for W, ``prediction_error`` for the mapped features) and the warnings it gave.

    lintwin demo --out runs/demo          # the bundled Fashion-MNIST pair, 60,000 training rows
    python bench/solver_precision.py --store runs/demo/features.zarr --a fmnist-resnet --b fmnist-inception

``--quick`` makes a small synthetic store instead (what ``tests/test_bench.py`` runs).
"""

from __future__ import annotations

import argparse
import json
import tempfile
import warnings
from pathlib import Path

import numpy as np
import scipy.linalg

import lintwin
from lintwin.storage.synthetic import write_synthetic_store


def _rel(x: np.ndarray, ref: np.ndarray) -> float:
    return float(np.linalg.norm(x - ref) / np.linalg.norm(ref))


def measure(store: lintwin.FeatureStore, a: str, b: str, split: str = "train", eval_split: str = "val") -> list[dict]:
    """One row per direction and precision: measured and estimated relative errors."""
    train = {n: np.asarray(store.features(split, n)[:]) for n in (a, b)}
    held = {n: np.asarray(store.features(eval_split, n)[:]).astype(np.float64) for n in (a, b)}
    rows = []
    for src, dst in ((a, b), (b, a)):
        x = train[src].astype(np.float64)
        sol = scipy.linalg.lstsq(np.hstack([x, np.ones((len(x), 1))]), train[dst].astype(np.float64),
                                 lapack_driver="gelsd")[0]
        w_ref, b_ref = sol[:-1].T, sol[-1]
        ref = held[src] @ w_ref.T + b_ref
        for precision in ("float32", "float64"):
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always")
                m = lintwin.fit(train[src], train[dst], precision=precision, names=(src, dst))
            rows.append({"map": f"{src}→{dst}", "rows": len(x), "precision": precision,
                         "w_rel_err": _rel(np.asarray(m.weight), w_ref),
                         "prediction_rel_err": _rel(np.asarray(m.apply(held[src])), ref),
                         "estimated_w": m.stats["expected_error"], "estimated_prediction": m.stats["prediction_error"],
                         "warnings": sorted({type(w.message).__name__ for w in caught})})
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--store", type=Path, help="feature store with a training and a held-out split")
    ap.add_argument("--a", default="fmnist-resnet", help="first network")
    ap.add_argument("--b", default="fmnist-inception", help="second network")
    ap.add_argument("--quick", action="store_true", help="a small synthetic store instead of --store")
    ap.add_argument("--out", type=Path, default=Path(__file__).resolve().parent / "results",
                    help="folder for solver_precision.json")
    args = ap.parse_args()
    if args.quick:
        tmp = Path(tempfile.mkdtemp())
        write_synthetic_store(tmp / "q.zarr", train=4000, val=1000, dim_a=48, dim_b=32)
        store, a, b, name = lintwin.FeatureStore.open(tmp / "q.zarr"), "A", "B", "solver_precision_quick.json"
    else:
        if args.store is None:
            ap.error("give --store (or --quick)")
        store, a, b, name = lintwin.FeatureStore.open(args.store), args.a, args.b, "solver_precision.json"
    rows = measure(store, a, b)
    print(f"{'map':<34} {'rows':>6}  {'precision':<9}  {'W rel err':>9}  {'held-out':>8}  "
          f"{'est. W':>7}  {'est. mapped':>11}  warnings")
    for r in rows:
        print(f"{r['map']:<34} {r['rows']:>6}  {r['precision']:<9}  {r['w_rel_err']:>9.2g}  "
              f"{r['prediction_rel_err']:>8.2g}  {r['estimated_w']:>7.2g}  {r['estimated_prediction']:>11.2g}  "
              f"{', '.join(r['warnings']) or 'none'}")
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / name).write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
