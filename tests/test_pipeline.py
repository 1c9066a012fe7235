"""ONNX backbones → zarr → ONNX heads, end to end on the committed Fashion-MNIST networks."""

from __future__ import annotations

import csv
import io
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from lintwin import FeatureStore, ShapeError
from lintwin.cli import app
from lintwin.experiments.compare import compare, predict_store
from lintwin.experiments.demo import BUNDLED_MODELS
from lintwin.networks.extract import extract_features
from lintwin.networks.images import DEFAULT_FASHION_MNIST, open_images
from lintwin.networks.onnx_models import Backbone, Head, NetworkSpec

pytestmark = pytest.mark.skipif(
    not (DEFAULT_FASHION_MNIST / "t10k-images-idx3-ubyte.gz").is_file(),
    reason="Fashion-MNIST is not installed (apt-get install dataset-fashion-mnist)",
)
NETS = ("fmnist-resnet", "fmnist-inception")
runner = CliRunner()


@pytest.fixture(scope="module")
def fashion():
    train = open_images(DEFAULT_FASHION_MNIST / "train-images-idx3-ubyte.gz")
    test = open_images(DEFAULT_FASHION_MNIST / "t10k-images-idx3-ubyte.gz")
    return train, test


@pytest.fixture(scope="module")
def store(tmp_path_factory, fashion):
    train, test = fashion
    path = tmp_path_factory.mktemp("fm") / "features.zarr"
    for name in NETS:
        spec = NetworkSpec.for_model(BUNDLED_MODELS / f"{name}.json")
        extract_features(spec.backbone_path, train.subset(range(3000)), path, split="train", batch=500, progress=False)
        extract_features(spec.backbone_path, test, path, split="val", batch=500, progress=False)
    return FeatureStore.open(path)


def test_own_head_accuracy_equals_the_full_network(store, fashion):
    """C(F(x)) through the store equals the trained network's test accuracy recorded at export."""
    _, test = fashion
    for name in NETS:
        spec = NetworkSpec.for_model(BUNDLED_MODELS / f"{name}.json")
        pred = predict_store(store, "val", name, Head(spec.head_path))
        correct = int((pred == test.labels).sum())
        assert correct == round(spec.raw["test_accuracy"] * 10000)
        # and the backbone + head run directly on the images agree row by row
        x = np.stack([spec.preprocess(test.load(i)) for i in range(200)])
        direct = Head(spec.head_path)(Backbone(spec.backbone_path)(x)).argmax(1)
        np.testing.assert_array_equal(direct, pred[:200])


def test_compare_table1_and_regions(store, tmp_path):
    heads = [Head(NetworkSpec.for_model(BUNDLED_MODELS / f"{n}.json").head_path) for n in NETS]
    result, maps = compare(store, NETS[0], NETS[1], heads[0], heads[1], progress=False)
    t = {r["description"]: r for r in result.table}
    n = result.images
    assert n == 10000
    ab = t[f"{NETS[0]}→{NETS[1]}"]
    assert ab["loss"] == pytest.approx(t[NETS[1]]["percent"] - ab["percent"])
    assert 80 < ab["percent"] <= 100 and 0.85 < ab["agreement"] <= 1
    reg = result.regions[0]
    assert sum(reg.counts.values()) == n
    assert reg.b_errors == n - t[NETS[1]]["correct"]
    assert reg.counts["A-M"] + reg.counts["--M"] == reg.fixed_by_map
    assert sum(v for k, v in reg.counts.items() if k[2] == "M") == ab["correct"]
    assert (maps[0].src, maps[0].dst, maps[0].weight.shape) == (NETS[0], NETS[1], (160, 128))
    # Table 1 as results users know: item and attribute access, pandas, one-line repr
    assert result["accuracy_ab"] == result.accuracy_ab == ab["percent"]
    assert result.loss_ab == pytest.approx(result.accuracy_b - result.accuracy_ab)
    assert result.agreement_ab == ab["agreement"]
    frame = result.to_frame()
    assert list(frame.index) == [r["description"] for r in result.table]
    assert frame.loc[f"{NETS[0]}→{NETS[1]}", "percent"] == ab["percent"]
    assert frame.loc[NETS[0], "percent_low"] <= frame.loc[NETS[0], "percent"] <= frame.loc[NETS[0], "percent_high"]
    assert result.to_dict() == result.as_dict()
    assert "\n" not in repr(result) and repr(result).startswith(f"CompareResult({NETS[0]} vs {NETS[1]}, 10000 val")
    with pytest.raises(KeyError, match="not a value of this CompareResult"):
        result["cka"]


def test_swapped_heads_and_a_missing_eval_split_say_what_to_do(store, tmp_path):
    heads = [str(BUNDLED_MODELS / f"{n}.head.onnx") for n in NETS]
    r = runner.invoke(app, ["compare", str(store.path), "--a", NETS[0], "--b", NETS[1], "--head-a", heads[1],
                            "--head-b", heads[0], "--out", str(tmp_path / "c"), "-q"])
    assert r.exit_code == 1 and r.stderr.count("\n") == 1
    assert "did you swap --head-a and --head-b?" in r.stderr
    r = runner.invoke(app, ["compare", str(store.path), "--a", NETS[0], "--b", NETS[1], "--head-a", heads[0],
                            "--head-b", heads[1], "--eval-split", "test", "--out", str(tmp_path / "c"), "-q"])
    assert r.exit_code == 1 and r.stderr.count("\n") == 1
    assert "split 'test' not in store" in r.stderr and "give one of 'val' with --eval-split" in r.stderr
    assert "--eval-split train --in-sample" in r.stderr
    assert not (tmp_path / "c").exists()


def test_cli_compare_and_score(store, tmp_path):
    models = BUNDLED_MODELS
    r = runner.invoke(app, ["compare", str(store.path), "--a", NETS[0], "--b", NETS[1],
                            "--head-a", str(models / f"{NETS[0]}.head.onnx"),
                            "--head-b", str(models / f"{NETS[1]}.head.onnx"), "--out", str(tmp_path), "-q"])
    assert r.exit_code == 0, r.output
    assert "Table 1 (10000 val images; maps fitted on train with least squares (lstsq)):" in r.stdout
    assert "mapped fmnist-resnet features fix" in r.stdout
    table_lines = r.stdout.split("\n\n")[0].splitlines()[1:]
    assert max(len(line) for line in table_lines) <= 100  # long names are aliased, with a legend
    assert "where A = fmnist-resnet, B = fmnist-inception" in r.stdout
    data = json.loads((tmp_path / f"compare_{NETS[0]}_{NETS[1]}.json").read_text())
    assert [row["description"] for row in data["table"]] == [NETS[0], NETS[1], f"{NETS[0]}→{NETS[1]}",
                                                             f"{NETS[1]}→{NETS[0]}"]
    assert (tmp_path / f"fig5_{NETS[0]}_{NETS[1]}.png").read_bytes()[:4] == b"\x89PNG"
    mp = tmp_path / f"{NETS[0]}_to_{NETS[1]}.npz"
    r = runner.invoke(app, ["score", str(store.path), "--map", str(mp), "--head",
                            str(models / f"{NETS[1]}.head.onnx")])
    assert r.exit_code == 0, r.output
    mapped_pct = next(row["percent"] for row in data["table"] if row["description"] == f"{NETS[0]}→{NETS[1]}")
    assert f"({mapped_pct:.2f}%)" in r.stdout and "top-1 agreement with mapped" in r.stdout
    # machine-readable output: stdout holds only the table or the JSON, and the header names the actual fit
    base = ["compare", str(store.path), "--a", NETS[0], "--b", NETS[1], "--head-a", str(models / f"{NETS[0]}.head.onnx"),
            "--head-b", str(models / f"{NETS[1]}.head.onnx"), "--out", str(tmp_path / "f"), "-q", "--bootstrap", "0"]
    r = runner.invoke(app, base + ["--format", "json", "--ridge", "auto", "--folds", "3"])
    assert r.exit_code == 0, r.output
    assert json.loads(r.stdout)["maps"][0]["options"]["ridge"] == "auto"
    r = runner.invoke(app, base + ["--format", "csv", "--ridge", "5,7"])
    assert r.exit_code == 0, r.output
    rows = list(csv.reader(io.StringIO(r.stdout)))
    assert rows[0][:4] == ["description", "mapping", "correct", "percent"] and len(rows) == 5
    r = runner.invoke(app, base + ["--format", "markdown", "--ridge", "5,7"])
    assert r.exit_code == 0, r.output
    assert f"λ {NETS[0]}→{NETS[1]} = 5, λ {NETS[1]}→{NETS[0]} = 7" in r.stdout and "| description |" in r.stdout
    # the head of the other network is refused, with the reason
    r = runner.invoke(app, ["score", str(store.path), "--map", str(mp), "--head", str(models / f"{NETS[0]}.head.onnx")])
    assert r.exit_code == 1
    assert "Error: head fmnist-resnet.head.onnx expects 128-dim features, features of 'fmnist-inception' have 160" \
        in r.stderr
    # a map from another pair is refused
    r = runner.invoke(app, ["score", str(store.path), "--map", str(tmp_path / f"{NETS[1]}_to_{NETS[0]}.npz"),
                            "--head", str(tmp_path / "missing.onnx")])
    assert r.exit_code == 1 and "Error: no ONNX model at" in r.stderr


def test_head_refuses_features_of_the_wrong_dimension():
    head = Head(BUNDLED_MODELS / "fmnist-resnet.head.onnx")
    with pytest.raises(ShapeError, match="expects 128-dim features, got 160"):
        head(np.ones((2, 160), np.float32))


def test_ridge_cv_by_top1_agreement_matches_refitting(store):
    """With the target's head, λ is chosen by held-out agreement; one value checked by brute force."""
    from lintwin import fit
    from lintwin.api import accumulate_folds, fit_store
    from lintwin.core.folds import image_folds
    from lintwin.solvers.agreement import agreement_path
    from lintwin.storage.source import StoreSource

    head = Head(BUNDLED_MODELS / f"{NETS[1]}.head.onnx")
    m = fit_store(store, NETS[0], NETS[1], ridge="auto", folds=3, progress=False,
                  ridge_criterion="agreement", target_heads={NETS[1]: head})
    cv = m.stats["ridge_cv"]
    assert cv["scored_by"] == "top-1 agreement" and len(cv["agreement"]) == len(cv["lambdas"])
    assert cv["chosen"] in cv["lambdas"]
    assert cv["agreement"][cv["lambdas"].index(cv["chosen"])] == max(cv["agreement"])
    folds = accumulate_folds(store, NETS[0], NETS[1], k=3, precision="float64", progress=False)
    lam = cv["lambdas"][12]
    a, b = store.features("train", NETS[0])[:], store.features("train", NETS[1])[:]
    fold = image_folds(store.ids("train"), len(a), 3)
    got = agreement_path(StoreSource(store, "train", NETS[:2]), fold, folds, [lam], head)[0]
    hits = 0
    for j in range(3):
        mj = fit(a[fold != j], b[fold != j], ridge=lam, precision="float64")
        hits += int(np.sum(head.predict(np.asarray(mj.apply(a[fold == j]), np.float32)) == head.predict(b[fold == j])))
    assert got == pytest.approx(hits / len(a), abs=2.0 / len(a))  # float32 vs float64 maps may flip a near-tie


# -- head <-> network, paired rows, in-sample: refused before any number is printed ------
def _twin(tmp_path: Path) -> Path:
    """A third 128-dim network: the resnet backbone with a head whose classes are permuted (a real ONNX file)."""
    import onnx
    from onnx import numpy_helper

    out = tmp_path / "twin"
    out.mkdir()
    shutil.copy(BUNDLED_MODELS / "fmnist-resnet.backbone.onnx", out / "twin.backbone.onnx")
    model = onnx.load(BUNDLED_MODELS / "fmnist-resnet.head.onnx")
    perm = np.roll(np.arange(10), 3)
    for init in model.graph.initializer:
        init.CopyFrom(numpy_helper.from_array(numpy_helper.to_array(init)[perm], init.name))
    onnx.save(model, out / "twin.head.onnx")
    d = json.loads((BUNDLED_MODELS / "fmnist-resnet.json").read_text())
    (out / "twin.json").write_text(json.dumps({**d, "name": "twin", "backbone": "twin.backbone.onnx",
                                               "head": "twin.head.onnx"}))
    return out


@pytest.fixture(scope="module")
def small(tmp_path_factory, fashion):
    """600 train and 300 test images through resnet, inception and the twin."""
    train, test = fashion
    tmp = tmp_path_factory.mktemp("small")
    twin = _twin(tmp)
    path = tmp / "features.zarr"
    for backbone in [BUNDLED_MODELS / f"{n}.backbone.onnx" for n in NETS] + [twin / "twin.backbone.onnx"]:
        extract_features(backbone, train.subset(range(600)), path, split="train", batch=300, workers=1,
                         progress=False)
        extract_features(backbone, test.subset(range(300)), path, split="val", batch=300, workers=1, progress=False)
    return path, twin


def _compare(path, a, b, head_a, head_b, out, *extra):
    return runner.invoke(app, ["compare", str(path), "--a", a, "--b", b, "--head-a", str(head_a),
                               "--head-b", str(head_b), "--out", str(out), "-q", *extra])


def test_compare_refuses_swapped_heads_of_equal_dimension(small, tmp_path):
    path, twin = small
    resnet_head = BUNDLED_MODELS / "fmnist-resnet.head.onnx"
    ok = _compare(path, "fmnist-resnet", "twin", resnet_head, twin / "twin.head.onnx", tmp_path / "ok")
    assert ok.exit_code == 0, ok.output
    r = _compare(path, "fmnist-resnet", "twin", twin / "twin.head.onnx", resnet_head, tmp_path / "bad")
    assert r.exit_code == 1 and r.stderr.count("\n") == 1
    assert ("Error: the heads fit the other networks: --head-a is the head the store records for 'twin' and "
            "--head-b the one for 'fmnist-resnet'; did you swap --head-a and --head-b?") in r.stderr
    assert not (tmp_path / "bad").exists()  # nothing was written
    # a copy under the other network's file name is still refused: the hash decides, not the name
    renamed = tmp_path / "renamed"
    renamed.mkdir()
    shutil.copy(resnet_head, renamed / "twin.head.onnx")
    r = _compare(path, "fmnist-resnet", "twin", resnet_head, renamed / "twin.head.onnx", tmp_path / "bad")
    assert r.exit_code == 1 and "Error: twin.head.onnx is not the head of 'twin': its sha256 is" in r.stderr


def test_score_refuses_a_head_whose_hash_is_not_the_targets(small, tmp_path):
    path, twin = small
    ok = _compare(path, "fmnist-resnet", "twin", BUNDLED_MODELS / "fmnist-resnet.head.onnx", twin / "twin.head.onnx",
                  tmp_path)
    assert ok.exit_code == 0, ok.output
    mp = tmp_path / "fmnist-resnet_to_twin.npz"
    r = runner.invoke(app, ["score", str(path), "--map", str(mp), "--head", str(twin / "twin.head.onnx")])
    assert r.exit_code == 0 and "top-1 agreement with mapped" in r.stdout, r.output
    decoy = tmp_path / "decoy"
    decoy.mkdir()
    shutil.copy(BUNDLED_MODELS / "fmnist-resnet.head.onnx", decoy / "twin.head.onnx")  # named like the target's
    r = runner.invoke(app, ["score", str(path), "--map", str(mp), "--head", str(decoy / "twin.head.onnx")])
    assert r.exit_code == 1 and r.stderr.count("\n") == 1
    assert "Error: twin.head.onnx is not the head of 'twin': its sha256 is" in r.stderr


def test_compare_and_score_refuse_misaligned_rows(small, fashion, tmp_path):
    path, twin = small
    _, test = fashion
    other = tmp_path / "other.zarr"  # the twin's val features of the same images in another order
    extract_features(twin / "twin.backbone.onnx", test.subset(list(range(299, -1, -1))), other, split="val",
                     batch=300, workers=1, progress=False)
    spliced = tmp_path / "spliced.zarr"
    shutil.copytree(path, spliced)
    shutil.rmtree(spliced / "val" / "features" / "twin")
    shutil.copytree(other / "val" / "features" / "twin", spliced / "val" / "features" / "twin")
    r = _compare(spliced, "fmnist-resnet", "twin", BUNDLED_MODELS / "fmnist-resnet.head.onnx",
                 twin / "twin.head.onnx", tmp_path / "out")
    assert r.exit_code == 1 and r.stderr.count("\n") == 1
    assert "Error: networks of split 'val' were written for different samples or sample orders" in r.stderr
    ok = _compare(path, "fmnist-resnet", "twin", BUNDLED_MODELS / "fmnist-resnet.head.onnx", twin / "twin.head.onnx",
                  tmp_path / "maps")
    assert ok.exit_code == 0, ok.output
    r = runner.invoke(app, ["score", str(spliced), "--map", str(tmp_path / "maps" / "fmnist-resnet_to_twin.npz"),
                            "--head", str(twin / "twin.head.onnx")])
    assert r.exit_code == 1 and "were written for different samples or sample orders" in r.stderr


def test_in_sample_tables_need_asking_and_say_so(small, tmp_path):
    path, _ = small
    heads = (BUNDLED_MODELS / "fmnist-resnet.head.onnx", BUNDLED_MODELS / "fmnist-inception.head.onnx")
    r = _compare(path, *NETS, *heads, tmp_path, "--eval-split", "train")
    assert r.exit_code == 1 and r.stderr.count("\n") == 1
    assert "scores the maps on images they were fitted on, an in-sample figure" in r.stderr
    assert "--in-sample" in r.stderr
    r = _compare(path, *NETS, *heads, tmp_path, "--eval-split", "train", "--in-sample")
    assert r.exit_code == 0, r.output
    assert r.stdout.startswith("Table 1, IN-SAMPLE (600 train images that the maps were also fitted on")
    data = json.loads((tmp_path / f"compare_{NETS[0]}_{NETS[1]}.json").read_text())
    assert data["in_sample"] is True
