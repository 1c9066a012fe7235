"""Streaming joint moments of k feature blocks: the only pass the closed-form solvers and measures need.

For rows z = [f_1, ..., f_k] (two networks' features, or many networks' or layers') the
accumulator keeps the row count, the float64 mean of z and the float64 centred co-moment matrix
``C = Σ_i (z_i − mean)(z_i − mean)ᵀ``. Each chunk is shifted by its own (float32-rounded) mean
before the big product, so a float32 GEMM/SYRK sees small, centred numbers and its result is
corrected exactly in float64 (:mod:`lintwin.core.block_moments` computes a chunk's share). The
products G_c of a group of chunks are summed into the float64 co-moment as they come; what turns
them into centred co-moments -- ``Σ_c n_c[(m_c − m)(m_c − m)ᵀ − e_c e_cᵀ]`` with chunk means m_c and
shift roundings e_c -- is low-rank and applied once per group of up to 64 chunks (one GEMM), which
is the pairwise (Chan et al.) update written for many chunks at once. Groups, and the
accumulators of folds, shards or workers (:meth:`Moments.merge`), are joined by the pairwise
update. A pair of networks is the case k = 2; the moments of any pair of blocks are sub-blocks
(:meth:`Moments.pair`), exactly what a pass over that pair alone would have summed.
"""

from __future__ import annotations

import json
import zipfile
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any, Literal

import numpy as np

from ..errors import LintwinError, NonFiniteError, ShapeError
from .block_moments import PRECISIONS, BlockKernel
from .files import atomic_write
from .kernel_sums import KernelSums
from .xp import device, from_numpy, namespace, to_numpy

Precision = Literal["float32", "float64", "tf32"]
_COARSENESS = {"float64": 0, "float32": 1, "tf32": 2}
_GROUP = 64  # chunks whose low-rank corrections are applied together
_FORMAT = "lintwin.moments/2"
_PAIR_FORMAT = "lintwin.moments/1"  # lintwin 0.2: two blocks, pair-named kernel sums; still read

__all__ = ["PRECISIONS", "Moments", "check_finite", "check_pair", "locate_nonfinite"]


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


def _default_names(k: int) -> tuple[str, ...]:
    return tuple(chr(ord("A") + i) if i < 26 else f"block{i}" for i in range(k))


class Moments:
    """Joint first and second moments of k paired feature blocks of widths ``dims``.

    ``Moments(512, 384)`` is a pair of networks A and B; ``Moments(*dims, names=nets)`` any
    number. ``precision="float32"`` multiplies shifted float32 blocks and sums in float64;
    ``"float64"`` does every product in float64; ``"tf32"`` takes the products from TF32-rounded
    values (a GPU's tensor cores; emulated by NumPy, to check what a GPU would give). The arrays live in the namespace and on the
    device of the first chunk (NumPy, CuPy, ...). ``kernel=True`` also keeps the row-norm sums
    of :class:`~lintwin.core.kernel_sums.KernelSums` (for debiased CKA).

    NaN/Inf are not looked for chunk by chunk (that would sync the device every chunk): they
    propagate into the column sums, and :meth:`check_finite` refuses them once, at the end.
    """

    def __init__(self, *dims: int, names: Sequence[str] | None = None, precision: Precision = "float32",
                 kernel: bool | KernelSums | None = False):
        if precision not in PRECISIONS:
            raise LintwinError(f"precision must be one of {', '.join(map(repr, PRECISIONS))}, got {precision!r}")
        if not dims or any(int(d) < 0 for d in dims):
            raise ShapeError(f"moments need at least one block of width >= 0, got dims {dims}")
        self.dims = tuple(int(d) for d in dims)
        self.names = tuple(names) if names is not None else _default_names(len(self.dims))
        if len(self.names) != len(self.dims) or len(set(self.names)) != len(self.names):
            raise LintwinError(f"need one distinct name per block; got {list(self.names)} for {len(self.dims)} blocks")
        self.precision = precision
        self.n, self._mean, self._com = 0, None, None
        self._owned = False  # True when ``_com`` may be updated in place
        # chunks whose products are summed into ``_com`` but whose corrections are not applied yet:
        # (rows, float64 mean, mean − shift) each; ``_com``/``_mean`` hold the rest (see the module)
        self._pending: list[tuple[int, Any, Any]] = []
        self._blocks = BlockKernel()
        self.kernel = KernelSums(self.dims) if kernel is True else (kernel or None)
        self.saved_extra: dict[str, Any] = {}  # what :meth:`save` was given as ``extra``, after :meth:`load`

    def __repr__(self) -> str:
        blocks = ", ".join(f"{n}: {d}" for n, d in zip(self.names, self.dims))
        return f"Moments({blocks}; n={self.n}, {self.precision}{', kernel sums' if self.kernel else ''})"

    @classmethod
    def from_parts(cls, dims: Sequence[int], names: Sequence[str], precision: Precision, n: int, mean: Any,
                   comoment: Any, kernel: KernelSums | None = None) -> Moments:
        """An accumulator holding already-computed moments (``n`` rows, float64 mean and co-moment)."""
        m = cls(*dims, names=names, precision=precision, kernel=kernel)
        if n:
            m.n, m.mean, m.comoment = int(n), mean, comoment
        return m

    def __getstate__(self) -> dict[str, Any]:
        self._flush()
        return {k: v for k, v in self.__dict__.items() if k != "_blocks"} | {"_blocks": BlockKernel()}

    # -- the running sums ---------------------------------------------------------------
    @property
    def mean(self) -> Any:
        """The float64 mean of the rows (None before any)."""
        self._flush()
        return self._mean

    @mean.setter
    def mean(self, value: Any) -> None:
        self._flush()
        self._mean = value

    @property
    def comoment(self) -> Any:
        """The float64 centred co-moment matrix Σ (z − mean)(z − mean)ᵀ (None before any rows)."""
        self._flush()
        return self._com

    @comoment.setter
    def comoment(self, value: Any) -> None:
        self._flush()
        self._com = value

    # -- shape ------------------------------------------------------------------------
    @property
    def dim(self) -> int:
        return sum(self.dims)

    @property
    def dim_a(self) -> int:
        return self.dims[0]

    @property
    def dim_b(self) -> int:
        return self.dims[1]

    @property
    def offsets(self) -> tuple[int, ...]:
        return tuple(int(x) for x in np.cumsum((0,) + self.dims[:-1]))

    def index(self, name: str) -> int:
        if name not in self.names:
            raise LintwinError(f"network {name!r} is not among the accumulated ones ({', '.join(self.names)})")
        return self.names.index(name)

    # -- accumulation -----------------------------------------------------------------
    def update(self, *blocks: Any) -> Moments:
        """Add a chunk of paired rows, one array per block (no device sync: see :meth:`check_finite`)."""
        if len(blocks) != len(self.dims):
            raise ShapeError(f"expected {len(self.dims)} feature blocks ({', '.join(self.names)}), got {len(blocks)}")
        if len(blocks) == 2:
            check_pair(blocks[0], blocks[1], self.names)  # type: ignore[arg-type]
        for x, d, name in zip(blocks, self.dims, self.names):
            if x.ndim != 2:
                raise ShapeError(f"features of {name} must be 2-D (rows x dim), got shape {tuple(x.shape)}")
            if x.shape[1] != d:
                raise ShapeError(f"features of {name} have {x.shape[1]} columns, expected {d}")
        rows = {int(x.shape[0]) for x in blocks}
        if len(rows) > 1:
            raise ShapeError(f"feature blocks of {', '.join(self.names)} have different row counts {sorted(rows)}")
        if rows.pop() == 0:
            return self
        xp = namespace(*blocks)
        z = self._blocks.joined(int(blocks[0].shape[0]), self.dim, self.precision, blocks[0])
        for x, o, d in zip(blocks, self.offsets, self.dims):
            z[:, o : o + d] = x if x.dtype == z.dtype else xp.astype(x, z.dtype)
        if self.kernel is not None:
            self.kernel.update(*blocks)  # from the blocks as given (float64 inputs stay float64)
        return self._add_joined(z, own=True)

    def update_joined(self, z: Any, *, own: bool = False) -> Moments:
        """Add a chunk given joined (rows × Σd, the blocks side by side in order).

        ``own=True`` lets the accumulator shift ``z`` in place (a work buffer nobody else reads).
        """
        if z.ndim != 2 or int(z.shape[1]) != self.dim:
            raise ShapeError(f"a joined chunk must be rows x {self.dim}, got shape {tuple(z.shape)}")
        if int(z.shape[0]) and self.kernel is not None:
            self.kernel.update_joined(z)
        return self._add_joined(z, own=own)

    def _add_joined(self, z: Any, *, own: bool) -> Moments:
        if int(z.shape[0]) == 0:
            return self
        xp = namespace(z)
        if self.n and namespace(self._com) is not xp:
            self._move_like(z)  # e.g. loaded from disk (NumPy), continued with CuPy chunks
        sums = self._blocks.run(z, self.precision, own)
        mean_c = sums.colsum / sums.n
        error = mean_c - xp.astype(sums.shift, xp.float64)
        if self._com is None:
            self._com = xp.zeros((self.dim, self.dim), dtype=xp.float64, device=device(z))
            self._owned = True
        elif not self._owned:
            self._com = xp.astype(self._com, xp.float64, copy=True)
            self._owned = True
        self._com = self._blocks.add_gram(self._com, sums)
        self._pending.append((sums.n, mean_c, error))
        self.n += sums.n
        if len(self._pending) >= _GROUP:
            self._flush()
        return self

    def _flush(self) -> None:
        """Apply the pending chunks' low-rank corrections: ``_com`` and ``_mean`` become the centred moments.

        With chunk row counts n_c, means m_c, shift roundings e_c and group mean m_g, the group's
        centred co-moment is ΣG_c + Σ n_c[(m_c − m_g)(m_c − m_g)ᵀ − e_c e_cᵀ]; joining it to the
        rows before adds w δδᵀ (δ = m_g − mean, w = n_before·n_g/n). All are rows of one matrix L
        with signs s, added as Lᵀ diag(s) L (no device sync).
        """
        if not self._pending:
            return
        pending, self._pending = self._pending, []
        xp = namespace(self._com)
        dev = device(self._com)
        counts = np.array([p[0] for p in pending], dtype=np.float64)
        n_g = float(counts.sum())
        n_before = self.n - int(n_g)
        w = xp.asarray(counts, device=dev)
        means = xp.stack([p[1] for p in pending])
        m_g = xp.sum(means * xp.reshape(w, (-1, 1)), axis=0) / n_g
        root = xp.reshape(xp.sqrt(w), (-1, 1))
        parts = [(means - m_g) * root, xp.stack([p[2] for p in pending]) * root]
        signs = [1.0] * len(pending) + [-1.0] * len(pending)
        if n_before:
            delta = m_g - self._mean
            parts.append(xp.reshape(delta * float(np.sqrt(n_before * n_g / self.n)), (1, -1)))
            signs.append(1.0)
            self._mean = self._mean + delta * (n_g / self.n)
        else:
            self._mean = m_g
        low = xp.concat(parts, axis=0)
        s = xp.reshape(xp.asarray(np.array(signs), device=dev), (-1, 1))
        self._com += xp.matrix_transpose(low * s) @ low

    def merge(self, other: Moments) -> Moments:
        """Fold another accumulator (another shard, fold or worker) into this one.

        Shards must hold the same blocks; one accumulated with the blocks in another order is
        reordered, anything else is refused. ``other`` is not changed.
        """
        other = self._aligned(other)
        self._flush()
        other._flush()  # its values do not change, only how they are held
        if (self.kernel is None) != (other.kernel is None) and other.n and self.n:
            raise LintwinError("cannot merge moments with and without kernel sums (debiased CKA needs them in both)")
        if other.n == 0:
            return self
        if _COARSENESS[other.precision] > _COARSENESS[self.precision]:
            self.precision = other.precision  # the merged moments are only as precise as their coarsest part
        mean, com = other.mean, other.comoment
        if self.n and namespace(mean) is not namespace(self.mean):
            mean, com = from_numpy(to_numpy(mean), self.mean), from_numpy(to_numpy(com), self.mean)
        if self.n == 0 and other.kernel is not None and self.kernel is None:
            self.kernel = KernelSums(self.dims)
        self._combine(other.n, mean, com, namespace(mean))
        if self.kernel is not None and other.kernel is not None:
            self.kernel.merge(other.kernel)
        return self

    def _aligned(self, other: Moments) -> Moments:
        """``other`` in this accumulator's block order, or a refusal."""
        if other.names == self.names and other.dims == self.dims:
            return other
        if sorted(other.names) == sorted(self.names):
            order = [other.names.index(n) for n in self.names]
            if tuple(other.dims[i] for i in order) == self.dims:
                return other.select([other.names[i] for i in order])
        if sorted(other.dims) != sorted(self.dims):
            raise ShapeError(f"cannot merge moments of dims {'+'.join(map(str, other.dims))} into "
                             f"{'+'.join(map(str, self.dims))}")
        raise ShapeError(f"cannot merge moments of {'+'.join(other.names)} into {'+'.join(self.names)}: "
                         "they are of other networks")

    def _move_like(self, like: Any) -> None:
        """Move the running state into the namespace and onto the device of ``like``."""
        self._flush()
        self._mean = from_numpy(to_numpy(self._mean), like)
        self._com = from_numpy(to_numpy(self._com), like)
        self._owned = True

    def _combine(self, n_c: int, mean_c: Any, com_c: Any, xp: Any) -> None:
        """Pairwise (Chan et al.) update into a new co-moment array (inputs are never modified)."""
        if self.n == 0:
            self.n, self._mean = n_c, mean_c
            self._com, self._owned = xp.astype(com_c, xp.float64, copy=True), True
            return
        n = self.n + n_c
        delta = mean_c - self._mean
        weight = self.n * n_c / n
        self._mean = self._mean + delta * (n_c / n)
        self._com = self._com + com_c + xp.reshape(delta, (-1, 1)) * xp.reshape(delta * weight, (1, -1))
        self.n, self._owned = n, True

    # -- views ------------------------------------------------------------------------
    def select(self, names: Sequence[str]) -> Moments:
        """The moments of the named blocks, in the given order (a new accumulator sharing nothing)."""
        idx = [self.index(n) for n in names]
        out = Moments(*(self.dims[i] for i in idx), names=list(names), precision=self.precision)
        if self.kernel is not None:
            out.kernel = self.kernel.select(idx)
        if self.n:
            xp = namespace(self.mean)
            offs = self.offsets
            cols = np.concatenate([np.arange(offs[i], offs[i] + self.dims[i]) for i in idx])
            take = xp.asarray(cols, device=device(self.mean))
            out.n, out.mean = self.n, xp.take(self.mean, take, axis=0)
            out.comoment = xp.take(xp.take(self.comoment, take, axis=0), take, axis=1)
            out._owned = True
        return out

    def pair(self, a: str, b: str) -> Moments:
        """The two-block moments of (a, b), as one pass over those two blocks alone would give them."""
        if a == b:
            raise LintwinError(f"a pair needs two different networks, got {a!r} twice")
        if self.n == 0:
            raise LintwinError("no rows were accumulated: the training split is empty")
        return self.select([a, b])

    def twin(self, name: str) -> Moments:
        """Block ``name`` paired with an exact copy of itself (a layer's similarity to itself), a new accumulator."""
        i = self.index(name)
        out = Moments(self.dims[i], self.dims[i], names=[name, f"{name} (copy)"], precision=self.precision)
        if self.kernel is not None:
            out.kernel = self.kernel.select([i, i])
        if self.n:
            xp = namespace(self.mean)
            cols = np.arange(self.offsets[i], self.offsets[i] + self.dims[i])
            take = xp.asarray(np.concatenate([cols, cols]), device=device(self.mean))
            out.n, out.mean = self.n, xp.take(self.mean, take, axis=0)
            out.comoment = xp.take(xp.take(self.comoment, take, axis=0), take, axis=1)
            out._owned = True
        return out

    def swapped(self) -> Moments:
        """The moments of a pair with the roles of a and b exchanged (a new accumulator)."""
        return self.select(self.names[::-1])

    # -- checks -----------------------------------------------------------------------
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
        which = " or ".join(self.names)
        if bool(xp.all(xp.isfinite(self.mean))):
            raise NonFiniteError(
                f"features of {'/'.join(self.names)} are too large for {self.precision} products "
                "(their squares overflow); use --precision float64 or rescale the features")
        raise NonFiniteError(f"NaN or Inf in features of {which}")

    def blocks(self) -> dict[str, Any]:
        """A pair's means and co-moment blocks: mean_a, mean_b, aa, ab, bb (float64 sums, not averages)."""
        if len(self.dims) != 2:
            raise LintwinError(f"blocks() is for a pair; these moments hold {len(self.dims)} blocks: select a pair")
        if self.n == 0:
            raise LintwinError("no rows were accumulated: the training split is empty")
        self.check_finite()
        da = self.dim_a
        C = self.comoment
        return {"mean_a": self.mean[:da], "mean_b": self.mean[da:], "aa": C[:da, :da], "ab": C[:da, da:],
                "bb": C[da:, da:]}

    def oriented(self, reverse: bool = False) -> tuple[Any, Any, Any, Any, Any]:
        """``(Sxx, Sxy, Syy, mean_x, mean_y)`` for the map a→b, or b→a with ``reverse``."""
        blk = self.blocks()
        if reverse:
            xp = namespace(blk["ab"])
            return blk["bb"], xp.matrix_transpose(blk["ab"]), blk["aa"], blk["mean_b"], blk["mean_a"]
        return blk["aa"], blk["ab"], blk["bb"], blk["mean_a"], blk["mean_b"]

    # -- persistence ------------------------------------------------------------------
    def save(self, path: str | Path, extra: dict[str, Any] | None = None) -> Path:
        """Write to ``.npz`` (no pickle): arrays plus a JSON header (``extra`` goes into it), atomically."""
        meta = {"format": _FORMAT, "dims": list(self.dims), "names": list(self.names), "precision": self.precision,
                "n": self.n, "kernel": self.kernel is not None, "extra": extra or {}}
        d = self.dim
        arrays = {"meta": np.array(json.dumps(meta)),
                  "mean": to_numpy(self.mean) if self.n else np.zeros(d),
                  "comoment": to_numpy(self.comoment) if self.n else np.zeros((d, d))}
        if self.kernel is not None:
            arrays |= self.kernel.to_arrays()
        return atomic_write(Path(path), lambda fh: np.savez(fh, **arrays))

    @classmethod
    def load(cls, path: str | Path) -> Moments:
        """Read moments written by :meth:`save` (refuses other or damaged files); ``extra`` in :attr:`saved_extra`."""
        try:
            with np.load(Path(path), allow_pickle=False) as z:
                meta = json.loads(str(z["meta"]))
                if isinstance(meta, dict) and meta.get("format") == _PAIR_FORMAT:
                    meta = {**meta, "dims": [meta["dim_a"], meta["dim_b"]]}  # lintwin 0.2's two-block files
                    kernel = _pair_kernel(meta["dims"], z) if meta.get("kernel") else None
                elif not isinstance(meta, dict) or meta.get("format") != _FORMAT:
                    raise LintwinError(f"{path}: not a lintwin moments file (format "
                                       f"{meta.get('format') if isinstance(meta, dict) else None!r})")
                else:
                    kernel = KernelSums.from_arrays(meta["dims"], z) if meta.get("kernel") else None
                dims = [int(d) for d in meta["dims"]]
                mean, com = z["mean"], z["comoment"]
                m = cls.from_parts(dims, tuple(meta["names"]), meta["precision"], int(meta["n"]), mean, com,
                                   kernel=kernel)
        except LintwinError:
            raise
        except (OSError, ValueError, KeyError, TypeError, json.JSONDecodeError, zipfile.BadZipFile) as exc:
            raise LintwinError(f"{path}: not a readable lintwin moments file ({type(exc).__name__}: {exc})") from None
        d = m.dim
        if m.n and (mean.shape != (d,) or com.shape != (d, d)):
            raise LintwinError(f"{path}: arrays disagree with the header's dimensions")
        m.saved_extra = meta.get("extra") or {}
        return m

    @classmethod
    def merged(cls, parts: Sequence[Moments], exclude: int | None = None) -> Moments:
        """A new accumulator: the merge of ``parts`` except the one at index ``exclude`` (CV folds)."""
        first = parts[0]
        m = cls(*first.dims, names=first.names, precision=first.precision)
        for j, part in enumerate(parts):
            if j != exclude:
                m.merge(part)
        return m


def _pair_kernel(dims: Sequence[int], z: Any) -> KernelSums:
    """The kernel sums of a lintwin 0.2 moments file (named pair sums) as the k-block totals."""
    n = int(z["kernel_n"])
    if not n:
        return KernelSums(tuple(dims))
    k = {name: np.asarray(z[f"kernel_{name}"], dtype=np.float64) for name in
         ("r", "q", "rr", "qq", "rq", "ra", "qb", "rb", "qa")}
    totals = {"r": np.array([k["r"], k["q"]]), "rr": np.array([[k["rr"], k["rq"]], [k["rq"], k["qq"]]]),
              "rz": np.stack([np.concatenate([k["ra"], k["rb"]]), np.concatenate([k["qa"], k["qb"]])])}
    return KernelSums(tuple(dims), n, totals)

