"""Bring features computed elsewhere (``.npy``, ``.npz``, HDF5, safetensors) into a feature store.

The file's format is told from its first bytes (:mod:`.formats`). The whole file is checked
(shape, dtype, finite, within float32) before the store changes, so a refused import leaves the
store as it was. Sample ids and labels come from ``--ids`` / ``--labels`` files, or from the
features file itself (its ``ids`` and ``labels`` entries, as ``lintwin export`` writes them); ids
given both ways must be the same, and ids that differ from the split's are refused.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from ..core.moments import check_finite
from ..core.xp import row_spans
from ..errors import LintwinError, NonFiniteError, ShapeError
from .formats import ArrayFile, open_arrays, unreadable
from .layout import check_name, default_chunk_rows
from .store import FeatureStore

__all__ = ["import_features", "load_ids"]

_F32_MAX = float(np.finfo(np.float32).max)


def _whole(f: ArrayFile, key: str | None) -> np.ndarray:
    """One whole array of ``f`` in memory."""
    arr = f.array(key)
    try:
        return np.asarray(arr[()] if f.kind == "hdf5" else arr[:] if f.kind == "safetensors" else arr)
    except Exception as exc:  # noqa: BLE001  (h5py and safetensors raise many types for damaged data)
        raise unreadable(f.path, f.kind, exc) from None


def load_ids(path: str | Path, key: str | None = None) -> list[str]:
    """Sample ids: a ``.txt`` file with one id per line, or a string (or integer) array in an exchange file."""
    path = Path(path)
    if path.suffix == ".txt":
        try:
            return path.read_text(encoding="utf-8").splitlines()
        except (OSError, UnicodeDecodeError) as exc:
            raise LintwinError(f"cannot read ids from {path}: {exc}") from None
    with open_arrays(path) as f:
        if f.kind == "npy":
            if key is not None:
                raise LintwinError(f"{path} is a .npy file with one array; --ids-key applies to files of several")
            return _ids_of(_whole(f, None), path)
        key = key if key is not None else "ids" if f.carries("ids") else f.features_key(None)
        ids = f.strings(key)
        if ids is None:
            raise LintwinError(f"{path} has no ids {key!r} (it has {', '.join(f.keys()) or 'none'})")
        return ids


def _ids_of(values: np.ndarray, path: Path) -> list[str]:
    if values.ndim != 1 or values.dtype.kind not in "UiuS":
        raise ShapeError(f"ids in {path} must be a 1-D array of strings or integers, got {values.dtype} "
                         f"{values.shape}")
    return [i.decode() if isinstance(i, bytes) else str(i) for i in values.tolist()]


def _labels(f: ArrayFile, labels: str | Path | None, labels_key: str | None, rows: int) -> np.ndarray | None:
    """Labels from ``labels`` (a file), or the features file's ``labels_key`` or ``labels`` entry; checked."""
    if labels is not None:
        with open_arrays(labels) as lf:
            if lf.kind == "npy":
                lab = _whole(lf, None)
            else:
                lab = _whole(lf, lf.features_key(labels_key or ("labels" if lf.has("labels") else None)))
    elif labels_key is not None or f.has("labels"):
        lab = _whole(f, f.features_key(labels_key or "labels"))
    else:
        return None
    if lab.ndim != 1 or lab.shape[0] != rows:
        raise ShapeError(f"labels must be 1-D with {rows} entries, got shape {lab.shape}")
    if not np.issubdtype(lab.dtype, np.integer):
        raise ShapeError(f"labels must be integers, got dtype {lab.dtype}")
    if lab.size and int(lab.min()) < 0:
        raise ShapeError(f"labels must be >= 0 (class indices), got {int(lab.min())}")
    return lab


def _ids(f: ArrayFile, ids: str | Path | None, ids_key: str | None, rows: int) -> list[str] | None:
    """Ids from ``ids`` (a file) and/or the features file (``ids_key`` or its ``ids`` entry); both must agree."""
    own = ids_key if ids is None else None  # --ids-key names the ids in the --ids file when there is one
    carried = f.strings(own or "ids") if f.kind != "npy" else None
    if own is not None and carried is None:
        raise LintwinError(f"{f.path} has no ids {own!r} (it has {', '.join(f.keys()) or 'none'})")
    given = load_ids(ids, ids_key) if ids is not None else None
    if given is not None and carried is not None and given != carried:
        if len(given) != len(carried):
            raise ShapeError(f"{ids} holds {len(given)} ids, {f.path} carries {len(carried)}")
        row = next(i for i, (x, y) in enumerate(zip(given, carried)) if x != y)
        raise LintwinError(f"the ids in {ids} differ from those {f.path} carries, first at row {row} "
                           f"({given[row]!r} vs {carried[row]!r})")
    id_list = given if given is not None else carried
    where = ids if ids is not None else f.path
    if id_list is not None and len(id_list) != rows:
        raise ShapeError(f"{where} holds {len(id_list)} ids for {rows} rows of features")
    if id_list is not None and len(set(id_list)) != len(id_list):
        raise ShapeError(f"ids in {where} are not unique")
    return id_list


def _block(feats: Any, f: ArrayFile, lo: int, hi: int) -> np.ndarray:
    try:
        return np.asarray(feats[lo:hi])
    except Exception as exc:  # noqa: BLE001  (h5py and safetensors raise many types for damaged data)
        raise unreadable(f.path, f.kind, exc) from None


def _check_features(feats: Any, f: ArrayFile, name: str, step: int) -> None:
    """Everything that would make the stored float32 features differ from the file's numbers."""
    file = f.path
    if feats.ndim != 2:
        raise ShapeError(f"features in {file} must be 2-D (rows x dim), got shape {feats.shape}")
    if feats.shape[0] == 0:
        raise ShapeError(f"{file} holds zero rows")
    if feats.shape[1] == 0:
        raise ShapeError(f"{file} holds zero feature columns")
    if np.issubdtype(feats.dtype, np.complexfloating):
        raise ShapeError(f"features in {file} are complex ({feats.dtype}); lintwin takes real features only")
    if not (np.issubdtype(feats.dtype, np.floating) or np.issubdtype(feats.dtype, np.integer)):
        raise ShapeError(f"features in {file} must be real numbers, got dtype {feats.dtype}")
    for lo, hi in row_spans(feats.shape[0], step):
        block = _block(feats, f, lo, hi)
        if not np.issubdtype(block.dtype, np.floating):
            continue  # integers (at most 64-bit) are finite and within float32's range
        check_finite(block, name, lo)
        big = np.abs(block) > _F32_MAX if block.dtype.itemsize > 4 else None
        if big is not None and big.any():
            row = lo + int(np.nonzero(big.any(axis=1))[0][0])
            raise NonFiniteError(f"features of {name} in {file} hold values beyond float32 range "
                                 f"(|x| > {_F32_MAX:.4g}), first at row {row}")


def _complete(store: FeatureStore, split: str, name: str) -> bool:
    info = store.info(split, name)
    return int(info.get("rows_written", 0)) == int(info["rows"])


def import_features(store_path: str | Path, file: str | Path, *, name: str, split: str = "train",
                    key: str | None = None, labels: str | Path | None = None, labels_key: str | None = None,
                    ids: str | Path | None = None, ids_key: str | None = None,
                    chunk_rows: int | None = None, overwrite: bool = False) -> FeatureStore:
    """Copy a (rows x dim) feature array into ``store_path`` as network ``name`` of ``split``.

    ``file`` is ``.npy``, ``.npz``, HDF5 or safetensors; in a file of several arrays the features are
    ``key``, else ``features``, else the only array besides ``ids`` and ``labels``. ``labels`` is a
    file of integer labels, else the file's ``labels_key`` or ``labels`` entry. ``ids`` names the rows
    (one per line in a ``.txt``, or a string array), else the file's ``ids_key`` or ``ids`` entry (for
    safetensors, its metadata); given both ways they must agree. With ids, networks are paired by
    sample, and ids that differ from the split's are refused; without them the rows' identity is
    unknown and the file's rows are taken as paired with the split's. An incomplete array of ``name``
    (a killed import) is replaced without ``overwrite``.
    """
    check_name(name, "network")
    check_name(split, "split")
    if chunk_rows is not None and chunk_rows < 1:
        raise ShapeError(f"chunk_rows must be >= 1, got {chunk_rows}")
    file = Path(file)
    with open_arrays(file) as f:
        feats = f.array(f.features_key(key))
        step = chunk_rows or default_chunk_rows(feats.shape[1] if feats.ndim == 2 else 1)
        _check_features(feats, f, name, step)
        rows, dim = feats.shape
        lab = _labels(f, labels, labels_key, rows)
        id_list = _ids(f, ids, ids_key, rows)
        store = FeatureStore.create(store_path)
        try:
            if store.has(split, name) and not overwrite and _complete(store, split, name):
                raise LintwinError(f"split {split!r} of {store.path} already holds features of {name!r}; "
                                   "pass --overwrite to replace them")
            old = store.labels(split) if lab is not None and split in store.splits() else None
            if old is not None and not np.array_equal(old, lab):
                raise LintwinError(f"split {split!r} already has different labels")
            arr = store.open_features_for_write(split, name, rows=rows, dim=dim, chunk_rows=chunk_rows,
                                                source=str(file.resolve()), overwrite=True, ids=id_list)
            for lo, hi in row_spans(rows, step):
                FeatureStore.write_rows(arr, lo, np.ascontiguousarray(_block(feats, f, lo, hi), dtype=np.float32))
            if lab is not None:
                store.set_labels(split, lab)
        finally:
            store.close()
    return store
