"""Seeded, realistic stand-ins for CNN features, for tests, benchmarks and a quick start.

Pooled post-ReLU CNN features are non-negative, about half zeros, strongly correlated
(they live near a low-dimensional manifold) and, for two networks seeing the same image,
related through what the image shows. Here both feature sets are ReLUs of random
projections of one shared latent with a decaying spectrum, plus independent noise, so
an affine map fits well but not exactly and the uncentred Gram matrix is badly
conditioned, as with real features.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ..core.xp import row_spans
from ..errors import LintwinError, ShapeError
from .layout import check_name, default_chunk_rows
from .store import FeatureStore

__all__ = ["SyntheticPair", "write_synthetic_store"]

_GRID = 4096  # rows are generated in fixed blocks so any slice is reproducible


class SyntheticPair:
    """Generator of paired features (dim_a, dim_b) from a shared ``latent``-dim cause.

    ``latent`` defaults to a quarter of the narrower network, at most 128.
    """

    def __init__(self, dim_a: int, dim_b: int, *, latent: int | None = None, noise: float = 0.3, seed: int = 0):
        latent = latent or min(128, max(4, min(dim_a, dim_b) // 4))
        self.dim_a, self.dim_b, self.latent, self.noise, self.seed = dim_a, dim_b, latent, noise, seed
        rng = np.random.default_rng(seed)
        spectrum = 1.0 / np.sqrt(1.0 + np.arange(latent))
        self.proj_a = (rng.standard_normal((latent, dim_a)) * spectrum[:, None]).astype(np.float32)
        self.proj_b = (rng.standard_normal((latent, dim_b)) * spectrum[:, None]).astype(np.float32)
        # A per-feature offset and gain, as real channels differ in scale; the offset
        # keeps the fraction of zeros near one half.
        self.gain_a = rng.uniform(0.2, 3.0, dim_a).astype(np.float32)
        self.gain_b = rng.uniform(0.2, 3.0, dim_b).astype(np.float32)

    def block(self, start: int, rows: int) -> tuple[np.ndarray, np.ndarray]:
        """Rows ``start .. start+rows``; row i is the same whatever block it is asked in."""
        first, last = start // _GRID, (start + rows - 1) // _GRID
        parts = [self._grid_block(g) for g in range(first, last + 1)]
        a = np.concatenate([p[0] for p in parts])
        b = np.concatenate([p[1] for p in parts])
        off = start - first * _GRID
        return a[off : off + rows], b[off : off + rows]

    def _grid_block(self, g: int) -> tuple[np.ndarray, np.ndarray]:
        rng = np.random.default_rng([self.seed, g])
        z = rng.standard_normal((_GRID, self.latent), dtype=np.float32)
        na = rng.standard_normal((_GRID, self.dim_a), dtype=np.float32)
        nb = rng.standard_normal((_GRID, self.dim_b), dtype=np.float32)
        a = np.maximum(z @ self.proj_a + self.noise * na, 0.0) * self.gain_a
        b = np.maximum(z @ self.proj_b + self.noise * nb, 0.0) * self.gain_b
        return a, b

    def arrays(self, n: int, start: int = 0) -> tuple[np.ndarray, np.ndarray]:
        """``n`` rows from row ``start``, in memory."""
        return self.block(start, n)


def write_synthetic_store(path: str | Path, *, train: int, val: int = 0, dim_a: int = 512, dim_b: int = 384,
                          names: tuple[str, str] = ("A", "B"), latent: int | None = None, noise: float = 0.3,
                          seed: int = 0, chunk_rows: int | None = None, overwrite: bool = False) -> FeatureStore:
    """Write a train (and val) split of synthetic paired features, block by block.

    Existing networks of the same names are replaced only with ``overwrite``, as for an import.
    """
    for nm in names:
        check_name(nm, "network")
    if names[0] == names[1]:
        raise LintwinError(f"the two networks need different names, got {names[0]!r} twice")
    if train <= 0 or val < 0 or dim_a <= 0 or dim_b <= 0:
        raise ShapeError("synthetic features need train >= 1, val >= 0 and dimensions >= 1")
    splits = [(split, rows) for split, rows in (("train", train), ("val", val)) if rows > 0]
    if not overwrite and (Path(path) / "zarr.json").exists():
        existing = FeatureStore.open(path)
        taken = [f"{nm} [{sp}]" for sp, _ in splits for nm in names
                 if existing.has(sp, nm) and existing.info(sp, nm)["rows_written"] == existing.info(sp, nm)["rows"]]
        if taken:
            raise LintwinError(f"{path} already holds features of {', '.join(taken)}; pass --overwrite to replace them")
    store = FeatureStore.create(path)
    gen = SyntheticPair(dim_a, dim_b, latent=latent, noise=noise, seed=seed)
    source = f"synthetic(seed={seed}, latent={gen.latent}, noise={noise})"
    plans = []  # per split: its rows and, per network, the arguments of its write
    offset = 0
    for split, rows in splits:
        identity = f"{source} rows {offset}..{offset + rows - 1}"
        plans.append((split, rows, [(nm, {"rows": rows, "dim": d, "chunk_rows": chunk_rows, "source": source,
                                          "overwrite": True, "rows_identity": identity})
                                    for nm, d in zip(names, (dim_a, dim_b))]))
        offset += rows
    try:
        for split, _, writes in plans:  # refuse before any array is replaced, not after the first split
            for nm, kwargs in writes:
                store.check_features_write(split, nm, **kwargs)
        offset = 0
        for split, rows, writes in plans:
            arrs = [store.open_features_for_write(split, nm, **kwargs) for nm, kwargs in writes]
            step = chunk_rows or default_chunk_rows(max(dim_a, dim_b))
            for lo, hi in row_spans(rows, step):
                a, b = gen.block(offset + lo, hi - lo)
                FeatureStore.write_rows(arrs[0], lo, a)
                FeatureStore.write_rows(arrs[1], lo, b)
            offset += rows
    finally:
        store.close()
    return store
