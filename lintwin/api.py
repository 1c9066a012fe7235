"""The public fitting API: arrays or stores in, :class:`AffineMap` objects out.

Three layers, as in scikit-learn: ``accumulate_*`` make :class:`Moments` in one pass (through the
one pass driver, :mod:`lintwin.core.driver`), :func:`maps_from_moments` turns them into closed-form
maps, and :func:`fit` / :func:`fit_store` validate their settings once (:class:`FitSettings`) and
dispatch on ``method``. The device is resolved once here, at the boundary, into a
:class:`~lintwin.core.placement.Placement` that every pass below receives.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any, Literal

import numpy as np

from .affine import AffineMap
from .core.distributed import accumulate_dask
from .core.driver import ArraySource, accumulate, run_pass
from .core.driver import accumulate_folds as accumulate_fold_source
from .core.fit_metrics import MapMetricsSink
from .core.folds import image_folds
from .core.moments import Moments, check_pair
from .core.params import AdamOptions, FitSettings, check_rank
from .core.placement import Placement, placement
from .core.xp import namespace
from .errors import LintwinError, ShapeError
from .solvers import RidgeCV, fit_adam, fit_ridge_cv, maps_from_moments
from .solvers.agreement import agreement_path
from .storage.batches import ArrayBatches, StoreBatches
from .storage.source import StoreSource
from .storage.store import FeatureStore

Method = Literal["lstsq", "adam"]
Init = Literal["random", "lstsq"]
Criterion = Literal["feature-error", "agreement"]

__all__ = [
    "accumulate_arrays",
    "accumulate_folds",
    "accumulate_folds_arrays",
    "accumulate_store",
    "evaluate",
    "evaluate_store",
    "evaluate_store_maps",
    "fit",
    "fit_ridge_cv",
    "fit_store",
    "maps_from_moments",
]

_BLOCK = 8192


def accumulate_arrays(a: Any, b: Any, *, names: tuple[str, str] = ("A", "B"),
                      precision: str = "float32", block_rows: int = _BLOCK, kernel: bool = False) -> Moments:
    """Joint moments of paired in-memory features (NumPy, CuPy, any array-API array).

    NaN/Inf are detected once at the end (no device sync per block) and then located by row.
    """
    check_pair(a, b, names)
    return accumulate(ArraySource([a, b], names, block_rows), precision=precision, kernel=kernel)  # type: ignore[arg-type]


def accumulate_store(store: FeatureStore, src: str, dst: str, *, split: str = "train",
                     precision: str = "float32", device: str | Placement = "auto", block_rows: int | None = None,
                     progress: bool = True, kernel: bool = False) -> Moments:
    """Joint moments of two networks' features in one streaming pass over ``split``."""
    source = StoreSource(store, split, [src, dst], block_rows=block_rows)
    return accumulate(source, placement=placement(device), precision=precision, kernel=kernel,  # type: ignore[arg-type]
                      progress=progress, desc=f"moments {split}")


def accumulate_folds(store: FeatureStore, src: str, dst: str, *, k: int = 5, split: str = "train",
                     precision: str = "float32", device: str | Placement = "auto", seed: int = 0,
                     progress: bool = True, kernel: bool = False, block_rows: int | None = None) -> list[Moments]:
    """One streaming pass: the moments of each of ``k`` image folds of ``split`` (``kernel``: with kernel sums)."""
    source = StoreSource(store, split, [src, dst], block_rows=block_rows)
    folds = image_folds(store.ids(split), source.rows, k, seed)
    return accumulate_fold_source(source, folds, k, placement=placement(device), precision=precision,  # type: ignore[arg-type]
                                  kernel=kernel, progress=progress, desc=f"fold moments {split}")


def accumulate_folds_arrays(a: Any, b: Any, ids: np.ndarray | None, *, k: int = 5,
                            names: tuple[str, str] = ("A", "B"), precision: str = "float32",
                            seed: int = 0, block_rows: int = _BLOCK) -> list[Moments]:
    """:func:`accumulate_folds` for paired features in memory, any namespace (``ids`` give the images)."""
    check_pair(a, b, names)
    folds = image_folds(ids, int(a.shape[0]), k, seed)
    return accumulate_fold_source(ArraySource([a, b], names, block_rows), folds, k, precision=precision)  # type: ignore[arg-type]


def _adam_maps(starts: list[AffineMap] | None, pairs: list[tuple[str, str, int, int]], batches: list,
               like: list, adam: AdamOptions, progress: bool, ridge: Any, precision: str,
               n_train: int) -> list[AffineMap]:
    """Adam maps for each ``(src, dst, src_dim, dst_dim)``, from random weights or the closed-form ``starts``."""
    out = []
    for k, ((src, dst, d_src, d_dst), next_batch, ref) in enumerate(zip(pairs, batches, like)):
        start = starts[k] if starts is not None else None
        t0 = time.perf_counter()
        w, b, curve = fit_adam(next_batch, src_dim=d_src, dst_dim=d_dst, options=adam, like=ref,
                               init=(start.weight, start.bias) if start is not None else None,
                               progress=progress, desc=f"adam {src}→{dst}")
        options = {**adam.as_dict(), "init": "lstsq" if start is not None else "random", "precision": precision}
        if start is not None:
            options["ridge"] = ridge
        out.append(AffineMap(w, b, src=src, dst=dst, method="adam", n_train=n_train, options=options,
                             loss_curve=curve,
                             stats={"adam_seconds": time.perf_counter() - t0, "final_loss": float(curve[-1])}))
    return out


def _result(maps: list[AffineMap], both: bool) -> AffineMap | tuple[AffineMap, AffineMap]:
    return (maps[0], maps[1]) if both else maps[0]


def fit(a: Any, b: Any, *, method: Method = "lstsq", ridge: float | str = 0.0, rank: int | None = None,
        folds: int = 5, precision: str = "float32", both: bool = False, names: tuple[str, str] = ("A", "B"),
        adam: AdamOptions | None = None, init: Init = "random", ids: Any = None,
        progress: bool = False) -> AffineMap | tuple[AffineMap, AffineMap]:
    """Fit the affine map from features ``a`` to features ``b`` (and back with ``both``).

    ``a`` and ``b`` are paired (rows x dim) arrays of one namespace (NumPy, CuPy, ...).
    ``ridge="auto"`` chooses λ by ``folds``-fold CV (over images when ``ids`` name them:
    rows ``img#v0``, ``img#v1`` of one image share a fold); ``rank`` limits the map's rank.
    Returns one map, or ``(map_a_to_b, map_b_to_a)`` with ``both`` -- as :func:`fit_store`.
    """
    cfg = FitSettings(method=method, ridge=ridge, rank=rank, folds=folds, precision=precision, init=init,
                      adam=adam or AdamOptions()).validated()
    check_pair(a, b, names)
    if a.shape[0] == 0:
        raise ShapeError("no rows to fit on")
    check_rank(rank, (int(a.shape[1]), int(b.shape[1])))
    maps: list[AffineMap] = []
    if cfg.closed_form:
        if cfg.ridge == "auto":
            fm = accumulate_folds_arrays(a, b, ids, k=cfg.folds, names=names, precision=cfg.precision)
            maps = fit_ridge_cv(fm, both=both, rank=rank)
        else:
            m = accumulate_arrays(a, b, names=names, precision=cfg.precision)
            maps = maps_from_moments(m, ridge=cfg.ridge, both=both, rank=rank)  # type: ignore[arg-type]
    if cfg.method == "adam":
        xp = namespace(a, b)
        work = xp.float64 if cfg.precision == "float64" else xp.float32
        a_w = a if a.dtype == work else xp.astype(a, work)
        b_w = b if b.dtype == work else xp.astype(b, work)
        da, db = int(a.shape[1]), int(b.shape[1])
        pairs = [(names[0], names[1], da, db), (names[1], names[0], db, da)][: 2 if both else 1]
        data = [(a_w, b_w), (b_w, a_w)][: len(pairs)]
        batches = [ArrayBatches(x, y, cfg.adam.batch, cfg.adam.seed) for x, y in data]
        maps = _adam_maps(maps if cfg.init == "lstsq" else None, pairs, batches, [x for x, _ in data], cfg.adam,
                          progress, cfg.ridge, cfg.precision, int(a.shape[0]))
    return _result(maps, both)


def fit_store(store: FeatureStore, src: str, dst: str, *, split: str = "train", method: Method = "lstsq",
              ridge: float | str | Sequence[float] = 0.0, precision: str = "float32",
              device: str | Placement = "auto", both: bool = False, adam: AdamOptions | None = None,
              init: Init = "random", block_rows: int | None = None, progress: bool = True, dask_client: Any = None,
              rank: int | None = None, folds: int = 5, ridge_criterion: Criterion = "feature-error",
              target_heads: dict[str, Any] | None = None) -> AffineMap | tuple[AffineMap, AffineMap]:
    """Fit maps between networks ``src`` and ``dst`` of a store, streaming its ``split``.

    Returns the map src→dst or, with ``both``, ``(src→dst, dst→src)`` -- as :func:`fit`.
    Maps record the source models' hashes from the store's metadata. With ``dask_client``
    (a ``distributed.Client``) the moments are accumulated on its workers. ``ridge`` is one λ,
    one per direction, or ``"auto"``: chosen by ``folds``-fold CV over images, by held-out
    feature error or (``ridge_criterion="agreement"``, with ``target_heads`` mapping each target
    network's name to its head) by top-1 agreement (scored on ``device`` when the heads can run there,
    ``on_device``; else on the CPU); ``rank`` limits the map's rank.
    """
    worker_device = device if isinstance(device, str) else device.spec  # each Dask worker resolves "auto" itself
    cfg = FitSettings(method=method, ridge=ridge if isinstance(ridge, (str, int, float)) else tuple(ridge),
                      rank=rank, folds=folds, precision=precision, init=init, ridge_criterion=ridge_criterion,
                      adam=adam or AdamOptions(), device=worker_device).validated(dask=dask_client is not None)
    place = placement(device)
    if store.rows(split) == 0:
        raise ShapeError(f"split {split!r} has no rows")
    source = StoreSource(store, split, [src, dst], block_rows=block_rows)
    dims = dict(zip((src, dst), source.dims))
    check_rank(rank, source.dims)  # type: ignore[arg-type]
    maps: list[AffineMap] = []
    t0 = time.perf_counter()
    if cfg.closed_form and cfg.ridge == "auto":
        fold_of_row = image_folds(store.ids(split), source.rows, cfg.folds)
        fm = accumulate_fold_source(source, fold_of_row, cfg.folds, placement=place, precision=cfg.precision,  # type: ignore[arg-type]
                                    progress=progress, desc=f"fold moments {split}")

        def agreement(cv: RidgeCV, reverse: bool) -> np.ndarray:
            head = (target_heads or {}).get(src if reverse else dst)
            if head is None:
                raise LintwinError("the 'agreement' ridge criterion needs the target network's head")
            return agreement_path(source, fold_of_row, fm, cv.lambdas, head, reverse=reverse, progress=progress,
                                  place=place if getattr(head, "on_device", False) else None)

        maps = fit_ridge_cv(fm, both=both, rank=rank, agreement=agreement, criterion=cfg.ridge_criterion)
    elif cfg.closed_form:
        if dask_client is not None:
            m = accumulate_dask(dask_client, source, precision=cfg.precision, device=worker_device,  # type: ignore[arg-type]
                                progress=progress)
        else:
            m = accumulate(source, placement=place, precision=cfg.precision, progress=progress,  # type: ignore[arg-type]
                           desc=f"moments {split}")
        maps = maps_from_moments(m, ridge=cfg.ridge, both=both, rank=rank)  # type: ignore[arg-type]
    for mp in maps:
        mp.stats["accumulate_seconds"] = time.perf_counter() - t0
    if cfg.method == "adam":
        names = [(src, dst), (dst, src)][: 2 if both else 1]
        pairs = [(s, d, dims[s], dims[d]) for s, d in names]
        batches = [StoreBatches(store, split, s, d, batch=cfg.adam.batch, seed=cfg.adam.seed, place=place)
                   for s, d in names]
        likes = [place.put(np.zeros(1, dtype=np.float64 if cfg.precision == "float64" else np.float32))
                 for _ in names]
        maps = _adam_maps(maps if cfg.init == "lstsq" else None, pairs, batches, likes, cfg.adam, progress,
                          cfg.ridge, cfg.precision, store.rows(split))
    for mp in maps:
        mp.src_model_sha256 = store.info(split, mp.src).get("model_sha256")
        mp.dst_model_sha256 = store.info(split, mp.dst).get("model_sha256")
    return _result(maps, both)


def evaluate(mp: AffineMap, x: Any, y: Any, *, block_rows: int = _BLOCK) -> dict[str, float]:
    """Mean cosine, paper loss and R² of ``mp.apply(x)`` against ``y`` (NaN/Inf refused, rows named)."""
    check_pair(x, y, (mp.src, mp.dst))
    if y.shape[1] != mp.dst_dim:
        raise ShapeError(f"map {mp.name} gives {mp.dst_dim}-dim features, targets have {y.shape[1]}")
    sink = MapMetricsSink([mp], {mp.src: 0, mp.dst: 1})
    run_pass(ArraySource([x, y], (mp.src, mp.dst), block_rows), [sink])
    return sink.metrics[0].result(scale_free=mp.method == "adam")


def evaluate_store(mp: AffineMap, store: FeatureStore, split: str, *, device: str | Placement = "auto",
                   progress: bool = True) -> dict[str, float]:
    """:func:`evaluate` streamed over a store split."""
    return evaluate_store_maps([mp], store, split, device=device, progress=progress)[0]


def evaluate_store_maps(maps: Sequence[AffineMap], store: FeatureStore, split: str, *,
                        device: str | Placement = "auto", progress: bool = True) -> list[dict[str, float]]:
    """:func:`evaluate` of several maps (e.g. both directions) in one streaming pass over ``split``."""
    place = placement(device)
    for mp in maps:
        for name, dim in ((mp.src, mp.src_dim), (mp.dst, mp.dst_dim)):
            got = int(store.info(split, name)["dim"])
            if got != dim:
                raise ShapeError(f"map {mp.name} expects {dim}-dim features of {name}, the store has {got}")
    names = sorted({n for mp in maps for n in (mp.src, mp.dst)})
    sink = MapMetricsSink(maps, {n: k for k, n in enumerate(names)})
    label = ", ".join(mp.name for mp in maps)
    run_pass(StoreSource(store, split, names), [sink], placement=place, progress=progress,
             desc=f"evaluate {label} {split}")
    return [acc.result(scale_free=mp.method == "adam") for mp, acc in zip(maps, sink.metrics)]
