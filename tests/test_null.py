"""The permutation null: a real permutation of B's rows, a null centred on chance, streaming = in memory."""

from __future__ import annotations

import numpy as np
import pytest

from lintwin.core.moments import Moments
from lintwin.errors import LintwinError
from lintwin.measures.null import arrays_null, shifted_block, shuffled_moments, store_null
from lintwin.measures.similarity import similarity
from lintwin.storage.store import FeatureStore
from lintwin.storage.synthetic import write_synthetic_store


def cka(m: Moments) -> dict[str, float | None]:
    v = similarity(m, predictivity=False).values
    return {k: v[k] for k in ("cka", "cka_debiased", "cca_mean_rho")}


def test_shifted_block_is_a_permutation_of_rows():
    n = 23
    b = np.arange(n)[:, None] * np.ones((1, 2))
    rng = np.random.default_rng(0)
    rows = np.concatenate([shifted_block(lambda lo, hi: b[lo:hi], lo, min(lo + 5, n), n, 9, rng)[:, 0]
                           for lo in range(0, n, 5)]).astype(int)
    assert sorted(rows) == list(range(n))  # every B row used once
    assert np.mean(rows == np.arange(n)) < 0.2  # pairing broken


def test_null_moments_keep_each_side_and_change_the_cross_block():
    rng = np.random.default_rng(1)
    a, b = rng.standard_normal((100, 4)), rng.standard_normal((100, 3))
    b[:, 0] += a[:, 0]
    m = Moments(4, 3, precision="float64").update(a, b)
    blocks = ((lo, a[lo : lo + 30]) for lo in range(0, 100, 30))
    p = shuffled_moments(blocks, lambda lo, hi: b[lo:hi], 100, (4, 3), ("A", "B"), 37, rng, precision="float64")
    for key in ("aa", "bb", "mean_a", "mean_b"):
        np.testing.assert_allclose(p.blocks()[key], m.blocks()[key], rtol=1e-12, atol=1e-12)
    assert abs(p.blocks()["ab"][0, 0]) < 0.5 * abs(m.blocks()["ab"][0, 0])


def test_null_on_independent_data_is_centred_and_related_data_stands_out():
    rng = np.random.default_rng(2)
    n = 400
    a = rng.standard_normal((n, 6))
    b_ind = rng.standard_normal((n, 5))
    b_rel = a[:, :5] + 0.5 * rng.standard_normal((n, 5))
    z_ind, z_rel = [], []
    for b in (b_ind, b_rel):
        obs = cka(Moments(6, 5, precision="float64", kernel=True).update(a, b))
        res = arrays_null(a, b, cka, repeats=30, seed=3, block_rows=64)
        summary = res.summary(obs)
        (z_ind if b is b_ind else z_rel).append(summary["cka"]["z"])
        if b is b_ind:  # debiased CKA of unrelated features is centred on 0 under the null
            assert abs(summary["cka_debiased"]["mean"]) < 3 * summary["cka_debiased"]["sd"] / np.sqrt(30) + 1e-3
    assert abs(z_ind[0]) < 3.5
    assert z_rel[0] > 20


def test_store_null_equals_arrays_null(tmp_path):
    path = tmp_path / "f.zarr"
    write_synthetic_store(path, train=300, dim_a=6, dim_b=5, seed=4, chunk_rows=64)
    s = FeatureStore.open(path)
    a, b = np.asarray(s.features("train", "A")[:]), np.asarray(s.features("train", "B")[:])
    got = store_null(s, "A", "B", cka, split="train", repeats=3, seed=5, precision="float64", block_rows=64,
                     progress=False)
    ref = arrays_null(a, b, cka, repeats=3, seed=5, block_rows=64, precision="float64")
    assert got.shifts == ref.shifts
    np.testing.assert_allclose(got.samples["cka"], ref.samples["cka"], rtol=1e-12)


def test_null_refuses_one_repetition():
    a = np.zeros((10, 2))
    with pytest.raises(LintwinError, match="at least 2 repetitions"):
        arrays_null(a, a, cka, repeats=1, seed=0)
