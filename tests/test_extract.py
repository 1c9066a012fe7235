"""Extraction that is never stuck and never spliced: checks before writing, provenance, kills, workers."""

from __future__ import annotations

import hashlib
import json
import multiprocessing
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from conftest import ROOT
from PIL import Image
from typer.testing import CliRunner

from lintwin import FeatureStore, LintwinError, ModelError, StoreError
from lintwin.cli import app
from lintwin.experiments.demo import BUNDLED_MODELS
from lintwin.networks.extract import extract_features
from lintwin.networks.images import DEFAULT_FASHION_MNIST, open_images
from lintwin.networks.onnx_models import Backbone, NetworkSpec
from lintwin.networks.preprocess import Augment

runner = CliRunner()
NET = "fmnist-resnet"


def _models(tmp_path: Path) -> Path:
    """A private copy of the bundled resnet (ONNX files and sidecar) that a test may edit."""
    out = tmp_path / "models"
    out.mkdir(exist_ok=True)
    for f in BUNDLED_MODELS.glob(f"{NET}.*"):
        shutil.copy(f, out / f.name)
    return out


def _edit_sidecar(models: Path, **preprocess) -> None:
    path = models / f"{NET}.json"
    d = json.loads(path.read_text())
    d["preprocess"].update(preprocess)
    path.write_text(json.dumps(d))


def _photos(root: Path, n: int, seed: int = 0) -> Path:
    """``n`` smooth RGB JPEG photos of varied sizes in class folders (real files, decoded by Pillow)."""
    rng = np.random.default_rng(seed)
    for i in range(n):
        w, h = int(rng.integers(40, 90)), int(rng.integers(40, 90))
        small = rng.integers(0, 256, (h // 6 + 2, w // 6 + 2, 3)).astype(np.uint8)
        d = root / f"c{i % 3}"
        d.mkdir(parents=True, exist_ok=True)
        Image.fromarray(small).resize((w, h), Image.Resampling.BICUBIC).save(d / f"p{i:03d}.jpg", quality=92)
    return root


@pytest.fixture(scope="module")
def digits(tmp_path_factory) -> Path:
    """60 real 28 x 28 grey images (Fashion-MNIST-like strokes drawn from smooth noise) as an .npz."""
    rng = np.random.default_rng(5)
    small = rng.integers(0, 256, (60, 7, 7)).astype(np.uint8)
    images = np.stack([np.asarray(Image.fromarray(s).resize((28, 28), Image.Resampling.BICUBIC)) for s in small])
    path = tmp_path_factory.mktemp("digits") / "images.npz"
    np.savez(path, images=images, labels=np.arange(60) % 10)
    return path


def _store_bytes(path: Path) -> dict[str, str]:
    """Every file of a store (locks aside) by content hash, to show a refused command changed nothing."""
    return {str(p.relative_to(path)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(path.rglob("*")) if p.is_file() and ".lintwin-locks" not in p.parts}


def _same_store(a: Path, b: Path, split: str = "train", name: str = NET) -> None:
    sa, sb = FeatureStore.open(a), FeatureStore.open(b)
    np.testing.assert_array_equal(sa.features(split, name)[:], sb.features(split, name)[:])
    assert sa.ids(split).tolist() == sb.ids(split).tolist()
    np.testing.assert_array_equal(sa.labels(split), sb.labels(split))
    assert sa.info(split, name)["provenance"] == sb.info(split, name)["provenance"]


# -- everything is checked before the store is touched ------------------------------
@pytest.mark.parametrize("what, message", [
    ("head as backbone", "takes N x 128 input, not images N x C x H x W (it looks like a head"),
    ("three channels", "takes images of N x 1 x 28 x 28, the sidecar's preprocessing gives 3 x 28 x 28 (channels"),
    ("wrong size", "takes images of N x 1 x 28 x 28, the sidecar's preprocessing gives 1 x 32 x 32 (height"),
    ("wrong feature_dim", "fmnist-resnet.backbone.onnx gives 128-dim features per image, its sidecar says 64"),
    ("unknown key", "unknown preprocess key(s) scale"),
])
def test_a_wrong_model_or_sidecar_is_refused_before_any_array(tmp_path, digits, what, message):
    models = _models(tmp_path)
    backbone = models / f"{NET}.backbone.onnx"
    if what == "head as backbone":
        backbone = models / f"{NET}.head.onnx"
    elif what == "three channels":
        _edit_sidecar(models, channels=3, mean=[0.5] * 3, std=[0.5] * 3)
    elif what == "wrong size":
        _edit_sidecar(models, size=[32, 32])
    elif what == "unknown key":
        _edit_sidecar(models, scale=2)
    else:
        d = json.loads((models / f"{NET}.json").read_text())
        (models / f"{NET}.json").write_text(json.dumps({**d, "feature_dim": 64}))
    store = tmp_path / "s.zarr"
    r = runner.invoke(app, ["extract", str(backbone), str(digits), "--store", str(store),
                            "--sidecar", str(models / f"{NET}.json"), "-q"])
    assert r.exit_code == 1 and r.stderr.count("\n") == 1 and r.stderr.startswith("Error: "), r.output
    assert message in r.stderr
    assert not store.exists()  # nothing was created


def test_a_store_with_other_features_is_left_untouched_and_overwrite_replaces(tmp_path, digits):
    models = _models(tmp_path)
    store = tmp_path / "s.zarr"
    args = ["extract", str(models / f"{NET}.backbone.onnx"), str(digits), "--store", str(store), "-q",
            "--chunk-rows", "16", "--workers", "1"]
    assert runner.invoke(app, args).exit_code == 0
    before = _store_bytes(store)
    _edit_sidecar(models, mean=[0.3])
    r = runner.invoke(app, args)
    assert r.exit_code == 1 and "Error: split 'train' already holds 60 rows of 'fmnist-resnet' made differently " \
        "(preprocess.mean [0.286] → [0.3]); pass --overwrite to replace them" in r.stderr
    assert _store_bytes(store) == before
    r = runner.invoke(app, args + ["--overwrite"])
    assert r.exit_code == 0, r.output
    fresh = tmp_path / "fresh.zarr"
    assert runner.invoke(app, [*args[:4], str(fresh), *args[5:]]).exit_code == 0
    _same_store(store, fresh)
    assert FeatureStore.open(store).info("train", NET)["provenance"]["preprocess"]["mean"] == [0.3]


def test_other_images_for_a_paired_split_are_refused(tmp_path, digits):
    store = tmp_path / "s.zarr"
    extract_features(BUNDLED_MODELS / f"{NET}.backbone.onnx", open_images(digits), store, split="train",
                     workers=1, progress=False)
    extract_features(BUNDLED_MODELS / "fmnist-inception.backbone.onnx", open_images(digits), store, split="train",
                     workers=1, progress=False)
    before = _store_bytes(store)
    other = open_images(digits).subset(list(range(59, -1, -1)))  # the same images, reversed
    with pytest.raises(StoreError, match=r"holds features of fmnist-inception for other images or labels \(row 0: "
                                         r"'images.npz:0' there, 'images.npz:59' here\)"):
        extract_features(BUNDLED_MODELS / f"{NET}.backbone.onnx", other, store, split="train", overwrite=True,
                         workers=1, progress=False)
    assert _store_bytes(store) == before


def test_provenance_and_model_hashes_are_recorded(tmp_path, digits):
    store = tmp_path / "s.zarr"
    spec = NetworkSpec.for_model(BUNDLED_MODELS / f"{NET}.json")
    extract_features(spec.backbone_path, open_images(digits), store, split="train", augment=Augment(scale=(0.5, 1)),
                     views=2, seed=3, workers=1, progress=False)
    info = FeatureStore.open(store).info("train", NET)
    assert info["head_sha256"] == hashlib.sha256(spec.head_path.read_bytes()).hexdigest()
    assert info["backbone_sha256"] == info["model_sha256"] == hashlib.sha256(spec.backbone_path.read_bytes()).hexdigest()
    prov = info["provenance"]
    assert prov["augment"] == {"scale": [0.5, 1.0], "ratio": [0.75, 4 / 3], "flip": True, "centre_view": False,
                               "seed": 3}
    assert prov["preprocess"]["interpolation"] == "bilinear" and prov["views"] == 2 and prov["images"] == 60
    assert info["chunk_rows"] % 2 == 0  # whole images per chunk


# -- workers, views and decoding -------------------------------------------------------
def test_workers_do_not_change_a_byte_and_the_centre_view_is_the_plain_view(tmp_path):
    photos = _photos(tmp_path / "photos", 24)
    models = _models(tmp_path)
    _edit_sidecar(models, resize=32, interpolation="bicubic")
    backbone = models / f"{NET}.backbone.onnx"
    imgs = open_images(photos)
    aug = Augment(centre_view=True)
    kw = {"split": "train", "augment": aug, "views": 3, "seed": 1, "batch": 7, "chunk_rows": 9, "progress": False}
    extract_features(backbone, imgs, tmp_path / "one.zarr", workers=1, **kw)
    extract_features(backbone, imgs, tmp_path / "two.zarr", workers=2, **kw)
    _same_store(tmp_path / "one.zarr", tmp_path / "two.zarr")
    extract_features(backbone, imgs, tmp_path / "plain.zarr", split="train", workers=2, progress=False)
    views = FeatureStore.open(tmp_path / "one.zarr").features("train", NET)[:]
    plain = FeatureStore.open(tmp_path / "plain.zarr").features("train", NET)[:]
    np.testing.assert_array_equal(views[0::3], plain)  # view 0 of every image is the centre view
    assert not np.array_equal(views[1::3], plain)
    # and the plain features are the backbone's on the sidecar's preprocessing, image by image
    spec = NetworkSpec.for_model(models / f"{NET}.json")
    direct = Backbone(backbone)(np.stack([spec.preprocess(imgs.load(i)) for i in range(len(imgs))]))
    np.testing.assert_allclose(plain, direct, rtol=1e-5, atol=1e-5)


# -- kills -----------------------------------------------------------------------------
def _args(backbone: Path, images: Path, store: Path, *extra: str) -> list[str]:
    return [sys.executable, "-m", "lintwin.cli", "extract", str(backbone), str(images), "--store", str(store),
            "--chunk-rows", "10", "--batch", "5", "--workers", "1", "-q", *extra]


def _rows_written(store: Path, split: str = "train", name: str = NET) -> int:
    try:
        meta = json.loads((store / split / "features" / name / "zarr.json").read_text())
        return int(meta["attributes"]["rows_written"])
    except (OSError, ValueError, KeyError):
        return -1


def _state(store: Path) -> str:
    done = _rows_written(store)
    return "no array" if done < 0 else "empty array" if done == 0 else "complete" if done == 80 else "part-written"


def test_twenty_random_kills_each_resumed_give_the_uninterrupted_store(tmp_path, digits):
    """SIGKILL of a real extraction process at random moments (store and array creation included); a plain
    rerun finishes the job, with the same bytes as a run that was never killed.

    The processes start from a fork server that has imported lintwin, so a run takes a fraction of a
    second and the kills land in its work rather than in interpreter start-up.
    """
    ctx = multiprocessing.get_context("forkserver")
    ctx.set_forkserver_preload(["lintwin.networks.extract"])
    backbone = BUNDLED_MODELS / f"{NET}.backbone.onnx"
    imgs = open_images(digits).subset(range(40))
    kw = {"split": "train", "augment": Augment(), "views": 2, "seed": 4, "batch": 5, "chunk_rows": 10, "workers": 1,
          "progress": False}

    def start(store: Path) -> multiprocessing.process.BaseProcess:
        proc = ctx.Process(target=extract_features, args=(backbone, imgs, store), kwargs=kw)
        proc.start()
        return proc

    ref = tmp_path / "ref.zarr"
    proc = start(ref)  # also starts the fork server
    proc.join()
    assert proc.exitcode == 0
    t0 = time.perf_counter()
    proc = start(tmp_path / "timed.zarr")
    while not (tmp_path / "timed.zarr").exists() and proc.exitcode is None:
        time.sleep(0.0002)
    created = time.perf_counter() - t0
    proc.join()
    whole = time.perf_counter() - t0  # how long one run takes, start to finish
    _same_store(ref, tmp_path / "timed.zarr")
    rng = np.random.default_rng(20)
    states = []
    for k in range(20):
        store = tmp_path / f"k{k}.zarr"
        proc = start(store)
        if k % 2:  # any moment of the run
            time.sleep(float(rng.uniform(0, whole)))
        else:  # a moment of the writing phase: from the store's creation on
            while not store.exists() and proc.exitcode is None:
                time.sleep(0.0002)
            time.sleep(float(rng.uniform(0, whole - created)))
        proc.kill()  # SIGKILL
        proc.join()
        states.append(_state(store) if proc.exitcode == -signal.SIGKILL else "finished")
        extract_features(backbone, imgs, store, **kw)  # the plain rerun
        _same_store(ref, store)
    interrupted = [s for s in states if s not in ("complete", "finished")]
    assert len(interrupted) >= 10, states  # most kills landed before the run could finish
    print("states left by the kills:", {s: states.count(s) for s in sorted(set(states))})


def test_resume_with_an_edited_sidecar_is_refused(tmp_path, digits):
    """Mean/std edited between a kill and the rerun: refused, store untouched; --overwrite starts afresh."""
    models = _models(tmp_path)
    backbone = models / f"{NET}.backbone.onnx"
    big = tmp_path / "big.npz"
    with np.load(digits) as z:
        np.savez(big, images=np.tile(z["images"], (20, 1, 1)), labels=np.tile(z["labels"], 20))
    store = tmp_path / "s.zarr"
    kw = {"split": "train", "batch": 5, "chunk_rows": 10, "workers": 1, "progress": False}
    proc = multiprocessing.get_context("forkserver").Process(target=extract_features,
                                                             args=(backbone, open_images(big), store), kwargs=kw)
    proc.start()
    deadline = time.time() + 120
    while _rows_written(store) < 100 and proc.exitcode is None and time.time() < deadline:
        time.sleep(0.002)
    proc.kill()  # SIGKILL
    proc.join()
    done = _rows_written(store)
    assert 0 < done < 1200, "the run should have been killed part-way"
    before = _store_bytes(store)
    _edit_sidecar(models, mean=[0.5], std=[0.25])
    out = subprocess.run(_args(backbone, big, store), capture_output=True, text=True, check=False)
    assert out.returncode == 1 and out.stderr.count("\n") == 1
    assert (f"Error: split 'train' already holds {done} rows of 'fmnist-resnet' made differently "
            "(preprocess.mean [0.286] → [0.5]; preprocess.std [0.353] → [0.25])") in out.stderr
    assert _store_bytes(store) == before and _rows_written(store) == done
    _edit_sidecar(models, mean=[0.286], std=[0.353])  # put back: a plain rerun resumes
    out = subprocess.run(_args(backbone, big, store), capture_output=True, text=True, check=False)
    assert out.returncode == 0 and f"(resumed at row {done})" in out.stdout, out.stderr
    extract_features(backbone, open_images(big), tmp_path / "fresh.zarr", **kw)
    _same_store(store, tmp_path / "fresh.zarr")
    _edit_sidecar(models, mean=[0.5], std=[0.25])  # and --overwrite starts afresh with the new one
    s = extract_features(backbone, open_images(big), store, overwrite=True, **kw)
    assert s.resumed_from == 0
    extract_features(backbone, open_images(big), tmp_path / "fresh2.zarr", **kw)
    _same_store(store, tmp_path / "fresh2.zarr")


def test_an_empty_array_left_by_a_kill_is_replaced_by_a_plain_rerun(tmp_path, digits):
    """The state a kill between creating an array and writing its first chunk leaves, with other settings."""
    store = tmp_path / "s.zarr"
    s = FeatureStore.create(store)
    s.open_features_for_write("train", NET, rows=60, dim=128, chunk_rows=7, source="another run",
                              ids=[f"x{i}" for i in range(60)])
    s.close()
    extract_features(BUNDLED_MODELS / f"{NET}.backbone.onnx", open_images(digits), store, split="train",
                     workers=1, progress=False)
    fresh = tmp_path / "fresh.zarr"
    extract_features(BUNDLED_MODELS / f"{NET}.backbone.onnx", open_images(digits), fresh, split="train",
                     workers=1, progress=False)
    _same_store(store, fresh)


def test_views_without_augment_and_empty_sources_are_refused(tmp_path, digits):
    with pytest.raises(LintwinError, match="views > 1 needs augment"):
        extract_features(BUNDLED_MODELS / f"{NET}.backbone.onnx", open_images(digits), tmp_path / "s.zarr",
                         split="train", views=2, progress=False)
    with pytest.raises(ModelError, match="no ONNX model at"):
        extract_features(tmp_path / "none.backbone.onnx", open_images(digits), tmp_path / "s.zarr", split="train",
                         sidecar=BUNDLED_MODELS / f"{NET}.json", progress=False)
    assert not (tmp_path / "s.zarr").exists()


def test_an_unlabelled_folder_stores_ids_and_no_labels(tmp_path):
    photos = _photos(tmp_path / "photos", 6)
    flat = tmp_path / "flat"
    flat.mkdir()
    for f in sorted(photos.rglob("*.jpg")):
        shutil.copy(f, flat / f.name)
    models = _models(tmp_path)
    _edit_sidecar(models, resize=28, interpolation="lanczos")
    extract_features(models / f"{NET}.backbone.onnx", open_images(flat), tmp_path / "s.zarr", split="pool",
                     workers=1, progress=False)
    s = FeatureStore.open(tmp_path / "s.zarr")
    assert s.labels("pool") is None and s.ids("pool").tolist() == sorted(f.name for f in flat.iterdir())
    assert s.features("pool", NET).shape == (6, 128)


@pytest.mark.skipif(not (DEFAULT_FASHION_MNIST / "t10k-images-idx3-ubyte.gz").is_file(),
                    reason="Fashion-MNIST is not installed (apt-get install dataset-fashion-mnist)")
def test_bench_extract_reports_against_the_backbone(tmp_path):
    proc = subprocess.run([sys.executable, str(ROOT / "bench" / "bench_extract.py"), "--fashion", "600",
                           "--photos", str(tmp_path / "none"), "--workers", "1,2", "--out", str(tmp_path / "r")],
                          capture_output=True, text=True, timeout=300, check=False)
    assert proc.returncode == 0, proc.stderr[-2000:]
    rows = json.loads((tmp_path / "r.json").read_text())["rows"]
    assert [r["workers"] for r in rows] == [1, 2] and all(r["images"] == 600 for r in rows)
    assert all(r["extract_img_s"] > 0 and r["ratio"] == r["extract_img_s"] / r["backbone_img_s"] for r in rows)
    assert "backbone img/s" in (tmp_path / "r.txt").read_text()
