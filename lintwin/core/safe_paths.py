"""The link rule: below a path the user named, lintwin follows no symbolic link, reading or writing.

The path a user names (a store, an ``--out`` folder) may itself be a link: the user chose it.
Everything lintwin reaches *below* it must be a real directory or a regular file. A symbolic
link there could send a write (or a removal) outside the place the user named, or make two
stores share an array; a FIFO or device could make a read hang. Such entries are refused by
every writer and reader and reported by ``lintwin check``: :func:`checked_path` is the one
function that applies the rule, :func:`irregular_entries` lists every offender for reports,
and :func:`read_regular` reads a small file without following a link or blocking on a FIFO.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path, PurePosixPath

from ..errors import UnsafePathError

__all__ = ["checked_path", "irregular_entries", "read_regular"]


def _kind(mode: int) -> str:
    if stat.S_ISLNK(mode):
        return "a symbolic link"
    if stat.S_ISFIFO(mode):
        return "a FIFO"
    if stat.S_ISSOCK(mode):
        return "a socket"
    if stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
        return "a device"
    return "not a regular file or directory"


def _refuse(root: Path, rel: str, kind: str, what: str) -> UnsafePathError:
    return UnsafePathError(f"{rel} inside {what} {root} is {kind}; lintwin never reads or writes through links or "
                           "special files below the path you name (they can lead outside it): replace it with "
                           "the real files")


def checked_path(root: str | Path, rel: str | PurePosixPath, *, tree: bool = False, what: str = "store") -> Path:
    """``root / rel`` after checking that nothing on the way below ``root`` is a link or special file.

    Components that do not exist yet are fine (the caller creates them as real directories or
    files). With ``tree``, an existing directory at ``rel`` is searched in full, so an array
    that is about to be written into, resumed or removed holds no link anywhere.
    """
    root = Path(root)
    parts = PurePosixPath(rel).parts
    node = root
    for i, part in enumerate(parts):
        node = node / part
        where = "/".join(parts[: i + 1])
        try:
            mode = os.lstat(node).st_mode
        except FileNotFoundError:
            return root.joinpath(*parts)
        except OSError as exc:
            raise UnsafePathError(f"cannot inspect {node}: {exc.strerror or exc}") from None
        last = i == len(parts) - 1
        if stat.S_ISDIR(mode):
            continue
        if stat.S_ISREG(mode) and last:
            return node
        if stat.S_ISREG(mode):
            raise UnsafePathError(f"{where} inside {what} {root} is a file where a directory belongs")
        raise _refuse(root, where, _kind(mode), what)
    if tree and parts and node.is_dir():
        found = irregular_entries(node, first=True)
        if found:
            inner, kind = found[0]
            raise _refuse(root, f"{'/'.join(parts)}/{inner}", kind, what)
    return node


def irregular_entries(root: str | Path, *, first: bool = False) -> list[tuple[str, str]]:
    """Every entry under ``root`` that is neither a directory nor a regular file, as (relative path, kind).

    Links are listed, never followed. ``first`` stops at the first one found.
    """
    out: list[tuple[str, str]] = []
    stack = [(Path(root), "")]
    while stack:
        folder, prefix = stack.pop()
        try:
            entries = sorted(os.scandir(folder), key=lambda e: e.name)
        except OSError:
            continue
        for entry in entries:
            rel = f"{prefix}{entry.name}"
            if entry.is_symlink():
                out.append((rel, "a symbolic link"))
            elif entry.is_dir(follow_symlinks=False):
                stack.append((Path(entry.path), rel + "/"))
            elif not entry.is_file(follow_symlinks=False):
                out.append((rel, _kind(entry.stat(follow_symlinks=False).st_mode)))
            if first and out:
                return out
    return sorted(out)


def read_regular(path: str | Path, *, limit: int) -> bytes:
    """The bytes of ``path`` if it is a regular file (not a link, FIFO or device) of at most ``limit`` bytes.

    Raises ``FileNotFoundError`` when it is absent and :class:`UnsafePathError` when it is not a
    regular file or too large; opening does not block on a FIFO and does not follow a final link.
    """
    flags = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC
    try:
        fd = os.open(path, flags)
    except OSError as exc:
        if isinstance(exc, FileNotFoundError):
            raise
        if os.path.islink(path):
            raise UnsafePathError(f"{path} is a symbolic link; lintwin does not follow links below the path you "
                                  "name") from None
        raise
    with os.fdopen(fd, "rb") as fh:
        st = os.fstat(fh.fileno())
        if not stat.S_ISREG(st.st_mode):
            raise UnsafePathError(f"{path} is {_kind(st.st_mode)}, not a regular file")
        if st.st_size > limit:
            raise UnsafePathError(f"{path} holds {st.st_size} bytes, more than the {limit} such a file can need")
        return fh.read(limit + 1)[:limit]
