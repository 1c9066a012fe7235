"""The read path: paired blocks of several networks' features, decoded ahead by a pool of threads.

:class:`BlockReader` cuts a split into row blocks and decodes ``depth`` blocks ahead of the one
being consumed, with ``threads`` decoding threads (zarr's codecs and numcodecs release the GIL).
Every block is decoded straight into a reused host buffer holding all networks side by side
(``[A B ...]``, rows × Σd; zarr's ``out=``), one chunk per task: after the first ``depth + 1``
blocks no new block buffer is made, and the moments accumulator receives the joined block
without a copy. A placement may give the buffers (pinned host memory on a GPU) and fences: a
buffer whose host→device copy is still in flight is written again only after it completed,
waited for in the decoding thread, never in the consumer's.

:func:`check_paired` refuses arrays of one split that were written for different samples or
another sample order.
"""

from __future__ import annotations

import os
import threading
from collections import deque
from collections.abc import Callable, Iterator, Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

import numpy as np
import zarr
from zarr.core.buffer.cpu import NDBuffer

from ..core.driver import JoinedBlocks
from ..errors import StoreError

__all__ = ["DEFAULT_DEPTH", "BlockReader", "check_paired", "default_block_rows", "default_threads"]

_BLOCK_BYTES = 128 * 2**20  # one joined block buffer
DEFAULT_DEPTH = 2


def default_threads() -> int:
    """Decoding threads by default: one per core, at least 2 (a decode waits on the file system too), at most 8."""
    return max(2, min(os.cpu_count() or 1, 8))


def default_block_rows(arrays: Sequence[zarr.Array]) -> int:
    """About 128 MiB of joined float32 rows, a multiple of the chunk rows of the widest network.

    Block edges then fall on chunk edges of the network with the most bytes per row; a chunk of
    a narrower network that straddles an edge is decoded once for each block it feeds.
    """
    widest = max(arrays, key=lambda a: int(a.shape[1]))
    chunk = int(widest.chunks[0])
    total = sum(int(a.shape[1]) for a in arrays)
    return chunk * max(1, _BLOCK_BYTES // (4 * total * chunk))


def check_paired(split: str, stamps: Mapping[str, str | None], split_stamp: str | None) -> None:
    """Refuse networks whose rows (``ids_sha256`` stamps) differ from each other or from the split's ids."""
    names = list(stamps)
    known = {s for s in stamps.values() if s is not None}
    if len(set(stamps.values())) > 1:
        detail = ", ".join(f"{n}: {s[:12] if s else 'unknown rows'}" for n, s in stamps.items())
        raise StoreError(f"networks of split {split!r} were written for different samples or sample orders "
                         f"({detail}); rows must be paired: write them again from the same images "
                         "(import --ids names them)")
    if split_stamp is not None and known and split_stamp not in known:
        raise StoreError(f"features of {', '.join(names)} in split {split!r} were written for other sample ids "
                         "than the split's ids")


class BlockReader:
    """Paired row blocks of ``arrays`` over ``bounds``, decoded ``depth`` blocks ahead by ``threads`` threads.

    Iterating yields ``(row_offset, JoinedBlocks)``; a block's buffer is reused once the consumer
    asks for the next block (after its ``fence``, if the consumer set one, has passed).
    ``allocate(shape, dtype)`` makes the buffers (pinned memory for a GPU); ``spare`` adds buffers
    for consumers that still read a block after asking for the next one (an asynchronous copy).
    ``on_decoded(k)`` is called, from a decoding thread, when block ``k`` is complete.
    """

    def __init__(self, split: str, names: Sequence[str], arrays: Sequence[zarr.Array],
                 bounds: Sequence[tuple[int, int]], *, threads: int | None = None, depth: int = DEFAULT_DEPTH,
                 allocate: Callable[[tuple[int, int], Any], np.ndarray] = np.empty, spare: int = 0,
                 on_decoded: Callable[[int], None] | None = None):
        if depth < 0:
            raise ValueError(f"read-ahead depth must be >= 0, got {depth}")
        self.split, self.names, self.arrays, self.bounds = split, list(names), list(arrays), list(bounds)
        self.threads = default_threads() if threads is None else max(1, int(threads))
        self.depth, self.spare = int(depth), int(spare)
        self.dims = tuple(int(a.shape[1]) for a in self.arrays)
        self.allocate, self.on_decoded = allocate, on_decoded
        self.buffers_made = 0  # block buffers allocated so far (at most depth + 1 + spare)

    def _tasks(self, k: int, buf: np.ndarray) -> list[tuple[int, int, int, np.ndarray]]:
        """``(network, lo, hi, destination view)`` of each chunk span of block ``k``."""
        lo, hi = self.bounds[k]
        out, col = [], 0
        for j, (a, d) in enumerate(zip(self.arrays, self.dims)):
            chunk = int(a.chunks[0])
            r = lo
            while r < hi:
                end = min(hi, (r // chunk + 1) * chunk)
                out.append((j, r, end, buf[r - lo : end - lo, col : col + d]))
                r = end
            col += d
        return out

    def _read(self, j: int, lo: int, hi: int, dest: np.ndarray, fence: Any) -> None:
        if fence is not None:
            fence.synchronize()  # the previous host→device copy out of this buffer has completed
        try:
            self.arrays[j].get_basic_selection((slice(lo, hi),), out=NDBuffer.from_numpy_array(dest))
        except Exception as exc:  # noqa: BLE001  (zarr raises many types for damaged data)
            raise StoreError(f"features of {self.names[j]!r} in split {self.split!r}, rows {lo}..{hi - 1}, cannot be "
                             f"read ({type(exc).__name__}: {exc}); `lintwin check` reports every chunk") from None

    def __iter__(self) -> Iterator[tuple[int, JoinedBlocks]]:
        if not self.bounds:
            return
        rows = max(hi - lo for lo, hi in self.bounds)
        free: deque[tuple[np.ndarray, Any]] = deque()
        window: deque[tuple[int, np.ndarray, list[Future]]] = deque()
        pool = ThreadPoolExecutor(max_workers=self.threads, thread_name_prefix="lintwin-read")

        def schedule(k: int) -> None:
            if free:
                buf, fence = free.popleft()
            else:
                buf, fence = self.allocate((rows, sum(self.dims)), np.float32), None
                self.buffers_made += 1
            tasks = self._tasks(k, buf)
            left, lock = [len(tasks)], threading.Lock()

            def one_done(_: Future) -> None:
                with lock:
                    left[0] -= 1
                    complete = left[0] == 0
                if complete and self.on_decoded is not None:
                    self.on_decoded(k)

            futures = [pool.submit(self._read, j, lo, hi, dest, fence) for j, lo, hi, dest in tasks]
            for f in futures:
                f.add_done_callback(one_done)
            window.append((k, buf, futures))

        try:
            ahead = 0
            while ahead < len(self.bounds) and ahead <= self.depth:
                schedule(ahead)
                ahead += 1
            held: deque[JoinedBlocks] = deque()
            while window:
                k, buf, futures = window.popleft()
                for f in futures:
                    f.result()
                lo, hi = self.bounds[k]
                block = JoinedBlocks(buf[: hi - lo], self.dims, scratch=True, buffer=buf)
                yield lo, block
                held.append(block)
                while len(held) > self.spare:  # the consumer is done with the oldest block it holds
                    done = held.popleft()
                    free.append((done.buffer, done.fence))
                if ahead < len(self.bounds):
                    if not free:  # a consumer holding more blocks than it said: one more buffer
                        free.append((self.allocate((rows, sum(self.dims)), np.float32), None))
                        self.buffers_made += 1
                    schedule(ahead)
                    ahead += 1
        finally:
            for _, _, futures in window:
                for f in futures:
                    f.cancel()
            pool.shutdown(wait=True, cancel_futures=True)
