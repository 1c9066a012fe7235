"""Record xarray's dimension names and coordinates in a store written before lintwin recorded them.

Metadata only: each array's ``zarr.json`` gains ``dimension_names`` (and the labels their
``coordinates`` attribute, :func:`~lintwin.storage.layout.xarray_attrs`), rewritten atomically under
the write locks of every array, after the checks every reader applies. Chunks, checksums and counts
are not touched, so what ``lintwin check`` reports is the same before and after, and an older lintwin
still reads the store. Every array is checked and locked before the first is rewritten, so a refused
upgrade changes nothing.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from ..core.files import atomic_write
from ..core.safe_paths import checked_path
from .layout import check_array_meta, dimension_names, read_meta, xarray_attrs
from .locks import WriteLocks
from .store import FeatureStore

__all__ = ["upgrade_store"]


def _arrays(store: FeatureStore) -> list[tuple[str, str, str, str, str | None, str]]:
    """``(split, lock key, path below the store, kind, network, what)`` of every array of the store."""
    out = []
    for split in store.splits():
        for net in store.networks(split):
            out.append((split, f"features.{net}", f"{split}/features/{net}", "features", net,
                        f"features of {net!r} in split {split!r}"))
        for key in ("labels", "ids"):
            if checked_path(store.path, f"{split}/{key}").exists():
                out.append((split, key, f"{split}/{key}", key, None, f"{key} of split {split!r}"))
    return out


def _upgraded(meta: dict[str, Any], kind: str, name: str | None) -> dict[str, Any] | None:
    """``meta`` with the dimension names and coordinate attributes recorded, or None when it has them."""
    dims, attrs = dimension_names(kind, name), xarray_attrs(kind)
    if meta.get("dimension_names") == dims and all(meta["attributes"].get(k) == v for k, v in attrs.items()):
        return None
    return {**meta, "attributes": {**meta["attributes"], **attrs}, "dimension_names": dims}


def upgrade_store(path: str | Path) -> list[str]:
    """Add the xarray dimension names and coordinates to every array of the store at ``path`` lacking them.

    Returns the arrays rewritten (paths below the store); an empty list when every array had them.
    Refuses (changing nothing) a store with an array that is not one lintwin wrote, a link inside it,
    or an array another process is writing.
    """
    store = FeatureStore.open(path, mode="r+")
    arrays = _arrays(store)
    for _, _, rel, kind, name, what in arrays:  # every array checked before the first is rewritten
        check_array_meta(read_meta(checked_path(store.path, rel, tree=True), what), kind, what, name)
    locks = WriteLocks(store.path)
    done = []
    try:
        for split, key, *_ in arrays:  # every lock first: an array another process writes refuses the whole upgrade
            locks.acquire(split, key)
        for split, key, rel, kind, name, what in arrays:
            node = checked_path(store.path, rel, tree=True)
            meta = read_meta(node, what)  # again, now that no one else writes it
            check_array_meta(meta, kind, what, name)
            new = _upgraded(meta, kind, name)
            if new is not None:
                text = json.dumps(new, indent=2, ensure_ascii=False).encode()
                atomic_write(node / "zarr.json", lambda fh, text=text: fh.write(text))
                done.append(rel)
    finally:
        locks.release_all()
        store.close()
    return done
