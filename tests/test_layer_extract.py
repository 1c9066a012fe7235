"""Storing layers of whole ONNX models (``extract --layers``): pooling, per-position rows, moments, refusals.

Real models (the bundled Fashion-MNIST CNNs and vision transformer, whole), real Fashion-MNIST
test images, real zarr stores. The reference activations are materialised with onnxruntime over
the model with the layers as its outputs, from pixels normalised here with NumPy.
"""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper
from typer.testing import CliRunner

import lintwin
from lintwin import FeatureStore, ShapeError
from lintwin.cli import app
from lintwin.core.folds import image_folds
from lintwin.networks.extract import extract_layers, layer_array_name
from lintwin.networks.images import DEFAULT_FASHION_MNIST, open_images, read_idx
from lintwin.networks.onnx_models import open_session

MODELS = Path(__file__).resolve().parents[1] / "models" / "fashion"
IDX = DEFAULT_FASHION_MNIST / "t10k-images-idx3-ubyte.gz"
pytestmark = pytest.mark.skipif(not IDX.is_file(), reason=f"Fashion-MNIST not found at {DEFAULT_FASHION_MNIST}")
runner = CliRunner()
N = 24  # images
RESNET = MODELS / "fmnist-resnet.onnx"
VIT = MODELS / "fmnist-vit.onnx"
R5, R6 = "/body/body.5/relu/Relu_output_0", "/body/body.6/body.6.2/Relu_output_0"  # 64 and 128 x 7 x 7
R2 = "/body/body.2/relu/Relu_output_0"  # 32 x 14 x 14
V1, V3 = "/blocks/blocks.1/Add_1_output_0", "/blocks/blocks.3/Add_1_output_0"  # 50 tokens x 64


@pytest.fixture(scope="module")
def images():
    return open_images(IDX).subset(range(N))


def _pixels(n: int = N) -> np.ndarray:
    raw = read_idx(IDX)[:n].astype(np.float32) / np.float32(255.0)
    return ((raw - np.float32(0.286)) / np.float32(0.353))[:, None]


def _activations(model: Path, tensors: list[str], n: int = N) -> list[np.ndarray]:
    """The tensors as onnxruntime computes them on the first ``n`` test images (float32)."""
    m = onnx.load(str(model))
    del m.graph.output[:]
    m.graph.output.extend(helper.make_tensor_value_info(t, TensorProto.FLOAT, None) for t in tensors)
    s = open_session(m.SerializeToString(), "reference")
    return s.run(tensors, {s.get_inputs()[0].name: _pixels(n)})


def _tree(path: Path) -> dict[str, str]:
    return {str(p.relative_to(path)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(path.rglob("*")) if p.is_file() and ".lintwin-locks" not in p.parts}


def _extract(model: Path, images, store: Path, layers: list[str], pool: str, split: str = "train", **kw):
    return extract_layers(model, images, store, split=split, layers=layers, pool=pool, progress=False, workers=1,
                          **kw)


def _reference_moments(a: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    x = np.hstack([a, b]).astype(np.float64)
    mean = x.mean(axis=0)
    return mean, (x - mean).T @ (x - mean)


@pytest.mark.parametrize("model, pair, grid", [(RESNET, (R5, R6), 49), (VIT, (V1, V3), 50)],
                         ids=["conv", "tokens"])
def test_per_position_moments_equal_a_float64_reference_from_materialised_activations(tmp_path, images, model,
                                                                                      pair, grid):
    store = tmp_path / "s.zarr"
    summary = _extract(model, images, store, list(pair), "positions", chunk_rows=grid * 5, batch=7)
    assert summary.rows == N * grid
    acts = _activations(model, list(pair))
    # spatial N x C x H x W -> rows (image, h, w); tokens N x T x C -> rows (image, token)
    rows = [np.moveaxis(x, 1, -1).reshape(-1, x.shape[1]) if x.ndim == 4 else x.reshape(-1, x.shape[-1])
            for x in acts]
    s = FeatureStore.open(store)
    names = [a.array for a in summary.arrays]
    for name, want in zip(names, rows, strict=True):
        np.testing.assert_array_equal(s.features("train", name)[:], want)  # row k = image k // grid, position k % grid
    m = lintwin.accumulate_store(s, names[0], names[1], split="train", precision="float64", device="cpu",
                                 progress=False, block_rows=100)
    mean, com = _reference_moments(*rows)
    assert m.n == N * grid
    np.testing.assert_allclose(np.asarray(m.mean), mean, rtol=1e-12, atol=1e-12 * np.abs(mean).max())
    np.testing.assert_allclose(np.asarray(m.comoment), com, rtol=0, atol=1e-10 * np.abs(com).max())
    ids = s.ids("train").tolist()
    assert ids[: grid + 1] == [f"{images.ids[0]}#p{k}" for k in range(grid)] + [f"{images.ids[1]}#p0"]
    assert s.labels("train").tolist() == np.repeat(images.labels, grid).tolist()
    folds = image_folds(s.ids("train"), len(ids), 4)  # every position of an image falls in its image's fold
    assert all(len(set(folds[i * grid : (i + 1) * grid].tolist())) == 1 for i in range(N))
    assert len(set(folds.tolist())) == 4


def test_avg_cls_and_flatten_rows_follow_their_definitions(tmp_path, images):
    store = tmp_path / "s.zarr"
    _extract(RESNET, images, store, [R5, R2, "features"], "avg", split="avg")
    _extract(RESNET, images, store, [R5], "flatten", split="flat")
    _extract(VIT, images, store, [V1], "cls", split="cls", name="vit")
    _extract(VIT, images, store, [V3], "avg", split="vit-avg", name="vit")
    s = FeatureStore.open(store)
    r5, r2, feats = _activations(RESNET, [R5, R2, "features"])
    v1, v3 = _activations(VIT, [V1, V3])
    got = {(sp, n): s.features(sp, n)[:] for sp in s.splits() for n in s.networks(sp)}
    name = lambda net, t: layer_array_name(net, t)  # noqa: E731
    np.testing.assert_allclose(got["avg", name("fmnist-resnet", R5)], r5.astype(np.float64).mean(axis=(2, 3)),
                               rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(got["avg", name("fmnist-resnet", R2)], r2.astype(np.float64).mean(axis=(2, 3)),
                               rtol=1e-6, atol=1e-7)
    np.testing.assert_array_equal(got["avg", name("fmnist-resnet", "features")], feats)  # a vector: as it is
    np.testing.assert_array_equal(got["flat", name("fmnist-resnet", R5)], r5.reshape(N, -1))  # C·H·W, NCHW order
    np.testing.assert_array_equal(got["cls", name("vit", V1)], v1[:, 0, :])
    np.testing.assert_allclose(got["vit-avg", name("vit", V3)], v3.astype(np.float64).mean(axis=1),
                               rtol=1e-6, atol=1e-7)
    # the bundled features are the GlobalAveragePool of the last map: avg of that map gives them again
    last = "/body/body.6/body.6.2/Relu_output_0"
    _extract(RESNET, images, store, [last], "avg", split="last")
    np.testing.assert_allclose(FeatureStore.open(store).features("last", name("fmnist-resnet", last))[:], feats,
                               rtol=1e-5, atol=1e-6)


def test_views_and_positions_share_their_image_fold(tmp_path, images):
    store = tmp_path / "s.zarr"
    _extract(RESNET, images.subset(range(6)), store, [R5], "positions", views=2, augment=True, seed=3)
    ids = FeatureStore.open(store).ids("train")
    assert ids[0].endswith("#v0#p0") and ids[49].endswith("#v1#p0") and len(ids) == 6 * 2 * 49
    folds = image_folds(ids, len(ids), 3)
    assert all(len(set(folds[i * 98 : (i + 1) * 98].tolist())) == 1 for i in range(6))
    f = image_folds(np.array(["a#v0#p3", "a#p1", "a", "b#v2", "b#v1#p0", "c", "d", "e"]), 8, 2)
    assert f[0] == f[1] == f[2] and f[3] == f[4]


def test_info_lists_network_layer_and_pooling_and_json(tmp_path, images):
    store = tmp_path / "s.zarr"
    _extract(RESNET, images, store, [R5, R6], "positions", split="pos", name="rn")
    r = runner.invoke(app, ["info", str(store)])
    assert r.exit_code == 0, r.output
    assert "rn+body.body.5.relu.Relu: dim 64" in r.stdout
    assert (f"network rn, layer {R5} (Relu, N x 64 x 7 x 7), pooling positions (49 rows per image)") in r.stdout
    r = runner.invoke(app, ["info", str(store), "--json"])
    d = json.loads(r.stdout)
    arrays = {a["name"]: a for a in d["splits"][0]["arrays"]}
    a = arrays["rn+body.body.6.body.6.2.Relu"]
    assert a["network"] == "rn" and a["pooling"] == "positions" and a["complete"]
    assert a["layer"]["tensor"] == R6 and a["layer"]["grid"] == [7, 7] and a["layer"]["channels"] == 128
    assert a["layer"]["shape"] == ["N", 128, 7, 7] and a["layer"]["op"] == "Relu"
    info = FeatureStore.open(store).info("pos", "rn+body.body.6.body.6.2.Relu")
    assert info["provenance"]["layer"] == R6 and info["provenance"]["pooling"] == "positions"


def test_a_run_killed_between_arrays_resumes_to_the_same_bytes(tmp_path, images):
    """A kill can leave one layer's array a chunk ahead of another's; a plain rerun completes both identically."""
    ref = tmp_path / "ref.zarr"
    _extract(RESNET, images, ref, [R5, R6], "positions", chunk_rows=49 * 4)
    for ahead, behind in ((3, 1), (0, 2), (5, 4)):
        store = tmp_path / f"s{ahead}{behind}.zarr"
        shutil.copytree(ref, store)
        for net, chunks in zip(("fmnist-resnet+body.body.5.relu.Relu", "fmnist-resnet+body.body.6.body.6.2.Relu"),
                               (ahead, behind)):
            meta_path = store / "train" / "features" / net / "zarr.json"
            meta = json.loads(meta_path.read_text())
            meta["attributes"]["rows_written"] = chunks * 49 * 4  # what a kill after `chunks` chunks leaves
            meta["attributes"]["chunk_crc32c"] = meta["attributes"]["chunk_crc32c"][:chunks]
            meta_path.write_text(json.dumps(meta))
        summary = _extract(RESNET, images, store, [R5, R6], "positions", chunk_rows=49 * 4)
        assert summary.resumed_from == min(ahead, behind) * 49 * 4
        assert _tree(store) == _tree(ref)


def _data_dependent_model(path: Path) -> None:
    """A real ONNX model whose map width depends on the image: Slice(image, ends = ceil(max pixel)) + Conv."""
    w = numpy_helper.from_array(np.ones((4, 1, 3, 3), np.float32), "w")
    consts = [numpy_helper.from_array(np.array(v, dtype), n) for v, dtype, n in
              (([0], np.int64, "starts"), ([3], np.int64, "axes"), (1.0, np.float32, "lo"),
               (28.0, np.float32, "hi"))]
    nodes = [
        helper.make_node("ReduceMax", ["image"], ["peak"], keepdims=0, name="peak"),
        helper.make_node("Ceil", ["peak"], ["ceil"], name="ceil"),
        helper.make_node("Clip", ["ceil", "lo", "hi"], ["width_f"], name="clip"),
        helper.make_node("Cast", ["width_f"], ["width0"], to=TensorProto.INT64, name="cast"),
        helper.make_node("Unsqueeze", ["width0", "starts"], ["width"], name="unsq"),
        helper.make_node("Slice", ["image", "starts", "width", "axes"], ["strip"], name="slice"),
        helper.make_node("Conv", ["strip", "w"], ["maps"], pads=[1, 1, 1, 1], name="conv"),
        helper.make_node("GlobalAveragePool", ["maps"], ["pooled"], name="gap"),
    ]
    graph = helper.make_graph(nodes, "data-dependent", [helper.make_tensor_value_info("image", TensorProto.FLOAT,
                                                                                       ["N", 1, 28, 28])],
                              [helper.make_tensor_value_info("pooled", TensorProto.FLOAT, ["N", 4, 1, 1])],
                              initializer=[w, *consts])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    onnx.save(model, str(path))
    (path.parent / "dyn.json").write_text(json.dumps(
        {"name": "dyn", "preprocess": {"size": [28, 28], "channels": 1, "mean": [0.286], "std": [0.353]}}))


def _template(tmp_path: Path, images) -> Path:
    store = tmp_path / "template.zarr"
    _extract(RESNET, images, store, [R5, R6], "positions", split="pos")
    _extract(RESNET, images, store, ["features"], "avg", split="img")
    return store


@pytest.mark.parametrize("args, message", [
    (["--layers", "/body/body.5/relu/Relu", "--split", "new"],
     f"fmnist-resnet.onnx has no tensor '/body/body.5/relu/Relu'; nearest: {R5}"),
    (["--layers", "/body/body.0/body.0.2/Relu_output_0", "--pool", "flatten", "--split", "new", "--model",
      "inception"],
     "flattening layer /body/body.0/body.0.2/Relu_output_0 (N x 32 x 28 x 28) gives 25,088 values per image, more than "
     "lintwin stores in a row (16,384): the float64 moments of that layer alone would take 4.69 GiB; use --pool avg"),
    (["--layers", f"{R5},{R2}", "--pool", "positions", "--split", "new"],
     "per-position rows of layers with different grids cannot share a split"),
    (["--layers", R2, "--pool", "positions", "--split", "pos"],
     "split 'pos' holds one row per image and position of a 7 x 7 grid"),
    (["--layers", R5, "--pool", "positions", "--split", "img"], "split 'img' holds one row per image"),
    (["--layers", "features", "--pool", "positions", "--split", "new"], "is one vector per image and has no positions"),
    (["--layers", R5, "--pool", "cls", "--split", "new"], "is not a token layer"),
    (["--pool", "avg", "--split", "new"], "--pool goes with --layers"),
    (["--layers", f"{R5},{R5}", "--split", "new"], "a layer is asked for twice"),
    (["--layers", "maps", "--split", "new", "--model", "dyn"],
     "layer maps gave N x 4 x 28 x 3 on a batch of 1 image(s), N x 4 x 28 x 1 before: dynamic sizes that differ "
     "between images"),
    (["--layers", "/Shape_output_0", "--split", "new", "--model", "vit"], "is not a layer"),
])
def test_bad_layer_extractions_end_in_one_error_line_and_leave_the_store_untouched(tmp_path, images, args, message):
    template = _template(tmp_path, images)
    dyn = tmp_path / "dyn.onnx"
    _data_dependent_model(dyn)
    models = {"resnet": RESNET, "inception": MODELS / "fmnist-inception.onnx", "vit": VIT, "dyn": dyn}
    model = models["resnet"]
    if "--model" in args:
        k = args.index("--model")
        model, args = models[args[k + 1]], args[:k] + args[k + 2:]
    npz = tmp_path / "images.npz"
    np.savez(npz, images=read_idx(IDX)[:N], labels=images.labels)
    before = _tree(template)
    r = runner.invoke(app, ["extract", str(model), str(npz), "--store", str(template), "-q", "--workers", "1", *args])
    assert r.exit_code == 1 and r.stderr.startswith("Error: ") and r.stderr.count("\n") == 1, r.output
    assert message in r.stderr
    assert _tree(template) == before


def test_an_unusable_model_or_sidecar_is_refused_before_a_store_exists(tmp_path, images):
    store = tmp_path / "s.zarr"
    npz = tmp_path / "images.npz"
    np.savez(npz, images=read_idx(IDX)[:N], labels=images.labels)
    sidecar = str(MODELS / "fmnist-resnet.json")
    for model, side, message in (
        (MODELS / "fmnist-resnet.head.onnx", sidecar, "lintwin reads models of images N x C x H x W"),
        (tmp_path / "missing.onnx", sidecar, "no ONNX model at"),
        (RESNET, str(tmp_path / "none.json"), "no sidecar"),
    ):
        r = runner.invoke(app, ["extract", str(model), str(npz), "--store", str(store), "--layers", R5, "-q",
                                "--sidecar", side])
        assert r.exit_code == 1 and r.stderr.count("\n") == 1 and message in r.stderr, r.output
        assert not store.exists()


def test_cli_extract_layers_reports_each_array(tmp_path, images):
    npz = tmp_path / "images.npz"
    np.savez(npz, images=read_idx(IDX)[:N], labels=images.labels)
    store = tmp_path / "s.zarr"
    r = runner.invoke(app, ["extract", str(VIT), str(npz), "--store", str(store), "-q", "--workers", "1",
                            "--layers", f"{V1},{V3}", "--pool", "positions", "--split", "tokens"])
    assert r.exit_code == 0, r.output
    assert f"wrote {N * 50} rows ({N} images x 1 view(s) x 50 row(s) each) of 2 layer(s) of fmnist-vit" in r.stdout
    assert f"fmnist-vit+blocks.blocks.1.Add_1: {V1} (Add, N x 50 x 64), pooling positions, 64 values" in r.stdout
    with pytest.raises(ShapeError, match="different grids"):
        _extract(RESNET, images, tmp_path / "t.zarr", [R5, R2], "positions")


def test_a_layer_with_nan_is_refused_naming_the_array_and_row(tmp_path, images):
    """Log of the normalised image is NaN wherever a pixel lies below the mean: refused, never stored."""
    nodes = [helper.make_node("Log", ["image"], ["logs"], name="log"),
             helper.make_node("GlobalAveragePool", ["logs"], ["pooled"], name="gap")]
    graph = helper.make_graph(nodes, "nan", [helper.make_tensor_value_info("image", TensorProto.FLOAT,
                                                                           ["N", 1, 28, 28])],
                              [helper.make_tensor_value_info("pooled", TensorProto.FLOAT, ["N", 1, 1, 1])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    path = tmp_path / "nan.onnx"
    onnx.save(model, str(path))
    (tmp_path / "nan.json").write_text(json.dumps(
        {"name": "nan", "preprocess": {"size": [28, 28], "channels": 1, "mean": [0.286], "std": [0.353]}}))
    with pytest.raises(lintwin.NonFiniteError, match=r"nan\+logs.*row 0"):
        _extract(path, images, tmp_path / "s.zarr", ["logs"], "positions")
    s = FeatureStore.open(tmp_path / "s.zarr")
    assert s.info("train", "nan+logs")["rows_written"] == 0  # nothing of it was written
