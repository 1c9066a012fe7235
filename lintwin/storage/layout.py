"""What a lintwin store is on disk: its format, names, and the metadata each array must have.

Layout (a zarr v3 group; nothing else is opened)::

    STORE/                        attrs: {"lintwin": {"format": "lintwin.store/2"}}
      <split>/                    e.g. train, val
        features/<network>        float32 (rows x dim), chunks (chunk_rows, dim), dims (ids, <network>.unit)
                                  attrs: network, dim, rows, rows_written, chunk_crc32c, ids_sha256,
                                  model_sha256, source, and what the writer adds (extra attributes)
        labels                    int64 (rows,)   optional; dims (ids,); attrs rows, rows_written,
                                  chunk_crc32c, coordinates ("labels")
        ids                       string (rows,)  optional, e.g. image file names; dims (ids,); attrs also
                                  ids_sha256
      .lintwin-locks/             one lock file per array written (not part of the zarr hierarchy: zarr
                                  warns that it does not recognise it when it lists the store's root)

Dimension names (zarr v3 ``dimension_names``) make every array readable by xarray: the rows are
dimension ``ids``, of which the split's ``ids`` array is the index (so ``xarray.open_datatree``
hands the sample ids down to the feature arrays), and ``labels`` declares itself a coordinate
(CF's ``coordinates`` attribute). Stores written before lintwin recorded them carry no
``dimension_names``; ``lintwin upgrade`` adds them (:mod:`.upgrade`). No array may carry an
attribute that xarray's decoding would act on (:data:`XARRAY_DECODED_ATTRS`: a scale factor, a fill
value, time units, ...), so xarray reads exactly the numbers lintwin reads.

Metadata is untrusted input: :func:`check_array_meta` accepts only the arrays lintwin writes
(zarr v3, its data types, codecs and chunking) with every attribute present, of its type, and
with counts that agree with each other and with the shape, before anything loops over them;
:func:`check_counts_on_disk` then holds the claimed chunks against the chunk files present.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numcodecs
from zarr.codecs import BloscCodec, Crc32cCodec, ZstdCodec

from ..core.safe_paths import read_regular
from ..errors import StoreError, UnsafePathError

__all__ = ["FORMAT", "KINDS", "LOCK_DIR", "RESERVED_ATTRS", "ROWS_DIM", "XARRAY_DECODED_ATTRS", "check_array_meta",
           "check_counts_on_disk", "check_group_meta", "check_name", "chunk_file", "complete_chunks", "compressors",
           "default_chunk_rows", "dimension_names", "ids_sha256", "is_name", "n_chunks", "read_meta",
           "require_safe_numcodecs", "xarray_attrs"]

FORMAT = "lintwin.store/2"
LOCK_DIR = ".lintwin-locks"
_CHUNK_BYTES = 8 * 2**20
_META_LIMIT = 256 * 2**20  # a zarr.json larger than this is not one lintwin wrote
_SLACK = 64  # missing chunks beyond twice those present (plus this) mean tampered counts
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._+-]{0,127}")
RESERVED_ATTRS = {"network", "dim", "rows", "rows_written", "chunk_crc32c", "ids_sha256", "model_sha256", "source"}
ROWS_DIM = "ids"  # the dimension of the rows; the split's ids array is its index
# Attributes that xarray's default decoding acts on (masking and scaling, times and time deltas,
# booleans, characters, coordinates, zarr v2 dimensions): on a lintwin array they would make xarray
# read other numbers than lintwin does, so no writer sets them and no reader accepts them (except
# ``coordinates`` on labels, exactly as lintwin writes it).
XARRAY_DECODED_ATTRS = {"_FillValue", "missing_value", "scale_factor", "add_offset", "_Unsigned", "valid_min",
                        "valid_max", "valid_range", "units", "calendar", "dtype", "_Encoding", "coordinates",
                        "bounds", "grid_mapping", "_ARRAY_DIMENSIONS"}
# What each lintwin array may be: its data type, rank and codecs (the last one always crc32c).
KINDS = {
    "features": ("float32", 2, {"bytes", "blosc", "crc32c"}),
    "labels": ("int64", 1, {"bytes", "zstd", "crc32c"}),
    "ids": ("string", 1, {"vlen-utf8", "zstd", "crc32c"}),
}


def dimension_names(kind: str, name: str | None = None) -> list[str]:
    """The xarray dimension names of an array of ``kind`` (``features`` of network ``name``, ``labels``, ``ids``)."""
    return [ROWS_DIM, f"{name}.unit"] if kind == "features" else [ROWS_DIM]


def xarray_attrs(kind: str) -> dict[str, str]:
    """The attributes by which xarray reads an array of ``kind`` as a coordinate (labels) rather than data."""
    return {"coordinates": "labels"} if kind == "labels" else {}


def default_chunk_rows(dim: int) -> int:
    """Rows per chunk so that one chunk holds about 8 MiB of float32 features."""
    return int(max(256, min(65536, _CHUNK_BYTES // (4 * max(dim, 1)))))


def is_name(value: object) -> bool:
    """Whether ``value`` is an allowed network or split name."""
    return isinstance(value, str) and bool(_NAME.fullmatch(value)) and value != "zarr.json"


def check_name(value: str, what: str = "network") -> str:
    """Refuse names that could escape or confuse the layout (``/``, ``..``, empty, control characters)."""
    if not is_name(value):
        raise StoreError(f"{what} name {value!r} is not allowed: use 1 to 128 letters, digits, '.', '_', '+' "
                         "or '-', starting with a letter or digit")
    return value


def ids_sha256(ids: Sequence[str]) -> str:
    """The identity of a split's rows: sha256 of its sample ids, in order."""
    return hashlib.sha256(json.dumps([str(i) for i in ids], ensure_ascii=False).encode()).hexdigest()


def require_safe_numcodecs() -> None:
    """Refuse to read stores with a numcodecs that would unpickle data (which can run code)."""
    from numcodecs import pickles

    if getattr(pickles, "ALLOW_UNSAFE_PICKLE_DECODE", True):
        raise StoreError(f"numcodecs {numcodecs.__version__} can unpickle data from a store, which can run code: "
                         "install numcodecs>=0.16.6 and unset NUMCODECS_ALLOW_UNSAFE_PICKLE_DECODE")


def compressors(kind: str) -> tuple:
    """The codecs after serialisation for an array of ``kind``; crc32c last, so a damaged chunk fails to decode."""
    # lz4 + byte shuffle decompresses at several GB/s, so reading keeps up with the GEMMs.
    if kind == "features":
        return (BloscCodec(cname="lz4", clevel=5, shuffle="shuffle"), Crc32cCodec())
    return (ZstdCodec(level=3), Crc32cCodec())


def read_meta(node: Path, what: str) -> dict[str, Any]:
    """The ``zarr.json`` of ``node`` as a dict; missing, damaged, a link or a special file: refused."""
    path = node / "zarr.json"
    try:
        meta = json.loads(read_regular(path, limit=_META_LIMIT))
    except FileNotFoundError:
        v2 = [n for n in (".zarray", ".zgroup", ".zattrs") if (node / n).exists()]
        if v2:
            raise StoreError(f"{what} is a zarr v2 node ({v2[0]}); lintwin opens only its own zarr v3 layout") from None
        raise StoreError(f"{what}: metadata {path} is missing; `lintwin check` reports every array") from None
    except UnsafePathError as exc:
        raise StoreError(f"{what}: {exc}") from None
    except (OSError, ValueError) as exc:
        raise StoreError(f"{what}: metadata {path} is damaged ({type(exc).__name__})") from None
    if not isinstance(meta, dict):
        raise StoreError(f"{what}: metadata {path} is damaged (not a JSON object)")
    return meta


def check_group_meta(meta: dict[str, Any], what: str) -> None:
    """Accept only a zarr v3 group."""
    if meta.get("zarr_format") != 3 or meta.get("node_type") != "group":
        raise StoreError(f"{what} is not a zarr v3 group; lintwin opens only its own zarr v3 layout")


def n_chunks(rows: int, chunk: int) -> int:
    """Chunks of ``chunk`` rows that hold ``rows`` rows."""
    return -(-rows // chunk)


def complete_chunks(rows_written: int, rows: int, chunk: int) -> int:
    """Chunks completely written once ``rows_written`` of ``rows`` rows are on disk."""
    return n_chunks(rows, chunk) if rows_written >= rows else rows_written // chunk


def _is_int(v: object) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _is_sha(v: object) -> bool:
    return isinstance(v, str) and re.fullmatch(r"[0-9a-f]{64}", v) is not None


def _attribute_problem(attrs: dict[str, Any], kind: str, shape: list[int], chunk: int,
                       name: str | None) -> str | None:
    """What is wrong with an array's lintwin attributes, or None."""
    need = ["rows", "rows_written", "chunk_crc32c"] + {"features": ["network", "dim", "ids_sha256", "model_sha256",
                                                                    "source"], "ids": ["ids_sha256"]}.get(kind, [])
    missing = [k for k in need if k not in attrs]
    if missing:
        return f"attribute(s) {', '.join(missing)} missing"
    rows, done, crcs = attrs["rows"], attrs["rows_written"], attrs["chunk_crc32c"]
    if not (_is_int(rows) and rows == shape[0]):
        return f"rows {rows!r} disagrees with the array's shape {tuple(shape)}"
    if not (_is_int(done) and 0 <= done <= rows):
        return f"rows_written {done!r} is not a count between 0 and rows ({rows})"
    if not (isinstance(crcs, list) and all(_is_int(c) and 0 <= c < 2**32 for c in crcs)):
        return "chunk_crc32c is not a list of checksums"
    low, high = complete_chunks(done, rows, chunk), n_chunks(rows, chunk)
    if not low <= len(crcs) <= high:
        return (f"chunk_crc32c records {len(crcs)} checksum(s), but {done} of {rows} rows written in chunks of "
                f"{chunk} need {low}" + (f" to {high}" if high != low else ""))
    if kind == "features":
        if attrs["network"] != name:
            return f"network {attrs['network']!r} is not the array's name {name!r}"
        if not (_is_int(attrs["dim"]) and attrs["dim"] == shape[1]):
            return f"dim {attrs['dim']!r} disagrees with the array's shape {tuple(shape)}"
        for key in ("model_sha256", "source"):
            if attrs[key] is not None and not isinstance(attrs[key], str):
                return f"{key} is not text"
    if kind in ("features", "ids") and not (_is_sha(attrs["ids_sha256"])
                                            or (kind == "features" and attrs["ids_sha256"] is None)):
        return "ids_sha256 is not a sha256 digest"
    decoded = sorted(k for k in XARRAY_DECODED_ATTRS & set(attrs) if attrs[k] != xarray_attrs(kind).get(k))
    if decoded:
        return (f"attribute(s) {', '.join(decoded)} would make xarray decode the values (lintwin never writes "
                "them there)")
    return None


def check_array_meta(meta: dict[str, Any], kind: str, what: str, name: str | None = None) -> None:
    """Accept only the arrays lintwin writes: zarr v3, its dtype, rank, chunking and codecs, and its attributes."""
    dtype, ndim, codecs = KINDS[kind]
    try:
        names = [c["name"] for c in meta["codecs"]]
        shape, chunks = meta["shape"], meta["chunk_grid"]["configuration"]["chunk_shape"]
        ok = (meta["zarr_format"] == 3 and meta["node_type"] == "array" and meta["data_type"] == dtype
              and len(shape) == ndim and len(chunks) == ndim and all(_is_int(v) for v in shape + chunks)
              and set(names) <= codecs and names[-1] == "crc32c" and not meta.get("storage_transformers")
              and meta["chunk_key_encoding"] == {"name": "default", "configuration": {"separator": "/"}}
              and (ndim == 1 or chunks[1] == shape[1]) and chunks[0] >= 1 and isinstance(meta.get("attributes"), dict)
              and meta.get("dimension_names") in (None, dimension_names(kind, name)))
    except (KeyError, TypeError, IndexError):
        ok = False
    if not ok:
        raise StoreError(f"{what} is not an array lintwin wrote (unexpected zarr metadata); "
                         "lintwin opens only its own zarr v3 layout")
    problem = _attribute_problem(meta["attributes"], kind, shape, chunks[0], name)
    if problem:
        raise StoreError(f"{what} are damaged: their metadata's {problem}; `lintwin check` reports every array")


def chunk_file(node: Path, k: int, ndim: int) -> Path:
    """The file of row chunk ``k`` of the array at ``node`` (zarr's default v3 chunk keys, ``c/k[/0]``)."""
    return node.joinpath("c", str(k), *("0",) * (ndim - 1))


def check_counts_on_disk(node: Path, meta: dict[str, Any], what: str) -> None:
    """Refuse metadata that claims far more complete chunks than there are chunk entries on disk.

    One directory listing, before anything loops over the claimed chunks: a claim of more than
    twice the chunks present (plus 64) is tampering, refused at once; fewer missing chunks are
    left for the per-chunk checks to name one by one. So no loop runs longer than what is on
    disk allows.
    """
    attrs, chunk = meta["attributes"], meta["chunk_grid"]["configuration"]["chunk_shape"][0]
    claimed = complete_chunks(attrs["rows_written"], attrs["rows"], chunk)
    if claimed <= _SLACK:
        return
    try:
        present = sum(1 for e in os.scandir(node / "c") if e.name.isdigit())
    except OSError:
        present = 0
    if claimed > 2 * present + _SLACK:
        raise StoreError(f"{what} are damaged: their metadata claims {attrs['rows_written']} rows written in "
                         f"{claimed} chunk(s) of {chunk} rows, but {present} chunk(s) are on disk; "
                         "`lintwin check` reports every array")
