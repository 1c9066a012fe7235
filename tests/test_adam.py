"""The paper's Adam: analytic gradient, convergence, and batches from stores."""

import numpy as np
import pytest
from conftest import to_xp

from lintwin import AdamOptions, FeatureStore, evaluate, fit, paper_loss
from lintwin.core.xp import to_numpy
from lintwin.solvers import paper_loss_grad
from lintwin.solvers.adam import adam_step
from lintwin.storage.batches import StoreBatches
from lintwin.storage.synthetic import SyntheticPair, write_synthetic_store


def test_gradient_matches_finite_differences(xp):
    rng = np.random.default_rng(0)
    p = rng.standard_normal((7, 5))
    y = rng.random((7, 5))
    loss, grad = paper_loss_grad(to_xp(xp, p), to_xp(xp, y))
    grad = to_numpy(grad)
    h = 1e-6
    num = np.zeros_like(p)
    for i in range(p.shape[0]):
        for j in range(p.shape[1]):
            hi, lo = p.copy(), p.copy()
            hi[i, j] += h
            lo[i, j] -= h
            num[i, j] = (paper_loss(hi, y) - paper_loss(lo, y)) / (2 * h)
    assert float(loss) == pytest.approx(paper_loss(p, y), rel=1e-12)
    np.testing.assert_allclose(grad, num, rtol=1e-6, atol=1e-9)


@pytest.fixture(scope="module")
def small_pair():
    gen = SyntheticPair(40, 30, latent=12, noise=0.3, seed=4)
    return gen.arrays(6000), gen.arrays(2000, start=6000)


def test_adam_falls_and_reaches_closed_form_loss(small_pair):
    (a, b), (a_val, b_val) = small_pair
    closed = fit(a, b)
    closed_train = evaluate(closed, a, b)["paper_loss"]
    opts = AdamOptions(lr=0.01, decay=1e-4, batch=512, iterations=4000, seed=1)
    m = fit(a, b, method="adam", adam=opts)
    curve = m.loss_curve
    assert curve.shape == (4000,)
    tenth = len(curve) // 10
    means = [curve[k * tenth : (k + 1) * tenth].mean() for k in range(10)]
    assert all(later <= earlier * 1.001 for earlier, later in zip(means, means[1:]))  # falls in expectation
    adam_train = evaluate(m, a, b)["paper_loss"]
    assert adam_train <= closed_train  # Adam minimises the paper's loss itself
    assert evaluate(m, a_val, b_val)["paper_loss"] <= evaluate(closed, a_val, b_val)["paper_loss"] * 1.01
    assert m.method == "adam" and m.options["lr"] == 0.01 and m.options["init"] == "random"


def test_warm_start_never_worse_than_closed_form(xp, small_pair):
    (a, b), _ = small_pair
    A, B = to_xp(xp, a), to_xp(xp, b)
    closed = evaluate(fit(A, B), A, B)["paper_loss"]
    m = fit(A, B, method="adam", init="lstsq", adam=AdamOptions(lr=1e-4, batch=1024, iterations=300))
    assert evaluate(m, A, B)["paper_loss"] < closed
    assert m.loss_curve[0] == pytest.approx(closed, rel=0.1)  # started where lstsq ended


def test_both_directions_and_float64(small_pair):
    (a, b), _ = small_pair
    ab, ba = fit(a, b, method="adam", both=True, precision="float64",
                 adam=AdamOptions(lr=0.01, batch=256, iterations=50))
    assert ab.weight.dtype == np.float64 and ba.weight.shape == (40, 30)
    assert (ba.src, ba.dst) == ("B", "A")


def test_store_batches_window_covers_store(tmp_path):
    store = write_synthetic_store(tmp_path / "s.zarr", train=5000, dim_a=32, dim_b=6, chunk_rows=500)
    full_a = np.asarray(store.features("train", "A")[:])
    batches = StoreBatches(store, "train", "A", "B", batch=100, window_rows=1000, seed=3)
    seen = set()
    for _ in range(300):
        x, y = batches()
        assert x.shape == (100, 32) and y.shape == (100, 6)
        seen.update(map(tuple, x.round(5).tolist()))
    rows = {tuple(r) for r in full_a.round(5).tolist()}
    assert seen <= rows
    assert len(seen) > 0.9 * len(rows)  # windows move over the whole store
    # Rows stay paired: each drawn x row is followed by the matching y row.
    idx = {tuple(r): i for i, r in enumerate(full_a.round(5).tolist())}
    full_b = np.asarray(store.features("train", "B")[:])
    x, y = batches()
    np.testing.assert_array_equal(full_b[[idx[tuple(r)] for r in x.round(5).tolist()]], y)


def test_adam_from_store_matches_api(tmp_path):
    from lintwin import fit_store

    store = write_synthetic_store(tmp_path / "s.zarr", train=3000, val=500, dim_a=20, dim_b=12)
    m = fit_store(store, "A", "B", method="adam", adam=AdamOptions(lr=0.01, batch=256, iterations=200),
                  progress=False)
    assert m.loss_curve.shape == (200,) and m.loss_curve[-20:].mean() < m.loss_curve[:20].mean()
    assert isinstance(FeatureStore.open(tmp_path / "s.zarr"), FeatureStore)


def _hand_steps(variant, g_seq, lr=0.1, b1=0.9, b2=0.999, eps=1e-8, decay=1e-5):
    """Adam written out scalar by scalar from the two published update rules."""
    p, m, v = 1.0, 0.0, 0.0
    for t, g in enumerate(g_seq, start=1):
        lr_t = lr * (1 - decay) ** (t - 1)
        m = b1 * m + (1 - b1) * g
        v = b2 * v + (1 - b2) * g * g
        if variant == "tensorflow":  # TF1 AdamOptimizer: correction folded into the step size, ε on √v
            p -= lr_t * np.sqrt(1 - b2**t) / (1 - b1**t) * m / (np.sqrt(v) + eps)
        else:  # Kingma & Ba, Algorithm 1: ε on √v̂
            p -= lr_t * (m / (1 - b1**t)) / (np.sqrt(v / (1 - b2**t)) + eps)
    return p


@pytest.mark.parametrize("variant", ["tensorflow", "kingma"])
def test_adam_step_matches_the_published_rule(variant):
    # Tiny gradients make ε matter, so the two variants give different answers.
    g_seq = [3e-8, -1e-8, 2e-8, 5e-9]
    o = AdamOptions(variant=variant)
    xp = __import__("array_api_compat.numpy", fromlist=["numpy"])
    P, M, V = np.ones(1), np.zeros(1), np.zeros(1)
    for t, g in enumerate(g_seq, start=1):
        lr = o.lr * (1 - o.decay) ** (t - 1)
        P, M, V = adam_step(P, np.array([g]), M, V, lr, 1 - o.beta1**t, 1 - o.beta2**t, o, xp)
    assert P[0] == pytest.approx(_hand_steps(variant, g_seq), rel=1e-14)
    other = _hand_steps("kingma" if variant == "tensorflow" else "tensorflow", g_seq)
    assert abs(P[0] - other) > 1e-4  # the test can tell the two rules apart


def test_adam_variant_is_recorded_in_the_map(small_pair):
    (a, b), _ = small_pair
    m = fit(a, b, method="adam", adam=AdamOptions(iterations=3, batch=64))
    assert m.options["variant"] == "tensorflow"
