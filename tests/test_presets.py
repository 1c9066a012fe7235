"""Preprocessing presets against the real frameworks' transforms on real photos (≤ 1e-6 on the input tensor).

torchvision's ``weights.transforms()`` class (``ImageClassification``) and ``Resize`` + ``CenterCrop``,
and timm's ``create_transform`` (its evaluation transform), run on photos of
../shared/data/imagenet-sample of many sizes; lintwin's :class:`Preprocess` from the sidecar preset
must give the same float32 tensor.
"""

from __future__ import annotations

import importlib.util

import numpy as np
import pytest
from conftest import SHARED
from PIL import Image

from lintwin import LintwinError
from lintwin.networks.images import decode_image
from lintwin.networks.preprocess import IMAGENET_MEAN, IMAGENET_STD, Preprocess

PHOTOS = SHARED / "data" / "imagenet-sample"
MISSING = [m for m in ("torch", "torchvision", "timm") if importlib.util.find_spec(m) is None]
_WHY = (f"ImageNet sample photos not found at {PHOTOS}" if not (PHOTOS / "labels.csv").is_file()
        else f"the framework references need {', '.join(MISSING)}" if MISSING else "")
frameworks = pytest.mark.skipif(bool(_WHY), reason=_WHY)


@pytest.fixture(scope="module")
def photos() -> list:
    """Real photos of distinct sizes (landscape, portrait, square, odd sides), and one grey photo."""
    files = sorted(PHOTOS.glob("*.JPEG"))
    chosen, sizes = [], set()
    for f in files:
        with Image.open(f) as im:
            key = im.size
        if key not in sizes:
            sizes.add(key)
            chosen.append(f)
        if len(chosen) == 24:
            break
    return chosen


def _ours(pre: Preprocess, path) -> np.ndarray:
    return pre(decode_image(path))


def _max_diff(pre: Preprocess, reference, files) -> float:
    worst = 0.0
    for f in files:
        with Image.open(f) as im:
            want = reference(im.convert("RGB")).numpy()
        got = _ours(pre, f)
        assert got.shape == want.shape, (f.name, got.shape, want.shape)
        worst = max(worst, float(np.abs(got - want).max()))
    return worst


@pytest.mark.parametrize("crop, resize, interpolation", [
    (224, 256, "bilinear"),          # MobileNetV2, ResNet: weights.transforms()
    (224, 232, "bilinear"),          # torchvision's V2 weights
    (240, 255, "bicubic"),           # odd resize: the centre offset rounds
    (299, 342, "bilinear"),          # Inception v3
])
@frameworks
def test_torchvision_preset_equals_weights_transforms(photos, crop, resize, interpolation):
    from torchvision.transforms import InterpolationMode
    from torchvision.transforms._presets import ImageClassification

    ref = ImageClassification(crop_size=crop, resize_size=resize,
                              interpolation=InterpolationMode(interpolation))
    pre = Preprocess.from_dict({"preset": "torchvision", "size": crop, "resize": resize,
                                "interpolation": interpolation})
    assert _max_diff(pre, ref, photos) <= 1e-6


@frameworks
def test_torchvision_preset_equals_compose_with_rectangular_sizes(photos):
    from torchvision import transforms as T

    for resize, crop in ((300, (256, 288)), ((320, 360), (300, 331))):
        ref = T.Compose([T.Resize(resize), T.CenterCrop(crop), T.ToTensor(),
                         T.Normalize([0.5, 0.4, 0.3], [0.2, 0.25, 0.3])])
        pre = Preprocess.from_dict({"preset": "torchvision", "size": crop, "resize": resize,
                                    "mean": [0.5, 0.4, 0.3], "std": [0.2, 0.25, 0.3]})
        assert _max_diff(pre, ref, photos) <= 1e-6, (resize, crop)


@pytest.mark.parametrize("size, crop_pct, crop_mode, interpolation", [
    (224, 0.875, "center", "bicubic"),    # most timm ImageNet weights
    (224, 0.95, "center", "bilinear"),
    (288, 1.0, "center", "bicubic"),
    (256, 0.9, "squash", "bicubic"),
    ((224, 320), 0.875, "center", "bicubic"),   # non-square: timm's ResizeKeepRatio
    ((240, 200), 0.9, "squash", "bilinear"),
])
@frameworks
def test_timm_preset_equals_create_transform(photos, size, crop_pct, crop_mode, interpolation):
    from timm.data import create_transform

    hw = (size, size) if isinstance(size, int) else size
    ref = create_transform(input_size=(3, *hw), is_training=False, crop_pct=crop_pct, crop_mode=crop_mode,
                           interpolation=interpolation)
    pre = Preprocess.from_dict({"preset": "timm", "size": list(hw), "crop_pct": crop_pct, "crop_mode": crop_mode,
                                "interpolation": interpolation})
    assert _max_diff(pre, ref, photos) <= 1e-6


def test_tf_preset_is_tensorflows_central_crop_arithmetic():
    """TF's EfficientNet evaluation: crop int(f · short) with offsets ((H - c) + 1) // 2, then resize."""
    pre = Preprocess.from_dict({"preset": "tf", "size": 224, "crop_pct": 0.875, "interpolation": "bicubic"})
    assert pre.center_box(500, 375)[1] == (86, 24, 414, 352)  # c = int(0.875 * 375) = 328; ((375 - 328) + 1) // 2
    assert pre.center_box(333, 500)[1] == (21, 105, 312, 396)  # c = int(0.875 * 333) = 291; ((500 - 291) + 1) // 2 = 105
    assert pre.mean == (0.5,) and pre.std == (0.5,)  # Keras' "tf" mode: x / 127.5 - 1


def test_presets_differ_from_each_other_by_the_box_rule():
    """The one-pixel difference the presets exist for: torchvision rounds the offset, TF rounds up."""
    tv = Preprocess.from_dict({"preset": "torchvision", "size": 224, "resize": 256})
    tf = Preprocess.from_dict({"preset": "tf", "size": 224})
    timm = Preprocess.from_dict({"preset": "timm", "size": 224})
    assert tv.center_box(500, 375) == ((341, 256), (58, 16, 282, 240))
    assert timm.center_box(500, 375) == tv.center_box(500, 375)  # floor(224 / 0.875) = 256, then the same crop
    assert tf.center_box(500, 375)[1] != tv.center_box(500, 375)[1]


@pytest.mark.parametrize("entry, message", [
    ({"preset": "keras", "size": 224}, "preset must be one of torchvision, timm, tf"),
    ({"preset": "timm", "size": 224, "resize": 256}, "preset timm does not take resize"),
    ({"preset": "torchvision", "size": 224, "crop_pct": 0.9}, "preset torchvision does not take crop_pct"),
    ({"preset": "tf", "size": 224, "crop": "resize_then_center_crop"}, "preset tf does not take crop"),
    ({"preset": "timm", "size": 224, "crop_pct": 1.5}, r"crop_pct must be in \(0, 1\]"),
    ({"preset": "timm", "size": 224, "crop_mode": "border"}, "crop_mode must be one of center, squash"),
    ({"size": 224, "crop_pct": 0.9}, "crop_pct belongs to a preset"),
    ({"preset": "torchvision", "size": 384}, r"resize 256 is smaller than the crop size \[384, 384\]"),
])
def test_bad_preset_entries_are_one_clear_error(entry, message):
    with pytest.raises(LintwinError, match=message):
        Preprocess.from_dict(entry)


def test_preset_defaults_and_provenance():
    tv = Preprocess.from_dict({"preset": "torchvision", "size": [224, 224]})
    assert tv.resize == 256 and tv.mean == IMAGENET_MEAN and tv.std == IMAGENET_STD
    assert tv.as_dict()["preset"] == "torchvision" and tv.as_dict()["resize"] == 256
    plain = Preprocess.from_dict({"size": [28, 28], "channels": 1, "mean": [0.286], "std": [0.353]})
    assert "preset" not in plain.as_dict()  # sidecars without a preset record what they always recorded
    assert Preprocess.from_dict({"preset": "torchvision", "size": 28, "resize": None}).resize is None
