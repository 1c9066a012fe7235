"""The read path: paired blocks of several networks' features, read ahead in a background thread.

:func:`read_blocks` yields one block per network for each row span, reading and decompressing
the next span while the caller computes on the current one; :func:`check_paired` refuses arrays
of one split that were written for different samples or another sample order.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import zarr

from ..errors import StoreError

__all__ = ["check_paired", "default_block_rows", "read_blocks"]

_BLOCK_BYTES = 64 * 2**20


def default_block_rows(arrays: Sequence[zarr.Array]) -> int:
    """A multiple of the chunk rows of about 64 MiB per block of the widest network."""
    chunk = int(arrays[0].chunks[0])
    widest = max(int(a.shape[1]) for a in arrays)
    return chunk * max(1, _BLOCK_BYTES // (4 * widest * chunk))


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


def read_blocks(split: str, names: Sequence[str], arrays: Sequence[zarr.Array],
                bounds: Sequence[tuple[int, int]]) -> Iterator[tuple[int, list[np.ndarray]]]:
    """Yield ``(row_offset, [block of each network])`` for each ``(lo, hi)`` in ``bounds``, reading one span ahead."""

    def read(lo: int, hi: int) -> list[np.ndarray]:
        out = []
        for name, a in zip(names, arrays):
            try:
                out.append(np.asarray(a[lo:hi]))
            except Exception as exc:  # noqa: BLE001  (zarr raises many types for damaged data)
                raise StoreError(f"features of {name!r} in split {split!r}, rows {lo}..{hi - 1}, cannot be read "
                                 f"({type(exc).__name__}: {exc}); `lintwin check` reports every chunk") from None
        return out

    with ThreadPoolExecutor(max_workers=1) as pool:
        pending = pool.submit(read, *bounds[0]) if bounds else None
        for k, (lo, _) in enumerate(bounds):
            assert pending is not None
            blocks = pending.result()
            pending = pool.submit(read, *bounds[k + 1]) if k + 1 < len(bounds) else None
            yield lo, blocks
