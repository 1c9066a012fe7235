"""The Dask reduction on a real LocalCluster (worker processes on loopback, no dashboard)."""

import os
import random
import signal
import threading
import time

import numpy as np
import pytest

pytest.importorskip("distributed", reason="dask.distributed is not installed (pip install 'lintwin[dask]')")

from distributed import Client, LocalCluster  # noqa: E402

from lintwin import LintwinError, accumulate_store, maps_from_moments  # noqa: E402
from lintwin.core.distributed import accumulate_dask, parse_address, range_futures, row_ranges  # noqa: E402
from lintwin.storage.synthetic import write_synthetic_store  # noqa: E402


@pytest.fixture(scope="module")
def client():
    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True, host="127.0.0.1",
                      dashboard_address="127.0.0.1:0", worker_dashboard_address="127.0.0.1:0") as cluster, Client(cluster) as c:
        yield c


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    # 20,011 rows in chunks of 3,000: the last chunk is short.
    return write_synthetic_store(tmp_path_factory.mktemp("dask") / "s.zarr", train=20011, dim_a=96, dim_b=64,
                                 chunk_rows=3000)


def _close(m, ref, precision_tol):
    assert m.n == ref.n
    np.testing.assert_allclose(m.mean, ref.mean, rtol=1e-12)
    assert np.abs(m.comoment - ref.comoment).max() / np.abs(ref.comoment).max() < precision_tol


def _live_worker_pids(c, count, timeout=60.0):
    """Pids of ``count`` live workers, waiting for the nanny to restart a killed one."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        try:
            pids = c.run(os.getpid, on_error="ignore")
        except OSError:
            pids = {}
        if len(pids) >= count:
            return list(pids.values())
        time.sleep(0.2)
    raise TimeoutError("workers did not come back")


def test_row_ranges_are_chunk_aligned_and_cover_everything():
    assert row_ranges(20011, 3000, 4) == [(0, 6000), (6000, 12000), (12000, 18000), (18000, 20011)]
    assert row_ranges(100, 30, 10) == [(0, 30), (30, 60), (60, 90), (90, 100)]
    with pytest.raises(LintwinError, match="worker count"):
        parse_address("local:abc")


def test_same_as_single_process(client, store):
    ref = accumulate_store(store, "A", "B", progress=False)
    _close(accumulate_dask(client, store, "A", "B", progress=False), ref, 5e-6)  # float32 products round differently
    _close(accumulate_dask(client, store, "A", "B", parts=7, progress=False), ref, 5e-6)
    ref64 = accumulate_store(store, "A", "B", precision="float64", progress=False)
    m64 = accumulate_dask(client, store, "A", "B", precision="float64", parts=5, progress=False)
    _close(m64, ref64, 1e-12)
    w_ref = maps_from_moments(ref64)[0].weight
    w = maps_from_moments(m64)[0].weight
    assert np.linalg.norm(w - w_ref) / np.linalg.norm(w_ref) < 1e-10


def test_one_matrix_per_range_not_per_chunk(client, store):
    futures = range_futures(client, store, "A", "B", parts=2)
    assert len(futures) == 2
    client.cancel(futures)


def test_worker_killed_mid_pass_never_changes_the_answer(tmp_path):
    """Kill a worker while ranges are computed and merged, again and again: the answer never moves."""
    big = write_synthetic_store(tmp_path / "big.zarr", train=120000, dim_a=160, dim_b=128, chunk_rows=4000)
    ref = accumulate_store(big, "A", "B", precision="float64", progress=False)
    rng = random.Random(0)
    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True, host="127.0.0.1",
                      dashboard_address="127.0.0.1:0", worker_dashboard_address="127.0.0.1:0") as cluster, Client(cluster) as c:
        t0 = time.perf_counter()
        accumulate_dask(c, big, "A", "B", precision="float64", parts=12, progress=False)
        clean = time.perf_counter() - t0
        mid_pass = 0
        for _ in range(5):
            pids = _live_worker_pids(c, 2)
            victim = rng.choice(pids)
            killed_at = []
            timer = threading.Timer(rng.uniform(0.1, 0.7) * clean,
                                    lambda v=victim: (os.kill(v, signal.SIGKILL), killed_at.append(time.time())))
            timer.start()
            m = accumulate_dask(c, big, "A", "B", precision="float64", parts=12, progress=False)
            done = time.time()
            timer.join()
            mid_pass += bool(killed_at and killed_at[0] < done)
            _close(m, ref, 1e-12)
        assert mid_pass >= 3  # most kills landed while ranges were being computed or merged


def test_cli_solve_with_dask_matches_local(store):
    from typer.testing import CliRunner

    from lintwin.cli import app

    runner = CliRunner()
    local = runner.invoke(app, ["solve", str(store.path), "--src", "A", "--dst", "B", "-q"])
    dist = runner.invoke(app, ["solve", str(store.path), "--src", "A", "--dst", "B", "-q", "--dask", "local:2"])
    assert dist.exit_code == 0, dist.output
    assert "dask: local cluster of 2 workers, dashboard http://127.0.0.1:" in dist.stderr
    assert local.stdout.splitlines()[:3] == dist.stdout.splitlines()[:3]
    bad = runner.invoke(app, ["solve", str(store.path), "--src", "A", "--dst", "B", "--method", "adam",
                              "--dask", "local:1", "-q"])
    assert bad.exit_code == 1 and "Error: --dask runs the closed-form accumulation" in bad.stderr
    bad = runner.invoke(app, ["solve", str(store.path), "--src", "A", "--dst", "B", "--dask", "local:abc", "-q"])
    assert bad.exit_code == 1 and bad.stderr.strip().splitlines() == [
        "Error: --dask local:N needs a worker count N >= 1, got 'local:abc'"]
