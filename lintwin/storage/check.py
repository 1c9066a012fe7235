"""``lintwin check``: verify every chunk of every array of a feature store.

Each array's metadata must be lintwin's, with every attribute present and counts that agree
with each other and with the chunks on disk. Each chunk must be present, be the chunk written
there (its checksum equals the one recorded with ``rows_written``), decode (its crc32c matches
its bytes and it decompresses), have the right shape, and, for features, hold only finite
numbers. Arrays of one split must be complete, have one row count and be written for the same
samples. Nothing in the store may be a symbolic link or a special file (FIFO, device, socket).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

from ..core.safe_paths import irregular_entries
from ..errors import LintwinError, UnsafePathError
from .checksums import chunk_problems
from .store import FeatureStore

__all__ = ["CheckReport", "check_store"]


@dataclass
class CheckReport:
    """What ``check_store`` found: one line per array, and every problem (where: what)."""

    lines: list[str] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)
    arrays: int = 0
    chunks: int = 0

    @property
    def ok(self) -> bool:
        return not self.problems


def _check_array(store: FeatureStore, split: str, key: str, report: CheckReport, bar: tqdm) -> int | None:
    """Check one array (``features/<name>``, ``labels`` or ``ids``); return its row count if it opens."""
    where = f"{split}/{key}"
    try:
        if key.startswith("features/"):
            arr = store._raw(split, key.split("/", 1)[1])
        else:
            arr = store._aux(split, key)
    except LintwinError as exc:
        if not isinstance(exc, UnsafePathError):  # links and special files are listed once, by check_store
            report.problems.append(f"{where}: {exc}")
        report.lines.append(f"{where}: BAD metadata")
        return None
    report.arrays += 1
    rows, chunk = int(arr.shape[0]), int(arr.chunks[0])
    done = FeatureStore.rows_written(arr)
    n_chunks = -(-rows // chunk)
    bad: dict[int, str] = {k: p for k, _, _, p in chunk_problems(arr)}
    if done != rows:
        report.problems.append(f"{where}: incomplete, {done} of {rows} rows written")
    complete = n_chunks if done >= rows else done // chunk
    for k in range(complete):
        lo, hi = k * chunk, min(rows, (k + 1) * chunk)
        if k not in bad:
            try:
                block = np.asarray(arr[lo:hi])
            except Exception as exc:  # noqa: BLE001  (zarr raises many types for damaged data)
                bad[k] = f"does not decode ({type(exc).__name__}: {str(exc)[:120]})"
            else:
                want = (hi - lo,) + tuple(int(s) for s in arr.shape[1:])
                if block.shape != want:
                    bad[k] = f"has shape {block.shape}, expected {want}"
                elif key.startswith("features/") and not np.isfinite(block).all():
                    bad[k] = f"holds {int((~np.isfinite(block)).sum())} NaN or Inf values"
                elif key == "labels" and block.size and int(block.min()) < 0:
                    bad[k] = "holds negative labels"
        bar.update(1)
        report.chunks += 1
    for k in sorted(bad):
        lo, hi = k * chunk, min(rows, (k + 1) * chunk) - 1
        report.problems.append(f"{where} chunk {k} (rows {lo}..{hi}): {bad[k]}")
    state = "ok" if not bad and done == rows else f"BAD ({len(bad)} bad chunk(s), {done}/{rows} rows written)"
    report.lines.append(f"{where}: {rows} rows x {arr.shape[1] if arr.ndim == 2 else 1}, "
                        f"{n_chunks} chunk(s) of {chunk} rows, {state}")
    return rows


def check_store(path: str | Path, *, progress: bool = False) -> CheckReport:
    """Verify every chunk of every array of the store at ``path`` and report by split, array and chunk."""
    store = FeatureStore.open(path)
    report = CheckReport()
    for rel, kind in irregular_entries(store.path):
        report.problems.append(f"{rel}: {kind}; a store holds only directories and regular files (lintwin never "
                               "reads or writes through links or special files inside it)")
    with tqdm(desc="check", unit="chunk", disable=not progress) as bar:
        for split in store.splits():
            try:
                keys = [f"features/{n}" for n in store.networks(split)]
                keys += [k for k in ("labels", "ids") if k in store._entries(split)]
            except LintwinError as exc:
                if not isinstance(exc, UnsafePathError):
                    report.problems.append(f"{split}: {exc}")
                report.lines.append(f"{split}: BAD")
                continue
            counts = {k: _check_array(store, split, k, report, bar) for k in keys}
            sizes = {v for v in counts.values() if v is not None}
            if len(sizes) > 1:
                detail = ", ".join(f"{k}: {v}" for k, v in counts.items() if v is not None)
                report.problems.append(f"{split}: arrays have different row counts ({detail})")
            nets = [k.split("/", 1)[1] for k, v in counts.items() if k.startswith("features/") and v is not None]
            try:
                store.check_paired(split, nets)
            except LintwinError as exc:
                report.problems.append(f"{split}: {exc}")
    return report
