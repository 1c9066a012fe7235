"""The benchmark scripts run (in quick mode) and report what they promise."""

import json
import subprocess
import sys

from conftest import ROOT


def test_bench_solvers_quick(tmp_path):
    proc = subprocess.run([sys.executable, str(ROOT / "bench" / "bench_solvers.py"), "--quick", "--out", str(tmp_path)],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "vs lintwin" in proc.stdout and "% of SYRK" in proc.stdout
    data = json.loads((tmp_path / "solvers_quick.json").read_text())
    res = data["rows"][0]["results"]
    assert set(res) == {"lintwin", "lintwin64", "sk_ridge", "sk_linreg", "scipy", "adam"}
    assert res["lintwin"]["ab"]["w_rel_err"] < 1e-4 and res["lintwin"]["ba"]["w_rel_err"] < 1e-4
    assert res["lintwin64"]["ab"]["w_rel_err"] < 1e-9
    assert res["scipy"]["ab"]["w_rel_err"] == 0.0
    # The closed form is at least as good as the reference on held-out data; Adam is measured.
    assert abs(res["lintwin"]["ab"]["val_r2"] - res["scipy"]["ab"]["val_r2"]) < 1e-6
    assert res["adam"]["seconds_per_iteration"] > 0 and res["adam"]["extrapolated"]
    assert res["adam"]["ab_warm"]["val_paper_loss"] <= res["lintwin"]["ab"]["val_paper_loss"] + 1e-3
    assert data["rows"][0]["ceiling"]["syrk_gflops"] > 0


def test_bench_dask_quick(tmp_path):
    proc = subprocess.run([sys.executable, str(ROOT / "bench" / "bench_dask.py"), "--quick", "--out", str(tmp_path)],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    data = json.loads((tmp_path / "dask_quick.json").read_text())
    names = [r[0] for r in data["results"]]
    assert names[0].startswith("single process") and len(names) == 3
    assert all(r[3] < 1e-5 for r in data["results"])  # same moments to float32 rounding


def test_bench_study_quick(tmp_path):
    proc = subprocess.run([sys.executable, str(ROOT / "bench" / "bench_study.py"), "--quick", "--out", str(tmp_path)],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "wall ratio" in proc.stdout


def test_bench_solve_process_small(tmp_path):
    proc = subprocess.run([sys.executable, str(ROOT / "bench" / "bench_solve_process.py"), "--rows", "3000", "--val",
                           "500", "--dims", "48", "64", "--repeats", "1", "--work", str(tmp_path / "w"), "--out",
                           str(tmp_path)], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    text = (tmp_path / "solve_process_3000_48_64.txt").read_text()
    assert "lintwin solve --both" in text and "2 x sklearn Ridge" in text and "floor (ssyrk + 2 solves)" in text
    assert "lintwin / floor" in text and "Ridge / lintwin" in text


def test_solver_precision_quick(tmp_path):
    proc = subprocess.run([sys.executable, str(ROOT / "bench" / "solver_precision.py"), "--quick", "--out", str(tmp_path)],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    rows = json.loads((tmp_path / "solver_precision_quick.json").read_text())
    assert [(r["map"], r["precision"]) for r in rows] == [("A→B", "float32"), ("A→B", "float64"),
                                                          ("B→A", "float32"), ("B→A", "float64")]
    for r in rows:  # float64 products agree with gelsd to rounding; float32 products to the order stated
        assert r["prediction_rel_err"] < (1e-10 if r["precision"] == "float64" else 1e-4)
        assert r["estimated_prediction"] > 0 and r["estimated_w"] > 0


def test_layer_scripts_show_their_steps():
    """The layer scripts need the ImageNet store or minutes of extraction; here they only parse their command line."""
    for script, words in (("bench_layers.py", "accumulate"), ("layers_fashion.py", "sweep"),
                          ("layers_imagenet.py", "similarity")):
        proc = subprocess.run([sys.executable, str(ROOT / "bench" / script), "--help"], capture_output=True, text=True,
                              timeout=120)
        assert proc.returncode == 0 and words in proc.stdout, proc.stderr[-2000:]


def test_bench_pipeline_quick(tmp_path):
    proc = subprocess.run([sys.executable, str(ROOT / "bench" / "bench_pipeline.py"), "--quick", "--work",
                           str(tmp_path / "w"), "--out", str(tmp_path)], capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    text = (tmp_path / "pipeline_quick.txt").read_text()
    assert "ssyrk in memory" in text and "lintwin (this tree)" in text and "lintwin / floor" in text


def test_bench_gpu_runs_end_to_end_with_numpy(tmp_path):
    proc = subprocess.run([sys.executable, str(ROOT / "bench" / "bench_gpu.py"), "--numpy", "--work",
                           str(tmp_path / "w"), "--out", str(tmp_path)], capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    (result,) = tmp_path.glob("gpu_numpy-*.json")
    data = json.loads(result.read_text())
    assert data["numpy_mode"] and "ceilings" in data and "accumulate" in data and "similarity" in data


def test_bench_similarity_cost_quick(tmp_path):
    proc = subprocess.run([sys.executable, str(ROOT / "bench" / "bench_similarity_cost.py"), "--quick", "--out",
                           str(tmp_path)], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    data = json.loads((tmp_path / "similarity_cost_quick.json").read_text())
    assert [r["dims"] for r in data["results"]] == [[200, 200], [200, 64]]
    assert all(r["seconds"] > r["moments_seconds"] > 0 and r["cpu_seconds"] > 0 for r in data["results"])
    assert "whole / pass" in proc.stdout
