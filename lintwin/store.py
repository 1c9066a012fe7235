"""The zarr feature store: per split, one row-chunked float32 array per network.

Layout (a zarr v3 group)::

    STORE/                        attrs: {"lintwin": {"format": "lintwin.store/1"}}
      <split>/                    e.g. train, val
        features/<network>        float32 (rows x dim), chunks (chunk_rows, dim)
                                  attrs: network, dim, rows, rows_written, model_sha256, source
        labels                    int64 (rows,)   optional
        ids                       string (rows,)  optional, e.g. image file names

``rows_written`` is advanced only after the rows before it are on disk, so a run that
dies leaves a store whose complete prefix is known; readers refuse incomplete arrays
and writers resume from ``rows_written``.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import zarr
from zarr.codecs import BloscCodec

from ._xp import row_spans
from .errors import ShapeError, StoreError

__all__ = ["FeatureStore", "default_chunk_rows"]

FORMAT = "lintwin.store/1"
_CHUNK_BYTES = 8 * 2**20


def default_chunk_rows(dim: int) -> int:
    """Rows per chunk so that one chunk holds about 8 MiB of float32 features."""
    return int(max(256, min(65536, _CHUNK_BYTES // (4 * max(dim, 1)))))


def _compressor() -> BloscCodec:
    # lz4 + byte shuffle decompresses at several GB/s, so reading keeps up with the GEMMs.
    return BloscCodec(cname="lz4", clevel=5, shuffle="shuffle")


class FeatureStore:
    """A lintwin feature store on disk. Open with :meth:`open`, make with :meth:`create`."""

    def __init__(self, path: Path, group: zarr.Group):
        self.path = path
        self.group = group

    # -- opening --------------------------------------------------------------------
    @classmethod
    def create(cls, path: str | Path, *, exist_ok: bool = True) -> "FeatureStore":
        """Create a store (or open an existing lintwin store when ``exist_ok``)."""
        path = Path(path)
        if path.exists():
            if not exist_ok:
                raise StoreError(f"{path} already exists")
            return cls.open(path, mode="r+")
        group = zarr.open_group(str(path), mode="w")
        group.attrs["lintwin"] = {"format": FORMAT}
        return cls(path, group)

    @classmethod
    def open(cls, path: str | Path, mode: str = "r") -> "FeatureStore":
        """Open an existing store; ``mode="r+"`` to add to it."""
        path = Path(path)
        if not path.exists():
            raise StoreError(f"no feature store at {path}")
        try:
            group = zarr.open_group(str(path), mode=mode)
        except Exception as exc:  # zarr raises several unrelated types for "not a group"
            raise StoreError(f"{path} is not a lintwin feature store ({type(exc).__name__})") from None
        meta = group.attrs.get("lintwin")
        if not isinstance(meta, dict) or meta.get("format") != FORMAT:
            raise StoreError(f"{path} is not a lintwin feature store (no lintwin metadata)")
        return cls(path, group)

    # -- structure ------------------------------------------------------------------
    def splits(self) -> list[str]:
        return sorted(k for k, _ in self.group.groups())

    def networks(self, split: str) -> list[str]:
        g = self._split(split)
        if "features" not in g:
            return []
        return sorted(k for k, _ in g["features"].arrays())

    def has(self, split: str, name: str) -> bool:
        return split in self.splits() and name in self.networks(split)

    def _split(self, split: str) -> zarr.Group:
        if split not in self.splits():
            known = ", ".join(self.splits()) or "none"
            raise StoreError(f"split {split!r} not in store {self.path} (splits: {known})")
        return self.group[split]

    def _raw(self, split: str, name: str) -> zarr.Array:
        nets = self.networks(split)
        if name not in nets:
            known = ", ".join(nets) or "none"
            raise StoreError(f"network {name!r} not in split {split!r} of {self.path} (networks: {known})")
        return self._split(split)["features"][name]

    def info(self, split: str, name: str) -> dict[str, Any]:
        """Metadata of one network's features in one split (dim, rows, rows_written, ...)."""
        arr = self._raw(split, name)
        info = dict(arr.attrs)
        info["chunk_rows"] = int(arr.chunks[0])
        return info

    def features(self, split: str, name: str) -> zarr.Array:
        """The complete feature array of ``name`` in ``split`` (refuses half-written ones)."""
        arr = self._raw(split, name)
        done, rows = int(arr.attrs.get("rows_written", -1)), int(arr.shape[0])
        if done != rows:
            raise StoreError(
                f"features of {name!r} in split {split!r} are incomplete ({max(done, 0)} of {rows} rows "
                "written); rerun the command that wrote them to resume"
            )
        return arr

    def rows(self, split: str) -> int:
        """Row count shared by every network (and the labels) of ``split``."""
        counts = {n: int(self._raw(split, n).shape[0]) for n in self.networks(split)}
        if len(set(counts.values())) > 1:
            detail = ", ".join(f"{k}: {v}" for k, v in counts.items())
            raise ShapeError(f"networks in split {split!r} have different row counts ({detail})")
        return next(iter(counts.values()), 0)

    def labels(self, split: str) -> np.ndarray | None:
        g = self._split(split)
        return np.asarray(g["labels"][:]) if "labels" in g else None

    def ids(self, split: str) -> np.ndarray | None:
        g = self._split(split)
        return np.array(g["ids"][:].tolist(), dtype=str) if "ids" in g else None

    # -- writing --------------------------------------------------------------------
    def open_features_for_write(
        self,
        split: str,
        name: str,
        *,
        rows: int,
        dim: int,
        chunk_rows: int | None = None,
        model_sha256: str | None = None,
        source: str | None = None,
        overwrite: bool = False,
    ) -> zarr.Array:
        """Create (or reopen, to resume) the feature array of ``name`` in ``split``.

        An existing array is reused only if its shape and source match, so a resumed run
        cannot splice rows from a different model or image set into it.
        """
        if rows <= 0:
            raise ShapeError(f"cannot store features of {name!r} with {rows} rows")
        g = self.group.require_group(split)
        feats = g.require_group("features")
        for other, arr in sorted(feats.arrays()):
            if other != name and int(arr.shape[0]) != rows:
                raise ShapeError(
                    f"split {split!r} already holds {arr.shape[0]} rows of {other!r}; "
                    f"{name!r} has {rows} rows, and features must be paired row by row"
                )
        if name in feats and not overwrite:
            arr = feats[name]
            same = (tuple(arr.shape) == (rows, dim) and arr.attrs.get("model_sha256") == model_sha256
                    and arr.attrs.get("source") == source)
            if same:
                return arr
            raise StoreError(
                f"split {split!r} already holds features of {name!r} with shape {tuple(arr.shape)} "
                f"from {arr.attrs.get('source')!r}; pass overwrite to replace them"
            )
        arr = feats.create_array(
            name,
            shape=(rows, dim),
            chunks=(chunk_rows or default_chunk_rows(dim), dim),
            dtype="float32",
            compressors=_compressor(),
            overwrite=True,
        )
        arr.attrs.update(
            {"network": name, "dim": int(dim), "rows": int(rows), "rows_written": 0,
             "model_sha256": model_sha256, "source": source}
        )
        return arr

    @staticmethod
    def rows_written(arr: zarr.Array) -> int:
        return int(arr.attrs.get("rows_written", 0))

    @staticmethod
    def write_rows(arr: zarr.Array, start: int, data: np.ndarray) -> None:
        """Write ``data`` at ``start`` and then advance ``rows_written`` (must be contiguous)."""
        done = int(arr.attrs.get("rows_written", 0))
        if start != done:
            raise StoreError(f"rows must be written in order: expected row {done}, got {start}")
        stop = start + data.shape[0]
        arr[start:stop] = data
        arr.attrs["rows_written"] = stop

    def set_labels(self, split: str, labels: np.ndarray) -> None:
        """Store integer labels of ``split``; existing labels must agree."""
        labels = np.asarray(labels)
        if labels.ndim != 1 or not np.issubdtype(labels.dtype, np.integer):
            raise ShapeError(f"labels must be a 1-D integer array, got {labels.dtype} of shape {labels.shape}")
        g = self.group.require_group(split)
        n = self.rows(split) if self.networks(split) else labels.shape[0]
        if labels.shape[0] != n:
            raise ShapeError(f"split {split!r} has {n} rows but {labels.shape[0]} labels were given")
        if "labels" in g:
            old = np.asarray(g["labels"][:])
            if old.shape != labels.shape or not np.array_equal(old, labels):
                raise StoreError(f"split {split!r} already has different labels")
            return
        arr = g.create_array("labels", shape=labels.shape, dtype="int64",
                             chunks=(max(1, min(labels.shape[0], 1 << 20)),))
        arr[:] = labels.astype(np.int64)

    def set_ids(self, split: str, ids: Sequence[str]) -> None:
        """Store sample ids (e.g. image file names) of ``split``; existing ids must agree."""
        ids = np.asarray([str(i) for i in ids])
        g = self.group.require_group(split)
        if "ids" in g:
            if not np.array_equal(self.ids(split), ids):
                raise StoreError(f"split {split!r} already has different sample ids")
            return
        arr = g.create_array("ids", shape=ids.shape, dtype=str, chunks=(max(1, min(len(ids), 1 << 16)),))
        arr[:] = ids

    # -- reading --------------------------------------------------------------------
    def iter_blocks(
        self,
        split: str,
        names: Sequence[str],
        *,
        block_rows: int | None = None,
        start: int = 0,
        stop: int | None = None,
    ) -> Iterator[tuple[int, list[np.ndarray]]]:
        """Yield ``(row_offset, [block of each network])`` over ``split``, reading ahead.

        The next block is read and decompressed in a background thread while the caller
        computes on the current one. ``block_rows`` defaults to a multiple of the chunk
        size of about 64 MiB per network block.
        """
        arrays = [self.features(split, n) for n in names]
        n = self.rows(split)
        stop = n if stop is None else min(stop, n)
        if block_rows is None:
            chunk = int(arrays[0].chunks[0])
            widest = max(int(a.shape[1]) for a in arrays)
            block_rows = chunk * max(1, (64 * 2**20) // (4 * widest * chunk))
        bounds = row_spans(stop, block_rows, start)

        def read(lo: int, hi: int) -> list[np.ndarray]:
            return [np.asarray(a[lo:hi]) for a in arrays]

        with ThreadPoolExecutor(max_workers=1) as pool:
            pending = pool.submit(read, *bounds[0]) if bounds else None
            for k, (lo, _) in enumerate(bounds):
                blocks = pending.result()
                pending = pool.submit(read, *bounds[k + 1]) if k + 1 < len(bounds) else None
                yield lo, blocks
