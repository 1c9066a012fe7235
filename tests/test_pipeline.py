"""ONNX backbones → zarr → ONNX heads, end to end on the committed Fashion-MNIST networks."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from lintwin import FeatureStore, ShapeError
from lintwin.cli import app
from lintwin.demo import BUNDLED_MODELS
from lintwin.experiment import compare, predict_store
from lintwin.extract import extract_features
from lintwin.images import DEFAULT_FASHION_MNIST, open_images
from lintwin.networks import Backbone, Head, NetworkSpec

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


def test_cli_compare_and_score(store, tmp_path):
    models = BUNDLED_MODELS
    r = runner.invoke(app, ["compare", str(store.path), "--a", NETS[0], "--b", NETS[1],
                            "--head-a", str(models / f"{NETS[0]}.head.onnx"),
                            "--head-b", str(models / f"{NETS[1]}.head.onnx"), "--out", str(tmp_path), "-q"])
    assert r.exit_code == 0, r.output
    assert "Table 1 (10000 val images; maps fitted on train with lstsq):" in r.stdout
    assert "mapped fmnist-resnet features fix" in r.stdout
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
    # the head of the other network is refused, with the reason
    r = runner.invoke(app, ["score", str(store.path), "--map", str(mp), "--head", str(models / f"{NETS[0]}.head.onnx")])
    assert r.exit_code == 1
    assert "Error: map fmnist-resnet→fmnist-inception targets 'fmnist-inception', but" in r.stderr
    # a map from another pair is refused
    r = runner.invoke(app, ["score", str(store.path), "--map", str(tmp_path / f"{NETS[1]}_to_{NETS[0]}.npz"),
                            "--head", str(tmp_path / "missing.onnx")])
    assert r.exit_code == 1 and "Error: no ONNX model at" in r.stderr


def test_head_refuses_features_of_the_wrong_dimension():
    head = Head(BUNDLED_MODELS / "fmnist-resnet.head.onnx")
    with pytest.raises(ShapeError, match="expects 128-dim features, got 160"):
        head(np.ones((2, 160), np.float32))


def _rows_written(store: Path, name: str) -> int:
    meta = store / "train" / "features" / name / "zarr.json"
    try:
        return int(json.loads(meta.read_text())["attributes"]["rows_written"])
    except (OSError, ValueError, KeyError):
        return 0


def test_extract_killed_and_resumed_is_identical(tmp_path, fashion):
    train, _ = fashion
    npz = tmp_path / "images.npz"
    np.savez(npz, images=train.arrays[:4000], labels=train.labels[:4000])
    backbone = BUNDLED_MODELS / "fmnist-inception.backbone.onnx"
    args = [sys.executable, "-m", "lintwin.cli", "extract", str(backbone), str(npz), "--chunk-rows", "250",
            "--batch", "50", "--augment", "--views", "2", "-q"]
    whole, killed = tmp_path / "whole.zarr", tmp_path / "killed.zarr"
    subprocess.run(args + ["--store", str(whole)], check=True, capture_output=True)
    proc = subprocess.Popen(args + ["--store", str(killed)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 120
    while _rows_written(killed, "fmnist-inception") < 1000 and time.time() < deadline and proc.poll() is None:
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    done = _rows_written(killed, "fmnist-inception")
    assert 0 < done < 8000, "the run should have been killed part-way"
    r = runner.invoke(app, ["info", str(killed)])
    assert f"INCOMPLETE {done}/8000" in r.stdout
    out = subprocess.run(args + ["--store", str(killed)], check=True, capture_output=True, text=True)
    assert f"(resumed at row {done})" in out.stdout
    a = FeatureStore.open(whole).features("train", "fmnist-inception")[:]
    b = FeatureStore.open(killed).features("train", "fmnist-inception")[:]
    np.testing.assert_array_equal(a, b)
    assert FeatureStore.open(killed).ids("train")[:3].tolist() == ["images.npz:0#v0", "images.npz:0#v1",
                                                                    "images.npz:1#v0"]
    assert os.path.getsize(npz) > 0


def test_ridge_cv_by_top1_agreement_matches_refitting(store):
    """With the target's head, λ is chosen by held-out agreement; one value checked by brute force."""
    from lintwin import fit
    from lintwin.api import fit_store
    from lintwin.folds import agreement_path, accumulate_folds, image_folds

    head = Head(BUNDLED_MODELS / f"{NETS[1]}.head.onnx")
    (m,) = fit_store(store, NETS[0], NETS[1], ridge="auto", folds=3, progress=False,
                     target_heads={NETS[1]: head})
    cv = m.stats["ridge_cv"]
    assert cv["scored_by"] == "top-1 agreement" and len(cv["agreement"]) == len(cv["lambdas"])
    assert cv["chosen"] in cv["lambdas"]
    assert cv["agreement"][cv["lambdas"].index(cv["chosen"])] == max(cv["agreement"])
    folds = accumulate_folds(store, NETS[0], NETS[1], k=3, precision="float64", progress=False)
    lam = cv["lambdas"][12]
    got = agreement_path(store, NETS[0], NETS[1], folds, [lam], head)[0]
    a, b = store.features("train", NETS[0])[:], store.features("train", NETS[1])[:]
    fold = image_folds(store.ids("train"), len(a), 3)
    hits = 0
    for j in range(3):
        mj = fit(a[fold != j], b[fold != j], ridge=lam, precision="float64")
        hits += int(np.sum(head.predict(np.asarray(mj.apply(a[fold == j]), np.float32)) == head.predict(b[fold == j])))
    assert got == pytest.approx(hits / len(a), abs=2.0 / len(a))  # float32 vs float64 maps may flip a near-tie
