"""The moment accumulation on a Dask cluster: one task per large row range, merged in a tree.

Each range task opens the store on its worker, streams its rows of both networks block by
block into one :class:`Moments` (with CuPy when that worker has a GPU) and returns the
moments as NumPy: one d×d matrix per range, not per chunk. Ranges are merged pairwise with
:meth:`Moments.merge` in a binary tree; the solve then happens once, on the client.

Every task is a pure function of its inputs (merges build new arrays and never touch their
arguments), so when a worker is lost Dask recomputes what it held and the answer is the same.

``address`` is a scheduler address (``tcp://host:8786``) or ``local`` / ``local:N`` for a
local cluster of N worker processes on 127.0.0.1 (scheduler, workers and dashboard bind to
loopback). GPU workers: start them with dask-cuda (``dask cuda worker tcp://host:8786``) and
install ``lintwin[gpu]`` on every worker. The store's path must be readable by every worker.
"""

from __future__ import annotations

from collections.abc import Sequence
from contextlib import contextmanager
from typing import Any, Iterator

import numpy as np

from ..errors import LintwinError
from ..storage.store import FeatureStore
from .gpu import resolve_device, to_device
from .moments import Moments, locate_nonfinite
from .xp import to_numpy

__all__ = ["accumulate_dask", "dask_client", "parse_address", "range_futures", "reduce_futures", "row_ranges"]

MomentTuple = tuple[int, np.ndarray, np.ndarray]


def parse_address(address: str) -> tuple[str, int | None]:
    """``("local", N)`` for ``local`` / ``local:N``, else ``(address, None)``; refuses malformed ``local:``."""
    if address == "local":
        return "local", 2
    if address.startswith("local:"):
        count = address.split(":", 1)[1]
        if not count.isdigit() or int(count) < 1:
            raise LintwinError(f"--dask local:N needs a worker count N >= 1, got {address!r}")
        return "local", int(count)
    return address, None


@contextmanager
def dask_client(address: str, *, echo=print) -> Iterator[Any]:
    """A ``distributed.Client`` for ``address`` (``local[:N]`` starts a local cluster on loopback)."""
    where, workers = parse_address(address)
    try:
        from distributed import Client, LocalCluster
    except ImportError:
        raise LintwinError("--dask needs dask.distributed: pip install 'lintwin[dask]'") from None
    if where == "local":
        with LocalCluster(n_workers=workers, threads_per_worker=1, processes=True, host="127.0.0.1",
                          dashboard_address="127.0.0.1:0", worker_dashboard_address="127.0.0.1:0") as cluster, \
                Client(cluster) as client:
            echo(f"dask: local cluster of {workers} workers, dashboard {client.dashboard_link}")
            yield client
        return
    try:
        client = Client(address, timeout="10s")
    except (OSError, TimeoutError, ValueError) as exc:
        raise LintwinError(f"cannot reach the Dask scheduler at {address}: {exc}") from None
    with client:
        echo(f"dask: {len(client.scheduler_info()['workers'])} workers at {address}, "
             f"dashboard {client.dashboard_link}")
        yield client


def row_ranges(rows: int, chunk: int, parts: int) -> list[tuple[int, int]]:
    """About ``parts`` contiguous, chunk-aligned row ranges covering ``rows``."""
    chunks = -(-rows // chunk)
    per = max(1, -(-chunks // max(parts, 1)))
    return [(lo * chunk, min((lo + per) * chunk, rows)) for lo in range(0, chunks, per)]


def _range_moments(path: str, split: str, src: str, dst: str, lo: int, hi: int, precision: str,
                   device: str) -> MomentTuple:
    """Runs on a worker: the moments of rows ``lo..hi`` of ``split``, on its GPU when it has one."""
    dev = resolve_device(device)
    store = FeatureStore.open(path)
    dims = (int(store.info(split, src)["dim"]), int(store.info(split, dst)["dim"]))
    m = Moments(dims[0], dims[1], (src, dst), precision)  # type: ignore[arg-type]
    for _, (a, b) in store.iter_blocks(split, [src, dst], start=lo, stop=hi):
        m.update(to_device(a, dev), to_device(b, dev))
    return m.n, to_numpy(m.mean), to_numpy(m.comoment)


def _merge(x: MomentTuple, y: MomentTuple) -> MomentTuple:
    """Pure: the merge of two ranges' moments, as new arrays (the inputs are left as they were)."""
    d = x[1].shape[0]
    m = Moments.from_parts(d, 0, ("A", "B"), "float64", *x).merge(Moments.from_parts(d, 0, ("A", "B"), "float64", *y))
    return m.n, m.mean, m.comoment


def range_futures(client: Any, store: FeatureStore, src: str, dst: str, *, split: str = "train",
                  precision: str = "float32", device: str = "auto", parts: int | None = None) -> list[Any]:
    """Submit one moments task per row range (two per worker by default); returns their futures."""
    chunk = int(store.info(split, src)["chunk_rows"])
    workers = max(1, len(client.scheduler_info().get("workers", {})))
    ranges = row_ranges(store.rows(split), chunk, parts or 2 * workers)
    path = str(store.path.resolve())
    # pure=False: a fresh key per call, so a store rewritten between calls is never answered from cache.
    return [client.submit(_range_moments, path, split, src, dst, lo, hi, precision, device, pure=False)
            for lo, hi in ranges]


def reduce_futures(client: Any, futures: Sequence[Any], dims: tuple[int, int], names: tuple[str, str],
                   precision: str, progress: bool = True) -> Moments:
    """Merge range moments pairwise on the cluster (a binary tree), gather the root."""
    level = list(futures)
    while len(level) > 1:
        nxt = [client.submit(_merge, level[i], level[i + 1], pure=False) for i in range(0, len(level) - 1, 2)]
        if len(level) % 2:
            nxt.append(level[-1])
        level = nxt
    if progress:
        from distributed import progress as dask_progress

        dask_progress(level[0])
    m = Moments.from_parts(dims[0], dims[1], names, precision, *level[0].result())  # type: ignore[arg-type]
    return m


def accumulate_dask(client: Any, store: FeatureStore, src: str, dst: str, *, split: str = "train",
                    precision: str = "float32", device: str = "auto", parts: int | None = None,
                    progress: bool = True) -> Moments:
    """:func:`lintwin.accumulate_store` on a Dask cluster; the same moments to rounding."""
    dims = (int(store.info(split, src)["dim"]), int(store.info(split, dst)["dim"]))
    futures = range_futures(client, store, src, dst, split=split, precision=precision, device=device, parts=parts)
    m = reduce_futures(client, futures, dims, (src, dst), precision, progress=progress)
    if not m.is_finite():
        locate_nonfinite(store.iter_blocks(split, [src, dst]), (src, dst))
        m.check_finite()
    return m
