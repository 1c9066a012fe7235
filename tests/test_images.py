"""Image sources and preprocessing: folders, CSV labels, IDX and .npz files, bad files, reference pipelines."""

import gzip
import json
import struct

import numpy as np
import pytest
from conftest import SHARED
from PIL import Image

from lintwin import LintwinError
from lintwin.networks.images import concat_images, open_images, read_idx
from lintwin.networks.onnx_models import NetworkSpec
from lintwin.networks.preprocess import Augment, Preprocess, random_resized_box


def _png(path, value, size=(40, 30)):
    Image.fromarray(np.full((size[1], size[0], 3), value, np.uint8)).save(path)


def _photo(seed, w, h):
    """A smooth random RGB picture (like a photo, so every filter has something to do)."""
    rng = np.random.default_rng(seed)
    small = rng.integers(0, 256, (h // 8 + 2, w // 8 + 2, 3)).astype(np.uint8)
    return np.asarray(Image.fromarray(small).resize((w, h), Image.Resampling.BICUBIC))


def test_class_folders_skip_undecodable_and_truncated_files(tmp_path):
    for cls in ("cat", "dog"):
        (tmp_path / cls).mkdir()
        _png(tmp_path / cls / "a.png", 10)
        _png(tmp_path / cls / "b.png", 200)
    (tmp_path / "dog" / "broken.jpg").write_bytes(b"\xff\xd8 not really a jpeg")
    Image.fromarray(_photo(0, 96, 64)).save(tmp_path / "cat" / "c.jpg", quality=90)
    whole = (tmp_path / "cat" / "c.jpg").read_bytes()
    (tmp_path / "cat" / "cut.jpg").write_bytes(whole[: len(whole) // 2])  # passes Image.verify(), fails to decode
    s = open_images(tmp_path)
    assert s.ids == ["cat/a.png", "cat/b.png", "cat/c.jpg", "dog/a.png", "dog/b.png"]
    assert s.labels.tolist() == [0, 0, 0, 1, 1]
    assert s.skipped == ["cat/cut.jpg", "dog/broken.jpg"]
    assert s.load(4).shape == (30, 40, 3)
    assert open_images(tmp_path, workers=2).ids == s.ids  # checked in worker processes: the same answer


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


def test_csv_files_in_sub_folders_keep_their_paths_as_ids(tmp_path):
    for d, v in (("a", 10), ("b", 200)):
        (tmp_path / d).mkdir()
        _png(tmp_path / d / "same.png", v)
    (tmp_path / "labels.csv").write_text("file,class_index\na/same.png,4\nb/same.png,9\n")
    s = open_images(tmp_path)
    assert s.ids == ["a/same.png", "b/same.png"] and s.labels.tolist() == [4, 9]
    assert s.load(0)[0, 0, 0] == 10 and s.load(1)[0, 0, 0] == 200  # each id names its own file


@pytest.mark.parametrize("body, message", [
    ("file,label\na.png,x\n", "line 2: label 'x' of a.png is not an integer"),
    ("file,label\na.png,\n", "line 2: label '' of a.png is not an integer"),
    ("file,label\na.png,1\na.png,2\n", "line 3: a.png is listed twice"),
    ("file,label\n../a.png,1\n", "must be a path inside"),
    ("name,label\na.png,1\n", "needs a 'file' column"),
    ("file,label\n", "lists no images"),
])
def test_bad_csv_is_one_clear_error(tmp_path, body, message):
    _png(tmp_path / "a.png", 1)
    (tmp_path / "labels.csv").write_text(body)
    with pytest.raises(LintwinError, match=message.replace("(", r"\(").replace(".", r"\.")):
        open_images(tmp_path)


def test_16_bit_png_is_scaled_not_clipped(tmp_path):
    grey = np.array([[0, 257, 32768, 65535]], dtype=np.uint16)
    Image.fromarray(grey).save(tmp_path / "g.png")
    assert Image.open(tmp_path / "g.png").mode.startswith("I")  # really a 16-bit file
    (tmp_path / "labels.csv").write_text("file,label\ng.png,0\n")
    px = open_images(tmp_path).load(0)
    assert px.dtype == np.uint8 and px[0, :, 0].tolist() == [0, 1, 128, 255]  # round(v * 255 / 65535)


def test_idx_and_npz(tmp_path):
    images = np.arange(2 * 4 * 5, dtype=np.uint8).reshape(2, 4, 5)
    with gzip.open(tmp_path / "t-images-idx3-ubyte.gz", "wb") as fh:
        fh.write(struct.pack(">BBBB3I", 0, 0, 8, 3, 2, 4, 5) + images.tobytes())
    with gzip.open(tmp_path / "t-labels-idx1-ubyte.gz", "wb") as fh:
        fh.write(struct.pack(">BBBBI", 0, 0, 8, 1, 2) + bytes([4, 9]))
    s = open_images(tmp_path / "t-images-idx3-ubyte.gz")
    assert s.labels.tolist() == [4, 9] and s.load(1)[..., 0].tolist() == images[1].tolist()
    (tmp_path / "bad-images-idx3-ubyte").write_bytes(b"\x00\x00\x08\x03" + struct.pack(">3I", 5, 4, 5) + b"12")
    with pytest.raises(LintwinError, match="holds 2 bytes of data"):
        read_idx(tmp_path / "bad-images-idx3-ubyte")
    np.savez(tmp_path / "imgs.npz", images=images, labels=np.array([1, 2]))
    assert open_images(tmp_path / "imgs.npz").labels.tolist() == [1, 2]
    np.savez(tmp_path / "floats.npz", images=images.astype(float))
    with pytest.raises(LintwinError, match="images must be uint8"):
        open_images(tmp_path / "floats.npz")
    np.savez(tmp_path / "strlabels.npz", images=images, labels=np.array(["a", "b"]))
    with pytest.raises(LintwinError, match="labels must be a 1-D integer array"):
        open_images(tmp_path / "strlabels.npz")


@pytest.mark.parametrize("header", [
    b"\x00\x00\x0d\x03" + struct.pack(">3I", 1, 2, 2) + bytes(4),   # float32 type code
    b"\x00\x00\x08\x09" + bytes(40),                                # 9 dimensions
    b"\x00\x00\x08\x03\x00\x00",                                    # header cut short
    b"\x01\x00\x08\x01" + struct.pack(">I", 1) + b"x",             # bad magic
    b"",
])
def test_malformed_idx_header_is_one_clear_error(tmp_path, header):
    (tmp_path / "x-images-idx3-ubyte").write_bytes(header)
    with pytest.raises(LintwinError, match="x-images-idx3-ubyte"):
        open_images(tmp_path / "x-images-idx3-ubyte")


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


# -- reference pipelines, written from their definitions ------------------------------
def _reference_resize_then_crop(img, resize, size, filt):
    """torchvision Resize(resize) + CenterCrop(size) on a PIL image, from its source's arithmetic."""
    h, w = img.shape[:2]
    if w <= h:
        nw, nh = resize, int(resize * h / w)
    else:
        nh, nw = resize, int(resize * w / h)
    big = np.asarray(Image.fromarray(img).resize((nw, nh), filt))
    top, left = round((nh - size[0]) / 2.0), round((nw - size[1]) / 2.0)
    return big[top : top + size[0], left : left + size[1]]


def _reference_crop_then_resize(img, fraction, size, filt):
    """TF / timm evaluation: central crop of fraction * shorter side, offsets ((H - c) + 1) // 2, then resize."""
    h, w = img.shape[:2]
    c = int(fraction * min(h, w))
    top, left = ((h - c) + 1) // 2, ((w - c) + 1) // 2
    return np.asarray(Image.fromarray(img[top : top + c, left : left + c]).resize((size[1], size[0]), filt))


INTERPOLATIONS = ["nearest", "bilinear", "bicubic", "lanczos", "box", "hamming"]


@pytest.mark.parametrize("interp", INTERPOLATIONS)
@pytest.mark.parametrize("w, h", [(293, 217), (160, 255), (224, 224)])
def test_resize_then_center_crop_matches_the_reference(interp, w, h):
    img = _photo(w * h, w, h)
    filt = getattr(Image.Resampling, interp.upper())
    p = Preprocess(size=(224, 224), resize=256, interpolation=interp, mean=(0.5,) * 3, std=(0.25,) * 3)
    want = _reference_resize_then_crop(img, 256, (224, 224), filt)
    np.testing.assert_array_equal(p.pixels(img), want)
    x = (want.astype(np.float64) / 255 - 0.5) / 0.25
    np.testing.assert_allclose(p(img), np.transpose(x, (2, 0, 1)), rtol=0, atol=2e-6)


@pytest.mark.parametrize("interp", INTERPOLATIONS)
@pytest.mark.parametrize("w, h", [(293, 217), (160, 255), (256, 256)])
def test_center_crop_then_resize_matches_the_reference(interp, w, h):
    img = _photo(w + 7 * h, w, h)
    filt = getattr(Image.Resampling, interp.upper())
    p = Preprocess.from_dict({"size": [224, 224], "crop": "center_crop_then_resize", "crop_fraction": 0.875,
                              "interpolation": interp})
    np.testing.assert_array_equal(p.pixels(img), _reference_crop_then_resize(img, 0.875, (224, 224), filt))


def test_crop_arithmetic_against_numpy():
    """Box-filter halving is a 2 x 2 block mean, and the centre offsets are exactly torchvision's / TF's."""
    img = _photo(3, 130, 90)
    p = Preprocess(size=(40, 40), resize=45, interpolation="box")
    (rw, rh), box = p.center_box(130, 90)
    assert (rw, rh) == (65, 45) and box == (12, 2, 52, 42)  # int(45 * 130 / 90) = 65; round(25 / 2) = 12 (even)
    half = Preprocess(size=(45, 65), interpolation="box", crop="center_crop_then_resize", crop_fraction=1.0)
    x = img.astype(np.int64)
    rows = (x[:, 0::2] + x[:, 1::2] + 1) // 2  # box halving: pair means, rounded half up, across then down
    np.testing.assert_array_equal(half.pixels(img), (rows[0::2] + rows[1::2] + 1) // 2)
    q = Preprocess(size=(224, 224), crop="center_crop_then_resize", crop_fraction=0.875)
    assert q.center_box(500, 375)[1] == (86, 24, 414, 352)  # c = int(0.875 * 375) = 328; ((375 - 328) + 1) // 2


def test_random_resized_crop_scale_ratio_and_centre_view():
    rng = np.random.default_rng(0)
    boxes = [random_resized_box(300, 200, rng, (0.2, 0.5), (0.5, 2.0)) for _ in range(2000)]
    area = np.array([(r - left) * (b - t) for left, t, r, b in boxes]) / (300 * 200)
    aspect = np.array([(r - left) / (b - t) for left, t, r, b in boxes])
    assert all(0 <= left < r <= 300 and 0 <= t < b <= 200 for left, t, r, b in boxes)
    assert area.min() > 0.19 and area.max() < 0.51 and area.mean() == pytest.approx(0.35, abs=0.01)
    assert aspect.min() > 0.48 and aspect.max() < 2.05
    img = _photo(1, 120, 90)
    p = Preprocess(size=(32, 32), resize=40)
    views = [p.pixels(img, np.random.default_rng([0, 0, v]), Augment(scale=(0.5, 0.5), flip=False))
             for v in range(3)]
    assert all(v.shape == (32, 32, 3) for v in views) and not np.array_equal(views[1], views[2])
    with pytest.raises(LintwinError, match="scale must satisfy"):
        Augment(scale=(0.5, 1.5))


@pytest.mark.parametrize("change, message", [
    ({"preprocess": {"size": [28, 28], "meen": [0.2]}}, "unknown preprocess key\\(s\\) meen"),
    ({"colour": "red"}, "unknown key\\(s\\) colour"),
    ({"preprocess": {"size": [28, 28], "interpolation": "cubic"}}, "interpolation must be one of"),
    ({"preprocess": {"size": [28, 28], "crop": "center_crop_then_resize"}}, "needs crop_fraction"),
    ({"preprocess": {"size": [28, 28], "std": [0.0]}}, "std must be positive"),
    ({"feature_dim": "many"}, "not a valid network sidecar"),
])
def test_bad_sidecar_is_one_clear_error(tmp_path, change, message):
    d = {"name": "n", "backbone": "n.backbone.onnx", "head": "n.head.onnx", "feature_dim": 8, "classes": 2,
         "preprocess": {"size": [28, 28]}}
    (tmp_path / "n.json").write_text(json.dumps({**d, **change}))
    with pytest.raises(LintwinError, match=message):
        NetworkSpec.for_model(tmp_path / "n.json")


@pytest.mark.skipif(not (SHARED / "data" / "clothing-small" / "test").is_dir(), reason="clothing-small photos not found")
def test_pool_from_several_folders():
    root = SHARED / "data" / "clothing-small"
    parts = [open_images(root / p) for p in ("validation", "test")]
    pool = concat_images(parts)
    assert len(pool) == sum(len(p) for p in parts) and len(set(pool.ids)) == len(pool)
    assert pool.load(len(pool) - 1).ndim == 3


def test_many_files_are_checked_in_worker_processes(tmp_path):
    for i in range(70):
        Image.fromarray(_photo(i, 24, 16)).save(tmp_path / f"p{i:02d}.jpg", quality=90)
    whole = (tmp_path / "p05.jpg").read_bytes()
    (tmp_path / "p05.jpg").write_bytes(whole[: len(whole) // 2])
    serial, parallel = open_images(tmp_path), open_images(tmp_path, workers=2)
    assert serial.skipped == parallel.skipped == ["p05.jpg"]
    assert serial.ids == parallel.ids and len(parallel) == 69
