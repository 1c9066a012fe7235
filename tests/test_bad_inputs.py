"""Every mistake a user can make ends in one ``Error:`` line and a non-zero exit, with the store untouched.

Each row runs one command of the real CLI on a copy of a small real store (the bundled
Fashion-MNIST networks' dimensions, real ONNX heads) after an optional ``damage`` step, and
asserts: exit 1 (2 for Typer's own usage errors), exactly one ``Error: `` line on stderr
and no traceback, and every file under the store byte-identical afterwards.
"""

from __future__ import annotations

import hashlib
import json
import shutil
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import zarr
from typer.testing import CliRunner

from lintwin import AffineMap, FeatureStore
from lintwin.cli import app

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
    if not path.exists():
        return {}
    return {str(p.relative_to(path)): hashlib.sha256(p.read_bytes()).hexdigest() if p.is_file() else "dir"
            for p in sorted(path.rglob("*"))}


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
    case("import-text-file", IMPORT, write_text("f.npy", "1,2,3\n4,5,6\n"), match="is not a .npy or .npz file"),
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
    # -- bad map and head files ------------------------------------------------------------------------
    case("score-truncated-map", SCORE, truncate("map.npz"), match="map"),
    case("score-tampered-map", SCORE, flip_byte("map.npz"), match="map"),
    case("score-text-map", SCORE, write_text("map.npz", "not a map"), match="map"),
    case("score-missing-map", ["score", S, "--map", "{dir}/nope.npz", "--head", HI], match="no map file"),
    case("score-missing-head", ["score", S, "--map", M, "--head", "{dir}/nope.onnx"], match="nope.onnx"),
    case("score-text-head", ["score", S, "--map", M, "--head", "{dir}/h.onnx"], write_text("h.onnx", "x"),
         match="h.onnx"),
]


@pytest.mark.parametrize("args, damage, code, match", CASES)
def test_bad_input_is_refused_with_one_line(template, tmp_path, args, damage, code, match):
    shutil.copytree(template["store"], tmp_path / "s.zarr")
    shutil.copyfile(template["map"], tmp_path / "map.npz")
    if damage is not None:
        damage(tmp_path)
    argv = [a.format(store=tmp_path / "s.zarr", map=tmp_path / "map.npz", dir=tmp_path) for a in args]
    before = _tree_hash(tmp_path / "s.zarr")
    r = runner.invoke(app, argv)
    after = _tree_hash(tmp_path / "s.zarr")
    assert r.exception is None or isinstance(r.exception, SystemExit), f"uncaught {r.exception!r}"
    assert r.exit_code == code, (r.exit_code, r.stdout, r.stderr)
    assert "Traceback" not in r.stderr
    if code == 1:
        errors = [line for line in r.stderr.splitlines() if line.startswith("Error: ")]
        assert len(errors) == 1, r.stderr
        assert match in errors[0], errors[0]
    else:  # Typer's usage error box names the option
        assert match in r.stderr, r.stderr
    assert after == before, "the store changed"


def test_the_table_has_at_least_40_rows():
    assert len(CASES) >= 40
