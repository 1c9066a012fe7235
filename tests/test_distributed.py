"""The Dask reduction on a real LocalCluster (2 worker processes on loopback)."""

import os
import signal
import time

import numpy as np
import pytest

pytest.importorskip("distributed", reason="dask.distributed is not installed (pip install 'lintwin[dask]')")

from distributed import Client, LocalCluster, wait  # noqa: E402

from lintwin import accumulate_store, maps_from_moments  # noqa: E402
from lintwin.distributed import accumulate_dask, block_futures, reduce_futures  # noqa: E402
from lintwin.synthetic import write_synthetic_store  # noqa: E402


@pytest.fixture(scope="module")
def client():
    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True, host="127.0.0.1",
                      dashboard_address=":0") as cluster, Client(cluster) as c:
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


def test_same_as_single_process_for_aligned_and_unaligned_blocks(client, store):
    ref = accumulate_store(store, "A", "B", progress=False, block_rows=3000)
    same = accumulate_dask(client, store, "A", "B", progress=False)  # blocks = store chunks
    _close(same, ref, 1e-6)  # workers run single-threaded BLAS: float32 products round differently
    odd = accumulate_dask(client, store, "A", "B", block_rows=2500, progress=False)  # not chunk-aligned
    _close(odd, ref, 5e-6)
    ref64 = accumulate_store(store, "A", "B", precision="float64", progress=False)
    _close(accumulate_dask(client, store, "A", "B", precision="float64", block_rows=1777, progress=False), ref64,
           1e-12)
    w_ref = maps_from_moments(ref64)[0].weight
    w = maps_from_moments(odd)[0].weight
    assert np.linalg.norm(w - w_ref) / np.linalg.norm(w_ref) < 1e-4


def test_lost_worker_is_recomputed(client, store):
    ref = accumulate_store(store, "A", "B", precision="float64", progress=False)
    futures = block_futures(client, store, "A", "B", precision="float64", block_rows=1000)
    wait(futures)
    holders = client.who_has(futures)
    pids = client.run(os.getpid)
    victim = next(addr for addrs in holders.values() for addr in addrs)
    os.kill(pids[victim], signal.SIGKILL)  # its block results are gone with it
    deadline = time.time() + 30
    while victim in client.scheduler_info()["workers"] and time.time() < deadline:
        time.sleep(0.1)
    m = reduce_futures(client, futures, (96, 64), ("A", "B"), "float64", progress=False)
    _close(m, ref, 1e-12)


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
