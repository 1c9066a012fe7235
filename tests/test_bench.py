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
    assert "lintwin solve --both" in text and "2 x sklearn Ridge" in text and "ratio (Ridge / lintwin)" in text


def test_bench_similarity_cost_quick(tmp_path):
    proc = subprocess.run([sys.executable, str(ROOT / "bench" / "bench_similarity_cost.py"), "--quick", "--out",
                           str(tmp_path)], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    data = json.loads((tmp_path / "similarity_cost_quick.json").read_text())
    assert [r["dims"] for r in data["results"]] == [[200, 200], [200, 64]]
    assert all(r["seconds"] > r["moments_seconds"] > 0 and r["cpu_seconds"] > 0 for r in data["results"])
    assert "whole / pass" in proc.stdout
