"""Neighbourhood alignment of two stored networks, with its null, bootstrap and curve against sample size.

:func:`neighbours` is the API behind ``lintwin neighbours``: exact k-NN lists of both networks
(:mod:`lintwin.measures.topk`), mutual k-NN and CKNNA (:mod:`lintwin.measures.neighbours`), a
permutation null and a bootstrap over rows, and the same measures on nested random subsets of
the rows (each subset's lists computed exactly within the subset), so one sees whether a value
measured on 1,024 rows holds on all of them.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import LintwinError
from ..measures.neighbour_lists import store_lists
from ..measures.neighbours import bootstrap_mutual_knn, cknna, mutual_knn, permutation_null, self_terms
from ..measures.topk import METRICS, Neighbours
from ..storage.store import FeatureStore

__all__ = ["NeighbourAlignment", "REFERENCE", "neighbours", "neighbour_matrix", "validate"]

REFERENCE = ("Huh, Cheung, Wang & Isola (2024), The platonic representation hypothesis, ICML; "
             "github.com/minyoungg/platonic-rep metrics.py (mutual_knn, cknna, hsic_unbiased)")
NULL_SCHEME = "row i of A paired with row π(i) of B, π a uniform random permutation; lists relabelled, not searched again"


@dataclass
class NeighbourAlignment:
    """Everything ``lintwin neighbours`` reports; :meth:`as_dict` is its JSON."""

    names: tuple[str, str]
    split: str
    metric: str
    k: int
    rows: int
    mutual_knn: float
    cknna: float | None
    bootstrap: dict[str, Any] | None
    null: dict[str, Any] | None
    curve: list[dict[str, Any]] = field(default_factory=list)
    lists: dict[str, dict[str, Any]] = field(default_factory=dict)
    seed: int = 0

    def as_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "a": self.names[0], "b": self.names[1], "split": self.split, "metric": self.metric, "k": self.k,
            "rows": self.rows, "mutual_knn": self.mutual_knn, "cknna": self.cknna,
            "chance_mutual_knn": self.k / (self.rows - 1), "bootstrap": self.bootstrap, "seed": self.seed,
        }
        if self.null is not None:
            mk = self.null["mutual_knn"]
            out.update(null_mean=mk["mean"], null_sd=mk["sd"], z=mk["z"], p_value=mk["p_value"], null=self.null)
        out.update(curve=self.curve, lists=self.lists, reference=REFERENCE,
                   ties="neighbours ordered by float64 key, ties broken by the smaller store row; self excluded")
        return out


def validate(store: FeatureStore, split: str, names: Sequence[str], *, k: int, metric: str, null: int,
             sizes: Sequence[int]) -> int:
    """Refuse, before any work, what cannot be measured; returns the row count."""
    if metric not in METRICS:
        raise LintwinError(f"--metric must be one of {', '.join(METRICS)}, got {metric!r}")
    for name in names:
        store.features(split, name)
    store.check_paired(split, list(names))
    n = store.rows(split)
    if n < 4:
        raise LintwinError(f"split {split!r} has {n} rows; neighbourhood alignment needs at least 4")
    if not 1 <= k <= n - 1:
        raise LintwinError(f"k = {k} must be in 1..{n - 1}: split {split!r} has {n} rows and each row's k neighbours "
                           "are other rows")
    if null == 1 or null < 0:
        raise LintwinError(f"--null needs 0 (none) or at least 2 repetitions (for the null's sd), got {null}")
    for s in sizes:
        if not max(k + 1, 4) <= s <= n:
            raise LintwinError(f"size {s} must be in {max(k + 1, 4)}..{n}: more rows than k = {k} (and at least 4), "
                               f"at most the {n} rows of split {split!r}")
    return n


def _measure(a: Neighbours, b: Neighbours, null: int, seed: int) -> dict[str, Any]:
    terms = self_terms(a, b)
    mk, ck = mutual_knn(a, b), cknna(a, b, terms)
    out: dict[str, Any] = {"rows": int(a.index.shape[0]), "mutual_knn": mk, "cknna": ck,
                           "chance_mutual_knn": a.k / (a.index.shape[0] - 1)}
    if null:
        res = permutation_null(a, b, repeats=null, seed=seed, observed=(mk, ck))
        out["null"] = {name: s.as_dict() for name, s in res.items()}
    return out


def neighbours(store: FeatureStore | str | Path, a: str, b: str, *, split: str = "train", k: int = 10,
               metric: str = "cosine", null: int = 0, seed: int = 0, sizes: Sequence[int] = (), n_boot: int = 1000,
               level: float = 0.95, block_rows: int = 4096, client: Any = None, reuse: bool = True,
               save: bool = False, progress: bool = False) -> NeighbourAlignment:
    """Mutual k-NN and CKNNA of networks ``a`` and ``b`` on ``split``, exact, with null, bootstrap and size curve."""
    s = store if isinstance(store, FeatureStore) else FeatureStore.open(store)
    sizes = sorted(set(int(x) for x in sizes))
    n = validate(s, split, (a, b), k=k, metric=metric, null=null, sizes=sizes)
    lists: dict[str, dict[str, Any]] = {}
    full = {}
    for name in (a, b):
        t0 = time.perf_counter()
        nb, how = store_lists(s, split, name, k, metric=metric, block_rows=block_rows, client=client, reuse=reuse,
                              save=save, progress=progress)
        full[name] = nb
        lists[name] = {"how": how, "seconds": time.perf_counter() - t0, "rechecked_rows": nb.rechecked,
                       "saved": bool(save)}
    whole = _measure(full[a], full[b], null, seed)
    boot = bootstrap_mutual_knn(full[a], full[b], n_boot=n_boot, level=level, seed=seed) if n_boot else None
    curve = []
    order = np.random.default_rng(seed).permutation(n)
    for size in sizes:
        if size == n:
            curve.append(dict(whole) | {"seconds": 0.0})
            continue
        subset = np.sort(order[:size])  # nested: each size holds every smaller one
        t0 = time.perf_counter()
        pair = [store_lists(s, split, name, k, metric=metric, subset=subset, block_rows=block_rows, client=client)[0]
                for name in (a, b)]
        point = _measure(pair[0], pair[1], null, seed)
        point["seconds"] = time.perf_counter() - t0
        curve.append(point)
    if not sizes or sizes[-1] != n:
        curve.append(dict(whole) | {"seconds": sum(v["seconds"] for v in lists.values())})
    nl = None
    if null:
        nl = {"repeats": null, "seed": seed, "scheme": NULL_SCHEME, **whole["null"]}
    return NeighbourAlignment((a, b), split, metric, k, n, whole["mutual_knn"], whole["cknna"], boot, nl, curve,
                              lists, seed)


def neighbour_matrix(store: FeatureStore | str | Path, names: Sequence[str], *, split: str = "train", k: int = 10,
                     metric: str = "cosine", block_rows: int = 4096, client: Any = None, reuse: bool = True,
                     save: bool = False, progress: bool = False) -> dict[str, Any]:
    """Mutual k-NN and CKNNA between every pair of ``names`` (networks or layers): each list computed once."""
    s = store if isinstance(store, FeatureStore) else FeatureStore.open(store)
    if len(names) < 2 or len(set(names)) != len(names):
        raise LintwinError(f"a neighbour matrix needs two or more different arrays, got {list(names)}")
    n = validate(s, split, names, k=k, metric=metric, null=0, sizes=())
    lists = {name: store_lists(s, split, name, k, metric=metric, block_rows=block_rows, client=client, reuse=reuse,
                               save=save, progress=progress)[0] for name in names}
    m = len(names)
    mk, ck = np.eye(m), np.eye(m)
    for i in range(m):
        for j in range(i + 1, m):
            mk[i, j] = mk[j, i] = mutual_knn(lists[names[i]], lists[names[j]])
            c = cknna(lists[names[i]], lists[names[j]])
            ck[i, j] = ck[j, i] = np.nan if c is None else c
    for i in range(m):  # CKNNA of an array with itself: 1 when its self term is positive
        c = cknna(lists[names[i]], lists[names[i]])
        ck[i, i] = np.nan if c is None else c
    return {"names": list(names), "split": split, "metric": metric, "k": k, "rows": n, "mutual_knn": mk.tolist(),
            "cknna": [[None if np.isnan(v) else float(v) for v in row] for row in ck],
            "chance_mutual_knn": k / (n - 1), "reference": REFERENCE}
