"""Image sources and preprocessing: folders, CSV labels, IDX and .npz files, bad files."""

import gzip
import struct

import numpy as np
import pytest
from PIL import Image

from conftest import SHARED
from lintwin import LintwinError
from lintwin.images import Preprocess, concat_images, open_images, read_idx


def _png(path, value, size=(40, 30)):
    Image.fromarray(np.full((size[1], size[0], 3), value, np.uint8)).save(path)


def test_class_folders_skip_undecodable_files(tmp_path):
    for cls in ("cat", "dog"):
        (tmp_path / cls).mkdir()
        _png(tmp_path / cls / "a.png", 10)
        _png(tmp_path / cls / "b.png", 200)
    (tmp_path / "dog" / "broken.jpg").write_bytes(b"\xff\xd8 not really a jpeg")
    s = open_images(tmp_path)
    assert s.ids == ["cat/a.png", "cat/b.png", "dog/a.png", "dog/b.png"]
    assert s.labels.tolist() == [0, 0, 1, 1]
    assert s.skipped == ["broken.jpg"]
    assert s.load(3).shape == (30, 40, 3)


def test_csv_labels_and_plain_folder(tmp_path):
    _png(tmp_path / "x.png", 1)
    _png(tmp_path / "y.png", 2)
    (tmp_path / "labels.csv").write_text("file,label\nx.png,7\ny.png,3\nmissing.png,1\n")
    s = open_images(tmp_path)
    assert s.ids == ["x.png", "y.png"] and s.labels.tolist() == [7, 3] and s.skipped == ["missing.png"]
    (tmp_path / "labels.csv").unlink()
    plain = open_images(tmp_path)
    assert plain.labels.tolist() == [-1, -1]  # an unlabelled pool
    with pytest.raises(LintwinError, match="no images at"):
        open_images(tmp_path / "nope")


def test_idx_and_npz(tmp_path):
    images = np.arange(2 * 4 * 5, dtype=np.uint8).reshape(2, 4, 5)
    with gzip.open(tmp_path / "t-images-idx3-ubyte.gz", "wb") as fh:
        fh.write(struct.pack(">BBBB3I", 0, 0, 8, 3, 2, 4, 5) + images.tobytes())
    with gzip.open(tmp_path / "t-labels-idx1-ubyte.gz", "wb") as fh:
        fh.write(struct.pack(">BBBBI", 0, 0, 8, 1, 2) + bytes([4, 9]))
    s = open_images(tmp_path / "t-images-idx3-ubyte.gz")
    assert s.labels.tolist() == [4, 9] and s.load(1)[..., 0].tolist() == images[1].tolist()
    (tmp_path / "bad-images-idx3-ubyte").write_bytes(b"\x00\x00\x08\x03" + struct.pack(">3I", 5, 4, 5) + b"12")
    with pytest.raises(LintwinError, match="is truncated"):
        read_idx(tmp_path / "bad-images-idx3-ubyte")
    np.savez(tmp_path / "imgs.npz", images=images, labels=np.array([1, 2]))
    assert open_images(tmp_path / "imgs.npz").labels.tolist() == [1, 2]
    np.savez(tmp_path / "floats.npz", images=images.astype(float))
    with pytest.raises(LintwinError, match="images must be uint8"):
        open_images(tmp_path / "floats.npz")


def test_preprocess_resize_crop_normalise_and_augment():
    img = np.zeros((100, 200, 3), np.uint8)
    img[:, :, 0] = 255
    p = Preprocess(size=(32, 32), resize=40, mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5))
    x = p(img)
    assert x.shape == (3, 32, 32) and x.dtype == np.float32
    np.testing.assert_allclose(x[0], 1.0) and np.testing.assert_allclose(x[1], -1.0)
    bgr = Preprocess(size=(32, 32), resize=40, channel_order="BGR")(img)
    np.testing.assert_allclose(bgr[2], 1.0)
    grey = Preprocess(size=(8, 8), channels=1)(np.full((8, 8, 1), 51, np.uint8))
    np.testing.assert_allclose(grey, 0.2)
    a1 = p(img, np.random.default_rng([0, 5, 1]))
    a2 = p(img, np.random.default_rng([0, 5, 1]))
    np.testing.assert_array_equal(a1, a2)  # seeded views are reproducible


@pytest.mark.skipif(not (SHARED / "data" / "clothing-small" / "test").is_dir(), reason="clothing-small photos not found")
def test_pool_from_several_folders():
    root = SHARED / "data" / "clothing-small"
    parts = [open_images(root / p) for p in ("validation", "test")]
    pool = concat_images(parts)
    assert len(pool) == sum(len(p) for p in parts) and len(set(pool.ids)) <= len(pool)
    assert pool.load(len(pool) - 1).ndim == 3
