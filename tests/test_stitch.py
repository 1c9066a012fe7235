"""lintwin stitch: one ONNX model (image → B's logits through A's features and a map) equals the three steps."""

from __future__ import annotations

import numpy as np
import onnxruntime as ort
import pytest
from typer.testing import CliRunner

from lintwin import FeatureStore
from lintwin.api import fit_store
from lintwin.cli import app
from lintwin.errors import MapFileError, ShapeError
from lintwin.experiments.compare import predict_store
from lintwin.experiments.demo import BUNDLED_MODELS
from lintwin.networks.extract import extract_features
from lintwin.networks.head_maps import head_map, read_affine_head
from lintwin.networks.images import DEFAULT_FASHION_MNIST, open_images
from lintwin.networks.onnx_models import Backbone, Head, NetworkSpec
from lintwin.networks.stitch import check_stitched, stitch

TEST_IMAGES = DEFAULT_FASHION_MNIST / "t10k-images-idx3-ubyte.gz"
pytestmark = pytest.mark.skipif(not TEST_IMAGES.is_file(),
                                reason="Fashion-MNIST is not installed (apt-get install dataset-fashion-mnist)")
A, B = "fmnist-resnet", "fmnist-inception"
runner = CliRunner()


def _files(name: str) -> NetworkSpec:
    return NetworkSpec.for_model(BUNDLED_MODELS / f"{name}.json")


@pytest.fixture(scope="module")
def fitted(tmp_path_factory):
    """The A→B map fitted on 400 real test images (enough for a well-posed 128→160 map)."""
    root = tmp_path_factory.mktemp("stitch")
    images = open_images(TEST_IMAGES).subset(range(400))
    for name in (A, B):
        extract_features(_files(name).backbone_path, images, root / "s.zarr", split="train", batch=200,
                         progress=False)
        extract_features(_files(name).backbone_path, open_images(TEST_IMAGES).subset(range(400, 600)),
                         root / "s.zarr", split="val", batch=200, progress=False)
    store = FeatureStore.open(root / "s.zarr")
    mp = fit_store(store, A, B, device="cpu", progress=False)
    mp.save(root / "map.npz")
    return root, mp, store


def test_stitched_model_equals_backbone_map_head(fitted, tmp_path):
    _, mp, _ = fitted
    st = stitch(_files(A).backbone_path, mp, _files(B).head_path, tmp_path / "a_to_b.onnx")
    images = open_images(TEST_IMAGES).subset(range(1000, 1300))
    c = check_stitched(st, _files(A).backbone_path, mp, _files(B).head_path, images, count=300)
    assert c.images == 300 and c.max_logit > 1
    assert c.max_logit_diff <= 1e-4 * c.max_logit and c.top1_agreement >= 0.99
    # computed here too, independently of check_stitched
    spec = _files(A)
    x = np.stack([spec.preprocess(images.load(i)) for i in range(32)]).astype(np.float32)
    want = Head(_files(B).head_path)(mp.apply(Backbone(spec.backbone_path)(x)).astype(np.float32))
    sess = ort.InferenceSession(str(st.model), providers=["CPUExecutionProvider"])
    got = sess.run(None, {sess.get_inputs()[0].name: x})[0]
    np.testing.assert_allclose(got, want, atol=1e-4 * np.abs(want).max(), rtol=0)


def test_stitched_network_is_usable_like_any_network(fitted, tmp_path):
    """Its sidecar describes backbone (image → mapped features) + head, so extract and predict work on it."""
    _, mp, _ = fitted
    st = stitch(_files(A).backbone_path, mp, _files(B).head_path, tmp_path / "a_to_b.onnx")
    spec = NetworkSpec.for_model(st.sidecar)
    assert (spec.name, spec.feature_dim, spec.classes) == ("a_to_b", 160, 10)
    images = open_images(TEST_IMAGES).subset(range(200))
    extract_features(spec.backbone_path, images, tmp_path / "t.zarr", split="val", batch=100, progress=False)
    store = FeatureStore.open(tmp_path / "t.zarr")
    pred = predict_store(store, "val", "a_to_b", Head(spec.head_path))
    x = np.stack([spec.preprocess(images.load(i)) for i in range(200)]).astype(np.float32)
    sess = ort.InferenceSession(str(st.model), providers=["CPUExecutionProvider"])
    np.testing.assert_array_equal(pred, sess.run(None, {sess.get_inputs()[0].name: x})[0].argmax(1))


def test_stitched_head_only_map_gives_a_logits(tmp_path):
    """With the exact head-only map, the stitched model A→B reproduces A's own logits."""
    mp = head_map(read_affine_head(_files(A).head_path), read_affine_head(_files(B).head_path), A, B)
    st = stitch(_files(A).backbone_path, mp, _files(B).head_path, tmp_path / "h.onnx")
    spec = _files(A)
    images = open_images(TEST_IMAGES)
    x = np.stack([spec.preprocess(images.load(i)) for i in range(64)]).astype(np.float32)
    own = Head(spec.head_path)(Backbone(spec.backbone_path)(x))
    sess = ort.InferenceSession(str(st.model), providers=["CPUExecutionProvider"])
    got = sess.run(None, {sess.get_inputs()[0].name: x})[0]
    np.testing.assert_allclose(got, own, atol=1e-4 * np.abs(own).max(), rtol=0)


def test_stitch_refuses_mismatched_parts(fitted, tmp_path):
    _, mp, _ = fitted
    with pytest.raises(MapFileError, match="has source 'fmnist-resnet', but"):
        stitch(_files(B).backbone_path, mp, _files(B).head_path, tmp_path / "x.onnx")
    with pytest.raises(MapFileError, match="has target 'fmnist-inception', but"):
        stitch(_files(A).backbone_path, mp, _files(A).head_path, tmp_path / "x.onnx")
    mp.src = "other"
    try:
        with pytest.raises(MapFileError):
            stitch(_files(A).backbone_path, mp, _files(B).head_path, tmp_path / "x.onnx")
    finally:
        mp.src = A
    bad = type(mp)(np.zeros((160, 64)), np.zeros(160), src=A, dst=B)
    with pytest.raises(ShapeError, match="expects 64-dim features"):
        stitch(_files(A).backbone_path, bad, _files(B).head_path, tmp_path / "x.onnx")
    assert not (tmp_path / "x.onnx").exists()


def test_cli_stitch_reports_the_max_logit_difference(fitted, tmp_path):
    root, _, _ = fitted
    out = tmp_path / "a_to_b.onnx"
    r = runner.invoke(app, ["stitch", "--backbone", str(_files(A).backbone_path), "--map", str(root / "map.npz"),
                            "--head", str(_files(B).head_path), "-o", str(out), "--images", str(TEST_IMAGES),
                            "--count", "64"])
    assert r.exit_code == 0, r.output
    assert "checked on 64 images against backbone → map → head: max logit difference" in r.stdout
    assert out.is_file() and out.with_suffix(".json").is_file()
    r = runner.invoke(app, ["stitch", "--backbone", str(_files(A).backbone_path), "--map", str(root / "map.npz"),
                            "--head", str(_files(B).head_path), "-o", str(tmp_path / "x.txt")])
    assert r.exit_code == 1 and r.stderr.strip().splitlines() == [("Error: the stitched model's file must end in .onnx, "
                                                                   "got x.txt")]
    r = runner.invoke(app, ["stitch", "--backbone", str(_files(A).backbone_path), "--map", str(root / "nope.npz"),
                            "--head", str(_files(B).head_path), "-o", str(out)])
    assert r.exit_code == 1 and len(r.stderr.strip().splitlines()) == 1 and "Error: no map file at" in r.stderr


def test_study_writes_the_stitched_model_of_a_pair(fitted, tmp_path):
    _root, _, store = fitted
    r = runner.invoke(app, ["study", str(store.path), "--nets", A, B, "--models", str(BUNDLED_MODELS),
                            "--out", str(tmp_path), "--device", "cpu", "--stitch", B, A, "-q"])
    assert r.exit_code == 0, r.output
    st = tmp_path / "stitched" / f"{B}_to_{A}.onnx"
    assert st.is_file() and NetworkSpec.for_model(st).name == f"{B}_to_{A}"
    images = open_images(TEST_IMAGES).subset(range(64))
    spec = _files(B)
    x = np.stack([spec.preprocess(images.load(i)) for i in range(64)]).astype(np.float32)
    mp = type(fitted[1]).load(tmp_path / "maps" / "fitted" / f"{B}_to_{A}.npz")
    want = Head(_files(A).head_path)(mp.apply(Backbone(spec.backbone_path)(x)).astype(np.float32))
    sess = ort.InferenceSession(str(st), providers=["CPUExecutionProvider"])
    np.testing.assert_allclose(sess.run(None, {sess.get_inputs()[0].name: x})[0], want,
                               atol=1e-4 * np.abs(want).max(), rtol=0)
