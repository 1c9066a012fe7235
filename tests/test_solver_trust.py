"""The solver's trust cases: dead units, near-singular systems, honest precision, rank with ridge, bad numbers."""

import warnings

import numpy as np
import pytest
from conftest import lstsq_reference, rel, to_xp

import lintwin
from lintwin import LintwinError, RankWarning, fit
from lintwin.core.xp import to_numpy
from lintwin.solvers import PrecisionWarning, reduce_rank


def _r2(pred, y):
    return 1.0 - np.sum((pred - y) ** 2) / np.sum((y - y.mean(axis=0)) ** 2)


def _dead_unit_case():
    """30 informative units, five of them with variance 1e-4..1e-2, plus one dead (all-zero) unit."""
    rng = np.random.default_rng(11)
    n = 12000
    x = rng.standard_normal((n, 30))
    x[:, :5] *= np.sqrt(np.logspace(-4, -2, 5))
    w = rng.standard_normal((30, 8))
    w[:5] *= 30.0  # the quiet units carry as much signal as the loud ones
    y = x @ w + 0.02 * rng.standard_normal((n, 8))
    x = np.hstack([x, np.zeros((n, 1))])
    x, y = (x + 2.0).astype(np.float32), y.astype(np.float32)
    return x[:10000], y[:10000], x[10000:], y[10000:]


@pytest.mark.parametrize("precision", ["float32", "float64"])
def test_dead_units_leave_the_rest_of_the_solve_untouched(xp, precision):
    a, b, a_val, b_val = _dead_unit_case()
    W_ref, b_ref = lstsq_reference(a[:, :30], b)
    with warnings.catch_warnings():
        warnings.simplefilter("error", RankWarning)  # a dead unit is no reason for a fallback
        m = fit(to_xp(xp, a), to_xp(xp, b), precision=precision)
    assert m.stats["solver"] == "cholesky" and m.stats["constant_units"] == 1 and m.stats["rank"] == 30
    W = to_numpy(m.weight)
    np.testing.assert_array_equal(W[:, 30], 0.0)
    ref_r2 = _r2(a_val[:, :30].astype(np.float64) @ W_ref.T + b_ref, b_val)
    got_r2 = _r2(to_numpy(m.apply(to_xp(xp, a_val.astype(np.float64)))), b_val)
    assert ref_r2 > 0.9999
    assert abs(got_r2 - ref_r2) < 1e-6
    assert rel(W[:, :30], W_ref) < (1e-4 if precision == "float32" else 1e-9)


def _near_singular_case():
    """Two units nearly collinear (a difference of 1e-5 of their scale): the system is ill conditioned."""
    rng = np.random.default_rng(5)
    n = 20000
    z = rng.standard_normal((n, 6))
    x = np.hstack([z, z[:, :1] + 1e-5 * rng.standard_normal((n, 1))])
    y = x @ rng.standard_normal((7, 3)) + 0.1 * rng.standard_normal((n, 3))
    return x, y


def test_condition_estimate_tracks_the_truth_and_precision_warns():
    x, y = _near_singular_case()
    xc = x - x.mean(axis=0)
    corr = np.corrcoef(xc, rowvar=False)
    true_k1 = np.abs(corr).sum(0).max() * np.abs(np.linalg.inv(corr)).sum(0).max()
    m = fit(x, y, precision="float64")
    assert true_k1 / 3 <= m.stats["condition"] <= true_k1 * 1.0001  # Hager's estimate: a close lower bound
    W_ref, _ = lstsq_reference(x, y)
    err = rel(m.weight, W_ref)
    assert err <= 3 * m.stats["expected_error"] < 1e-4
    # At float32 products the same system is near-singular: refused to Cholesky, reported, truncated.
    with pytest.warns(RankWarning, match="truncated solution of rank 6 of 7"):
        m32 = fit(x.astype(np.float32), y.astype(np.float32))
    assert m32.stats["solver"] == "eigh" and m32.stats["rank"] == 6


def test_expected_error_is_printed_and_honest(realistic):
    """The stated expected error of W is the measured one's order of magnitude, above and below 1e-4."""
    W_ref, _ = lstsq_reference(realistic["a"], realistic["b"])
    m = fit(realistic["a"], realistic["b"])
    measured = rel(m.weight, W_ref)
    assert measured / 3 <= m.stats["expected_error"] <= measured * 3
    rng = np.random.default_rng(3)
    z = rng.standard_normal((20000, 24))
    a = (z @ rng.standard_normal((24, 60)) + 0.03 * rng.standard_normal((20000, 60))).astype(np.float32)
    b = (z @ rng.standard_normal((24, 20))).astype(np.float32)
    with pytest.warns(PrecisionWarning, match="use --precision float64"):
        m = fit(a, b)
    assert m.stats["rank"] == 60
    W_ref, _ = lstsq_reference(a, b)
    measured = rel(m.weight, W_ref)
    assert measured > 1e-4
    assert measured / 10 <= m.stats["expected_error"] <= measured * 10
    with warnings.catch_warnings():
        warnings.simplefilter("error", PrecisionWarning)
        m64 = fit(a, b, precision="float64")
    assert rel(m64.weight, W_ref) < 1e-9


def _best_rank_k_ridge_by_data(x, y, lam, k):
    """Reduced-rank ridge straight from its definition: least squares on [x; √λ I] → [y; 0], rank k."""
    xc, yc = x - x.mean(axis=0), y - y.mean(axis=0)
    xa = np.vstack([xc, np.sqrt(lam) * np.eye(x.shape[1])])
    ya = np.vstack([yc, np.zeros((x.shape[1], y.shape[1]))])
    full = np.linalg.lstsq(xa, ya, rcond=None)[0]
    u, _, _ = np.linalg.svd(xa @ full, full_matrices=False)
    fitted = u[:, :k] @ (u[:, :k].T @ (xa @ full))
    return np.linalg.lstsq(xa, fitted, rcond=None)[0].T


def _ridge_objective(w, x, y, lam):
    xc, yc = x - x.mean(axis=0), y - y.mean(axis=0)
    return np.sum((yc - xc @ w.T) ** 2) + lam * np.sum(w**2)


def test_reduced_rank_with_ridge_is_exact():
    rng = np.random.default_rng(9)
    x = rng.standard_normal((800, 20)) @ rng.standard_normal((20, 20))
    y = x @ rng.standard_normal((20, 12)) + rng.standard_normal((800, 12))
    lam = 1000.0
    m = fit(x, y, ridge=lam, rank=4, precision="float64")
    ref = _best_rank_k_ridge_by_data(x, y, lam, 4)
    assert np.linalg.matrix_rank(m.weight, tol=1e-8) == 4
    got, best = _ridge_objective(m.weight, x, y, lam), _ridge_objective(ref, x, y, lam)
    assert abs(got - best) / best < 1e-10
    # Projecting with Sxx instead of Sxx + λI (the old rule) is measurably worse.
    full = fit(x, y, ridge=lam, precision="float64")
    mom = lintwin.accumulate_arrays(x, y, precision="float64")
    old = reduce_rank(full.weight, mom.blocks()["aa"], 4)
    assert (_ridge_objective(old, x, y, lam) - best) / best > 1e-6


@pytest.mark.parametrize("ridge", [float("nan"), float("inf"), -1.0, "abc"])
def test_bad_ridge_is_refused_before_work(ridge):
    with pytest.raises(LintwinError, match="ridge must be"):
        fit(np.random.rand(20, 3), np.random.rand(20, 2), ridge=ridge)


@pytest.mark.parametrize("field,value,message", [
    ("lr", 0.0, "learning rate must be a finite number > 0"),
    ("lr", float("nan"), "learning rate must be a finite number > 0"),
    ("decay", 1.0, r"decay must be in \[0, 1\)"),
    ("decay", -0.1, r"decay must be in \[0, 1\)"),
    ("variant", "sgd", "variant must be one of"),
])
def test_bad_adam_settings_are_refused_before_work(field, value, message):
    opts = lintwin.AdamOptions(**{field: value, "iterations": 5})
    with pytest.raises(LintwinError, match=message):
        fit(np.random.rand(20, 3), np.random.rand(20, 2), method="adam", adam=opts)


def test_fit_accepts_ridge_auto_and_rank_like_fit_store(realistic):
    a, b = realistic["a"][:3000, :40], realistic["b"][:3000, :20]
    m = fit(a, b, ridge="auto", folds=3, rank=10, precision="float64")
    assert m.options["ridge"] == "auto" and m.options["chosen_ridge"] > 0 and m.stats["map_rank"] == 10
    assert np.linalg.matrix_rank(m.weight, tol=1e-8 * np.abs(m.weight).max()) == 10
    ab, ba = fit(a, b, ridge="auto", folds=3, both=True)
    assert (ab.name, ba.name) == ("A→B", "B→A")


def test_training_r2_from_moments_is_exact(realistic):
    a, b = realistic["a"][:5000], realistic["b"][:5000]
    m = fit(a, b, precision="float64")
    direct = lintwin.evaluate(m, a, b)["r2"]
    assert m.stats["train_metrics"]["r2"] == pytest.approx(direct, abs=1e-8)
    per_dim = np.asarray(m.stats["train_metrics"]["r2_per_dim"])
    pred = m.apply(a.astype(np.float64))
    y = b.astype(np.float64)
    want = 1 - ((pred - y) ** 2).sum(0) / ((y - y.mean(0)) ** 2).sum(0)
    np.testing.assert_allclose(per_dim, want, atol=1e-9)


def test_scale_free_maps_report_best_scale_r2(realistic):
    a, b = realistic["a"][:4000, :30], realistic["b"][:4000, :20]
    m = fit(a, b, precision="float64")
    own = lintwin.evaluate(m, a, b)["r2"]
    m.weight, m.bias = m.weight * 37.0, m.bias * 37.0  # what a scale-free (Adam) map may look like
    m._placed.clear()
    plain = lintwin.evaluate(m, a, b)
    assert plain["r2"] < -100  # plain R² of a rescaled map is meaningless ...
    m.method = "adam"
    scaled = lintwin.evaluate(m, a, b)
    assert scaled["r2_kind"] == "best scale" and scaled["r2"] == pytest.approx(own, abs=1e-6)  # ... this is not
    assert scaled["mean_cosine"] == pytest.approx(plain["mean_cosine"], rel=1e-12)


def test_paper_loss_of_zero_rows_follows_the_definition():
    p = np.array([[0.0, 0.0], [1.0, 0.0], [0.0, 0.0], [3.0, 4.0]])
    y = np.array([[1.0, 1.0], [0.0, 0.0], [0.0, 0.0], [3.0, 4.0]])
    # ||p/||p|| − y/||y||||² with 0/0 read as 0: one zero row → 1, both zero → 0, equal → 0.
    np.testing.assert_allclose(to_numpy(lintwin.core.fit_metrics.paper_loss_rows(p, y)), [1.0, 1.0, 0.0, 0.0], atol=1e-15)
    loss, grad = lintwin.solvers.paper_loss_grad(p, y)
    assert float(loss) == pytest.approx(0.5)
    assert np.all(np.isfinite(grad)) and np.all(grad[0] == 0)


def test_repr_is_one_short_line(realistic):
    m = fit(realistic["a"][:2000], realistic["b"][:2000], names=("inc", "res"))
    assert repr(m) == "AffineMap(inc→res, 512→384, method=lstsq, n_train=2000)"


def test_apply_places_weights_once_per_device(xp, realistic):
    m = fit(realistic["a"][:2000, :16], realistic["b"][:2000, :8], precision="float64")
    x = to_xp(xp, realistic["a"][:10, :16].astype(np.float64))
    first = m.apply(x)
    placed = dict(m._placed)
    second = m.apply(x)
    assert m._placed == placed and len(placed) == 1
    np.testing.assert_array_equal(to_numpy(first), to_numpy(second))


def test_whole_solve_path_on_a_non_default_device(realistic):
    """lstsq, ridge, ridge-CV, reduced rank, Adam and evaluate keep every array on array_api_strict's device1."""
    import array_api_strict as xs

    dev = xs.Device("device1")
    a_np, b_np = realistic["a"][:3000, :24].astype(np.float64), realistic["b"][:3000, :12].astype(np.float64)
    a, b = xs.asarray(a_np, device=dev), xs.asarray(b_np, device=dev)
    cases = {
        "lstsq": dict(precision="float64"),
        "ridge": dict(ridge=50.0, precision="float64"),
        "ridge-cv": dict(ridge="auto", folds=3, precision="float64"),
        "rank": dict(rank=4, ridge=10.0, precision="float64"),
        "adam": dict(method="adam", adam=lintwin.AdamOptions(iterations=5, batch=256), precision="float64"),
    }
    for label, kwargs in cases.items():
        m = fit(a, b, **kwargs)
        assert m.weight.device == dev and m.bias.device == dev, label
        ref = fit(a_np, b_np, **kwargs)
        np.testing.assert_allclose(to_numpy(m.weight), to_numpy(ref.weight), rtol=1e-8, atol=1e-10, err_msg=label)
        got = lintwin.evaluate(m, a, b)
        assert got["r2"] == pytest.approx(lintwin.evaluate(ref, a_np, b_np)["r2"], abs=1e-9), label
        assert m.apply(a).device == dev


def test_stated_accuracy_holds_on_real_features(tmp_path):
    """The accuracy claims of docs/numerics.md, measured on real features of the bundled Fashion-MNIST networks."""
    from lintwin.experiments.demo import BUNDLED_MODELS
    from lintwin.networks.extract import extract_features
    from lintwin.networks.images import DEFAULT_FASHION_MNIST, open_images
    from lintwin.networks.onnx_models import NetworkSpec

    source = DEFAULT_FASHION_MNIST / "train-images-idx3-ubyte.gz"
    if not source.is_file():
        pytest.skip("Fashion-MNIST is not installed (apt-get install dataset-fashion-mnist)")
    images = open_images(source).subset(range(12000))
    path = tmp_path / "fm.zarr"
    nets = ("fmnist-resnet", "fmnist-inception")
    for name in nets:
        spec = NetworkSpec.for_model(BUNDLED_MODELS / f"{name}.json")
        extract_features(spec.backbone_path, images, path, split="train", batch=1000, workers=1, progress=False)
    store = lintwin.FeatureStore.open(path)
    a, b = (np.asarray(store.features("train", n)[:]) for n in nets)
    fit_a, fit_b, val_a = a[:10000], b[:10000], a[10000:].astype(np.float64)
    for x, y, vx in ((fit_a, fit_b, val_a), (fit_b, fit_a, b[10000:].astype(np.float64))):
        W_ref, b_ref = lstsq_reference(x, y)
        ref_pred = vx @ W_ref.T + b_ref
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", PrecisionWarning)
            m32 = fit(x, y)
        err = rel(m32.weight, W_ref)
        # The stated expected error is the measured one's order of magnitude, and warns when it passes 1e-4.
        assert err / 10 <= m32.stats["expected_error"] <= err * 10
        assert rel(m32.apply(vx), ref_pred) < 1e-4
        m64 = fit(x, y, precision="float64")
        assert rel(m64.weight, W_ref) < 1e-9 and rel(m64.apply(vx), ref_pred) < 1e-10
