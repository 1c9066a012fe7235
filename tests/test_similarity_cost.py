"""What similarity costs on few rows of wide features, and that making it cheaper changed no result.

``tests/data/similarity_reference.json`` holds every value ``pair_similarity`` gave before each
side was factored once, the null reused those factors, the CV folds were decomposed on the rows'
span and the shape metrics' SVDs were cut to the kept directions (bench/similarity_reference.py
wrote it); the same cases must give the same numbers to 1e-10.
"""

from __future__ import annotations

import importlib.util
import json
import math

import numpy as np
import pytest
from conftest import ROOT

from lintwin.core.moments import Moments
from lintwin.experiments.pair_similarity import pair_similarity
from lintwin.measures import similarity as sim_module
from lintwin.measures.similarity import SideFactors, similarity
from lintwin.solvers.ridge_cv import FoldPath

spec = importlib.util.spec_from_file_location("similarity_reference", ROOT / "bench" / "similarity_reference.py")
reference = importlib.util.module_from_spec(spec)
spec.loader.exec_module(reference)
RECORDED = json.loads((ROOT / "tests" / "data" / "similarity_reference.json").read_text())
factor_module = importlib.import_module("lintwin.solvers.factor")


def _pairs(ref, got, path=""):
    """(path, recorded, now) for every number of two nested results."""
    if isinstance(ref, dict):
        assert set(ref) == set(got), path
        for k in ref:
            yield from _pairs(ref[k], got[k], f"{path}/{k}")
    elif isinstance(ref, list):
        assert len(ref) == len(got), path
        for i, (x, y) in enumerate(zip(ref, got)):
            yield from _pairs(x, y, f"{path}[{i}]")
    else:
        yield path, ref, got


@pytest.mark.parametrize("case", list(reference.CASES))
def test_every_value_is_the_one_recorded_before(case, tmp_path):
    got = reference.case_values(reference.write_case(tmp_path, case), case)
    worst = 0.0
    for path, x, y in _pairs(RECORDED["cases"][case], got):
        if not isinstance(x, float) and not isinstance(y, float):
            assert x == y, (path, x, y)
            continue
        assert (x is None) == (y is None), (path, x, y)
        if x is None or (math.isnan(x) and math.isnan(y)):
            continue
        if "shape_angle" in path:  # an angle near 0 magnifies its cosine's rounding: compare the cosines
            x, y = math.cos(x), math.cos(y)
        worst = max(worst, abs(x - y) / max(1.0, abs(x)))
    assert worst <= 1e-10, worst


def _wide(n=40, da=120, db=90, seed=3):
    rng = np.random.default_rng(seed)
    z = rng.standard_normal((n, 12))
    a = np.maximum(z @ rng.standard_normal((12, da)) + 0.3 * rng.standard_normal((n, da)), 0)
    b = np.maximum(z @ rng.standard_normal((12, db)) + 0.3 * rng.standard_normal((n, db)), 0)
    return a, b


def _moments(a, b, folds=None):
    if folds is None:
        return Moments(a.shape[1], b.shape[1], precision="float64", kernel=True).update(a, b)
    return [Moments(a.shape[1], b.shape[1], precision="float64", kernel=True).update(a[f], b[f]) for f in folds]


def test_few_rows_of_wide_features_decompose_each_wide_matrix_once(monkeypatch):
    """4 eigendecompositions of a side's width (each side: scaled and raw), none per CV fold or null sample."""
    a, b = _wide()
    n = a.shape[0]
    sizes = []
    original = factor_module.symmetric_eigen

    def counted(S, xp):
        sizes.append(int(S.shape[0]))
        return original(S, xp)

    monkeypatch.setattr(factor_module, "symmetric_eigen", counted)
    folds = [np.arange(n)[j::5] for j in range(5)]
    factors = SideFactors()
    s = similarity(Moments.merged(_moments(a, b, folds)), folds=_moments(a, b, folds), factors=factors)
    wide = [d for d in sizes if d > n]
    assert sorted(wide) == [90, 90, 120, 120]  # each side's scaled and raw system, once
    assert len(sizes) == 4 + 10  # and one (n-1)-sized decomposition per fold and direction
    rng = np.random.default_rng(0)
    sizes.clear()
    for _ in range(3):  # null samples: the same rows re-paired
        perm = rng.permutation(n)
        similarity(_moments(a, b[perm]), factors=factors)
    assert sizes == [] and factors.reused == 6
    assert s.values["r2cv_ab"] is not None


def test_a_reused_side_gives_the_values_of_a_fresh_one():
    a, b = _wide(seed=5)
    factors = SideFactors()
    similarity(_moments(a, b), factors=factors)
    rng = np.random.default_rng(1)
    for _ in range(3):
        perm = rng.permutation(a.shape[0])
        half = a.shape[0] // 2  # the same rows summed in another order: equal up to rounding
        m = Moments(a.shape[1], b.shape[1], precision="float64", kernel=True)
        m.update(a[perm[:half]], b[perm][:half][::-1]).update(a[perm[half:]], b[perm][half:][::-1])
        before = factors.reused
        shared = similarity(m, factors=factors).values
        assert factors.reused == before + 2
        fresh = similarity(m).values
        for k, v in fresh.items():
            if v is None:
                assert shared[k] is None
                continue
            x, y = (math.cos(v), math.cos(shared[k])) if k.startswith("shape_angle") else (v, shared[k])
            assert abs(x - y) <= 1e-10 * max(1.0, abs(x)), (k, v, shared[k])


def test_a_side_that_differs_is_factored_afresh():
    a, b = _wide(seed=6)
    factors = SideFactors()
    similarity(_moments(a, b), factors=factors)
    other = _moments(a * 1.0001, b)  # A's block differs beyond rounding: not the same side
    assert similarity(other, factors=factors).values == similarity(other).values
    assert factors.reused == 1  # B only


def test_the_nuclear_norm_of_the_kept_block_is_the_whole_one():
    rng = np.random.default_rng(2)
    kept = rng.standard_normal((30, 20)) @ np.diag(np.linspace(1, 5, 20))
    cross = np.zeros((50, 45))
    cross[:30, :20] = kept
    cross[30:, :] = 1e-17 * rng.standard_normal((20, 45))  # rounding-level rows and columns
    cross[:, 20:] = 1e-17 * rng.standard_normal((50, 25))
    full = float(np.linalg.svd(cross, compute_uv=False).sum())
    assert sim_module._nuclear_norm(cross, 30, 20, np) == pytest.approx(full, rel=1e-14)
    cross[40, 30] = 1e-3  # a dropped direction that is not rounding: the whole matrix's SVD is used
    assert sim_module._nuclear_norm(cross, 30, 20, np) == float(np.linalg.svd(cross, compute_uv=False).sum())


@pytest.mark.parametrize("reverse", [False, True])
@pytest.mark.parametrize("fold_constant", [False, True], ids=["", "unit-constant-in-the-fold"])
def test_a_fold_decomposed_on_the_rows_span_gives_the_same_ridge_path(reverse, fold_constant):
    """Against the full decomposition and the kernel-ridge form on the rows, within what λ's conditioning allows.

    A unit that varies only in the held-out rows is constant in the fold's training rows: the basis is
    then orthonormalised again on the fold's own units.
    """
    a, b = _wide(n=36, seed=8)
    if reverse:
        a, b = b, a
    n = a.shape[0]
    parts = [np.arange(n)[j::4] for j in range(4)]
    if fold_constant:
        a[:, 0] = 0.0
        a[parts[1], 0] = np.arange(1.0, len(parts[1]) + 1)
    folds = _moments(a, b, parts)
    total = Moments.merged(folds)
    side = sim_module._side(total.blocks()["aa"], total.blocks()["mean_a"], n, "float64", 2.2e-15, "x", np)
    basis = sim_module._row_span(side, n)
    assert basis.shape[1] == n - 1
    train = Moments.merged(folds, exclude=1)
    rows = np.concatenate([parts[j] for j in (0, 2, 3)])
    x, y = a[rows] - a[rows].mean(0), b[rows] - b[rows].mean(0)
    keep = np.ptp(a[rows], axis=0) > 0  # constant units get no weight
    full, on_span = FoldPath.of(train, False), FoldPath.of(train, False, basis)
    sxx = train.oriented(False)[0]
    top = float(np.linalg.eigvalsh(sxx)[-1])
    for lam in np.trace(sxx) / sxx.shape[0] * np.logspace(-6, 1, 8):
        ref = np.zeros((a.shape[1], b.shape[1]))
        ref[keep] = x[:, keep].T @ np.linalg.solve(x[:, keep] @ x[:, keep].T + lam * np.eye(len(rows)), y)
        tol = 1e-12 + 100 * np.finfo(float).eps * top / lam  # a ridge solution's rounding grows as 1/λ
        (w1, b1), (w2, b2) = full.weights(lam), on_span.weights(lam)
        assert np.linalg.norm(w2 - ref) <= tol * np.linalg.norm(ref)
        assert np.linalg.norm(w2 - w1) <= tol * np.linalg.norm(w1)
        assert np.linalg.norm(b2 - b1) <= tol * np.linalg.norm(b1)


def test_similarity_shows_its_progress(tmp_path, capsys):
    a, b = _wide(seed=9)
    n = a.shape[0]
    folds = _moments(a, b, [np.arange(n)[j::3] for j in range(3)])
    similarity(Moments.merged(folds), folds=folds, progress=True)
    err = capsys.readouterr().err
    assert "similarity measures" in err and "10/10" in err  # 2 sides, the measures, R², 2 x 3 folds


def test_pair_similarity_null_on_a_store_reuses_both_sides(tmp_path, monkeypatch):
    store = reference.write_case(tmp_path, "wide_unequal")
    made = []
    original = SideFactors.__init__

    def keep(self):
        original(self)
        made.append(self)

    monkeypatch.setattr(SideFactors, "__init__", keep)
    pair_similarity(store, "A", "B", folds=0, null=3, seed=1, progress=False)
    assert len(made) == 1 and made[0].reused == 6
