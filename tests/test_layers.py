"""Layers of real ONNX models by name: listing, cuts, the classifier input, and ``split`` round trips.

Every bundled Fashion-MNIST network is read whole (``models/fashion/NAME.onnx``) on real
Fashion-MNIST test images. Whether a tensor is a cut is checked against onnx's own
``onnx.utils.Extractor``: the head it extracts from a cut needs nothing but the cut.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper
from onnx.utils import Extractor
from typer.testing import CliRunner

from lintwin.cli import app
from lintwin.networks.cut import split_model
from lintwin.networks.images import DEFAULT_FASHION_MNIST, open_images, read_idx
from lintwin.networks.layers import read_model
from lintwin.networks.onnx_models import Backbone, Head, NetworkSpec, open_session

MODELS = Path(__file__).resolve().parents[1] / "models" / "fashion"
WHOLE = sorted(p.name.removesuffix(".onnx") for p in MODELS.glob("*.onnx")
               if not p.name.endswith((".backbone.onnx", ".head.onnx")))
IDX = DEFAULT_FASHION_MNIST / "t10k-images-idx3-ubyte.gz"
pytestmark = pytest.mark.skipif(not IDX.is_file(), reason=f"Fashion-MNIST not found at {DEFAULT_FASHION_MNIST}")
runner = CliRunner()


def _pixels(n: int, start: int = 0) -> np.ndarray:
    """Real Fashion-MNIST test images, normalised as the bundled sidecars say, N x 1 x 28 x 28 float32."""
    raw = read_idx(IDX)[start : start + n].astype(np.float32) / np.float32(255.0)
    return ((raw - np.float32(0.286)) / np.float32(0.353))[:, None]


def _run(path_or_bytes, x: np.ndarray) -> np.ndarray:
    s = open_session(path_or_bytes, "test")
    return s.run(None, {s.get_inputs()[0].name: x})[0]


def _free_inputs(model: onnx.ModelProto) -> set[str]:
    """Tensors the model's nodes read that nothing in the model provides (not an input, initializer or output)."""
    g = model.graph
    provided = {i.name for i in g.input} | {t.name for t in g.initializer} | {o for n in g.node for o in n.output}
    return {t for n in g.node for t in n.input if t and t not in provided}


def test_the_bundled_family_has_whole_models_including_a_vision_transformer():
    assert {"fmnist-resnet", "fmnist-inception", "fmnist-vgg", "fmnist-mobilenet", "fmnist-mlp", "fmnist-resnet-s1",
            "fmnist-vit"} <= set(WHOLE)


@pytest.mark.parametrize("name", WHOLE)
def test_every_layer_has_the_shape_onnxruntime_gives_and_the_classifier_input_is_found(name):
    spec = NetworkSpec.for_model(MODELS / f"{name}.json")
    graph = read_model(MODELS / f"{name}.onnx", spec.preprocess)
    tensors = list(graph.layers)
    m = onnx.ModelProto()
    m.CopyFrom(graph.model)
    del m.graph.output[:]
    m.graph.output.extend(helper.make_tensor_value_info(t, TensorProto.FLOAT, None) for t in tensors)
    s = open_session(m.SerializeToString(), name)
    outs = s.run(tensors, {s.get_inputs()[0].name: _pixels(3)})
    for t, out in zip(tensors, outs, strict=True):
        assert out.shape == (3, *graph.layers[t].shape), t
    # the classifier input is what the bundled head reads: the backbone's output, N x feature_dim
    cls = graph.classifier_input
    assert cls is not None and cls.name == "features" and cls.shape == (spec.feature_dim,) and cls.separates
    assert [la.name for la in graph.layers.values() if la.classifier_input] == ["features"]


@pytest.mark.parametrize("name", ["fmnist-resnet", "fmnist-inception", "fmnist-vit"])
def test_cuts_are_exactly_the_tensors_whose_extracted_head_needs_nothing_else(name):
    graph = read_model(MODELS / f"{name}.onnx", NetworkSpec.for_model(MODELS / f"{name}.json").preprocess)
    m = onnx.ModelProto()
    m.CopyFrom(graph.model)
    del m.graph.value_info[:]
    m.graph.value_info.extend(helper.make_tensor_value_info(t, TensorProto.FLOAT, ["N", *la.shape])
                              for t, la in graph.layers.items() if t not in graph.outputs)
    ex = Extractor(m)
    cuts, not_cuts = 0, 0
    for t, la in graph.layers.items():
        if t in graph.outputs:
            assert not la.separates
            continue
        head = ex.extract_model([t], graph.outputs)
        self_contained = not _free_inputs(head)
        assert la.separates == self_contained, t
        assert (graph.crossings(t) == []) == self_contained, t
        cuts += self_contained
        not_cuts += not self_contained
    assert cuts >= 5 and not_cuts >= 5  # residual/branching/attention blocks have both kinds


def test_a_skip_connection_names_the_node_that_crosses_the_cut():
    graph = read_model(MODELS / "fmnist-resnet.onnx")
    inside = "/body/body.1/conv1/conv1.2/Relu_output_0"  # inside the first residual block
    assert not graph.layers[inside].separates
    assert graph.crossings(inside) == [("/body/body.1/Add", "/body/body.0/body.0.2/Relu_output_0")]
    assert graph.layers["/body/body.1/relu/Relu_output_0"].separates  # the block's output


def _mid_cut(name: str) -> str:
    """A cut in the middle of the network: a separating map/token layer (a hidden vector for the MLP)."""
    graph = read_model(MODELS / f"{name}.onnx")
    kinds = ("spatial", "tokens") if name != "fmnist-mlp" else ("vector",)
    cuts = [la.name for la in graph.layers.values()
            if la.separates and la.kind in kinds and not la.classifier_input and la.name not in graph.outputs]
    return cuts[len(cuts) // 2]


@pytest.mark.parametrize("name", WHOLE)
def test_split_round_trips_on_real_images_at_the_classifier_input_and_mid_network(name, tmp_path):
    x = _pixels(64, start=100)
    full = _run(MODELS / f"{name}.onnx", x)
    bundled = Backbone(MODELS / f"{name}.backbone.onnx")(x)
    for at in (None, _mid_cut(name)):
        out = tmp_path / ("auto" if at is None else "mid")
        r = split_model(MODELS / f"{name}.onnx", out, "cut", at=at)
        spec = NetworkSpec.for_model(r.sidecar)
        bb, hd = Backbone(r.backbone), Head(r.head)
        bb.check(spec, x[0])  # the parts pass the checks every command makes
        hd.check(spec)
        feats = bb(x)
        assert feats.shape == (64, spec.feature_dim) and spec.classes == 10
        np.testing.assert_allclose(hd(feats), full, rtol=0, atol=1e-5 * np.abs(full).max())
        assert r.relative_diff <= 1e-5
        if at is None:  # the automatic cut is the bundled backbone's output
            assert r.cut.name == "features"
            np.testing.assert_allclose(feats, bundled, rtol=0, atol=1e-6 * np.abs(bundled).max())
            assert spec.raw["class_names"][0] == "t-shirt/top"


def test_split_of_a_backbone_without_a_classifier_needs_at(tmp_path):
    r = runner.invoke(app, ["split", str(MODELS / "fmnist-resnet.backbone.onnx"), "--out", str(tmp_path / "o"),
                            "--name", "x", "--preprocess", str(MODELS / "fmnist-resnet.json")])
    assert r.exit_code == 1 and r.stderr.startswith("Error: ") and r.stderr.count("\n") == 1, r.output
    assert "no final linear classifier" in r.stderr and "--at" in r.stderr
    assert not (tmp_path / "o").exists()


@pytest.mark.parametrize("at, message", [
    ("/body/body.1/conv1/conv1.2/Relu", "has no tensor '/body/body.1/conv1/conv1.2/Relu'; nearest: "
                                        "/body/body.1/conv1/conv1.2/Relu_output_0"),
    ("/body/body.1/conv1/conv1.2/Relu_output_0", "does not separate fmnist-resnet.onnx: node /body/body.1/Add reads "
                                                 "/body/body.0/body.0.2/Relu_output_0 from before the cut"),
    ("logits", "is fmnist-resnet.onnx's output"),
    ("/Shape_output_0", "has no tensor"),
])
def test_split_refuses_bad_cuts_with_one_line_and_writes_nothing(tmp_path, at, message):
    out = tmp_path / "o"
    r = runner.invoke(app, ["split", str(MODELS / "fmnist-resnet.onnx"), "--out", str(out), "--name", "x", "--at", at])
    assert r.exit_code == 1 and r.stderr.startswith("Error: ") and r.stderr.count("\n") == 1, r.output
    assert message in r.stderr
    assert not out.exists()


def test_cli_split_prints_the_round_trip_and_its_parts_extract_like_any_network(tmp_path):
    out = tmp_path / "parts"
    r = runner.invoke(app, ["split", str(MODELS / "fmnist-vgg.onnx"), "--out", str(out), "--name", "vgg-mid",
                            "--at", "/body/body.5/MaxPool_output_0"])
    assert r.exit_code == 0, r.output
    assert "cut fmnist-vgg.onnx at /body/body.5/MaxPool_output_0 (MaxPool, N x 64 x 7 x 7, flattened to N x 3136)" \
        in r.stdout
    assert "head(backbone(x)) vs fmnist-vgg.onnx on a probe: max |Δ|" in r.stdout
    store = tmp_path / "s.zarr"
    r = runner.invoke(app, ["extract", str(out / "vgg-mid.backbone.onnx"), str(IDX), "--store", str(store), "-q",
                            "--workers", "1"])
    assert r.exit_code == 0, r.output
    assert "wrote 10000 x 3136 features of vgg-mid" in r.stdout


def test_cli_layers_lists_names_ops_shapes_and_json(tmp_path):
    r = runner.invoke(app, ["layers", str(MODELS / "fmnist-mobilenet.onnx")])
    assert r.exit_code == 0, r.output
    assert "/body/body.3/body.3.3/body.3.3.2/Relu_output_0  Relu" in r.stdout
    assert "N x 128 x 7 x 7" in r.stdout
    line = next(ln for ln in r.stdout.splitlines() if ln.startswith("features "))
    assert "N x 128" in line and line.endswith("yes  <- classifier input")
    r = runner.invoke(app, ["layers", str(MODELS / "fmnist-vit.onnx"), "--json"])
    assert r.exit_code == 0, r.output
    rows = json.loads(r.stdout)
    assert all({"name", "op", "shape", "classifier_input", "separates", "values"} <= set(d) for d in rows)
    assert [d["name"] for d in rows if d["classifier_input"]] == ["features"]
    blocks = [d for d in rows if re.fullmatch(r"/blocks/blocks\.\d/Add_1_output_0", d["name"])]  # block outputs
    assert len(blocks) == 4
    for d in blocks:
        assert d["kind"] == "tokens" and d["shape"] == ["N", 50, 64] and d["grid"] == [50] and d["channels"] == 64
        assert d["separates"] and d["op"] == "Add" and d["shape_from"] == "probe"


def test_the_whole_models_equal_their_bundled_parts_on_real_images():
    x = _pixels(32, start=500)
    for name in WHOLE:
        want = Head(MODELS / f"{name}.head.onnx")(Backbone(MODELS / f"{name}.backbone.onnx")(x))
        np.testing.assert_array_equal(_run(MODELS / f"{name}.onnx", x), want)


def test_the_vision_transformer_classifies_fashion_mnist():
    spec = NetworkSpec.for_model(MODELS / "fmnist-vit.json")
    images = open_images(IDX)
    x = _pixels(2000)
    pred = _run(MODELS / "fmnist-vit.onnx", x).argmax(1)
    assert (pred == images.labels[:2000]).mean() > 0.8
    assert spec.raw["test_accuracy"] > 0.8
