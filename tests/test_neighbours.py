"""Neighbourhood alignment: exact k-NN lists, mutual k-NN and CKNNA against their definitions, null, curve, CLI.

References are written here from the definitions, in float64 NumPy on dense n×n matrices:
neighbours by brute force (ties by row index), and Huh et al. (2024)'s mutual k-NN and CKNNA
(the formulas of platonic-rep's metrics.py, rewritten, on L2-normalised rows, without its 1e-6).
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from lintwin import FeatureStore, LintwinError
from lintwin.cli import app
from lintwin.core.distributed import dask_client
from lintwin.experiments.neighbours_study import neighbours
from lintwin.measures.knn_sources import ArraySource, StoreSource
from lintwin.measures.neighbour_lists import fingerprint, knn_dask, load_lists, save_lists, store_lists
from lintwin.measures.neighbours import bootstrap_mutual_knn, cknna, mutual_knn, mutual_knn_rows, permutation_null
from lintwin.measures.topk import exact_knn

runner = CliRunner()
N = 600


# -- references written from the definitions ----------------------------------------------------------------


def brute_knn(x: np.ndarray, k: int, metric: str) -> tuple[np.ndarray, np.ndarray]:
    """k nearest other rows by float64 key (−cosine or squared distance), ties by the smaller row index."""
    x = x.astype(np.float64)
    n = x.shape[0]
    if metric == "cosine":
        norms = np.sqrt((x * x).sum(1))
        key = -((x[:, None, :] * x[None, :, :]).sum(-1) / np.outer(norms, norms))
    else:
        key = ((x[:, None, :] - x[None, :, :]) ** 2).sum(-1)
    np.fill_diagonal(key, np.inf)
    idx = np.array([np.lexsort((np.arange(n), key[i]))[:k] for i in range(n)])
    return idx, np.take_along_axis(key, idx, 1)


def platonic_reference(xa: np.ndarray, xb: np.ndarray, k: int) -> tuple[float, float]:
    """Huh et al. (2024) mutual k-NN and CKNNA with dense masks and unbiased HSIC (Song et al. 2012, eq. 5)."""
    def unit(x):
        x = x.astype(np.float64)
        return x / np.sqrt((x * x).sum(1))[:, None]

    A, B = unit(xa), unit(xb)
    n = A.shape[0]
    K = (A[:, None, :] * A[None, :, :]).sum(-1)
    L = (B[:, None, :] * B[None, :, :]).sum(-1)

    def mask(S):
        S = S.copy()
        np.fill_diagonal(S, -np.inf)
        idx = np.array([np.lexsort((np.arange(n), -S[i]))[:k] for i in range(n)])
        M = np.zeros((n, n))
        M[np.arange(n)[:, None], idx] = 1.0
        return M

    def hsic(Kt, Lt):
        Kt, Lt = Kt.copy(), Lt.copy()
        np.fill_diagonal(Kt, 0)
        np.fill_diagonal(Lt, 0)
        return (np.sum(Kt * Lt.T) + Kt.sum() * Lt.sum() / ((n - 1) * (n - 2))
                - 2 * np.sum(Kt @ Lt) / (n - 2)) / (n * (n - 3))

    MK, ML = mask(K), mask(L)
    M = MK * ML
    mknn = float(((MK * ML).sum(1) / k).mean())
    return mknn, float(hsic(M * K, M * L) / np.sqrt(hsic(MK * K, MK * K) * hsic(ML * L, ML * L)))


def _data(kind: str, n: int = 240, d: int = 13, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    if kind == "integers":  # many exact ties: small integer features
        x = rng.integers(-2, 3, (n, d)).astype(np.float32)
        x[~x.any(1)] = 1
    elif kind == "duplicates":  # every row has several exact copies
        x = rng.standard_normal((n // 6, d)).astype(np.float32)[rng.integers(0, n // 6, n)]
    else:
        x = rng.standard_normal((n, d)).astype(np.float32)
    return x


def _pair(n: int = 200, seed: int = 1) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    z = rng.standard_normal((n, 5))
    xa = z @ rng.standard_normal((5, 12)) + 0.5 * rng.standard_normal((n, 12))
    xb = z @ rng.standard_normal((5, 9)) + 0.5 * rng.standard_normal((n, 9))
    return xa.astype(np.float32), xb.astype(np.float32)


# -- exact lists --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("metric", ["cosine", "l2"])
@pytest.mark.parametrize("kind", ["integers", "duplicates", "gaussian"])
def test_lists_equal_float64_brute_force(kind, metric):
    x = _data(kind)
    ref_idx, ref_key = brute_knn(x, 10, metric)
    for block_rows, segment_rows, pool in ((1, None, None), (7, 50, 10), (64, 13, None), (4096, None, 11)):
        nb = exact_knn(ArraySource(x), 10, metric=metric, block_rows=block_rows, segment_rows=segment_rows,
                       pool=pool)
        assert np.array_equal(nb.index, ref_idx), (block_rows, segment_rows, pool)
        np.testing.assert_allclose(nb.key, ref_key, rtol=0, atol=1e-12)


def test_rows_with_more_ties_than_the_pool_are_searched_again_exactly():
    x = _data("duplicates", n=180)  # about 6 copies of each row: ties at the k-th place
    for metric in ("cosine", "l2"):
        ref = brute_knn(x, 3, metric)[0]
        for segment_rows in (None, 40):  # the rows searched again held in memory, or read in one pass
            nb = exact_knn(ArraySource(x), 3, metric=metric, pool=3, segment_rows=segment_rows)
            assert nb.rechecked > 0
            assert np.array_equal(nb.index, ref)


def test_self_is_never_its_own_neighbour_but_a_duplicate_is():
    x = _data("gaussian", n=50)
    x[7] = x[30]
    nb = exact_knn(ArraySource(x), 4)
    assert not (nb.index == np.arange(50)[:, None]).any()
    assert nb.index[7, 0] == 30 and nb.index[30, 0] == 7
    assert nb.key[7, 0] == pytest.approx(-1.0, abs=1e-15)


def test_kernel_values_are_the_pairs_kernels():
    x = _data("gaussian", n=60)
    for metric in ("cosine", "l2"):
        nb = exact_knn(ArraySource(x), 5, metric=metric)
        x64 = x.astype(np.float64)
        dots = np.einsum("id,ikd->ik", x64, x64[nb.index])
        if metric == "cosine":
            norms = np.linalg.norm(x64, axis=1)
            dots = dots / (norms[:, None] * norms[nb.index])
        np.testing.assert_allclose(nb.kernel, dots, rtol=1e-13, atol=1e-13)


# -- the measures against Huh et al.'s definitions ----------------------------------------------------------


@pytest.mark.parametrize("k", [2, 5, 10])
@pytest.mark.parametrize("dupes", [False, True])
def test_mutual_knn_and_cknna_equal_the_platonic_definitions(k, dupes):
    xa, xb = _pair()
    if dupes:  # duplicate rows in both representations: exact ties
        xa[10:20], xb[10:20] = xa[0], xb[0]
    na, nb = exact_knn(ArraySource(xa), k), exact_knn(ArraySource(xb), k)
    ref_mknn, ref_cknna = platonic_reference(xa, xb, k)
    assert mutual_knn(na, nb) == pytest.approx(ref_mknn, abs=1e-15)
    assert cknna(na, nb) == pytest.approx(ref_cknna, rel=1e-11)


def test_identical_representations_align_perfectly():
    xa, _ = _pair()
    na = exact_knn(ArraySource(xa), 10)
    assert mutual_knn(na, na) == 1.0
    assert cknna(na, na) == pytest.approx(1.0, rel=1e-12)


# -- null and bootstrap -------------------------------------------------------------------------------------


def test_null_of_independent_representations_is_chance():
    rng = np.random.default_rng(3)
    n, k = 2000, 10
    na = exact_knn(ArraySource(rng.standard_normal((n, 8)).astype(np.float32)), k)
    nb = exact_knn(ArraySource(rng.standard_normal((n, 8)).astype(np.float32)), k)
    res = permutation_null(na, nb, repeats=40, seed=0)["mutual_knn"].as_dict()
    chance = k / (n - 1)
    assert abs(mutual_knn(na, nb) - chance) < 3 * res["sd"]  # independent data: observed value at chance
    assert abs(res["mean"] - chance) < 3 * res["sd"] / np.sqrt(40)  # null mean is k/(n-1)
    assert res["p_value"] > 1 / 41


def test_null_of_related_representations_is_far_below():
    xa, xb = _pair(n=400)
    na, nb = exact_knn(ArraySource(xa), 10), exact_knn(ArraySource(xb), 10)
    res = permutation_null(na, nb, repeats=30, seed=1)
    for name in ("mutual_knn", "cknna"):
        s = res[name].as_dict()
        assert s["p_value"] == pytest.approx(1 / 31) and s["z"] > 20


def test_bootstrap_equals_resampling_rows():
    xa, xb = _pair(n=400)
    na, nb = exact_knn(ArraySource(xa), 10), exact_knn(ArraySource(xb), 10)
    fast = bootstrap_mutual_knn(na, nb, n_boot=4000, seed=0)
    per_row = mutual_knn_rows(na, nb) / 10
    rng = np.random.default_rng(5)
    slow = per_row[rng.integers(0, 400, (4000, 400))].mean(1)
    low, high = np.percentile(slow, [2.5, 97.5])
    assert fast["low"] == pytest.approx(low, abs=0.006) and fast["high"] == pytest.approx(high, abs=0.006)
    assert fast["low"] < fast["estimate"] < fast["high"]


# -- stores, streaming, Dask, subsets, saved lists ----------------------------------------------------------


def _write_store(path: Path, n: int = N) -> Path:
    rng = np.random.default_rng(0)
    z = rng.standard_normal((n, 6))
    arrays = {"A": z @ rng.standard_normal((6, 12)) + 0.3 * rng.standard_normal((n, 12)),
              "B": np.maximum(z @ rng.standard_normal((6, 9)), 0) + 0.1 * rng.standard_normal((n, 9)),
              "C": rng.standard_normal((n, 7)),
              "nan": rng.standard_normal((n, 5)), "zero": rng.standard_normal((n, 5)),
              "huge": rng.standard_normal((n, 5))}
    arrays["nan"][3, 2] = np.nan
    arrays["zero"][5] = 0.0
    arrays["huge"][4] = 1e19
    s = FeatureStore.create(path)
    for split, rows in (("train", n), ("val", n // 2)):
        ids = [f"{split}/{i:05d}.png" for i in range(rows)]
        for name, x in arrays.items():
            arr = s.open_features_for_write(split, name, rows=rows, dim=x.shape[1], chunk_rows=128, ids=ids)
            FeatureStore.write_rows(arr, 0, x[:rows].astype(np.float32))
    s.close()
    return path


@pytest.fixture(scope="module")
def template(tmp_path_factory) -> Path:
    return _write_store(tmp_path_factory.mktemp("neighbours") / "s.zarr")


def _same(x, y) -> bool:
    return all(np.array_equal(getattr(x, f), getattr(y, f)) for f in ("index", "key", "kernel", "rows"))


def test_store_streaming_is_identical_for_any_block_size_and_over_dask(template):
    src = StoreSource(str(template), "train", "B")
    ref = exact_knn(src, 10, block_rows=4096)
    assert np.array_equal(ref.index, brute_knn(FeatureStore.open(template).features("train", "B")[:], 10,
                                               "cosine")[0])
    for block_rows in (1, 7, 64):
        assert _same(exact_knn(src, 10, block_rows=block_rows), ref), block_rows
    with dask_client("local:2", echo=lambda _: None) as client:
        assert _same(knn_dask(client, src, 10, metric="cosine", parts=3), ref)
        assert _same(knn_dask(client, src, 10, metric="cosine", block_rows=7, parts=5), ref)


def test_a_subset_is_searched_within_itself(template):
    rows = np.sort(np.random.default_rng(2).choice(N, 150, replace=False))
    got = exact_knn(StoreSource(str(template), "train", "A", tuple(rows.tolist())), 5, block_rows=16)
    x = FeatureStore.open(template).features("train", "A")[:][rows]
    want = exact_knn(ArraySource(x, rows=rows), 5)
    assert _same(got, want)
    assert np.array_equal(got.index, brute_knn(x, 5, "cosine")[0])


def test_size_curve_points_are_exact_on_nested_subsets(template):
    res = neighbours(template, "A", "B", k=5, sizes=[50, 200], null=3, seed=4, n_boot=0)
    assert [p["rows"] for p in res.curve] == [50, 200, N]
    order = np.random.default_rng(4).permutation(N)
    x = FeatureStore.open(template)
    for p in res.curve[:2]:
        rows = np.sort(order[: p["rows"]])
        xa, xb = x.features("train", "A")[:][rows], x.features("train", "B")[:][rows]
        mk, ck = platonic_reference(xa, xb, 5)
        assert p["mutual_knn"] == pytest.approx(mk, abs=1e-15) and p["cknna"] == pytest.approx(ck, rel=1e-11)
        assert p["null"]["mutual_knn"]["repeats"] == 3
    assert res.curve[-1]["mutual_knn"] == res.mutual_knn


def test_saved_lists_are_reused_only_for_the_same_features(tmp_path, template):
    path = tmp_path / "s.zarr"
    shutil.copytree(template, path)
    s = FeatureStore.open(path)
    old = fingerprint(s, "train", "A")
    nb, how = store_lists(s, "train", "A", 8, metric="cosine", save=True)
    assert how == "computed"
    again, how = store_lists(s, "train", "A", 5, metric="cosine")
    assert how == "reused" and _same(again, nb.head(5))
    assert load_lists(s, "train", "A", "l2", 5) is None and load_lists(s, "train", "A", "cosine", 9) is None
    s = FeatureStore.open(path, mode="r+")
    arr = s.open_features_for_write("train", "A", rows=N, dim=12, chunk_rows=128, overwrite=True,
                                    ids=[f"train/{i:05d}.png" for i in range(N)])
    FeatureStore.write_rows(arr, 0, np.random.default_rng(9).standard_normal((N, 12)).astype(np.float32))
    s.close()
    assert load_lists(FeatureStore.open(path), "train", "A", "cosine", 5) is None  # other values: computed again
    with pytest.raises(LintwinError, match="changed while their neighbours were computed"):
        save_lists(FeatureStore.open(path), "train", "A", nb, old)  # lists of the old values are not saved as the new


# -- the command line ---------------------------------------------------------------------------------------


def test_cli_reports_writes_json_and_png(tmp_path, template):
    out = tmp_path / "out"
    r = runner.invoke(app, ["neighbours", str(template), "--a", "A", "--b", "B", "--k", "5", "--null", "5",
                            "--sizes", "64,256", "--out", str(out), "-q"])
    assert r.exit_code == 0, r.stderr
    res = json.loads((out / "neighbours.json").read_text())
    for key in ("mutual_knn", "cknna", "k", "rows", "null_mean", "null_sd", "p_value", "z", "curve", "bootstrap"):
        assert key in res
    assert res["k"] == 5 and res["rows"] == N and [p["rows"] for p in res["curve"]] == [64, 256, N]
    xa, xb = (FeatureStore.open(template).features("train", n)[:] for n in ("A", "B"))
    mk, ck = platonic_reference(xa, xb, 5)
    assert res["mutual_knn"] == pytest.approx(mk, abs=1e-15) and res["cknna"] == pytest.approx(ck, rel=1e-11)
    assert (out / "neighbours.png").stat().st_size > 10_000
    assert "mutual k-NN (k=5)" in r.stdout


def test_cli_layer_matrix(tmp_path, template):
    out = tmp_path / "m"
    r = runner.invoke(app, ["neighbours", str(template), "--nets", "A", "B", "C", "--k", "5", "--out", str(out), "-q"])
    assert r.exit_code == 0, r.stderr
    res = json.loads((out / "neighbours_matrix.json").read_text())
    assert (out / "neighbours_matrix.png").stat().st_size > 10_000
    m = np.array(res["mutual_knn"])
    assert np.allclose(m, m.T) and np.all(np.diag(m) == 1.0)
    s = FeatureStore.open(template)
    na, nb = (exact_knn(StoreSource(str(template), "train", n), 5) for n in ("A", "B"))
    assert m[0, 1] == mutual_knn(na, nb)
    assert res["cknna"][0][1] == pytest.approx(cknna(na, nb), rel=1e-12) and s.rows("train") == res["rows"]


def _tree_hash(path: Path) -> dict[str, str]:
    return {str(p.relative_to(path)): hashlib.sha256(p.read_bytes()).hexdigest() if p.is_file() else "dir"
            for p in sorted(path.rglob("*"))}


def _edit_attrs(rel: str, **attrs):
    def go(d: Path) -> None:
        meta = json.loads((d / rel).read_text())
        meta["attributes"].update(attrs)
        (d / rel).write_text(json.dumps(meta))
    return go


def _touch(rel: str):
    return lambda d: (d / rel).write_text("x")


S = "{store}"
PAIR = ["neighbours", S, "--a", "A", "--b", "B", "--out", "{dir}/out", "-q"]
BAD = [
    pytest.param(PAIR + ["--k", str(N)], None, 1, f"k = {N} must be in 1..{N - 1}", id="k-equals-n"),
    pytest.param(PAIR + ["--k", "5000"], None, 1, "must be in 1..", id="k-above-n"),
    pytest.param(PAIR + ["--k", "0"], None, 2, "--k", id="k-zero"),
    pytest.param(PAIR, _edit_attrs("s.zarr/train/features/B/zarr.json", ids_sha256="0" * 64), 1,
                 "rows must be paired", id="unpaired-arrays"),
    pytest.param(["neighbours", S, "--a", "A", "--b", "nan", "--out", "{dir}/out"], None, 1,
                 "NaN or Inf in row(s) 3", id="nan-row"),
    pytest.param(["neighbours", S, "--a", "zero", "--b", "A", "--out", "{dir}/out"], None, 1,
                 "all-zero row(s) 5", id="zero-row-under-cosine"),
    pytest.param(["neighbours", S, "--nets", "A", "zero", "--out", "{dir}/out"], None, 1,
                 "all-zero row(s) 5", id="zero-row-in-matrix"),
    pytest.param(["neighbours", S, "--a", "huge", "--b", "A", "--metric", "l2", "--out", "{dir}/out"], None, 1,
                 "norm above 1e+18 (rows 4)", id="l2-distances-overflow-float32"),
    pytest.param(PAIR + ["--metric", "manhattan"], None, 2, "--metric", id="unknown-metric"),
    pytest.param(PAIR + ["--null", "1"], None, 1, "at least 2 repetitions", id="null-one"),
    pytest.param(PAIR + ["--null", "-3"], None, 1, "at least 2 repetitions", id="null-negative"),
    pytest.param(PAIR + ["--sizes", "8"], None, 1, "size 8 must be in 11..600", id="size-not-above-k"),
    pytest.param(PAIR + ["--sizes", "100,601"], None, 1, "size 601 must be in", id="size-above-n"),
    pytest.param(PAIR + ["--sizes", "1k"], None, 1, "--sizes expects", id="size-not-a-number"),
    pytest.param(PAIR + ["--bootstrap", "1"], None, 1, "--bootstrap", id="bootstrap-one"),
    pytest.param(["neighbours", S, "--a", "A", "--out", "{dir}/out"], None, 1, "both --a and --b", id="a-without-b"),
    pytest.param(["neighbours", S, "--out", "{dir}/out"], None, 1, "either --a and --b", id="no-arrays"),
    pytest.param(PAIR + ["--nets", "A", "C"], None, 1, "either --a and --b", id="pair-and-matrix"),
    pytest.param(["neighbours", S, "--nets", "A", "A", "--out", "{dir}/out"], None, 1, "two or more different",
                 id="matrix-repeated-array"),
    pytest.param(["neighbours", S, "--nets", "A", "B", "--null", "5", "--out", "{dir}/out"], None, 1,
                 "--null applies to a pair", id="matrix-null"),
    pytest.param(["neighbours", S, "--a", "A", "--b", "nope", "--out", "{dir}/out"], None, 1,
                 "network 'nope' not in", id="unknown-network"),
    pytest.param(PAIR + ["--split", "test"], None, 1, "split 'test' not in store", id="unknown-split"),
    pytest.param(PAIR, lambda d: (d / "s.zarr/train/features/A/c/2/0").unlink(), 1, "chunk 2 (rows 256..383) missing",
                 id="deleted-chunk"),
    pytest.param(["neighbours", S, "--a", "A", "--b", "B", "--out", "{dir}/f.txt"], _touch("f.txt"), 1,
                 "is not a directory", id="out-is-a-file"),
    pytest.param(["neighbours", "{dir}/nope.zarr", "--a", "A", "--b", "B", "--out", "{dir}/out"], None, 1,
                 "no feature store at", id="missing-store"),
]


@pytest.mark.parametrize("args, damage, code, match", BAD)
def test_bad_input_is_refused_with_one_line(template, tmp_path, args, damage, code, match):
    shutil.copytree(template, tmp_path / "s.zarr")
    if damage is not None:
        damage(tmp_path)
    before = _tree_hash(tmp_path / "s.zarr")
    r = runner.invoke(app, [a.format(store=tmp_path / "s.zarr", dir=tmp_path) for a in args])
    assert r.exception is None or isinstance(r.exception, SystemExit), f"uncaught {r.exception!r}"
    assert r.exit_code == code, (r.exit_code, r.stdout, r.stderr)
    assert "Traceback" not in r.stderr
    if code == 1:
        errors = [line for line in r.stderr.splitlines() if line.startswith("Error: ")]
        assert len(errors) == 1 and match in errors[0], r.stderr
    else:
        assert match in r.stderr, r.stderr
    assert _tree_hash(tmp_path / "s.zarr") == before, "the store changed"
    assert not (tmp_path / "out").exists(), "an output directory was created for a refused run"


def test_missing_faiss_is_one_line_naming_the_extra(template, tmp_path):
    code = ("import sys; sys.modules['faiss'] = None\n"
            "from lintwin.cli import main\n"
            f"sys.argv = ['lintwin', 'neighbours', {str(template)!r}, '--a', 'A', '--b', 'B', '--out', "
            f"{str(tmp_path / 'out')!r}, '-q']\nmain()")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                       env={**os.environ, "PYTHONWARNINGS": "ignore"})
    assert r.returncode == 1
    assert r.stderr.strip().splitlines() == ["Error: neighbour search needs FAISS: pip install 'lintwin[neighbours]' "
                                             "(faiss-cpu)"]
