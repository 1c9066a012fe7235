"""lintwin study: every ordered pair from one pass equals the pairwise fits; head-only maps; reruns; refusals."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper
from typer.testing import CliRunner

from lintwin import FeatureStore
from lintwin.api import accumulate_store, fit_store
from lintwin.cli import app
from lintwin.errors import LintwinError, ModelError
from lintwin.experiments.study import load_cached_moments, parse_bytes, resolve_heads, run_study, save_cached_moments
from lintwin.networks.head_maps import head_map, read_affine_head
from lintwin.networks.onnx_models import Head
from lintwin.storage.source import store_fingerprint

runner = CliRunner()
NETS = ("A", "B", "C", "D")
DIMS = {"A": 24, "B": 16, "C": 12, "D": 20}
CLASSES = 5


def write_head(path: Path, weight: np.ndarray, bias: np.ndarray, *, matmul: bool = False) -> Path:
    """A real ONNX head: one Gemm (or MatMul + Add) layer, features (batch x dim) → logits."""
    w = weight.astype(np.float32)
    x = helper.make_tensor_value_info("features", TensorProto.FLOAT, ["batch", w.shape[1]])
    y = helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["batch", w.shape[0]])
    if matmul:
        inits = [numpy_helper.from_array(np.ascontiguousarray(w.T), "W"), numpy_helper.from_array(bias.astype(np.float32), "b")]
        nodes = [helper.make_node("MatMul", ["features", "W"], ["xw"]), helper.make_node("Add", ["xw", "b"], ["logits"])]
    else:
        inits = [numpy_helper.from_array(w, "W"), numpy_helper.from_array(bias.astype(np.float32), "b")]
        nodes = [helper.make_node("Gemm", ["features", "W", "b"], ["logits"], transB=1)]
    model = helper.make_model(helper.make_graph(nodes, "head", [x], [y], initializer=inits),
                              opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, str(path))
    return path


def write_family(path: Path, dims: dict[str, int], rows: dict[str, int], seed: int = 0) -> FeatureStore:
    """Networks that see the same images: ReLUs of random projections of one shared latent, plus noise."""
    store = FeatureStore.create(path)
    rng = np.random.default_rng(seed)
    latent = 8
    proj = {n: rng.standard_normal((latent, d)) for n, d in dims.items()}
    for split, n in rows.items():
        z = rng.standard_normal((n, latent))
        for name, d in dims.items():
            f = np.maximum(z @ proj[name] + 0.3 * rng.standard_normal((n, d)), 0).astype(np.float32)
            arr = store.open_features_for_write(split, name, rows=n, dim=d, chunk_rows=500,
                                                source=f"test family {seed}", rows_identity=f"{split} {seed}")
            FeatureStore.write_rows(arr, 0, f)
        if split == "val":
            store.set_labels(split, np.argmax(z[:, :CLASSES], axis=1))
    return store


@pytest.fixture(scope="module")
def synth(tmp_path_factory):
    """Four related networks with labels, and least-squares heads fitted on train."""
    root = tmp_path_factory.mktemp("study")
    store = write_family(root / "s.zarr", DIMS, {"train": 3000, "val": 800})
    rng = np.random.default_rng(1)
    labels = np.argmax(rng.standard_normal((3000, CLASSES)), axis=1)  # heads only need to be affine and sensible
    heads = []
    for name in NETS:
        f = np.asarray(store.features("train", name)[:], np.float64)
        sol = np.linalg.lstsq(np.c_[f, np.ones(len(f))], np.eye(CLASSES)[labels], rcond=None)[0]
        heads.append(write_head(root / f"{name}.head.onnx", sol[:-1].T, sol[-1]))
    return store, heads, root


def test_every_study_map_equals_the_pairwise_fit(synth, tmp_path):
    store, heads, _ = synth
    res, maps = run_study(store, NETS, heads, precision="float64", device="cpu", out=tmp_path, progress=False,
                          echo=lambda s: None)
    assert len(maps["fitted"]) == 12 and res.moments["mode"] == "joint"
    for a, b in [("A", "B"), ("C", "A"), ("B", "D"), ("D", "C")]:
        ref = fit_store(store, a, b, precision="float64", device="cpu", both=True, progress=False)
        for mp in ref:
            got = maps["fitted"][(mp.src, mp.dst)]
            np.testing.assert_allclose(got.weight, mp.weight, rtol=0, atol=1e-9 * np.abs(mp.weight).max())
            np.testing.assert_allclose(got.bias, mp.bias, rtol=0, atol=1e-9 * max(1.0, np.abs(mp.bias).max()))
            assert got.n_train == mp.n_train == 3000


def test_ridge_auto_study_maps_equal_the_pairwise_cv_fits(synth, tmp_path):
    """λ per ordered pair by CV over images, from one pass of per-fold joint moments."""
    store, heads, _ = synth
    res, maps = run_study(store, NETS, heads, ridge="auto", folds=3, precision="float64", device="cpu",
                          out=tmp_path, progress=False, echo=lambda s: None)
    assert res.moments["mode"] == "joint folds" and len(maps["fitted"]) == 12
    for a, b in [("A", "B"), ("D", "C")]:
        ref = fit_store(store, a, b, ridge="auto", folds=3, precision="float64", device="cpu", both=True,
                        progress=False)
        for mp in ref:
            got = maps["fitted"][(mp.src, mp.dst)]
            assert got.options["chosen_ridge"] == mp.options["chosen_ridge"] > 0
            np.testing.assert_allclose(got.weight, mp.weight, rtol=0, atol=1e-9 * np.abs(mp.weight).max())


def test_adam_study_maps_equal_the_pairwise_adam_fits(synth, tmp_path):
    from lintwin import AdamOptions

    store, heads, _ = synth
    opts = AdamOptions(lr=0.01, batch=256, iterations=30)
    _, maps = run_study(store, ("A", "B", "C"), heads[:3], method="adam", adam=opts, device="cpu", out=tmp_path,
                        progress=False, echo=lambda s: None)
    assert len(maps["fitted"]) == 6 and all(mp.method == "adam" for mp in maps["fitted"].values())
    for mp in fit_store(store, "A", "C", method="adam", adam=opts, device="cpu", both=True, progress=False):
        np.testing.assert_array_equal(maps["fitted"][(mp.src, mp.dst)].weight, mp.weight)


def test_float32_study_maps_equal_the_pairwise_fit_to_float32_rounding(synth, tmp_path):
    store, heads, _ = synth
    _, maps = run_study(store, NETS, heads, device="cpu", out=tmp_path, progress=False, echo=lambda s: None)
    for mp in fit_store(store, "B", "C", device="cpu", both=True, progress=False):
        got = maps["fitted"][(mp.src, mp.dst)]
        assert np.abs(got.weight - mp.weight).max() <= 1e-4 * np.abs(mp.weight).max()


def test_study_matrices_agree_with_direct_scoring(synth, tmp_path):
    """Accuracy, loss and Fig. 5 counts recomputed here from the heads and the saved maps."""
    store, heads, _ = synth
    res, maps = run_study(store, NETS, heads, device="cpu", out=tmp_path, progress=False, echo=lambda s: None)
    labels = store.labels("val")
    feats = {n: np.asarray(store.features("val", n)[:]) for n in NETS}
    own = {n: Head(h).predict(feats[n]) == labels for n, h in zip(NETS, heads)}
    acc = res.matrices["fitted"]["accuracy"]
    for i, a in enumerate(NETS):
        assert acc[i][i] == pytest.approx(100 * own[a].mean())
        for j, b in enumerate(NETS):
            if i == j:
                continue
            mp = maps["fitted"][(a, b)]
            hit = Head(heads[j]).predict(mp.apply(feats[a]).astype(np.float32)) == labels
            assert acc[i][j] == pytest.approx(100 * hit.mean())
            assert res.matrices["fitted"]["loss"][i][j] == pytest.approx(100 * (own[b].mean() - hit.mean()))
            row = next(r for r in res.pairs["fitted"] if (r["src"], r["dst"]) == (a, b))
            assert row["fixed"] == int(np.sum(~own[b] & hit)) and row["broken"] == int(np.sum(own[b] & ~hit))
            assert sum(row["regions"].values()) == len(labels)
    losses = [r["loss"] for r in res.pairs["fitted"]]
    assert res.median_loss("fitted") == pytest.approx(float(np.median(losses)))


@pytest.mark.parametrize("matmul", [False, True])
def test_head_only_map_reproduces_the_logits_where_exact(tmp_path, matmul):
    rng = np.random.default_rng(1)
    wa, ba = rng.standard_normal((CLASSES, 12)), rng.standard_normal(CLASSES)
    wb, bb = rng.standard_normal((CLASSES, 20)), rng.standard_normal(CLASSES)
    ha = read_affine_head(write_head(tmp_path / "a.onnx", wa, ba))
    hb = read_affine_head(write_head(tmp_path / "b.onnx", wb, bb, matmul=matmul))
    mp = head_map(ha, hb, "a", "b")
    assert mp.stats["exact"] and mp.weight.shape == (20, 12)
    x = rng.standard_normal((64, 12)).astype(np.float32)
    want = Head(tmp_path / "a.onnx")(x)
    got = Head(tmp_path / "b.onnx")(mp.apply(x.astype(np.float64)).astype(np.float32))
    np.testing.assert_allclose(got, want, atol=1e-5 * max(1.0, np.abs(want).max()), rtol=0)
    # more classes than B's feature dims: least squares, flagged as not exact, and not reproducing the logits
    wc = rng.standard_normal((CLASSES, 3))
    mp2 = head_map(ha, read_affine_head(write_head(tmp_path / "c.onnx", wc, bb)), "a", "c")
    assert not mp2.stats["exact"] and mp2.stats["relative_residual"] > 1e-3


def test_head_only_maps_in_the_study_give_the_source_accuracy(synth, tmp_path):
    store, heads, _ = synth
    res, _ = run_study(store, NETS, heads, method="heads", device="cpu", out=tmp_path, progress=False,
                       echo=lambda s: None)
    assert "fitted" not in res.pairs and res.moments["mode"] == "none"
    for r in res.pairs["heads"]:
        assert r["map_stats"]["exact"]
        src_acc = res.own_accuracy[NETS.index(r["src"])]
        assert abs(r["accuracy"] - src_acc) <= 100 / res.images * 2  # logits reproduced up to float32 ties


def test_a_head_that_is_not_one_affine_layer_is_refused(tmp_path):
    x = helper.make_tensor_value_info("features", TensorProto.FLOAT, ["batch", 4])
    y = helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["batch", 4])
    model = helper.make_model(helper.make_graph([helper.make_node("Relu", ["features"], ["logits"])], "h", [x], [y]),
                              opset_imports=[helper.make_opsetid("", 17)])
    onnx.save(model, str(tmp_path / "relu.onnx"))
    with pytest.raises(ModelError, match="not a single affine layer .* its graph is Relu"):
        read_affine_head(tmp_path / "relu.onnx")


def test_killed_study_rerun_reuses_the_saved_moments(synth, tmp_path):
    store, heads, _ = synth
    said: list[str] = []
    res1, maps1 = run_study(store, NETS, heads, device="cpu", out=tmp_path, progress=False, echo=said.append)
    saved = Path(res1.moments["path"])
    assert saved.is_file() and not res1.moments["reused"]
    res2, maps2 = run_study(store, NETS, heads, device="cpu", out=tmp_path, progress=False, echo=said.append)
    assert res2.moments["reused"] and res2.moments["passes"] == 0 and any("reusing" in s for s in said)
    for key, mp in maps1["fitted"].items():
        np.testing.assert_array_equal(maps2["fitted"][key].weight, mp.weight)
    # moments of other data (another network order of the same store counts as other data) are not reused
    jm = load_cached_moments(saved, store_fingerprint(store, "train", ["B", "A", "C", "D"]))
    assert jm is None


def test_joint_moments_of_a_half_written_file_are_refused(synth, tmp_path):
    store, _, _ = synth
    jm = accumulate_store(store, "A", "B", device="cpu", progress=False)
    path = save_cached_moments(jm, tmp_path / "j.npz", {"x": 1})
    path.write_bytes(path.read_bytes()[:100])
    with pytest.raises(LintwinError, match="not a lintwin joint-moments file"):
        load_cached_moments(path, {"x": 1})


def test_pairwise_fallback_when_the_joint_moments_do_not_fit(synth, tmp_path):
    store, heads, _ = synth
    said: list[str] = []
    total = sum(DIMS.values())
    budget = 20 * total * total - 1  # just under the joint estimate, above any pair's
    res, maps = run_study(store, NETS, heads, precision="float64", device="cpu", out=tmp_path, progress=False,
                          echo=said.append, max_memory=budget)
    assert res.moments["mode"] == "pairwise" and res.moments["passes"] == 6
    assert any("falling back to one pass per pair" in s and f"Σd = {total}" in s for s in said)
    _, joint = run_study(store, NETS, heads, precision="float64", device="cpu", out=tmp_path / "j", progress=False,
                         echo=said.append)
    for key, mp in maps["fitted"].items():
        want = joint["fitted"][key].weight
        np.testing.assert_allclose(mp.weight, want, atol=1e-9 * np.abs(want).max(), rtol=0)
    with pytest.raises(LintwinError, match="even one pair's moments need"):
        run_study(store, NETS, heads, device="cpu", out=tmp_path / "k", progress=False, echo=said.append,
                  max_memory=1000)


def test_parse_bytes():
    assert parse_bytes("8G") == 8 * 2**30 and parse_bytes("512M") == 512 * 2**20 and parse_bytes("1000") == 1000
    with pytest.raises(LintwinError, match="--max-memory must be a size"):
        parse_bytes("lots")


def test_cli_study_writes_matrices_pictures_report(synth, tmp_path):
    store, heads, _ = synth
    out = tmp_path / "study"
    r = runner.invoke(app, ["study", str(store.path), "--nets", *NETS, "--heads", *map(str, heads), "--out", str(out),
                            "--device", "cpu", "-q"])
    assert r.exit_code == 0, r.output
    assert "median loss over 12 ordered pairs" in r.stdout
    data = json.loads((out / "study.json").read_text())
    assert data["networks"] == list(NETS) and len(data["pairs"]["fitted"]) == 12 and len(data["pairs"]["heads"]) == 12
    report = (out / "report.md").read_text()
    assert "Median loss over 12 ordered pairs" in report and "Maps from the heads alone" in report
    assert "measures the heads, not whether" in report
    for png in ("loss.png", "accuracy.png", "r2.png", "heads_loss.png", "similarity_cka.png"):
        assert (out / png).read_bytes()[:4] == b"\x89PNG"
    assert len(list((out / "maps" / "fitted").glob("*.npz"))) == 12
    # the same study in the other formats: stdout holds only the JSON, the CSV or the Markdown
    common = ["study", str(store.path), "--nets", *NETS, "--heads", *map(str, heads), "--out", str(out),
              "--device", "cpu", "-q", "--format"]
    r = runner.invoke(app, common + ["json"])
    assert r.exit_code == 0, r.output
    assert json.loads(r.stdout)["matrices"]["fitted"]["accuracy"] == data["matrices"]["fitted"]["accuracy"]
    r = runner.invoke(app, common + ["csv"])
    assert r.exit_code == 0, r.output
    rows = r.stdout.strip().splitlines()
    assert rows[0].startswith("maps,source,target,accuracy,loss") and len(rows) == 1 + 24
    r = runner.invoke(app, common + ["markdown"])
    assert r.exit_code == 0, r.output
    assert r.stdout.startswith("**Top-1 accuracy (%)") and "| source \\ target | A | B | C | D |" in r.stdout


def test_study_result_is_labelled_xarray_and_pandas(synth, tmp_path):
    store, heads, _ = synth
    res, _ = run_study(store, NETS, heads, precision="float64", device="cpu", out=tmp_path, progress=False,
                       echo=lambda s: None)
    acc = res["accuracy"]
    assert acc.dims == ("source", "target") and list(acc.coords["source"].values) == list(NETS)
    i, j = NETS.index("C"), NETS.index("A")
    assert float(acc.sel(source="C", target="A")) == res.matrices["fitted"]["accuracy"][i][j]
    assert float(res.loss.sel(source="A", target="A")) == 0.0
    ds = res.to_xarray()
    assert set(ds.data_vars) >= {"accuracy", "loss", "agreement", "r2", "cka", "svcca", "pwcca"}
    assert float(ds["cka"].sel(source="A", target="B")) == float(ds["cka"].sel(source="B", target="A"))
    assert ds.attrs["eval_split"] == "val" and res.to_xarray("heads").attrs["maps"] == "heads"
    frame = res.to_frame()
    assert len(frame) == 12 and frame.loc[("C", "A"), "accuracy"] == res.matrices["fitted"]["accuracy"][i][j]
    assert "\n" not in repr(res) and "4 networks" in repr(res) and "median loss" in repr(res)
    assert res.to_dict() == res.as_dict()


@pytest.mark.parametrize("args, message", [
    (["--nets", "A"], "at least two distinct networks"),
    (["--nets", "A", "Z"], "network 'Z' not in split"),
    (["--nets", "A", "B", "--ridge", "-1"], "--ridge expects finite numbers"),
    (["--nets", "A", "B", "--ridge", "1,2"], "one λ for every pair"),
    (["--nets", "A", "B", "--method", "adam", "--lr", "0"], "learning rate must be"),
    (["--nets", "A", "B", "--eval-split", "train"], "needs a label for every image"),
    (["--nets", "A", "B", "--max-memory", "lots"], "--max-memory must be a size"),
    (["--nets", "A", "B", "--stitch", "A", "Z"], "'Z' is not among --nets"),
])
def test_cli_study_bad_inputs_give_one_error_line(synth, tmp_path, args, message):
    store, heads, _ = synth
    hs = [str(heads[NETS.index(n)]) if n in NETS else str(heads[0]) for n in args[1:] if not n.startswith("-")][:2]
    nets_end = 1 + next((k for k, t in enumerate(args[1:]) if t.startswith("-")), len(args) - 1)
    argv = ["study", str(store.path), *args[:nets_end], "--heads", *hs, *args[nets_end:], "--out", str(tmp_path)]
    r = runner.invoke(app, argv)
    assert r.exit_code == 1, r.output
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: ") and message in lines[0], r.stderr


def test_cli_study_needs_heads(synth, tmp_path):
    store, heads, _ = synth
    r = runner.invoke(app, ["study", str(store.path), "--nets", "A", "B", "--out", str(tmp_path)])
    assert r.exit_code == 1 and "Error: give the networks' heads" in r.stderr
    r = runner.invoke(app, ["study", str(store.path), "--nets", "A", "B", "C", "--heads", str(heads[0]),
                            "--out", str(tmp_path)])
    assert r.exit_code == 1 and "one head per network: 3 networks, 1 heads" in r.stderr


def test_study_killed_after_its_first_pass_reuses_the_moments_on_rerun(synth, tmp_path):
    """A real process is killed (SIGKILL) once its moments are on disk; the rerun does not make the pass again."""
    store, heads, _ = synth
    out = tmp_path / "out"
    argv = [sys.executable, "-m", "lintwin.cli", "study", str(store.path), "--nets", *NETS,
            "--heads", *map(str, heads), "--out", str(out), "--device", "cpu", "-q"]
    proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    saved = out / "moments" / "joint_train_float32.npz"
    deadline = time.monotonic() + 120
    while not saved.exists() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert saved.is_file()
    assert not list(saved.parent.glob(".*.tmp"))  # no half-written file left beside it
    said: list[str] = []
    res, _ = run_study(store, NETS, heads, device="cpu", out=out, progress=False, echo=said.append)
    assert res.moments["reused"] and res.moments["passes"] == 0


def test_models_folder_heads_must_belong_to_the_stored_features(tmp_path):
    """--models DIR reads NAME.json sidecars; a backbone whose SHA-256 differs from the store's is refused."""
    store = FeatureStore.create(tmp_path / "s.zarr")
    backbone = write_head(tmp_path / "A.backbone.onnx", np.eye(4), np.zeros(4))  # any ONNX file: only hashed here
    head = write_head(tmp_path / "A.head.onnx", np.eye(CLASSES, 4), np.zeros(CLASSES))
    sidecar = {"name": "A", "backbone": backbone.name, "head": head.name, "feature_dim": 4, "classes": CLASSES,
               "preprocess": {"size": [28, 28], "channels": 1, "resize": None, "mean": [0.5], "std": [0.5]}}
    (tmp_path / "A.json").write_text(json.dumps(sidecar))
    from lintwin.networks.onnx_models import file_sha256

    for sha, ok in ((file_sha256(backbone), True), ("0" * 64, False)):
        arr = store.open_features_for_write("val", "A", rows=10, dim=4, model_sha256=sha, source="t", overwrite=True,
                                            rows_identity="val")
        FeatureStore.write_rows(arr, 0, np.ones((10, 4), np.float32))
        if ok:
            assert resolve_heads(store, "val", ["A"], None, tmp_path) == [head]
        else:
            with pytest.raises(LintwinError, match="is not the model whose features the store holds for 'A'"):
                resolve_heads(store, "val", ["A"], None, tmp_path)
    with pytest.raises(LintwinError, match="belongs to network 'A', but is given for 'B'"):
        resolve_heads(store, "val", ["B"], [head], None)


def test_study_on_a_dask_cluster_gives_the_same_maps(synth, tmp_path):
    """The joint moments accumulated on a real LocalCluster (loopback) equal the single-process ones."""
    pytest.importorskip("distributed", reason="dask.distributed is not installed")
    from lintwin.core.distributed import dask_client

    store, heads, _ = synth
    _, local = run_study(store, NETS, heads, precision="float64", device="cpu", out=tmp_path / "a", progress=False,
                         echo=lambda s: None)
    with dask_client("local:2", echo=lambda s: None) as client:
        res, on_dask = run_study(store, NETS, heads, precision="float64", device="cpu", out=tmp_path / "b",
                                 progress=False, dask_client=client, echo=lambda s: None)
    assert res.moments["mode"] == "joint" and res.n_train == 3000
    for key, mp in local["fitted"].items():
        want = mp.weight
        np.testing.assert_allclose(on_dask["fitted"][key].weight, want, atol=1e-9 * np.abs(want).max(), rtol=0)
