"""A store split (or a row range of it) as a block source for the pass driver, and what its moments depend on."""

from __future__ import annotations

import copy
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ..core.memory import available_for, block_rows_for
from ..core.placement import Placement
from ..errors import ShapeError
from .reader import DEFAULT_DEPTH
from .store import FeatureStore

__all__ = ["GPU_BLOCK_ROWS", "StoreSource", "row_ranges", "store_fingerprint"]

GPU_BLOCK_ROWS = 16384  # pinned host buffers stay a few hundred MiB each


def row_ranges(rows: int, chunk: int, parts: int, start: int = 0) -> list[tuple[int, int]]:
    """About ``parts`` contiguous, chunk-aligned row ranges covering rows ``start .. rows``."""
    first = start // chunk
    chunks = -(-rows // chunk) - first
    per = max(1, -(-chunks // max(parts, 1)))
    return [(max(start, (first + lo) * chunk), min((first + lo + per) * chunk, rows)) for lo in range(0, chunks, per)]


class StoreSource:
    """Rows ``start .. stop`` of networks ``names`` in ``split``, read block by block (host NumPy arrays).

    Blocks come as :class:`~lintwin.core.driver.JoinedBlocks` of reused buffers, decoded ``depth``
    blocks ahead by ``threads`` threads (:class:`~lintwin.storage.reader.BlockReader`). Picklable (it carries the store's path, not the open store), so a Dask worker can read its
    own row range; :meth:`split` cuts it into chunk-aligned ranges.
    """

    def __init__(self, store: FeatureStore | str | Path, split: str, names: Sequence[str], *, start: int = 0,
                 stop: int | None = None, block_rows: int | None = None, threads: int | None = None,
                 depth: int = DEFAULT_DEPTH):
        self._store = store if isinstance(store, FeatureStore) else None
        self.path = str(Path(store.path if isinstance(store, FeatureStore) else store).resolve())
        self.split, self.names = split, tuple(names)
        s = self.store
        infos = [s.info(split, n) for n in self.names]
        for name in self.names:
            s.features(split, name)  # clear errors for unknown, incomplete or damaged arrays, before any pass
        self.dims = tuple(int(i["dim"]) for i in infos)
        self.chunk_rows = int(infos[0]["chunk_rows"])
        total = s.rows(split)
        self.start, self.stop = int(start), total if stop is None else min(int(stop), total)
        if not 0 <= self.start <= self.stop:
            raise ShapeError(f"row range {start}..{stop} is outside split {split!r} of {total} rows")
        self.block_rows, self.threads, self.depth = block_rows, threads, depth

    @property
    def store(self) -> FeatureStore:
        if self._store is None:
            self._store = FeatureStore.open(self.path)
        return self._store

    def __getstate__(self) -> dict[str, Any]:
        return {k: v for k, v in self.__dict__.items() if k != "_store"} | {"_store": None}

    @property
    def rows(self) -> int:
        return self.stop - self.start

    def blocks(self) -> Iterator[tuple[int, list[np.ndarray]]]:
        """``(row_offset, [block of each name])``; offsets are rows of the split (not of the range)."""
        yield from self.blocks_for(None)

    def blocks_for(self, place: Placement | None) -> Iterator[tuple[int, list[np.ndarray]]]:
        """:meth:`blocks` in host buffers made for ``place`` (pinned for a GPU, with a spare for its copies).

        On a GPU, blocks are sized from the device's own free memory (its ring of block buffers, the
        work buffer and the moments within half of it), at most :data:`GPU_BLOCK_ROWS` rows.
        """
        rows = self.block_rows
        if rows is None and place is not None and place.is_gpu:
            rows = min(block_rows_for(self.dims, available_for(place) // 2), GPU_BLOCK_ROWS)
            rows = max(self.chunk_rows, rows - rows % self.chunk_rows)
        yield from self.store.iter_blocks(
            self.split, list(self.names), block_rows=rows, start=self.start, stop=self.stop,
            threads=self.threads, depth=self.depth, allocate=place.host_empty if place is not None else np.empty,
            spare=place.spare_buffers if place is not None else 0)

    def ids(self) -> np.ndarray | None:
        """The sample ids of the range's rows (None when the split has none)."""
        ids = self.store.ids(self.split)
        return None if ids is None else ids[self.start : self.stop]

    def split_ranges(self, parts: int) -> list[StoreSource]:
        """About ``parts`` chunk-aligned sub-ranges covering this one (one task each on a cluster)."""
        return [self.range(lo, hi) for lo, hi in row_ranges(self.stop, self.chunk_rows, parts, self.start)]

    def range(self, lo: int, hi: int) -> StoreSource:
        """Rows ``lo .. hi`` of the same split and networks."""
        out = copy.copy(self)
        out.start, out.stop = lo, hi
        return out


def store_fingerprint(store: FeatureStore, split: str, names: Sequence[str]) -> dict[str, Any]:
    """What the moments of ``names`` in ``split`` depend on: rows, dims, model hashes and image sources."""
    nets = {}
    for name in names:
        info = store.info(split, name)
        nets[name] = {k: info.get(k) for k in ("dim", "rows", "rows_written", "model_sha256", "source", "ids_sha256")}
        nets[name]["chunk_crc32c"] = store.chunk_checksums(split, name)  # the bytes themselves
    return {"store": str(Path(store.path).resolve()), "split": split, "rows": store.rows(split), "order": list(names),
            "networks": nets}
