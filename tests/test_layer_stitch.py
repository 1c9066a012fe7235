"""Stitching at intermediate layers: the stitched ONNX model equals the three steps, the map is the least-squares map
of the (resampled) stored rows, the penultimate stitch reproduces Table 1, and stitch-sweep scores the pairs.

Real whole models (the bundled Fashion-MNIST networks and vision transformer), real Fashion-MNIST
images (fitting rows from the training set, held-out images from the test set), real zarr stores.
The three steps are computed here independently of lintwin's stitching code: A's tensor from
onnxruntime, the resampling in its closed form (the mean of each 2 x 2 block when halving), the map
in float64 NumPy, and B's back cut out with ``onnx.utils.Extractor``.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import onnx
import pytest
from conftest import lstsq_reference
from figure_layout import layout_problems
from onnx import TensorProto, helper
from onnx.utils import Extractor
from typer.testing import CliRunner

from lintwin import FeatureStore
from lintwin.cli import app
from lintwin.core.gpu import gpu_status
from lintwin.core.xp import to_numpy
from lintwin.experiments.compare import compare
from lintwin.experiments.layer_stitch import fit_layer_map, stitch_layers, stored_rows
from lintwin.experiments.stitch_sweep import stitch_sweep
from lintwin.experiments.stitch_sweep_report import stitch_sweep_figure
from lintwin.networks.extract import extract_features, extract_layers
from lintwin.networks.images import DEFAULT_FASHION_MNIST, open_images, read_idx
from lintwin.networks.onnx_models import Head, ModelSpec, NetworkSpec, open_session
from lintwin.networks.random_weights import randomize_model
from lintwin.networks.stitch import stitch
from lintwin.networks.stitched_layers import layer_side

MODELS = Path(__file__).resolve().parents[1] / "models" / "fashion"
TRAIN = DEFAULT_FASHION_MNIST / "train-images-idx3-ubyte.gz"
TEST = DEFAULT_FASHION_MNIST / "t10k-images-idx3-ubyte.gz"
pytestmark = pytest.mark.skipif(not TEST.is_file(), reason=f"Fashion-MNIST not found at {DEFAULT_FASHION_MNIST}")
runner = CliRunner()
A, B, V = "fmnist-resnet", "fmnist-inception", "fmnist-vit"
FIT, EVAL = 1000, 400
R3, R5 = "/body/body.3/relu/Relu_output_0", "/body/body.5/relu/Relu_output_0"  # 32 x 14 x 14, 64 x 7 x 7
I3, I5 = "/body/body.3/Concat_output_0", "/body/body.5/Concat_output_0"  # a 14 x 14 and a 7 x 7 map
V1, V3 = "/blocks/blocks.1/Add_1_output_0", "/blocks/blocks.3/Add_1_output_0"  # 50 tokens x 64


def _model(name: str) -> Path:
    return MODELS / f"{name}.onnx"


@pytest.fixture(scope="module")
def store(tmp_path_factory) -> FeatureStore:
    root = tmp_path_factory.mktemp("layer-stitch")
    path = root / "s.zarr"
    fit, held = open_images(TRAIN).subset(range(FIT)), open_images(TEST).subset(range(EVAL))
    for net in (A, B):
        spec = NetworkSpec.for_model(MODELS / f"{net}.json")
        extract_features(spec.backbone_path, fit, path, split="train", batch=64, workers=1, progress=False)
        extract_features(spec.backbone_path, held, path, split="val", batch=64, workers=1, progress=False)
        extract_layers(_model(net), fit, path, split="train", layers=["features"], batch=64, workers=1, progress=False)
    for net, grids in ((A, {"p14": [R3], "p7": [R5]}), (B, {"p14": [I3], "p7": [I5]})):
        for split, tensors in grids.items():
            extract_layers(_model(net), fit, path, split=split, layers=tensors, pool="positions", batch=64, workers=1,
                           progress=False)
        extract_layers(_model(net), fit, path, split="avg", layers=[grids["p7"][0]], pool="avg", workers=1,
                       progress=False)
    extract_layers(_model(V), fit, path, split="tokens", layers=[V1, V3], pool="positions", batch=64, workers=1,
                   progress=False)
    return FeatureStore.open(path)


def _pixels(n: int = 64, start: int = 0) -> np.ndarray:
    raw = read_idx(TEST)[start : start + n].astype(np.float32) / np.float32(255.0)
    return ((raw - np.float32(0.286)) / np.float32(0.353))[:, None]


def _tensor(model: Path, tensor: str, x: np.ndarray) -> np.ndarray:
    m = onnx.load(str(model))
    del m.graph.output[:]
    m.graph.output.extend([helper.make_tensor_value_info(tensor, TensorProto.FLOAT, None)])
    s = open_session(m.SerializeToString(), "reference")
    return s.run(None, {s.get_inputs()[0].name: x})[0]


def _back(model: Path, tensor: str, x: np.ndarray) -> np.ndarray:
    m = onnx.shape_inference.infer_shapes(onnx.load(str(model)))
    back = Extractor(m).extract_model([tensor], [o.name for o in m.graph.output])
    s = open_session(back.SerializeToString(), "reference back")
    return s.run(None, {s.get_inputs()[0].name: x.astype(np.float32)})[0]


def _three_steps(a: str, ta: str, b: str, tb: str, weight: np.ndarray, bias: np.ndarray, x: np.ndarray) -> np.ndarray:
    act = _tensor(_model(a), ta, x).astype(np.float64)
    target = _tensor(_model(b), tb, x[:1])
    if act.ndim == 4:  # N x C x H x W: halve the grid (2 x 2 means) until it is B's, then the map per position
        while act.shape[2] > target.shape[2]:
            n, c, h, w = act.shape
            act = act.reshape(n, c, h // 2, 2, w // 2, 2).mean(axis=(3, 5))
        mapped = np.einsum("oc,nchw->nohw", weight, act) + bias[None, :, None, None]
    else:  # N x T x C or N x C
        mapped = act @ weight.T + bias
    return _back(_model(b), tb, mapped)


CASES = {
    "same grid": (A, R5, B, I5, ["p7"]),
    "resampled 14 to 7": (A, R3, B, I5, ["p14", "p7"]),
    "tokens": (V, V1, V, V3, ["tokens"]),
    "vectors": (A, "features", B, "features", ["train"]),
}


@pytest.mark.parametrize("case", list(CASES))
def test_stitched_logits_equal_the_three_steps(store, tmp_path, case):
    a, ta, b, tb, splits = CASES[case]
    r = stitch_layers(_model(a), ta, _model(b), tb, store, tmp_path / "s.onnx", splits=splits)
    x = _pixels()
    sess = open_session(r.written.files.model, "stitched")
    got = sess.run(None, {sess.get_inputs()[0].name: x})[0]
    want = _three_steps(a, ta, b, tb, np.asarray(r.amap.weight, np.float64), np.asarray(r.amap.bias, np.float64), x)
    assert np.abs(got - want).max() <= 1e-5 * np.abs(want).max(), case
    ops = {n.op_type for n in onnx.load(str(r.written.files.model)).graph.node}
    assert ("Resize" in ops) == (case == "resampled 14 to 7")
    conv = [n for n in onnx.load(str(r.written.files.model)).graph.node if n.name == "stitch_map"]
    assert conv and conv[0].op_type == {"same grid": "Conv", "resampled 14 to 7": "Conv", "tokens": "MatMul",
                                        "vectors": "Gemm"}[case]
    spec = NetworkSpec.for_model(r.written.files.sidecar)  # a network every command reads
    assert spec.classes == 10 and spec.backbone_path.is_file() and spec.head_path.is_file()
    assert r.written.relative_diff <= 1e-5


def test_the_map_is_least_squares_on_the_resampled_rows(store, tmp_path):
    r = stitch_layers(_model(A), R3, _model(B), I5, store, tmp_path / "s.onnx", splits=["p14", "p7"],
                      precision="float64")
    x = np.asarray(store.features("p14", f"{A}+body.body.3.relu.Relu")[:], np.float64).reshape(FIT, 14, 14, -1)
    x = x.reshape(FIT, 7, 2, 7, 2, x.shape[-1]).mean(axis=(2, 4)).reshape(FIT * 49, -1)
    y = np.asarray(store.features("p7", f"{B}+body.body.5.Concat")[:], np.float64)
    w, bias = lstsq_reference(x, y)
    assert r.amap.n_train == FIT * 49
    assert np.abs(np.asarray(r.amap.weight) - w).max() <= 1e-8 * np.abs(w).max()
    assert np.abs(np.asarray(r.amap.bias) - bias).max() <= 1e-8 * np.abs(bias).max()


def test_ridge_auto_chooses_lambda_by_image_folds(store, tmp_path):
    r = stitch_layers(_model(A), R5, _model(B), I5, store, tmp_path / "s.onnx", splits=["p7"], ridge="auto", folds=4)
    cv = r.amap.stats["ridge_cv"]
    assert cv["folds"] == 4 and cv["chosen"] in cv["lambdas"] and r.amap.options["ridge"] == "auto"


def test_penultimate_stitch_reproduces_todays_stitch_and_table1(store, tmp_path):
    heads = {n: Head(NetworkSpec.for_model(MODELS / f"{n}.json").head_path) for n in (A, B)}
    table, maps = compare(store, A, B, heads[A], heads[B], fit_split="train", eval_split="val", device="cpu",
                          progress=False, bootstrap=0)
    ab = maps[0]
    r = stitch_layers(_model(A), "features", _model(B), "features", store, tmp_path / "pen.onnx", splits=["train"])
    # the same rows, the same moments: the same map, bit for bit
    np.testing.assert_array_equal(np.asarray(r.amap.weight), np.asarray(ab.weight))
    np.testing.assert_array_equal(np.asarray(r.amap.bias), np.asarray(ab.bias))
    labels = read_idx(DEFAULT_FASHION_MNIST / "t10k-labels-idx1-ubyte.gz")[:EVAL]
    x = _pixels(EVAL)
    sess = open_session(r.written.files.model, "stitched")
    logits = sess.run(None, {sess.get_inputs()[0].name: x})[0]
    row = next(c for c in table.table if c["description"] == f"{A}→{B}")
    assert int((logits.argmax(1) == labels).sum()) == row["correct"]
    old = stitch(NetworkSpec.for_model(MODELS / f"{A}.json").backbone_path, ab, heads[B].path, tmp_path / "old.onnx")
    s_old = open_session(old.model, "today's stitch")
    np.testing.assert_allclose(s_old.run(None, {s_old.get_inputs()[0].name: x})[0], logits, rtol=0,
                               atol=1e-5 * np.abs(logits).max())


def _sweep(store, **kw):
    held = open_images(TEST).subset(range(EVAL, EVAL + 300))
    return stitch_sweep(str(_model(A)), str(_model(B)), [R5, "features"], [I5, "features"], store, held,
                        splits=["p7", "train"], pairing="zip", bootstrap=200, progress=False, echo=lambda _: None, **kw)


def test_stitch_sweep_scores_the_models_stitch_writes(store, tmp_path):
    sweep = _sweep(store)
    assert [r["layer_a"] for r in sweep.rows] == [R5, "features"] and sweep.images == 300
    labels = read_idx(DEFAULT_FASHION_MNIST / "t10k-labels-idx1-ubyte.gz")[EVAL : EVAL + 300]
    x = _pixels(300, EVAL)
    for row, (ta, tb, splits) in zip(sweep.rows, [(R5, I5, ["p7"]), ("features", "features", ["train"])]):
        r = stitch_layers(_model(A), ta, _model(B), tb, store, tmp_path / "m.onnx", splits=splits)
        sess = open_session(r.written.files.model, "stitched")
        correct = int((sess.run(None, {sess.get_inputs()[0].name: x})[0].argmax(1) == labels).sum())
        assert row["correct"] == correct
        pen = row["penalty"]
        assert pen["estimate"] == pytest.approx(sweep.own["B"]["estimate"] - 100 * correct / 300, abs=1e-9)
        assert pen["low"] <= pen["estimate"] <= pen["high"]
    assert layout_problems(stitch_sweep_figure(sweep)) == []


def test_within_network_control_at_the_same_layer_pays_nothing(store):
    held = open_images(TEST).subset(range(EVAL, EVAL + 200))
    sweep = stitch_sweep(str(_model(A)), str(_model(A)), [R5], [R5], store, held, splits=["p7"], bootstrap=100,
                         progress=False, echo=lambda _: None)
    row = sweep.rows[0]
    assert row["train_r2"] == pytest.approx(1.0, abs=1e-6) and row["agreement_with_b"] >= 99.5
    assert abs(row["penalty"]["estimate"]) <= 0.5


def test_cli_stitch_and_stitch_sweep(store, tmp_path):
    out = tmp_path / "r5_i5.onnx"
    r = runner.invoke(app, ["stitch", "--a", str(_model(A)), "--at-a", R5, "--b", str(_model(B)), "--at-b", I5,
                            "--store", str(store.path), "--split", "p7", "-o", str(out), "--images", str(TEST),
                            "--count", "64", "-q"])
    assert r.exit_code == 0, r.output
    assert "checked on 64 images against the three steps: max logit difference" in r.stdout
    assert NetworkSpec.for_model(out.with_suffix(".json")).name == "r5_i5"
    held = tmp_path / "held.npz"
    np.savez(held, images=read_idx(TEST)[EVAL : EVAL + 100],
             labels=read_idx(DEFAULT_FASHION_MNIST / "t10k-labels-idx1-ubyte.gz")[EVAL : EVAL + 100])
    r = runner.invoke(app, ["stitch-sweep", "--a", str(_model(A)), "--b", str(_model(B)), "--layers-a", R5,
                            "--layers-b", f"{I5},features", "--store", str(store.path), "--split", "p7",
                            "--split", "train", "--images", str(held), "--out", str(tmp_path / "sw"),
                            "--bootstrap", "50", "-q"])
    assert r.exit_code == 1 and "cannot be aligned" in r.stderr  # a map N x C x H x W → N x C: refused up front
    r = runner.invoke(app, ["stitch-sweep", "--a", str(_model(A)), "--b", str(_model(B)), "--layers-a", R5,
                            "--layers-b", I5, "--store", str(store.path), "--split", "p7", "--images", str(held),
                            "--out", str(tmp_path / "sw"), "--bootstrap", "50", "-q"])
    assert r.exit_code == 0, r.output
    data = json.loads((tmp_path / "sw" / "stitch_sweep.json").read_text())
    assert data["rows"][0]["layer_b"] == I5 and data["images"] == 100
    assert (tmp_path / "sw" / "stitch_sweep.png").is_file() and (tmp_path / "sw" / "stitch_sweep.csv").is_file()


def _refused(args: list[str], message: str, store: FeatureStore, tmp_path: Path) -> None:
    before = sorted((p, p.stat().st_mtime_ns) for p in Path(store.path).rglob("*"))
    r = runner.invoke(app, args)
    assert r.exit_code == 1, r.output
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: ") and message in lines[0], lines
    assert sorted((p, p.stat().st_mtime_ns) for p in Path(store.path).rglob("*")) == before
    assert not list(tmp_path.glob("x*"))


@pytest.mark.parametrize(("change", "message"), [
    ({"--at-b": "/body/body.3/b1/b1.0/Conv_output_0"}, "does not separate fmnist-inception.onnx"),
    ({"--at-a": "/body/body.5/relu/Relu_out"}, "has no tensor '/body/body.5/relu/Relu_out'; nearest:"),
    ({"--a": str(MODELS / "fmnist-vit.onnx"), "--at-a": V1}, "cannot be aligned"),
    ({"--split": "avg"}, "holds avg-pooled rows"),
    ({"--at-b": I3}, "no stored rows of layer /body/body.3/Concat_output_0"),
    ({"--ridge": "-1"}, "--ridge expects finite numbers >= 0"),
    ({"--rank": "500"}, "rank must be between 1 and 64"),
])
def test_cli_stitch_refusals(store, tmp_path, change, message):
    opts = {"--a": str(_model(A)), "--at-a": R5, "--b": str(_model(B)), "--at-b": I5, "--store": str(store.path),
            "--split": "p7", "-o": str(tmp_path / "x.onnx")} | change
    _refused(["stitch", *[v for kv in opts.items() for v in kv], "-q"], message, store, tmp_path)


def test_cli_stitch_options_of_both_kinds_or_neither_are_refused(store, tmp_path):
    base = ["stitch", "-o", str(tmp_path / "x.onnx")]
    _refused([*base, "--a", str(_model(A)), "--backbone", "b.onnx"], "do not go together", store, tmp_path)
    _refused([*base, "--a", str(_model(A)), "--at-a", R5, "--b", str(_model(B)), "--at-b", I5],
             "missing --store", store, tmp_path)
    _refused(base, "give either --backbone, --map, --head", store, tmp_path)


def test_stitch_sweep_refuses_held_out_images_it_was_fitted_on(store):
    fitted = open_images(TRAIN).subset(range(50))
    with pytest.raises(Exception, match="are among the images the maps are fitted on"):
        stitch_sweep(str(_model(A)), str(_model(B)), [R5], [I5], store, fitted, splits=["p7"], progress=False,
                     echo=lambda _: None)


def test_randomize_redraws_the_weights_and_keeps_the_architecture(tmp_path):
    r = randomize_model(_model(A), tmp_path / "rnd.onnx", seed=3)
    again = randomize_model(_model(A), tmp_path / "rnd2.onnx", seed=3)
    assert r.weights == 15 and r.biases == 15
    assert (tmp_path / "rnd.onnx").read_bytes() == (tmp_path / "rnd2.onnx").read_bytes() and again.weights == 15
    old = {t.name: onnx.numpy_helper.to_array(t) for t in onnx.load(str(_model(A))).graph.initializer}
    new = {t.name: onnx.numpy_helper.to_array(t) for t in onnx.load(str(r.model)).graph.initializer}
    conv = next(n for n in onnx.load(str(r.model)).graph.node if n.op_type == "Conv")
    w, b = new[conv.input[1]], new[conv.input[2]]
    assert not np.allclose(w, old[conv.input[1]]) and not b.any()
    assert w.std() == pytest.approx(np.sqrt(2.0 / np.prod(w.shape[1:])), rel=0.2)
    x = _pixels(8)
    s = open_session(r.model, "random")
    assert s.run(None, {s.get_inputs()[0].name: x})[0].shape == (8, 10)
    rr = runner.invoke(app, ["randomize", str(_model(A)), "-o", str(_model(A))])
    assert rr.exit_code == 1 and "would replace" in rr.stderr


def test_randomize_keeps_a_preset_preprocessing_readable(tmp_path):
    """A sidecar naming a preset (as the ImageNet models' do) gives the copy the same preprocessing."""
    src = tmp_path / "m.onnx"
    shutil.copyfile(_model(A), src)
    (tmp_path / "m.json").write_text(json.dumps({"preprocess": {
        "preset": "torchvision", "size": [28, 28], "resize": 32, "channels": 1, "mean": [0.5], "std": [0.5]}}))
    r = randomize_model(src, tmp_path / "m-random.onnx")
    assert ModelSpec.for_model(r.model).preprocess == ModelSpec.for_model(src).preprocess


@pytest.mark.skipif(not gpu_status()[0], reason=f"no GPU for CuPy: {gpu_status()[1]}")
def test_on_the_gpu_the_resampled_map_is_the_cpus(store):
    la = stored_rows(store, ["p14"], layer_side(_model(A), R3, back=False))
    lb = stored_rows(store, ["p7"], layer_side(_model(B), I5, back=True))
    cpu = fit_layer_map(store, la, lb, precision="float64", device="cpu")
    gpu = fit_layer_map(store, la, lb, precision="float64", device="gpu")
    w = np.asarray(cpu.weight)
    assert np.abs(to_numpy(gpu.weight) - w).max() <= 1e-8 * np.abs(w).max()

