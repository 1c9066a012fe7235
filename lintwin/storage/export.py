"""Features out of a store: one network's split, with its sample ids and labels, as npy, npz, HDF5 or safetensors.

What each format holds (``lintwin import`` reads every one back, ids and labels included):

``npy``          ``OUT`` the features (float32, rows x dim), ``OUT`` with ``.ids.npy`` and ``.labels.npy`` in
                 place of ``.npy`` the ids (unicode strings) and labels (int64), when the split has them.
``npz``          arrays ``features``, ``ids``, ``labels`` in one file.
``hdf5``         datasets ``features``, ``ids`` (UTF-8 strings), ``labels``; the file's attributes name the
                 network, the split and the ids' sha256.
``safetensors``  tensors ``features`` and ``labels``; the metadata holds ``ids`` (a JSON list: safetensors
                 has no text tensors), ``network``, ``split`` and ``ids_sha256``.

Only complete, verified arrays are exported, written for the split's ids. Outputs are checked
before the store is read (an existing output is refused unless ``overwrite``; nothing is written
inside the store) and written atomically, the files of one export together. npy and HDF5 are
streamed block by block; npz and safetensors hold the features in memory, which is checked first.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any

import numpy as np

from ..core.files import atomic_write_all
from ..core.memory import available_memory, human_bytes
from ..core.outputs import check_output_file
from ..errors import LintwinError
from .formats import FORMATS, SAFETENSORS_HEADER_LIMIT, require
from .layout import check_name, ids_sha256
from .reader import default_block_rows
from .store import FeatureStore

__all__ = ["EXTENSIONS", "export_features", "export_paths"]

EXTENSIONS = {"npy": ".npy", "npz": ".npz", "hdf5": ".h5", "safetensors": ".safetensors"}
FORMAT_TAG = "lintwin.export/1"


def export_paths(out: Path, fmt: str, *, ids: bool, labels: bool) -> dict[str, Path]:
    """The files an export to ``out`` writes: ``features`` and, for npy, ``ids`` and ``labels`` beside it."""
    paths = {"features": out}
    if fmt == "npy":
        stem = out.name.removesuffix(".npy")
        if ids:
            paths["ids"] = out.with_name(f"{stem}.ids.npy")
        if labels:
            paths["labels"] = out.with_name(f"{stem}.labels.npy")
    return paths


def _check_outputs(paths: dict[str, Path], store: Path, overwrite: bool) -> None:
    """Refuse outputs that exist (unless ``overwrite``), lie inside the store, or cannot be written."""
    root = store.resolve()
    for path in paths.values():
        if path.parent.resolve() == root or root in path.parent.resolve().parents:
            raise LintwinError(f"--out {path} lies inside the store {store}; write the export elsewhere")
        if os.path.lexists(path) and not overwrite:
            what = "a symbolic link" if path.is_symlink() else "a file" if path.is_file() else "something"
            raise LintwinError(f"{path} exists ({what}); pass --overwrite to replace it")
        check_output_file(path, "--out")


def _features_npy(arr: Any, rows: int, dim: int, block: int) -> Callable[[IO[bytes]], None]:
    """Write ``arr`` as a float32 .npy, block by block (the header first, then the rows in C order)."""
    def write(fh: IO[bytes]) -> None:
        np.lib.format.write_array_header_1_0(fh, {"descr": "<f4", "fortran_order": False, "shape": (rows, dim)})
        for lo in range(0, rows, block):
            fh.write(np.ascontiguousarray(arr[lo:lo + block], dtype="<f4").tobytes())
    return write


def _npy(value: np.ndarray) -> Callable[[IO[bytes]], None]:
    return lambda fh: np.save(fh, value, allow_pickle=False)


def _hdf5(arr: Any, rows: int, dim: int, block: int, ids: np.ndarray | None, labels: np.ndarray | None,
          attrs: dict[str, str]) -> Callable[[IO[bytes]], None]:
    h5py = require("h5py", "exporting to HDF5")

    def write(fh: IO[bytes]) -> None:
        with h5py.File(fh, "w") as f:
            ds = f.create_dataset("features", shape=(rows, dim), dtype="<f4", chunks=(min(rows, block), dim))
            for lo in range(0, rows, block):
                ds[lo:lo + block] = np.asarray(arr[lo:lo + block], dtype=np.float32)
            if ids is not None:
                f.create_dataset("ids", data=ids.tolist(), dtype=h5py.string_dtype("utf-8"))
            if labels is not None:
                f.create_dataset("labels", data=labels.astype(np.int64))
            f.attrs.update(attrs)
    return write


def _in_memory(rows: int, dim: int, fmt: str) -> None:
    need, have = 4 * rows * dim, available_memory()
    if 2 * need > have:
        raise LintwinError(f"a {fmt} export of {rows} x {dim} features holds them in memory ({human_bytes(need)}, "
                           f"twice that while writing) and {human_bytes(have)} are available; use --format npy or "
                           "hdf5, which are written block by block")


def export_features(store_path: str | Path, name: str, *, split: str = "train", fmt: str = "npy",
                    out: str | Path | None = None, overwrite: bool = False) -> dict[str, Path]:
    """Write ``name``'s features of ``split`` (with the split's ids and labels) to ``out`` in format ``fmt``.

    ``out`` defaults to ``NAME.SPLIT`` plus the format's extension (:data:`EXTENSIONS`) in the current
    folder. Returns the files written, by role (``features``, and for npy ``ids`` and ``labels``).
    """
    if fmt not in FORMATS:
        raise LintwinError(f"--format must be one of {', '.join(FORMATS)}, got {fmt!r}")
    check_name(name, "network")
    check_name(split, "split")
    if fmt in ("hdf5", "safetensors"):
        require("h5py" if fmt == "hdf5" else "safetensors", f"exporting to {fmt}")
    store_path = Path(store_path)
    out = Path(out) if out is not None else Path(f"{name}.{split}{EXTENSIONS[fmt]}")
    _check_outputs(export_paths(out, fmt, ids=True, labels=True), store_path, overwrite)
    store = FeatureStore.open(store_path)
    arr = store.features(split, name)
    store.check_paired(split, [name])
    ids, labels = store.ids(split), store.labels(split)
    rows, dim = int(arr.shape[0]), int(arr.shape[1])
    paths = export_paths(out, fmt, ids=ids is not None, labels=labels is not None)
    attrs = {"format": FORMAT_TAG, "network": name, "split": split,
             **({"ids_sha256": ids_sha256(ids.tolist())} if ids is not None else {})}
    block = default_block_rows([arr])
    writes: list[tuple[Path, Callable[[IO[bytes]], Any]]]
    if fmt == "npy":
        writes = [(paths["features"], _features_npy(arr, rows, dim, block))]
        writes += [(paths[k], _npy(v)) for k, v in (("ids", ids), ("labels", labels)) if v is not None]
    elif fmt == "npz":
        _in_memory(rows, dim, fmt)
        arrays = {"features": np.asarray(arr[:], dtype=np.float32)}
        arrays |= {k: v for k, v in (("ids", ids), ("labels", labels)) if v is not None}
        writes = [(out, lambda fh: np.savez(fh, **arrays))]
    elif fmt == "hdf5":
        writes = [(out, _hdf5(arr, rows, dim, block, ids, labels, attrs))]
    else:
        _in_memory(rows, dim, fmt)
        meta = dict(attrs) | ({"ids": json.dumps(ids.tolist(), ensure_ascii=False)} if ids is not None else {})
        if sum(len(v.encode()) for v in meta.values()) > SAFETENSORS_HEADER_LIMIT // 2:
            raise LintwinError(f"{rows} ids do not fit a safetensors header (at most "
                               f"{human_bytes(SAFETENSORS_HEADER_LIMIT)}); use --format hdf5 or npz")
        tensors = {"features": np.asarray(arr[:], dtype=np.float32)}
        if labels is not None:
            tensors["labels"] = labels.astype(np.int64)
        data = require("safetensors.numpy", "exporting to safetensors").save(tensors, metadata=meta)
        writes = [(out, lambda fh: fh.write(data))]
    try:
        atomic_write_all(writes)
    except OSError as exc:
        raise LintwinError(f"cannot write {out}: {exc.strerror or exc}") from None
    return paths
