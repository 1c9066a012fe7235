"""The public fitting API: arrays or stores in, :class:`AffineMap` objects out.

Three layers, as in scikit-learn: :func:`accumulate_*` make :class:`Moments` in one pass,
:func:`maps_from_moments` turns them into closed-form maps, and :func:`fit` /
:func:`fit_store` validate input and dispatch on ``method``.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from typing import Any, Literal

import numpy as np
from tqdm.auto import tqdm

from .affine import AffineMap
from .core.distributed import accumulate_dask
from .core.fit_metrics import FitMetrics
from .core.folds import accumulate_folds, accumulate_folds_arrays
from .core.gpu import resolve_device, to_device
from .core.moments import Moments, check_pair, locate_nonfinite
from .core.xp import namespace, row_spans, to_numpy
from .errors import LintwinError, ShapeError
from .solvers import AdamOptions, RidgeCV, check_ridge, fit_adam, reduce_rank, ridge_cv, solve_affine
from .solvers.agreement import agreement_path
from .solvers.conditioning import constant_units
from .storage.batches import ArrayBatches, StoreBatches
from .storage.store import FeatureStore

Method = Literal["lstsq", "adam"]
Init = Literal["random", "lstsq"]
Criterion = Literal["feature-error", "agreement"]

__all__ = [
    "accumulate_arrays",
    "accumulate_store",
    "evaluate",
    "evaluate_store",
    "evaluate_store_maps",
    "fit",
    "fit_ridge_cv",
    "fit_store",
    "maps_from_moments",
    "moment_metrics",
]

_BLOCK = 8192


def accumulate_arrays(a: Any, b: Any, *, names: tuple[str, str] = ("A", "B"),
                      precision: str = "float32", block_rows: int = _BLOCK, kernel: bool = False) -> Moments:
    """Joint moments of paired in-memory features (NumPy, CuPy, any array-API array).

    NaN/Inf are detected once at the end (no device sync per block) and then located by row.
    """
    check_pair(a, b, names)
    m = Moments(int(a.shape[1]), int(b.shape[1]), names, precision, kernel=kernel)  # type: ignore[arg-type]
    spans = row_spans(int(a.shape[0]), block_rows)
    for lo, hi in spans:
        m.update(a[lo:hi, ...], b[lo:hi, ...])
    if not m.is_finite():
        locate_nonfinite(((lo, (a[lo:hi, ...], b[lo:hi, ...])) for lo, hi in spans), names)
        m.check_finite()  # finite values whose float32 products overflow
    return m


def accumulate_store(store: FeatureStore, src: str, dst: str, *, split: str = "train",
                     precision: str = "float32", device: str = "auto", block_rows: int | None = None,
                     progress: bool = True, kernel: bool = False) -> Moments:
    """Joint moments of two networks' features in one streaming pass over ``split``."""
    device = resolve_device(device)
    dims = (int(store.info(split, src)["dim"]), int(store.info(split, dst)["dim"]))
    m = Moments(dims[0], dims[1], (src, dst), precision, kernel=kernel)  # type: ignore[arg-type]
    n = store.rows(split)
    with tqdm(total=n, desc=f"moments {split}", unit="rows", unit_scale=True, disable=not progress) as bar:
        for _, (a, b) in store.iter_blocks(split, [src, dst], block_rows=block_rows):
            m.update(to_device(a, device), to_device(b, device))
            bar.update(a.shape[0])
    if not m.is_finite():
        locate_nonfinite(store.iter_blocks(split, [src, dst]), (src, dst))
        m.check_finite()
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
    ridges = [check_ridge(ridge)] * 2 if isinstance(ridge, (int, float)) else [check_ridge(r) for r in ridge]
    maps = []
    for (s, d, sxx, sxy, syy, mx, my), lam in zip(specs, ridges):
        t0 = time.perf_counter()
        w, b, info = solve_affine(sxx, sxy, mx, my, m.n, ridge=lam, label=f"{s}→{d}", precision=m.precision,
                                  rcond=rcond)
        if rank is not None:
            w = reduce_rank(w, sxx, rank, ridge=lam)
            b = my - w @ mx
            info["map_rank"] = rank
        info["solve_seconds"] = time.perf_counter() - t0
        info["train_metrics"] = moment_metrics(w, sxx, sxy, syy, my, m.n, m.precision)
        options = {"ridge": lam, "precision": m.precision} | ({"rank": rank} if rank is not None else {})
        maps.append(AffineMap(w, b, src=s, dst=d, method="lstsq", n_train=m.n, stats=info, options=options))
    return maps


def moment_metrics(weight: Any, sxx: Any, sxy: Any, syy: Any, mean_y: Any, n: int,
                   precision: str) -> dict[str, Any]:
    """Exact training R² of an affine map whose bias fits the means, from the co-moments alone.

    SSE = tr(Syy) − 2 tr(W Sxy) + tr(W Sxx W^T); R² = 1 − SSE / tr(Syy), overall
    (variance-weighted) and per target dimension (NaN for target units that are constant by the
    solver's rule). No pass over the rows is needed.
    """
    xp = namespace(weight, sxx)
    wsxy = xp.sum(weight * xp.matrix_transpose(sxy), axis=1)                  # diag(W Sxy)
    wsw = xp.sum((weight @ sxx) * weight, axis=1)                              # diag(W Sxx W^T)
    tot = xp.linalg.diagonal(syy)
    sse = xp.maximum(tot - 2.0 * wsxy + wsw, xp.zeros_like(tot))
    sse_all, tot_all = float(xp.sum(sse)), float(xp.sum(tot))
    const = constant_units(tot, mean_y, n, precision, xp=xp)
    per_dim = to_numpy(xp.where(const, xp.full_like(tot, float("nan")),
                                1.0 - sse / xp.where(const, xp.ones_like(tot), tot)))
    return {"rows": int(n), "r2": 1.0 - sse_all / tot_all if tot_all > 0 else float("nan"),
            "r2_per_dim": [float(v) for v in per_dim], "from": "moments"}


def fit_ridge_cv(fold_moments: list[Moments], *, both: bool = False, rank: int | None = None,
                 agreement: Callable[[RidgeCV, bool], np.ndarray] | None = None,
                 criterion: Criterion = "feature-error") -> list[AffineMap]:
    """Closed-form maps with λ chosen per direction by K-fold CV over images, from fold moments.

    ``criterion="feature-error"`` minimises the held-out squared feature error (from the fold
    moments alone); ``"agreement"`` maximises held-out top-1 agreement with the target network's
    head, computed by ``agreement(cv, reverse)`` (one more pass per fold).
    """
    if criterion not in ("feature-error", "agreement"):
        raise LintwinError(f"ridge criterion must be 'feature-error' or 'agreement', got {criterion!r}")
    cvs = [ridge_cv(fold_moments, reverse=r) for r in ([False, True] if both else [False])]
    if criterion == "agreement":
        if agreement is None:
            raise LintwinError("the 'agreement' ridge criterion needs the target network's head")
        for cv, reverse in zip(cvs, (False, True)):
            cv.choose_by_agreement(agreement(cv, reverse))
    maps = maps_from_moments(Moments.merged(fold_moments), ridge=[cv.chosen for cv in cvs], both=both, rank=rank)
    for mp, cv in zip(maps, cvs):
        mp.stats["ridge_cv"] = cv.as_dict()
        mp.options.update(ridge="auto", chosen_ridge=cv.chosen, folds=cv.folds, ridge_criterion=criterion)
    return maps


def _validate(method: str, init: str, ridge: Any, rank: int | None, folds: int, adam: AdamOptions | None) -> None:
    """Refuse bad settings before any work is done."""
    if method not in ("lstsq", "adam"):
        raise LintwinError(f"method must be 'lstsq' or 'adam', got {method!r}")
    if init not in ("random", "lstsq"):
        raise LintwinError(f"init must be 'random' or 'lstsq', got {init!r}")
    if isinstance(ridge, str):
        if ridge != "auto":
            raise LintwinError(f"ridge must be a number >= 0 or 'auto', got {ridge!r}")
    elif isinstance(ridge, (list, tuple)):
        [check_ridge(r) for r in ridge]
    else:
        check_ridge(ridge)
    if rank is not None and rank < 1:
        raise LintwinError(f"rank must be >= 1, got {rank}")
    if folds < 2:
        raise LintwinError(f"cross-validation needs at least 2 folds, got {folds}")
    if method == "adam" and rank is not None:
        raise LintwinError("--rank applies to the closed-form map; use --method lstsq")
    if adam is not None:
        adam.validate()


def _check_rank(rank: int | None, dim_a: int, dim_b: int) -> None:
    if rank is not None and not 1 <= rank <= min(dim_a, dim_b):
        raise LintwinError(f"rank must be between 1 and {min(dim_a, dim_b)} (the narrower network's width), "
                           f"got {rank}")


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
    _validate(method, init, ridge, rank, folds, adam)
    check_pair(a, b, names)
    if a.shape[0] == 0:
        raise ShapeError("no rows to fit on")
    _check_rank(rank, int(a.shape[1]), int(b.shape[1]))
    if method == "lstsq" or init == "lstsq":
        if ridge == "auto":
            fm = accumulate_folds_arrays(a, b, ids, k=folds, names=names, precision=precision)
            maps = fit_ridge_cv(fm, both=both, rank=rank)
        else:
            m = accumulate_arrays(a, b, names=names, precision=precision)
            maps = maps_from_moments(m, ridge=ridge, both=both, rank=rank)  # type: ignore[arg-type]
    if method == "adam":
        adam = adam or AdamOptions()
        xp = namespace(a, b)
        work = xp.float64 if precision == "float64" else xp.float32
        a_w = a if a.dtype == work else xp.astype(a, work)
        b_w = b if b.dtype == work else xp.astype(b, work)
        da, db = int(a.shape[1]), int(b.shape[1])
        pairs = [(names[0], names[1], da, db), (names[1], names[0], db, da)][: 2 if both else 1]
        data = [(a_w, b_w), (b_w, a_w)][: len(pairs)]
        batches = [ArrayBatches(x, y, adam.batch, adam.seed) for x, y in data]
        maps = _adam_maps(maps if init == "lstsq" else None, pairs, batches, [x for x, _ in data], adam, progress,
                          ridge, precision, int(a.shape[0]))
    return _result(maps, both)


def fit_store(store: FeatureStore, src: str, dst: str, *, split: str = "train", method: Method = "lstsq",
              ridge: float | str | Sequence[float] = 0.0, precision: str = "float32", device: str = "auto",
              both: bool = False, adam: AdamOptions | None = None, init: Init = "random",
              block_rows: int | None = None, progress: bool = True, dask_client: Any = None,
              rank: int | None = None, folds: int = 5, ridge_criterion: Criterion = "feature-error",
              target_heads: dict[str, Any] | None = None) -> AffineMap | tuple[AffineMap, AffineMap]:
    """Fit maps between networks ``src`` and ``dst`` of a store, streaming its ``split``.

    Returns the map src→dst or, with ``both``, ``(src→dst, dst→src)`` -- as :func:`fit`.
    Maps record the source models' hashes from the store's metadata. With ``dask_client``
    (a ``distributed.Client``) the moments are accumulated on its workers. ``ridge`` is one λ,
    one per direction, or ``"auto"``: chosen by ``folds``-fold CV over images, by held-out
    feature error or (``ridge_criterion="agreement"``, with ``target_heads`` mapping each target
    network's name to its head) by top-1 agreement; ``rank`` limits the map's rank.
    """
    _validate(method, init, ridge, rank, folds, adam)
    if dask_client is not None and method != "lstsq":
        raise LintwinError("--dask runs the closed-form accumulation; use it with --method lstsq")
    if ridge == "auto" and dask_client is not None:
        raise LintwinError("--ridge auto accumulates fold moments on one machine; drop --dask")
    worker_device = device  # each Dask worker resolves "auto" for itself
    device = resolve_device(device)
    if store.rows(split) == 0:
        raise ShapeError(f"split {split!r} has no rows")
    dims = {name: int(store.info(split, name)["dim"]) for name in (src, dst)}
    _check_rank(rank, dims[src], dims[dst])
    maps: list[AffineMap] = []
    t0 = time.perf_counter()
    if ridge == "auto" and (method == "lstsq" or init == "lstsq"):
        fm = accumulate_folds(store, src, dst, k=folds, split=split, precision=precision, device=device,
                              progress=progress)

        def agreement(cv: RidgeCV, reverse: bool) -> np.ndarray:
            head = (target_heads or {}).get(src if reverse else dst)
            if head is None:
                raise LintwinError("the 'agreement' ridge criterion needs the target network's head")
            return agreement_path(store, src, dst, fm, cv.lambdas, head, split=split, reverse=reverse)

        maps = fit_ridge_cv(fm, both=both, rank=rank, agreement=agreement, criterion=ridge_criterion)
    elif method == "lstsq" or init == "lstsq":
        if dask_client is not None:
            m = accumulate_dask(dask_client, store, src, dst, split=split, precision=precision,
                                device=worker_device, progress=progress)
        else:
            m = accumulate_store(store, src, dst, split=split, precision=precision, device=device,
                                 block_rows=block_rows, progress=progress)
        maps = maps_from_moments(m, ridge=ridge, both=both, rank=rank)  # type: ignore[arg-type]
    for mp in maps:
        mp.stats["accumulate_seconds"] = time.perf_counter() - t0
    if method == "adam":
        adam = adam or AdamOptions()
        names = [(src, dst), (dst, src)][: 2 if both else 1]
        pairs = [(s, d, dims[s], dims[d]) for s, d in names]
        batches = [StoreBatches(store, split, s, d, batch=adam.batch, seed=adam.seed, device=device)
                   for s, d in names]
        likes = [_like(device, precision) for _ in names]
        maps = _adam_maps(maps if init == "lstsq" else None, pairs, batches, likes, adam, progress, ridge, precision,
                          store.rows(split))
    for mp in maps:
        mp.src_model_sha256 = store.info(split, mp.src).get("model_sha256")
        mp.dst_model_sha256 = store.info(split, mp.dst).get("model_sha256")
    return _result(maps, both)


def _like(device: str, precision: str) -> Any:
    return to_device(np.zeros(1, dtype=np.float64 if precision == "float64" else np.float32), device)


def evaluate(mp: AffineMap, x: Any, y: Any, *, block_rows: int = _BLOCK) -> dict[str, float]:
    """Mean cosine, paper loss and R² of ``mp.apply(x)`` against ``y`` (NaN/Inf refused, rows named)."""
    check_pair(x, y, (mp.src, mp.dst))
    if y.shape[1] != mp.dst_dim:
        raise ShapeError(f"map {mp.name} gives {mp.dst_dim}-dim features, targets have {y.shape[1]}")
    acc = FitMetrics()
    spans = row_spans(int(x.shape[0]), block_rows)
    for lo, hi in spans:
        acc.update(mp.apply(x[lo:hi, ...]), y[lo:hi, ...])
    if not acc.is_finite():
        locate_nonfinite(((lo, (x[lo:hi, ...], y[lo:hi, ...])) for lo, hi in spans), (mp.src, mp.dst))
    return acc.result(scale_free=mp.method == "adam")


def evaluate_store(mp: AffineMap, store: FeatureStore, split: str, *, device: str = "auto",
                   progress: bool = True) -> dict[str, float]:
    """:func:`evaluate` streamed over a store split."""
    return evaluate_store_maps([mp], store, split, device=device, progress=progress)[0]


def evaluate_store_maps(maps: Sequence[AffineMap], store: FeatureStore, split: str, *, device: str = "auto",
                        progress: bool = True) -> list[dict[str, float]]:
    """:func:`evaluate` of several maps (e.g. both directions) in one streaming pass over ``split``."""
    device = resolve_device(device)
    for mp in maps:
        for name, dim in ((mp.src, mp.src_dim), (mp.dst, mp.dst_dim)):
            got = int(store.info(split, name)["dim"])
            if got != dim:
                raise ShapeError(f"map {mp.name} expects {dim}-dim features of {name}, the store has {got}")
    names = sorted({n for mp in maps for n in (mp.src, mp.dst)})
    accs = [FitMetrics() for _ in maps]
    n = store.rows(split)
    label = ", ".join(mp.name for mp in maps)
    with tqdm(total=n, desc=f"evaluate {label} {split}", unit="rows", unit_scale=True, disable=not progress) as bar:
        for _, blocks in store.iter_blocks(split, names):
            feats = {name: to_device(x, device) for name, x in zip(names, blocks)}
            for mp, acc in zip(maps, accs):
                acc.update(mp.apply(feats[mp.src]), feats[mp.dst])
            bar.update(blocks[0].shape[0])
    if not all(acc.is_finite() for acc in accs):
        locate_nonfinite(store.iter_blocks(split, names), names)
    return [acc.result(scale_free=mp.method == "adam") for mp, acc in zip(maps, accs)]
