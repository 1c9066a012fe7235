"""One writer per array: a lock file per array under ``STORE/.lintwin-locks/<split>/``.

Locks are ``flock`` locks taken with the ``filelock`` library and never waited for: a second
process writing the same array is refused at once. They are released when the store is
closed or the process ends (the kernel drops a dead process's ``flock``). A reader that finds
an array in flux asks :meth:`WriteLocks.busy_elsewhere`, which probes the lock without creating
anything, so it can say "another process is writing" instead of reporting damage.
"""

from __future__ import annotations

import fcntl
import os
import stat
from pathlib import Path

from filelock import FileLock, Timeout

from ..core.safe_paths import checked_path
from ..errors import StoreError
from .layout import LOCK_DIR

__all__ = ["WriteLocks", "busy_message"]


def busy_message(root: Path, split: str, key: str) -> str:
    """The refusal a writer (or reader) gets while another process writes ``key`` of ``split``."""
    return (f"another process is writing {key.replace('features.', '')!r} of split {split!r} in {root}; "
            "wait for it to finish")


class WriteLocks:
    """The write locks one open store holds, by ``split/key`` (``features.<network>``, ``labels``, ``ids``)."""

    def __init__(self, root: Path):
        self.root = root
        self._held: dict[str, FileLock] = {}

    def _rel(self, split: str, key: str) -> str:
        return f"{LOCK_DIR}/{split}/{key}.lock"

    def holds(self, split: str, key: str) -> bool:
        return f"{split}/{key}" in self._held

    def acquire(self, split: str, key: str) -> None:
        """Hold the lock of one array; a second writer is refused at once. Links on the way are refused."""
        tag = f"{split}/{key}"
        if tag in self._held:
            return
        path = checked_path(self.root, self._rel(split, key))
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            lock = FileLock(path, timeout=0, thread_local=False, is_singleton=True)
            lock.acquire()
        except Timeout:
            raise StoreError(busy_message(self.root, split, key)) from None
        except OSError as exc:
            raise StoreError(f"cannot write to {self.root}: {exc.strerror or exc}") from None
        self._held[tag] = lock

    def busy_elsewhere(self, split: str, key: str) -> bool:
        """Whether another process holds the lock of ``key`` in ``split`` (a read-only probe; creates nothing)."""
        if self.holds(split, key):
            return False
        path = self.root / self._rel(split, key)
        if FileLock(path, timeout=0, thread_local=False, is_singleton=True).is_locked:
            return False  # another store object of this process writes it: the caller's own doing
        try:
            fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
        except OSError:
            return False
        try:
            if not stat.S_ISREG(os.fstat(fd).st_mode):
                return False
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
            return False
        except BlockingIOError:
            return True
        finally:
            os.close(fd)

    def release_all(self) -> None:
        for lock in self._held.values():
            lock.release()
        self._held.clear()
