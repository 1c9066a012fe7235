"""Joint moments of N networks' features from one pass; every pair's moments are sub-blocks.

The rows ``z = [f_1, ..., f_N]`` of a split are accumulated by one :class:`Moments` over the
concatenated features (``dim_a = Σd``, ``dim_b = 0``); the two-network moments of any pair
(i, j) are then the mean entries and co-moment sub-blocks of i and j, exactly what a
pairwise pass would have summed. Memory is (Σd)² float64 plus temporaries: :func:`joint_bytes`
estimates it so a study can fall back to pairwise passes when it will not fit.
"""

from __future__ import annotations

import json
import os
import zipfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from tqdm.auto import tqdm

from ..errors import LintwinError, ShapeError
from ..storage.store import FeatureStore
from .distributed import reduce_futures, row_ranges
from .files import atomic_write
from .folds import image_folds
from .gpu import resolve_device, to_device
from .moments import Moments, Precision
from .xp import device as array_device
from .xp import namespace, to_numpy

__all__ = ["JointMoments", "accumulate_joint", "accumulate_joint_dask", "available_memory", "joint_bytes", "store_fingerprint"]

_FORMAT = "lintwin.joint-moments/1"
# co-moment (float64) + one chunk product (float32) + the rank-two update's float64 temporary
_BYTES_PER_ENTRY = 8 + 4 + 8


def joint_bytes(dims: Sequence[int], block_rows: int = 0) -> int:
    """Peak bytes of accumulating joint moments of networks of ``dims``: (Σd)² float64 and temporaries."""
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


def store_fingerprint(store: FeatureStore, split: str, names: Sequence[str]) -> dict[str, Any]:
    """What the moments of ``names`` in ``split`` depend on: rows, dims, model hashes and image sources."""
    nets = {}
    for name in names:
        info = store.info(split, name)
        nets[name] = {k: info.get(k) for k in ("dim", "rows", "rows_written", "model_sha256", "source", "ids_sha256",
                                               "chunk_crc32c")}
    return {"store": str(Path(store.path).resolve()), "split": split, "rows": store.rows(split), "order": list(names),
            "networks": nets}


class JointMoments:
    """Moments of the concatenated features of ``names`` (dims ``dims``), with per-pair views."""

    def __init__(self, names: Sequence[str], dims: Sequence[int], precision: Precision = "float32",
                 moments: Moments | None = None):
        if len(names) != len(dims) or len(set(names)) != len(names):
            raise LintwinError(f"need distinct network names, one dim each; got {list(names)} and {list(dims)}")
        self.names = tuple(names)
        self.dims = tuple(int(d) for d in dims)
        self.offsets = tuple(int(x) for x in np.cumsum((0,) + self.dims[:-1]))
        self.precision = precision
        self.moments = moments or Moments(sum(self.dims), 0, ("joint", ""), precision)

    @property
    def n(self) -> int:
        return self.moments.n

    def update(self, blocks: Sequence[Any]) -> JointMoments:
        """Add one block of rows: ``blocks[k]`` is the (rows x dims[k]) features of ``names[k]``."""
        if len(blocks) != len(self.names):
            raise ShapeError(f"expected {len(self.names)} feature blocks, got {len(blocks)}")
        for x, d, name in zip(blocks, self.dims, self.names):
            if x.ndim != 2 or x.shape[1] != d:
                raise ShapeError(f"features of {name} have shape {tuple(x.shape)}, expected (rows, {d})")
        rows = {int(x.shape[0]) for x in blocks}
        if len(rows) > 1:
            raise ShapeError(f"feature blocks of {', '.join(self.names)} have different row counts {sorted(rows)}")
        z = namespace(*blocks).concat(list(blocks), axis=1)
        self.moments.update(z, z[:, :0])  # NaN/Inf reach the sums; each pair's moments refuse them by name
        return self

    def index(self, name: str) -> int:
        if name not in self.names:
            raise LintwinError(f"network {name!r} is not among the accumulated ones ({', '.join(self.names)})")
        return self.names.index(name)

    def pair(self, a: str, b: str) -> Moments:
        """The two-network moments of (a, b), as one pairwise pass over the same rows would give them."""
        i, j = self.index(a), self.index(b)
        if i == j:
            raise LintwinError(f"a pair needs two different networks, got {a!r} twice")
        m = self.moments
        if m.n == 0:
            raise LintwinError("no rows were accumulated: the training split is empty")
        xp = namespace(m.mean)
        cols = np.concatenate([np.arange(self.offsets[k], self.offsets[k] + self.dims[k]) for k in (i, j)])
        idx = xp.asarray(cols, device=array_device(m.mean))
        mean = xp.take(m.mean, idx, axis=0)
        com = xp.take(xp.take(m.comoment, idx, axis=0), idx, axis=1)
        return Moments.from_parts(self.dims[i], self.dims[j], (a, b), self.precision, m.n, mean, com)

    # -- persistence ----------------------------------------------------------------
    def save(self, path: str | Path, fingerprint: dict[str, Any]) -> Path:
        """Write to ``.npz`` (no pickle) atomically: a killed write leaves the old file or none."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        meta = {"format": _FORMAT, "names": list(self.names), "dims": list(self.dims), "precision": self.precision,
                "n": self.n, "fingerprint": fingerprint}
        total = sum(self.dims)
        mean = to_numpy(self.moments.mean) if self.n else np.zeros(total)
        com = to_numpy(self.moments.comoment) if self.n else np.zeros((total, total))
        return atomic_write(path, lambda fh: np.savez(fh, meta=np.array(json.dumps(meta)), mean=mean, comoment=com))

    @classmethod
    def load(cls, path: str | Path, fingerprint: dict[str, Any] | None = None) -> JointMoments | None:
        """Read moments saved by :meth:`save`; None when the file is absent or was made from other data."""
        path = Path(path)
        if not path.is_file():
            return None
        try:
            with np.load(path, allow_pickle=False) as z:
                meta = json.loads(str(z["meta"]))
                mean, com = z["mean"], z["comoment"]
        except (OSError, ValueError, KeyError, TypeError, json.JSONDecodeError, zipfile.BadZipFile) as exc:
            raise LintwinError(f"{path}: not a lintwin joint-moments file ({exc}); delete it to recompute") from None
        if not isinstance(meta, dict) or meta.get("format") != _FORMAT:
            raise LintwinError(f"{path}: not a lintwin joint-moments file; delete it to recompute")
        if fingerprint is not None and meta.get("fingerprint") != fingerprint:
            return None
        total = sum(meta["dims"])
        if mean.shape != (total,) or com.shape != (total, total):
            raise LintwinError(f"{path}: array shapes disagree with its header; delete it to recompute")
        m = Moments.from_parts(total, 0, ("joint", ""), meta["precision"], meta["n"], mean, com)
        return cls(meta["names"], meta["dims"], meta["precision"], m)


def accumulate_joint(store: FeatureStore, names: Sequence[str], *, split: str = "train", precision: str = "float32",
                     device: str = "auto", block_rows: int | None = None, progress: bool = True) -> JointMoments:
    """Joint moments of every network in ``names`` in one streaming pass over ``split``."""
    device = resolve_device(device)
    dims = [int(store.info(split, name)["dim"]) for name in names]
    jm = JointMoments(names, dims, precision)  # type: ignore[arg-type]
    n = store.rows(split)
    with tqdm(total=n, desc=f"joint moments {split} ({len(names)} networks)", unit="rows", unit_scale=True,
              disable=not progress) as bar:
        for _, blocks in store.iter_blocks(split, list(names), block_rows=block_rows):
            jm.update([to_device(x, device) for x in blocks])
            bar.update(blocks[0].shape[0])
    return jm


def accumulate_joint_folds(store: FeatureStore, names: Sequence[str], *, k: int = 5, split: str = "train",
                           precision: str = "float32", device: str = "auto", seed: int = 0,
                           progress: bool = True) -> list[JointMoments]:
    """One streaming pass: the joint moments of each of ``k`` image folds of ``split`` (for ridge CV).

    Folds are over images, as :func:`lintwin.folds.image_folds` makes them (all views of an image in
    one fold), so every pair's fold moments equal those of a two-network fold pass.
    """
    device = resolve_device(device)
    dims = [int(store.info(split, name)["dim"]) for name in names]
    n = store.rows(split)
    fold_of_row = image_folds(store.ids(split), n, k, seed)
    out = [JointMoments(names, dims, precision) for _ in range(k)]  # type: ignore[arg-type]
    with tqdm(total=n, desc=f"joint fold moments {split} ({len(names)} networks)", unit="rows", unit_scale=True,
              disable=not progress) as bar:
        for lo, blocks in store.iter_blocks(split, list(names)):
            fold = fold_of_row[lo : lo + blocks[0].shape[0]]
            for j, jm in enumerate(out):
                rows = np.nonzero(fold == j)[0]
                if len(rows):
                    jm.update([to_device(x[rows], device) for x in blocks])
            bar.update(blocks[0].shape[0])
    return out


def _joint_range(path: str, split: str, names: list[str], lo: int, hi: int, precision: str,
                 device: str) -> tuple[int, np.ndarray, np.ndarray]:
    """Runs on a Dask worker: the joint moments of rows ``lo..hi``, on its GPU when it has one."""
    dev = resolve_device(device)
    store = FeatureStore.open(path)
    jm = JointMoments(names, [int(store.info(split, n)["dim"]) for n in names], precision)  # type: ignore[arg-type]
    for _, blocks in store.iter_blocks(split, names, start=lo, stop=hi):
        jm.update([to_device(x, dev) for x in blocks])
    return jm.n, to_numpy(jm.moments.mean), to_numpy(jm.moments.comoment)


def accumulate_joint_dask(client: Any, store: FeatureStore, names: Sequence[str], *, split: str = "train",
                          precision: str = "float32", device: str = "auto", progress: bool = True) -> JointMoments:
    """:func:`accumulate_joint` on a Dask cluster: one task per row range, merged in a tree; same moments."""
    names = list(names)
    dims = [int(store.info(split, n)["dim"]) for n in names]
    workers = max(1, len(client.scheduler_info().get("workers", {})))
    ranges = row_ranges(store.rows(split), int(store.info(split, names[0])["chunk_rows"]), 2 * workers)
    path = str(Path(store.path).resolve())
    futures = [client.submit(_joint_range, path, split, names, lo, hi, precision, device, pure=False)
               for lo, hi in ranges]
    m = reduce_futures(client, futures, (sum(dims), 0), ("joint", ""), precision, progress=progress)
    return JointMoments(names, dims, precision, m)  # type: ignore[arg-type]
