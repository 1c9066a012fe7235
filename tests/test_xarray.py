"""Feature stores open with xarray: dimension names, the sample ids as the rows' index, labels as a coordinate.

xarray reads exactly the numbers lintwin reads (no fill-value masking, no attribute that xarray
decodes), stores of older versions gain their dimension names with ``lintwin upgrade`` (metadata
only), and the metadata allow-list refuses dimension names and decoded attributes lintwin never writes.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest
import xarray as xr
from conftest import SHARED
from typer.testing import CliRunner

from lintwin import FeatureStore, StoreError
from lintwin.cli import app
from lintwin.experiments.demo import BUNDLED_MODELS
from lintwin.storage.check import check_store
from lintwin.storage.locks import WriteLocks

runner = CliRunner()
CLOTHES = SHARED / "data" / "clothing-small" / "test"


def _open_tree(path: Path) -> xr.DataTree:
    with warnings.catch_warnings():  # zarr notes the lock folder, which is not part of the hierarchy
        warnings.filterwarnings("ignore", message="Object at .lintwin-locks")
        return xr.open_datatree(path, engine="zarr", consolidated=False)


def _adversarial_store(path: Path) -> dict[str, np.ndarray]:
    """Zeros (zarr's fill value), a row of zeros, tiny, huge and negative values, label 0, unicode ids."""
    rng = np.random.default_rng(0)
    a = rng.standard_normal((70, 5)).astype(np.float32)
    a[3] = 0.0
    a[:, 1] = 0.0
    a[10, 2], a[11, 2], a[12, 2] = 1e-38, 3.0e38, -7.5
    b = np.maximum(rng.standard_normal((70, 3)), 0).astype(np.float32)
    ids = np.array([f"img-{i:03d}-é.png" for i in range(70)])
    labels = np.arange(70) % 4
    s = FeatureStore.create(path)
    for name, x in (("net.a", a), ("B", b)):
        arr = s.open_features_for_write("train", name, rows=70, dim=x.shape[1], chunk_rows=16, ids=ids.tolist())
        FeatureStore.write_rows(arr, 0, x)
    s.set_labels("train", labels)
    s.close()
    return {"net.a": a, "B": b, "ids": ids, "labels": labels}


def test_xarray_reads_the_numbers_ids_and_labels_lintwin_reads(tmp_path):
    path = tmp_path / "s.zarr"
    want = _adversarial_store(path)
    tree = _open_tree(path)
    feats = tree["train/features"].to_dataset()
    assert feats["net.a"].dims == ("ids", "net.a.unit") and feats["B"].dims == ("ids", "B.unit")
    assert np.array_equal(feats["net.a"].values, want["net.a"]) and feats["net.a"].dtype == np.float32
    assert np.array_equal(feats["B"].values, want["B"])
    assert list(feats.indexes["ids"]) == want["ids"].tolist()  # the ids index is handed down to the features
    split = tree["train"].to_dataset()
    assert set(split.coords) == {"ids", "labels"} and not split.data_vars
    assert np.array_equal(split["labels"].values, want["labels"])
    # one sample by its id, as a user would pick it
    assert np.array_equal(feats["net.a"].sel(ids="img-003-é.png").values, np.zeros(5, np.float32))
    # open_zarr on a split and on its features: the same values
    with_labels = xr.open_zarr(path, group="train", consolidated=False)
    assert list(with_labels["ids"].values) == want["ids"].tolist()
    alone = xr.open_zarr(path, group="train/features", consolidated=False)
    assert np.array_equal(alone["B"].values, want["B"])
    s = FeatureStore.open(path)
    assert np.array_equal(s.features("train", "net.a")[:], feats["net.a"].values)


@pytest.mark.skipif(not CLOTHES.is_dir(), reason=f"clothing photos not found at {CLOTHES}")
def test_a_store_extracted_from_real_photos_opens_with_xarray(tmp_path):
    images = tmp_path / "photos"
    for cls in ("hat", "dress", "shoes"):
        (images / cls).mkdir(parents=True)
        for f in sorted((CLOTHES / cls).glob("*.jpg"))[:6]:
            shutil.copy(f, images / cls / f.name)
    store = tmp_path / "real.zarr"
    r = runner.invoke(app, ["extract", str(BUNDLED_MODELS / "fmnist-resnet.backbone.onnx"), str(images), "--store",
                            str(store), "--split", "test", "--workers", "1", "-q"])
    assert r.exit_code == 0, r.output
    s = FeatureStore.open(store)
    feats = _open_tree(store)["test/features"].to_dataset()
    split = xr.open_zarr(store, group="test", consolidated=False)
    assert np.array_equal(feats["fmnist-resnet"].values, s.features("test", "fmnist-resnet")[:])
    assert list(feats.indexes["ids"]) == s.ids("test").tolist() and len(s.ids("test")) == 18
    assert np.array_equal(split["labels"].values, s.labels("test"))
    assert sorted(set(split["labels"].values.tolist())) == [0, 1, 2]


def _strip_dimensions(path: Path) -> None:
    """Make ``path`` look as a store of an older lintwin: no dimension names, labels without coordinates."""
    for meta_path in path.rglob("zarr.json"):
        meta = json.loads(meta_path.read_text())
        if meta.get("node_type") == "array":
            meta.pop("dimension_names", None)
            meta["attributes"].pop("coordinates", None)
            meta_path.write_text(json.dumps(meta))


def _chunk_bytes(path: Path) -> dict[str, str]:
    return {str(p.relative_to(path)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(path.rglob("*")) if p.is_file() and p.name != "zarr.json" and ".lintwin-locks" not in p.parts}


def test_upgrade_gives_an_older_store_its_dimension_names_and_nothing_else(tmp_path):
    path = tmp_path / "old.zarr"
    want = _adversarial_store(path)
    _strip_dimensions(path)
    with pytest.raises(KeyError, match="dimension_names"):
        _open_tree(path)
    assert np.array_equal(FeatureStore.open(path).features("train", "B")[:], want["B"])  # lintwin reads it as it is
    chunks = _chunk_bytes(path)
    r = runner.invoke(app, ["upgrade", str(path)])
    assert r.exit_code == 0 and "recorded dimension names in 4 array(s)" in r.output, r.output
    assert _chunk_bytes(path) == chunks
    assert check_store(path, progress=False).ok
    feats = _open_tree(path)["train/features"].to_dataset()
    assert np.array_equal(feats["net.a"].values, want["net.a"])
    assert list(feats.indexes["ids"]) == want["ids"].tolist()
    r = runner.invoke(app, ["upgrade", str(path)])
    assert r.exit_code == 0 and "already" in r.output


def test_upgrade_refuses_a_store_being_written_and_changes_nothing(tmp_path):
    path = tmp_path / "old.zarr"
    _adversarial_store(path)
    _strip_dimensions(path)
    before = {p: p.read_bytes() for p in path.rglob("zarr.json")}
    held = WriteLocks(path)
    held.acquire("train", "labels")
    r = subprocess.run([sys.executable, "-m", "lintwin.cli", "upgrade", str(path)], capture_output=True, text=True,
                       check=False)
    held.release_all()
    assert r.returncode == 1 and r.stderr.startswith("Error: another process is writing 'labels'"), r.stderr
    assert r.stderr.count("\n") == 1 and {p: p.read_bytes() for p in path.rglob("zarr.json")} == before


@pytest.mark.parametrize(("edit", "message"), [
    (lambda m: m.update(dimension_names=["sample", "x"]), "not an array lintwin wrote"),
    (lambda m: m["attributes"].update(scale_factor=2.0), "scale_factor would make xarray decode"),
    (lambda m: m["attributes"].update(units="seconds"), "units would make xarray decode"),
    (lambda m: m["attributes"].update(_FillValue=0.0), "_FillValue would make xarray decode"),
])
def test_dimension_names_and_decoded_attributes_are_allow_listed(tmp_path, edit, message):
    path = tmp_path / "s.zarr"
    _adversarial_store(path)
    meta_path = path / "train" / "features" / "B" / "zarr.json"
    meta = json.loads(meta_path.read_text())
    edit(meta)
    meta_path.write_text(json.dumps(meta))
    with pytest.raises(StoreError, match=message):
        FeatureStore.open(path).features("train", "B")


def test_writers_refuse_what_xarray_would_misread(tmp_path):
    s = FeatureStore.create(tmp_path / "s.zarr")
    with pytest.raises(StoreError, match="may not set scale_factor"):
        s.open_features_for_write("train", "A", rows=4, dim=2, extra_attrs={"scale_factor": 3})
    for name in ("ids", "labels"):
        with pytest.raises(StoreError, match=f"network name '{name}' is reserved"):
            s.open_features_for_write("train", name, rows=4, dim=2)
    assert s.splits() == []
