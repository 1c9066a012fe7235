"""Features out of a store and back in: npy, npz, HDF5 and safetensors, with sample ids and labels both ways.

Every format round-trips the float32 features bit for bit, the ids (unicode included) and the
labels; an import pairs with the split it came from and is refused by a split of other samples;
the formats of the ``formats`` extra are refused in one line naming it when their package is missing.
"""

from __future__ import annotations

import json
import sys

import h5py
import numpy as np
import pytest
from safetensors import safe_open
from typer.testing import CliRunner

from lintwin import FeatureStore
from lintwin.cli import app
from lintwin.errors import LintwinError
from lintwin.storage.export import export_features
from lintwin.storage.importer import import_features

runner = CliRunner()
FORMATS = ["npy", "npz", "hdf5", "safetensors"]
ROWS = 150


def _store(path, *, ids=True, labels=True, chunk_rows=32):
    """A store with awkward values: zeros, a zero row, huge, tiny (subnormal) and negative features."""
    rng = np.random.default_rng(4)
    a = rng.standard_normal((ROWS, 7)).astype(np.float32)
    a[5] = 0.0
    a[6, 1], a[7, 2], a[8, 3] = 3.0e38, 1e-40, -0.0
    id_list = [f"photos/été/{k:04d}.jpg" for k in range(ROWS)] if ids else None
    s = FeatureStore.create(path)
    arr = s.open_features_for_write("train", "A", rows=ROWS, dim=7, chunk_rows=chunk_rows, ids=id_list)
    FeatureStore.write_rows(arr, 0, a)
    lab = np.arange(ROWS) % 5 if labels else None
    if labels:
        s.set_labels("train", lab)
    s.close()
    return a, id_list, lab


@pytest.mark.parametrize("fmt", FORMATS)
def test_every_format_round_trips_features_ids_and_labels(tmp_path, fmt):
    a, ids, labels = _store(tmp_path / "s.zarr")
    out = tmp_path / f"A.{fmt}"
    paths = export_features(tmp_path / "s.zarr", "A", fmt=fmt, out=out)
    assert set(paths) == ({"features", "ids", "labels"} if fmt == "npy" else {"features"})
    extra = ["--ids", str(paths["ids"]), "--labels", str(paths["labels"])] if fmt == "npy" else []
    r = runner.invoke(app, ["import", str(out), "--store", str(tmp_path / "t.zarr"), "--name", "A", *extra])
    assert r.exit_code == 0 and "named by their ids, with labels" in r.output, r.output
    t = FeatureStore.open(tmp_path / "t.zarr")
    back = t.features("train", "A")[:]
    assert back.dtype == np.float32 and back.tobytes() == a.tobytes()  # bit for bit, -0.0 and subnormals too
    assert t.ids("train").tolist() == ids and np.array_equal(t.labels("train"), labels)
    # imported beside the original, the rows pair with it: the same ids in the same order
    import_features(tmp_path / "s.zarr", out, name="A2", ids=paths.get("ids"), labels=paths.get("labels"))
    s = FeatureStore.open(tmp_path / "s.zarr")
    s.check_paired("train", ["A", "A2"])
    _, blocks = next(iter(s.iter_blocks("train", ["A", "A2"])))
    assert np.array_equal(blocks[1][:5], a[:5])


def test_what_each_format_holds_for_other_tools(tmp_path):
    a, ids, labels = _store(tmp_path / "s.zarr")
    export_features(tmp_path / "s.zarr", "A", fmt="hdf5", out=tmp_path / "A.h5")
    with h5py.File(tmp_path / "A.h5", "r") as f:
        assert np.array_equal(f["features"][()], a) and f["features"].dtype == np.float32
        assert f["ids"].asstr()[()].tolist() == ids and np.array_equal(f["labels"][()], labels)
        assert f.attrs["network"] == "A" and f.attrs["split"] == "train" and len(f.attrs["ids_sha256"]) == 64
    export_features(tmp_path / "s.zarr", "A", fmt="safetensors", out=tmp_path / "A.safetensors")
    with safe_open(str(tmp_path / "A.safetensors"), framework="numpy") as f:
        assert np.array_equal(f.get_tensor("features"), a) and np.array_equal(f.get_tensor("labels"), labels)
        assert json.loads(f.metadata()["ids"]) == ids
    paths = export_features(tmp_path / "s.zarr", "A", fmt="npy", out=tmp_path / "A.npy")
    assert np.array_equal(np.load(paths["features"]), a) and np.load(paths["ids"]).tolist() == ids
    with np.load(export_features(tmp_path / "s.zarr", "A", fmt="npz", out=tmp_path / "A.npz")["features"]) as z:
        assert sorted(z.files) == ["features", "ids", "labels"] and np.array_equal(z["features"], a)


def test_a_split_without_ids_or_labels_exports_its_features_alone(tmp_path):
    _store(tmp_path / "s.zarr", ids=False, labels=False)
    paths = export_features(tmp_path / "s.zarr", "A", fmt="npy", out=tmp_path / "A.npy")
    assert set(paths) == {"features"} and not (tmp_path / "A.ids.npy").exists()
    import_features(tmp_path / "t.zarr", tmp_path / "A.npy", name="A")
    assert FeatureStore.open(tmp_path / "t.zarr").ids("train") is None


@pytest.mark.parametrize("fmt", ["hdf5", "safetensors"])
def test_ids_that_differ_from_the_splits_are_refused_and_nothing_changes(tmp_path, fmt):
    _store(tmp_path / "s.zarr")
    out = tmp_path / f"A.{fmt}"
    export_features(tmp_path / "s.zarr", "A", fmt=fmt, out=out)
    other = tmp_path / "o.zarr"
    s = FeatureStore.create(other)
    s.set_ids("train", [f"other/{k}" for k in range(ROWS)])
    s.close()
    before = sorted(p.read_bytes() for p in other.rglob("*") if p.is_file())
    with pytest.raises(LintwinError, match="different sample ids"):
        import_features(other, out, name="A")
    assert sorted(p.read_bytes() for p in other.rglob("*") if p.is_file()) == before


def test_an_existing_output_is_replaced_only_with_overwrite(tmp_path):
    a, _, _ = _store(tmp_path / "s.zarr")
    (tmp_path / "A.npz").write_text("mine")
    with pytest.raises(LintwinError, match="exists"):
        export_features(tmp_path / "s.zarr", "A", fmt="npz", out=tmp_path / "A.npz")
    assert (tmp_path / "A.npz").read_text() == "mine"
    export_features(tmp_path / "s.zarr", "A", fmt="npz", out=tmp_path / "A.npz", overwrite=True)
    with np.load(tmp_path / "A.npz") as z:
        assert np.array_equal(z["features"], a)


def test_the_default_output_is_named_after_the_network_and_split(tmp_path, monkeypatch):
    _store(tmp_path / "s.zarr")
    monkeypatch.chdir(tmp_path)
    r = runner.invoke(app, ["export", "s.zarr", "--name", "A", "--format", "hdf5"])
    assert r.exit_code == 0 and (tmp_path / "A.train.h5").is_file(), r.output


@pytest.mark.parametrize(("fmt", "module"), [("hdf5", "h5py"), ("safetensors", "safetensors")])
def test_a_missing_extra_is_named_in_one_line_before_anything_is_read(tmp_path, monkeypatch, fmt, module):
    _store(tmp_path / "s.zarr")
    monkeypatch.setitem(sys.modules, module, None)  # as after the main install alone: the import fails
    r = runner.invoke(app, ["export", str(tmp_path / "s.zarr"), "--name", "A", "--format", fmt,
                            "--out", str(tmp_path / "x")])
    assert r.exit_code == 1 and r.stderr.strip().splitlines() == [
        (f"Error: exporting to {fmt} needs the {module} package, which the main install leaves out: "
         "pip install 'lintwin[formats]'")], r.stderr
    assert not (tmp_path / "x").exists()
