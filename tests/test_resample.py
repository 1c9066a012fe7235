"""Grid resampling: the rows lintwin compares and the ONNX node the stitched model runs are one bilinear resampling.

References: onnxruntime's own ``Resize`` (linear, half-pixel) on N x C x H x W tensors, and PyTorch's
``interpolate(mode="bilinear", align_corners=False)`` where PyTorch is installed.
"""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from conftest import ROOT, to_xp

from lintwin.core.xp import to_numpy
from lintwin.errors import ShapeError
from lintwin.networks.onnx_models import open_session
from lintwin.networks.resample import axis_weights, common_grid, resample_rows, resize_model

PAIRS = [((14, 14), (7, 7)), ((28, 28), (7, 7)), ((7, 7), (14, 14)), ((7, 7), (3, 3)), ((56, 56), (7, 7)),
         ((5, 9), (7, 4)), ((7, 7), (1, 1))]
LIKE = onnx.load(str(ROOT / "models" / "fashion" / "fmnist-resnet.onnx"))


def _maps(src: tuple[int, int], c: int = 5, n: int = 3) -> np.ndarray:
    return np.random.default_rng(sum(src)).standard_normal((n, c, *src)).astype(np.float32)


def _rows(x: np.ndarray) -> np.ndarray:
    """N x C x H x W as per-position rows (row-major over H, W), as ``extract --pool positions`` stores them."""
    return np.moveaxis(x, 1, -1).reshape(-1, x.shape[1])


@pytest.mark.parametrize(("src", "dst"), PAIRS, ids=lambda g: "x".join(map(str, g)))
def test_rows_and_the_onnx_node_resample_as_onnxruntime_does(src, dst):
    x = _maps(src)
    model = resize_model("x", "y", 5, src, dst, LIKE)
    onnx.checker.check_model(model)
    sess = open_session(model.SerializeToString(), "resize")
    want = sess.run(None, {"x": x})[0]
    assert want.shape == (3, 5, *dst)
    got = resample_rows(_rows(x).astype(np.float64), src, dst)
    np.testing.assert_allclose(got, _rows(want), rtol=0, atol=2e-6 * np.abs(x).max())


@pytest.mark.parametrize(("src", "dst"), PAIRS, ids=lambda g: "x".join(map(str, g)))
def test_resampling_is_pytorchs_bilinear_without_align_corners(src, dst):
    torch = pytest.importorskip("torch", reason="PyTorch is not installed (pip install -e '.[models]')")
    x = _maps(src).astype(np.float64)
    want = torch.nn.functional.interpolate(torch.from_numpy(x), size=dst, mode="bilinear", align_corners=False)
    np.testing.assert_allclose(resample_rows(_rows(x), src, dst), _rows(want.numpy()), rtol=0, atol=1e-13)


def test_halving_is_the_mean_of_each_pair_and_weights_sum_to_one():
    np.testing.assert_array_equal(axis_weights(4, 2), [[0.5, 0.5, 0, 0], [0, 0, 0.5, 0.5]])
    for n_in, n_out in [(7, 3), (3, 7), (56, 7), (1, 5)]:
        np.testing.assert_allclose(axis_weights(n_in, n_out).sum(axis=1), 1.0, rtol=0, atol=1e-15)


def test_resampling_follows_the_namespace_of_its_rows(xp):
    x = _maps((14, 14))
    rows = to_xp(xp, _rows(x).astype(np.float64))
    got = resample_rows(rows, (14, 14), (7, 7))
    np.testing.assert_allclose(to_numpy(got), resample_rows(_rows(x).astype(np.float64), (14, 14), (7, 7)),
                               rtol=0, atol=1e-15)


def test_common_grid_is_the_coarser_and_refuses_what_cannot_be_aligned():
    assert common_grid((14, 14), (7, 7), "x") == (7, 7)
    assert common_grid((14, 7), (7, 14), "x") == (7, 7)
    assert common_grid((50,), (50,), "x") == (50,)
    assert common_grid((), (), "x") == ()
    for a, b in [((50,), (49,)), ((7, 7), (49,)), ((7, 7), ())]:
        with pytest.raises(ShapeError, match="cannot be aligned"):
            common_grid(a, b, "the layers")
    with pytest.raises(ShapeError, match="not whole samples"):
        resample_rows(np.zeros((50, 3)), (7, 7), (3, 3))
