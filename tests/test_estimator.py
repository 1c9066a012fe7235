import numpy as np
import pytest

from lintwin import AffineMapRegressor, LintwinError
from lintwin.synthetic import SyntheticPair


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
