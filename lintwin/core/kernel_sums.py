"""Row-norm sums of k feature blocks: what debiased (unbiased-HSIC) CKA needs beyond the moments.

For rows z = [f_1, ..., f_k] with squared row norms r_b = ‖f_b‖² of each block b, three sums
over the rows hold everything: ``Σ r_b`` (k), ``Σ r_b r_c`` (k × k) and ``Σ r_b z`` (k × Σd).
Any pair of blocks reads its sums from these (:meth:`KernelSums.select`, :attr:`KernelSums.sums`), so one pass over many
networks or layers serves debiased CKA of every pair. Sums are float64 on the blocks' device and
merge across shards by addition.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from .xp import device, from_numpy, namespace, to_numpy

__all__ = ["KernelSums"]

_KEYS = ("r", "rr", "rz")


@dataclass
class KernelSums:
    """``Σ r`` (k), ``Σ r rᵀ`` (k × k) and ``Σ r zᵀ`` (k × Σd) over the rows of k blocks of ``dims``.

    ``totals`` holds those three arrays; for two blocks, :attr:`sums` names the pair's sums.
    """

    dims: tuple[int, ...]
    n: int = 0
    totals: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.dims = tuple(int(d) for d in self.dims)

    @property
    def offsets(self) -> tuple[int, ...]:
        return tuple(int(x) for x in np.cumsum((0,) + self.dims[:-1]))

    def update(self, *blocks: Any) -> KernelSums:
        """Add a chunk of paired rows, one array per block (any namespace; float64 sums on its device)."""
        xp = namespace(*blocks)
        parts = [xp.astype(x, xp.float64) for x in blocks]
        r = xp.stack([xp.sum(x * x, axis=1) for x in parts], axis=1)
        rz = xp.concat([xp.matrix_transpose(r) @ x for x in parts], axis=1)
        return self._add_chunk(int(blocks[0].shape[0]), r, rz, blocks[0])

    def update_joined(self, z: Any) -> KernelSums:
        """Add a chunk of rows given joined (rows × Σd, blocks side by side; any namespace)."""
        xp = namespace(z)
        z64 = xp.astype(z, xp.float64)
        sq = z64 * z64
        r = xp.stack([xp.sum(sq[:, o : o + d], axis=1) for o, d in zip(self.offsets, self.dims)], axis=1)
        return self._add_chunk(int(z.shape[0]), r, xp.matrix_transpose(r) @ z64, z)

    def _add_chunk(self, rows: int, r: Any, rz: Any, like: Any) -> KernelSums:
        xp = namespace(r)
        if self.n and namespace(self.totals["rz"]) is not xp:  # e.g. loaded from disk, continued on a device
            self.totals = {k: from_numpy(to_numpy(v), like) for k, v in self.totals.items()}
        self._add(rows, {"r": xp.sum(r, axis=0), "rr": xp.matrix_transpose(r) @ r, "rz": rz})
        return self

    def merge(self, other: KernelSums) -> KernelSums:
        """Fold another shard's sums into these (moved to this namespace when they differ)."""
        if other.dims != self.dims:
            raise ValueError(f"kernel sums of dims {other.dims} into {self.dims}")
        if other.n == 0:
            return self
        part = other.totals
        if self.n and namespace(self.totals["rz"]) is not namespace(part["rz"]):
            part = {k: from_numpy(to_numpy(v), self.totals["rz"]) for k, v in part.items()}
        self._add(other.n, part)
        return self

    def _add(self, n: int, part: dict[str, Any]) -> None:
        self.totals = dict(part) if self.n == 0 else {k: self.totals[k] + part[k] for k in _KEYS}
        self.n += n

    def select(self, blocks: Sequence[int]) -> KernelSums:
        """The sums of the chosen blocks, in the given order (a new object)."""
        dims = tuple(self.dims[b] for b in blocks)
        if self.n == 0:
            return KernelSums(dims)
        xp = namespace(self.totals["rz"])
        cols = np.concatenate([np.arange(self.offsets[b], self.offsets[b] + self.dims[b]) for b in blocks])
        rows = xp.asarray(np.asarray(blocks), device=device(self.totals["rz"]))
        cols = xp.asarray(cols, device=device(self.totals["rz"]))
        rr = xp.take(xp.take(self.totals["rr"], rows, axis=0), rows, axis=1)
        rz = xp.take(xp.take(self.totals["rz"], rows, axis=0), cols, axis=1)
        return KernelSums(dims, self.n, {"r": xp.take(self.totals["r"], rows), "rr": rr, "rz": rz})

    @property
    def sums(self) -> dict[str, Any]:
        """For two blocks a, b (r = ‖a‖², q = ‖b‖²): Σr, Σq, Σr², Σq², Σrq and Σ r a, Σ q b, Σ r b, Σ q a."""
        if len(self.dims) != 2:
            raise ValueError(f"named pair sums need two blocks, these have {len(self.dims)}; select a pair first")
        s, da = self.totals, self.dims[0]
        return {"r": s["r"][0], "q": s["r"][1], "rr": s["rr"][0, 0], "qq": s["rr"][1, 1], "rq": s["rr"][0, 1],
                "ra": s["rz"][0, :da], "qb": s["rz"][1, da:], "rb": s["rz"][0, da:], "qa": s["rz"][1, :da]}

    def to_arrays(self) -> dict[str, np.ndarray]:
        """NumPy arrays for saving (keys ``kernel_<name>``, plus ``kernel_n``)."""
        k, total = len(self.dims), sum(self.dims)
        empty = {"r": np.zeros(k), "rr": np.zeros((k, k)), "rz": np.zeros((k, total))}
        out = {"kernel_n": np.asarray(self.n, dtype=np.int64)}
        for key in _KEYS:
            out[f"kernel_{key}"] = np.asarray(to_numpy(self.totals[key]) if self.n else empty[key], dtype=np.float64)
        return out

    @classmethod
    def from_arrays(cls, dims: Sequence[int], arrays: Any) -> KernelSums:
        """Inverse of :meth:`to_arrays` (``arrays`` is a mapping such as an open ``.npz``)."""
        n = int(arrays["kernel_n"])
        out = cls(tuple(dims), n, {k: np.asarray(arrays[f"kernel_{k}"], dtype=np.float64) for k in _KEYS} if n else {})
        k, total = len(out.dims), sum(out.dims)
        if n and (out.totals["r"].shape != (k,) or out.totals["rr"].shape != (k, k) or out.totals["rz"].shape != (k, total)):
            raise ValueError("kernel sums disagree with the dimensions")
        return out
