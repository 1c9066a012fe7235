import numpy as np
import pytest
from conftest import to_xp

from lintwin import Moments, NonFiniteError, ShapeError, accumulate_arrays
from lintwin.core.xp import to_numpy


def _direct(a, b):
    z = np.hstack([a, b]).astype(np.float64)
    mean = z.mean(axis=0)
    zc = z - mean
    return mean, zc.T @ zc


@pytest.mark.parametrize("precision,tol", [("float32", 2e-6), ("float64", 1e-12)])
def test_moments_match_direct_float64(xp, precision, tol):
    rng = np.random.default_rng(0)
    # Large common offset: the uncentred Gram would lose everything in float32.
    a = (1000.0 + rng.standard_normal((3000, 40))).astype(np.float32)
    b = (rng.random((3000, 30)) * 5).astype(np.float32)
    m = accumulate_arrays(to_xp(xp, a), to_xp(xp, b), precision=precision, block_rows=700)
    mean, com = _direct(a, b)
    assert m.n == 3000
    np.testing.assert_allclose(to_numpy(m.mean), mean, rtol=1e-12)
    err = np.abs(to_numpy(m.comoment) - com).max() / np.abs(com).max()
    assert err < tol


def test_chunking_does_not_change_result(realistic):
    """Any block size gives the float64 moments to float32 rounding (uneven last blocks included)."""
    a, b = realistic["a"][:9000, :200], realistic["b"][:9000, :100]
    mean, com = _direct(a, b)
    scale = np.abs(com).max()
    for rows in (7, 997, 4096, 9000):
        m = accumulate_arrays(a, b, block_rows=rows)
        assert m.n == 9000
        np.testing.assert_allclose(m.mean, mean, rtol=1e-12)
        assert np.abs(m.comoment - com).max() / scale < 5e-6


def test_merge_equals_one_pass(realistic, tmp_path):
    a, b = realistic["a"][:6000], realistic["b"][:6000]
    whole = accumulate_arrays(a, b, precision="float64")
    left = accumulate_arrays(a[:2500], b[:2500], precision="float64")
    right = accumulate_arrays(a[2500:], b[2500:], precision="float64")
    left.merge(right)
    assert left.n == whole.n
    np.testing.assert_allclose(left.mean, whole.mean, rtol=1e-13)
    np.testing.assert_allclose(left.comoment, whole.comoment, rtol=1e-10, atol=1e-9 * np.abs(whole.comoment).max())
    # Merging an empty accumulator changes nothing; saving and loading is exact.
    left.merge(Moments(512, 384))
    path = left.save(tmp_path / "m.npz")
    back = Moments.load(path)
    assert back.n == left.n and back.names == left.names and back.precision == "float64"
    np.testing.assert_array_equal(back.comoment, left.comoment)
    np.testing.assert_array_equal(back.mean, left.mean)


def test_merge_leaves_the_other_accumulator_alone(realistic):
    a, b = realistic["a"][:3000, :20], realistic["b"][:3000, :10]
    shard = accumulate_arrays(a[:1000], b[:1000])
    before = shard.comoment.copy()
    total = Moments(20, 10).merge(shard)
    total.update(a[1000:], b[1000:])
    np.testing.assert_array_equal(shard.comoment, before)
    assert total.n == 3000 and shard.n == 1000


def test_merge_refuses_other_dims():
    a = Moments(3, 2).update(np.ones((4, 3)), np.ones((4, 2)))
    with pytest.raises(ShapeError, match="cannot merge"):
        a.merge(Moments(2, 2).update(np.ones((4, 2)), np.ones((4, 2))))


def test_nan_rows_are_named(xp):
    a = np.ones((50, 4), np.float32)
    a[17, 2] = np.nan
    a[40, 0] = np.inf
    b = np.ones((50, 3), np.float32)
    with pytest.raises(NonFiniteError, match=r"features of resnet: 2 row\(s\), at row 17, 40"):
        accumulate_arrays(to_xp(xp, a), to_xp(xp, b), names=("resnet", "inception"), block_rows=64)
    # Chunk by chunk nothing is synced; the moments refuse to be used.
    m = Moments(4, 3, names=("resnet", "inception")).update(to_xp(xp, a), to_xp(xp, b))
    with pytest.raises(NonFiniteError, match="NaN or Inf in features of resnet or inception"):
        m.blocks()


def test_finite_values_whose_products_overflow_float32_are_named():
    a = np.full((10, 2), 3e20, np.float32)
    a[:, 1] = np.arange(10) * 1e20
    with pytest.raises(NonFiniteError, match="too large for float32 products"):
        accumulate_arrays(a, np.ones((10, 2), np.float32))
    m = accumulate_arrays(a, np.ones((10, 2), np.float32), precision="float64")
    assert m.is_finite()


def test_swapped_shard_is_reoriented_and_strangers_are_refused(realistic):
    """Equal widths are common: a shard with the networks swapped must not merge silently."""
    a, b = realistic["a"][:4000, :32], realistic["b"][:4000, :32]
    whole = accumulate_arrays(a, b, names=("inc", "res"), precision="float64")
    left = accumulate_arrays(a[:1500], b[:1500], names=("inc", "res"), precision="float64")
    right_swapped = accumulate_arrays(b[1500:], a[1500:], names=("res", "inc"), precision="float64")
    left.merge(right_swapped)
    np.testing.assert_allclose(left.mean, whole.mean, rtol=1e-13)
    np.testing.assert_allclose(left.comoment, whole.comoment, rtol=1e-10, atol=1e-10 * np.abs(whole.comoment).max())
    stranger = accumulate_arrays(a[:10], b[:10], names=("inc", "vgg"))
    with pytest.raises(ShapeError, match="of other networks"):
        left.merge(stranger)


def test_merge_and_update_never_modify_inputs(realistic):
    """Merges are pure: re-running one (as Dask does after a lost worker) cannot count rows twice."""
    a, b = realistic["a"][:3000, :20], realistic["b"][:3000, :10]
    x = accumulate_arrays(a[:1000], b[:1000], precision="float64")
    y = accumulate_arrays(a[1000:], b[1000:], precision="float64")
    before = (x.comoment.copy(), y.comoment.copy())
    parts = (x.n, x.mean, x.comoment)
    first = Moments.from_parts((20, 10), ("A", "B"), "float64", *parts).merge(y)
    again = Moments.from_parts((20, 10), ("A", "B"), "float64", *parts).merge(y)
    np.testing.assert_array_equal(first.comoment, again.comoment)
    np.testing.assert_array_equal(x.comoment, before[0])
    np.testing.assert_array_equal(y.comoment, before[1])
    cont = Moments.from_parts((20, 10), ("A", "B"), "float64", *parts).update(a[1000:], b[1000:])
    np.testing.assert_array_equal(x.comoment, before[0])
    np.testing.assert_allclose(cont.comoment, first.comoment, rtol=1e-12, atol=1e-12 * np.abs(first.comoment).max())


def test_update_after_load_continues_in_the_chunks_namespace(tmp_path, realistic):
    import array_api_strict

    a, b = realistic["a"][:2000, :12], realistic["b"][:2000, :8]
    whole = accumulate_arrays(a, b, precision="float64", kernel=True)
    path = accumulate_arrays(a[:700], b[:700], precision="float64", kernel=True).save(tmp_path / "m.npz")
    m = Moments.load(path)
    dev = array_api_strict.Device("device1")
    m.update(array_api_strict.asarray(a[700:], device=dev), array_api_strict.asarray(b[700:], device=dev))
    assert array_api_strict.__name__ in type(m.comoment).__module__ and m.comoment.device == dev
    np.testing.assert_allclose(to_numpy(m.comoment), whole.comoment, rtol=1e-10,
                               atol=1e-12 * np.abs(whole.comoment).max())
    for key in ("r", "rq", "ra", "qb"):
        np.testing.assert_allclose(to_numpy(m.kernel.sums[key]), whole.kernel.sums[key], rtol=1e-12)


def test_row_mismatch_and_dims(xp):
    m = Moments(4, 3)
    with pytest.raises(ShapeError, match="row counts differ: A has 5 rows, B has 6"):
        m.update(to_xp(xp, np.ones((5, 4))), to_xp(xp, np.ones((6, 3))))
    with pytest.raises(ShapeError, match="features of B have 2 columns, expected 3"):
        m.update(to_xp(xp, np.ones((5, 4))), to_xp(xp, np.ones((5, 2))))
    with pytest.raises(ShapeError, match="must be 2-D"):
        m.update(to_xp(xp, np.ones(5)), to_xp(xp, np.ones((5, 3))))


def test_moments_files_of_lintwin_0_2_still_load(tmp_path, realistic):
    """A two-block file in the 0.2 format (pair-named kernel sums) loads as the same moments."""
    import json

    a, b = realistic["a"][:500, :6], realistic["b"][:500, :4]
    m = accumulate_arrays(a, b, names=("inc", "res"), precision="float64", kernel=True)
    s = m.kernel.sums
    meta = {"format": "lintwin.moments/1", "dim_a": 6, "dim_b": 4, "names": ["inc", "res"], "precision": "float64",
            "n": m.n, "kernel": True}
    arrays = {f"kernel_{k}": np.asarray(v) for k, v in s.items()} | {"kernel_n": np.asarray(m.kernel.n)}
    np.savez(tmp_path / "old.npz", meta=np.array(json.dumps(meta)), mean=m.mean, comoment=m.comoment, **arrays)
    back = Moments.load(tmp_path / "old.npz")
    assert back.names == ("inc", "res") and back.dims == (6, 4) and back.n == m.n
    np.testing.assert_array_equal(back.comoment, m.comoment)
    for key, value in s.items():
        np.testing.assert_allclose(back.kernel.sums[key], value, rtol=0, atol=0)
