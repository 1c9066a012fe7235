"""``lintwin check`` and the read path find deleted, truncated, swapped and tampered chunks."""

import shutil

import numpy as np
import pytest
from typer.testing import CliRunner

from lintwin import FeatureStore, StoreError
from lintwin.cli import app
from lintwin.storage.check import check_store
from lintwin.storage.synthetic import write_synthetic_store

runner = CliRunner()


@pytest.fixture
def store(tmp_path):
    path = tmp_path / "s.zarr"
    write_synthetic_store(path, train=1000, val=300, dim_a=16, dim_b=8, chunk_rows=256)
    s = FeatureStore.create(path)
    s.set_labels("val", np.arange(300) % 7)
    arr = s.open_features_for_write("test", "A", rows=300, dim=4, ids=[f"img{i}.png" for i in range(300)])
    FeatureStore.write_rows(arr, 0, np.ones((300, 4), np.float32))
    s.set_labels("test", np.arange(300) % 7)
    s.close()
    return path


def _chunk(path, split, net, k):
    return path / split / "features" / net / "c" / str(k) / "0"


def _check_cli(path):
    r = runner.invoke(app, ["check", str(path), "-q"])
    return r.exit_code, r.stdout, r.stderr


def test_intact_store_passes(store):
    report = check_store(store)
    assert report.ok and report.arrays == 8 and report.chunks == 4 + 4 + 2 + 2 + 1 + 1 + 1 + 1
    code, out, err = _check_cli(store)
    assert code == 0 and err == "" and "8 arrays, 16 chunks, all ok" in out


@pytest.mark.parametrize("damage, expected", [
    ("delete", "train/features/A chunk 2 (rows 512..767): missing"),
    ("truncate", "train/features/A chunk 2 (rows 512..767): is not the chunk written there"),
    ("swap", "train/features/A chunk 2 (rows 512..767): is not the chunk written there"),
    ("flip", "train/features/A chunk 2 (rows 512..767): does not decode (ValueError: Stored and computed checksum"),
])
def test_check_finds_a_damaged_chunk(store, damage, expected):
    target = _chunk(store, "train", "A", 2)
    data = target.read_bytes()
    if damage == "delete":
        target.unlink()
    elif damage == "truncate":
        target.write_bytes(data[: len(data) // 2])
    elif damage == "swap":
        shutil.copyfile(_chunk(store, "train", "A", 1), target)  # a valid chunk, in the wrong place
    else:  # one flipped byte inside the compressed payload, checksum trailer kept
        target.write_bytes(data[:20] + bytes([data[20] ^ 0xFF]) + data[21:])
    report = check_store(store)
    assert not report.ok
    assert any(p.startswith(expected) for p in report.problems), report.problems
    assert len(report.problems) == 1  # the other 15 chunks are fine
    code, out, err = _check_cli(store)
    assert code == 1
    assert err.count("\n") == 1 and err.startswith("Error: 1 problem(s) in ") and "Traceback" not in err
    assert "train/features/A: 1000 rows x 16, 4 chunk(s) of 256 rows, BAD" in out
    assert "val/features/B: 300 rows x 8, 2 chunk(s) of 256 rows, ok" in out
    # the read path refuses the same damage, with one clear error, instead of reading zeros or other rows
    s = FeatureStore.open(store)
    with pytest.raises(StoreError, match="features of 'A' in split 'train'"):
        for _ in s.iter_blocks("train", ["A", "B"]):
            pass


def test_check_finds_damaged_labels_and_ids(store):
    (store / "test" / "labels" / "c" / "0").unlink()
    ids = store / "test" / "ids" / "c" / "0"
    ids.write_bytes(ids.read_bytes()[:-1])
    report = check_store(store)
    assert any(p.startswith("test/labels chunk 0 (rows 0..299): missing") for p in report.problems)
    assert any(p.startswith("test/ids chunk 0 (rows 0..299):") for p in report.problems)
    s = FeatureStore.open(store)
    with pytest.raises(StoreError, match=r"labels of split 'test' are damaged: chunk 0 \(rows 0..299\) missing"):
        s.labels("test")
    with pytest.raises(StoreError, match="ids of split 'test' are damaged"):
        s.ids("test")


def test_check_reports_incomplete_and_damaged_metadata(store):
    s = FeatureStore.open(store, mode="r+")
    arr = s.open_features_for_write("extra", "C", rows=1000, dim=4, chunk_rows=256, source="x")
    FeatureStore.write_rows(arr, 0, np.ones((300, 4), np.float32))
    s.close()
    meta = store / "val" / "features" / "B" / "zarr.json"
    meta.write_text(meta.read_text()[:-10])
    report = check_store(store)
    assert "extra/features/C: incomplete, 300 of 1000 rows written" in report.problems
    assert any(p.startswith("val/features/B: features of 'B' in split 'val': metadata") and "is damaged" in p
               for p in report.problems)


def test_version_and_a_help_line_for_every_option():
    import typer.main

    from lintwin import __version__

    r = runner.invoke(app, ["--version"])
    assert r.exit_code == 0 and r.stdout.strip() == f"lintwin {__version__}"
    group = typer.main.get_command(app)
    assert all(p.help for p in group.params)
    assert {"solve", "compare", "extract", "similarity", "study", "stitch", "check"} <= set(group.commands)
    for name, cmd in group.commands.items():
        missing = [p.name for p in cmd.params if not getattr(p, "help", None)]
        assert not missing, f"{name}: options without help: {missing}"
