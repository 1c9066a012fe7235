"""Chunk checksums: is every complete chunk on disk, the one written there, and big enough for its rows?

Every chunk ends in a crc32c (zarr's ``crc32c`` codec after compression). ``rows_written``
is advanced in the same metadata write as ``chunk_crc32c``, the checksum of every complete
chunk in order, so reading the last four bytes of each chunk file tells a deleted chunk, or a
valid chunk copied over another, from the one written there, without decoding anything.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

import zarr

from .layout import chunk_file, complete_chunks

__all__ = ["MAX_RATIO", "chunk_problems", "describe", "stored_crc"]

# No codec lintwin writes expands a chunk file more than this: zstd's largest ratio is about
# 32,768:1 (a run-length block), LZ4's (inside Blosc) about 255:1. A chunk file that would have to
# expand further to hold the rows its metadata claims has been tampered with.
MAX_RATIO = 2**16
_ROW_BYTES = {"float32": 4, "int64": 8}
_MIN_ENCODED_ITEM = 4  # a variable-length string is at least its 4-byte length prefix


def _tail(path: Path | str) -> tuple[int, int] | str:
    """``(crc32c the chunk file ends with, file size)``, or why there is none (missing, too short, not a file).

    The file is opened without following a link and without blocking on a FIFO.
    """
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    except FileNotFoundError:
        return "missing"
    except OSError:
        return "is a symbolic link or cannot be opened" if os.path.islink(path) else "cannot be opened"
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            return "is not a regular file"
        if st.st_size < 5:
            return "missing"
        return int.from_bytes(os.pread(fd, 4, st.st_size - 4), "little"), st.st_size
    finally:
        os.close(fd)


def stored_crc(path: Path | str) -> int | str:
    """The crc32c a chunk file ends with; or why there is none (missing, too short, not a regular file)."""
    got = _tail(path)
    return got if isinstance(got, str) else got[0]


def _chunk_folders(node: Path, ndim: int) -> dict[str, bool] | str:
    """For 2-D arrays, which chunk folders ``c/<k>`` are real directories (one listing); or why ``c`` is unusable."""
    folder = node / "c"
    try:
        if not stat.S_ISDIR(os.lstat(folder).st_mode):
            return "lies under a symbolic link or a file"
        if ndim == 1:
            return {}
        return {e.name: e.is_dir(follow_symlinks=False) for e in os.scandir(folder)}
    except FileNotFoundError:
        return {}
    except OSError:
        return "cannot be listed"


def chunk_problems(arr: zarr.Array) -> list[tuple[int, int, int, str]]:
    """``(chunk, first_row, last_row, problem)`` for each complete chunk that is missing or not the one written.

    Cheap (a few bytes per chunk): it needs no decoding, so every read runs it. The loop runs
    over the checksums recorded in the metadata, which the metadata checks bound by the chunk
    files present.
    """
    crcs = list(arr.attrs.get("chunk_crc32c") or [])
    rows, chunk = int(arr.shape[0]), int(arr.chunks[0])
    done = int(arr.attrs.get("rows_written", 0))
    node = Path(arr.store_path.store.root) / arr.store_path.path
    row_bytes = _ROW_BYTES.get(str(arr.dtype), _MIN_ENCODED_ITEM) * (int(arr.shape[1]) if arr.ndim > 1 else 1)
    folders = _chunk_folders(node, arr.ndim)
    out = []
    for k in range(complete_chunks(done, rows, chunk)):
        lo, hi = k * chunk, min(rows, (k + 1) * chunk) - 1
        if isinstance(folders, str):
            got: tuple[int, int] | str = folders
        elif folders.get(str(k), True) is False:
            got = "lies under a symbolic link or a file"
        else:
            got = _tail(chunk_file(node, k, arr.ndim))
        if isinstance(got, str):
            out.append((k, lo, hi, got))
        elif k >= len(crcs):
            out.append((k, lo, hi, "has no recorded checksum"))
        elif got[0] != crcs[k]:
            out.append((k, lo, hi, "is not the chunk written there (checksum differs from the recorded one)"))
        elif chunk * row_bytes > MAX_RATIO * got[1]:
            out.append((k, lo, hi, f"cannot hold the {chunk} rows the metadata claims for it ({got[1]} bytes on disk)"))
    return out


def describe(problems: list[tuple[int, int, int, str]]) -> str:
    """The first three problems in words, and how many more."""
    shown = "; ".join(f"chunk {k} (rows {lo}..{hi}) {p}" for k, lo, hi, p in problems[:3])
    return shown + (f"; and {len(problems) - 3} more" if len(problems) > 3 else "")
