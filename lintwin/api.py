"""The public fitting API: arrays or stores in, :class:`AffineMap` objects out.

Three layers, as in scikit-learn: :func:`accumulate_*` make :class:`Moments` in one pass,
:func:`maps_from_moments` turns them into closed-form maps, and :func:`fit` /
:func:`fit_store` validate input and dispatch on ``method``.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any, Literal

import numpy as np
from tqdm.auto import tqdm

from ._gpu import resolve_device, to_device
from ._xp import namespace, row_spans
from .affine import AffineMap
from .batches import ArrayBatches, StoreBatches
from .errors import LintwinError, ShapeError
from .metrics import FitMetrics
from .moments import Moments, check_finite, check_pair
from .solvers import AdamOptions, default_rcond, fit_adam, reduce_rank, ridge_cv, solve_affine
from .store import FeatureStore

Method = Literal["lstsq", "adam"]
Init = Literal["random", "lstsq"]

__all__ = [
    "accumulate_arrays",
    "accumulate_store",
    "evaluate",
    "evaluate_store",
    "fit",
    "fit_ridge_cv",
    "fit_store",
    "maps_from_moments",
]

_BLOCK = 8192


def accumulate_arrays(a: Any, b: Any, *, names: tuple[str, str] = ("A", "B"),
                      precision: str = "float32", block_rows: int = _BLOCK) -> Moments:
    """Joint moments of paired in-memory features (NumPy, CuPy, any array-API array)."""
    check_pair(a, b, names)
    m = Moments(int(a.shape[1]), int(b.shape[1]), names, precision)  # type: ignore[arg-type]
    for lo, hi in row_spans(int(a.shape[0]), block_rows):
        m.update(a[lo:hi, ...], b[lo:hi, ...], row_offset=lo)
    return m


def accumulate_store(store: FeatureStore, src: str, dst: str, *, split: str = "train",
                     precision: str = "float32", device: str = "auto", block_rows: int | None = None,
                     progress: bool = True) -> Moments:
    """Joint moments of two networks' features in one streaming pass over ``split``."""
    device = resolve_device(device)
    dims = (int(store.info(split, src)["dim"]), int(store.info(split, dst)["dim"]))
    m = Moments(dims[0], dims[1], (src, dst), precision)  # type: ignore[arg-type]
    n = store.rows(split)
    with tqdm(total=n, desc=f"moments {split}", unit="rows", unit_scale=True, disable=not progress) as bar:
        for lo, (a, b) in store.iter_blocks(split, [src, dst], block_rows=block_rows):
            m.update(to_device(a, device), to_device(b, device), row_offset=lo)
            bar.update(a.shape[0])
    return m


def maps_from_moments(m: Moments, *, ridge: float | Sequence[float] = 0.0, both: bool = False,
                      rcond: float | None = None, rank: int | None = None) -> list[AffineMap]:
    """Closed-form map src→dst (and dst→src with ``both``) from one accumulator.

    ``ridge`` is one λ or one per direction; ``rank`` makes each map the best map of that rank.
    """
    src, dst = m.names
    specs = [(src, dst, *m.oriented(False))]
    if both:
        specs.append((dst, src, *m.oriented(True)))
    ridges = [float(ridge)] * 2 if isinstance(ridge, (int, float)) else [float(r) for r in ridge]
    maps = []
    for (s, d, sxx, sxy, _, mx, my), lam in zip(specs, ridges):
        t0 = time.perf_counter()
        w, b, info = solve_affine(sxx, sxy, mx, my, m.n, ridge=lam, label=f"{s}→{d}",
                                  rcond=default_rcond(m.precision) if rcond is None else rcond)
        if rank is not None:
            w = reduce_rank(w, sxx, rank)
            b = my - w @ mx
            info["map_rank"] = rank
        info["solve_seconds"] = time.perf_counter() - t0
        options = {"ridge": lam, "precision": m.precision} | ({"rank": rank} if rank is not None else {})
        maps.append(AffineMap(w, b, src=s, dst=d, method="lstsq", n_train=m.n, stats=info, options=options))
    return maps


def fit_ridge_cv(store: FeatureStore, src: str, dst: str, *, split: str = "train", folds: int = 5,
                 precision: str = "float32", device: str = "auto", both: bool = False, rank: int | None = None,
                 progress: bool = True, target_heads: dict[str, Any] | None = None) -> list[AffineMap]:
    """Closed-form maps with λ chosen per direction by K-fold CV over images, from one pass.

    λ minimises the held-out feature error, computed from the fold moments alone; when
    ``target_heads`` maps a target network's name to its head, that direction's λ instead
    maximises held-out top-1 agreement with the target network (one more pass per fold).
    """
    from .folds import accumulate_folds, agreement_path, training_moments

    fold_moments = accumulate_folds(store, src, dst, k=folds, split=split, precision=precision, device=device,
                                    progress=progress)
    cvs = [ridge_cv(fold_moments, reverse=r) for r in ([False, True] if both else [False])]
    for cv, reverse in zip(cvs, (False, True)):
        head = (target_heads or {}).get(src if reverse else dst)
        if head is not None:
            cv.choose_by_agreement(agreement_path(store, src, dst, fold_moments, cv.lambdas, head, split=split,
                                                  reverse=reverse))
    maps = maps_from_moments(training_moments(fold_moments, None), ridge=[cv.chosen for cv in cvs],
                             both=both, rank=rank)
    for mp, cv in zip(maps, cvs):
        mp.stats["ridge_cv"] = cv.as_dict()
        mp.options["ridge"] = "auto"
        mp.options["chosen_ridge"] = cv.chosen
        mp.options["folds"] = folds
    return maps


def _check_method(method: str, init: str) -> None:
    if method not in ("lstsq", "adam"):
        raise LintwinError(f"method must be 'lstsq' or 'adam', got {method!r}")
    if init not in ("random", "lstsq"):
        raise LintwinError(f"init must be 'random' or 'lstsq', got {init!r}")


def _adam_maps(starts: list[AffineMap], batches: list, like: list, adam: AdamOptions, init: str,
               progress: bool, ridge: float | str, precision: str) -> list[AffineMap]:
    out = []
    for start, next_batch, ref in zip(starts, batches, like):
        t0 = time.perf_counter()
        w, b, curve = fit_adam(next_batch, src_dim=start.src_dim, dst_dim=start.dst_dim, options=adam,
                               like=ref, init=(start.weight, start.bias) if init == "lstsq" else None,
                               progress=progress, desc=f"adam {start.name}")
        options = {**adam.as_dict(), "init": init, "precision": precision}
        if init == "lstsq":
            options["ridge"] = ridge
        out.append(AffineMap(w, b, src=start.src, dst=start.dst, method="adam", n_train=start.n_train,
                             options=options, loss_curve=curve,
                             stats={"adam_seconds": time.perf_counter() - t0, "final_loss": float(curve[-1])}))
    return out


def fit(a: Any, b: Any, *, method: Method = "lstsq", ridge: float = 0.0, precision: str = "float32",
        both: bool = False, names: tuple[str, str] = ("A", "B"), adam: AdamOptions | None = None,
        init: Init = "random", progress: bool = False) -> AffineMap | tuple[AffineMap, AffineMap]:
    """Fit the affine map from features ``a`` to features ``b`` (and back with ``both``).

    ``a`` and ``b`` are paired (rows x dim) arrays of one namespace (NumPy, CuPy, ...).
    Returns one map, or ``(map_a_to_b, map_b_to_a)`` with ``both``.
    """
    _check_method(method, init)
    check_pair(a, b, names)
    if a.shape[0] == 0:
        raise ShapeError("no rows to fit on")
    m = accumulate_arrays(a, b, names=names, precision=precision)
    maps = maps_from_moments(m, ridge=ridge, both=both)
    if method == "adam":
        adam = adam or AdamOptions()
        xp = namespace(a, b)
        work = xp.float64 if precision == "float64" else xp.float32
        a_w, b_w = xp.astype(a, work), xp.astype(b, work)
        pairs = [(a_w, b_w), (b_w, a_w)][: len(maps)]
        batches = [ArrayBatches(x, y, adam.batch, adam.seed) for x, y in pairs]
        maps = _adam_maps(maps, batches, [x for x, _ in pairs], adam, init, progress, ridge, precision)
    return (maps[0], maps[1]) if both else maps[0]


def fit_store(store: FeatureStore, src: str, dst: str, *, split: str = "train", method: Method = "lstsq",
              ridge: float | str = 0.0, precision: str = "float32", device: str = "auto", both: bool = False,
              adam: AdamOptions | None = None, init: Init = "random", block_rows: int | None = None,
              progress: bool = True, dask_client: Any = None, rank: int | None = None,
              folds: int = 5, target_heads: dict[str, Any] | None = None) -> list[AffineMap]:
    """Fit maps between networks ``src`` and ``dst`` of a store, streaming its ``split``.

    Returns ``[src→dst]`` or, with ``both``, ``[src→dst, dst→src]``. Maps record the
    source models' hashes from the store's metadata. With ``dask_client`` (a
    ``distributed.Client``) the moments are accumulated on its workers. ``ridge="auto"``
    chooses λ by ``folds``-fold cross-validation over images (by top-1 agreement where
    ``target_heads`` has the target's head); ``rank`` limits the map's rank.
    """
    _check_method(method, init)
    if dask_client is not None and method != "lstsq":
        raise LintwinError("--dask runs the closed-form accumulation; use it with --method lstsq")
    if isinstance(ridge, str) and ridge != "auto":
        raise LintwinError(f"ridge must be a number >= 0 or 'auto', got {ridge!r}")
    if ridge == "auto" and dask_client is not None:
        raise LintwinError("--ridge auto accumulates fold moments on one machine; drop --dask")
    worker_device = device  # each Dask worker resolves "auto" for itself
    device = resolve_device(device)
    if store.rows(split) == 0:
        raise ShapeError(f"split {split!r} has no rows")
    if ridge == "auto" and (method == "lstsq" or init == "lstsq"):
        t0 = time.perf_counter()
        maps = fit_ridge_cv(store, src, dst, split=split, folds=folds, precision=precision, device=device,
                            both=both, rank=rank, progress=progress, target_heads=target_heads)
        for mp in maps:
            mp.stats["accumulate_seconds"] = time.perf_counter() - t0
    elif method == "lstsq" or init == "lstsq":
        t0 = time.perf_counter()
        if dask_client is not None:
            from .distributed import accumulate_dask

            m = accumulate_dask(dask_client, store, src, dst, split=split, precision=precision,
                                device=worker_device, block_rows=block_rows, progress=progress)
        else:
            m = accumulate_store(store, src, dst, split=split, precision=precision, device=device,
                                 block_rows=block_rows, progress=progress)
        seconds = time.perf_counter() - t0
        maps = maps_from_moments(m, ridge=float(ridge), both=both, rank=rank)
        for mp in maps:
            mp.stats["accumulate_seconds"] = seconds
    else:
        maps = _zero_maps(store, split, src, dst, both)
    if method == "adam":
        adam = adam or AdamOptions()
        pairs = [(src, dst), (dst, src)][: len(maps)]
        batches = [StoreBatches(store, split, s, d, batch=adam.batch, seed=adam.seed, device=device)
                   for s, d in pairs]
        likes = [_like(device, precision) for _ in pairs]
        maps = _adam_maps(maps, batches, likes, adam, init, progress, ridge, precision)
    for mp in maps:
        mp.src_model_sha256 = store.info(split, mp.src).get("model_sha256")
        mp.dst_model_sha256 = store.info(split, mp.dst).get("model_sha256")
    return maps


def _like(device: str, precision: str) -> Any:
    return to_device(np.zeros(1, dtype=np.float64 if precision == "float64" else np.float32), device)


def _zero_maps(store: FeatureStore, split: str, src: str, dst: str, both: bool) -> list[AffineMap]:
    """Shape-only stand-ins that tell Adam the dimensions when it starts from random weights."""
    da, db = int(store.info(split, src)["dim"]), int(store.info(split, dst)["dim"])
    n = store.rows(split)
    out = [AffineMap(np.zeros((db, da)), np.zeros(db), src=src, dst=dst, n_train=n)]
    if both:
        out.append(AffineMap(np.zeros((da, db)), np.zeros(da), src=dst, dst=src, n_train=n))
    return out


def evaluate(mp: AffineMap, x: Any, y: Any, *, block_rows: int = _BLOCK) -> dict[str, float]:
    """Mean cosine, paper loss and R² of ``mp.apply(x)`` against ``y``."""
    check_pair(x, y, (mp.src, mp.dst))
    if y.shape[1] != mp.dst_dim:
        raise ShapeError(f"map {mp.name} gives {mp.dst_dim}-dim features, targets have {y.shape[1]}")
    acc = FitMetrics()
    for lo, hi in row_spans(int(x.shape[0]), block_rows):
        xb, yb = x[lo:hi, ...], y[lo:hi, ...]
        check_finite(xb, mp.src, lo)
        acc.update(mp.apply(xb), yb)
    return acc.result()


def evaluate_store(mp: AffineMap, store: FeatureStore, split: str, *, device: str = "auto",
                   progress: bool = True) -> dict[str, float]:
    """:func:`evaluate` streamed over a store split."""
    device = resolve_device(device)
    for name, dim in ((mp.src, mp.src_dim), (mp.dst, mp.dst_dim)):
        got = int(store.info(split, name)["dim"])
        if got != dim:
            raise ShapeError(f"map {mp.name} expects {dim}-dim features of {name}, the store has {got}")
    acc = FitMetrics()
    n = store.rows(split)
    with tqdm(total=n, desc=f"evaluate {mp.name} {split}", unit="rows", unit_scale=True,
              disable=not progress) as bar:
        for lo, (x, y) in store.iter_blocks(split, [mp.src, mp.dst]):
            x, y = to_device(x, device), to_device(y, device)
            check_finite(x, mp.src, lo)
            acc.update(mp.apply(x), y)
            bar.update(x.shape[0])
    return acc.result()
