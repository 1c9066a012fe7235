"""The one pass driver: every streaming pass over paired rows goes through :func:`run_pass`.

A *block source* yields ``(row_offset, [block of each name])`` in row order (a store split, arrays
in memory, a shifted pairing for the permutation null, a row range on a Dask worker); *sinks*
consume each block once it is placed on the device (moments, fold moments, feature metrics of
maps, head predictions). The driver owns what every pass needs and no sink repeats: placement
(:class:`~lintwin.core.placement.Placement`), the progress bar, and NaN/Inf handling -- nothing
is synced per block; each sink says once at the end whether NaN/Inf reached its sums, and only
then is the source read again to name the rows.

A source whose blocks are column views of one joined buffer ``[A B ...]`` yields them as
:class:`JoinedBlocks`: the driver then moves the whole buffer in one transfer (through the
placement's :meth:`~lintwin.core.placement.Placement.feed`: on a GPU an asynchronous copy on its
own stream, fenced so the source reuses the host buffer only after it), and a moments sink
accumulates the joined block as it is -- in place, when the block is scratch and it is the only
sink. A source with ``blocks_for(placement)`` is asked for blocks made for the placement
(pinned host buffers on a GPU).

New block sources (image × position rows of a layer, a GPU reader) and new sinks plug in here.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np
from tqdm.auto import tqdm

from .moments import Moments, Precision, locate_nonfinite
from .placement import Placement, placement_of
from .placement import placement as make_placement
from .xp import device, namespace, row_spans

__all__ = ["ArraySource", "BlockSource", "FoldSink", "JoinedBlocks", "MomentsSink", "Sink", "accumulate",
           "accumulate_folds", "run_pass"]


class JoinedBlocks(list):
    """The blocks of one row span as column views of one joined buffer ``joined`` (rows × Σd, in order).

    A list of the per-name blocks, so every consumer of plain blocks reads it unchanged.
    ``scratch``: the buffer is the source's own and may be overwritten once consumed (the moments
    shift it in place). ``buffer`` is the whole allocation ``joined`` is a view of (what a reader
    reuses); ``fence`` is set by the driver when the buffer is still being copied to a device.
    """

    def __init__(self, joined: Any, dims: Sequence[int], *, scratch: bool = False, buffer: Any = None):
        offsets = np.cumsum((0, *dims[:-1]))
        super().__init__(joined[:, int(o) : int(o) + int(d)] for o, d in zip(offsets, dims))
        self.joined, self.dims, self.scratch = joined, tuple(int(d) for d in dims), scratch
        self.buffer = joined if buffer is None else buffer
        self.fence: Any = None


class BlockSource(Protocol):
    """Paired row blocks of named arrays, in row order, re-readable (NaN location reads it again)."""

    names: tuple[str, ...]
    dims: tuple[int, ...]
    rows: int

    def blocks(self) -> Iterator[tuple[int, list[Any]]]: ...


class Sink(Protocol):
    """Consumes placed blocks; says at the end whether NaN/Inf reached it, and raises its own message."""

    def update(self, lo: int, blocks: Sequence[Any]) -> None: ...

    def is_finite(self) -> bool: ...

    def check_finite(self) -> None: ...


@dataclass
class ArraySource:
    """Paired in-memory arrays (any namespace) as a block source; blocks are views, already placed."""

    arrays: Sequence[Any]
    names: tuple[str, ...]
    block_rows: int = 8192

    def __post_init__(self) -> None:
        self.names = tuple(self.names)

    @property
    def rows(self) -> int:
        return int(self.arrays[0].shape[0])

    @property
    def dims(self) -> tuple[int, ...]:
        return tuple(int(x.shape[1]) for x in self.arrays)

    @property
    def placement(self) -> Placement:
        return placement_of(self.arrays[0])

    def blocks(self) -> Iterator[tuple[int, list[Any]]]:
        for lo, hi in row_spans(self.rows, self.block_rows):
            yield lo, [x[lo:hi, ...] for x in self.arrays]


class MomentsSink:
    """Accumulates every block into one :class:`Moments` (blocks in the source's order)."""

    def __init__(self, moments: Moments):
        self.moments = moments

    def update(self, lo: int, blocks: Sequence[Any]) -> None:
        if isinstance(blocks, JoinedBlocks) and blocks.dims == self.moments.dims:
            self.moments.update_joined(blocks.joined, own=blocks.scratch)
        else:
            self.moments.update(*blocks)

    def is_finite(self) -> bool:
        return self.moments.is_finite()

    def check_finite(self) -> None:
        self.moments.check_finite()


class FoldSink:
    """Accumulates each row into the moments of its fold (``fold_of_row[i]`` in 0..k-1)."""

    def __init__(self, parts: Sequence[Moments], fold_of_row: np.ndarray):
        self.parts, self.fold_of_row = list(parts), np.asarray(fold_of_row)

    def update(self, lo: int, blocks: Sequence[Any]) -> None:
        xp = namespace(*blocks)
        fold = self.fold_of_row[lo : lo + int(blocks[0].shape[0])]
        joined = blocks.joined if isinstance(blocks, JoinedBlocks) and blocks.dims == self.parts[0].dims else None
        for j, m in enumerate(self.parts):
            rows = np.nonzero(fold == j)[0]
            if len(rows) == len(fold):
                if joined is not None:
                    m.update_joined(joined, own=blocks.scratch)  # type: ignore[attr-defined]
                else:
                    m.update(*blocks)
            elif len(rows):
                idx = xp.asarray(rows, device=device(blocks[0]))
                if joined is not None:
                    m.update_joined(xp.take(joined, idx, axis=0), own=True)
                else:
                    m.update(*(xp.take(x, idx, axis=0) for x in blocks))

    def is_finite(self) -> bool:
        return all(m.is_finite() for m in self.parts)

    def check_finite(self) -> None:
        for m in self.parts:
            m.check_finite()


def run_pass(source: BlockSource, sinks: Sequence[Sink], *, placement: Placement | None = None,
             progress: bool = False, desc: str = "pass") -> None:
    """Stream ``source`` once: place each block, feed every sink, then refuse NaN/Inf by row.

    ``placement`` defaults to the source's own (arrays in memory stay where they are). The
    progress bar counts the rows of each block's first array. A source whose blocks hold
    different row counts (layers of several grids, paired by sample) says where NaN/Inf are
    with its own ``locate_nonfinite()``.
    """
    place = placement or getattr(source, "placement", None) or make_placement("cpu")
    made_for = getattr(source, "blocks_for", None)
    feed = place.feed()
    with tqdm(total=source.rows, desc=desc, unit="rows", unit_scale=True, disable=not progress) as bar:
        for lo, host in (made_for(place) if made_for is not None else source.blocks()):
            if isinstance(host, JoinedBlocks):
                z, host.fence = feed.put(host.joined)
                blocks: Sequence[Any] = JoinedBlocks(z, host.dims, scratch=len(sinks) == 1 and (
                    host.scratch or z is not host.joined))
            else:
                blocks = [place.put(x) for x in host]
            for sink in sinks:
                sink.update(lo, blocks)
            feed.done()
            bar.update(int(host[0].shape[0]))
    if not all(sink.is_finite() for sink in sinks):
        locate = getattr(source, "locate_nonfinite", None)  # a source whose blocks differ in rows names its own
        if locate is not None:
            locate()
        else:
            locate_nonfinite(source.blocks(), source.names)
        for sink in sinks:
            sink.check_finite()  # finite values whose products overflow, named by the sink


def accumulate(source: BlockSource, *, placement: Placement | None = None, precision: Precision = "float32",
               kernel: bool = False, progress: bool = False, desc: str | None = None) -> Moments:
    """The joint moments of every block of ``source`` in one pass."""
    m = Moments(*source.dims, names=source.names, precision=precision, kernel=kernel)
    run_pass(source, [MomentsSink(m)], placement=placement, progress=progress, desc=desc or "moments")
    return m


def accumulate_folds(source: BlockSource, fold_of_row: np.ndarray, k: int, *, placement: Placement | None = None,
                     precision: Precision = "float32", kernel: bool = False, progress: bool = False,
                     desc: str | None = None) -> list[Moments]:
    """One pass: the joint moments of each of ``k`` row folds (``fold_of_row``, e.g. image folds)."""
    parts = [Moments(*source.dims, names=source.names, precision=precision, kernel=kernel) for _ in range(k)]
    run_pass(source, [FoldSink(parts, fold_of_row)], placement=placement, progress=progress,
             desc=desc or "fold moments")
    return parts
