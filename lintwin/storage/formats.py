"""Exchange files: which format a file is, and its named arrays, read without trusting the file.

========== ============================================ =========================================
format     what lintwin reads                           refused
========== ============================================ =========================================
npy        its one array (memory-mapped)                Python objects (never unpickled)
npz        named arrays                                 Python objects
HDF5       datasets by name or path (``group/name``)    external links, external raw data and
                                                        virtual datasets (they read other files)
safetensors named tensors (row slices read lazily),     bfloat16 and 8-bit float tensors
           text metadata
========== ============================================ =========================================

The format is told from a file's first bytes, never from its name. In a file of several arrays,
the features are ``--key``, else the array named ``features``, else the only array that is neither
``ids`` nor ``labels``; the entries ``ids`` and ``labels`` (for safetensors, which holds no text
tensors, the metadata entry ``ids``: a JSON list) are the rows' sample ids and labels. HDF5 and
safetensors need the ``formats`` extra (h5py, safetensors), imported only when such a file is met.
"""

from __future__ import annotations

import importlib
import json
from pathlib import Path
from types import ModuleType
from typing import Any, Self

import numpy as np

from ..errors import LintwinError

__all__ = ["EXTRA", "FORMATS", "SAFETENSORS_HEADER_LIMIT", "ArrayFile", "open_arrays", "require", "sniff", "unreadable"]

FORMATS = ("npy", "npz", "hdf5", "safetensors")
EXTRA = "pip install 'lintwin[formats]'"
ROLES = ("ids", "labels")  # entries that name and label the rows, never features
_NPY, _NPZ, _HDF5 = b"\x93NUMPY", b"PK\x03\x04", b"\x89HDF\r\n\x1a\n"
SAFETENSORS_HEADER_LIMIT = 100_000_000  # the safetensors library's own limit on its JSON header
_SAFETENSORS_DTYPES = {"F64": np.float64, "F32": np.float32, "F16": np.float16, "I64": np.int64, "I32": np.int32,
                       "I16": np.int16, "I8": np.int8, "U64": np.uint64, "U32": np.uint32, "U16": np.uint16,
                       "U8": np.uint8, "BOOL": np.bool_}


def require(module: str, what: str) -> ModuleType:
    """Import an optional package of the ``formats`` extra, or refuse in one line naming the extra."""
    try:
        return importlib.import_module(module)
    except ImportError:
        raise LintwinError(f"{what} needs the {module} package, which the main install leaves out: {EXTRA}") from None


def sniff(path: str | Path) -> str:
    """The format of ``path`` from its first bytes: ``npy``, ``npz``, ``hdf5`` or ``safetensors``."""
    path = Path(path)
    if not path.is_file():
        raise LintwinError(f"no such file: {path}")
    try:
        with path.open("rb") as f:
            head = f.read(9)
            size = path.stat().st_size
    except OSError as exc:
        raise LintwinError(f"cannot read {path}: {exc.strerror or exc}") from None
    if head.startswith(_NPY):
        return "npy"
    if head.startswith(_NPZ):
        return "npz"
    if head.startswith(_HDF5):
        return "hdf5"
    if len(head) == 9 and head[8:9] == b"{":
        n = int.from_bytes(head[:8], "little")
        if 2 <= n <= min(size - 8, SAFETENSORS_HEADER_LIMIT):
            return "safetensors"
    raise LintwinError(f"{path} is not a .npy, .npz, HDF5 or safetensors file (it starts with none of their "
                       "signatures)")


class _SafetensorsArray:
    """One tensor of a safetensors file, read row slice by row slice."""

    def __init__(self, handle: Any, key: str, path: Path):
        sl = handle.get_slice(key)
        code = sl.get_dtype()
        if code not in _SAFETENSORS_DTYPES:
            raise LintwinError(f"tensor {key!r} of {path} is {code}, which NumPy has no type for; convert it to "
                               "float32 first")
        self._slice, self.shape = sl, tuple(int(s) for s in sl.get_shape())
        self.dtype, self.ndim = np.dtype(_SAFETENSORS_DTYPES[code]), len(self.shape)

    def __getitem__(self, index: Any) -> np.ndarray:
        return np.asarray(self._slice[index])


class ArrayFile:
    """The named arrays of one exchange file (lazily read where the format allows) and its text metadata."""

    def __init__(self, path: Path, kind: str, keys: list[str], get: Any, text: dict[str, str], closer: Any = None,
                 known: Any = None):
        self.path, self.kind, self._keys, self._get, self._text, self._closer = path, kind, keys, get, text, closer
        self._known = known or (lambda key: key in self._keys)

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        if self._closer is not None:
            self._closer()
            self._closer = None

    def keys(self) -> list[str]:
        return list(self._keys)

    def has(self, key: str) -> bool:
        """Whether the file has an array ``key``."""
        return key in self._keys

    def carries(self, key: str) -> bool:
        """Whether the file has an array or (safetensors) a metadata entry ``key``."""
        return key in self._keys or key in self._text

    def features_key(self, key: str | None) -> str | None:
        """The key of the features: ``key``, else ``features``, else the only array that is not ids or labels."""
        if self.kind == "npy":
            if key is not None:
                raise LintwinError(f"{self.path} is a .npy file with one array; --key applies to files of several")
            return None
        if key is not None:
            if not self._known(key):
                raise LintwinError(f"{self.path} has no array {key!r} (it has {', '.join(self._keys) or 'none'})")
            return key
        if "features" in self._keys:
            return "features"
        rest = [k for k in self._keys if k not in ROLES]
        if len(rest) != 1:
            raise LintwinError(f"{self.path} holds arrays {self._keys}; choose one with --key")
        return rest[0]

    def array(self, key: str | None) -> Any:
        """The array under ``key`` (``None``: a .npy file's one array): NumPy, or row-sliceable like one."""
        if key is not None and not self._known(key):
            raise LintwinError(f"{self.path} has no array {key!r} (it has {', '.join(self._keys) or 'none'})")
        try:
            return self._get(key)
        except LintwinError:
            raise
        except Exception as exc:  # noqa: BLE001  (NumPy, zipfile, h5py and safetensors raise many types)
            raise unreadable(self.path, self.kind, exc) from None

    def strings(self, key: str) -> list[str] | None:
        """Sample ids under ``key``: a text or integer array, or (safetensors) a JSON list in the metadata."""
        if key in self._text:
            try:
                values = json.loads(self._text[key])
            except json.JSONDecodeError:
                values = None
            if not (isinstance(values, list) and all(isinstance(v, str) for v in values)):
                raise LintwinError(f"the metadata entry {key!r} of {self.path} is not a JSON list of strings")
            return values
        if key not in self._keys:
            return None
        values = self.array(key)
        if self.kind == "hdf5":
            h5py = require("h5py", "reading HDF5 files")
            if h5py.check_string_dtype(values.dtype) is not None:
                return [str(v) for v in values.asstr()[()]] if values.ndim == 1 else _not_ids(self.path, key, values)
        values = np.asarray(values[()] if self.kind == "hdf5" else values[:])
        if values.ndim != 1 or values.dtype.kind not in "UiuS":
            _not_ids(self.path, key, values)
        return [v.decode() if isinstance(v, bytes) else str(v) for v in values.tolist()]


def _not_ids(path: Path, key: str, values: Any) -> list[str]:
    raise LintwinError(f"ids {key!r} in {path} must be a 1-D array of strings or integers, got {values.dtype} of "
                       f"shape {tuple(values.shape)}")


def _npy(path: Path) -> ArrayFile:
    arr = np.load(path, mmap_mode="r", allow_pickle=False)
    return ArrayFile(path, "npy", [], lambda key: arr, {})


def _npz(path: Path) -> ArrayFile:
    z = np.load(path, allow_pickle=False)
    return ArrayFile(path, "npz", list(z.files), lambda key: z[key], {}, z.close)


def _hdf5(path: Path) -> ArrayFile:
    h5py = require("h5py", "reading HDF5 files")
    f = h5py.File(path, "r")

    def links(key: str) -> list[tuple[str, Any]] | None:
        """Each link on the way to ``key`` (never followed into another file), or None where one is missing."""
        parts, out = key.strip("/").split("/"), []
        for i in range(len(parts)):
            at = "/".join(parts[: i + 1])
            link = f.get(at, getlink=True)
            if link is None:
                return None
            out.append((at, link))
            if isinstance(link, h5py.ExternalLink):
                break  # what lies beyond is in another file
        return out

    def link_problem(key: str) -> str | None:
        for at, link in links(key) or []:
            if isinstance(link, h5py.ExternalLink):
                return f"{at!r} is a link to another file ({link.filename})"
        return None

    def get(key: str) -> Any:
        problem = link_problem(key)
        if problem:
            raise LintwinError(f"{path}: {problem}; lintwin reads only the file you name")
        ds = f[key]
        if not isinstance(ds, h5py.Dataset):
            raise LintwinError(f"{key!r} in {path} is a group, not an array")
        if ds.is_virtual or ds.external:
            how = "a virtual dataset" if ds.is_virtual else "external storage"
            raise LintwinError(f"{key!r} in {path} keeps its data in other files ({how}); lintwin reads only the "
                               "file you name")
        return ds

    keys = [k for k in f if isinstance(f.get(k, getlink=True), h5py.ExternalLink)
            or isinstance(f.get(k), h5py.Dataset)]  # an external link is listed, and refused when read
    return ArrayFile(path, "hdf5", keys, get, {}, f.close, known=lambda key: links(key) is not None)


def _safetensors(path: Path) -> ArrayFile:
    handle = require("safetensors", "reading safetensors files").safe_open(str(path), framework="numpy")
    return ArrayFile(path, "safetensors", list(handle.keys()), lambda key: _SafetensorsArray(handle, key, path),
                     dict(handle.metadata() or {}))


_OPEN = {"npy": _npy, "npz": _npz, "hdf5": _hdf5, "safetensors": _safetensors}


def open_arrays(path: str | Path) -> ArrayFile:
    """Open an exchange file of any of :data:`FORMATS` (told from its first bytes); close it when done."""
    path = Path(path)
    kind = sniff(path)
    try:
        return _OPEN[kind](path)
    except LintwinError:
        raise
    except Exception as exc:  # noqa: BLE001  (NumPy, zipfile, h5py and safetensors raise many types for damage)
        raise unreadable(path, kind, exc) from None


def unreadable(path: Path, kind: str, exc: Exception) -> LintwinError:
    """The one-line refusal of a file (or a part of it) that cannot be read."""
    if isinstance(exc, ValueError) and ("pickle" in str(exc).lower() or "python objects" in str(exc).lower()):
        return LintwinError(f"cannot read {path}: it holds Python objects, and lintwin never unpickles data")
    return LintwinError(f"cannot read {path}: damaged {kind} file ({type(exc).__name__})")
