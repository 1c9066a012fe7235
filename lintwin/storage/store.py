"""The zarr feature store: per split, one row-chunked float32 array per network.

:class:`FeatureStore` opens and creates stores, lists their splits and networks, hands out
complete, verified arrays to readers and writes arrays, labels and ids. What a store is on
disk, and what metadata is accepted, is in :mod:`.layout`; chunk checksums in
:mod:`.checksums`; write locks in :mod:`.locks`; the read-ahead path in :mod:`.reader`; the
rule that nothing below the store's path is a link, in :mod:`lintwin.core.safe_paths`.

``rows_written`` is advanced only after the rows before it are on disk, in the same metadata
write as ``chunk_crc32c``: readers refuse incomplete arrays, missing chunks and chunks that
are not the ones written there, and writers resume from ``rows_written``. ``ids_sha256``
identifies the rows (the split's sample ids), so arrays of different images, or of the same
images in another order, are never paired.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import zarr

from ..core.safe_paths import checked_path
from ..core.xp import row_spans
from ..errors import ShapeError, StoreError
from . import reader
from .checksums import chunk_problems, describe, stored_crc
from .layout import (
    FORMAT,
    RESERVED_ATTRS,
    XARRAY_DECODED_ATTRS,
    check_array_meta,
    check_counts_on_disk,
    check_group_meta,
    check_name,
    chunk_file,
    complete_chunks,
    compressors,
    default_chunk_rows,
    dimension_names,
    ids_sha256,
    is_name,
    read_meta,
    require_safe_numcodecs,
    xarray_attrs,
)
from .locks import WriteLocks, busy_message

__all__ = ["FeatureStore", "check_name", "chunk_problems", "default_chunk_rows", "ids_sha256"]


@dataclass(frozen=True)
class _FeaturesWrite:
    """One planned feature write: where, what shape, and the attributes the array gets."""

    split: str
    name: str
    rows: int
    dim: int
    chunk_rows: int | None
    attrs: dict[str, Any]
    overwrite: bool
    ids: Sequence[str] | None


def _holds_something(folder: str) -> bool:
    """Whether a folder holds more than zarr's temporary files (what a run killed while creating a node leaves)."""
    try:
        return any(not name.endswith(".partial") for name in os.listdir(folder))
    except OSError:
        return True


class FeatureStore:
    """A lintwin feature store on disk. Open with :meth:`open`, make with :meth:`create`.

    Writing takes a lock per array (held until :meth:`close` or the process ends), so a
    second process writing the same array is refused at once.
    """

    def __init__(self, path: Path, group: zarr.Group, mode: str = "r"):
        self.path = path
        self.group = group
        self.mode = mode
        self._locks = WriteLocks(path)

    # -- opening --------------------------------------------------------------------
    @classmethod
    def create(cls, path: str | Path, *, exist_ok: bool = True) -> FeatureStore:
        """Create a store (or open an existing lintwin store when ``exist_ok``)."""
        path = Path(path)
        # an empty folder holds nothing, nor one holding only what a creation killed before its zarr.json left
        if path.exists() and (path.is_symlink() or not path.is_dir() or _holds_something(str(path))):
            if not exist_ok:
                raise StoreError(f"{path} already exists")
            return cls.open(path, mode="r+")
        require_safe_numcodecs()
        if path.is_dir():  # zarr's own temporary files from a killed creation would make zarr refuse
            for leftover in path.glob("*.partial"):
                if leftover.is_file() and not leftover.is_symlink():
                    leftover.unlink(missing_ok=True)
        try:
            group = zarr.open_group(str(path), mode="w-", zarr_format=3, attributes={"lintwin": {"format": FORMAT}})
        except FileExistsError:  # another process created it just now
            return cls.open(path, mode="r+")
        except OSError as exc:
            raise StoreError(f"cannot create a feature store at {path}: {exc.strerror or exc}") from None
        return cls(path, group, "r+")

    @classmethod
    def open(cls, path: str | Path, mode: str = "r") -> FeatureStore:
        """Open an existing store; ``mode="r+"`` to add to it. Only lintwin's zarr v3 layout is accepted."""
        require_safe_numcodecs()
        path = Path(path)
        if not path.exists():
            raise StoreError(f"no feature store at {path}")
        if not path.is_dir():
            raise StoreError(f"{path} is not a lintwin feature store (not a directory)")
        if (path / ".zgroup").exists() or (path / ".zattrs").exists():
            raise StoreError(f"{path} is a zarr v2 store; lintwin opens only its own zarr v3 layout")
        if not (path / "zarr.json").exists() and not (path / "zarr.json").is_symlink():
            raise StoreError(f"{path} is not a lintwin feature store (no zarr.json)")
        meta = read_meta(path, f"store {path}")
        if meta.get("zarr_format") != 3 or meta.get("node_type") != "group":
            raise StoreError(f"{path} is not a lintwin feature store (not a zarr v3 group)")
        lintwin = (meta.get("attributes") or {}).get("lintwin")
        if not isinstance(lintwin, dict) or "format" not in lintwin:
            raise StoreError(f"{path} is not a lintwin feature store (no lintwin metadata)")
        if lintwin["format"] != FORMAT:
            raise StoreError(f"{path} has store format {lintwin['format']!r}, this lintwin reads {FORMAT!r} "
                             "(stores without chunk checksums must be written again)")
        try:
            group = zarr.open_group(str(path), mode=mode, zarr_format=3)
        except Exception as exc:  # noqa: BLE001  (zarr raises many types for damaged data)
            raise StoreError(f"{path} is not a lintwin feature store ({type(exc).__name__})") from None
        return cls(path, group, mode)

    def close(self) -> None:
        """Release the write locks this store holds."""
        self._locks.release_all()

    # -- structure ------------------------------------------------------------------
    def _entries(self, rel: str) -> list[str]:
        """Nodes under ``rel``: folders with an allowed name that hold metadata or data (or are links,
        which opening them refuses). A folder holding only zarr's temporary files is what a run killed
        while creating a node left: it holds nothing and is not listed (the next writer replaces it)."""
        folder = checked_path(self.path, rel) if rel else self.path
        if not folder.is_dir():
            return []
        return sorted(e.name for e in os.scandir(folder)
                      if is_name(e.name) and (e.is_symlink() or (e.is_dir(follow_symlinks=False)
                                                                 and _holds_something(e.path))))

    def splits(self) -> list[str]:
        return self._entries("")

    def networks(self, split: str) -> list[str]:
        self._check_split(split)
        return self._entries(f"{split}/features")

    def has(self, split: str, name: str) -> bool:
        return split in self.splits() and name in self.networks(split)

    def _check_split(self, split: str) -> None:
        """Refuse a split that is not in the store, or whose group metadata (or its features group's) is damaged."""
        if split not in self.splits():
            known = ", ".join(self.splits()) or "none"
            raise StoreError(f"split {split!r} not in store {self.path} (splits: {known})")
        node = checked_path(self.path, split)
        check_group_meta(read_meta(node, f"split {split!r}"), f"split {split!r}")
        feats = checked_path(self.path, f"{split}/features")
        if feats.is_dir() and _holds_something(str(feats)):
            check_group_meta(read_meta(feats, f"the features group of split {split!r}"),
                             f"the features group of split {split!r}")

    def _split(self, split: str) -> zarr.Group:
        self._check_split(split)
        return self.group[split]

    def _open_array(self, split: str, key: str, kind: str, what: str, name: str | None = None) -> zarr.Array:
        """Open one array after checking its path, metadata and counts; an array another process is
        replacing is reported as such, not as damage."""
        rel = f"{split}/features/{name}" if kind == "features" else f"{split}/{key}"
        try:
            node = checked_path(self.path, rel)
            meta = read_meta(node, what)
            check_array_meta(meta, kind, what, name)
            check_counts_on_disk(node, meta, what)
            try:
                arr = zarr.open_array(str(node), mode=self.mode, zarr_format=3)
            except Exception as exc:  # noqa: BLE001  (zarr raises many types for damaged data)
                raise StoreError(f"{what} cannot be opened ({type(exc).__name__}: {exc})") from None
        except StoreError:
            if self._locks.busy_elsewhere(split, key):
                raise StoreError(busy_message(self.path, split, key)) from None
            raise
        return arr.with_config({"write_empty_chunks": True})

    def _raw(self, split: str, name: str) -> zarr.Array:
        nets = self.networks(split)
        if name not in nets:
            if self._locks.busy_elsewhere(split, f"features.{name}"):
                raise StoreError(busy_message(self.path, split, f"features.{name}"))
            known = ", ".join(nets) or "none"
            raise StoreError(f"network {name!r} not in split {split!r} of {self.path} (networks: {known})")
        return self._open_array(split, f"features.{name}", "features", f"features of {name!r} in split {split!r}",
                                name)

    def _aux(self, split: str, key: str) -> zarr.Array | None:
        """The labels or ids array of ``split``, or None."""
        self._check_split(split)
        if key not in self._entries(split):
            return None
        return self._open_array(split, key, key, f"{key} of split {split!r}")

    def info(self, split: str, name: str) -> dict[str, Any]:
        """Metadata of one network's features in one split (dim, rows, rows_written, ...)."""
        arr = self._raw(split, name)
        info = {k: v for k, v in arr.attrs.items() if k != "chunk_crc32c"}
        info["chunk_rows"] = int(arr.chunks[0])
        return info

    def chunk_checksums(self, split: str, name: str) -> list[int]:
        """The recorded crc32c of every complete chunk of ``name``'s features in ``split`` (what the rows are)."""
        return list(self._raw(split, name).attrs.get("chunk_crc32c") or [])

    def _complete(self, arr: zarr.Array, what: str, split: str, key: str) -> zarr.Array:
        done, rows = int(arr.attrs["rows_written"]), int(arr.shape[0])
        if done != rows:
            if self._locks.busy_elsewhere(split, key):
                raise StoreError(busy_message(self.path, split, key))
            raise StoreError(f"{what} are incomplete ({max(done, 0)} of {rows} rows written); "
                             "rerun the command that wrote them to resume")
        bad = chunk_problems(arr)
        if bad:
            raise StoreError(f"{what} are damaged: {describe(bad)}; `lintwin check` reports every chunk")
        return arr

    def features(self, split: str, name: str) -> zarr.Array:
        """The complete feature array of ``name`` in ``split`` (refuses half-written or damaged ones)."""
        return self._complete(self._raw(split, name), f"features of {name!r} in split {split!r}", split,
                              f"features.{name}")

    def rows(self, split: str) -> int:
        """Row count shared by every network (and the labels) of ``split``."""
        counts = {n: int(self._raw(split, n).shape[0]) for n in self.networks(split)}
        if len(set(counts.values())) > 1:
            detail = ", ".join(f"{k}: {v}" for k, v in counts.items())
            raise ShapeError(f"networks in split {split!r} have different row counts ({detail})")
        if counts:
            return next(iter(counts.values()))
        labels = self._aux(split, "labels")
        return int(labels.shape[0]) if labels is not None else 0

    def _read_aux(self, split: str, key: str, step: int = 1) -> np.ndarray | None:
        arr = self._aux(split, key)
        if arr is None:
            return None
        what = f"{key} of split {split!r}"
        self._complete(arr, what, split, key)
        try:
            return np.asarray(arr[:: int(step)])
        except Exception as exc:  # noqa: BLE001  (zarr raises many types for damaged data)
            raise StoreError(f"{what} cannot be read ({type(exc).__name__}: {exc}); "
                             "`lintwin check` reports every chunk") from None

    def labels(self, split: str, rows_per_sample: int = 1) -> np.ndarray | None:
        """The label of every row, or (``rows_per_sample``) of the first row of each sample."""
        return self._read_aux(split, "labels", rows_per_sample)

    def ids(self, split: str, rows_per_sample: int = 1) -> np.ndarray | None:
        """The sample id of every row, or of the first row of each sample of per-position rows.

        Only those ids are read, so a split of millions of position rows is not held as strings.
        """
        ids = self._read_aux(split, "ids", rows_per_sample)
        return None if ids is None else np.array(ids.tolist(), dtype=str)

    def check_paired(self, split: str, names: Sequence[str]) -> None:
        """Refuse arrays of ``split`` that were not written for the same rows (ids, in the same order)."""
        ids = self._aux(split, "ids")
        reader.check_paired(split, {n: self._raw(split, n).attrs.get("ids_sha256") for n in names},
                            None if ids is None else ids.attrs.get("ids_sha256"))

    # -- reading --------------------------------------------------------------------
    def iter_blocks(
        self,
        split: str,
        names: Sequence[str],
        *,
        block_rows: int | None = None,
        start: int = 0,
        stop: int | None = None,
        threads: int | None = None,
        depth: int = reader.DEFAULT_DEPTH,
        allocate: Callable[[tuple[int, int], Any], np.ndarray] = np.empty,
        spare: int = 0,
    ) -> reader.BlockReader:
        """``(row_offset, [block of each network])`` over ``split``, decoded ahead (:class:`reader.BlockReader`).

        Refuses arrays that are incomplete, damaged or not written for the same rows. ``threads``
        decoding threads fill ``depth`` blocks ahead of the one being consumed, each block one
        reused buffer of all networks side by side (``allocate`` makes them). ``block_rows``
        defaults to about 128 MiB of joined rows, a multiple of the widest network's chunks.
        """
        arrays = [self.features(split, n) for n in names]
        self.check_paired(split, names)
        n = self.rows(split)
        stop = n if stop is None else min(stop, n)
        bounds = row_spans(stop, block_rows or reader.default_block_rows(arrays), start)
        return reader.BlockReader(split, names, arrays, bounds, threads=threads, depth=depth, allocate=allocate,
                                  spare=spare)

    # -- writing --------------------------------------------------------------------
    def _writable(self, rel: str) -> None:
        """Refuse to write (or remove) ``rel`` when a link or special file lies on the way or anywhere inside it."""
        checked_path(self.path, rel, tree=True)

    def check_writable(self, split: str, names: Sequence[str] = (), *, index: bool = False) -> None:
        """Refuse, writing nothing, when a link or special file lies where the arrays of ``names`` (and, with
        ``index``, the split's labels and ids) would be written or removed."""
        for rel in [f"{split}/features/{n}" for n in names] + ([f"{split}/labels", f"{split}/ids"] if index else []):
            self._writable(rel)

    def _lock(self, split: str, key: str) -> None:
        """Hold the write lock of one array; a second writer is refused at once."""
        self._locks.acquire(split, key)

    def remove(self, split: str, *, network: str | None = None, index: bool = False) -> None:
        """Remove ``network``'s feature array and/or (``index``) the split's labels and ids, under their write locks.

        For writers replacing what a killed run left empty, or what ``--overwrite`` replaces; a
        concurrent writer of the same arrays is refused, never undercut.
        """
        check_name(split, "split")
        if network is not None:
            check_name(network)
        if split not in self.splits():
            return
        targets = [(f"features.{network}", f"{split}/features/{network}")] if network is not None else []
        if index:
            targets += [(key, f"{split}/{key}") for key in ("labels", "ids")]
        for _, rel in targets:
            self._writable(rel)
        for key, _ in targets:
            self._lock(split, key)
        group = self._split(split)
        for key, rel in targets:
            self._writable(rel)  # again, now that no one else writes it
            if key.startswith("features.") and network in self.networks(split):
                del group["features"][network]
            elif not key.startswith("features.") and key in self._entries(split):
                del group[key]

    def _check_rows(self, split: str, name: str, rows: int) -> None:
        if split not in self.splits():
            return
        for other in self.networks(split):
            if other == name:
                continue
            arr = self._raw(split, other)
            if int(arr.shape[0]) != rows:
                raise ShapeError(f"split {split!r} already holds {arr.shape[0]} rows of {other!r}; "
                                 f"{name!r} has {rows} rows, and features must be paired row by row")
        for key in ("labels", "ids"):
            arr = self._aux(split, key)
            if arr is not None and int(arr.shape[0]) != rows:
                raise ShapeError(f"split {split!r} has {arr.shape[0]} {key}; {name!r} has {rows} rows")

    def _check_stamp(self, split: str, stamp: str | None, name: str | None = None, *, from_ids: bool = True) -> None:
        """Refuse rows that the split's ids, or its other networks' rows, say are other samples.

        ``stamp`` is the hash of the rows' ids (``from_ids``), of a generator's row identity, or None
        when the rows are unknown: features of unknown rows are refused in a split whose rows are
        named, since they could never be paired. ``name``'s own array is being replaced, so it is
        not compared.
        """
        if split not in self.splits():
            return
        arr = self._aux(split, "ids")
        if arr is not None and self.rows_written(arr) == int(arr.shape[0]) and arr.attrs["ids_sha256"] != stamp:
            if stamp is None:
                raise StoreError(f"split {split!r} names its rows (sample ids), but these features come without "
                                 "the ids of their rows, so they could never be paired: give them (import --ids), "
                                 "or write into another split")
            raise StoreError(f"split {split!r} already has different sample ids")
        if stamp is not None and not from_ids:
            return
        for net in self.networks(split):
            other = self._raw(split, net).attrs["ids_sha256"] if net != name else None
            if other is not None and other != stamp:
                if stamp is None:
                    raise StoreError(f"features of {net!r} in split {split!r} were written for named rows; features "
                                     "without the ids of their rows could never be paired with them: give the ids "
                                     "(import --ids), or write into another split")
                raise StoreError(f"features of {net!r} in split {split!r} were written for other sample ids")

    def _plan_features(self, split: str, name: str, *, rows: int, dim: int, chunk_rows: int | None = None,
                       model_sha256: str | None = None, source: str | None = None, overwrite: bool = False,
                       extra_attrs: dict[str, Any] | None = None, ids: Sequence[str] | None = None,
                       rows_identity: str | None = None) -> _FeaturesWrite:
        """The arguments of a feature write, checked, and the attributes its array gets."""
        check_name(split, "split")
        check_name(name, "network")
        if rows <= 0 or dim <= 0:
            raise ShapeError(f"cannot store features of {name!r} with shape ({rows}, {dim})")
        if chunk_rows is not None and chunk_rows < 1:
            raise ShapeError(f"chunk_rows must be >= 1, got {chunk_rows}")
        if ids is not None and len(ids) != rows:
            raise ShapeError(f"{len(ids)} sample ids given for {rows} rows of {name!r}")
        if name in ("ids", "labels"):
            raise StoreError(f"network name {name!r} is reserved: it names the split's {name} (a coordinate in xarray)")
        extra = json.loads(json.dumps(extra_attrs or {}))
        clash = (RESERVED_ATTRS | XARRAY_DECODED_ATTRS) & set(extra)
        if clash:
            raise StoreError(f"extra_attrs may not set {', '.join(sorted(clash))}")
        if ids is not None:
            stamp: str | None = ids_sha256(ids)
        else:
            stamp = None if rows_identity is None else hashlib.sha256(rows_identity.encode()).hexdigest()
        attrs = {"network": name, "dim": int(dim), "rows": int(rows), "rows_written": 0, "chunk_crc32c": [],
                 "ids_sha256": stamp, "model_sha256": model_sha256, "source": source, **extra}
        return _FeaturesWrite(split, name, rows, dim, chunk_rows, attrs, overwrite, ids)

    def _existing(self, plan: _FeaturesWrite) -> zarr.Array | None:
        """Everything that refuses ``plan`` (links, row counts, sample ids, an array made differently); the
        array to resume, or None when a new one is to be made."""
        split, name = plan.split, plan.name
        self._writable(f"{split}/features/{name}")
        self._check_rows(split, name, plan.rows)
        self._check_stamp(split, plan.attrs["ids_sha256"], name, from_ids=plan.ids is not None)
        if plan.overwrite or not self.has(split, name):
            return None  # an array being replaced is not opened: it may be damaged
        arr = self._raw(split, name)
        if self.rows_written(arr) == 0:
            return None
        same = tuple(arr.shape) == (plan.rows, plan.dim) and all(
            arr.attrs.get(k) == v for k, v in plan.attrs.items() if k not in ("rows_written", "chunk_crc32c"))
        if same:
            return arr
        raise StoreError(f"split {split!r} already holds features of {name!r} with shape {tuple(arr.shape)} "
                         f"from {arr.attrs.get('source')!r}, written differently; pass overwrite to replace them")

    def _refuse_early(self, plan: _FeaturesWrite) -> None:
        """:meth:`_existing` before the lock is taken; an array another process is replacing is reported as such."""
        try:
            self._existing(plan)
        except StoreError:
            if self._locks.busy_elsewhere(plan.split, f"features.{plan.name}"):
                raise StoreError(busy_message(self.path, plan.split, f"features.{plan.name}")) from None
            raise

    def check_features_write(self, split: str, name: str, **kwargs: Any) -> None:
        """Refuse now, writing nothing, what :meth:`open_features_for_write` with the same arguments would refuse.

        For writers of several arrays (``synth``), so that a refusal of the last one does not come
        after the first ones were replaced.
        """
        self._refuse_early(self._plan_features(split, name, **kwargs))

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
        extra_attrs: dict[str, Any] | None = None,
        ids: Sequence[str] | None = None,
        rows_identity: str | None = None,
    ) -> zarr.Array:
        """Create (or reopen, to resume) the feature array of ``name`` in ``split``.

        An existing array is reused only if its shape, source, row identity and ``extra_attrs``
        match, so a resumed run cannot splice rows from a different model, preprocessing or
        image set into it; one with no rows written holds nothing and is replaced. ``ids``
        (stored as the split's ids) or ``rows_identity`` name the rows for the pairing check.
        Everything is checked before the store changes; the array is created with all its
        attributes in one metadata write, so a kill cannot leave an array later runs refuse.
        """
        plan = self._plan_features(split, name, rows=rows, dim=dim, chunk_rows=chunk_rows,
                                   model_sha256=model_sha256, source=source, overwrite=overwrite,
                                   extra_attrs=extra_attrs, ids=ids, rows_identity=rows_identity)
        self._refuse_early(plan)  # refuse before anything changes
        self._lock(split, f"features.{name}")
        arr = self._existing(plan)  # again, now that no one else writes it
        if arr is not None:
            if ids is not None:
                self.set_ids(split, ids)
            return arr
        if self.has(split, name):
            try:
                old = self._raw(split, name)
            except StoreError:
                old = None  # damaged: readers refuse it already
            if old is not None:  # readers see the old array as incomplete from here on, never as half-replaced
                old.update_attributes({"rows_written": 0, "chunk_crc32c": []})
        feats = self.group.require_group(split).require_group("features")
        arr = feats.create_array(name, shape=(rows, dim), chunks=(chunk_rows or default_chunk_rows(dim), dim),
                                 dtype="float32", compressors=compressors("features"), attributes=plan.attrs,
                                 dimension_names=dimension_names("features", name), overwrite=True,
                                 config={"write_empty_chunks": True})
        if ids is not None:
            self.set_ids(split, ids)
        return arr

    @staticmethod
    def rows_written(arr: zarr.Array) -> int:
        return int(arr.attrs.get("rows_written", 0))

    @staticmethod
    def write_rows(arr: zarr.Array, start: int, data: np.ndarray) -> None:
        """Write ``data`` at ``start``, then advance ``rows_written`` with the checksums of completed chunks."""
        done = int(arr.attrs.get("rows_written", 0))
        if start != done:
            raise StoreError(f"rows must be written in order: expected row {done}, got {start}")
        stop = start + data.shape[0]
        rows, chunk = int(arr.shape[0]), int(arr.chunks[0])
        if stop > rows:
            raise ShapeError(f"rows {start}..{stop - 1} do not fit an array of {rows} rows")
        arr = arr.with_config({"write_empty_chunks": True})  # an all-zero chunk must still be on disk
        arr[start:stop] = data
        crcs = list(arr.attrs.get("chunk_crc32c") or [])
        node = Path(arr.store_path.store.root) / arr.store_path.path
        for k in range(len(crcs), complete_chunks(stop, rows, chunk)):
            crc = stored_crc(chunk_file(node, k, arr.ndim))
            if isinstance(crc, str):
                raise StoreError(f"chunk {k} of {arr.store_path} {crc} right after it was written")
            crcs.append(crc)
        arr.update_attributes({"rows_written": stop, "chunk_crc32c": crcs})  # one metadata write

    def _write_aux(self, split: str, key: str, values: np.ndarray, dtype: Any, chunk: int,
                   attrs: dict[str, Any]) -> None:
        self._writable(f"{split}/{key}")
        self._lock(split, key)
        self._writable(f"{split}/{key}")
        g = self.group.require_group(split)
        arr = g.create_array(key, shape=values.shape, dtype=dtype, chunks=(max(1, min(values.shape[0], chunk)),),
                             compressors=compressors(key), overwrite=True, config={"write_empty_chunks": True},
                             dimension_names=dimension_names(key),
                             attributes={"rows": int(values.shape[0]), "rows_written": 0, "chunk_crc32c": [],
                                         **xarray_attrs(key), **attrs})
        self.write_rows(arr, 0, values)

    def set_labels(self, split: str, labels: np.ndarray) -> None:
        """Store integer labels of ``split``; existing labels must agree."""
        check_name(split, "split")
        labels = np.asarray(labels)
        if labels.ndim != 1 or not np.issubdtype(labels.dtype, np.integer):
            raise ShapeError(f"labels must be a 1-D integer array, got {labels.dtype} of shape {labels.shape}")
        if labels.size and int(labels.min()) < 0:
            raise ShapeError(f"labels must be >= 0 (class indices), got {int(labels.min())}")
        n = self.rows(split) if split in self.splits() and self.networks(split) else labels.shape[0]
        if labels.shape[0] != n:
            raise ShapeError(f"split {split!r} has {n} rows but {labels.shape[0]} labels were given")
        arr = self._aux(split, "labels") if split in self.splits() else None
        if arr is not None and self.rows_written(arr) == int(arr.shape[0]):
            old = self.labels(split)
            if old.shape != labels.shape or not np.array_equal(old, labels):
                raise StoreError(f"split {split!r} already has different labels")
            return
        self._write_aux(split, "labels", labels.astype(np.int64), "int64", 1 << 20, {})

    def set_ids(self, split: str, ids: Sequence[str]) -> None:
        """Store sample ids (e.g. image file names) of ``split``; existing ids must agree."""
        check_name(split, "split")
        ids = np.asarray([str(i) for i in ids])
        stamp = ids_sha256(ids.tolist())
        self._check_stamp(split, stamp)
        arr = self._aux(split, "ids") if split in self.splits() else None
        if arr is not None and self.rows_written(arr) == int(arr.shape[0]):
            return  # the same ids (checked above)
        self._write_aux(split, "ids", ids, str, 1 << 16, {"ids_sha256": stamp})

