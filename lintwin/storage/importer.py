"""Bring features computed elsewhere (``.npy`` / ``.npz``) into a feature store.

The whole file is checked (shape, dtype, finite, within float32) before the store changes,
so a refused import leaves the store as it was.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ..core.moments import check_finite
from ..core.xp import row_spans
from ..errors import LintwinError, NonFiniteError, ShapeError
from .layout import check_name, default_chunk_rows
from .store import FeatureStore

__all__ = ["import_features", "load_array", "load_ids"]

_NPY_MAGIC = b"\x93NUMPY"
_NPZ_MAGIC = b"PK\x03\x04"
_F32_MAX = float(np.finfo(np.float32).max)


def load_array(path: str | Path, key: str | None = None) -> np.ndarray:
    """Load one array from ``.npy`` (memory-mapped) or ``.npz`` (by ``key``), never unpickling."""
    path = Path(path)
    if not path.is_file():
        raise LintwinError(f"no such file: {path}")
    try:
        with path.open("rb") as f:
            head = f.read(6)
    except OSError as exc:
        raise LintwinError(f"cannot read {path}: {exc.strerror or exc}") from None
    if not head.startswith((_NPY_MAGIC, _NPZ_MAGIC)):
        raise LintwinError(f"{path} is not a .npy or .npz file (it does not start with their signature)")
    try:
        if head.startswith(_NPZ_MAGIC):
            with np.load(path, allow_pickle=False) as z:
                if key is None:
                    if len(z.files) != 1:
                        raise LintwinError(f"{path} holds arrays {z.files}; choose one with --key")
                    key = z.files[0]
                if key not in z.files:
                    raise LintwinError(f"{path} has no array {key!r} (it has {', '.join(z.files)})")
                return z[key]
        if key is not None:
            raise LintwinError(f"{path} is a .npy file with one array; --key applies to .npz files only")
        return np.load(path, mmap_mode="r", allow_pickle=False)
    except LintwinError:
        raise
    except ValueError as exc:
        if "pickle" in str(exc).lower() or "python objects" in str(exc).lower():
            raise LintwinError(f"cannot read {path}: it holds Python objects, and lintwin never unpickles "
                               "data") from None
        raise LintwinError(f"cannot read {path}: {exc}") from None
    except (OSError, EOFError) as exc:
        raise LintwinError(f"cannot read {path}: damaged .npy/.npz file ({exc})") from None
    except Exception as exc:  # noqa: BLE001  (zipfile and numpy raise many types for damaged archives)
        raise LintwinError(f"cannot read {path}: damaged .npy/.npz file ({type(exc).__name__})") from None


def load_ids(path: str | Path, key: str | None = None) -> list[str]:
    """Sample ids: a ``.txt`` file with one id per line, or a string array in ``.npy``/``.npz``."""
    path = Path(path)
    if path.suffix == ".txt":
        try:
            return path.read_text(encoding="utf-8").splitlines()
        except (OSError, UnicodeDecodeError) as exc:
            raise LintwinError(f"cannot read ids from {path}: {exc}") from None
    ids = load_array(path, key)
    if ids.ndim != 1 or ids.dtype.kind not in "UiS":
        raise ShapeError(f"ids in {path} must be a 1-D array of strings or integers, got {ids.dtype} {ids.shape}")
    return [i.decode() if isinstance(i, bytes) else str(i) for i in ids.tolist()]


def _check_features(feats: np.ndarray, file: Path, name: str, step: int) -> None:
    """Everything that would make the stored float32 features differ from the file's numbers."""
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
        block = np.asarray(feats[lo:hi])
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

    ``labels`` is a file with integer labels, or, for an ``.npz`` features file, may be
    omitted and found under ``labels_key`` in the same file. ``ids`` names the rows (one per
    line in a ``.txt``, or a string array) so that networks are paired by sample; without
    it the rows' identity is unknown and the file's rows are taken as paired with the split's.
    An incomplete array of ``name`` (a killed import) is replaced without ``overwrite``.
    """
    check_name(name, "network")
    check_name(split, "split")
    if chunk_rows is not None and chunk_rows < 1:
        raise ShapeError(f"chunk_rows must be >= 1, got {chunk_rows}")
    file = Path(file)
    feats = load_array(file, key)
    step = chunk_rows or default_chunk_rows(feats.shape[1] if feats.ndim == 2 else 1)
    _check_features(feats, file, name, step)
    rows, dim = feats.shape
    lab = None
    if labels is not None or labels_key is not None:
        lab = load_array(labels if labels is not None else file, labels_key)
        if lab.ndim != 1 or lab.shape[0] != rows:
            raise ShapeError(f"labels must be 1-D with {rows} entries, got shape {lab.shape}")
        if not np.issubdtype(lab.dtype, np.integer):
            raise ShapeError(f"labels must be integers, got dtype {lab.dtype}")
        if lab.size and int(lab.min()) < 0:
            raise ShapeError(f"labels must be >= 0 (class indices), got {int(lab.min())}")
    id_list = load_ids(ids, ids_key) if ids is not None else None
    if id_list is not None and len(id_list) != rows:
        raise ShapeError(f"{ids} holds {len(id_list)} ids for {rows} rows of features")
    if id_list is not None and len(set(id_list)) != len(id_list):
        raise ShapeError(f"ids in {ids} are not unique")
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
            FeatureStore.write_rows(arr, lo, np.ascontiguousarray(feats[lo:hi], dtype=np.float32))
        if lab is not None:
            store.set_labels(split, lab)
    finally:
        store.close()
    return store
