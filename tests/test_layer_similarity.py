"""layer-similarity: every layer pair from one pass equals in-memory float64 CKA of the same rows, for every cell.

Real whole models (the bundled Fashion-MNIST residual and Inception-style networks), real test
images, real zarr stores with per-position rows of three grids (28 x 28, 14 x 14, 7 x 7) in three
splits. The reference reads the same stored rows into float64 NumPy arrays, resamples a finer grid
with the closed form of half-pixel bilinear resampling at integer factors (factor 2: the mean of
each 2 x 2 block; factor 4: the mean of the middle 2 x 2 of each 4 x 4 block), and computes linear
CKA from its definition.
"""

from __future__ import annotations

import itertools
import json
from pathlib import Path

import numpy as np
import pytest
from figure_layout import layout_problems
from typer.testing import CliRunner

from lintwin import FeatureStore
from lintwin.cli import app
from lintwin.core.gpu import gpu_status
from lintwin.errors import LintwinError
from lintwin.experiments.layer_similarity import layer_similarity
from lintwin.experiments.layer_similarity_report import heatmap_figure, self_similarity_figure
from lintwin.experiments.pair_similarity import pair_similarity
from lintwin.networks.extract import extract_layers
from lintwin.networks.images import DEFAULT_FASHION_MNIST, open_images
from lintwin.networks.layer_source import LayerSource, stored_layers

MODELS = Path(__file__).resolve().parents[1] / "models" / "fashion"
IDX = DEFAULT_FASHION_MNIST / "t10k-images-idx3-ubyte.gz"
pytestmark = pytest.mark.skipif(not IDX.is_file(), reason=f"Fashion-MNIST not found at {DEFAULT_FASHION_MNIST}")
runner = CliRunner()
N = 70  # images: more than the largest chunk size tried (64)
A, B = "fmnist-resnet", "fmnist-inception"
LAYERS = {
    A: {(28, 28): ["/body/body.1/relu/Relu_output_0"], (14, 14): ["/body/body.3/relu/Relu_output_0"],
        (7, 7): ["/body/body.5/relu/Relu_output_0"]},
    B: {(14, 14): ["/body/body.1/MaxPool_output_0", "/body/body.3/Concat_output_0"],
        (7, 7): ["/body/body.5/Concat_output_0"]},
}
SPLITS = ["p28", "p14", "p7"]


def _extract(root: Path, chunk_images: int | None = None) -> Path:
    store = root / "s.zarr"
    images = open_images(IDX).subset(range(N))
    for net, grids in LAYERS.items():
        for grid, tensors in grids.items():
            rps = grid[0] * grid[1]
            extract_layers(MODELS / f"{net}.onnx", images, store, split=f"p{grid[0]}", layers=tensors,
                           pool="positions", chunk_rows=None if chunk_images is None else chunk_images * rps,
                           batch=16, workers=1, progress=False)
        every = [t for ts in grids.values() for t in ts] + ["features"]
        extract_layers(MODELS / f"{net}.onnx", images, store, split="avg", layers=every, pool="avg", batch=16,
                       workers=1, progress=False)
    return store


@pytest.fixture(scope="module")
def stores(tmp_path_factory):
    """One store per chunk size (1, 7 and 64 images per zarr chunk)."""
    return {k: _extract(tmp_path_factory.mktemp(f"chunk{k}"), k) for k in (1, 7, 64)}


@pytest.fixture(scope="module")
def joint(stores):
    return layer_similarity(FeatureStore.open(stores[7]), A, B, splits=SPLITS, progress=False, echo=lambda _: None)


def _reference_rows(store: FeatureStore, split: str, array: str, grid: tuple[int, int], to: tuple[int, int]) -> np.ndarray:
    x = np.asarray(store.features(split, array)[:], dtype=np.float64)
    c = x.shape[1]
    x = x.reshape(N, grid[0], grid[1], c)
    f = grid[0] // to[0]
    assert grid[0] == f * to[0] and f in (1, 2, 4)
    blocks = x.reshape(N, to[0], f, to[1], f, c)
    if f == 4:
        blocks = blocks[:, :, 1:3, :, 1:3]
    return blocks.mean(axis=(2, 4)).reshape(-1, c)


def _cka(x: np.ndarray, y: np.ndarray) -> float:
    x, y = x - x.mean(0), y - y.mean(0)
    return float(np.sum((x.T @ y) ** 2) / np.sqrt(np.sum((x.T @ x) ** 2) * np.sum((y.T @ y) ** 2)))


def _gram_cka(x: np.ndarray, y: np.ndarray) -> float:
    """Kornblith et al.'s definition: HSIC of the centred linear Gram matrices."""
    n = x.shape[0]
    h = np.eye(n) - 1.0 / n
    k, l_ = h @ (x @ x.T) @ h, h @ (y @ y.T) @ h
    return float(np.sum(k * l_) / np.sqrt(np.sum(k * k) * np.sum(l_ * l_)))


def test_every_cell_equals_in_memory_float64_cka(joint, stores):
    store = FeatureStore.open(stores[7])
    la, lb = joint.layers_a, joint.layers_b
    assert [x.tensor for x in la] == [t for ts in LAYERS[A].values() for t in ts]
    assert len(lb) == 3 and joint.moments["mode"] == "joint" and joint.moments["passes"] == 1

    def ref(x, y) -> float:
        grid = (min(x.grid[0], y.grid[0]), min(x.grid[1], y.grid[1]))
        return _cka(_reference_rows(store, x.split, x.array, x.grid, grid),
                    _reference_rows(store, y.split, y.array, y.grid, grid))

    for (r, x), (c, y) in itertools.product(enumerate(la), enumerate(lb)):
        assert joint.measures["cka"][r][c] == pytest.approx(ref(x, y), abs=1e-6)
        assert joint.rows[r][c] == N * int(np.prod(joint.grids[r][c]))
    for layers, mats in ((la, joint.self_a), (lb, joint.self_b)):
        for (r, x), (c, y) in itertools.combinations(enumerate(layers), 2):
            assert mats["cka"][r][c] == pytest.approx(ref(x, y), abs=1e-6)
            assert mats["cka"][c][r] == mats["cka"][r][c]
    # one cell against the Gram-matrix definition too (7 x 7 grid: 3430 rows)
    x, y = la[2], lb[2]
    gram = _gram_cka(_reference_rows(store, x.split, x.array, (7, 7), (7, 7)),
                     _reference_rows(store, y.split, y.array, (7, 7), (7, 7)))
    assert joint.measures["cka"][2][2] == pytest.approx(gram, abs=1e-6)


def test_self_similarity_of_a_layer_is_one(joint):
    for mats in (joint.self_a, joint.self_b):
        m = np.asarray(mats["cka"], dtype=float)
        np.testing.assert_allclose(np.diag(m), 1.0, rtol=0, atol=1e-12)
        assert np.all(m <= 1.0 + 1e-12) and np.all(m > 0)


def test_the_matrix_is_the_same_for_chunk_sizes_of_1_7_and_64_images(stores, joint):
    want = np.asarray(joint.measures["cka"])
    for k, path in stores.items():
        got = layer_similarity(FeatureStore.open(path), A, B, splits=SPLITS, block_samples=k, progress=False,
                               echo=lambda _: None)
        for key in ("measures", "self_a", "self_b"):
            np.testing.assert_allclose(np.asarray(getattr(got, key)["cka"]), np.asarray(getattr(joint, key)["cka"]),
                                       rtol=0, atol=1e-12)
        np.testing.assert_allclose(np.asarray(got.measures["cka"]), want, rtol=0, atol=1e-12)


def test_the_first_samples_only(stores):
    store = FeatureStore.open(stores[7])
    got = layer_similarity(store, A, B, splits=["p7"], samples=30, null=3, progress=False, echo=lambda _: None)
    assert got.samples == 30 and got.rows[0][0] == 30 * 49
    x = np.asarray(store.features("p7", f"{A}+body.body.5.relu.Relu")[: 30 * 49], np.float64)
    y = np.asarray(store.features("p7", f"{B}+body.body.5.Concat")[: 30 * 49], np.float64)
    assert got.measures["cka"][0][0] == pytest.approx(_cka(x, y), abs=1e-10)
    assert all(0 < s < 30 for s in got.null["shifts"])


def test_beyond_the_memory_budget_passes_over_groups_give_the_same_matrix(stores, joint):
    said: list[str] = []
    budget = joint.moments["joint_bytes"] * 2 // 3
    got = layer_similarity(FeatureStore.open(stores[7]), A, B, splits=SPLITS, max_memory=budget, progress=False,
                           echo=said.append)
    assert got.moments["mode"] == "groups" and got.moments["passes"] > 1
    assert got.moments["peak_bytes"] <= budget < got.moments["joint_bytes"]
    assert "more than --max-memory" in said[0] and "one pass over each pair of groups" in said[0]
    for key in ("measures", "self_a", "self_b"):
        np.testing.assert_allclose(np.asarray(getattr(got, key)["cka"]), np.asarray(getattr(joint, key)["cka"]),
                                   rtol=0, atol=1e-12)
    with pytest.raises(LintwinError, match="even one pair of layers needs about"):
        layer_similarity(FeatureStore.open(stores[7]), A, B, splits=SPLITS, max_memory=10_000, progress=False,
                         echo=lambda _: None)


def test_other_measures_are_those_of_lintwin_similarity(stores):
    store = FeatureStore.open(stores[7])
    got = layer_similarity(store, A, B, splits=["avg"], measures=["cka", "svcca", "pwcca", "r2_ab", "r2_ba"],
                           progress=False, echo=lambda _: None)
    la = [x.array for x in got.layers_a]
    lb = [x.array for x in got.layers_b]
    r, c = la.index(f"{A}+features"), lb.index(f"{B}+features")
    ref = pair_similarity(store, la[r], lb[c], split="avg", folds=0, progress=False).similarity.values
    for key in ("cka", "svcca", "pwcca", "r2_ab", "r2_ba"):
        assert got.measures[key][r][c] == pytest.approx(ref[key], abs=1e-10)
    # the R² directions follow the matrix: row layer → column layer
    back = pair_similarity(store, lb[c], la[r], split="avg", folds=0, progress=False).similarity.values
    assert got.measures["r2_ba"][r][c] == pytest.approx(back["r2_ab"], abs=1e-10)


def test_null_shifts_whole_images_and_gives_each_cell_a_p_value(stores):
    store = FeatureStore.open(stores[7])
    layers = [x for x in stored_layers(store, ["p7"]) if x.network in (A, B)]
    plain = list(LayerSource(store, layers, block_samples=10).blocks())
    shifted = list(LayerSource(store, layers, block_samples=10, shifted=[1], shift=3, seed=5).blocks())
    rows_b = np.concatenate([b[1] for _, b in plain]).reshape(N, 49, -1)
    for (lo, got), (_, want) in zip(shifted, plain):
        np.testing.assert_array_equal(got[0], want[0])  # A untouched
        samples = got[1].reshape(-1, 49, got[1].shape[1])
        # every shifted sample is a whole sample of B, positions in order, from the rows 3 samples on (cyclic)
        expect = {(lo + 3 + k) % N for k in range(samples.shape[0])}
        found = {next(i for i in range(N) if np.array_equal(s, rows_b[i])) for s in samples}
        assert found == expect
    res = layer_similarity(store, A, B, splits=["avg"], null=4, seed=1, progress=False, echo=lambda _: None)
    null = res.null
    assert null is not None and null["repeats"] == 4 and len(null["shifts"]) == 4
    p = np.asarray(null["cka"]["p"], dtype=float)
    assert p.shape == (len(res.layers_a), len(res.layers_b)) and np.all((p >= 1 / 5) & (p <= 1))
    mean = np.asarray(null["cka"]["mean"], dtype=float)
    assert np.all(mean < np.asarray(res.measures["cka"]))  # the real pairing is more alike than shifted images


def test_cli_writes_the_json_and_readable_heatmaps(stores, joint, tmp_path):
    out = tmp_path / "ls"
    args = ["layer-similarity", str(stores[7]), "--a", A, "--b", B, "--out", str(out), "-q"]
    r = runner.invoke(app, args + [x for s in SPLITS for x in ("--split", s)])
    assert r.exit_code == 0, r.output
    data = json.loads((out / "layer_similarity.json").read_text())
    assert data["layers_a"] == [x.tensor for x in joint.layers_a] and len(data["layers_b"]) == 3
    np.testing.assert_allclose(np.asarray(data["measures"]["cka"]), np.asarray(joint.measures["cka"]), atol=1e-15)
    assert data["self_similarity"]["a"]["cka"][0][0] == pytest.approx(1.0)
    assert "bilinear" in data["resampling"] and data["common_grid"][0][0] == [14, 14]
    assert (out / "layer_similarity_cka.png").stat().st_size > 0 and (out / "self_similarity_cka.png").is_file()
    assert "most alike layer of" in r.stdout
    assert layout_problems(heatmap_figure(joint)) == []
    assert layout_problems(self_similarity_figure(joint)) == []
    r = runner.invoke(app, args + ["--split", "avg", "--format", "csv"])
    assert r.exit_code == 0 and len(r.stdout.strip().splitlines()) == 1 + 4 * 4


@pytest.mark.parametrize(("extra", "message"), [
    (["--b", "nobody"], "no stored layers of network 'nobody'"),
    (["--measures", "cka,nonsense"], "unknown measure(s) nonsense"),
    (["--b", A, "--null", "3"], "--null compares A's layers with B's other images"),
    (["--layers-a", "/body/body.9/relu/Relu_output_0"], "is not stored in split(s)"),
    (["--max-memory", "lots"], "--max-memory must be a size"),
])
def test_cli_refusals_are_one_line_and_change_nothing(stores, tmp_path, extra, message):
    out = tmp_path / "o"
    before = sorted(p.stat().st_mtime_ns for p in Path(stores[7]).rglob("*"))
    base = ["layer-similarity", str(stores[7]), "--a", A, "--b", B, "--out", str(out), "--split", "avg", "-q"]
    r = runner.invoke(app, [*base, *extra])
    assert r.exit_code == 1, r.output
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: ") and message in lines[0], lines
    assert not out.exists() and sorted(p.stat().st_mtime_ns for p in Path(stores[7]).rglob("*")) == before


def test_grids_that_cannot_be_aligned_are_refused(tmp_path):
    store = tmp_path / "t.zarr"
    images = open_images(IDX).subset(range(8))
    extract_layers(MODELS / "fmnist-vit.onnx", images, store, split="tokens", layers=["/blocks/blocks.1/Add_1_output_0"],
                   pool="positions", workers=1, progress=False)
    extract_layers(MODELS / f"{A}.onnx", images, store, split="p7", layers=["/body/body.5/relu/Relu_output_0"],
                   pool="positions", workers=1, progress=False)
    r = runner.invoke(app, ["layer-similarity", str(store), "--a", "fmnist-vit", "--b", A, "--split", "tokens",
                            "--split", "p7", "--out", str(tmp_path / "o"), "-q"])
    assert r.exit_code == 1
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and "cannot be aligned (50 tokens against 7 x 7)" in lines[0]


@pytest.mark.skipif(not gpu_status()[0], reason=f"no GPU for CuPy: {gpu_status()[1]}")
def test_on_the_gpu_the_matrices_are_the_cpus(stores, joint):
    got = layer_similarity(FeatureStore.open(stores[7]), A, B, splits=SPLITS, device="gpu", progress=False,
                           echo=lambda _: None)
    for key in ("measures", "self_a", "self_b"):
        np.testing.assert_allclose(np.asarray(getattr(got, key)["cka"]), np.asarray(getattr(joint, key)["cka"]),
                                   rtol=0, atol=1e-10)

