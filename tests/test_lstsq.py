"""The closed-form solver against float64 references, on realistic and adversarial inputs."""

import warnings

import numpy as np
import pytest
from conftest import lstsq_reference, rel, to_xp

import lintwin
from lintwin import RankWarning, ShapeError, fit
from lintwin.core.xp import to_numpy


@pytest.fixture(scope="module")
def reference(realistic):
    return lstsq_reference(realistic["a"], realistic["b"])


def test_default_precision_meets_accuracy_bar(xp, realistic, reference):
    W_ref, b_ref = reference
    m = fit(to_xp(xp, realistic["a"]), to_xp(xp, realistic["b"]))
    assert m.stats["solver"] == "cholesky"
    assert rel(m.weight, W_ref) < 1e-4
    a_val = realistic["a_val"].astype(np.float64)
    pred = to_numpy(m.apply(to_xp(xp, a_val)))
    assert rel(pred, a_val @ W_ref.T + b_ref) < 1e-5


def test_float64_precision_meets_accuracy_bar(realistic, reference):
    W_ref, b_ref = reference
    m = fit(realistic["a"], realistic["b"], precision="float64")
    assert rel(m.weight, W_ref) < 1e-9
    assert rel(m.bias, b_ref) < 1e-9


def test_shifted_float32_survives_offsets_that_break_naive_normal_equations(realistic):
    """Features far from zero: float32 products of shifted blocks stay accurate, the naive
    float32 normal equations on uncentred [F, 1] do not."""
    a, b = realistic["a"][:20000] + np.float32(30.0), realistic["b"][:20000]
    W_ref, _ = lstsq_reference(a, b)
    x = np.hstack([a, np.ones((a.shape[0], 1), np.float32)])
    naive = np.linalg.solve((x.T @ x).astype(np.float64), (x.T @ b).astype(np.float64))[:-1].T
    ours = rel(fit(a, b).weight, W_ref)
    assert ours < 1e-4
    assert rel(naive, W_ref) > 100 * ours


def test_adversarial_offset_and_scales(xp):
    """Features on a huge common offset with channel scales spanning 1e-3..1e3."""
    rng = np.random.default_rng(3)
    z = rng.standard_normal((20000, 24))
    scales = np.logspace(-3, 3, 60)
    a = (1e4 + (z @ rng.standard_normal((24, 60)) + 0.1 * rng.standard_normal((20000, 60))) * scales)
    b = z @ rng.standard_normal((24, 20)) + 0.05 * rng.standard_normal((20000, 20))
    a, b = a.astype(np.float32), b.astype(np.float32)
    W_ref, b_ref = lstsq_reference(a, b)
    m = fit(to_xp(xp, a), to_xp(xp, b), precision="float64")
    assert rel(m.weight, W_ref) < 1e-7
    a64 = a.astype(np.float64)
    assert rel(to_numpy(m.apply(to_xp(xp, a64))), a64 @ W_ref.T + b_ref) < 1e-9


def test_fewer_rows_than_features_gives_min_norm(xp):
    rng = np.random.default_rng(1)
    a = rng.random((40, 100)).astype(np.float64)
    b = rng.random((40, 7)).astype(np.float64)
    with pytest.warns(RankWarning, match=r"fewer rows \(40\) than non-constant features \+ 1 \(101\).*rank 39 of 100"):
        m = fit(to_xp(xp, a), to_xp(xp, b), precision="float64")
    assert m.stats["solver"] == "eigh" and m.stats["rank"] == 39
    import scipy.linalg

    # The minimum-norm solution in the scaled (standardised) space, where lintwin takes rank decisions:
    # gelsd on the standardised, centred rows, with a cutoff that drops the rank-deficient direction.
    ac = a - a.mean(axis=0)
    scale = np.sqrt((ac**2).sum(axis=0))
    W_min = scipy.linalg.lstsq(ac / scale, b - b.mean(axis=0), cond=1e-10)[0] / scale[:, None]
    assert rel(m.weight, W_min.T) < 1e-8
    # With more features than rows the training targets are interpolated.
    assert np.abs(to_numpy(m.apply(to_xp(xp, a))) - b).max() < 1e-8


@pytest.mark.parametrize("precision", ["float32", "float64"])
def test_duplicated_and_constant_features_are_reported(xp, precision):
    rng = np.random.default_rng(2)
    base = rng.random((5000, 30)).astype(np.float32)
    a = np.hstack([base, base[:, :4], np.full((5000, 2), 3.0, np.float32)])
    b = (base @ rng.random((30, 6)) + 0.01 * rng.standard_normal((5000, 6))).astype(np.float32)
    with pytest.warns(RankWarning, match="rank 30 of 34"):
        m = fit(to_xp(xp, a), to_xp(xp, b), precision=precision)
    assert m.stats["constant_units"] == 2
    assert m.stats["solver"] == "eigh" and m.stats["rank"] == 30
    W = to_numpy(m.weight)
    np.testing.assert_array_equal(W[:, 34:], 0.0)  # constant columns get no weight
    # Minimum norm splits a duplicated feature's weight evenly over its copies.
    np.testing.assert_allclose(W[:, :4], W[:, 30:34], rtol=1e-4, atol=1e-6)
    W_ref, b_ref = lstsq_reference(base, b)
    a64 = a.astype(np.float64)
    assert rel(to_numpy(m.apply(to_xp(xp, a64))), base.astype(np.float64) @ W_ref.T + b_ref) < 1e-5


def test_ridge_matches_scikit_learn(realistic):
    from sklearn.linear_model import Ridge

    a, b = realistic["a"][:8000].astype(np.float64), realistic["b"][:8000].astype(np.float64)
    sk = Ridge(alpha=250.0, solver="cholesky").fit(a, b)
    m = fit(a, b, ridge=250.0, precision="float64")
    assert rel(m.weight, sk.coef_) < 1e-9
    assert rel(m.bias, sk.intercept_) < 1e-9


def test_both_directions_from_one_pass(realistic):
    a, b = realistic["a"][:8000], realistic["b"][:8000]
    ab, ba = fit(a, b, both=True, names=("inception", "resnet"))
    assert (ab.src, ab.dst, ba.src, ba.dst) == ("inception", "resnet", "resnet", "inception")
    assert ba.weight.shape == (512, 384)
    W_ref, _ = lstsq_reference(b, a)
    assert rel(ba.weight, W_ref) < 1e-4
    assert np.array_equal(fit(a, b).weight, ab.weight)


def test_bad_input_errors():
    with pytest.raises(ShapeError, match="no rows"):
        fit(np.ones((0, 3)), np.ones((0, 2)))
    with pytest.raises(ShapeError, match="row counts differ"):
        fit(np.ones((4, 3)), np.ones((5, 2)))
    with pytest.raises(lintwin.NonFiniteError, match="features of A"):
        fit(np.full((4, 3), np.nan), np.ones((4, 2)))
    for bad in (-1.0, float("nan"), float("inf")):
        with pytest.raises(lintwin.LintwinError, match="ridge must be a finite number >= 0"):
            fit(np.random.rand(10, 2), np.random.rand(10, 2), ridge=bad)
    with pytest.raises(lintwin.LintwinError, match="method must be"):
        fit(np.ones((4, 3)), np.ones((4, 2)), method="sgd")  # type: ignore[arg-type]


def test_well_posed_fit_is_silent(realistic):
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        fit(realistic["a"][:5000], realistic["b"][:5000])
