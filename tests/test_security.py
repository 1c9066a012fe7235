"""Nothing outside the named paths is written, outputs are readable as the umask says, kills leave no litter.

The command-line cases (links in stores, stitch outputs, outputs checked before work, tampered
metadata) are rows of ``tests/test_bad_inputs.py``; these are the library-level ones and those
that need a second process.
"""

from __future__ import annotations

import json
import os
import signal
import stat
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from lintwin import AffineMap, FeatureStore, StoreError, UnsafePathError
from lintwin.cli import app
from lintwin.core.files import atomic_write, atomic_write_all, remove_stale_temporaries
from lintwin.core.safe_paths import checked_path
from lintwin.storage.check import check_store
from lintwin.storage.importer import import_features
from lintwin.storage.synthetic import write_synthetic_store

runner = CliRunner()


def _outside(tmp_path: Path) -> Path:
    out = tmp_path / "outside"
    out.mkdir()
    (out / "keep.txt").write_text("the user's file\n")
    return out


def _untouched(out: Path) -> None:
    assert sorted(p.name for p in out.iterdir()) == ["keep.txt"]
    assert (out / "keep.txt").read_text() == "the user's file\n"


# -- the link rule, on the paths the command-line table does not reach --------------------------------------


def test_remove_refuses_an_array_folder_that_is_a_link(tmp_path):
    store = tmp_path / "s.zarr"
    write_synthetic_store(store, train=100, dim_a=4, dim_b=3)
    out = _outside(tmp_path)
    arr = store / "train" / "features" / "B"
    arr.rename(out / "B")
    arr.symlink_to(out / "B")
    locks = sorted((store / ".lintwin-locks").rglob("*"))
    s = FeatureStore.open(store, mode="r+")
    with pytest.raises(UnsafePathError, match="train/features/B inside store .* is a symbolic link"):
        s.remove("train", network="B")
    s.close()
    assert (out / "B" / "zarr.json").is_file() and arr.is_symlink()
    assert sorted((store / ".lintwin-locks").rglob("*")) == locks  # refused before any lock was taken


def test_resume_refuses_an_array_with_a_linked_chunk_folder(tmp_path):
    s = FeatureStore.create(tmp_path / "s.zarr")
    arr = s.open_features_for_write("train", "A", rows=300, dim=4, chunk_rows=100, source="x")
    FeatureStore.write_rows(arr, 0, np.ones((100, 4), np.float32))
    s.close()
    out = _outside(tmp_path)
    chunks = tmp_path / "s.zarr" / "train" / "features" / "A" / "c"
    chunks.rename(out / "c")
    chunks.symlink_to(out / "c")
    s = FeatureStore.open(tmp_path / "s.zarr", mode="r+")
    with pytest.raises(UnsafePathError, match="train/features/A/c inside store .* is a symbolic link"):
        s.open_features_for_write("train", "A", rows=300, dim=4, chunk_rows=100, source="x")
    s.close()
    assert sorted(p.name for p in (out / "c").iterdir()) == ["0"]


def test_a_fifo_chunk_is_refused_without_hanging(tmp_path):
    store = tmp_path / "s.zarr"
    write_synthetic_store(store, train=600, dim_a=4, dim_b=3, chunk_rows=256)
    chunk = store / "train" / "features" / "A" / "c" / "1" / "0"
    chunk.unlink()
    os.mkfifo(chunk)
    with pytest.raises(StoreError, match=r"chunk 1 \(rows 256..511\) is not a regular file"):
        FeatureStore.open(store).features("train", "A")
    report = check_store(store)
    assert any(p.startswith("train/features/A/c/1/0: a FIFO") for p in report.problems)


def test_checked_path_allows_the_named_path_to_be_a_link_but_nothing_below(tmp_path):
    real = tmp_path / "real"
    (real / "moments").mkdir(parents=True)
    named = tmp_path / "named"
    named.symlink_to(real)  # the user's own choice: followed
    assert checked_path(named, "moments/joint.npz") == named / "moments" / "joint.npz"
    (real / "moments" / "joint.npz").symlink_to(tmp_path / "elsewhere.npz")
    with pytest.raises(UnsafePathError, match="moments/joint.npz inside"):
        checked_path(named, "moments/joint.npz")
    (real / "file").write_text("x")
    with pytest.raises(UnsafePathError, match="is a file where a directory belongs"):
        checked_path(named, "file/below")


def test_leftover_of_a_killed_array_creation_is_neither_damage_nor_an_obstacle(tmp_path):
    """zarr writes metadata through a temporary ``zarr.<hex>.partial``; a kill can leave just that."""
    store = tmp_path / "s.zarr"
    write_synthetic_store(store, train=100, dim_a=4, dim_b=3)
    leftover = store / "train" / "features" / "C"
    leftover.mkdir()
    (leftover / "zarr.0123abcd.partial").write_text('{"zarr_fo')
    assert check_store(store).ok
    assert FeatureStore.open(store).networks("train") == ["A", "B"]
    f = tmp_path / "c.npy"
    np.save(f, np.ones((100, 2), np.float32))
    with pytest.raises(StoreError, match="without the ids of their rows"):  # the synthetic rows are named
        import_features(store, f, name="C")
    s = FeatureStore.open(store, mode="r+")
    arr = s.open_features_for_write("train", "C", rows=100, dim=2, rows_identity=_synthetic_identity(store))
    FeatureStore.write_rows(arr, 0, np.ones((100, 2), np.float32))
    s.close()
    assert check_store(store).ok and FeatureStore.open(store).networks("train") == ["A", "B", "C"]


def _synthetic_identity(store: Path) -> str:
    source = FeatureStore.open(store).info("train", "A")["source"]
    return f"{source} rows 0..99"


# -- atomic writes: the umask, stale temporaries, sets of files -------------------------------------------


@pytest.mark.parametrize("mask", [0o022, 0o077, 0o002])
def test_atomic_write_respects_the_umask(tmp_path, mask):
    old = os.umask(mask)
    try:
        path = atomic_write(tmp_path / "out.json", lambda fh: fh.write(b"{}"))
    finally:
        os.umask(old)
    assert stat.S_IMODE(path.stat().st_mode) == 0o666 & ~mask


def test_solve_writes_the_map_as_readable_as_its_picture(tmp_path):
    store = tmp_path / "s.zarr"
    write_synthetic_store(store, train=500, val=100, dim_a=6, dim_b=5)
    old = os.umask(0o022)
    try:
        r = runner.invoke(app, ["solve", str(store), "--src", "A", "--dst", "B", "--method", "adam",
                                "--iterations", "3", "-q", "--out", str(tmp_path / "m.npz")])
    finally:
        os.umask(old)
    assert r.exit_code == 0, r.stderr
    modes = {p.name: stat.S_IMODE(p.stat().st_mode) for p in tmp_path.glob("m.*")}
    assert modes == {"m.npz": 0o644, "m.loss.png": 0o644}


_KILLED_WRITE = """
import sys
from lintwin.core.files import atomic_write

def write(fh):
    fh.write(b"half a map")
    fh.flush()
    print("writing", flush=True)
    sys.stdin.readline()
    fh.write(b" and the rest")

atomic_write(sys.argv[1], write)
print("done", flush=True)
"""


def _writer(tmp_path: Path, target: Path) -> subprocess.Popen:
    script = tmp_path / "write.py"
    script.write_text(_KILLED_WRITE)
    p = subprocess.Popen([sys.executable, str(script), str(target)], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                         text=True)
    assert p.stdout.readline().strip() == "writing"
    return p


def _temporaries(target: Path) -> list[str]:
    return sorted(p.name for p in target.parent.iterdir() if p.name.startswith(f".{target.name}."))


def test_a_killed_write_leaves_a_temporary_that_the_next_write_removes(tmp_path):
    target = tmp_path / "m.npz"
    p = _writer(tmp_path, target)
    p.send_signal(signal.SIGKILL)
    p.wait()
    assert len(_temporaries(target)) == 1 and not target.exists()
    AffineMap(weight=np.eye(2), bias=np.zeros(2)).save(target)
    assert _temporaries(target) == [] and AffineMap.load(target).src_dim == 2


def test_solve_after_a_killed_write_leaves_no_temporary(tmp_path):
    """What an older lintwin's killed ``solve --out`` left (a ``mkstemp`` name) is cleaned by the next solve."""
    store = tmp_path / "s.zarr"
    write_synthetic_store(store, train=300, val=0, dim_a=4, dim_b=3)
    stale = tmp_path / ".m.npz.k2x9_qpa.tmp"
    stale.write_bytes(b"PK\x03\x04 truncated")
    r = runner.invoke(app, ["solve", str(store), "--src", "A", "--dst", "B", "-q", "--out", str(tmp_path / "m.npz")])
    assert r.exit_code == 0, r.stderr
    assert _temporaries(tmp_path / "m.npz") == []


def test_a_live_write_keeps_its_temporary_while_another_write_cleans_up(tmp_path):
    target = tmp_path / "m.bin"
    p = _writer(tmp_path, target)
    atomic_write(target, lambda fh: fh.write(b"from the second writer"))
    assert target.read_bytes() == b"from the second writer"
    assert len(_temporaries(target)) == 1  # the first writer's, held: not stale
    assert remove_stale_temporaries(target) == []
    out = p.communicate("go\n", timeout=60)[0]
    assert p.returncode == 0 and "done" in out
    assert target.read_bytes() == b"half a map and the rest" and _temporaries(target) == []


def test_atomic_write_all_replaces_nothing_unless_every_file_is_complete(tmp_path):
    a, b = tmp_path / "a.onnx", tmp_path / "a.json"
    a.write_bytes(b"old model")
    b.write_bytes(b"old sidecar")

    def fail(fh):
        fh.write(b"half")
        raise OSError("disk full")

    with pytest.raises(OSError, match="disk full"):
        atomic_write_all([(a, lambda fh: fh.write(b"new model")), (b, fail)])
    assert a.read_bytes() == b"old model" and b.read_bytes() == b"old sidecar"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.json", "a.onnx"]
    atomic_write_all([(a, lambda fh: fh.write(b"new model")), (b, lambda fh: fh.write(b"new sidecar"))])
    assert a.read_bytes() == b"new model" and b.read_bytes() == b"new sidecar"


def test_an_output_that_is_a_link_is_replaced_not_written_through(tmp_path):
    out = _outside(tmp_path)
    link = tmp_path / "report.json"
    link.symlink_to(out / "keep.txt")
    atomic_write(link, lambda fh: fh.write(json.dumps({"ok": True}).encode()))
    assert not link.is_symlink() and json.loads(link.read_text()) == {"ok": True}
    _untouched(out)
