"""The block pipeline: the reader (threads, read-ahead, reused buffers), the fused kernel's math against the
moments, TF32 products, and no device→host sync per block in any pass (counted on a non-default device)."""

from __future__ import annotations

import threading
from contextlib import contextmanager

import numpy as np
import pytest

from lintwin import FeatureStore
from lintwin.errors import StoreError
from lintwin.affine import AffineMap
from lintwin.core import block_moments
from lintwin.core.block_moments import BlockKernel, reference, tf32_round
from lintwin.core.driver import accumulate, accumulate_folds
from lintwin.core.gpu import gpu_status
from lintwin.core.moments import Moments
from lintwin.core.placement import placement_of
from lintwin.experiments.demo import BUNDLED_MODELS
from lintwin.experiments.scoring import Config, score_pass
from lintwin.measures.null import store_null
from lintwin.networks.onnx_models import Head
from lintwin.storage.reader import BlockReader
from lintwin.storage.source import StoreSource
from lintwin.storage.synthetic import write_synthetic_store

from conftest import lstsq_reference, rel


@pytest.fixture(scope="module")
def uneven(tmp_path_factory):
    """A split whose networks are chunked differently (96 and 64 rows), 1000 rows."""
    path = tmp_path_factory.mktemp("pipe") / "s.zarr"
    store = FeatureStore.create(path)
    rng = np.random.default_rng(3)
    a = (rng.standard_normal((1000, 24)) * 3 + 50).astype(np.float32)
    b = np.maximum(rng.standard_normal((1000, 40)), 0).astype(np.float32)
    for name, x, chunk in (("A", a, 96), ("B", b, 64)):
        arr = store.open_features_for_write("train", name, rows=1000, dim=x.shape[1], chunk_rows=chunk,
                                            rows_identity="rows 0..999")
        FeatureStore.write_rows(arr, 0, x)
    store.close()
    return FeatureStore.open(path), a, b


def _reader(store, **kwargs):
    arrays = [store.features("train", n) for n in ("A", "B")]
    bounds = [(lo, min(lo + 100, 1000)) for lo in range(0, 1000, 100)]
    return BlockReader("train", ["A", "B"], arrays, bounds, **kwargs)


@pytest.mark.parametrize("threads", [1, 2, 5])
@pytest.mark.parametrize("depth", [0, 1, 3])
def test_blocks_are_identical_for_any_thread_count_and_depth(uneven, threads, depth):
    store, a, b = uneven
    got = [(lo, blk.joined.copy(), [x.copy() for x in blk]) for lo, blk in _reader(store, threads=threads, depth=depth)]
    assert [lo for lo, _, _ in got] == list(range(0, 1000, 100))
    np.testing.assert_array_equal(np.concatenate([j for _, j, _ in got]), np.hstack([a, b]))
    np.testing.assert_array_equal(np.concatenate([x[0] for _, _, x in got]), a)
    np.testing.assert_array_equal(np.concatenate([x[1] for _, _, x in got]), b)


@pytest.mark.parametrize("depth", [1, 3])
def test_blocks_ahead_are_decoded_before_a_block_is_consumed(uneven, depth):
    """While block k is held, blocks k+1..k+depth get decoded without the consumer doing anything, and no more."""
    store, _, _ = uneven
    decoded: set[int] = set()
    cond = threading.Condition()

    def on_decoded(k: int) -> None:
        with cond:
            decoded.add(k)
            cond.notify_all()

    reader = _reader(store, threads=2, depth=depth, on_decoded=on_decoded)
    last = len(reader.bounds) - 1
    for k, _ in enumerate(reader):
        want = set(range(k + 1, min(k + depth, last) + 1))
        with cond:  # an event from the decoding threads, not a clock: the timeout only turns a hang into a failure
            assert cond.wait_for(lambda: want <= decoded, timeout=120), f"block {k}: {sorted(want - decoded)} not read ahead"
            assert max(decoded) <= k + depth  # bounded: block k's buffer is still held


def test_no_new_block_buffer_after_warm_up(uneven):
    store, _, _ = uneven
    for depth, spare in ((0, 0), (2, 0), (2, 1)):
        reader = _reader(store, threads=3, depth=depth, spare=spare)
        seen = {blk.buffer.ctypes.data for _, blk in reader}
        assert reader.buffers_made == len(seen) == depth + 1 + spare


def test_a_damaged_chunk_is_one_error_naming_the_rows(uneven, tmp_path):
    import shutil

    store, _, _ = uneven
    copy = tmp_path / "s.zarr"
    shutil.copytree(store.path, copy)
    chunk = copy / "train" / "features" / "B" / "c" / "3" / "0"
    data = bytearray(chunk.read_bytes())
    data[40] ^= 0xFF
    chunk.write_bytes(bytes(data))
    arrays = [FeatureStore.open(copy).group["train"]["features"][n] for n in ("A", "B")]
    reader = BlockReader("train", ["A", "B"], arrays, [(0, 500), (500, 1000)], threads=3, depth=1)
    with pytest.raises(StoreError, match=r"features of 'B' in split 'train', rows 192\.\.255, cannot be read"):
        list(reader)


def _moments_from_sums(s: block_moments.BlockSums) -> tuple[np.ndarray, np.ndarray]:
    g = np.triu(s.gram.astype(np.float64))
    g = g + np.triu(g, 1).T
    mean = s.colsum / s.n
    e = mean - s.shift.astype(np.float64)
    return mean, g - s.n * np.outer(e, e)


@pytest.mark.parametrize("precision", ["float32", "float64"])
def test_the_fused_kernels_reference_gives_todays_moments(precision):
    """shift + float64 column sums + SYRK's upper triangle, corrected in float64, is what Moments accumulates."""
    rng = np.random.default_rng(0)
    z = np.hstack([rng.standard_normal((3000, 7)) * 1e-3 + 1e3, np.maximum(rng.standard_normal((3000, 5)), 0)])
    z = z.astype(np.float32 if precision == "float32" else np.float64)
    mean, com = _moments_from_sums(reference(z, precision))
    m = Moments(7, 5, precision=precision).update_joined(z)
    z64 = z.astype(np.float64)
    exact = (z64 - z64.mean(0)).T @ (z64 - z64.mean(0))
    tol = 5e-5 if precision == "float32" else 1e-13  # float32 sums of 3000 rows, in another order
    np.testing.assert_allclose(m.mean, mean, rtol=1e-15)
    np.testing.assert_allclose(m.comoment, com, rtol=0, atol=tol * np.abs(exact).max())
    np.testing.assert_allclose(com, exact, rtol=0, atol=tol * np.abs(exact).max())
    # the NumPy kernel (in place, reused buffers) computes the same sums as the reference
    got = BlockKernel().run(z.copy(), precision, own=True)
    np.testing.assert_array_equal(got.shift, reference(z, precision).shift)
    np.testing.assert_allclose(np.triu(got.gram), reference(z, precision).gram, rtol=1e-5 if precision == "float32"
                               else 1e-12, atol=1e-6 * np.abs(got.gram).max())


def test_grouped_corrections_equal_chunk_by_chunk_updates():
    """Chunks whose corrections are applied 64 at a time, merged and continued: the float64 two-pass answer."""
    rng = np.random.default_rng(1)
    z = rng.standard_normal((20000, 6)) * np.array([1, 10, 1e3, 1e-2, 5, 1]) + np.linspace(-1e4, 1e4, 20000)[:, None]
    m = Moments(3, 3, precision="float64")
    for lo in range(0, 20000, 150):
        m.update_joined(z[lo : lo + 150])
    other = Moments(3, 3, precision="float64").update_joined(z[:10])
    other.merge(m)
    ref = (z - z.mean(0)).T @ (z - z.mean(0))
    np.testing.assert_allclose(m.mean, z.mean(0), rtol=0, atol=1e-14 * np.abs(z).max())
    np.testing.assert_allclose(m.comoment, ref, rtol=1e-10, atol=1e-10 * np.abs(ref).max())
    assert other.n == 20010


def test_tf32_rounding_keeps_ten_mantissa_bits():
    x = np.random.default_rng(2).standard_normal(100000).astype(np.float32) * 1e3
    t = tf32_round(x)
    assert np.all((t.view(np.uint32) & np.uint32(0x1FFF)) == 0)
    spacing = np.ldexp(1.0, np.frexp(np.abs(x).astype(np.float64))[1] - 11)  # TF32's unit in the last place
    assert np.all(np.abs(t.astype(np.float64) - x) <= spacing / 2 + 1e-30)
    assert np.isnan(tf32_round(np.float32("nan"))) and np.isinf(tf32_round(np.float32("inf")))


def test_tf32_products_give_the_stated_error(realistic):
    """Emulated TF32 products: W's error is the printed eps·||R⁻¹||_F, eps = 2⁻¹¹·√(2/n), above float32's."""
    import warnings

    from lintwin.api import accumulate_arrays
    from lintwin.solvers import maps_from_moments
    from lintwin.solvers.lstsq import PrecisionWarning, RankWarning

    a, b = realistic["a"][:20000, :64], realistic["b"][:20000, :48]
    W_ref, _ = lstsq_reference(a, b)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", (PrecisionWarning, RankWarning))
        m32 = maps_from_moments(accumulate_arrays(a, b))[0]
        mtf = maps_from_moments(accumulate_arrays(a, b, precision="tf32"))[0]
    err32, errtf = rel(m32.weight, W_ref), rel(mtf.weight, W_ref)
    assert errtf > 5 * err32  # the rounding really is TF32's
    assert errtf / 10 <= mtf.stats["expected_error"] <= errtf * 10


# -- no device→host conversion per block ------------------------------------------------------------
@contextmanager
def device_reads(xs, dev):
    """Count every conversion of an array on ``dev`` to a Python value or to the host (a device sync)."""
    Array = xs._array_object.Array
    count = [0]
    saved = {}

    def wrap(name):
        orig = getattr(Array, name)

        def counted(self, *args, **kwargs):
            target = args[0] if name == "to_device" and args else kwargs.get("device")
            if self.device == dev and (name != "to_device" or target != dev):
                count[0] += 1
            return orig(self, *args, **kwargs)

        saved[name] = orig
        setattr(Array, name, counted)

    for name in ("__bool__", "__float__", "__int__", "__index__", "__complex__", "__array__", "__dlpack__",
                 "to_device"):
        wrap(name)
    try:
        yield count
    finally:
        for name, orig in saved.items():
            setattr(Array, name, orig)


@pytest.fixture(scope="module")
def fashion_sized(tmp_path_factory):
    """Synthetic features of the bundled networks' widths (128 and 160), 2400 train + 2400 val rows."""
    path = tmp_path_factory.mktemp("sync") / "s.zarr"
    write_synthetic_store(path, train=2400, val=2400, dim_a=128, dim_b=160, names=("fmnist-resnet", "fmnist-inception"),
                          chunk_rows=200)
    store = FeatureStore.open(path, mode="r+")
    store.set_labels("val", np.random.default_rng(0).integers(0, 10, 2400))
    store.close()
    return FeatureStore.open(path)


def test_no_device_sync_per_block_in_any_pass(fashion_sized):
    """Accumulation, folds, the null, scoring and a whole study: the same number of device reads for 3 blocks as
    for 12 (array_api_strict with a non-default device stands for a GPU)."""
    import array_api_strict as xs

    from lintwin.experiments.study import run_study

    dev = xs.Device("device1")
    place = placement_of(xs.asarray(np.zeros(1), device=dev))
    store, names = fashion_sized, ("fmnist-resnet", "fmnist-inception")
    heads = [Head(BUNDLED_MODELS / f"{n}.head.onnx") for n in names]
    folds = np.arange(2400) % 3

    def passes(block_rows: int, tmp: str) -> dict[str, int]:
        counts = {}
        source = StoreSource(store, "train", names, block_rows=block_rows)
        with device_reads(xs, dev) as c:
            m = accumulate(source, placement=place)
        counts["accumulate"] = c[0]
        assert m.comoment.device == dev
        with device_reads(xs, dev) as c:
            accumulate_folds(source, folds, 3, placement=place)
        counts["folds"] = c[0]
        with device_reads(xs, dev) as c:
            store_null(store, *names, lambda mm: {"n": float(mm.n)}, split="train", repeats=2, seed=0,
                       block_rows=block_rows, device=place, progress=False)
        counts["null"] = c[0]
        rng = np.random.default_rng(0)
        amap = AffineMap(xs.asarray(rng.standard_normal((160, 128)) * 0.01, device=dev),
                         xs.asarray(np.zeros(160), device=dev), src=names[0], dst=names[1])
        configs = [Config("own", 1, heads[1]), Config("mapped", 0, heads[1], amap, dst=1)]
        with device_reads(xs, dev) as c:
            got = score_pass(store, "val", list(names), configs, placement=place, block_rows=block_rows)
            got["own"].result(), got["mapped"].result(), got["mapped"].metrics.result()
        counts["scoring"] = c[0]
        with device_reads(xs, dev) as c:
            run_study(store, list(names), [h.path for h in heads], device=place, out=__import__("pathlib").Path(tmp),
                      block_rows=block_rows, progress=False, echo=lambda _: None)
        counts["study"] = c[0]
        return counts

    import tempfile

    with tempfile.TemporaryDirectory() as t1, tempfile.TemporaryDirectory() as t2:
        few, many = passes(800, t1), passes(200, t2)
    assert few == many, (few, many)


def test_device_scoring_gives_the_host_heads_predictions(fashion_sized):
    import array_api_strict as xs

    dev = xs.Device("device1")
    place = placement_of(xs.asarray(np.zeros(1), device=dev))
    names = ["fmnist-resnet", "fmnist-inception"]
    heads = [Head(BUNDLED_MODELS / f"{n}.head.onnx") for n in names]
    on_dev = score_pass(fashion_sized, "val", names, [Config(k, k, heads[k]) for k in (0, 1)], placement=place)
    on_host = score_pass(fashion_sized, "val", names, [Config(k, k, heads[k]) for k in (0, 1)],
                         placement=placement_of(np.zeros(1)))
    for k in (0, 1):
        np.testing.assert_array_equal(on_dev[k].result(), on_host[k].result())


# -- the CuPy kernel against its reference, where a GPU exists -----------------------------------------
_usable, _why = gpu_status()
gpu_only = pytest.mark.skipif(not _usable, reason=f"no GPU for CuPy: {_why}")


@gpu_only
@pytest.mark.parametrize("precision", ["float32", "float64", "tf32"])
def test_cupy_fused_kernel_matches_the_reference(precision):
    import cupy

    rng = np.random.default_rng(5)
    z = (rng.standard_normal((5000, 300)) * 2 + 40).astype(np.float64 if precision == "float64" else np.float32)
    ref = reference(z, precision)
    got = BlockKernel().run(cupy.asarray(z), precision, own=False)
    np.testing.assert_allclose(cupy.asnumpy(got.colsum), ref.colsum, rtol=1e-12)
    np.testing.assert_array_equal(cupy.asnumpy(got.shift), ref.shift)
    tol = {"float32": 1e-5, "float64": 1e-12, "tf32": 5e-3}[precision]
    np.testing.assert_allclose(np.triu(cupy.asnumpy(got.gram)), ref.gram, rtol=0, atol=tol * np.abs(ref.gram).max())
    acc = cupy.zeros((300, 300))
    BlockKernel.add_gram(acc, got)
    full = np.triu(ref.gram.astype(np.float64)) + np.triu(ref.gram.astype(np.float64), 1).T
    np.testing.assert_allclose(cupy.asnumpy(acc), full, rtol=0, atol=tol * np.abs(full).max())


@gpu_only
def test_gpu_pass_matches_the_cpu(tmp_path):
    write_synthetic_store(tmp_path / "s.zarr", train=30000, dim_a=96, dim_b=64, chunk_rows=1000)
    store = FeatureStore.open(tmp_path / "s.zarr")
    source = StoreSource(store, "train", ["A", "B"], block_rows=4000)
    from lintwin.core.placement import placement

    on_gpu = accumulate(source, placement=placement("gpu"), precision="float64")
    on_cpu = accumulate(source, placement=placement("cpu"), precision="float64")
    from lintwin.core.xp import to_numpy

    np.testing.assert_allclose(to_numpy(on_gpu.comoment), on_cpu.comoment, rtol=1e-11,
                               atol=1e-11 * np.abs(on_cpu.comoment).max())


def test_blocks_are_sized_from_the_budget_and_refused_beyond_it():
    from lintwin.core.memory import block_rows_for, moments_bytes
    from lintwin.errors import LintwinError

    dims = (1536, 2048)
    rows = block_rows_for(dims, 2 * 2**30)
    assert moments_bytes(dims) + 4 * 4 * 3584 * rows <= 2 * 2**30 < moments_bytes(dims) + 4 * 4 * 3584 * (rows + 1)
    with pytest.raises(LintwinError, match="more than the"):
        block_rows_for(dims, moments_bytes(dims))
