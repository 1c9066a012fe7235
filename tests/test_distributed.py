"""The Dask reduction on a real LocalCluster (worker processes on loopback, no dashboard)."""

import os
import signal
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("distributed", reason="dask.distributed is not installed (pip install 'lintwin[dask]')")

from distributed import Client, LocalCluster  # noqa: E402

from lintwin import LintwinError, accumulate_store, maps_from_moments  # noqa: E402
from lintwin.core.distributed import accumulate_dask, parse_address, range_futures  # noqa: E402
from lintwin.storage.source import StoreSource, row_ranges  # noqa: E402
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


def test_row_ranges_are_chunk_aligned_and_cover_everything():
    assert row_ranges(20011, 3000, 4) == [(0, 6000), (6000, 12000), (12000, 18000), (18000, 20011)]
    assert row_ranges(100, 30, 10) == [(0, 30), (30, 60), (60, 90), (90, 100)]
    with pytest.raises(LintwinError, match="worker count"):
        parse_address("local:abc")


def test_same_as_single_process(client, store):
    ref = accumulate_store(store, "A", "B", progress=False)
    _close(accumulate_dask(client, StoreSource(store, "train", ["A", "B"]), progress=False), ref, 5e-6)  # float32 products round differently
    _close(accumulate_dask(client, StoreSource(store, "train", ["A", "B"]), parts=7, progress=False), ref, 5e-6)
    ref64 = accumulate_store(store, "A", "B", precision="float64", progress=False)
    m64 = accumulate_dask(client, StoreSource(store, "train", ["A", "B"]), precision="float64", parts=5, progress=False)
    _close(m64, ref64, 1e-12)
    w_ref = maps_from_moments(ref64)[0].weight
    w = maps_from_moments(m64)[0].weight
    assert np.linalg.norm(w - w_ref) / np.linalg.norm(w_ref) < 1e-10


def test_one_matrix_per_range_not_per_chunk(client, store):
    futures = range_futures(client, StoreSource(store, "train", ["A", "B"]), parts=2)
    assert len(futures) == 2
    client.cancel(futures)


class KillOnce(StoreSource):
    """A store range whose worker process kills itself (SIGKILL) at a chosen block of a chosen range, once.

    The marker file is made just before the kill, so the retry Dask schedules elsewhere reads on; a kill
    is triggered from inside the task, at a chosen point of the pass, never by racing a clock.
    """

    def __init__(self, *args, marker: Path, at: tuple[int, int], **kwargs):
        super().__init__(*args, **kwargs)
        self.marker, self.at = str(marker), at

    def blocks_for(self, place):  # what the pass driver reads (blocks() reads it too)
        for k, item in enumerate(super().blocks_for(place)):
            if (self.start, k) == self.at and not os.path.exists(self.marker):
                Path(self.marker).touch()
                os.kill(os.getpid(), signal.SIGKILL)
            yield item


def test_worker_killed_mid_pass_never_changes_the_answer(tmp_path):
    """Kill a worker inside a range task, at chosen blocks of chosen ranges: the answer never moves.

    Ranges finished earlier (and merges of them) held by the killed worker are lost with it and
    recomputed; the pure tasks give the same moments every time.
    """
    big = write_synthetic_store(tmp_path / "big.zarr", train=120000, dim_a=160, dim_b=128, chunk_rows=4000)
    ref = accumulate_store(big, "A", "B", precision="float64", progress=False)
    ranges = row_ranges(120000, 4000, 12)  # the ranges accumulate_dask makes with parts=12: 10 of 12,000 rows
    block_rows = 8000  # two blocks per range
    # (range index, block index within the range): first, middle and last ranges; first and last blocks
    points = [(0, 0), (len(ranges) // 2, 1), (len(ranges) - 1, 0), (3, 1), (len(ranges) - 1, 1)]
    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True, host="127.0.0.1",
                      dashboard_address="127.0.0.1:0", worker_dashboard_address="127.0.0.1:0") as cluster, Client(cluster) as c:
        for round_, (r, k) in enumerate(points):
            marker = tmp_path / f"killed-{round_}"
            source = KillOnce(big, "train", ["A", "B"], block_rows=block_rows, marker=marker, at=(ranges[r][0], k))
            m = accumulate_dask(c, source, precision="float64", parts=12, progress=False)
            assert marker.exists()  # the worker was killed inside the pass, at that block
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
    bad = runner.invoke(app, ["solve", str(store.path), "--src", "A", "--dst", "B", "--dask", "local:abc", "-q"])
    assert bad.exit_code == 1 and bad.stderr.strip().splitlines() == [
        "Error: --dask local:N needs a worker count N >= 1, got 'local:abc'"]
