"""The paper's experiment on a store: score mapped features with frozen heads, Table 1, Fig. 5.

For networks A and B, held-out images are classified four ways: C_A(F_A), C_B(F_B),
C_B(M_{A→B} F_A) and C_A(M_{B→A} F_B). Loss_{B,A} = Acc(C_B(F_B)) − Acc(C_B(M_{A→B} F_A))
(negative = a gain). Fig. 5 splits the images by which of {A, B, A→B} get them right.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from itertools import product
from typing import Any

import numpy as np

from ._gpu import resolve_device, to_device
from ._xp import to_numpy
from .affine import AffineMap
from .api import evaluate_store, fit_store
from .errors import MapFileError, ShapeError, StoreError
from .networks import Head
from .solvers import AdamOptions
from .store import FeatureStore

__all__ = ["CompareResult", "Regions", "compare", "predict_store", "score"]


def predict_store(store: FeatureStore, split: str, name: str, head: Head, amap: AffineMap | None = None,
                  device: str = "cpu") -> np.ndarray:
    """Top-1 predictions of ``head`` on features of ``name`` in ``split``, mapped by ``amap`` if given."""
    dim = int(store.info(split, name)["dim"])
    if amap is not None:
        if amap.src != name:
            raise MapFileError(f"this map was fitted for {amap.name}; it cannot map features of {name!r}")
        if amap.src_dim != dim:
            raise ShapeError(f"map {amap.name} expects {amap.src_dim}-dim features, the store has {dim}")
        head.check_dim(amap.dst_dim, f"map {amap.name} gives")
    else:
        head.check_dim(dim, f"features of {name!r} have")
    preds = []
    for _, (x,) in store.iter_blocks(split, [name]):
        if amap is not None:
            x = to_numpy(amap.apply(to_device(x, device))).astype(np.float32)
        preds.append(head.predict(x))
    return np.concatenate(preds) if preds else np.empty(0, np.int64)


def _labels(store: FeatureStore, split: str) -> np.ndarray:
    labels = store.labels(split)
    if labels is None:
        raise StoreError(f"split {split!r} has no labels; scoring needs them")
    if np.any(labels < 0):
        raise StoreError(f"split {split!r} has unlabelled images; scoring needs a label for every row")
    return labels


def score(store: FeatureStore, amap: AffineMap, head: Head, split: str = "val", device: str = "auto") -> dict[str, Any]:
    """Accuracy of ``head`` on mapped features, and top-1 agreement with the target network's own predictions."""
    device = resolve_device(device)
    labels = _labels(store, split)
    mapped = predict_store(store, split, amap.src, head, amap, device)
    out: dict[str, Any] = {"map": amap.name, "split": split, "images": int(len(labels)),
                           "correct": int((mapped == labels).sum()), "accuracy": float((mapped == labels).mean())}
    if amap.dst in store.networks(split):
        own = predict_store(store, split, amap.dst, head)
        out.update(own_correct=int((own == labels).sum()), own_accuracy=float((own == labels).mean()),
                   agreement=float((own == mapped).mean()))
    return out


@dataclass
class Regions:
    """Fig. 5: counts of images right under each subset of {A, B, A→B} (target network B)."""

    a: str
    b: str
    counts: dict[str, int]
    b_errors: int
    fixed_by_map: int
    broken_by_map: int

    @classmethod
    def from_hits(cls, a: str, b: str, hit_a: np.ndarray, hit_b: np.ndarray, hit_ab: np.ndarray) -> "Regions":
        counts = {}
        for ra, rb, rab in product((True, False), repeat=3):
            key = "".join(["A" if ra else "-", "B" if rb else "-", "M" if rab else "-"])
            counts[key] = int(np.sum((hit_a == ra) & (hit_b == rb) & (hit_ab == rab)))
        return cls(a, b, counts, int(np.sum(~hit_b)), int(np.sum(~hit_b & hit_ab)), int(np.sum(hit_b & ~hit_ab)))


@dataclass
class CompareResult:
    a: str
    b: str
    method: str
    fit_split: str
    eval_split: str
    images: int
    table: list[dict[str, Any]]
    regions: list[Regions]
    feature_metrics: dict[str, dict[str, float]] = field(default_factory=dict)
    maps: list[dict[str, Any]] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def compare(store: FeatureStore, a: str, b: str, head_a: Head, head_b: Head, *, method: str = "lstsq",
            ridge: float | str = 0.0, precision: str = "float32", device: str = "auto", adam: AdamOptions | None = None,
            init: str = "random", fit_split: str = "train", eval_split: str = "val",
            progress: bool = True, dask_client: Any = None, rank: int | None = None,
            folds: int = 5) -> tuple[CompareResult, list[AffineMap]]:
    """Fit M_{A→B} and M_{B→A} on ``fit_split`` and score all four configurations on ``eval_split``."""
    device = resolve_device(device)
    for name in (a, b):
        for sp in (fit_split, eval_split):
            store.features(sp, name)  # clear errors for unknown/incomplete names and splits
    head_a.check_dim(int(store.info(eval_split, a)["dim"]), f"features of {a!r} have")
    head_b.check_dim(int(store.info(eval_split, b)["dim"]), f"features of {b!r} have")
    labels = _labels(store, eval_split)
    ab, ba = fit_store(store, a, b, split=fit_split, method=method, ridge=ridge,  # type: ignore[arg-type]
                       precision=precision, device=device, both=True, adam=adam, init=init,  # type: ignore[arg-type]
                       progress=progress, dask_client=dask_client, rank=rank, folds=folds,
                       target_heads={a: head_a, b: head_b})
    pred_a = predict_store(store, eval_split, a, head_a)
    pred_b = predict_store(store, eval_split, b, head_b)
    pred_ab = predict_store(store, eval_split, a, head_b, ab, device)
    pred_ba = predict_store(store, eval_split, b, head_a, ba, device)
    n = len(labels)
    hit = {k: p == labels for k, p in (("a", pred_a), ("b", pred_b), ("ab", pred_ab), ("ba", pred_ba))}

    def row(desc: str, mapping: str, h: np.ndarray, own: np.ndarray | None) -> dict[str, Any]:
        r = {"description": desc, "mapping": mapping, "correct": int(h.sum()), "percent": 100.0 * float(h.mean())}
        r["loss"] = None if own is None else 100.0 * float(own.mean() - h.mean())
        return r

    table = [
        row(a, f"C_{a}(F_{a})", hit["a"], None),
        row(b, f"C_{b}(F_{b})", hit["b"], None),
        row(f"{a}→{b}", f"C_{b}(M_{a}→{b} F_{a})", hit["ab"], hit["b"]),
        row(f"{b}→{a}", f"C_{a}(M_{b}→{a} F_{b})", hit["ba"], hit["a"]),
    ]
    table[2]["agreement"] = float((pred_ab == pred_b).mean())
    table[3]["agreement"] = float((pred_ba == pred_a).mean())
    regions = [Regions.from_hits(a, b, hit["a"], hit["b"], hit["ab"]),
               Regions.from_hits(b, a, hit["b"], hit["a"], hit["ba"])]
    metrics = {m.name: evaluate_store(m, store, eval_split, device=device, progress=False) for m in (ab, ba)}
    maps_info = [{"map": m.name, "method": m.method, "n_train": m.n_train, "options": m.options,
                  "stats": m.stats} for m in (ab, ba)]
    result = CompareResult(a, b, method, fit_split, eval_split, n, table, regions, metrics, maps_info)
    return result, [ab, ba]
