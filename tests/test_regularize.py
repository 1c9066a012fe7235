"""Ridge by CV from fold moments, and reduced-rank maps, against brute-force references."""

import numpy as np
import pytest

from lintwin import FeatureStore, LintwinError, accumulate_arrays, evaluate, fit
from lintwin.api import accumulate_folds, fit_store, maps_from_moments
from lintwin.core.folds import image_folds
from lintwin.core.moments import Moments
from lintwin.solvers.ridge_cv import FoldPath, _fold_errors, ridge_cv
from lintwin.storage.synthetic import SyntheticPair


@pytest.fixture(scope="module")
def view_store(tmp_path_factory):
    """120 'images' with 3 views each (ids img#vK), as extract --augment writes them."""
    gen = SyntheticPair(40, 30, noise=0.5, seed=5)
    a, b = gen.arrays(360)
    s = FeatureStore.create(tmp_path_factory.mktemp("cv") / "s.zarr")
    for name, x in (("A", a), ("B", b)):
        arr = s.open_features_for_write("train", name, rows=360, dim=x.shape[1], chunk_rows=50)
        FeatureStore.write_rows(arr, 0, x)
    s.set_ids("train", [f"img{i}#v{v}" for i in range(120) for v in range(3)])
    return s, a, b


def test_views_of_an_image_share_a_fold(view_store):
    s, _, _ = view_store
    folds = image_folds(s.ids("train"), 360, 5)
    assert np.all(folds.reshape(120, 3) == folds.reshape(120, 3)[:, :1])
    assert sorted(np.bincount(folds).tolist()) == [72, 72, 72, 72, 72]
    with pytest.raises(LintwinError, match="cannot fill 5 folds"):
        image_folds(np.array(["a#v0", "a#v1", "b#v0"]), 3, 5)


def test_merged_fold_moments_equal_direct_moments(view_store):
    s, a, b = view_store
    folds = accumulate_folds(s, "A", "B", k=4, precision="float64", progress=False)
    labels = image_folds(s.ids("train"), 360, 4)
    for j in range(4):
        train = Moments.merged(folds, exclude=j)
        direct = accumulate_arrays(a[labels != j], b[labels != j], precision="float64")
        assert train.n == direct.n
        np.testing.assert_allclose(train.mean, direct.mean, rtol=1e-12)
        np.testing.assert_allclose(train.comoment, direct.comoment, rtol=1e-9, atol=1e-9 * np.abs(direct.comoment).max())
    everything = Moments.merged(folds)
    np.testing.assert_allclose(everything.comoment, accumulate_arrays(a, b, precision="float64").comoment, rtol=1e-9,
                               atol=1e-9)


def test_cv_errors_from_moments_equal_refitting_on_rows(view_store):
    s, a, b = view_store
    folds = accumulate_folds(s, "A", "B", k=3, precision="float64", progress=False)
    labels = image_folds(s.ids("train"), 360, 3)
    lambdas = np.array([1e-2, 1.0, 30.0])
    for j in range(3):
        errors, _ = _fold_errors(FoldPath.of(Moments.merged(folds, exclude=j), True), folds[j], lambdas, reverse=True)  # B→A
        for lam, err in zip(lambdas, errors):
            m = fit(b[labels != j].astype(np.float64), a[labels != j].astype(np.float64), ridge=lam,
                    precision="float64")
            held_b, held_a = b[labels == j].astype(np.float64), a[labels == j].astype(np.float64)
            sse = float(np.sum((m.apply(held_b) - held_a) ** 2))
            assert err == pytest.approx(sse, rel=1e-8)


def test_ridge_auto_beats_plain_lstsq_when_overfitting(tmp_path):
    gen = SyntheticPair(120, 80, noise=0.6, seed=9)
    a, b = gen.arrays(300)
    a_val, b_val = gen.arrays(3000, start=300)
    s = FeatureStore.create(tmp_path / "s.zarr")
    for name, x in (("A", a), ("B", b)):
        FeatureStore.write_rows(s.open_features_for_write("train", name, rows=300, dim=x.shape[1]), 0, x)
    auto = fit_store(s, "A", "B", ridge="auto", progress=False)
    cv = auto.stats["ridge_cv"]
    assert cv["folds"] == 5 and len(cv["lambdas"]) == len(cv["cv_error"]) == 25
    assert auto.options["chosen_ridge"] == cv["chosen"] > 0
    plain = fit(a, b)
    assert evaluate(auto, a_val, b_val)["r2"] > evaluate(plain, a_val, b_val)["r2"] + 0.02
    assert ridge_cv(accumulate_folds(s, "A", "B", progress=False)).chosen == pytest.approx(cv["chosen"])


def test_reduced_rank_matches_brute_force():
    rng = np.random.default_rng(0)
    x = rng.random((400, 12))
    y = x @ rng.standard_normal((12, 9)) + 0.3 * rng.standard_normal((400, 9)) + 2.0
    k = 3
    m = maps_from_moments(accumulate_arrays(x, y, precision="float64"), rank=k)[0]
    assert np.linalg.matrix_rank(m.weight, tol=1e-8) == k
    # Brute force: alternating least squares over W = U V (U 9×k, V k×12) with an intercept,
    # from many random starts; the best loss found must equal the closed form's.
    xc, yc = x - x.mean(0), y - y.mean(0)
    best = np.inf
    for seed in range(5):
        U = np.random.default_rng(seed).standard_normal((9, k))
        for _ in range(200):
            Vt = np.linalg.lstsq(xc, yc @ U @ np.linalg.inv(U.T @ U), rcond=None)[0]  # 12×k
            U = np.linalg.lstsq(xc @ Vt, yc, rcond=None)[0].T                      # 9×k
        best = min(best, float(np.sum((yc - xc @ Vt @ U.T) ** 2)))
    ours = float(np.sum((y - m.apply(x)) ** 2))
    assert ours == pytest.approx(best, rel=1e-6)
    full = float(np.sum((y - fit(x, y, precision="float64").apply(x)) ** 2))
    assert ours > full
    with pytest.raises(LintwinError, match="rank must be between 1 and 9"):
        maps_from_moments(accumulate_arrays(x, y), rank=10)
