"""Writing files so that a kill never leaves a half-written one where a good one was.

Each file is written to a temporary file beside it (``.NAME.TOKEN.tmp``), flushed to disk and
renamed over the target (``os.replace``: atomic within a directory, and it replaces a link at
the target rather than writing through it). The temporary file is created with mode 0666 less
the process's umask, as ``open`` creates files, so outputs are as readable as any other file
the user makes. While it is being written it is held under an exclusive ``flock``; the next
write of the same target removes temporaries that no live process holds (those of a killed
write), so kills leave no litter behind.
"""

from __future__ import annotations

import fcntl
import os
import re
import secrets
import stat
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import IO, Any

import numpy as np

__all__ = ["atomic_write", "atomic_write_all", "jsonable", "remove_stale_temporaries", "strict_json"]

Writer = Callable[[IO[bytes]], object]


def _temporaries(path: Path) -> list[Path]:
    """Temporary files of writes of ``path`` (``.NAME.TOKEN.tmp`` beside it)."""
    pattern = re.compile(re.escape(f".{path.name}.") + r"[A-Za-z0-9_]+\.tmp")
    try:
        return [path.parent / e.name for e in os.scandir(path.parent) if pattern.fullmatch(e.name)]
    except OSError:
        return []


def remove_stale_temporaries(path: str | Path) -> list[Path]:
    """Remove the temporaries a killed write of ``path`` left; those a live writer holds are kept."""
    removed = []
    for tmp in _temporaries(Path(path)):
        try:
            fd = os.open(tmp, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
        except OSError:
            continue
        try:
            st = os.fstat(fd)
            if not stat.S_ISREG(st.st_mode):
                continue
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                continue  # a live write holds it
            if os.lstat(tmp).st_ino == st.st_ino:
                tmp.unlink()
                removed.append(tmp)
        except OSError:
            continue
        finally:
            os.close(fd)
    return removed


def _new_temporary(path: Path) -> tuple[IO[bytes], Path]:
    """A new temporary file beside ``path`` (0666 less the umask), open for writing (and reading back, as an
    HDF5 writer does) and held under flock."""
    while True:
        tmp = path.with_name(f".{path.name}.{secrets.token_hex(6)}.tmp")
        fd = os.open(tmp, os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o666)
        fcntl.flock(fd, fcntl.LOCK_EX)  # a cleaner holds a candidate only for a moment
        try:
            same = os.lstat(tmp).st_ino == os.fstat(fd).st_ino
        except FileNotFoundError:  # a cleaner of another write took it for stale between open and flock
            same = False
        if same:
            return os.fdopen(fd, "w+b"), tmp
        os.close(fd)


def atomic_write_all(writes: Sequence[tuple[str | Path, Writer]]) -> list[Path]:
    """Write several files, each by ``write(fh)``, replacing the targets only once every one is complete.

    An error (or a kill) while any file is written leaves every target as it was; the
    renames that follow take microseconds and each is atomic.
    """
    pending: list[tuple[IO[bytes], Path, Path]] = []
    try:
        for target, write in writes:
            path = Path(target)
            remove_stale_temporaries(path)
            fh, tmp = _new_temporary(path)
            pending.append((fh, tmp, path))
            write(fh)
            fh.flush()
            os.fsync(fh.fileno())
        for _, tmp, path in pending:
            os.replace(tmp, path)
    finally:
        for fh, tmp, _ in pending:
            fh.close()
            if tmp.exists():
                tmp.unlink()
    return [path for _, _, path in pending]


def atomic_write(path: str | Path, write: Writer) -> Path:
    """Call ``write(fh)`` on a temporary file beside ``path``, flush it to disk, then rename it over ``path``.

    Readers see the old file or the complete new one, never a prefix.
    """
    return atomic_write_all([(path, write)])[0]


def jsonable(x: Any) -> Any:
    """``json.dumps(default=...)`` hook: NumPy scalars and arrays as Python values, anything else as text."""
    if isinstance(x, np.generic):
        return x.item()
    if isinstance(x, np.ndarray):
        return x.tolist()
    return str(x)


def strict_json(x: Any) -> Any:
    """``x`` made strict-JSON-ready: NaN/Inf floats as None, NumPy scalars as Python numbers, keys as text."""
    if isinstance(x, dict):
        return {str(k): strict_json(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [strict_json(v) for v in x]
    if isinstance(x, (float, np.floating)):
        return float(x) if np.isfinite(x) else None
    if isinstance(x, np.integer):
        return int(x)
    return x
