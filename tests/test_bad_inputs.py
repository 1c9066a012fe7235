"""Every mistake a user can make ends in one ``Error:`` line and a non-zero exit, with nothing touched.

Each row runs one command of the real CLI on a copy of a small real store (the bundled
Fashion-MNIST networks' dimensions, real ONNX heads and backbones) after an optional ``damage``
step (which may also plant links, FIFOs, folders outside the store or copies of the models),
and asserts: exit 1 (2 for Typer's own usage errors), exactly one ``Error: `` line on stderr
and no traceback, within a minute (tampered counts once made commands hang), and every file,
folder and link under the case's folder — the store, the map, the models, the folders outside
the store — byte-identical afterwards: a refused command writes nothing anywhere.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import signal
import struct
from collections.abc import Callable
from pathlib import Path

import h5py
import numpy as np
import pytest
import zarr
from safetensors.numpy import save_file
from typer.testing import CliRunner

from lintwin import AffineMap, FeatureStore
from lintwin.cli import app
from lintwin.storage.synthetic import write_synthetic_store

MODELS = Path(__file__).resolve().parents[1] / "models" / "fashion"
R, I = "fmnist-resnet", "fmnist-inception"  # 128- and 160-dim features
TRAIN, VAL = 600, 300
runner = CliRunner()


def _write_template(path: Path) -> None:
    rng = np.random.default_rng(0)
    s = FeatureStore.create(path)
    for split, rows in (("train", TRAIN), ("val", VAL)):
        ids = [f"{split}/{k:05d}.png" for k in range(rows)]
        latent = rng.standard_normal((rows, 16))
        for name, dim in ((R, 128), (I, 160)):
            feats = np.maximum(latent @ rng.standard_normal((16, dim)), 0).astype(np.float32)
            arr = s.open_features_for_write(split, name, rows=rows, dim=dim, chunk_rows=128, ids=ids)
            FeatureStore.write_rows(arr, 0, feats)
        s.set_labels(split, rng.integers(0, 10, rows))
    s.close()


@pytest.fixture(scope="module")
def template(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("bad_inputs")
    store = root / "s.zarr"
    _write_template(store)
    # A real least-squares map R→I of the training rows, saved as solve saves it.
    s = FeatureStore.open(store)
    x, y = s.features("train", R)[:].astype(np.float64), s.features("train", I)[:].astype(np.float64)
    coef = np.linalg.lstsq(np.hstack([x, np.ones((TRAIN, 1))]), y, rcond=None)[0]
    AffineMap(weight=coef[:-1].T.copy(), bias=coef[-1].copy(), src=R, dst=I, n_train=TRAIN).save(root / "map.npz")
    return {"store": store, "map": root / "map.npz"}


def _tree_hash(path: Path) -> dict[str, str]:
    """Every entry under ``path``: files by content, folders, links by target, FIFOs by kind (never opened)."""
    out = {}
    for root, dirs, files in os.walk(path):  # os.walk does not descend into linked folders
        for name in dirs + files:
            p = Path(root) / name
            rel = str(p.relative_to(path))
            if p.is_symlink():
                out[rel] = f"link to {os.readlink(p)}"
            elif p.is_dir():
                out[rel] = "dir"
            elif p.is_file():
                out[rel] = hashlib.sha256(p.read_bytes()).hexdigest()
            else:
                out[rel] = "special file"
    return out


# -- damage helpers: each takes the case's directory (with s.zarr, map.npz) -------------------------------


def _chunk(split: str, net: str, k: int) -> str:
    return f"s.zarr/{split}/features/{net}/c/{k}/0"


def delete(rel: str) -> Callable[[Path], None]:
    return lambda d: (d / rel).unlink()


def truncate(rel: str) -> Callable[[Path], None]:
    def go(d: Path) -> None:
        data = (d / rel).read_bytes()
        (d / rel).write_bytes(data[: len(data) // 2])
    return go


def flip_byte(rel: str) -> Callable[[Path], None]:
    def go(d: Path) -> None:
        data = bytearray((d / rel).read_bytes())
        data[len(data) // 3] ^= 0xFF
        (d / rel).write_bytes(bytes(data))
    return go


def swap(rel: str, other: str) -> Callable[[Path], None]:
    return lambda d: shutil.copyfile(d / other, d / rel)


def edit_json(rel: str, edit: Callable[[dict], None]) -> Callable[[Path], None]:
    def go(d: Path) -> None:
        meta = json.loads((d / rel).read_text())
        edit(meta)
        (d / rel).write_text(json.dumps(meta))
    return go


def write_text(rel: str, text: str) -> Callable[[Path], None]:
    return lambda d: (d / rel).write_text(text)


def save(rel: str, array_fn: Callable[[], object], npz: bool = False) -> Callable[[Path], None]:
    def go(d: Path) -> None:
        if npz:
            np.savez(d / rel, **array_fn())
        else:
            np.save(d / rel, array_fn(), allow_pickle=True)
    return go


def zarr_v2(d: Path) -> None:
    g = zarr.open_group(str(d / "v2.zarr"), mode="w", zarr_format=2)
    g.attrs["lintwin"] = {"format": "lintwin.store/2"}


def link_away(rel: str, plant: str | None = None) -> Callable[[Path], None]:
    """Move ``rel`` to ``outside/`` (beside the store) and leave a symbolic link to it in its place; ``plant`` a
    file of the user's there, which a write through the link would destroy."""
    def go(d: Path) -> None:
        target = d / "outside" / Path(rel).name
        target.parent.mkdir(exist_ok=True)
        shutil.move(d / rel, target)
        (d / rel).symlink_to(target)
        if plant:
            (target / plant).parent.mkdir(parents=True, exist_ok=True)
            (target / plant).write_text("the user's file\n")
    return go


def link_to(rel: str, target: str) -> Callable[[Path], None]:
    """Replace ``rel`` by a symbolic link to ``target`` (both under the case's folder)."""
    def go(d: Path) -> None:
        p = d / rel
        shutil.rmtree(p) if p.is_dir() and not p.is_symlink() else p.unlink()
        p.symlink_to(d / target)
    return go


def copy_store(name: str) -> Callable[[Path], None]:
    return lambda d: shutil.copytree(d / "s.zarr", d / name, symlinks=True)


def fifo(rel: str) -> Callable[[Path], None]:
    def go(d: Path) -> None:
        (d / rel).unlink()
        os.mkfifo(d / rel)
    return go


def mkdir(rel: str) -> Callable[[Path], None]:
    return lambda d: (d / rel).mkdir(parents=True)


def models(*names: str) -> Callable[[Path], None]:
    """Copy the bundled networks ``names`` (ONNX files and sidecars) into ``models/``."""
    def go(d: Path) -> None:
        (d / "models").mkdir(exist_ok=True)
        for n in names:
            for f in MODELS.glob(f"{n}.*"):
                shutil.copyfile(f, d / "models" / f.name)
    return go


def synth_store_with_link(rel: str) -> Callable[[Path], None]:
    """A second, synthetic store ``t.zarr`` whose ``rel`` is a link to a folder outside it."""
    def go(d: Path) -> None:
        write_synthetic_store(d / "t.zarr", train=20, val=10, dim_a=4, dim_b=3)
        link_away(f"t.zarr/{rel}", plant="keep.txt")(d)
    return go


def v2_labels(d: Path) -> None:
    """Replace the val labels with a zarr v2 array of the same values."""
    shutil.rmtree(d / "s.zarr" / "val" / "labels")
    arr = zarr.open_array(str(d / "s.zarr" / "val" / "labels"), mode="w", zarr_format=2, shape=(VAL,), dtype="int64")
    arr[:] = np.arange(VAL) % 10


def idx_header(shape: tuple[int, ...], data: bytes = b"") -> Callable[[Path], None]:
    def go(d: Path) -> None:
        (d / "x-images-idx3-ubyte").write_bytes(bytes([0, 0, 8, len(shape)]) + struct.pack(f">{len(shape)}I", *shape)
                                                 + data)
    return go


def hard_link(rel: str, target: str) -> Callable[[Path], None]:
    return lambda d: os.link(d / target, d / rel)


def sidecar(name: str, edit: Callable[[dict], None]) -> Callable[[Path], None]:
    """Copy network ``name`` into ``models/`` and edit its sidecar there."""
    return both(models(name), edit_json(f"models/{name}.json", edit))


def h5(rel: str, entries: Callable[[], dict], external: dict[str, tuple[str, str]] | None = None,
       virtual: str | None = None) -> Callable[[Path], None]:
    """An HDF5 file of ``entries`` (name: array), with external links (name: (file, path)) or a virtual dataset."""
    def go(d: Path) -> None:
        with h5py.File(d / rel, "w") as f:
            for k, v in entries().items():
                f.create_dataset(k, data=v)
            for k, (file, path) in (external or {}).items():
                f[k] = h5py.ExternalLink(file, path)
            if virtual:
                with h5py.File(d / "source.h5", "w") as g:
                    g.create_dataset("x", data=_feats()())
                layout = h5py.VirtualLayout(shape=(TRAIN, 8), dtype=np.float32)
                layout[:] = h5py.VirtualSource(str(d / "source.h5"), "x", shape=(TRAIN, 8))
                f.create_virtual_dataset(virtual, layout)
    return go


def st(rel: str, tensors: Callable[[], dict], metadata: dict[str, str] | None = None) -> Callable[[Path], None]:
    """A safetensors file of ``tensors`` with ``metadata``."""
    def go(d: Path) -> None:
        save_file(tensors(), str(d / rel), metadata=metadata)
    return go


def st_raw(rel: str, header: dict, data: bytes) -> Callable[[Path], None]:
    """A safetensors file written byte by byte (dtypes NumPy cannot hold)."""
    def go(d: Path) -> None:
        text = json.dumps(header).encode()
        (d / rel).write_bytes(len(text).to_bytes(8, "little") + text + data)
    return go


def both(*fns: Callable[[Path], None]) -> Callable[[Path], None]:
    def go(d: Path) -> None:
        for f in fns:
            f(d)
    return go


def _feats(rows: int = TRAIN, dim: int = 8, dtype=np.float32) -> Callable[[], np.ndarray]:
    return lambda: np.abs(np.random.default_rng(1).standard_normal((rows, dim))).astype(dtype)


def _with(value, at=(3, 2), rows: int = TRAIN, dtype=np.float64) -> Callable[[], np.ndarray]:
    def go() -> np.ndarray:
        a = _feats(rows, 8, dtype)()
        a[at] = value
        return a
    return go


S, M = "{store}", "{map}"
HR, HI = str(MODELS / f"{R}.head.onnx"), str(MODELS / f"{I}.head.onnx")
SOLVE = ["solve", S, "--src", R, "--dst", I, "-q"]
ADAM = SOLVE + ["--method", "adam", "--iterations", "20"]
SCORE = ["score", S, "--map", M, "--head", HI]
COMPARE = ["compare", S, "--a", R, "--b", I, "--head-a", HR, "--head-b", HI, "-q", "--out", "{dir}/cmp"]
IMPORT = ["import", "{dir}/f.npy", "--store", S, "--name", "new"]
F = save("f.npy", _feats())
IDS = write_text("ids.txt", "\n".join(f"train/{k:05d}.png" for k in range(TRAIN)))
WITH_IDS = ["--ids", "{dir}/ids.txt"]
BR = str(MODELS / f"{R}.backbone.onnx")
IMAGES = save("imgs.npz", lambda: {"images": np.random.default_rng(2).integers(0, 256, (4, 28, 28), np.uint8),
                                   "labels": np.arange(4)}, npz=True)
EXTRACT = ["extract", BR, "{dir}/imgs.npz", "--store", "{dir}/new.zarr", "-q", "--workers", "1"]
STUDY = ["study", S, "--nets", R, I, "--heads", HR, HI, "-q"]
SIMILARITY = ["similarity", S, "--a", R, "--b", I, "--null", "2", "-q"]
EXPORT = ["export", S, "--name", R, "--split", "val"]
TRAIN_IDS = [f"train/{k:05d}.png" for k in range(TRAIN)]
H5 = ["import", "{dir}/f.h5", "--store", S, "--name", "new"]
ST = ["import", "{dir}/f.safetensors", "--store", S, "--name", "new"]
STITCH = ["stitch", "--backbone", f"{{dir}}/models/{R}.backbone.onnx", "--map", M, "--head",
          f"{{dir}}/models/{I}.head.onnx", "-o"]
FEATS_R = f"s.zarr/train/features/{R}/zarr.json"
HUGE = 10**12


def claim_chunks(n: int) -> Callable[[dict], None]:
    """Edit an array's metadata to claim ``n`` complete chunks, with a checksum recorded for each."""
    def go(m: dict) -> None:
        chunk = m["chunk_grid"]["configuration"]["chunk_shape"][0]
        claim_rows(n * chunk)(m)
        crcs = m["attributes"]["chunk_crc32c"]
        crcs += [0] * (n - len(crcs))
    return go


def claim_rows(rows: int, chunk: int | None = None) -> Callable[[dict], None]:
    """Edit an array's metadata to claim ``rows`` rows, all written (and, optionally, chunks of ``chunk`` rows)."""
    def go(m: dict) -> None:
        m["shape"][0] = rows
        m["attributes"].update(rows=rows, rows_written=rows)
        if chunk is not None:
            m["chunk_grid"]["configuration"]["chunk_shape"][0] = chunk
    return go


def case(cid, args, damage=None, *, code=1, match="", xfail=None):
    marks = [pytest.mark.xfail(strict=True, reason=xfail)] if xfail else []
    return pytest.param(args, damage, code, match, id=cid, marks=marks)


CASES = [
    # -- damaged or foreign stores -------------------------------------------------------------------
    case("info-missing-store", ["info", "{dir}/nope.zarr"], match="no feature store at"),
    case("info-file-as-store", ["info", "{dir}/map.npz"], match="not a lintwin feature store"),
    case("info-zarr-v2-store", ["info", "{dir}/v2.zarr"], zarr_v2, match="zarr v2 store"),
    case("info-root-zarr-json-truncated", ["info", S], truncate("s.zarr/zarr.json"), match="damaged"),
    case("info-root-format-edited", ["info", S],
         edit_json("s.zarr/zarr.json", lambda m: m["attributes"]["lintwin"].update(format="lintwin.store/1")),
         match="store format"),
    case("info-array-zarr-json-truncated", ["info", S], truncate(f"s.zarr/train/features/{R}/zarr.json"),
         match="is damaged"),
    case("solve-array-pickle-codec", SOLVE, edit_json(f"s.zarr/train/features/{R}/zarr.json",
                                                      lambda m: m["codecs"].insert(1, {"name": "numcodecs.pickle"})),
         match="not an array lintwin wrote"),
    case("solve-array-dtype-edited", SOLVE, edit_json(f"s.zarr/train/features/{I}/zarr.json",
                                                      lambda m: m.update(data_type="float64")),
         match="not an array lintwin wrote"),
    case("solve-rows-written-edited", SOLVE, edit_json(f"s.zarr/train/features/{I}/zarr.json",
                                                       lambda m: m["attributes"].update(rows_written=10)),
         match="incomplete"),
    case("solve-deleted-chunk", SOLVE, delete(_chunk("train", R, 2)), match="chunk 2 (rows 256..383) missing"),
    case("solve-truncated-chunk", SOLVE, truncate(_chunk("train", I, 1)), match="damaged"),
    case("solve-swapped-chunk", SOLVE, swap(_chunk("train", R, 1), _chunk("train", R, 0)),
         match="not the chunk written there"),
    case("solve-flipped-byte", SOLVE, flip_byte(_chunk("train", R, 3)), match="cannot be read"),
    case("score-deleted-labels-chunk", SCORE, delete("s.zarr/val/labels/c/0"), match="labels of split 'val'"),
    case("check-deleted-chunk", ["check", S, "-q"], delete(_chunk("val", I, 0)), match="1 problem(s)"),
    case("check-truncated-chunk", ["check", S, "-q"], truncate(_chunk("val", I, 1)), match="1 problem(s)"),
    case("check-swapped-chunk", ["check", S, "-q"], swap(_chunk("train", I, 3), _chunk("train", I, 2)),
         match="not the chunk written there"),
    case("check-missing-store", ["check", "{dir}/nope.zarr"], match="no feature store"),
    # -- unknown names and splits --------------------------------------------------------------------
    case("solve-unknown-network", ["solve", S, "--src", "nope", "--dst", I, "-q"], match="network 'nope' not in"),
    case("solve-unknown-split", SOLVE + ["--split", "nope"], match="split 'nope' not in store"),
    case("solve-unknown-eval-split", SOLVE + ["--eval-split", "nope"], match="split 'nope' not in store"),
    case("compare-unknown-network", ["compare", S, "--a", "nope", "--b", I, "--head-a", HR, "--head-b", HI, "-q",
                                     "--out", "{dir}/cmp"], match="'nope'"),
    case("score-unknown-split", SCORE + ["--split", "nope"], match="split 'nope' not in store"),
    # -- bad names: refused before anything is written -----------------------------------------------
    case("import-empty-name", ["import", "{dir}/f.npy", "--store", S, "--name", ""], F, match="is not allowed"),
    case("import-slash-name", ["import", "{dir}/f.npy", "--store", S, "--name", "a/b"], F, match="is not allowed"),
    case("import-dotdot-name", ["import", "{dir}/f.npy", "--store", S, "--name", ".."], F, match="is not allowed"),
    case("import-leading-slash-name", ["import", "{dir}/f.npy", "--store", S, "--name", "/A"], F,
         match="is not allowed"),
    case("import-control-char-name", ["import", "{dir}/f.npy", "--store", S, "--name", "a\x07b"], F,
         match="is not allowed"),
    case("import-dotdot-split", IMPORT + ["--split", "../x"], F, match="split name '../x' is not allowed"),
    case("synth-bad-name", ["synth", S, "--names", "A", "x/y", "--train", "10", "--val", "0", "--overwrite"],
         match="is not allowed"),
    # -- bad feature files ----------------------------------------------------------------------------
    case("import-nan", IMPORT, save("f.npy", _with(np.nan)), match="NaN or Inf in features of new"),
    case("import-inf", IMPORT, save("f.npy", _with(np.inf)), match="NaN or Inf"),
    case("import-beyond-float32", IMPORT, save("f.npy", _with(1e39)), match="values beyond float32 range"),
    case("import-text-file", IMPORT, write_text("f.npy", "1,2,3\n4,5,6\n"), match="is not a .npy, .npz, HDF5 or safetensors file"),
    case("import-python-objects", IMPORT, save("f.npy", lambda: np.array([[1, "a"]], dtype=object)),
         match="holds Python objects"),
    case("import-complex", IMPORT, save("f.npy", _with(1 + 2j, dtype=np.complex128)), match="are complex"),
    case("import-zero-columns", IMPORT, save("f.npy", _feats(TRAIN, 0)), match="zero feature columns"),
    case("import-zero-rows", IMPORT, save("f.npy", _feats(0, 8)), match="zero rows"),
    case("import-1d", IMPORT, save("f.npy", lambda: np.ones(TRAIN, np.float32)), match="must be 2-D"),
    case("import-strings", IMPORT, save("f.npy", lambda: np.array([["a", "b"]] * TRAIN)), match="real numbers"),
    case("import-wrong-row-count", IMPORT, save("f.npy", _feats(TRAIN - 1)), match="must be paired row by row"),
    case("import-existing-without-overwrite", ["import", "{dir}/f.npy", "--store", S, "--name", R], F,
         match="pass --overwrite"),
    case("import-truncated-npy", IMPORT, both(F, truncate("f.npy")), match="cannot read"),
    case("import-missing-file", IMPORT, match="no such file"),
    case("import-npz-needs-key", IMPORT[:1] + ["{dir}/f.npz"] + IMPORT[2:],
         save("f.npz", lambda: {"a": _feats()(), "b": _feats()()}, npz=True), match="choose one with --key"),
    case("import-npz-unknown-key", IMPORT[:1] + ["{dir}/f.npz"] + IMPORT[2:] + ["--key", "zz"],
         save("f.npz", lambda: {"a": _feats()()}, npz=True), match="has no array 'zz'"),
    case("import-labels-float", IMPORT + ["--labels", "{dir}/l.npy"],
         both(F, save("l.npy", lambda: np.zeros(TRAIN))), match="labels must be integers"),
    case("import-labels-negative", IMPORT + ["--labels", "{dir}/l.npy"],
         both(F, save("l.npy", lambda: -np.ones(TRAIN, np.int64))), match="labels must be >= 0"),
    case("import-labels-wrong-length", IMPORT + ["--labels", "{dir}/l.npy"],
         both(F, save("l.npy", lambda: np.zeros(5, np.int64))), match="labels must be 1-D with 600 entries"),
    case("import-labels-differ", IMPORT + ["--labels", "{dir}/l.npy"],
         both(F, save("l.npy", lambda: np.full(TRAIN, 11, np.int64))), match="already has different labels"),
    case("import-ids-wrong-length", IMPORT + ["--ids", "{dir}/ids.txt"], both(F, write_text("ids.txt", "a\nb\n")),
         match="holds 2 ids for 600 rows"),
    case("import-ids-other-samples", IMPORT + ["--ids", "{dir}/ids.txt"],
         both(F, write_text("ids.txt", "\n".join(f"x{k}" for k in range(TRAIN)))), match="different sample ids"),
    case("import-chunk-rows-zero", IMPORT + ["--chunk-rows", "0"], F, code=2, match="--chunk-rows"),
    case("synth-existing-without-overwrite", ["synth", S, "--names", R, I, "--train", "10", "--val", "0"],
         match="pass --overwrite"),
    case("synth-same-names", ["synth", S, "--names", "Q", "Q", "--train", "10", "--val", "0"],
         match="different names"),
    # -- bad options ----------------------------------------------------------------------------------
    case("solve-dask-local-abc", SOLVE + ["--dask", "local:abc"], match="local:N needs a worker count"),
    case("solve-ridge-nan", SOLVE + ["--ridge", "nan"], match="ridge"),
    case("solve-ridge-negative", SOLVE + ["--ridge", "-1"], match="--ridge expects finite numbers >= 0"),
    case("solve-ridge-word", SOLVE + ["--ridge", "lots"], match="--ridge expects a number"),
    case("solve-ridge-three", SOLVE + ["--ridge", "1,2,3"], match="--ridge expects finite numbers"),
    case("solve-rank-too-big", SOLVE + ["--rank", "9999"], match="rank must be between"),
    case("solve-lr-zero", ADAM + ["--lr", "0"], match="learning rate"),
    case("solve-lr-nan", ADAM + ["--lr", "nan"], match="learning rate"),
    case("solve-decay-one", ADAM + ["--decay", "1"], match="decay"),
    case("solve-zero-iterations", ADAM[:-1] + ["0"], code=2, match="--iterations"),
    case("solve-out-under-a-file", SOLVE + ["--out", "{dir}/map.npz/sub/m.npz"], match="map.npz"),
    case("solve-both-out-npz", SOLVE + ["--both", "--out", "{dir}/two.npz"], match="give --out a directory"),
    case("compare-out-under-a-file", COMPARE[:-1] + ["{dir}/map.npz/cmp"], match="map.npz"),
    # -- export: outputs checked before the store is read, never inside it, never replaced unasked ---------
    case("export-existing-out", EXPORT + ["--out", M], match="exists (a file); pass --overwrite"),
    case("export-out-is-a-link", EXPORT + ["--out", "{dir}/x.npz", "--format", "npz"],
         lambda d: (d / "x.npz").symlink_to(d / "map.npz"), match="exists (a symbolic link)"),
    case("export-out-dangling-link", EXPORT + ["--out", "{dir}/x.h5", "--format", "hdf5"],
         lambda d: (d / "x.h5").symlink_to(d / "nowhere.h5"), match="exists (a symbolic link)"),
    case("export-npy-ids-file-exists", EXPORT + ["--out", "{dir}/x.npy"], write_text("x.ids.npy", "mine"),
         match="x.ids.npy exists"),
    case("export-out-inside-the-store", EXPORT + ["--out", "{dir}/s.zarr/val/x.npy"], match="inside the store"),
    case("export-out-unwritable", EXPORT + ["--out", "/proc/lintwin-x.npy"], match="accepts no new files"),
    case("export-out-a-folder", EXPORT + ["--out", "{dir}/here", "--overwrite"], mkdir("here"), match="is a directory"),
    case("export-unknown-network", ["export", S, "--name", "nope", "--out", "{dir}/x.npy"],
         match="network 'nope' not in"),
    case("export-incomplete-array", EXPORT + ["--out", "{dir}/x.npy"],
         edit_json(f"s.zarr/val/features/{R}/zarr.json", lambda m: m["attributes"].update(rows_written=10)),
         match="incomplete"),
    case("export-damaged-chunk", EXPORT + ["--out", "{dir}/x.npy", "--split", "train"],
         delete(_chunk("train", R, 1)), match="missing"),
    case("export-bad-format", EXPORT + ["--out", "{dir}/x.csv", "--format", "csv"], code=2, match="--format"),
    # -- import from HDF5 and safetensors: ids carried both ways and checked, nothing read outside the file ----
    case("import-hdf5-other-sample-ids", H5, h5("f.h5", lambda: {"features": _feats()(), "ids": [
        f"x{k}" for k in range(TRAIN)]}), match="different sample ids"),
    case("import-hdf5-ids-disagree-with-ids-file", H5 + WITH_IDS, both(IDS, h5("f.h5", lambda: {
        "features": _feats()(), "ids": TRAIN_IDS[::-1]})), match="differ from those"),
    case("import-hdf5-ids-wrong-length", H5, h5("f.h5", lambda: {"features": _feats()(), "ids": ["a", "b", "c"]}),
         match="holds 3 ids for 600 rows"),
    case("import-hdf5-ids-repeated", H5, h5("f.h5", lambda: {"features": _feats()(), "ids": ["a"] * TRAIN}),
         match="not unique"),
    case("import-hdf5-labels-wrong-length", H5, h5("f.h5", lambda: {"features": _feats()(), "ids": TRAIN_IDS,
                                                                    "labels": np.zeros(5, np.int64)}),
         match="labels must be 1-D with 600 entries"),
    case("import-hdf5-1d", H5, h5("f.h5", lambda: {"features": np.ones(TRAIN, np.float32)}), match="must be 2-D"),
    case("import-hdf5-nan", H5 + WITH_IDS, both(IDS, h5("f.h5", lambda: {"features": _with(np.nan)()})),
         match="NaN or Inf in features of new"),
    case("import-hdf5-strings", H5, h5("f.h5", lambda: {"features": np.array([["a", "b"]] * TRAIN, dtype="S1")}),
         match="real numbers"),
    case("import-hdf5-external-link", H5 + ["--key", "features"],
         h5("f.h5", dict, external={"features": ("outside.h5", "x")}), match="link to another file"),
    case("import-hdf5-virtual-dataset", H5 + ["--key", "v"] + WITH_IDS, both(IDS, h5("f.h5", dict, virtual="v")),
         match="keeps its data in other files"),
    case("import-hdf5-external-link-on-the-way", H5 + ["--key", "g/features"],
         h5("f.h5", dict, external={"g": ("outside.h5", "/")}), match="link to another file"),
    case("import-hdf5-two-arrays", H5, h5("f.h5", lambda: {"a": _feats()(), "b": _feats()()}),
         match="choose one with --key"),
    case("import-safetensors-other-sample-ids", ST, st("f.safetensors", lambda: {"features": _feats()()},
                                                       {"ids": json.dumps([f"x{k}" for k in range(TRAIN)])}),
         match="different sample ids"),
    case("import-safetensors-ids-not-json", ST, st("f.safetensors", lambda: {"features": _feats()()},
                                                   {"ids": "img1, img2"}), match="not a JSON list of strings"),
    case("import-safetensors-bool", ST, st("f.safetensors", lambda: {"features": np.ones((TRAIN, 8), bool)}),
         match="real numbers"),
    case("import-safetensors-bfloat16", ST, st_raw("f.safetensors", {"features": {
        "dtype": "BF16", "shape": [TRAIN, 8], "data_offsets": [0, TRAIN * 16]}}, bytes(TRAIN * 16)),
         match="BF16, which NumPy has no type for"),
    case("import-safetensors-inf", ST + WITH_IDS, both(IDS, st("f.safetensors", lambda: {"features": _with(np.inf)()})),
         match="NaN or Inf"),
    case("import-safetensors-truncated", ST, both(st("f.safetensors", lambda: {"features": _feats()()}),
                                                  truncate("f.safetensors")), match="cannot read"),
    case("import-safetensors-labels-float", ST, st("f.safetensors", lambda: {
        "features": _feats()(), "labels": np.zeros(TRAIN)}, {"ids": json.dumps(TRAIN_IDS)}),
         match="labels must be integers"),
    # -- bad map and head files ------------------------------------------------------------------------
    case("score-truncated-map", SCORE, truncate("map.npz"), match="map"),
    case("score-tampered-map", SCORE, flip_byte("map.npz"), match="map"),
    case("score-text-map", SCORE, write_text("map.npz", "not a map"), match="map"),
    case("score-missing-map", ["score", S, "--map", "{dir}/nope.npz", "--head", HI], match="no map file"),
    case("score-missing-head", ["score", S, "--map", M, "--head", "{dir}/nope.onnx"], match="nope.onnx"),
    case("score-text-head", ["score", S, "--map", M, "--head", "{dir}/h.onnx"], write_text("h.onnx", "x"),
         match="h.onnx"),
    case("score-text-map-named-as-text", SCORE, write_text("map.npz", "not a map"), match="(not an .npz archive)"),
    # -- links and special files inside a store: refused by every writer and reader, nothing outside touched --
    case("import-through-linked-features-folder", IMPORT + WITH_IDS,
         both(F, IDS, link_away("s.zarr/train/features", plant="new/keep.txt")), match="is a symbolic link"),
    case("import-overwrite-array-linked-to-another-store", IMPORT[:-1] + [R, "--overwrite"] + WITH_IDS,
         both(F, IDS, copy_store("other.zarr"), link_to(f"s.zarr/train/features/{R}",
                                                        f"other.zarr/train/features/{R}")), match="symbolic link"),
    case("import-linked-lock-folder", IMPORT + WITH_IDS, both(F, IDS, link_away("s.zarr/.lintwin-locks")),
         match="symbolic link"),
    case("import-linked-chunk-folder", IMPORT[:-1] + [R, "--overwrite"] + WITH_IDS,
         both(F, IDS, link_away(f"s.zarr/train/features/{R}/c", plant="0/keep.txt")), match="symbolic link"),
    case("synth-overwrite-linked-split", ["synth", "{dir}/t.zarr", "--train", "20", "--val", "10", "--dim-a", "4",
                                          "--dim-b", "3", "--seed", "1", "--overwrite"], synth_store_with_link("val"),
         match="symbolic link"),
    case("extract-into-linked-split", EXTRACT[:4] + [S, "--split", "test", "-q", "--workers", "1"],
         both(IMAGES, mkdir("outside/test"), lambda d: (d / "s.zarr" / "test").symlink_to(d / "outside" / "test")),
         match="symbolic link"),
    case("solve-linked-array-folder", SOLVE, both(copy_store("other.zarr"), link_to(
        f"s.zarr/train/features/{I}", f"other.zarr/train/features/{I}")), match="symbolic link"),
    case("solve-linked-chunk", SOLVE, link_to(_chunk("train", R, 1), _chunk("train", R, 0)),
         match="chunk 1 (rows 128..255) is a symbolic link"),
    case("info-metadata-is-a-fifo", ["info", S], fifo(FEATS_R), match="is a FIFO"),
    case("check-reports-links", ["check", S, "-q"], link_to(_chunk("val", I, 1), _chunk("val", I, 0)),
         match="symbolic link"),
    # -- stitch never replaces the networks it reads --------------------------------------------------
    case("stitch-o-over-the-source-network", STITCH + [f"{{dir}}/models/{R}.onnx"], models(R, I),
         match="would replace"),
    case("stitch-o-over-the-target-network", STITCH + [f"{{dir}}/models/{I}.onnx"], models(R, I),
         match="would replace"),
    case("stitch-o-hard-link-to-the-source", STITCH + ["{dir}/models/copy.onnx"],
         both(models(R, I), hard_link("models/copy.backbone.onnx", f"models/{R}.backbone.onnx")),
         match="would replace"),
    case("stitch-o-over-the-map", STITCH[:4] + ["{dir}/m.onnx"] + STITCH[5:] + ["{dir}/m.onnx"],
         both(models(R, I), lambda d: shutil.copyfile(d / "map.npz", d / "m.onnx")), match="would replace"),
    case("stitch-o-unwritable", STITCH + ["/proc/lintwin-stitched.onnx"], models(R, I), match="accepts no new files"),
    case("stitch-o-existing-folder", STITCH + ["{dir}/here.onnx"], both(models(R, I), mkdir("here.onnx")),
         match="is a directory"),
    # -- outputs checked before any work --------------------------------------------------------------
    case("solve-out-unwritable", SOLVE + ["--out", "/proc/lintwin-map.npz"], match="accepts no new files"),
    case("solve-out-fifo", SOLVE + ["--out", "{dir}/pipe"], lambda d: os.mkfifo(d / "pipe"),
         match="not a regular file"),
    case("compare-out-unwritable", COMPARE[:-1] + ["/proc/lintwin-cmp"], match="accepts no new files"),
    case("study-out-unwritable", STUDY + ["--out", "/proc/lintwin-study"], match="accepts no new files"),
    case("study-out-is-a-file", STUDY + ["--out", M], match="exists and is not a directory"),
    case("similarity-out-unwritable", SIMILARITY + ["--out", "/proc/lintwin-sim"], match="accepts no new files"),
    case("similarity-out-unwritable-before-the-pass", SIMILARITY + ["--out", "/proc/lintwin-sim"],
         delete(_chunk("train", R, 2)), match="accepts no new files"),
    case("similarity-out-is-a-file", SIMILARITY + ["--out", M], match="exists and is not a directory"),
    case("similarity-out-under-a-file", SIMILARITY + ["--out", "{dir}/map.npz/sim"], match="map.npz"),
    case("study-moments-folder-linked-outside", STUDY + ["--out", "{dir}/st"],
         both(mkdir("st"), mkdir("outside"), lambda d: (d / "st" / "moments").symlink_to(d / "outside")),
         match="symbolic link"),
    # -- refused names never create a store ------------------------------------------------------------
    case("extract-dotdot-name-new-store", EXTRACT + ["--name", ".."], IMAGES, match="is not allowed"),
    case("extract-slash-name-new-store", EXTRACT + ["--name", "a/b"], IMAGES, match="is not allowed"),
    case("extract-dotdot-split-new-store", EXTRACT + ["--split", ".."], IMAGES, match="is not allowed"),
    case("extract-empty-split-new-store", EXTRACT + ["--split", ""], IMAGES, match="is not allowed"),
    # -- tampered counts and attributes: refused at once, never looped over ----------------------------
    case("info-features-claim-1e12-rows", ["info", S], edit_json(FEATS_R, claim_rows(HUGE)), match="damaged"),
    case("check-features-claim-1e12-rows", ["check", S, "-q"], edit_json(FEATS_R, claim_rows(HUGE)),
         match="problem(s)"),
    case("solve-features-claim-1e12-rows", SOLVE, edit_json(FEATS_R, claim_rows(HUGE)), match="damaged"),
    case("info-labels-claim-1e12-rows", ["info", S], edit_json("s.zarr/val/labels/zarr.json", claim_rows(HUGE)),
         match="labels of split 'val' are damaged"),
    case("info-labels-one-chunk-of-1e12-rows", ["info", S],
         edit_json("s.zarr/val/labels/zarr.json", claim_rows(HUGE, chunk=HUGE)), match="cannot hold"),
    case("solve-claims-more-chunks-than-on-disk", SOLVE, edit_json(FEATS_R, claim_chunks(200)),
         match="but 5 chunk(s) are on disk"),
    case("solve-checksums-cut-short", SOLVE, edit_json(FEATS_R, lambda m: m["attributes"]["chunk_crc32c"].pop()),
         match="checksum(s)"),
    case("info-rows-written-deleted", ["info", S], edit_json(FEATS_R, lambda m: m["attributes"].pop("rows_written")),
         match="rows_written missing"),
    case("solve-rows-written-deleted", SOLVE, edit_json(FEATS_R, lambda m: m["attributes"].pop("rows_written")),
         match="rows_written missing"),
    case("solve-dim-deleted", SOLVE, edit_json(FEATS_R, lambda m: m["attributes"].pop("dim")),
         match="dim missing"),
    case("info-dim-edited", ["info", S], edit_json(FEATS_R, lambda m: m["attributes"].update(dim=3)),
         match="disagrees with the array's shape"),
    case("info-array-metadata-deleted", ["info", S], delete(FEATS_R), match="is missing"),
    case("check-array-metadata-deleted", ["check", S, "-q"], delete(FEATS_R), match="is missing"),
    case("info-zarr-v2-labels", ["info", S], v2_labels, match="zarr v2"),
    case("score-zarr-v2-labels", SCORE, v2_labels, match="zarr v2"),
    # -- extraction inputs ----------------------------------------------------------------------------
    case("extract-idx-2-31-dims", EXTRACT[:2] + ["{dir}/x-images-idx3-ubyte"] + EXTRACT[3:],
         idx_header((2**31, 2**31, 2**31)), match="its header"),
    case("extract-idx-zero-width", EXTRACT[:2] + ["{dir}/x-images-idx3-ubyte"] + EXTRACT[3:],
         idx_header((2**31, 0, 28)), match="H and W at least 1"),
    case("extract-ratio-inf", EXTRACT + ["--augment", "--ratio", "inf,inf"], IMAGES, match="ratio"),
    case("extract-scale-without-augment", EXTRACT + ["--scale", "0.5,1"], IMAGES, match="--scale only applies"),
    case("extract-no-flip-without-augment", EXTRACT + ["--no-flip"], IMAGES, match="--flip/--no-flip only applies"),
    case("extract-centre-view-without-augment", EXTRACT + ["--centre-view"], IMAGES,
         match="--centre-view only applies"),
    case("extract-sidecar-size-bomb", ["extract", f"{{dir}}/models/{R}.backbone.onnx"] + EXTRACT[2:],
         both(IMAGES, sidecar(R, lambda m: m["preprocess"].update(size=[100000, 100000]))), match="Pillow's limit"),
    case("extract-sidecar-fractional-feature-dim", ["extract", f"{{dir}}/models/{R}.backbone.onnx"] + EXTRACT[2:],
         both(IMAGES, sidecar(R, lambda m: m.update(feature_dim=128.7))), match="whole number"),
    case("extract-sidecar-head-outside-its-folder", ["extract", f"{{dir}}/models/{R}.backbone.onnx"] + EXTRACT[2:],
         both(IMAGES, sidecar(R, lambda m: m.update(head=str(MODELS / f"{R}.head.onnx")))),
         match="must be a file in the sidecar's folder"),
    # -- import of unknown rows into a split whose rows are named --------------------------------------
    case("import-without-ids-into-a-split-with-ids", IMPORT, F, match="names its rows"),
]


class Hung(Exception):
    pass


def _hung(signum, frame):
    raise Hung("the command ran for a minute: it hangs")


@pytest.mark.parametrize("args, damage, code, match", CASES)
def test_bad_input_is_refused_with_one_line(template, tmp_path, args, damage, code, match):
    shutil.copytree(template["store"], tmp_path / "s.zarr")
    shutil.copyfile(template["map"], tmp_path / "map.npz")
    if damage is not None:
        damage(tmp_path)
    argv = [a.format(store=tmp_path / "s.zarr", map=tmp_path / "map.npz", dir=tmp_path) for a in args]
    before = _tree_hash(tmp_path)
    old = signal.signal(signal.SIGALRM, _hung)
    signal.alarm(60)
    try:
        r = runner.invoke(app, argv)
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, old)
    after = _tree_hash(tmp_path)
    assert r.exception is None or isinstance(r.exception, SystemExit), f"uncaught {r.exception!r}"
    assert r.exit_code == code, (r.exit_code, r.stdout, r.stderr)
    assert "Traceback" not in r.stderr
    if code == 1:
        errors = [line for line in r.stderr.splitlines() if line.startswith("Error: ")]
        assert len(errors) == 1, r.stderr
        assert match in errors[0], errors[0]
    else:  # Typer's usage error box names the option
        assert match in r.stderr, r.stderr
    changed = sorted(k for k in set(before) | set(after) if before.get(k) != after.get(k))
    assert not changed, f"the command changed {changed}"


def test_the_table_has_at_least_120_rows():
    assert len(CASES) >= 120
