"""Record every value ``lintwin similarity`` computes (measures, spectra, per-unit R², CV R², null samples)
on seeded stores of several shapes, as a reference that later versions must reproduce to rounding.

The cases cover fewer rows than units (as 372 images x 1280 units), unequal widths, constant and
duplicated units, and float32 products. ``tests/test_similarity_cost.py`` recomputes them and compares.

    python bench/similarity_reference.py tests/data/similarity_reference.json
"""

from __future__ import annotations

import json
import sys
import tempfile
from pathlib import Path

import numpy as np

from lintwin.experiments.pair_similarity import pair_similarity
from lintwin.storage.store import FeatureStore
from lintwin.storage.synthetic import SyntheticPair

CASES = {
    # name: (rows, dim_a, dim_b, precision, tweak)
    "wide_equal": (48, 160, 160, "float64", None),
    "wide_unequal": (48, 160, 40, "float64", None),
    "tall_degenerate": (600, 40, 30, "float64", "constant_and_duplicate"),
    "tall_float32": (600, 40, 30, "float32", "constant_and_duplicate"),
}
FOLDS, NULL, SEED = 5, 3, 11


def case_arrays(name: str) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """The features of one case: synthetic CNN-like pairs, with a constant unit in A and a copy of a unit in B."""
    rows, da, db, _, tweak = CASES[name]
    a, b = SyntheticPair(da, db, latent=max(4, min(da, db) // 4), seed=sum(map(ord, name))).arrays(rows)
    if tweak == "constant_and_duplicate":
        a[:, 3] = 2.5
        b[:, 7] = b[:, 2]
    ids = [f"img{i:05d}.jpg" for i in range(rows)]
    return a, b, ids


def write_case(root: Path, name: str) -> FeatureStore:
    a, b, ids = case_arrays(name)
    store = FeatureStore.create(root / f"{name}.zarr")
    for net, x in (("A", a), ("B", b)):
        arr = store.open_features_for_write("train", net, rows=x.shape[0], dim=x.shape[1], ids=ids)
        FeatureStore.write_rows(arr, 0, x)
    store.close()
    return FeatureStore.open(root / f"{name}.zarr")


def case_values(store: FeatureStore, name: str) -> dict:
    """Everything one similarity run with CV R² and a null reports, as plain lists."""
    precision = CASES[name][3]
    res = pair_similarity(store, "A", "B", folds=FOLDS, null=NULL, seed=SEED, precision=precision, device="cpu",
                          progress=False)
    d = res.as_dict()
    return {"values": d["values"], "cca_spectrum": d["cca_spectrum"], "svcca_spectrum": d["svcca_spectrum"],
            "r2_per_unit": d["r2_per_unit"], "r2cv_per_unit": d["r2cv_per_unit"],
            "null_samples": d["null"]["samples"], "null_shifts": d["null"]["shifts"],
            "rank": d["info"]["rank"], "ridge_cv": d["info"].get("ridge_cv")}


def main() -> None:
    out = Path(sys.argv[1])
    with tempfile.TemporaryDirectory() as tmp:
        ref = {name: case_values(write_case(Path(tmp), name), name) for name in CASES}
    out.write_text(json.dumps({"folds": FOLDS, "null": NULL, "seed": SEED, "cases": ref}, indent=1) + "\n")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
