import numpy as np
import pytest
from conftest import to_xp

from lintwin import AffineMap, MapFileError, ShapeError, fit
from lintwin.core.xp import to_numpy


@pytest.fixture
def amap():
    rng = np.random.default_rng(0)
    a = rng.random((500, 6))
    b = a @ rng.random((6, 4)) + 0.5
    m = fit(a, b, names=("mobilenet", "effnet"), precision="float64")
    m.loss_curve = np.linspace(1, 0, 10)
    return m


def test_save_load_exact(tmp_path, amap):
    path = amap.save(tmp_path / "maps" / "m.npz")
    back = AffineMap.load(path)
    np.testing.assert_array_equal(back.weight, amap.weight)
    np.testing.assert_array_equal(back.bias, amap.bias)
    np.testing.assert_array_equal(back.loss_curve, amap.loss_curve)
    assert (back.src, back.dst, back.method, back.n_train) == ("mobilenet", "effnet", "lstsq", 500)
    assert back.stats["solver"] == "cholesky" and back.options == {"ridge": 0.0, "precision": "float64"}


def test_apply_on_each_namespace(xp, amap):
    x = np.random.default_rng(1).random((3, 6))
    want = x @ amap.weight.T + amap.bias
    got = amap.apply(to_xp(xp, x))
    assert type(got) is type(to_xp(xp, x))
    np.testing.assert_allclose(to_numpy(got), want, rtol=1e-12)
    assert to_numpy(amap.apply(to_xp(xp, x.astype(np.float32)))).dtype == np.float32


def test_apply_refuses_wrong_dimension(amap):
    with pytest.raises(ShapeError, match=r"map mobilenet→effnet expects 6-dim features of mobilenet, got an array of shape \(3, 5\)"):
        amap.apply(np.ones((3, 5)))
    with pytest.raises(ShapeError, match="expects 6-dim"):
        amap.apply(np.ones(6))


def test_other_pair_and_other_files_are_refused(tmp_path, amap):
    with pytest.raises(MapFileError, match="fitted for mobilenet→effnet, not effnet→mobilenet"):
        amap.check_pair("effnet", "mobilenet")
    with pytest.raises(MapFileError, match="no map file"):
        AffineMap.load(tmp_path / "nope.npz")
    np.savez(tmp_path / "other.npz", x=np.ones(3))
    with pytest.raises(MapFileError, match="not a lintwin map file"):
        AffineMap.load(tmp_path / "other.npz")
    np.savez(tmp_path / "pickled.npz", meta=np.array([{"format": "lintwin.map/1"}], dtype=object))
    with pytest.raises(MapFileError, match="not a lintwin map file"):
        AffineMap.load(tmp_path / "pickled.npz")
    (tmp_path / "junk.npz").write_bytes(b"not a zip")
    with pytest.raises(MapFileError, match="not a lintwin map file"):
        AffineMap.load(tmp_path / "junk.npz")


_WRITER = """
import sys
import numpy as np
from lintwin import AffineMap
path = sys.argv[1]
maps = [AffineMap(np.full((400, 600), float(k)), np.full(400, float(k)), src="a", dst="b") for k in (1, 2)]
maps[0].save(path)
print("ready", flush=True)
k = 0
while True:
    k ^= 1
    maps[k].save(path)
"""


def test_map_writes_survive_sigkill(tmp_path):
    """20 kills at random moments of a process rewriting a map: the file is always one whole map."""
    import random
    import signal
    import subprocess
    import sys
    import time

    path = tmp_path / "m.npz"
    rng = random.Random(1)
    for _ in range(20):
        proc = subprocess.Popen([sys.executable, "-c", _WRITER, str(path)], stdout=subprocess.PIPE, text=True)
        assert proc.stdout.readline().strip() == "ready"
        time.sleep(rng.uniform(0.0, 0.3))
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        m = AffineMap.load(path)
        value = float(m.weight[0, 0])
        assert value in (1.0, 2.0)
        np.testing.assert_array_equal(m.weight, value)
        np.testing.assert_array_equal(m.bias, value)
