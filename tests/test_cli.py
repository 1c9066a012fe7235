"""The command line: real stores on disk, exit codes and exact messages."""

import numpy as np
import pytest
from typer.testing import CliRunner

from lintwin import AffineMap
from lintwin.cli import app
from lintwin.experiments.demo import BUNDLED_MODELS

runner = CliRunner()


def run(*args):
    return runner.invoke(app, [str(a) for a in args])


@pytest.fixture
def store(tmp_path):
    path = tmp_path / "s.zarr"
    r = run("synth", path, "--train", 4000, "--val", 1000, "--dim-a", 24, "--dim-b", 16, "--names", "inc", "res")
    assert r.exit_code == 0, r.output
    return path


def test_solve_prints_train_and_val_metrics_and_writes_maps(store, tmp_path):
    r = run("solve", store, "--src", "inc", "--dst", "res", "--both", "--out", tmp_path / "maps", "-q", "--train-pass")
    assert r.exit_code == 0, r.output
    lines = r.stdout.splitlines()
    assert lines[0].split() == ["map", "split", "rows", "mean", "cos", "R²", "paper", "loss"]
    rows = [line.split() for line in lines[2:6]]
    assert [(x[0], x[1], x[2]) for x in rows] == [("inc→res", "train", "4000"), ("inc→res", "val", "1000"),
                                                  ("res→inc", "train", "4000"), ("res→inc", "val", "1000")]
    for x in rows:
        cos, r2, loss = map(float, x[3:6])
        assert 0.6 < cos < 1 and 0.3 < r2 < 1 and loss == pytest.approx(2 - 2 * cos, abs=2e-4)
    assert "fit time" in r.stdout
    m = AffineMap.load(tmp_path / "maps" / "res_to_inc.npz")
    assert (m.src, m.dst, m.weight.shape) == ("res", "inc", (24, 16))
    assert m.stats["val_metrics"]["rows"] == 1000
    # Without --train-pass the training R² comes from the moments: the same number, no cosine or loss.
    quick = run("solve", store, "--src", "inc", "--dst", "res", "--both", "-q")
    assert quick.exit_code == 0, quick.output
    qrows = [line.split() for line in quick.stdout.splitlines()[2:6]]
    for full, fast in zip(rows, qrows):
        assert fast[:3] == full[:3]
        if fast[1] == "train":
            assert fast[3] == "—" and fast[5] == "—" and float(fast[4]) == pytest.approx(float(full[4]), abs=2e-4)
        else:
            assert fast == full
    assert "train: R² exact from the moments" in quick.stdout
    assert "condition ≈" in quick.stdout and "expected relative error of W ≈" in quick.stdout


def test_out_is_checked_before_fitting_and_written_where_asked(store, tmp_path):
    (tmp_path / "file").write_text("x")
    r = run("solve", store, "--src", "inc", "--dst", "res", "--out", tmp_path / "file" / "m.npz")
    assert r.exit_code == 1 and r.stderr.startswith("Error: the folder of --out") and "is not a directory" in r.stderr
    assert "moments" not in r.stderr  # refused before any pass over the store
    r = run("solve", store, "--src", "inc", "--dst", "res", "--both", "--out", tmp_path / "file", "-q")
    assert r.exit_code == 1 and "exists and is not a directory" in r.stderr
    r = run("solve", store, "--src", "inc", "--dst", "res", "--out", tmp_path / "X.map", "-q")
    assert r.exit_code == 0, r.output
    assert (tmp_path / "X.map").is_file() and AffineMap.load(tmp_path / "X.map").name == "inc→res"


def test_solve_adam_writes_curve_png(store, tmp_path):
    r = run("solve", store, "--src", "inc", "--dst", "res", "--method", "adam", "--iterations", 60, "--lr", 0.01,
            "--batch", 256, "--out", tmp_path / "adam.npz", "-q")
    assert r.exit_code == 0, r.output
    m = AffineMap.load(tmp_path / "adam.npz")
    assert m.method == "adam" and m.loss_curve.shape == (60,) and m.options["batch"] == 256
    png = (tmp_path / "adam.loss.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 5000


def test_import_npy_and_npz(tmp_path):
    rng = np.random.default_rng(0)
    a, b = rng.random((300, 5)).astype(np.float32), rng.random((300, 3)).astype(np.float32)
    np.save(tmp_path / "a.npy", a)
    np.savez(tmp_path / "b.npz", feats=b, labels=np.arange(300) % 7)
    s = tmp_path / "s.zarr"
    assert run("import", tmp_path / "a.npy", "--store", s, "--name", "A").exit_code == 0
    r = run("import", tmp_path / "b.npz", "--store", s, "--name", "B", "--key", "feats", "--labels-key", "labels")
    assert r.exit_code == 0, r.output
    assert r.stdout.strip() == f"imported 300 x 3 features of B into {s} [train], rows without ids, with labels"
    r = run("info", s)
    assert "train: 300 rows, labels for 7 classes" in r.stdout and "A: dim 5" in r.stdout
    r = run("solve", s, "--src", "A", "--dst", "B", "-q")
    assert r.exit_code == 0 and r.stdout.splitlines()[2].split()[:3] == ["A→B", "train", "300"]


@pytest.mark.parametrize(
    "args,message",
    [
        (("solve", "{store}", "--src", "inc", "--dst", "vgg"), "Error: network 'vgg' not in split 'train'"),
        (("solve", "{store}", "--src", "inc", "--dst", "res", "--split", "test"), "Error: split 'test' not in store"),
        (("solve", "{tmp}/nothing.zarr", "--src", "a", "--dst", "b"), "Error: no feature store at"),
        (("solve", "{tmp}", "--src", "a", "--dst", "b"), "is not a lintwin feature store"),
        (("solve", "{store}", "--src", "inc", "--dst", "res", "--both", "--out", "{tmp}/m.npz", "-q"),
         "Error: --both writes two maps: give --out a directory"),
        (("solve", "{store}", "--src", "inc", "--dst", "res", "--device", "gpu"), "Error: --device gpu cannot be used"),
        (("solve", "{store}", "--src", "inc", "--dst", "res", "--ridge", "nan"), "Error: --ridge expects finite"),
        (("solve", "{store}", "--src", "inc", "--dst", "res", "--lr", "0"), "Error: the Adam learning rate must be"),
        (("solve", "{store}", "--src", "inc", "--dst", "res", "--decay", "1"), "Error: the learning-rate decay"),
    ],
)
def test_solve_errors(store, tmp_path, args, message):
    if "--device" in args:
        from lintwin.core.gpu import gpu_available

        if gpu_available():
            pytest.skip("a GPU is present")
    r = run(*(a.format(store=store, tmp=tmp_path) for a in args))
    assert r.exit_code == 1
    assert message in r.stderr
    assert "Traceback" not in r.output and len(r.stderr.strip().splitlines()) == 1


def test_import_errors(tmp_path):
    s = tmp_path / "s.zarr"
    np.save(tmp_path / "a.npy", np.ones((10, 4), np.float32))
    assert run("import", tmp_path / "a.npy", "--store", s, "--name", "A").exit_code == 0
    cases = []
    np.save(tmp_path / "short.npy", np.ones((9, 4), np.float32))
    cases.append((("import", tmp_path / "short.npy", "--store", s, "--name", "B"),
                  "Error: split 'train' already holds 10 rows of 'A'; 'B' has 9 rows"))
    bad = np.ones((10, 4), np.float32)
    bad[6, 1] = np.nan
    np.save(tmp_path / "nan.npy", bad)
    cases.append((("import", tmp_path / "nan.npy", "--store", s, "--name", "C"),
                  "Error: NaN or Inf in features of C: 1 row(s), at row 6"))
    np.save(tmp_path / "empty.npy", np.ones((0, 4), np.float32))
    cases.append((("import", tmp_path / "empty.npy", "--store", s, "--name", "D"), "holds zero rows"))
    np.save(tmp_path / "obj.npy", np.array([{"x": 1}], dtype=object), allow_pickle=True)
    cases.append((("import", tmp_path / "obj.npy", "--store", s, "--name", "E"), "it holds Python objects, and lintwin never unpickles data"))
    np.save(tmp_path / "vec.npy", np.ones(10, np.float32))
    cases.append((("import", tmp_path / "vec.npy", "--store", s, "--name", "F"), "must be 2-D (rows x dim)"))
    cases.append((("import", tmp_path / "a.npy", "--store", s, "--name", "A"), "pass --overwrite"))
    for args, message in cases:
        r = run(*args)
        assert r.exit_code == 1, (args, r.output)
        assert message in r.stderr, (message, r.stderr)
        assert "Traceback" not in r.output
    # Failed imports leave no half-written array behind.
    assert run("info", s).stdout.count("dim 4") == 1


def test_rank_deficient_solve_warns(tmp_path):
    s = tmp_path / "s.zarr"
    rng = np.random.default_rng(0)
    np.save(tmp_path / "a.npy", rng.random((20, 50)).astype(np.float32))
    np.save(tmp_path / "b.npy", rng.random((20, 4)).astype(np.float32))
    run("import", tmp_path / "a.npy", "--store", s, "--name", "A")
    run("import", tmp_path / "b.npy", "--store", s, "--name", "B")
    r = run("solve", s, "--src", "A", "--dst", "B", "-q")
    assert r.exit_code == 0
    assert ("Warning: A→B: fewer rows (20) than non-constant features + 1 (51); used the truncated solution of rank "
            "19 of 50") in r.stderr
    assert "solver eigh, rank 19" in r.stdout


def test_half_written_store_is_reported(tmp_path):
    from lintwin import FeatureStore

    s = FeatureStore.create(tmp_path / "s.zarr")
    for name in ("A", "B"):
        arr = s.open_features_for_write("train", name, rows=100, dim=3, chunk_rows=50)
        FeatureStore.write_rows(arr, 0, np.ones((50 if name == "B" else 100, 3), np.float32))
    r = run("solve", tmp_path / "s.zarr", "--src", "A", "--dst", "B")
    assert r.exit_code == 1
    assert "Error: features of 'B' in split 'train' are incomplete (50 of 100 rows written)" in r.stderr


def test_demo_without_the_data_set_says_how_to_get_it(tmp_path):
    r = run("demo", "--data", tmp_path / "none", "--out", tmp_path / "out", "-q")
    assert r.exit_code == 1
    assert "Error: Fashion-MNIST not found under" in r.stderr and "apt-get install dataset-fashion-mnist" in r.stderr


def test_extract_without_the_data_set_names_the_package(tmp_path):
    missing = tmp_path / "fashion-mnist" / "train-images-idx3-ubyte.gz"
    r = run("extract", BUNDLED_MODELS / "fmnist-resnet.backbone.onnx", missing, "--store", tmp_path / "s.zarr", "-q")
    assert r.exit_code == 1 and r.stderr.count("\n") == 1
    assert f"Error: no images at {missing}" in r.stderr and "apt-get install dataset-fashion-mnist" in r.stderr
    assert not (tmp_path / "s.zarr").exists()


def test_solve_without_out_says_no_map_was_written(store):
    r = run("solve", store, "--src", "inc", "--dst", "res", "-q")
    assert r.exit_code == 0, r.output
    assert r.stdout.splitlines()[-1].startswith("no map written (no --out): give --out MAP.npz")
