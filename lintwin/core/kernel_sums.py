"""Running sums of squared row norms that the unbiased (debiased) HSIC estimator needs.

Linear CKA from moments only needs the co-moments; the unbiased HSIC estimator of Song et al.
(2012), on which debiased CKA rests, also needs the diagonal of the kernel matrices K = A A^T and
L = B B^T, i.e. per-row squared norms. With r_i = ||a_i||² and q_i = ||b_i||², every term of the
estimator reduces to the uncentred cross-moments (from :class:`lintwin.moments.Moments`) and to the
sums kept here: Σr, Σq, Σr², Σq², Σrq, Σ r_i a_i, Σ q_i b_i, Σ r_i b_i, Σ q_i a_i. They are plain
sums over rows, so shards merge by addition. Everything is accumulated in float64.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from .xp import from_numpy, namespace, to_numpy

__all__ = ["KernelSums"]

_SCALARS = ("r", "q", "rr", "qq", "rq")
_VECTORS = ("ra", "qb", "rb", "qa")  # Σ r_i a_i (d_a), Σ q_i b_i (d_b), Σ r_i b_i (d_b), Σ q_i a_i (d_a)


@dataclass
class KernelSums:
    """Σ over rows of r = ||a||², q = ||b||², r², q², r q (scalars) and r a, q b, r b, q a (vectors)."""

    dim_a: int
    dim_b: int
    n: int = 0
    sums: dict[str, Any] = field(default_factory=dict)

    def update(self, a: Any, b: Any) -> "KernelSums":
        """Add a chunk of paired rows (any namespace; float64 sums on the chunk's device)."""
        xp = namespace(a, b)
        a64, b64 = xp.astype(a, xp.float64), xp.astype(b, xp.float64)
        r, q = xp.sum(a64 * a64, axis=1), xp.sum(b64 * b64, axis=1)
        part = {
            "r": xp.sum(r), "q": xp.sum(q), "rr": xp.sum(r * r), "qq": xp.sum(q * q), "rq": xp.sum(r * q),
            "ra": r @ a64, "qb": q @ b64, "rb": r @ b64, "qa": q @ a64,
        }
        if self.n and namespace(self.sums["ra"]) is not xp:  # e.g. loaded from disk, continued on a device
            self.sums = {k: from_numpy(np.asarray(to_numpy(v)), a) for k, v in self.sums.items()}
        self._add(int(a.shape[0]), part)
        return self

    def merge(self, other: "KernelSums") -> "KernelSums":
        """Fold another shard's sums into these (moved to this namespace when they differ)."""
        if (other.dim_a, other.dim_b) != (self.dim_a, self.dim_b):
            raise ValueError(f"kernel sums of dims {other.dim_a}+{other.dim_b} into {self.dim_a}+{self.dim_b}")
        if other.n == 0:
            return self
        part = other.sums
        if self.n and namespace(self.sums["ra"]) is not namespace(part["ra"]):
            part = {k: from_numpy(to_numpy(v), self.sums["ra"]) for k, v in part.items()}
        self._add(other.n, part)
        return self

    def swapped(self) -> "KernelSums":
        """The same sums with the roles of a and b exchanged."""
        s = self.sums
        names = {"r": "q", "q": "r", "rr": "qq", "qq": "rr", "rq": "rq", "ra": "qb", "qb": "ra", "rb": "qa", "qa": "rb"}
        return KernelSums(self.dim_b, self.dim_a, self.n, {names[k]: v for k, v in s.items()})

    def _add(self, n: int, part: dict[str, Any]) -> None:
        if self.n == 0:
            self.sums = dict(part)
        else:
            self.sums = {k: self.sums[k] + part[k] for k in self.sums}
        self.n += n

    def to_arrays(self) -> dict[str, np.ndarray]:
        """NumPy arrays for saving (keys ``kernel_<name>``, plus ``kernel_n``)."""
        out = {"kernel_n": np.asarray(self.n, dtype=np.int64)}
        for k in _SCALARS + _VECTORS:
            default = np.zeros(self.dim_a if k in ("ra", "qa") else self.dim_b) if k in _VECTORS else np.float64(0)
            out[f"kernel_{k}"] = np.asarray(to_numpy(self.sums[k]) if self.n else default, dtype=np.float64)
        return out

    @classmethod
    def from_arrays(cls, dim_a: int, dim_b: int, arrays: Any) -> "KernelSums":
        """Inverse of :meth:`to_arrays` (``arrays`` is a mapping such as an open ``.npz``)."""
        n = int(arrays["kernel_n"])
        sums = {k: np.asarray(arrays[f"kernel_{k}"], dtype=np.float64) for k in _SCALARS + _VECTORS} if n else {}
        return cls(dim_a, dim_b, n, sums)
