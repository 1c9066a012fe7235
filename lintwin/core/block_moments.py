"""One block's share of the joint moments: the math of the fused kernel, its NumPy reference, and where it runs.

For a block z (rows × Σd) in the work dtype of the precision (float32 for ``float32`` and ``tf32``,
float64 for ``float64``) the accumulator needs, per block, only

    colsum = Σ_rows z                      (float64 sums)
    shift  = colsum / n, rounded to the work dtype
    G      = (z − shift)ᵀ (z − shift)      (work-dtype products, summed in the work dtype: a SYRK)

with TF32 products taken from the shifted values rounded to TF32 (10-bit mantissa), as tensor
cores do. Everything else -- removing the shift's rounding, the spread of the block means -- is a
low-rank float64 correction that :class:`~lintwin.core.moments.Moments` applies once per group of
blocks. :func:`reference` writes this math from its definition in NumPy; :class:`BlockKernel`
computes it with reused buffers: NumPy (column sums, the shift in place, BLAS SYRK through
``matmul``), CuPy (one fused kernel for the column sums and the shift, cuBLAS SYRK, a float64
merge on the device: :mod:`lintwin.core.gpu`), or any other array-API namespace (its standard
operations).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
from array_api_compat import is_cupy_namespace, is_numpy_namespace

from ..errors import LintwinError
from . import gpu
from .xp import namespace

__all__ = ["PRECISIONS", "BlockKernel", "BlockSums", "reference", "tf32_round", "work_dtype"]

PRECISIONS = ("float32", "float64", "tf32")
_TF32_DROP = 13  # float32 keeps 23 mantissa bits, TF32 10


def work_dtype(precision: str, xp: Any) -> Any:
    """The dtype a block is shifted and multiplied in."""
    return xp.float64 if precision == "float64" else xp.float32


def tf32_round(x: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
    """float32 values rounded to TF32 (10 mantissa bits; round to nearest, ties to even), as float32.

    NaN and infinities are kept (a NaN's payload may change, it stays NaN).
    """
    x = np.asarray(x, dtype=np.float32)
    bits = x.view(np.uint32)
    half = np.uint32(1 << (_TF32_DROP - 1))
    odd = (bits >> np.uint32(_TF32_DROP)) & np.uint32(1)
    rounded = (bits + (half - np.uint32(1)) + odd) & np.uint32(~((1 << _TF32_DROP) - 1) & 0xFFFFFFFF)
    special = (bits & np.uint32(0x7F800000)) == np.uint32(0x7F800000)
    result = np.where(special, bits, rounded).view(np.float32)
    if out is None:
        return result
    out[...] = result
    return out


@dataclass
class BlockSums:
    """What one block adds: its row count, float64 column sums, the shift used, and the shifted product G."""

    n: int
    colsum: Any
    shift: Any
    gram: Any
    upper_only: bool = False  # G's lower triangle was not computed (a SYRK's other half)


def reference(z: np.ndarray, precision: str = "float32") -> BlockSums:
    """The fused kernel's math from its definition, in NumPy: column sums, shift, upper triangle of G."""
    if precision not in PRECISIONS:
        raise LintwinError(f"precision must be one of {', '.join(PRECISIONS)}, got {precision!r}")
    work = np.float64 if precision == "float64" else np.float32
    z = np.asarray(z).astype(work)
    n = z.shape[0]
    colsum = np.sum(z.astype(np.float64), axis=0)
    shift = (colsum / n).astype(work)
    w = z - shift
    if precision == "tf32":
        w = tf32_round(w)
    g = np.zeros((z.shape[1], z.shape[1]), work)
    for i in range(z.shape[1]):  # SYRK's upper triangle, one row of G at a time
        g[i, i:] = w[:, i] @ w[:, i:]
    return BlockSums(n, colsum, shift, g, upper_only=True)


@dataclass
class BlockKernel:
    """Computes :class:`BlockSums` of blocks with buffers reused from block to block, and adds G into float64 sums."""

    buffers: dict[str, Any] = field(default_factory=dict)

    def _buffer(self, name: str, shape: tuple[int, ...], dtype: Any, xp: Any) -> Any:
        """A reused buffer of at least ``shape[0]`` rows (viewed to ``shape``)."""
        have = self.buffers.get(name)
        if have is None or have.shape[0] < shape[0] or have.shape[1:] != shape[1:] or have.dtype != dtype:
            have = self.buffers[name] = xp.empty(shape, dtype=dtype)
        return have[: shape[0]]

    def joined(self, rows: int, width: int, precision: str, like: Any) -> Any:
        """A work buffer for the blocks of one row span side by side (:meth:`Moments.update`'s join)."""
        xp = namespace(like)
        if is_numpy_namespace(xp):
            return self._buffer("join", (rows, width), work_dtype(precision, np), np)
        return xp.empty((rows, width), dtype=work_dtype(precision, xp), device=getattr(like, "device", None))

    def run(self, z: Any, precision: str, own: bool) -> BlockSums:
        """The block's sums; ``own`` lets the kernel shift ``z`` in place (a buffer nobody reads afterwards)."""
        xp = namespace(z)
        if is_cupy_namespace(xp):
            return BlockSums(*gpu.block_sums(z, precision, own, self.buffers))
        if is_numpy_namespace(xp):
            return self._numpy(np.asarray(z), precision, own)
        return self._generic(z, precision, own, xp)

    def _numpy(self, z: np.ndarray, precision: str, own: bool) -> BlockSums:
        work = work_dtype(precision, np)
        n, width = z.shape
        if z.dtype != work:
            w = self._buffer("work", (n, width), work, np)
            np.copyto(w, z, casting="unsafe")
            z, own = w, True
        colsum = np.add.reduce(z, axis=0, dtype=np.float64)
        shift = (colsum / n).astype(work)
        w = z if own else self._buffer("work", (n, width), work, np)
        np.subtract(z, shift, out=w)
        if precision == "tf32":
            tf32_round(w, out=w)
        g = self._buffer("gram", (width, width), work, np)
        np.matmul(w.T, w, out=g)  # NumPy hands wᵀw to BLAS SYRK and mirrors the triangle
        return BlockSums(n, colsum, shift, g)

    def _generic(self, z: Any, precision: str, own: bool, xp: Any) -> BlockSums:
        if precision == "tf32":
            raise LintwinError("tf32 products are computed by CuPy (emulated by NumPy); "
                               f"{xp.__name__} arrays need float32 or float64")
        work = work_dtype(precision, xp)
        if not own or z.dtype != work:
            z = xp.astype(z, work, copy=True)
        n = int(z.shape[0])
        colsum = xp.sum(z, axis=0, dtype=xp.float64)
        shift = xp.astype(colsum / n, work)
        z -= shift
        return BlockSums(n, colsum, shift, xp.matrix_transpose(z) @ z)

    @staticmethod
    def add_gram(acc: Any, sums: BlockSums) -> Any:
        """``acc`` (float64, made by the accumulator) plus the block's G, in place where the namespace allows."""
        xp = namespace(acc)
        if is_cupy_namespace(xp):
            gpu.add_gram(acc, sums.gram, sums.upper_only)
            return acc
        if is_numpy_namespace(xp):
            np.add(acc, sums.gram, out=acc)
            return acc
        acc += sums.gram
        return acc
