"""The moment accumulation on a Dask cluster: one task per row block, merged in a tree.

Each block task reads its rows of both networks (``dask.array.from_zarr`` chunks) and
computes their joint moments on the worker that reads them, with CuPy when that worker
has a GPU; partial moments travel back as NumPy and are merged pairwise with
:meth:`Moments.merge` in a binary tree. The solve then happens once, on the client. A
worker lost mid-run only costs recomputing its blocks: Dask knows how to make them again.

``address`` is a scheduler address (``tcp://host:8786``) or ``local`` / ``local:N`` for a
local cluster of N worker processes. GPU workers: start them with dask-cuda
(``dask cuda worker tcp://host:8786``) and install ``lintwin[gpu]`` on every worker.
"""

from __future__ import annotations

from collections.abc import Sequence
from contextlib import contextmanager
from typing import Any, Iterator

import numpy as np

from ._gpu import resolve_device, to_device
from ._xp import to_numpy
from .errors import LintwinError
from .moments import Moments
from .store import FeatureStore

__all__ = ["accumulate_dask", "block_futures", "dask_client", "reduce_futures"]

MomentTuple = tuple[int, np.ndarray, np.ndarray]


@contextmanager
def dask_client(address: str, *, echo=print) -> Iterator[Any]:
    """A ``distributed.Client`` for ``address`` (``local[:N]`` starts a local cluster on loopback)."""
    try:
        from distributed import Client, LocalCluster
    except ImportError:
        raise LintwinError("--dask needs dask.distributed: pip install 'lintwin[dask]'") from None
    if address == "local" or address.startswith("local:"):
        workers = int(address.split(":", 1)[1]) if ":" in address else 2
        with LocalCluster(n_workers=workers, threads_per_worker=1, processes=True, host="127.0.0.1",
                          dashboard_address=":0") as cluster, Client(cluster) as client:
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


def _block_moments(a: np.ndarray, b: np.ndarray, dims: tuple[int, int], names: tuple[str, str], precision: str,
                   device: str, row_offset: int) -> MomentTuple:
    """Runs on a worker: moments of one block, on its GPU when it has one."""
    dev = resolve_device(device)
    m = Moments(dims[0], dims[1], names, precision)  # type: ignore[arg-type]
    m.update(to_device(np.asarray(a), dev), to_device(np.asarray(b), dev), row_offset=row_offset)
    return m.n, to_numpy(m.mean), to_numpy(m.comoment)


def _merge(x: MomentTuple, y: MomentTuple) -> MomentTuple:
    d = x[1].shape[0]
    m = Moments.from_parts(d, 0, ("A", "B"), "float64", *x).merge(Moments.from_parts(d, 0, ("A", "B"), "float64", *y))
    return m.n, m.mean, m.comoment


def block_futures(client: Any, store: FeatureStore, src: str, dst: str, *, split: str = "train",
                  precision: str = "float32", device: str = "auto", block_rows: int | None = None) -> list[Any]:
    """Submit one moments task per row block of ``split``; returns their futures."""
    import dask
    import dask.array as da

    a_arr, b_arr = store.features(split, src), store.features(split, dst)
    rows = block_rows or int(a_arr.chunks[0])
    a = da.from_array(a_arr, chunks=(a_arr.chunks[0], -1), name=f"lintwin-{split}-{src}").rechunk((rows, -1))
    b = da.from_array(b_arr, chunks=(b_arr.chunks[0], -1), name=f"lintwin-{split}-{dst}").rechunk((rows, -1))
    offsets = np.cumsum((0,) + a.chunks[0][:-1])
    dims = (int(a_arr.shape[1]), int(b_arr.shape[1]))
    tasks = [dask.delayed(_block_moments)(ab, bb, dims, (src, dst), precision, device, int(off))
             for ab, bb, off in zip(a.to_delayed().ravel(), b.to_delayed().ravel(), offsets)]
    return client.compute(tasks)


def reduce_futures(client: Any, futures: Sequence[Any], dims: tuple[int, int], names: tuple[str, str],
                   precision: str, progress: bool = True) -> Moments:
    """Merge block moments pairwise on the cluster (a binary tree), gather the root."""
    level = list(futures)
    while len(level) > 1:
        nxt = [client.submit(_merge, level[i], level[i + 1], pure=False) for i in range(0, len(level) - 1, 2)]
        if len(level) % 2:
            nxt.append(level[-1])
        level = nxt
    if progress:
        from distributed import progress as dask_progress

        dask_progress(level[0])
    return Moments.from_parts(dims[0], dims[1], names, precision, *level[0].result())  # type: ignore[arg-type]


def accumulate_dask(client: Any, store: FeatureStore, src: str, dst: str, *, split: str = "train",
                    precision: str = "float32", device: str = "auto", block_rows: int | None = None,
                    progress: bool = True) -> Moments:
    """:func:`lintwin.accumulate_store` on a Dask cluster; the same moments to rounding."""
    dims = (int(store.info(split, src)["dim"]), int(store.info(split, dst)["dim"]))
    futures = block_futures(client, store, src, dst, split=split, precision=precision, device=device,
                            block_rows=block_rows)
    return reduce_futures(client, futures, dims, (src, dst), precision, progress=progress)
