"""The zarr feature store: per split, one row-chunked float32 array per network.

Layout (a zarr v3 group; nothing else is opened)::

    STORE/                        attrs: {"lintwin": {"format": "lintwin.store/2"}}
      <split>/                    e.g. train, val
        features/<network>        float32 (rows x dim), chunks (chunk_rows, dim)
                                  attrs: network, dim, rows, rows_written, chunk_crc32c, ids_sha256,
                                  model_sha256, source, and what the writer adds (extra_attrs)
        labels                    int64 (rows,)   optional; attrs rows, rows_written, chunk_crc32c
        ids                       string (rows,)  optional, e.g. image file names; attrs also ids_sha256
      .lintwin-locks/             one lock file per array being written (not part of the zarr hierarchy)

Every chunk ends in a crc32c checksum (zarr's ``crc32c`` codec after compression), so a
damaged or truncated chunk fails to decode. ``rows_written`` is advanced only after the rows
before it are on disk, in the same metadata write as ``chunk_crc32c``, the stored checksum of
every complete chunk in order: readers refuse incomplete arrays, missing chunks and chunks that
are not the ones written there (a valid chunk copied over another), and writers resume from
``rows_written``. ``ids_sha256`` identifies the rows (the split's sample ids), so arrays of
different images, or of the same images in another order, are never paired.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numcodecs
import numpy as np
import zarr
from filelock import FileLock, Timeout
from zarr.codecs import BloscCodec, Crc32cCodec, ZstdCodec

from ..core.xp import row_spans
from ..errors import ShapeError, StoreError

__all__ = ["FeatureStore", "check_name", "chunk_problems", "default_chunk_rows", "ids_sha256"]

FORMAT = "lintwin.store/2"
LOCK_DIR = ".lintwin-locks"
_CHUNK_BYTES = 8 * 2**20
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._+-]{0,127}")
_RESERVED_ATTRS = {"network", "dim", "rows", "rows_written", "chunk_crc32c", "ids_sha256", "model_sha256", "source"}
# What each lintwin array may be: its data type, rank and codecs (the last one always crc32c).
_KINDS = {
    "features": ("float32", 2, {"bytes", "blosc", "crc32c"}),
    "labels": ("int64", 1, {"bytes", "zstd", "crc32c"}),
    "ids": ("string", 1, {"vlen-utf8", "zstd", "crc32c"}),
}


def default_chunk_rows(dim: int) -> int:
    """Rows per chunk so that one chunk holds about 8 MiB of float32 features."""
    return int(max(256, min(65536, _CHUNK_BYTES // (4 * max(dim, 1)))))


def check_name(value: str, what: str = "network") -> str:
    """Refuse names that could escape or confuse the layout (``/``, ``..``, empty, control characters)."""
    if not isinstance(value, str) or not _NAME.fullmatch(value) or value == "zarr.json":
        raise StoreError(f"{what} name {value!r} is not allowed: use 1 to 128 letters, digits, '.', '_', '+' "
                         "or '-', starting with a letter or digit")
    return value


def ids_sha256(ids: Sequence[str]) -> str:
    """The identity of a split's rows: sha256 of its sample ids, in order."""
    return hashlib.sha256(json.dumps([str(i) for i in ids], ensure_ascii=False).encode()).hexdigest()


def _require_safe_numcodecs() -> None:
    from numcodecs import pickles

    if getattr(pickles, "ALLOW_UNSAFE_PICKLE_DECODE", True):
        raise StoreError(f"numcodecs {numcodecs.__version__} can unpickle data from a store, which can run code: "
                         "install numcodecs>=0.16.6 and unset NUMCODECS_ALLOW_UNSAFE_PICKLE_DECODE")


def _compressors(kind: str) -> tuple:
    # lz4 + byte shuffle decompresses at several GB/s, so reading keeps up with the GEMMs;
    # crc32c after compression makes any damaged chunk fail to decode.
    if kind == "features":
        return (BloscCodec(cname="lz4", clevel=5, shuffle="shuffle"), Crc32cCodec())
    return (ZstdCodec(level=3), Crc32cCodec())


def _read_meta(node: Path, what: str) -> dict[str, Any]:
    try:
        meta = json.loads((node / "zarr.json").read_text())
    except FileNotFoundError:
        raise StoreError(f"{what}: metadata {node / 'zarr.json'} is missing") from None
    except (OSError, ValueError) as exc:
        raise StoreError(f"{what}: metadata {node / 'zarr.json'} is damaged ({type(exc).__name__})") from None
    if not isinstance(meta, dict):
        raise StoreError(f"{what}: metadata {node / 'zarr.json'} is damaged (not a JSON object)")
    return meta


def _check_array_meta(meta: dict[str, Any], kind: str, what: str) -> None:
    """Accept only the arrays lintwin writes: zarr v3, its dtype, rank, chunking and codecs."""
    dtype, ndim, codecs = _KINDS[kind]
    try:
        names = [c["name"] for c in meta["codecs"]]
        shape, chunks = meta["shape"], meta["chunk_grid"]["configuration"]["chunk_shape"]
        ok = (meta["zarr_format"] == 3 and meta["node_type"] == "array" and meta["data_type"] == dtype
              and len(shape) == ndim and len(chunks) == ndim and all(isinstance(v, int) for v in shape + chunks)
              and set(names) <= codecs and names[-1] == "crc32c" and not meta.get("storage_transformers")
              and meta["chunk_key_encoding"] == {"name": "default", "configuration": {"separator": "/"}}
              and (ndim == 1 or chunks[1] == shape[1]) and chunks[0] >= 1 and isinstance(meta.get("attributes"), dict))
    except (KeyError, TypeError, IndexError):
        ok = False
    if not ok:
        raise StoreError(f"{what} is not an array lintwin wrote (unexpected zarr metadata); "
                         "lintwin opens only its own zarr v3 layout")


def _chunk_path(arr: zarr.Array, k: int) -> Path:
    coords = (k,) + (0,) * (arr.ndim - 1)
    return Path(arr.store_path.store.root) / arr.store_path.path / arr.metadata.encode_chunk_key(coords)


def _stored_crc(path: Path) -> int | None:
    """The crc32c a chunk file ends with, or None when the file is missing or too short."""
    try:
        with path.open("rb") as f:
            f.seek(0, 2)
            if f.tell() < 5:
                return None
            f.seek(-4, 2)
            return int.from_bytes(f.read(4), "little")
    except OSError:
        return None


def _n_chunks(arr: zarr.Array) -> int:
    return -(-int(arr.shape[0]) // int(arr.chunks[0]))


def chunk_problems(arr: zarr.Array) -> list[tuple[int, int, int, str]]:
    """``(chunk, first_row, last_row, problem)`` for each complete chunk that is missing or not the one written.

    Cheap (a few bytes per chunk): it needs no decoding, so every read runs it.
    """
    crcs = list(arr.attrs.get("chunk_crc32c") or [])
    rows, chunk = int(arr.shape[0]), int(arr.chunks[0])
    done = int(arr.attrs.get("rows_written", 0))
    complete = _n_chunks(arr) if done >= rows else done // chunk
    out = []
    for k in range(complete):
        lo, hi = k * chunk, min(rows, (k + 1) * chunk) - 1
        got = _stored_crc(_chunk_path(arr, k))
        if got is None:
            out.append((k, lo, hi, "missing"))
        elif k >= len(crcs):
            out.append((k, lo, hi, "has no recorded checksum"))
        elif got != crcs[k]:
            out.append((k, lo, hi, "is not the chunk written there (checksum differs from the recorded one)"))
    return out


def _describe(problems: list[tuple[int, int, int, str]]) -> str:
    shown = "; ".join(f"chunk {k} (rows {lo}..{hi}) {p}" for k, lo, hi, p in problems[:3])
    return shown + (f"; and {len(problems) - 3} more" if len(problems) > 3 else "")


class FeatureStore:
    """A lintwin feature store on disk. Open with :meth:`open`, make with :meth:`create`.

    Writing takes a lock per array (held until :meth:`close` or the process ends), so a
    second process writing the same array is refused at once.
    """

    def __init__(self, path: Path, group: zarr.Group, mode: str = "r"):
        self.path = path
        self.group = group
        self.mode = mode
        self._locks: dict[str, FileLock] = {}

    # -- opening --------------------------------------------------------------------
    @classmethod
    def create(cls, path: str | Path, *, exist_ok: bool = True) -> FeatureStore:
        """Create a store (or open an existing lintwin store when ``exist_ok``)."""
        path = Path(path)
        if path.exists() and not (path.is_dir() and not any(path.iterdir())):  # an empty folder holds nothing
            if not exist_ok:
                raise StoreError(f"{path} already exists")
            return cls.open(path, mode="r+")
        _require_safe_numcodecs()
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
        _require_safe_numcodecs()
        path = Path(path)
        if not path.exists():
            raise StoreError(f"no feature store at {path}")
        if not path.is_dir():
            raise StoreError(f"{path} is not a lintwin feature store (not a directory)")
        if (path / ".zgroup").exists() or (path / ".zattrs").exists():
            raise StoreError(f"{path} is a zarr v2 store; lintwin opens only its own zarr v3 layout")
        if not (path / "zarr.json").exists():
            raise StoreError(f"{path} is not a lintwin feature store (no zarr.json)")
        meta = _read_meta(path, f"store {path}")
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
        for lock in self._locks.values():
            lock.release()
        self._locks.clear()

    # -- structure ------------------------------------------------------------------
    def _children(self, rel: Path) -> list[str]:
        d = self.path / rel
        if not d.is_dir():
            return []
        return sorted(p.name for p in d.iterdir()
                      if _NAME.fullmatch(p.name) and p.name != "zarr.json" and (p / "zarr.json").is_file())

    def splits(self) -> list[str]:
        return self._children(Path("."))

    def networks(self, split: str) -> list[str]:
        self._check_split(split)
        return self._children(Path(split) / "features")

    def has(self, split: str, name: str) -> bool:
        return split in self.splits() and name in self.networks(split)

    def _check_split(self, split: str) -> None:
        if split not in self.splits():
            known = ", ".join(self.splits()) or "none"
            raise StoreError(f"split {split!r} not in store {self.path} (splits: {known})")

    def _split(self, split: str) -> zarr.Group:
        self._check_split(split)
        return self.group[split]

    def _open_array(self, rel: str, kind: str, what: str) -> zarr.Array:
        node = self.path / rel
        _check_array_meta(_read_meta(node, what), kind, what)
        try:
            arr = zarr.open_array(str(node), mode=self.mode, zarr_format=3)
        except Exception as exc:  # noqa: BLE001  (zarr raises many types for damaged data)
            raise StoreError(f"{what} cannot be opened ({type(exc).__name__}: {exc})") from None
        return arr.with_config({"write_empty_chunks": True})

    def _raw(self, split: str, name: str) -> zarr.Array:
        nets = self.networks(split)
        if name not in nets:
            known = ", ".join(nets) or "none"
            raise StoreError(f"network {name!r} not in split {split!r} of {self.path} (networks: {known})")
        return self._open_array(f"{split}/features/{name}", "features", f"features of {name!r} in split {split!r}")

    def _aux(self, split: str, key: str) -> zarr.Array | None:
        """The labels or ids array of ``split``, or None."""
        self._check_split(split)
        if not (self.path / split / key / "zarr.json").exists():
            return None
        return self._open_array(f"{split}/{key}", key, f"{key} of split {split!r}")

    def info(self, split: str, name: str) -> dict[str, Any]:
        """Metadata of one network's features in one split (dim, rows, rows_written, ...)."""
        arr = self._raw(split, name)
        info = {k: v for k, v in arr.attrs.items() if k != "chunk_crc32c"}
        info["chunk_rows"] = int(arr.chunks[0])
        return info

    def chunk_checksums(self, split: str, name: str) -> list[int]:
        """The recorded crc32c of every complete chunk of ``name``'s features in ``split`` (what the rows are)."""
        return list(self._raw(split, name).attrs.get("chunk_crc32c") or [])

    @staticmethod
    def _complete(arr: zarr.Array, what: str) -> zarr.Array:
        done, rows = int(arr.attrs.get("rows_written", -1)), int(arr.shape[0])
        if done != rows:
            raise StoreError(f"{what} are incomplete ({max(done, 0)} of {rows} rows written); "
                             "rerun the command that wrote them to resume")
        bad = chunk_problems(arr)
        if bad:
            raise StoreError(f"{what} are damaged: {_describe(bad)}; `lintwin check` reports every chunk")
        return arr

    def features(self, split: str, name: str) -> zarr.Array:
        """The complete feature array of ``name`` in ``split`` (refuses half-written or damaged ones)."""
        return self._complete(self._raw(split, name), f"features of {name!r} in split {split!r}")

    def rows(self, split: str) -> int:
        """Row count shared by every network (and the labels) of ``split``."""
        counts = {n: int(self._raw(split, n).shape[0]) for n in self.networks(split)}
        if len(set(counts.values())) > 1:
            detail = ", ".join(f"{k}: {v}" for k, v in counts.items())
            raise ShapeError(f"networks in split {split!r} have different row counts ({detail})")
        return next(iter(counts.values()), 0)

    def _read_aux(self, split: str, key: str) -> np.ndarray | None:
        arr = self._aux(split, key)
        if arr is None:
            return None
        what = f"{key} of split {split!r}"
        self._complete(arr, what)
        try:
            return np.asarray(arr[:])
        except Exception as exc:  # noqa: BLE001  (zarr raises many types for damaged data)
            raise StoreError(f"{what} cannot be read ({type(exc).__name__}: {exc}); "
                             "`lintwin check` reports every chunk") from None

    def labels(self, split: str) -> np.ndarray | None:
        return self._read_aux(split, "labels")

    def ids(self, split: str) -> np.ndarray | None:
        ids = self._read_aux(split, "ids")
        return None if ids is None else np.array(ids.tolist(), dtype=str)

    def check_paired(self, split: str, names: Sequence[str]) -> None:
        """Refuse arrays of ``split`` that were not written for the same rows (ids, in the same order)."""
        stamps = {n: self._raw(split, n).attrs.get("ids_sha256") for n in names}
        ids = self._aux(split, "ids")
        split_stamp = None if ids is None else ids.attrs.get("ids_sha256")
        known = {s for s in stamps.values() if s is not None}
        if len(set(stamps.values())) > 1:
            detail = ", ".join(f"{n}: {s[:12] if s else 'unknown rows'}" for n, s in stamps.items())
            raise StoreError(f"networks of split {split!r} were written for different samples or sample orders "
                             f"({detail}); rows must be paired: write them again from the same images "
                             "(import --ids names them)")
        if split_stamp is not None and known and split_stamp not in known:
            raise StoreError(f"features of {', '.join(names)} in split {split!r} were written for other sample ids "
                             "than the split's ids")

    # -- writing --------------------------------------------------------------------
    def _lock(self, split: str, key: str) -> None:
        """Hold the write lock of one array; a second writer is refused at once."""
        tag = f"{split}/{key}"
        if tag in self._locks:
            return
        lock_dir = self.path / LOCK_DIR / split
        try:
            lock_dir.mkdir(parents=True, exist_ok=True)
            lock = FileLock(lock_dir / f"{key}.lock", timeout=0, thread_local=False, is_singleton=True)
            lock.acquire()
        except Timeout:
            raise StoreError(f"another process is writing {key.replace('features.', '')!r} of split {split!r} in "
                             f"{self.path}; wait for it to finish") from None
        except OSError as exc:
            raise StoreError(f"cannot write to {self.path}: {exc.strerror or exc}") from None
        self._locks[tag] = lock

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
        if network is not None:
            self._lock(split, f"features.{network}")
        for key in ("labels", "ids") if index else ():
            self._lock(split, key)
        group = self.group[split]
        if network is not None and network in self.networks(split):
            del group["features"][network]
        for key in ("labels", "ids") if index else ():
            if key in group:
                del group[key]

    def _check_rows(self, split: str, name: str, rows: int) -> None:
        if split not in self.splits():
            return
        for other in self.networks(split):
            arr = self._raw(split, other)
            if other != name and int(arr.shape[0]) != rows:
                raise ShapeError(f"split {split!r} already holds {arr.shape[0]} rows of {other!r}; "
                                 f"{name!r} has {rows} rows, and features must be paired row by row")
        for key in ("labels", "ids"):
            arr = self._aux(split, key)
            if arr is not None and int(arr.shape[0]) != rows:
                raise ShapeError(f"split {split!r} has {arr.shape[0]} {key}; {name!r} has {rows} rows")

    def _check_ids(self, split: str, ids: Sequence[str] | None) -> str | None:
        if ids is None:
            return None
        stamp = ids_sha256(ids)
        if split in self.splits():
            arr = self._aux(split, "ids")
            if arr is not None and int(arr.attrs.get("rows_written", 0)) == int(arr.shape[0]) \
                    and arr.attrs.get("ids_sha256") != stamp:
                raise StoreError(f"split {split!r} already has different sample ids")
            for net in self.networks(split):
                other = self._raw(split, net).attrs.get("ids_sha256")
                if other is not None and other != stamp:
                    raise StoreError(f"features of {net!r} in split {split!r} were written for other sample ids")
        return stamp

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
        check_name(split, "split")
        check_name(name, "network")
        if rows <= 0 or dim <= 0:
            raise ShapeError(f"cannot store features of {name!r} with shape ({rows}, {dim})")
        if chunk_rows is not None and chunk_rows < 1:
            raise ShapeError(f"chunk_rows must be >= 1, got {chunk_rows}")
        if ids is not None and len(ids) != rows:
            raise ShapeError(f"{len(ids)} sample ids given for {rows} rows of {name!r}")
        extra = json.loads(json.dumps(extra_attrs or {}))
        clash = _RESERVED_ATTRS & set(extra)
        if clash:
            raise StoreError(f"extra_attrs may not set {', '.join(sorted(clash))}")
        stamp = self._check_ids(split, ids)
        if stamp is None and rows_identity is not None:
            stamp = hashlib.sha256(rows_identity.encode()).hexdigest()
        attrs = {"network": name, "dim": int(dim), "rows": int(rows), "rows_written": 0, "chunk_crc32c": [],
                 "ids_sha256": stamp, "model_sha256": model_sha256, "source": source, **extra}

        def existing() -> zarr.Array | None:
            self._check_rows(split, name, rows)
            if not self.has(split, name):
                return None
            arr = self._raw(split, name)
            if overwrite or self.rows_written(arr) == 0:
                return None
            same = tuple(arr.shape) == (rows, dim) and all(arr.attrs.get(k) == v for k, v in attrs.items()
                                                           if k not in ("rows_written", "chunk_crc32c"))
            if same:
                return arr
            raise StoreError(f"split {split!r} already holds features of {name!r} with shape {tuple(arr.shape)} "
                             f"from {arr.attrs.get('source')!r}, written differently; pass overwrite to replace them")

        existing()  # refuse before anything changes
        self._lock(split, f"features.{name}")
        arr = existing()  # again, now that no one else writes it
        if arr is not None:
            if ids is not None:
                self.set_ids(split, ids)
            return arr
        if self.has(split, name):
            # Readers see the old array as incomplete from here on, never as half-replaced.
            self._raw(split, name).update_attributes({"rows_written": 0})
        feats = self.group.require_group(split).require_group("features")
        arr = feats.create_array(name, shape=(rows, dim), chunks=(chunk_rows or default_chunk_rows(dim), dim),
                                 dtype="float32", compressors=_compressors("features"), attributes=attrs,
                                 overwrite=True, config={"write_empty_chunks": True})
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
        complete = _n_chunks(arr) if stop == rows else stop // chunk
        for k in range(len(crcs), complete):
            crc = _stored_crc(_chunk_path(arr, k))
            if crc is None:
                raise StoreError(f"chunk {k} of {arr.store_path} vanished while it was written")
            crcs.append(crc)
        arr.update_attributes({"rows_written": stop, "chunk_crc32c": crcs})  # one metadata write

    def _write_aux(self, split: str, key: str, values: np.ndarray, dtype: Any, chunk: int,
                   attrs: dict[str, Any]) -> None:
        self._lock(split, key)
        g = self.group.require_group(split)
        arr = g.create_array(key, shape=values.shape, dtype=dtype, chunks=(max(1, min(values.shape[0], chunk)),),
                             compressors=_compressors(key), overwrite=True, config={"write_empty_chunks": True},
                             attributes={"rows": int(values.shape[0]), "rows_written": 0, "chunk_crc32c": [], **attrs})
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
        stamp = self._check_ids(split, ids.tolist())
        arr = self._aux(split, "ids") if split in self.splits() else None
        if arr is not None and self.rows_written(arr) == int(arr.shape[0]):
            return  # the same ids (checked above)
        self._write_aux(split, "ids", ids, str, 1 << 16, {"ids_sha256": stamp})

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

        Refuses arrays that are incomplete, damaged or not written for the same rows. The next
        block is read and decompressed in a background thread while the caller computes on
        the current one. ``block_rows`` defaults to a multiple of the chunk size of about
        64 MiB per network block.
        """
        arrays = [self.features(split, n) for n in names]
        self.check_paired(split, names)
        n = self.rows(split)
        stop = n if stop is None else min(stop, n)
        if block_rows is None:
            chunk = int(arrays[0].chunks[0])
            widest = max(int(a.shape[1]) for a in arrays)
            block_rows = chunk * max(1, (64 * 2**20) // (4 * widest * chunk))
        bounds = row_spans(stop, block_rows, start)

        def read(lo: int, hi: int) -> list[np.ndarray]:
            out = []
            for name, a in zip(names, arrays):
                try:
                    out.append(np.asarray(a[lo:hi]))
                except Exception as exc:  # noqa: BLE001  (zarr raises many types for damaged data)
                    raise StoreError(f"features of {name!r} in split {split!r}, rows {lo}..{hi - 1}, cannot be read "
                                     f"({type(exc).__name__}: {exc}); `lintwin check` reports every chunk") from None
            return out

        with ThreadPoolExecutor(max_workers=1) as pool:
            pending = pool.submit(read, *bounds[0]) if bounds else None
            for k, (lo, _) in enumerate(bounds):
                blocks = pending.result()
                pending = pool.submit(read, *bounds[k + 1]) if k + 1 < len(bounds) else None
                yield lo, blocks
