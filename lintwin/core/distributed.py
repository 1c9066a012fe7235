"""The moment accumulation on a Dask cluster: one task per large row range, merged in a tree.

Each range task runs the ordinary pass driver (:func:`lintwin.core.driver.accumulate`) over its
own rows (a block source that can be pickled, such as a store row range, read on the worker;
with CuPy when that worker has a GPU) and returns the moments on the host: one d×d matrix per
range, not per chunk. Ranges are merged pairwise with :meth:`Moments.merge` in a binary tree;
the solve then happens once, on the client.

Every task is a pure function of its inputs (merges build new arrays and never touch their
arguments), so when a worker is lost Dask recomputes what it held and the answer is the same.

``address`` is a scheduler address (``tcp://host:8786``) or ``local`` / ``local:N`` for a
local cluster of N worker processes on 127.0.0.1 (scheduler, workers and dashboard bind to
loopback). GPU workers: start them with dask-cuda (``dask cuda worker tcp://host:8786``) and
install ``lintwin[gpu]`` on every worker. The store's path must be readable by every worker.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any, Protocol

from ..errors import LintwinError
from .driver import BlockSource, accumulate
from .moments import Moments, Precision, locate_nonfinite
from .placement import placement
from .xp import to_numpy

__all__ = ["accumulate_dask", "dask_client", "parse_address", "range_futures", "reduce_futures"]


class SplittableSource(BlockSource, Protocol):
    """A block source that can be cut into picklable row ranges (e.g. :class:`~lintwin.storage.source.StoreSource`)."""

    def split_ranges(self, parts: int) -> list[Any]: ...


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


def _on_host(m: Moments) -> Moments:
    """The same moments with NumPy arrays (what a worker sends back)."""
    kernel = m.kernel
    if kernel is not None and kernel.n:
        kernel.totals = {k: to_numpy(v) for k, v in kernel.totals.items()}
    return Moments.from_parts(m.dims, m.names, m.precision, m.n, to_numpy(m.mean) if m.n else None,
                              to_numpy(m.comoment) if m.n else None, kernel=kernel)


def _range_moments(source: BlockSource, precision: Precision, device: str, kernel: bool) -> Moments:
    """Runs on a worker: the moments of its row range, on its GPU when it has one (``device`` resolved there)."""
    return _on_host(accumulate(source, placement=placement(device), precision=precision, kernel=kernel))


def _merge(x: Moments, y: Moments) -> Moments:
    """Pure: the merge of two ranges' moments, as a new accumulator (the inputs are left as they were)."""
    return Moments.merged([x, y])


def range_futures(client: Any, source: SplittableSource, *, precision: Precision = "float32",
                  device: str = "auto", parts: int | None = None, kernel: bool = False) -> list[Any]:
    """Submit one moments task per row range of ``source`` (two per worker by default); returns their futures."""
    workers = max(1, len(client.scheduler_info().get("workers", {})))
    # pure=False: a fresh key per call, so a store rewritten between calls is never answered from cache.
    return [client.submit(_range_moments, part, precision, device, kernel, pure=False)
            for part in source.split_ranges(parts or 2 * workers)]


def reduce_futures(client: Any, futures: Sequence[Any], progress: bool = True) -> Moments:
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
    return level[0].result()


def accumulate_dask(client: Any, source: SplittableSource, *, precision: Precision = "float32",
                    device: str = "auto", parts: int | None = None, kernel: bool = False,
                    progress: bool = True) -> Moments:
    """:func:`lintwin.core.driver.accumulate` on a Dask cluster; the same moments to rounding.

    ``device`` is resolved on each worker (``auto``: its GPU when it has one). NaN/Inf are located
    by a pass on the client, as in a local pass.
    """
    m = reduce_futures(client, range_futures(client, source, precision=precision, device=device, parts=parts,
                                             kernel=kernel), progress=progress)
    if not m.is_finite():
        locate_nonfinite(source.blocks(), source.names)
        m.check_finite()
    return m
