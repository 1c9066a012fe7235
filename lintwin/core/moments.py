"""Streaming joint moments of two feature sets: the only pass the closed-form solver needs.

For rows z = [a, b] the accumulator keeps the row count, the float64 mean of z and the
float64 centred co-moment matrix ``C = sum_i (z_i - mean)(z_i - mean)^T``. Each chunk is
shifted by its own (float32-rounded) mean before the big product, so a float32 GEMM/SYRK
sees small, centred numbers and its result is corrected exactly in float64; chunks are
combined with the pairwise (Chan et al.) update, which is also how :meth:`Moments.merge`
joins the accumulators of shards or workers.
"""

from __future__ import annotations

import json
import zipfile
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np

from ..errors import LintwinError, NonFiniteError, ShapeError
from .files import atomic_write
from .kernel_sums import KernelSums
from .xp import device, from_numpy, namespace, to_numpy

Precision = Literal["float32", "float64"]
_FORMAT = "lintwin.moments/1"

__all__ = ["Moments", "check_finite", "check_pair", "locate_nonfinite"]


def check_pair(a: Any, b: Any, names: tuple[str, str] = ("A", "B")) -> None:
    """Raise :class:`ShapeError` unless ``a`` and ``b`` are 2-D with the same row count."""
    for x, name in zip((a, b), names):
        if x.ndim != 2:
            raise ShapeError(f"features of {name} must be 2-D (rows x dim), got shape {tuple(x.shape)}")
    if a.shape[0] != b.shape[0]:
        raise ShapeError(
            f"row counts differ: {names[0]} has {a.shape[0]} rows, {names[1]} has {b.shape[0]}; "
            "features must be paired row by row"
        )


def check_finite(x: Any, name: str, row_offset: int = 0, xp: Any = None) -> None:
    """Raise :class:`NonFiniteError` naming the first offending rows if ``x`` holds NaN or Inf."""
    xp = xp or namespace(x)
    ok = xp.isfinite(x)
    if bool(xp.all(ok)):
        return
    bad_rows = np.nonzero(~np.all(to_numpy(ok), axis=1))[0] + row_offset
    shown = ", ".join(str(int(r)) for r in bad_rows[:5])
    more = f" and {len(bad_rows) - 5} more" if len(bad_rows) > 5 else ""
    raise NonFiniteError(
        f"NaN or Inf in features of {name}: {len(bad_rows)} row(s), at row {shown}{more} "
        f"(rows {row_offset}..{row_offset + x.shape[0] - 1} of this chunk)"
    )


def locate_nonfinite(blocks: Iterable[tuple[int, Sequence[Any]]], names: Sequence[str]) -> None:
    """Re-read paired ``(row_offset, [block of each name])`` and raise naming the first rows with NaN/Inf.

    The accumulators only learn *that* NaN/Inf reached their sums (no sync per chunk); this second,
    rare pass says where.
    """
    for lo, arrays in blocks:
        for name, x in zip(names, arrays):
            check_finite(x, name, lo)


@dataclass
class Moments:
    """Joint first and second moments of paired features ``a`` (dim_a) and ``b`` (dim_b).

    ``precision="float32"`` multiplies shifted float32 blocks and sums in float64;
    ``"float64"`` does every product in float64. The arrays live in the namespace and on
    the device of the first chunk (NumPy, CuPy, ...). ``kernel=True`` also keeps the
    row-norm sums of :class:`~lintwin.kernel_sums.KernelSums` (for debiased CKA).

    NaN/Inf are not looked for chunk by chunk (that would sync the device every chunk):
    they propagate into the column sums, and :meth:`check_finite` (called by :meth:`blocks`)
    refuses them once, at the end.
    """

    dim_a: int
    dim_b: int
    names: tuple[str, str] = ("A", "B")
    precision: Precision = "float32"
    n: int = 0
    mean: Any = None
    comoment: Any = None
    kernel: KernelSums | None = None
    _xp: Any = field(default=None, repr=False)
    _owned: bool = field(default=False, repr=False)  # True when ``comoment`` may be updated in place

    def __post_init__(self) -> None:
        if self.precision not in ("float32", "float64"):
            raise LintwinError(f"precision must be 'float32' or 'float64', got {self.precision!r}")
        self.names = tuple(self.names)  # type: ignore[assignment]
        if self.kernel is True:  # type: ignore[comparison-overlap]
            self.kernel = KernelSums(self.dim_a, self.dim_b)
        elif self.kernel is False:  # type: ignore[comparison-overlap]
            self.kernel = None

    @classmethod
    def from_parts(cls, dim_a: int, dim_b: int, names: tuple[str, str], precision: Precision, n: int,
                   mean: Any, comoment: Any, kernel: KernelSums | None = None) -> "Moments":
        """An accumulator holding already-computed moments (``n`` rows, float64 mean and co-moment)."""
        m = cls(dim_a, dim_b, names, precision, kernel=kernel)
        if n:
            m.n, m.mean, m.comoment, m._xp = int(n), mean, comoment, namespace(mean)
        return m

    @property
    def dim(self) -> int:
        return self.dim_a + self.dim_b

    # -- accumulation ---------------------------------------------------------------
    def update(self, a: Any, b: Any) -> "Moments":
        """Add a chunk of paired rows (no device sync: NaN/Inf are caught by :meth:`check_finite`)."""
        check_pair(a, b, self.names)
        for x, d, name in ((a, self.dim_a, self.names[0]), (b, self.dim_b, self.names[1])):
            if x.shape[1] != d:
                raise ShapeError(f"features of {name} have {x.shape[1]} columns, expected {d}")
        if a.shape[0] == 0:
            return self
        xp = namespace(a, b)
        if self._xp is not None and self._xp is not xp:
            self._move_like(a)  # e.g. loaded from disk (NumPy), continued with CuPy chunks
        n_c, mean_c, gram, e = _chunk_moments(a, b, self.precision, xp)
        self._combine(n_c, mean_c, gram, xp, shift_error=e)
        if self.kernel is not None:
            self.kernel.update(a, b)
        return self

    def merge(self, other: "Moments") -> "Moments":
        """Fold another accumulator (another shard, fold or worker) into this one.

        Shards must be of the same pair of networks; a shard accumulated with the two
        networks swapped is reoriented, anything else is refused. ``other`` is not changed.
        """
        other = self._aligned(other)
        if (self.kernel is None) != (other.kernel is None) and other.n and self.n:
            raise LintwinError("cannot merge moments with and without kernel sums (debiased CKA needs them in both)")
        if other.n == 0:
            return self
        if other.precision == "float32":
            self.precision = "float32"  # the merged moments are only as precise as their coarsest part
        mean, com = other.mean, other.comoment
        if self._xp is not None and namespace(mean) is not self._xp:
            mean, com = from_numpy(to_numpy(mean), self.mean), from_numpy(to_numpy(com), self.mean)
        if self.n == 0 and other.kernel is not None and self.kernel is None:
            self.kernel = KernelSums(self.dim_a, self.dim_b)
        self._combine(other.n, mean, com, namespace(mean))
        if self.kernel is not None and other.kernel is not None:
            self.kernel.merge(other.kernel)
        return self

    def _aligned(self, other: "Moments") -> "Moments":
        """``other`` in this accumulator's orientation, or a refusal."""
        if tuple(other.names) == tuple(self.names) and (other.dim_a, other.dim_b) == (self.dim_a, self.dim_b):
            return other
        if tuple(other.names) == tuple(self.names[::-1]) and self.names[0] != self.names[1] \
                and (other.dim_b, other.dim_a) == (self.dim_a, self.dim_b):
            return other.swapped()
        if (other.dim_a, other.dim_b) != (self.dim_a, self.dim_b):
            raise ShapeError(f"cannot merge moments of dims {other.dim_a}+{other.dim_b} into {self.dim_a}+{self.dim_b}")
        raise ShapeError(f"cannot merge moments of {other.names[0]}+{other.names[1]} into "
                         f"{self.names[0]}+{self.names[1]}: they are of other networks")

    def swapped(self) -> "Moments":
        """The same moments with the roles of a and b exchanged (a new accumulator)."""
        out = Moments(self.dim_b, self.dim_a, (self.names[1], self.names[0]), self.precision)
        if self.n:
            xp = namespace(self.mean)
            da = self.dim_a
            mean = xp.concat([self.mean[da:], self.mean[:da]])
            C = self.comoment
            top = xp.concat([C[da:, da:], C[da:, :da]], axis=1)
            bottom = xp.concat([C[:da, da:], C[:da, :da]], axis=1)
            out.n, out.mean, out.comoment, out._xp = self.n, mean, xp.concat([top, bottom], axis=0), xp
        out.kernel = self.kernel.swapped() if self.kernel is not None else None
        return out

    def _move_like(self, like: Any) -> None:
        """Move the running state into the namespace and onto the device of ``like``."""
        self.mean = from_numpy(to_numpy(self.mean), like)
        self.comoment = from_numpy(to_numpy(self.comoment), like)
        self._xp, self._owned = namespace(like), True

    def _combine(self, n_c: int, mean_c: Any, com_c: Any, xp: Any, shift_error: Any = None) -> None:
        """Pairwise (Chan et al.) update into a new co-moment array (inputs are never modified).

        ``com_c`` may be a float32 product of rows shifted by ``mean_c - shift_error``;
        its rank-one offset ``n_c e e^T`` is removed here together with the merge's own
        rank-one term, as one rank-two update.
        """
        if self.n == 0:
            self.n, self.mean, self._xp = n_c, mean_c, xp
            com = xp.astype(com_c, xp.float64, copy=True)
            if shift_error is not None:
                e = shift_error
                com = com - xp.reshape(e, (-1, 1)) * xp.reshape(e * n_c, (1, -1))
            self.comoment, self._owned = com, True
            return
        n = self.n + n_c
        delta = mean_c - self.mean
        weight = self.n * n_c / n
        self.mean = self.mean + delta * (n_c / n)
        if shift_error is None:
            self.comoment = self.comoment + com_c + xp.reshape(delta, (-1, 1)) * xp.reshape(delta * weight, (1, -1))
        else:
            # Per-chunk updates add in place (float32 products are promoted without a float64
            # copy), but only into an array this accumulator made itself.
            if not self._owned:
                self.comoment = xp.astype(self.comoment, xp.float64, copy=True)
            self.comoment += com_c
            left = xp.stack([delta * weight, shift_error * (-n_c)], axis=1)
            right = xp.stack([delta, shift_error], axis=0)
            self.comoment += left @ right
        self.n, self._owned = n, True

    # -- checks and views -----------------------------------------------------------
    def is_finite(self) -> bool:
        """True when no NaN/Inf reached the moments (one device sync)."""
        if self.n == 0:
            return True
        xp = namespace(self.mean)
        return bool(xp.all(xp.isfinite(self.mean)) & xp.all(xp.isfinite(xp.linalg.diagonal(self.comoment))))

    def check_finite(self) -> None:
        """Refuse moments that NaN/Inf features (or float32 overflow) reached."""
        if self.is_finite():
            return
        xp = namespace(self.mean)
        if bool(xp.all(xp.isfinite(self.mean))):
            raise NonFiniteError(
                f"features of {self.names[0]}/{self.names[1]} are too large for {self.precision} products "
                "(their squares overflow); use --precision float64 or rescale the features")
        raise NonFiniteError(f"NaN or Inf in features of {self.names[0]} or {self.names[1]}")

    def blocks(self) -> dict[str, Any]:
        """Means and co-moment blocks: mean_a, mean_b, aa, ab, bb (float64 sums, not averages)."""
        if self.n == 0:
            raise LintwinError("no rows were accumulated: the training split is empty")
        self.check_finite()
        da = self.dim_a
        C = self.comoment
        return {
            "mean_a": self.mean[:da],
            "mean_b": self.mean[da:],
            "aa": C[:da, :da],
            "ab": C[:da, da:],
            "bb": C[da:, da:],
        }

    def oriented(self, reverse: bool = False) -> tuple[Any, Any, Any, Any, Any]:
        """``(Sxx, Sxy, Syy, mean_x, mean_y)`` for the map a→b, or b→a with ``reverse``."""
        blk = self.blocks()
        if reverse:
            xp = namespace(blk["ab"])
            return blk["bb"], xp.matrix_transpose(blk["ab"]), blk["aa"], blk["mean_b"], blk["mean_a"]
        return blk["aa"], blk["ab"], blk["bb"], blk["mean_a"], blk["mean_b"]

    # -- persistence ----------------------------------------------------------------
    def save(self, path: str | Path) -> Path:
        """Write to ``.npz`` (no pickle): arrays plus a JSON header, atomically (temporary file, rename)."""
        path = Path(path)
        meta = {
            "format": _FORMAT,
            "dim_a": self.dim_a,
            "dim_b": self.dim_b,
            "names": list(self.names),
            "precision": self.precision,
            "n": self.n,
            "kernel": self.kernel is not None,
        }
        d = self.dim
        arrays = {"meta": np.array(json.dumps(meta)),
                  "mean": to_numpy(self.mean) if self.n else np.zeros(d),
                  "comoment": to_numpy(self.comoment) if self.n else np.zeros((d, d))}
        if self.kernel is not None:
            arrays |= self.kernel.to_arrays()
        atomic_write(path, lambda fh: np.savez(fh, **arrays))
        return path

    @classmethod
    def load(cls, path: str | Path) -> "Moments":
        """Read moments written by :meth:`save` (refuses other or damaged files)."""
        try:
            with np.load(Path(path), allow_pickle=False) as z:
                meta = json.loads(str(z["meta"]))
                mean, com = z["mean"], z["comoment"]
                kernel = KernelSums.from_arrays(meta["dim_a"], meta["dim_b"], z) if meta.get("kernel") else None
                m = cls.from_parts(int(meta["dim_a"]), int(meta["dim_b"]), tuple(meta["names"]), meta["precision"],
                                   int(meta["n"]), mean, com, kernel=kernel)
        except (OSError, ValueError, KeyError, TypeError, json.JSONDecodeError, zipfile.BadZipFile) as exc:
            raise LintwinError(f"{path}: not a readable lintwin moments file ({type(exc).__name__}: {exc})") from None
        if meta.get("format") != _FORMAT:
            raise LintwinError(f"{path}: not a lintwin moments file (format {meta.get('format')!r})")
        d = m.dim
        if m.n and (mean.shape != (d,) or com.shape != (d, d)):
            raise LintwinError(f"{path}: arrays disagree with the header's dimensions")
        return m

    @classmethod
    def merged(cls, parts: Sequence["Moments"], exclude: int | None = None) -> "Moments":
        """A new accumulator: the merge of ``parts`` except the one at index ``exclude`` (CV folds)."""
        first = parts[0]
        m = cls(first.dim_a, first.dim_b, first.names, first.precision)
        for j, part in enumerate(parts):
            if j != exclude:
                m.merge(part)
        return m


def _chunk_moments(a: Any, b: Any, precision: Precision, xp: Any) -> tuple[int, Any, Any, Any]:
    """Row count, float64 mean, shifted product and shift error of one chunk of [a, b].

    The chunk is copied once into a work buffer [a b], shifted by its mean rounded to the
    work dtype, and multiplied with itself (a SYRK in NumPy/CuPy). The product's offset
    from the centred co-moment is ``n e e^T`` with ``e = mean - shift``; :meth:`Moments._combine`
    removes it in float64.
    """
    work = xp.float32 if precision == "float32" else xp.float64
    n_c, da = int(a.shape[0]), int(a.shape[1])
    z = xp.empty((n_c, da + int(b.shape[1])), dtype=work, device=device(a))
    z[:, :da] = a if a.dtype == work else xp.astype(a, work)
    z[:, da:] = b if b.dtype == work else xp.astype(b, work)
    mean = xp.sum(z, axis=0, dtype=xp.float64) / n_c
    shift = xp.astype(mean, work)
    z -= shift
    return n_c, mean, xp.matrix_transpose(z) @ z, mean - xp.astype(shift, xp.float64)
