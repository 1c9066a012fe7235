"""What a feature store holds, as one JSON-ready dict: splits, arrays, and each array's network, layer and pooling."""

from __future__ import annotations

from typing import Any

from .store import FeatureStore

__all__ = ["store_summary"]

_LAYER_KEYS = ("tensor", "op", "shape", "kind", "channels", "grid", "pooling", "rows_per_image")


def _array(store: FeatureStore, split: str, name: str) -> dict[str, Any]:
    info = store.info(split, name)
    layer = info.get("layer") if isinstance(info.get("layer"), dict) else None
    out = {"name": name, "dim": int(info["dim"]), "rows": int(info["rows"]),
           "rows_written": int(info.get("rows_written") or 0), "chunk_rows": int(info["chunk_rows"])}
    out["complete"] = out["rows_written"] == out["rows"]
    # arrays of layers (extract --layers) name their network; a backbone's or an imported array is its network
    out["network"] = layer.get("network", name) if layer else name
    out["layer"] = {k: layer.get(k) for k in _LAYER_KEYS} if layer else None
    out["pooling"] = layer.get("pooling") if layer else None
    return out


def store_summary(store: FeatureStore) -> dict[str, Any]:
    """Every split (rows, label classes) and every array (shape, completeness, network, layer, pooling)."""
    splits = []
    for split in store.splits():
        labels = store.labels(split)
        splits.append({"name": split, "rows": store.rows(split),
                       "classes": None if labels is None else len(set(labels.tolist())),
                       "arrays": [_array(store, split, n) for n in store.networks(split)]})
    return {"store": str(store.path), "splits": splits}
