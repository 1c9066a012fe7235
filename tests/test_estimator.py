import numpy as np
import pytest

from lintwin import AffineMapRegressor, LintwinError
from lintwin.storage.synthetic import SyntheticPair


def test_in_a_scikit_learn_pipeline():
    from sklearn.base import clone
    from sklearn.linear_model import LinearRegression
    from sklearn.model_selection import cross_val_score
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    a, b = SyntheticPair(30, 10, latent=8, seed=2).arrays(3000)
    a, b = a.astype(np.float64), b.astype(np.float64)
    est = AffineMapRegressor(precision="float64")
    assert clone(est).get_params() == est.get_params()
    pipe = make_pipeline(StandardScaler(), AffineMapRegressor(precision="float64"))
    pipe.fit(a, b)
    sk = make_pipeline(StandardScaler(), LinearRegression()).fit(a, b)
    np.testing.assert_allclose(pipe.predict(a), sk.predict(a), rtol=1e-8, atol=1e-8)
    scores = cross_val_score(AffineMapRegressor(), a, b, cv=3)
    assert scores.shape == (3,) and np.all(scores > 0.5)
    est.set_params(ridge=2.0)
    assert est.ridge == 2.0
    with pytest.raises(ValueError, match="Invalid parameter"):
        est.set_params(alpha=1.0)


def test_unfitted_predict_errors():
    with pytest.raises(LintwinError, match="not fitted yet"):
        AffineMapRegressor().predict(np.ones((2, 2)))


def test_partial_fit_streams_to_the_same_map_as_ridge_on_all_rows():
    """Linear probes of large models: batches through partial_fit equal one Ridge fit on all rows."""
    from sklearn.linear_model import Ridge

    a, b = SyntheticPair(48, 12, latent=10, seed=5).arrays(6000)
    a, b = a.astype(np.float64), b.astype(np.float64)
    est = AffineMapRegressor(ridge=30.0, precision="float64")
    for lo in range(0, 6000, 1000):
        est.partial_fit(a[lo : lo + 1000], b[lo : lo + 1000])
    sk = Ridge(alpha=30.0, solver="cholesky").fit(a, b)
    np.testing.assert_allclose(est.coef_, sk.coef_, rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(est.intercept_, sk.intercept_, rtol=1e-9, atol=1e-12)
    assert est.moments_.n == 6000
    # One target as a 1-D y, as scikit-learn users pass it.
    one = AffineMapRegressor(precision="float64").partial_fit(a[:3000], b[:3000, 0]).partial_fit(a[3000:], b[3000:, 0])
    np.testing.assert_allclose(one.coef_[0], Ridge(alpha=0.0).fit(a, b[:, 0]).coef_, rtol=1e-8)
    with pytest.raises(LintwinError, match="partial_fit streams the closed form"):
        AffineMapRegressor(ridge="auto").partial_fit(a, b)


def test_estimator_takes_ridge_auto_and_rank():
    a, b = SyntheticPair(30, 10, latent=8, seed=2).arrays(2000)
    est = AffineMapRegressor(ridge="auto", rank=3, folds=3, precision="float64").fit(a, b)
    assert est.map_.options["ridge"] == "auto" and np.linalg.matrix_rank(est.coef_, tol=1e-9) == 3
