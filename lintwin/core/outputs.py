"""Output paths checked before any work, so a long run never fails at its very end for want of a place to write.

Permission bits say little (``root`` passes every ``os.access`` test, and ``/proc`` accepts no
files whatever its bits say), so the folder that will receive the output, or its nearest
existing ancestor, is probed by creating and at once removing an empty temporary file. Nothing
else is created: folders that do not exist yet are made when the outputs are written.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

from ..errors import LintwinError

__all__ = ["check_output_dir", "check_output_file"]


def _probe(folder: Path, what: str, target: Path) -> None:
    try:
        fd, name = tempfile.mkstemp(prefix=".lintwin-probe-", dir=folder)
    except OSError as exc:
        raise LintwinError(f"cannot write {what} {target}: {folder} accepts no new files "
                           f"({exc.strerror or type(exc).__name__})") from None
    os.close(fd)
    os.unlink(name)


def check_output_dir(path: str | Path, what: str) -> None:
    """Refuse an output folder that exists as something else, or that cannot be created or written."""
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise LintwinError(f"{what} {path} exists and is not a directory")
    existing = path
    while not existing.exists() and existing != existing.parent:
        if existing.is_symlink():
            raise LintwinError(f"cannot write {what} {path}: {existing} is a link to nothing")
        existing = existing.parent
    if not existing.is_dir():
        raise LintwinError(f"cannot write {what} {path}: {existing} is not a directory")
    _probe(existing, what, path)


def check_output_file(path: str | Path, what: str) -> None:
    """Refuse an output file path that is a directory or a special file, or whose folder cannot be written.

    An existing regular file is replaced (atomically) when the output is written; a FIFO or
    device in its place (``/dev/null``) would be replaced too, so it is refused.
    """
    path = Path(path)
    if path.is_dir():
        raise LintwinError(f"{what} {path} is a directory; give a file name")
    if path.exists() and not path.is_file():
        raise LintwinError(f"{what} {path} is not a regular file; lintwin replaces its outputs whole, "
                           "so give the path of a file")
    check_output_dir(path.parent, f"the folder of {what}")
