"""Many networks at once: every ordered pair's map from one pass, scored in one more pass.

As in the follow-up paper (McNeely-White et al., "Exploring the interchangeability of CNN
embedding spaces"): the joint moments of N networks' features, accumulated in one streaming
pass over the fitting split, hold every pair's moments as sub-blocks, so all N(N−1) closed-form
maps cost one pass plus N(N−1)/2 small solves. One pass over the evaluation split then scores
every mapped configuration with every target head: the N×N accuracy and loss matrices, top-1
agreement and, per ordered pair, the Fig. 5 counts. Maps from the heads alone (no images) are
scored alongside as a separate, labelled set: they reproduce the source network's logits, so
their accuracy measures the heads, not whether the features agree.
"""

from __future__ import annotations

import itertools
import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..affine import AffineMap
from ..api import fit_store
from ..core.distributed import accumulate_dask
from ..core.driver import accumulate, accumulate_folds
from ..core.folds import image_folds
from ..core.memory import available_for, human_bytes, moments_bytes
from ..core.moments import Moments
from ..core.params import AdamOptions, FitSettings, parse_bytes
from ..core.placement import DEFAULT_DEVICE, Placement, placement
from ..core.safe_paths import checked_path
from ..errors import LintwinError, ModelError, StoreError
from ..measures.similarity import SideFactors, similarity
from ..networks.head_maps import head_map, read_affine_head
from ..networks.onnx_models import Head, NetworkSpec, file_sha256
from ..solvers import fit_ridge_cv, maps_from_moments
from ..storage.source import StoreSource, store_fingerprint
from ..storage.store import FeatureStore
from .compare import Regions
from .result_views import StudyView
from .scoring import Config, score_pass

__all__ = ["StudyResult", "load_cached_moments", "parse_bytes", "resolve_heads", "run_study", "save_cached_moments"]

METHODS = ("lstsq", "adam", "heads")


def resolve_heads(store: FeatureStore, split: str, names: Sequence[str], heads: Sequence[Path] | None,
                  models: Path | None) -> list[Path]:
    """The head ONNX file of each network: ``heads`` in order, or ``models/NAME.json`` sidecars.

    A sidecar's backbone must be the model whose features the store holds (same SHA-256),
    and a head given directly must not belong, by its sidecar, to another network.
    """
    if heads:
        if len(heads) != len(names):
            raise LintwinError(f"--heads needs one head per network: {len(names)} networks, {len(heads)} heads")
        for name, head in zip(names, heads):
            try:
                owner = NetworkSpec.for_model(head).name
            except LintwinError:
                continue
            if owner != name:
                raise LintwinError(f"head {head} belongs to network {owner!r}, but is given for {name!r}")
        return [Path(h) for h in heads]
    if models is None:
        raise LintwinError("give the networks' heads: --heads (one per network, in --nets order) or --models DIR "
                           "(a folder with each network's NAME.json sidecar)")
    out = []
    for name in names:
        spec = NetworkSpec.for_model(Path(models) / f"{name}.json")
        recorded = store.info(split, name).get("model_sha256")
        if recorded and spec.backbone_path.is_file() and file_sha256(spec.backbone_path) != recorded:
            raise LintwinError(f"{spec.backbone_path} is not the model whose features the store holds for "
                               f"{name!r} (SHA-256 differs)")
        out.append(spec.head_path)
    return out


@dataclass(repr=False)
class StudyResult(StudyView):
    """Everything a study measured; :meth:`as_dict` is the JSON written next to the pictures."""

    networks: list[str]
    dims: list[int]
    method: str
    fit_split: str
    eval_split: str
    images: int
    n_train: int
    own_accuracy: list[float]
    matrices: dict[str, dict[str, list[list[float | None]]]]
    pairs: dict[str, list[dict[str, Any]]]
    moments: dict[str, Any]
    timings: dict[str, float]
    notes: list[str] = field(default_factory=list)
    similarity: dict[str, list[list[float | None]]] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return {k: getattr(self, k) for k in self.__dataclass_fields__}

    def ordered(self, kind: str) -> list[dict[str, Any]]:
        return self.pairs.get(kind, [])

    def median_loss(self, kind: str) -> float | None:
        losses = [p["loss"] for p in self.ordered(kind)]
        return float(statistics.median(losses)) if losses else None


def save_cached_moments(m: Moments, path: Path, fingerprint: dict[str, Any]) -> Path:
    """Keep a study's moments on disk with what they were made from (written atomically)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    return m.save(path, extra={"fingerprint": fingerprint})


def load_cached_moments(path: Path, fingerprint: dict[str, Any] | None = None) -> Moments | None:
    """Moments saved by :func:`save_cached_moments`; None when absent or made from other data."""
    if not path.is_file():
        return None
    try:
        m = Moments.load(path)
    except LintwinError:
        raise LintwinError(f"{path}: not a lintwin joint-moments file (damaged or of another version); delete it "
                           "to recompute") from None
    if fingerprint is not None and m.saved_extra.get("fingerprint") != fingerprint:
        return None
    return m


def _fit_moments(store: FeatureStore, names: list[str], dims: list[int], *, split: str, precision: str,
                 place: Placement, worker_device: str, out: Path, max_memory: int, progress: bool,
                 echo: Callable[[str], None], block_rows: int | None,
                 dask_client: Any = None) -> tuple[Callable[[str, str], Moments], dict[str, Any]]:
    """Joint moments in one pass when (Σd)² fits in ``max_memory``, else one pass per pair; both cached on disk."""

    def moments_of(nets: list[str]) -> Moments:
        source = StoreSource(store, split, nets, block_rows=block_rows)
        if dask_client is not None:
            return accumulate_dask(dask_client, source, precision=precision, device=worker_device,  # type: ignore[arg-type]
                                   progress=progress)
        return accumulate(source, placement=place, precision=precision, progress=progress,  # type: ignore[arg-type]
                          desc=f"joint moments {split} ({len(nets)} networks)")

    need = moments_bytes(dims)
    info: dict[str, Any] = {"joint_bytes": need, "max_memory": max_memory, "sum_dims": int(sum(dims))}
    cache = checked_path(out, "moments", what="the --out folder")  # the cache never writes through a link
    if need <= max_memory:
        echo(f"joint moments of {len(names)} networks: Σd = {sum(dims)}, about {human_bytes(need)} with temporaries "
             f"(within the budget of {human_bytes(max_memory)}, --max-memory)")
        path = checked_path(cache, f"joint_{split}_{precision}.npz", what="the moments folder")
        fp = store_fingerprint(store, split, names)
        jm = load_cached_moments(path, fp)
        if jm is not None and jm.names == tuple(names):
            echo(f"reusing the joint moments of {len(names)} networks saved in {path}")
            info.update(mode="joint", reused=True, path=str(path), passes=0)
        else:
            t0 = time.perf_counter()
            jm = moments_of(names)
            save_cached_moments(jm, path, fp)
            info.update(mode="joint", reused=False, path=str(path), passes=1,
                        accumulate_seconds=time.perf_counter() - t0)
        return jm.pair, info
    largest = max(moments_bytes([a, b]) for a, b in itertools.combinations(dims, 2))
    echo(f"joint moments of {len(names)} networks (Σd = {sum(dims)}) need about {human_bytes(need)}, more than "
         f"--max-memory {human_bytes(max_memory)}: falling back to one pass per pair ({len(names) * (len(names) - 1) // 2} "
         "passes)")
    if largest > max_memory:
        raise LintwinError(f"even one pair's moments need about {human_bytes(largest)}, more than --max-memory "
                           f"{human_bytes(max_memory)}")
    pairs: dict[tuple[str, str], Moments] = {}
    t0 = time.perf_counter()
    reused = 0
    for a, b in itertools.combinations(names, 2):
        path = checked_path(cache, f"pair_{split}_{precision}_{a}__{b}.npz", what="the moments folder")
        fp = store_fingerprint(store, split, [a, b])
        jm = load_cached_moments(path, fp)
        if jm is None:
            jm = moments_of([a, b])
            save_cached_moments(jm, path, fp)
        else:
            reused += 1
        pairs[(a, b)] = jm
    if reused:
        echo(f"reused the saved moments of {reused} pair(s) from {cache}")
    info.update(mode="pairwise", reused=reused, passes=len(pairs) - reused, path=str(cache),
                accumulate_seconds=time.perf_counter() - t0)

    def pair(a: str, b: str) -> Moments:
        return pairs[(a, b)].pair(a, b) if (a, b) in pairs else pairs[(b, a)].pair(a, b)

    return pair, info


def _affine_heads(heads: Sequence[Path], required: bool, notes: list[str]) -> list[Any] | None:
    """The heads' weights for head-only maps; without them (not affine) a note, unless they are the method."""
    try:
        return [read_affine_head(h) for h in heads]
    except ModelError as exc:
        if required:
            raise
        notes.append(f"no head-only maps: {exc}")
        return None


def run_study(store: FeatureStore, names: Sequence[str], heads: Sequence[Path], *, method: str = "lstsq",
              ridge: float | str = 0.0, rank: int | None = None, precision: str = "float32",
              device: str | Placement = DEFAULT_DEVICE,
              split: str = "train", eval_split: str = "val", out: Path = Path("runs/study"),
              max_memory: int | None = None, block_rows: int | None = None, progress: bool = True,
              dask_client: Any = None, echo: Callable[[str], None] = print, folds: int = 5,
              adam: AdamOptions | None = None,
              init: str = "random") -> tuple[StudyResult, dict[str, dict[tuple[str, str], AffineMap]]]:
    """Fit every ordered pair's map among ``names`` and score them all with the target heads.

    ``method="lstsq"`` fits all maps from one pass of joint moments (``ridge="auto"``: λ per
    ordered pair by ``folds``-fold CV over images, from one pass of per-fold joint moments);
    ``"adam"`` runs the paper's Adam for every ordered pair (``adam`` options, ``init``);
    ``"heads"`` uses only the head-only maps.
    """
    names = list(names)
    if len(names) < 2 or len(set(names)) != len(names):
        raise LintwinError(f"a study needs at least two distinct networks, got {names}")
    if method not in METHODS:
        raise LintwinError(f"method must be one of {', '.join(METHODS)}, got {method!r}")
    if isinstance(ridge, (tuple, list)):
        raise LintwinError("a study takes one λ for every pair (or 'auto'), not one per direction")
    worker_device = device if isinstance(device, str) else device.spec  # each Dask worker resolves "auto" itself
    cfg = FitSettings(method="lstsq" if method == "heads" else method, ridge=ridge, rank=rank, folds=folds,
                      precision=precision, init=init, adam=adam or AdamOptions(),
                      device=worker_device).validated(dask=dask_client is not None)
    ridge = cfg.ridge  # type: ignore[assignment]
    place = placement(device)
    for sp in ([split] if method != "heads" else []) + [eval_split]:
        if sp not in store.splits():
            raise StoreError(f"split {sp!r} not in {store.path} (splits: {', '.join(store.splits()) or 'none'})")
        for name in names:
            store.features(sp, name)  # clear errors for unknown or half-written features
    labels = store.labels(eval_split)
    if labels is None or np.any(labels < 0):
        raise StoreError(f"split {eval_split!r} needs a label for every image to score the maps")
    dims = [int(store.info(eval_split, n)["dim"]) for n in names]
    head_objs = [Head(h) for h in heads]
    for name, dim, head in zip(names, dims, head_objs):
        head.check_dim(dim, f"features of {name!r} have")
    notes: list[str] = []
    timings: dict[str, float] = {}
    maps: dict[str, dict[tuple[str, str], AffineMap]] = {}
    moments_info: dict[str, Any] = {"mode": "none"}
    similarity: dict[str, list[list[float | None]]] = {}
    n_train = 0
    if method == "lstsq" and ridge == "auto":
        fit_dims = [int(store.info(split, n)["dim"]) for n in names]
        if fit_dims != dims:
            raise StoreError(f"feature dims differ between {split!r} {fit_dims} and {eval_split!r} {dims}")
        budget = max_memory if max_memory is not None else available_for(place) // 2
        need = folds * moments_bytes(dims)
        if need > budget:
            raise LintwinError(f"--ridge auto keeps {folds} folds of joint moments, about {human_bytes(need)}, more "
                               f"than --max-memory {human_bytes(budget)}; give a λ, fewer --folds or fewer networks")
        t0 = time.perf_counter()
        source = StoreSource(store, split, names, block_rows=block_rows)
        fold_jms = accumulate_folds(source, image_folds(store.ids(split), source.rows, folds), folds, placement=place,
                                    precision=precision, progress=progress,  # type: ignore[arg-type]
                                    desc=f"joint fold moments {split} ({len(names)} networks)")
        timings["accumulate_seconds"] = time.perf_counter() - t0
        moments_info = {"mode": "joint folds", "folds": folds, "passes": 1, "joint_bytes": need}
        t0 = time.perf_counter()
        fitted = {}
        for a, b in itertools.combinations(names, 2):
            fm = [jm.pair(a, b) for jm in fold_jms]
            n_train = sum(m.n for m in fm)
            for mp in fit_ridge_cv(fm, both=True, rank=rank):
                mp.src_model_sha256 = store.info(split, mp.src).get("model_sha256")
                mp.dst_model_sha256 = store.info(split, mp.dst).get("model_sha256")
                fitted[(mp.src, mp.dst)] = mp
        maps["fitted"] = fitted
        timings["solve_seconds"] = time.perf_counter() - t0
        merged = {}

        def pair(a: str, b: str) -> Moments:
            if (a, b) not in merged:
                merged[(a, b)] = Moments.merged([jm.pair(a, b) for jm in fold_jms])
            return merged[(a, b)]

        t0 = time.perf_counter()
        similarity = _similarity_matrices(names, pair, notes)
        timings["similarity_seconds"] = time.perf_counter() - t0
    elif method == "adam":
        t0 = time.perf_counter()
        fitted = {}
        for a, b in itertools.combinations(names, 2):
            ab, ba = fit_store(store, a, b, split=split, method="adam", ridge=ridge, precision=precision,
                               device=place, both=True, adam=adam, init=init, progress=progress,  # type: ignore[arg-type]
                               folds=folds)
            fitted[(a, b)], fitted[(b, a)] = ab, ba
            n_train = ab.n_train
        maps["fitted"] = fitted
        timings["adam_seconds"] = time.perf_counter() - t0
        notes.append(f"maps fitted with the paper's Adam ({(adam or AdamOptions()).iterations} iterations, "
                     f"{(adam or AdamOptions()).variant} variant, init {init}) for every ordered pair; no similarity "
                     "matrices (they come from the closed form's moments)")
    elif method == "lstsq":
        fit_dims = [int(store.info(split, n)["dim"]) for n in names]
        if fit_dims != dims:
            raise StoreError(f"feature dims differ between {split!r} {fit_dims} and {eval_split!r} {dims}")
        budget = max_memory if max_memory is not None else available_for(place) // 2
        pair, moments_info = _fit_moments(store, names, dims, split=split, precision=precision, place=place,
                                          worker_device=worker_device, out=out, max_memory=budget,
                                          progress=progress, echo=echo, block_rows=block_rows,
                                          dask_client=dask_client)
        t0 = time.perf_counter()
        fitted: dict[tuple[str, str], AffineMap] = {}
        for a, b in itertools.combinations(names, 2):
            m = pair(a, b)
            n_train = m.n
            for mp in maps_from_moments(m, ridge=float(ridge), both=True, rank=rank):
                mp.src_model_sha256 = store.info(split, mp.src).get("model_sha256")
                mp.dst_model_sha256 = store.info(split, mp.dst).get("model_sha256")
                fitted[(mp.src, mp.dst)] = mp
        maps["fitted"] = fitted
        timings["solve_seconds"] = time.perf_counter() - t0
        t0 = time.perf_counter()
        similarity = _similarity_matrices(names, pair, notes)
        timings["similarity_seconds"] = time.perf_counter() - t0
        if "accumulate_seconds" in moments_info:
            timings["accumulate_seconds"] = moments_info["accumulate_seconds"]
    affine = _affine_heads(heads, method == "heads", notes)
    if affine is not None and method != "heads" and len({h.classes for h in affine}) > 1:
        notes.append("no head-only maps: the heads classify different numbers of classes")
        affine = None
    if affine is not None:
        hm = {}
        for (i, a), (j, b) in itertools.permutations(enumerate(names), 2):
            hm[(a, b)] = head_map(affine[i], affine[j], a, b)
        maps["heads"] = hm
        inexact = [mp.name for mp in hm.values() if not mp.stats["exact"]]
        if inexact:
            notes.append(f"head-only maps are least-squares (not exact) for {', '.join(inexact)}: the target head has "
                         "more classes than feature dimensions")
    t0 = time.perf_counter()
    scores = _score(store, eval_split, names, head_objs, maps, place, progress, block_rows)
    timings["eval_seconds"] = time.perf_counter() - t0
    result = _assemble(names, dims, method, split, eval_split, labels, n_train, scores, maps, moments_info,
                       timings, notes)
    result.similarity = similarity
    return result, maps


SIMILARITY = ("cka", "cca_mean_rho", "svcca", "pwcca", "procrustes")


def _similarity_matrices(names: list[str], pair: Callable[[str, str], Moments],
                         notes: list[str]) -> dict[str, list[list[float | None]]]:
    """Symmetric similarity measures (:func:`lintwin.similarity.similarity`) of every pair, from the same moments."""
    mats: dict[str, list[list[float | None]]] = {k: [[None] * len(names) for _ in names] for k in SIMILARITY}
    factors = SideFactors()  # each network's block is the same in all its pairs: factored once
    for (i, a), (j, b) in itertools.combinations(enumerate(names), 2):
        try:
            values = similarity(pair(a, b), predictivity=False, factors=factors).values
        except LintwinError as exc:
            notes.append(f"no similarity of {a} and {b}: {exc}")
            continue
        for k in SIMILARITY:
            v = values.get(k)
            mats[k][i][j] = mats[k][j][i] = None if v is None else float(v)
    return mats


@dataclass
class _Scores:
    own: list[np.ndarray]
    mapped: dict[str, dict[tuple[str, str], np.ndarray]]
    metrics: dict[str, dict[tuple[str, str], Any]]


def _score(store: FeatureStore, split: str, names: list[str], heads: list[Head],
           maps: dict[str, dict[tuple[str, str], AffineMap]], place: Placement, progress: bool,
           block_rows: int | None = None) -> _Scores:
    """One pass over ``split``: own predictions, every map's predictions under the target head, feature metrics."""
    index = {n: k for k, n in enumerate(names)}
    configs = [Config(("own", k), k, heads[k]) for k in range(len(names))]
    configs += [Config((kind, key), index[key[0]], heads[index[key[1]]], mp, dst=index[key[1]])
                for kind, kmaps in maps.items() for key, mp in kmaps.items()]
    got = score_pass(store, split, names, configs, placement=place, progress=progress, block_rows=block_rows)
    return _Scores([got[("own", k)].result() for k in range(len(names))],
                   {kind: {key: got[(kind, key)].result() for key in kmaps} for kind, kmaps in maps.items()},
                   {kind: {key: got[(kind, key)].metrics for key in kmaps} for kind, kmaps in maps.items()})


def _assemble(names: list[str], dims: list[int], method: str, split: str, eval_split: str, labels: np.ndarray,
              n_train: int, scores: _Scores, maps: dict[str, dict[tuple[str, str], AffineMap]],
              moments_info: dict[str, Any], timings: dict[str, float], notes: list[str]) -> StudyResult:
    n = len(labels)
    hits_own = [p == labels for p in scores.own]
    own_acc = [100.0 * float(h.mean()) for h in hits_own]
    matrices: dict[str, dict[str, list[list[float | None]]]] = {}
    pairs: dict[str, list[dict[str, Any]]] = {}
    for kind, kmaps in maps.items():
        acc = [[own_acc[i] if i == j else None for j in range(len(names))] for i in range(len(names))]
        loss = [[0.0 if i == j else None for j in range(len(names))] for i in range(len(names))]
        agree = [[100.0 if i == j else None for j in range(len(names))] for i in range(len(names))]
        r2 = [[1.0 if i == j else None for j in range(len(names))] for i in range(len(names))]
        rows = []
        for (a, b), mp in kmaps.items():
            i, j = names.index(a), names.index(b)
            pred = scores.mapped[kind][(a, b)]
            hit = pred == labels
            reg = Regions.from_hits(a, b, hits_own[i], hits_own[j], hit)
            fm = scores.metrics[kind][(a, b)].result()
            acc[i][j] = 100.0 * float(hit.mean())
            loss[i][j] = own_acc[j] - acc[i][j]
            agree[i][j] = 100.0 * float((pred == scores.own[j]).mean())
            r2[i][j] = fm["r2"]
            rows.append({"src": a, "dst": b, "map": mp.name, "method": mp.method, "correct": int(hit.sum()),
                         "accuracy": acc[i][j], "target_own_accuracy": own_acc[j], "loss": loss[i][j],
                         "agreement": agree[i][j], "target_errors": reg.b_errors, "fixed": reg.fixed_by_map,
                         "broken": reg.broken_by_map, "regions": reg.counts, "feature_metrics": fm,
                         "map_stats": {k: v for k, v in mp.stats.items() if isinstance(v, (int, float, str, bool))}})
        matrices[kind] = {"accuracy": acc, "loss": loss, "agreement": agree, "r2": r2}
        pairs[kind] = rows
    return StudyResult(names, dims, method, split, eval_split, n, n_train, own_acc, matrices, pairs, moments_info,
                       timings, notes)
