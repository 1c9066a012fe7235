"""One factored scaled system for every solve: ridge-CV obeys the solver's rules, and conditions are named and right."""

import warnings

import numpy as np
import pytest
import scipy.linalg

from lintwin import RankWarning, accumulate_arrays, fit, maps_from_moments
from lintwin.api import accumulate_folds_arrays
from lintwin.core.moments import Moments
from lintwin.solvers import factor
from lintwin.solvers.ridge_cv import FoldPath, _fold_errors, fold_weights, ridge_cv


def _scaled(x: np.ndarray, keep: np.ndarray) -> np.ndarray:
    """The correlation matrix of the kept columns of ``x`` (float64, by definition)."""
    xc = x[:, keep].astype(np.float64)
    xc = xc - xc.mean(axis=0)
    s = xc.T @ xc
    d = np.sqrt(np.diag(s))
    return s / np.outer(d, d)


def _hostile(n: int = 3000, seed: int = 4) -> tuple[np.ndarray, np.ndarray]:
    """Sources with a dead unit, a unit constant to rounding (a large offset), and a collinear pair at 1e-5."""
    rng = np.random.default_rng(seed)
    z = rng.standard_normal((n, 8))
    near = z[:, :1] + 1e-5 * rng.standard_normal((n, 1))
    x = np.hstack([z, near, np.zeros((n, 1)), np.full((n, 1), 1000.0)])
    x[:, -1] += 1e-13 * rng.standard_normal(n)  # spread at the rounding level of its value: constant
    y = x[:, :9] @ rng.standard_normal((9, 5)) + 0.3 * rng.standard_normal((n, 5))
    return x, y


def test_ridge_cv_gives_constant_units_zero_weight_at_every_fold_and_lambda():
    x, y = _hostile()
    folds = accumulate_folds_arrays(x, y, None, k=4, precision="float64")
    lambdas = np.array([1e-6, 1e-3, 1.0, 100.0])
    for j in range(4):
        train = Moments.merged(folds, exclude=j)
        for _, wt, _ in fold_weights(train, lambdas, reverse=False):
            np.testing.assert_array_equal(np.asarray(wt)[9:], 0.0)  # dead and rounding-constant units
    final = fit(x, y, ridge="auto", folds=4, precision="float64")
    np.testing.assert_array_equal(np.asarray(final.weight)[:, 9:], 0.0)
    assert final.stats["constant_units"] == 2


def test_ridge_cv_errors_equal_scipy_refits_on_the_kept_units_of_a_near_singular_system():
    """Each fold's held-out error from moments equals a float64 scipy ridge refit on the kept units' rows."""
    x, y = _hostile()
    fold = np.arange(len(x)) % 3
    folds = [accumulate_arrays(x[fold == j], y[fold == j], precision="float64") for j in range(3)]
    lambdas = np.array([1e-3, 0.1, 10.0])
    keep = np.arange(9)
    for j in range(3):
        errors, _ = _fold_errors(FoldPath.of(Moments.merged(folds, exclude=j), False), folds[j], lambdas, reverse=False)
        xt, yt, xh, yh = x[fold != j][:, keep], y[fold != j], x[fold == j][:, keep], y[fold == j]
        mx, my = xt.mean(axis=0), yt.mean(axis=0)
        for lam, err in zip(lambdas, errors):
            xc = xt - mx
            wt = scipy.linalg.solve(xc.T @ xc + lam * np.eye(len(keep)), xc.T @ (yt - my), assume_a="pos")
            sse = float(np.sum((yh - (my + (xh - mx) @ wt)) ** 2))
            assert err == pytest.approx(sse, rel=1e-7)
    # and λ is then chosen in the system the map is solved in: the final solve at the chosen λ equals the path
    cv = ridge_cv(folds)
    _, wt_path, b_path = next(fold_weights(Moments.merged(folds), np.asarray([cv.chosen]), reverse=False))
    final = fit(x, y, ridge=cv.chosen, precision="float64")
    np.testing.assert_allclose(np.asarray(final.weight).T, np.asarray(wt_path), rtol=1e-7, atol=1e-9)
    np.testing.assert_allclose(final.bias, b_path, rtol=1e-7, atol=1e-9)


def test_condition_of_a_full_rank_system_is_the_scaled_systems_1_norm_condition():
    rng = np.random.default_rng(2)
    x = rng.standard_normal((5000, 12)) @ rng.standard_normal((12, 12)) * np.logspace(-3, 3, 12)
    y = x @ rng.standard_normal((12, 4))
    m = fit(x, y, precision="float64")
    R = _scaled(x, np.arange(12))
    truth = np.linalg.cond(R, 1)
    assert m.stats["condition_kind"].startswith("1-norm")
    assert truth / 3 <= m.stats["condition"] <= truth * 1.0001
    assert m.stats["retained_condition"] == m.stats["condition"] and m.stats["rank"] == 12


def test_condition_of_a_truncated_system_names_the_full_and_the_retained_condition():
    x, y = _hostile()
    with pytest.warns(RankWarning) as caught:
        m = fit(x.astype(np.float32), y.astype(np.float32))  # float32 products: the 1e-5 pair is below rcond
    assert m.stats["solver"] == "eigh" and m.stats["constant_units"] == 2 and m.stats["rank"] == 8
    keep = np.arange(9)
    evals = np.linalg.eigvalsh(_scaled(x, keep))[::-1]
    truth = np.linalg.cond(_scaled(x, keep), 2)
    # float32 moments cannot resolve the smallest eigenvalue: the whole system's condition is a stated lower bound
    assert m.stats["condition_is_lower_bound"] and 1e5 < m.stats["condition"] <= truth
    assert m.stats["retained_condition"] == pytest.approx(evals[0] / evals[7], rel=1e-3)
    assert m.stats["retained_condition"] < 1e3
    message = str(caught[0].message)
    assert f"≥ {m.stats['condition']:.2e}" in message and f"{m.stats['retained_condition']:.2e}" in message
    # with float64 moments the same system's condition is resolved and equals numpy's
    with pytest.warns(RankWarning):
        (m64,) = maps_from_moments(accumulate_arrays(x, y, precision="float64"), rcond=1e-9)
    assert m64.stats["solver"] == "eigh" and not m64.stats["condition_is_lower_bound"]
    assert m64.stats["condition"] == pytest.approx(truth, rel=1e-4)  # κ·eps of the float64 moments


def test_the_factor_is_made_once_and_reused():
    x, y = _hostile(800)
    m = accumulate_arrays(x, y, precision="float64")
    sxx, _, _, mx, _ = m.oriented()
    sys = factor(sxx, mx, m.n, "float64")
    assert sys.cholesky(1.0) is sys.cholesky(1.0) and sys.raw_eigen() is sys.raw_eigen()
    assert sys.n_constant == 2 and sys.effective == 9
    with warnings.catch_warnings():
        warnings.simplefilter("error", RankWarning)
        assert sys.cholesky(0.0).reason is None  # float64 moments: the 1e-5 pair is still well above rcond
