import numpy as np
import pytest
import zarr

from lintwin import FeatureStore, ShapeError, StoreError, accumulate_arrays, accumulate_store
from lintwin.synthetic import SyntheticPair, write_synthetic_store


def test_layout_and_metadata(tmp_path):
    store = write_synthetic_store(tmp_path / "s.zarr", train=1000, val=300, dim_a=16, dim_b=8,
                                  names=("inc", "res"), chunk_rows=256)
    s = FeatureStore.open(tmp_path / "s.zarr")
    assert s.splits() == ["train", "val"]
    assert s.networks("train") == ["inc", "res"]
    info = s.info("val", "inc")
    assert info["dim"] == 16 and info["rows"] == 300 and info["rows_written"] == 300 and info["chunk_rows"] == 256
    arr = zarr.open_array(str(tmp_path / "s.zarr" / "train" / "features" / "res"), mode="r")
    assert arr.shape == (1000, 8) and arr.chunks == (256, 8) and arr.dtype == np.float32
    gen = SyntheticPair(16, 8, seed=0)
    np.testing.assert_array_equal(s.features("val", "res")[:], gen.arrays(300, start=1000)[1])
    assert store.path == s.path


def test_iter_blocks_uneven_and_unaligned(tmp_path):
    write_synthetic_store(tmp_path / "s.zarr", train=1000, dim_a=16, dim_b=8, chunk_rows=256)
    s = FeatureStore.open(tmp_path / "s.zarr")
    whole = s.features("train", "A")[:]
    got = list(s.iter_blocks("train", ["A", "B"], block_rows=300))
    assert [lo for lo, _ in got] == [0, 300, 600, 900]
    assert got[-1][1][0].shape == (100, 16)
    np.testing.assert_array_equal(np.concatenate([blk[0] for _, blk in got]), whole)
    m = accumulate_store(s, "A", "B", block_rows=300, progress=False)
    ref = accumulate_arrays(whole, s.features("train", "B")[:], precision="float64")
    assert np.abs(m.comoment - ref.comoment).max() / np.abs(ref.comoment).max() < 5e-6


def test_labels_and_ids(tmp_path):
    s = FeatureStore.create(tmp_path / "s.zarr")
    arr = s.open_features_for_write("val", "A", rows=4, dim=2)
    FeatureStore.write_rows(arr, 0, np.ones((4, 2), np.float32))
    s.set_labels("val", np.array([3, 1, 4, 1]))
    s.set_ids("val", ["a.jpg", "b.jpg", "c.jpg", "d.jpg"])
    s2 = FeatureStore.open(tmp_path / "s.zarr")
    np.testing.assert_array_equal(s2.labels("val"), [3, 1, 4, 1])
    assert s2.ids("val").tolist() == ["a.jpg", "b.jpg", "c.jpg", "d.jpg"]
    with pytest.raises(StoreError, match="already has different labels"):
        s2.set_labels("val", np.array([0, 0, 0, 0]))
    with pytest.raises(ShapeError, match="has 4 rows but 3 labels"):
        s2.set_labels("val", np.array([0, 0, 0]))


def test_bad_stores_are_refused(tmp_path):
    with pytest.raises(StoreError, match="no feature store at"):
        FeatureStore.open(tmp_path / "missing.zarr")
    zarr.open_group(str(tmp_path / "plain.zarr"), mode="w")
    with pytest.raises(StoreError, match="is not a lintwin feature store"):
        FeatureStore.open(tmp_path / "plain.zarr")
    (tmp_path / "file.txt").write_text("hello")
    with pytest.raises(StoreError, match="not a lintwin feature store"):
        FeatureStore.open(tmp_path / "file.txt")


def test_half_written_store_is_refused_and_resumable(tmp_path):
    s = FeatureStore.create(tmp_path / "s.zarr")
    arr = s.open_features_for_write("train", "A", rows=1000, dim=4, chunk_rows=256, source="x")
    FeatureStore.write_rows(arr, 0, np.ones((512, 4), np.float32))
    with pytest.raises(StoreError, match=r"features of 'A' in split 'train' are incomplete \(512 of 1000"):
        s.features("train", "A")
    # Reopening with the same source resumes from the written prefix.
    again = FeatureStore.open(tmp_path / "s.zarr", mode="r+").open_features_for_write(
        "train", "A", rows=1000, dim=4, chunk_rows=256, source="x")
    assert FeatureStore.rows_written(again) == 512
    with pytest.raises(StoreError, match="expected row 512"):
        FeatureStore.write_rows(again, 0, np.ones((10, 4), np.float32))
    FeatureStore.write_rows(again, 512, np.ones((488, 4), np.float32))
    assert s.features("train", "A").shape == (1000, 4)
    with pytest.raises(StoreError, match="pass overwrite"):
        s.open_features_for_write("train", "A", rows=1000, dim=4, source="other")


def test_unknown_names_and_row_mismatch(tmp_path):
    s = write_synthetic_store(tmp_path / "s.zarr", train=100, dim_a=4, dim_b=3)
    with pytest.raises(StoreError, match=r"network 'C' not in split 'train' .*networks: A, B"):
        s.features("train", "C")
    with pytest.raises(StoreError, match=r"split 'test' not in store .*splits: train"):
        s.features("test", "A")
    with pytest.raises(ShapeError, match="already holds 100 rows of 'A'"):
        s.open_features_for_write("train", "C", rows=99, dim=3)
