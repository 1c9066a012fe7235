"""The paper's experiment on a store: score mapped features with frozen heads, Table 1, Fig. 5.

For networks A and B, held-out images are classified four ways: C_A(F_A), C_B(F_B),
C_B(M_{A→B} F_A) and C_A(M_{B→A} F_B). Loss_{B,A} = Acc(C_B(F_B)) − Acc(C_B(M_{A→B} F_A))
(negative = a gain). Fig. 5 splits the images by which of {A, B, A→B} get them right.
"""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass, field
from itertools import product
from typing import Any

import numpy as np

from ..affine import AffineMap
from ..api import fit_store
from ..core.params import AdamOptions
from ..core.placement import DEFAULT_DEVICE, Placement, placement
from ..errors import LintwinError, MapFileError, ModelError, ShapeError, StoreError
from ..measures.bootstrap import bootstrap_table
from ..networks.onnx_models import Head, NetworkSpec
from ..storage.store import FeatureStore
from .hints import refuse_swapped_heads, require_eval_split
from .result_views import CompareView
from .scoring import Config, DevicePredictor, score_pass

__all__ = ["CompareResult", "Regions", "check_head", "check_map", "compare", "predict_store", "score"]


def _head_owner(head: Head) -> str | None:
    """The network named by the head's sidecar, if it has one."""
    try:
        return NetworkSpec.for_model(head.path).name
    except LintwinError:
        return None


def _recorded_head(store: FeatureStore, name: str, backbone_sha256: str | None, prefer: str) -> str | None:
    """The head sha256 recorded at extraction for ``name`` (in ``prefer`` first, then any split)."""
    for sp in [prefer] + [s for s in store.splits() if s != prefer]:
        if sp in store.splits() and name in store.networks(sp):
            info = store.info(sp, name)
            if info.get("head_sha256") and (backbone_sha256 is None or info.get("model_sha256") == backbone_sha256):
                return str(info["head_sha256"])
    return None


def check_head(store: FeatureStore, split: str, name: str, head: Head, *, backbone_sha256: str | None = None,
               dim: int | None = None) -> None:
    """Refuse a head that is not ``name``'s before scoring with it.

    The head file's sha256 must be the one recorded when ``name``'s features were extracted;
    where none was recorded (imported features), the head's sidecar must name ``name``. Its
    input must take ``dim`` features (default: those of ``name`` in ``split``) and its classes
    must cover the split's labels.
    """
    if dim is None:
        dim = int(store.info(split, name)["dim"])
    head.check_dim(dim, f"features of {name!r} have")
    recorded = _recorded_head(store, name, backbone_sha256, split)
    if recorded is not None and recorded != head.sha256:
        raise ModelError(f"{head.path.name} is not the head of {name!r}: its sha256 is {head.sha256[:12]}…, the "
                         f"store records {recorded[:12]}… for {name!r}'s head at extraction")
    owner = _head_owner(head)
    if recorded is None and owner is not None and owner != name:
        raise ModelError(f"{head.path.name} is the head of {owner!r} by its sidecar, not of {name!r}")
    labels = store.labels(split) if split in store.splits() else None
    if labels is not None and labels.size and head.classes is not None and int(labels.max()) >= head.classes:
        raise ModelError(f"{head.path.name} scores {head.classes} classes, split {split!r} has label "
                         f"{int(labels.max())}")


def check_map(store: FeatureStore, split: str, amap: AffineMap) -> None:
    """Refuse a map whose networks' backbones differ from those that produced the store's features."""
    for name, sha in ((amap.src, amap.src_model_sha256), (amap.dst, amap.dst_model_sha256)):
        if sha and name in store.networks(split):
            got = store.info(split, name).get("model_sha256")
            if got and got != sha:
                raise MapFileError(f"map {amap.name} was fitted on features of {name!r} from backbone sha256 "
                                   f"{sha[:12]}…; split {split!r} holds {name!r} features from {got[:12]}…")


def _check_config(store: FeatureStore, split: str, name: str, head: Head, amap: AffineMap | None) -> None:
    """Refuse a head or map that cannot take the features of ``name`` in ``split``."""
    dim = int(store.info(split, name)["dim"])
    if amap is not None:
        if amap.src != name:
            raise MapFileError(f"this map was fitted for {amap.name}; it cannot map features of {name!r}")
        if amap.src_dim != dim:
            raise ShapeError(f"map {amap.name} expects {amap.src_dim}-dim features, the store has {dim}")
        head.check_dim(amap.dst_dim, f"map {amap.name} gives")
    else:
        head.check_dim(dim, f"features of {name!r} have")


def predict_store(store: FeatureStore, split: str, name: str, head: Head, amap: AffineMap | None = None,
                  device: str | Placement = DEFAULT_DEVICE) -> np.ndarray:
    """Top-1 predictions of ``head`` on features of ``name`` in ``split``, mapped by ``amap`` if given."""
    _check_config(store, split, name, head, amap)
    return score_pass(store, split, [name], [Config("x", 0, head, amap)], placement=placement(device))["x"].result()


def _labels(store: FeatureStore, split: str) -> np.ndarray:
    labels = store.labels(split)
    if labels is None:
        raise StoreError(f"split {split!r} has no labels; scoring needs them")
    if np.any(labels < 0):
        raise StoreError(f"split {split!r} has unlabelled images; scoring needs a label for every row")
    return labels


def score(store: FeatureStore, amap: AffineMap, head: Head, split: str = "val",
          device: str | Placement = DEFAULT_DEVICE) -> dict[str, Any]:
    """Accuracy of ``head`` on mapped features, and top-1 agreement with the target network's own predictions."""
    place = placement(device)
    labels = _labels(store, split)
    check_map(store, split, amap)
    check_head(store, split, amap.dst, head, backbone_sha256=amap.dst_model_sha256, dim=amap.dst_dim)
    has_dst = amap.dst in store.networks(split)
    names = [amap.src] + ([amap.dst] if has_dst else [])
    store.check_paired(split, names)
    _check_config(store, split, amap.src, head, amap)
    configs = [Config("mapped", 0, head, amap)] + ([Config("own", 1, head)] if has_dst else [])
    got = score_pass(store, split, names, configs, placement=place)
    mapped = got["mapped"].result()
    out: dict[str, Any] = {"map": amap.name, "split": split, "images": len(labels),
                           "correct": int((mapped == labels).sum()), "accuracy": float((mapped == labels).mean())}
    if has_dst:
        own = got["own"].result()
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
    def from_hits(cls, a: str, b: str, hit_a: np.ndarray, hit_b: np.ndarray, hit_ab: np.ndarray) -> Regions:
        counts = {}
        for ra, rb, rab in product((True, False), repeat=3):
            key = "".join(["A" if ra else "-", "B" if rb else "-", "M" if rab else "-"])
            counts[key] = int(np.sum((hit_a == ra) & (hit_b == rb) & (hit_ab == rab)))
        return cls(a, b, counts, int(np.sum(~hit_b)), int(np.sum(~hit_b & hit_ab)), int(np.sum(hit_b & ~hit_ab)))


@dataclass(repr=False)
class CompareResult(CompareView):
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
    in_sample: bool = False
    intervals: dict[str, Any] | None = None  # paired bootstrap over evaluation images (lintwin.bootstrap)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def compare(store: FeatureStore, a: str, b: str, head_a: Head, head_b: Head, *, method: str = "lstsq",
            ridge: float | str = 0.0, precision: str = "float32", device: str | Placement = DEFAULT_DEVICE, adam: AdamOptions | None = None,
            init: str = "random", fit_split: str = "train", eval_split: str = "val",
            progress: bool = True, dask_client: Any = None, rank: int | None = None,
            folds: int = 5, in_sample: bool = False, ridge_criterion: str = "feature-error",
            bootstrap: int = 2000) -> tuple[CompareResult, list[AffineMap]]:
    """Fit M_{A→B} and M_{B→A} on ``fit_split`` and score all four configurations on ``eval_split``.

    Everything is checked before fitting: both heads belong to their networks, both splits'
    arrays are paired row by row, and the evaluation images are held out from the fitting
    images (or ``in_sample`` says a same-image table is wanted; it is then labelled so).
    """
    place = placement(device)
    if a == b:
        raise LintwinError(f"networks A and B are both {a!r}")
    require_eval_split(store, eval_split, fit_split, in_sample_option=True)
    for name in (a, b):
        for sp in (fit_split, eval_split):
            store.features(sp, name)  # clear errors for unknown/incomplete names and splits
    for sp in {fit_split, eval_split}:
        store.check_paired(sp, [a, b])
    labels = _labels(store, eval_split)
    refuse_swapped_heads(store, eval_split, a, b, head_a, head_b)
    check_head(store, eval_split, a, head_a)
    check_head(store, eval_split, b, head_b)
    if head_a.sha256 == head_b.sha256:
        raise ModelError(f"the same head file is given for {a!r} and {b!r}")
    overlap = _overlap(store, fit_split, eval_split)
    if overlap and not in_sample:
        what = "the same split" if fit_split == eval_split else f"{overlap} of its images also in {fit_split!r}"
        raise LintwinError(f"evaluating on {eval_split!r} ({what}) scores the maps on images they were fitted on, "
                           "an in-sample figure, not the held-out loss; pass --in-sample to do it anyway")
    ab, ba = fit_store(store, a, b, split=fit_split, method=method, ridge=ridge,  # type: ignore[arg-type]
                       precision=precision, device=place, both=True, adam=adam, init=init,  # type: ignore[arg-type]
                       progress=progress, dask_client=dask_client, rank=rank, folds=folds,
                       ridge_criterion=ridge_criterion,
                       target_heads={a: DevicePredictor(head_a), b: DevicePredictor(head_b)})  # type: ignore[arg-type]
    for name, head, amap in ((a, head_a, None), (b, head_b, None), (a, head_b, ab), (b, head_a, ba)):
        _check_config(store, eval_split, name, head, amap)
    scored = score_pass(store, eval_split, [a, b], [Config("a", 0, head_a), Config("b", 1, head_b),
                                                    Config("ab", 0, head_b, ab, dst=1), Config("ba", 1, head_a, ba, dst=0)],
                        placement=place, progress=progress)
    pred_a, pred_b, pred_ab, pred_ba = (scored[k].result() for k in ("a", "b", "ab", "ba"))
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
    intervals = None
    if bootstrap:
        intervals = bootstrap_table({r["description"]: h for r, h in zip(table, (hit["a"], hit["b"], hit["ab"],
                                                                                 hit["ba"]))}, n_boot=bootstrap)
        for r in table:
            ci = intervals["accuracy"][r["description"]]
            r["percent_ci"] = [ci["low"], ci["high"]]
            if r["loss"] is not None:
                ci = intervals["loss"][r["description"]]
                r["loss_ci"] = [ci["low"], ci["high"]]
    regions = [Regions.from_hits(a, b, hit["a"], hit["b"], hit["ab"]),
               Regions.from_hits(b, a, hit["b"], hit["a"], hit["ba"])]
    metrics = {m.name: scored[k].metrics.result(scale_free=m.method == "adam") for m, k in ((ab, "ab"), (ba, "ba"))}
    maps_info = [{"map": m.name, "method": m.method, "n_train": m.n_train, "options": m.options,
                  "stats": m.stats} for m in (ab, ba)]
    result = CompareResult(a, b, method, fit_split, eval_split, n, table, regions, metrics, maps_info,
                           in_sample=bool(overlap), intervals=intervals)
    return result, [ab, ba]


def _overlap(store: FeatureStore, fit_split: str, eval_split: str) -> int:
    """How many evaluation images are among the fitting images (by id, views counted once)."""
    if fit_split == eval_split:
        return store.rows(eval_split)
    fit_ids, eval_ids = store.ids(fit_split), store.ids(eval_split)
    if fit_ids is None or eval_ids is None:
        return 0
    base = {re.sub(r"#v\d+$", "", str(i)) for i in fit_ids}
    return sum(re.sub(r"#v\d+$", "", str(i)) in base for i in eval_ids)
