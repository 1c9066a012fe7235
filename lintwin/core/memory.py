"""How much memory the joint moments of a pass need, and how much the machine -- or the GPU -- has."""

from __future__ import annotations

import os
from collections.abc import Sequence

from ..errors import LintwinError
from . import gpu
from .placement import Placement

__all__ = ["available_for", "available_memory", "block_rows_for", "human_bytes", "moments_bytes"]

# co-moment (float64) + one chunk product (float32) + the rank-two update's float64 temporary
_BYTES_PER_ENTRY = 8 + 4 + 8


def moments_bytes(dims: Sequence[int], block_rows: int = 0) -> int:
    """Peak bytes of accumulating the joint moments of blocks of ``dims``: (Σd)² float64 and temporaries."""
    total = int(sum(dims))
    return _BYTES_PER_ENTRY * total * total + 8 * total * block_rows


def available_memory() -> int:
    """Bytes of physical memory available now (``os.sysconf``), or total memory where that is unknown."""
    page = os.sysconf("SC_PAGE_SIZE")
    for key in ("SC_AVPHYS_PAGES", "SC_PHYS_PAGES"):
        try:
            pages = os.sysconf(key)
        except (ValueError, OSError):
            continue
        if pages > 0:
            return int(pages * page)
    raise LintwinError("cannot tell how much memory is available; give --max-memory")


def available_for(place: Placement) -> int:
    """Bytes free where ``place`` keeps its arrays: the GPU's own free memory, or the host's."""
    if place.is_gpu:
        return gpu.device_memory(place.gpu_index)[0]
    return available_memory()


def block_rows_for(dims: Sequence[int], budget: int, *, buffers: int = 4, itemsize: int = 4) -> int:
    """Rows per joined block so that ``buffers`` block buffers (read ahead, in flight, work) and the moments of
    ``dims`` fit in ``budget`` bytes; refuses a budget the moments alone exceed."""
    total = int(sum(dims))
    left = budget - moments_bytes(dims)
    rows = left // max(1, buffers * itemsize * total)
    if rows < 1:
        raise LintwinError(f"the moments of {total} features need about {human_bytes(moments_bytes(dims))}, more "
                           f"than the {human_bytes(budget)} available")
    return int(rows)


def human_bytes(n: float) -> str:
    """``n`` bytes in the largest binary unit that keeps the number at or above 1."""
    units = ("B", "KiB", "MiB", "GiB", "TiB")
    k = 0
    while n >= 1024 and k < len(units) - 1:
        n, k = n / 1024, k + 1
    return f"{int(n)} B" if k == 0 else f"{n:.1f} {units[k]}"
