import json
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import zarr

from lintwin import FeatureStore, ShapeError, StoreError, accumulate_arrays, accumulate_store
from lintwin.errors import LintwinError
from lintwin.storage.check import check_store
from lintwin.storage.importer import import_features
from lintwin.storage.synthetic import SyntheticPair, write_synthetic_store


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
    # a block's buffer is reused once the next block is asked for: keep copies
    got = [(lo, [b.copy() for b in blk]) for lo, blk in s.iter_blocks("train", ["A", "B"], block_rows=300)]
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


# -- integrity, untrusted stores, writers, names, pairing ---------------------------------------------


def test_every_array_has_crc32c_and_chunk_checksums(tmp_path):
    path = tmp_path / "s.zarr"
    write_synthetic_store(path, train=600, dim_a=4, dim_b=3, chunk_rows=256)
    s = FeatureStore.create(path)
    s.set_labels("train", np.zeros(600, np.int64))  # all-zero chunks must still be written
    s.close()
    for rel in ("train/features/A", "train/labels"):
        meta = json.loads((path / rel / "zarr.json").read_text())
        assert meta["codecs"][-1] == {"name": "crc32c"}
        chunk = meta["chunk_grid"]["configuration"]["chunk_shape"][0]
        assert len(meta["attributes"]["chunk_crc32c"]) == -(-600 // chunk)
    assert (path / "train" / "labels" / "c" / "0").is_file()
    np.testing.assert_array_equal(FeatureStore.open(path).labels("train"), np.zeros(600))


def test_zarr_v2_and_foreign_stores_are_refused(tmp_path):
    g = zarr.open_group(str(tmp_path / "v2.zarr"), mode="w", zarr_format=2)
    g.attrs["lintwin"] = {"format": "lintwin.store/2"}
    with pytest.raises(StoreError, match="is a zarr v2 store; lintwin opens only its own zarr v3 layout"):
        FeatureStore.open(tmp_path / "v2.zarr")
    # an array whose codecs lintwin did not write (e.g. numcodecs' pickle) is refused before zarr reads it
    path = tmp_path / "s.zarr"
    write_synthetic_store(path, train=100, dim_a=4, dim_b=3)
    meta_path = path / "train" / "features" / "A" / "zarr.json"
    meta = json.loads(meta_path.read_text())
    meta["codecs"].insert(1, {"name": "numcodecs.pickle", "configuration": {}})
    meta_path.write_text(json.dumps(meta))
    with pytest.raises(StoreError, match="not an array lintwin wrote"):
        FeatureStore.open(path).features("train", "A")


def test_numcodecs_cannot_unpickle():
    from numcodecs import pickles

    assert pickles.ALLOW_UNSAFE_PICKLE_DECODE is False
    codec = pickles.Pickle()
    with pytest.raises(Exception, match="disabled"):
        codec.decode(codec.encode(np.array(["x"], dtype=object)))


@pytest.mark.parametrize("bad", ["", "a/b", "..", "../x", "/abs", ".hidden", "a\nb", "tab\tname", "zarr.json",
                                 "x" * 129, "sp ace"])
def test_bad_names_are_refused_before_writing(tmp_path, bad):
    path = tmp_path / "s.zarr"
    write_synthetic_store(path, train=100, dim_a=4, dim_b=3)
    before = sorted(p.relative_to(path) for p in path.rglob("*"))
    s = FeatureStore.open(path, mode="r+")
    with pytest.raises(StoreError, match="name .* is not allowed"):
        s.open_features_for_write("train", bad, rows=100, dim=2)
    with pytest.raises(StoreError, match="split name .* is not allowed"):
        s.open_features_for_write(bad, "C", rows=100, dim=2)
    with pytest.raises(StoreError, match="is not allowed"):
        write_synthetic_store(path, train=100, dim_a=4, dim_b=3, names=("A", bad), overwrite=True)
    assert sorted(p.relative_to(path) for p in path.rglob("*")) == before
    assert s.networks("train") == ["A", "B"]


def test_synth_refuses_to_overwrite_without_asking(tmp_path):
    path = tmp_path / "s.zarr"
    write_synthetic_store(path, train=100, dim_a=4, dim_b=3, seed=0)
    first = FeatureStore.open(path).features("train", "A")[:]
    with pytest.raises(LintwinError, match=r"already holds features of A \[train\], B \[train\]; pass --overwrite"):
        write_synthetic_store(path, train=100, dim_a=4, dim_b=3, seed=1)
    np.testing.assert_array_equal(FeatureStore.open(path).features("train", "A")[:], first)
    write_synthetic_store(path, train=100, dim_a=4, dim_b=3, seed=1, overwrite=True)
    assert not np.array_equal(FeatureStore.open(path).features("train", "A")[:], first)


def test_extra_attrs_are_written_with_the_array_and_guard_resuming(tmp_path):
    s = FeatureStore.create(tmp_path / "s.zarr")
    extra = {"preprocessing": {"mean": [0.5], "std": [0.25]}, "images_sha256": "ab"}
    arr = s.open_features_for_write("train", "A", rows=300, dim=4, chunk_rows=100, source="x", extra_attrs=extra)
    meta = json.loads((tmp_path / "s.zarr" / "train" / "features" / "A" / "zarr.json").read_text())
    assert meta["attributes"]["preprocessing"] == extra["preprocessing"] and meta["attributes"]["rows_written"] == 0
    FeatureStore.write_rows(arr, 0, np.ones((100, 4), np.float32))
    assert s.info("train", "A")["images_sha256"] == "ab"
    # resuming with other preprocessing would splice rows: refused
    changed = {**extra, "preprocessing": {"mean": [0.4], "std": [0.25]}}
    with pytest.raises(StoreError, match="written differently; pass overwrite"):
        s.open_features_for_write("train", "A", rows=300, dim=4, chunk_rows=100, source="x", extra_attrs=changed)
    again = s.open_features_for_write("train", "A", rows=300, dim=4, chunk_rows=100, source="x", extra_attrs=extra)
    assert FeatureStore.rows_written(again) == 100
    with pytest.raises(StoreError, match="extra_attrs may not set rows_written"):
        s.open_features_for_write("train", "B", rows=300, dim=4, extra_attrs={"rows_written": 300})


def test_an_array_with_no_rows_written_never_blocks_a_later_run(tmp_path):
    """What a kill during array creation leaves (an array, nothing written) is replaced, not refused."""
    s = FeatureStore.create(tmp_path / "s.zarr")
    s.open_features_for_write("train", "A", rows=300, dim=4, source="first attempt")
    s.close()
    s = FeatureStore.open(tmp_path / "s.zarr", mode="r+")
    arr = s.open_features_for_write("train", "A", rows=300, dim=8, source="second attempt")
    FeatureStore.write_rows(arr, 0, np.ones((300, 8), np.float32))
    assert s.info("train", "A")["source"] == "second attempt" and s.features("train", "A").shape == (300, 8)


def test_overwrite_marks_the_old_array_incomplete_first(tmp_path):
    path = tmp_path / "s.zarr"
    ids = [f"img{i}.png" for i in range(300)]
    s = FeatureStore.create(path)
    for name, dim in (("A", 4), ("B", 3)):
        arr = s.open_features_for_write("train", name, rows=300, dim=dim, chunk_rows=100, source="old", ids=ids)
        FeatureStore.write_rows(arr, 0, np.ones((300, dim), np.float32))
    s.close()
    s = FeatureStore.open(path, mode="r+")
    arr = s.open_features_for_write("train", "A", rows=300, dim=4, chunk_rows=100, source="new", overwrite=True,
                                    ids=ids)
    FeatureStore.write_rows(arr, 0, np.zeros((100, 4), np.float32))
    with pytest.raises(StoreError, match=r"incomplete \(100 of 300 rows"):
        FeatureStore.open(path).features("train", "A")


def test_paired_check_refuses_rows_of_other_samples(tmp_path):
    path = tmp_path / "s.zarr"
    ids = [f"img{i}.png" for i in range(200)]
    s = FeatureStore.create(path)
    for name, order in (("A", ids), ("B", ids), ("C", ids[::-1])):
        if name == "C":
            with pytest.raises(StoreError, match="split 'train' already has different sample ids"):
                s.open_features_for_write("train", name, rows=200, dim=3, ids=order)
            continue
        arr = s.open_features_for_write("train", name, rows=200, dim=3, ids=order)
        FeatureStore.write_rows(arr, 0, np.ones((200, 3), np.float32))
    assert s.ids("train").tolist() == ids
    assert len(list(s.iter_blocks("train", ["A", "B"]))) == 1
    # an array of unknown rows (no ids) could never be paired with arrays of known rows: refused when written
    with pytest.raises(StoreError, match="names its rows .* without the ids of their rows"):
        s.open_features_for_write("train", "D", rows=200, dim=3)
    # and one written elsewhere without ids (here: its stamp cleared) is refused by the read path
    arr = s.open_features_for_write("train", "D", rows=200, dim=3, ids=ids)
    FeatureStore.write_rows(arr, 0, np.ones((200, 3), np.float32))
    arr.update_attributes({"ids_sha256": None})
    with pytest.raises(StoreError, match="written for different samples or sample orders"):
        list(s.iter_blocks("train", ["A", "D"]))
    with pytest.raises(StoreError, match="written for different samples"):
        accumulate_store(s, "D", "B", progress=False)


def test_deleted_chunk_is_refused_on_the_read_path(tmp_path):
    path = tmp_path / "s.zarr"
    write_synthetic_store(path, train=1000, dim_a=16, dim_b=8, chunk_rows=256)
    (path / "train" / "features" / "B" / "c" / "3" / "0").unlink()
    with pytest.raises(StoreError, match=r"'B' in split 'train' are damaged: chunk 3 \(rows 768..999\) missing"):
        accumulate_store(FeatureStore.open(path), "A", "B", progress=False)


_PAUSING_IMPORT = """
import sys

import zarr

from lintwin.errors import LintwinError
from lintwin.storage.importer import import_features
from lintwin.storage.store import FeatureStore

store, features, ids, point = sys.argv[1:5]


def pause():
    print("paused", flush=True)
    sys.stdin.readline()


if point == "locked":  # holds the array's lock; the old array is untouched
    lock = FeatureStore._lock

    def _lock(self, split, key):
        lock(self, split, key)
        if key == "features.A":
            pause()

    FeatureStore._lock = _lock
elif point == "deleted":  # zarr has just removed the old array's folder; the new one is not there yet
    delete_dir = zarr.storage.LocalStore.delete_dir

    async def _delete_dir(self, prefix):
        await delete_dir(self, prefix)
        if prefix.endswith("features/A"):
            pause()

    zarr.storage.LocalStore.delete_dir = _delete_dir
elif point == "writing":  # the new array holds its first chunk
    write_rows = FeatureStore.write_rows

    def _write_rows(arr, start, data):
        write_rows(arr, start, data)
        if start == 0 and arr.shape[1] == 8:
            pause()

    FeatureStore.write_rows = staticmethod(_write_rows)
try:
    import_features(store, features, name="A", overwrite=True, chunk_rows=1000, ids=ids)
    print("ok", flush=True)
except LintwinError as exc:
    print("refused", exc, flush=True)
"""


@pytest.mark.parametrize("point", ["locked", "deleted", "writing", "metadata-vanishing"])
def test_two_concurrent_overwriting_imports(tmp_path, point):
    """A second writer of an array that another process is replacing is refused with "another process is
    writing", at every step of the replacement, and a reader never gets a half-replaced array. The first
    writer is paused at each step (no timing involved), the others run meanwhile, then it finishes."""
    rng = np.random.default_rng(0)
    rows, ids = 3000, tmp_path / "ids.txt"
    ids.write_text("\n".join(f"img{i}.png" for i in range(rows)))
    files = []
    for k in range(3):
        files.append(tmp_path / f"f{k}.npy")
        np.save(files[-1], (rng.random((rows, 8)) + k).astype(np.float32))
    store = tmp_path / "s.zarr"
    import_features(store, files[0], name="A", chunk_rows=1000, ids=ids)
    import_features(store, files[0], name="B", chunk_rows=1000, ids=ids)
    script = tmp_path / "imp.py"
    script.write_text(_PAUSING_IMPORT)
    pause = "writing" if point == "metadata-vanishing" else point
    first = subprocess.Popen([sys.executable, str(script), str(store), str(files[1]), str(ids), pause],
                             stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    assert first.stdout.readline().strip() == "paused"
    meta = store / "train" / "features" / "A" / "zarr.json"
    if point == "metadata-vanishing":  # the instant between a reader listing the array and reading its metadata
        meta.rename(tmp_path / "aside.json")
    second = subprocess.run([sys.executable, str(script), str(store), str(files[2]), str(ids), "none"],
                            capture_output=True, text=True, timeout=120, check=False)
    assert second.stdout.startswith("refused another process is writing 'A' of split 'train'"), second
    if point == "locked":  # the old array is untouched so far: readers read it, whole
        np.testing.assert_array_equal(FeatureStore.open(store).features("train", "A")[:], np.load(files[0]))
    else:
        with pytest.raises(StoreError, match="another process is writing 'A' of split 'train'"):
            FeatureStore.open(store).features("train", "A")
    if point == "metadata-vanishing":
        (tmp_path / "aside.json").rename(meta)
    out = first.communicate("go\n", timeout=120)[0]
    assert first.returncode == 0 and out.strip().endswith("ok"), out
    np.testing.assert_array_equal(FeatureStore.open(store).features("train", "A")[:], np.load(files[1]))
    assert check_store(store).ok


def test_concurrent_writer_is_refused_while_another_holds_the_array(tmp_path):
    store = tmp_path / "s.zarr"
    s = FeatureStore.create(store)
    s.open_features_for_write("train", "A", rows=100, dim=2)  # holds the lock of train/A
    code = ("import sys; from lintwin import FeatureStore; from lintwin.errors import StoreError\n"
            "try:\n FeatureStore.open(sys.argv[1], mode='r+').open_features_for_write('train', 'A', rows=100, dim=2,"
            " overwrite=True)\nexcept StoreError as e:\n print(e)\n")
    out = subprocess.run([sys.executable, "-c", code, str(store)], capture_output=True, text=True, timeout=60,
                         check=False)
    assert out.returncode == 0 and "another process is writing 'A' of split 'train'" in out.stdout
    s.close()
    out = subprocess.run([sys.executable, "-c", code, str(store)], capture_output=True, text=True, timeout=60,
                         check=False)
    assert out.returncode == 0 and out.stdout == ""


_KILLABLE_IMPORT = """
import sys
from lintwin.storage.importer import import_features
print("ready", flush=True)
sys.stdin.readline()
import_features(sys.argv[1], sys.argv[2], name="A", chunk_rows=1024, labels=sys.argv[3])
"""


def _progress(store: Path) -> int:
    """-2: no store yet, -1: store but no array, else the rows_written the array's metadata shows."""
    try:
        meta = json.loads((store / "train" / "features" / "A" / "zarr.json").read_text())
        return int(meta["attributes"]["rows_written"])
    except (OSError, ValueError, KeyError):
        return -1 if store.exists() else -2


def test_imports_killed_at_random_moments_end_identical_to_an_uninterrupted_one(tmp_path):
    """Ten imports killed at random moments (as the store appears, as the array appears, while writing rows);
    rerunning each (without --overwrite) gives the same store as an import that was never interrupted."""
    rng = np.random.default_rng(3)
    rows = 60_000
    f, lab = tmp_path / "f.npy", tmp_path / "l.npy"
    np.save(f, rng.random((rows, 64)).astype(np.float32))
    np.save(lab, rng.integers(0, 10, rows))
    ref = FeatureStore.open(import_features(tmp_path / "ref.zarr", f, name="A", chunk_rows=1024, labels=lab).path)
    script = tmp_path / "imp.py"
    script.write_text(_KILLABLE_IMPORT)
    stores = [tmp_path / f"k{k}.zarr" for k in range(10)]
    targets = [-1, -1, 0, 0, 0] + sorted(rng.integers(1, rows, 5).tolist())  # kill once progress reaches these
    procs = [subprocess.Popen([sys.executable, str(script), str(s), str(f), str(lab)], stdin=subprocess.PIPE,
                              stdout=subprocess.PIPE, text=True) for s in stores]
    assert all(p.stdout.readline().strip() == "ready" for p in procs)
    for p in procs:
        p.stdin.write("go\n")
        p.stdin.flush()
    live, deadline = set(range(len(procs))), time.time() + 240
    while live and time.time() < deadline:
        for k in list(live):
            if procs[k].poll() is not None or _progress(stores[k]) >= targets[k]:
                procs[k].kill()
                procs[k].wait()
                live.discard(k)
        time.sleep(0.002)
    at_kill = [_progress(s) for s in stores]
    for s in stores:
        done = _progress(s) == rows and (s / "train" / "labels" / "zarr.json").exists()
        if not done:
            import_features(s, f, name="A", chunk_rows=1024, labels=lab)  # no --overwrite needed
        got = FeatureStore.open(s)
        np.testing.assert_array_equal(got.features("train", "A")[:], ref.features("train", "A")[:])
        np.testing.assert_array_equal(got.labels("train"), ref.labels("train"))
        assert check_store(s).ok
    assert sum(0 <= w < rows for w in at_kill) >= 5, at_kill  # most were killed part-way


def test_a_creation_killed_before_its_zarr_json_is_created_again(tmp_path):
    """zarr writes zarr.json through zarr.<uuid>.partial: a kill in between leaves only that file, and no store."""
    path = tmp_path / "s.zarr"
    path.mkdir()
    (path / "zarr.3838f33adcfe49778a03a511c7405e77.partial").write_bytes(b"")
    FeatureStore.create(path).close()
    assert sorted(p.name for p in path.iterdir()) == ["zarr.json"]
    FeatureStore.open(path)
    other = tmp_path / "o.zarr"  # a folder holding anything else is not taken over
    other.mkdir()
    (other / "notes.txt").write_text("mine")
    with pytest.raises(StoreError, match="no zarr.json"):
        FeatureStore.create(other)
    assert (other / "notes.txt").read_text() == "mine" and len(list(other.iterdir())) == 1
