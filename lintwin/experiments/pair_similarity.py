"""Every similarity measure of two networks on a store split, with the CV-ridge R² and a permutation null.

One pass accumulates the pair's moments with kernel sums (per image fold when the CV-ridge R² is
asked for); :func:`lintwin.measures.similarity.similarity` computes the measures, and
:func:`lintwin.measures.null.store_null` the null, each sample from one more pass.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

from ..core.distributed import accumulate_dask
from ..core.driver import accumulate, accumulate_folds
from ..core.folds import image_folds
from ..core.moments import Moments
from ..core.params import check_alpha, check_null_repeats, check_precision, check_svcca_keep
from ..core.placement import DEFAULT_DEVICE, Placement, placement
from ..errors import LintwinError
from ..measures.null import NullResult, store_null
from ..measures.similarity import DEFAULT_ALPHAS, SideFactors, Similarity, similarity
from ..storage.source import StoreSource
from ..storage.store import FeatureStore

__all__ = ["NULL_SCHEME", "PairSimilarity", "pair_similarity"]

NULL_SCHEME = ("B read at a random cyclic row offset from A, rows shuffled within each block; CV-ridge R² is not "
               "recomputed under the null")


@dataclass
class PairSimilarity:
    """The measures, the moments they came from, the null (if asked) and how long the pass took."""

    similarity: Similarity
    moments: Moments
    null: NullResult | None
    seconds: float

    def null_summary(self) -> dict[str, Any] | None:
        return None if self.null is None else self.null.summary(self.similarity.values)

    def as_dict(self) -> dict[str, Any]:
        out = self.similarity.as_dict()
        if self.null is not None:
            out["null"] = self.null.as_dict(self.similarity.values) | {"scheme": NULL_SCHEME}
        return out


def pair_similarity(store: FeatureStore, a: str, b: str, *, split: str = "train", folds: int = 5, null: int = 0,
                    seed: int = 0, svcca_keep: float = 0.99, alphas: tuple[float, ...] = DEFAULT_ALPHAS,
                    precision: str = "float64", device: str | Placement = DEFAULT_DEVICE,
                    block_rows: int | None = None, dask_client: Any = None, progress: bool = True) -> PairSimilarity:
    """Similarity of networks ``a`` and ``b`` on ``split``: one pass (plus ``null`` passes for the null).

    ``folds`` >= 2 adds the CV-ridge R² (0 skips it); on Dask there are neither kernel sums nor folds.
    """
    if null:
        check_null_repeats(null)
    if folds == 1 or folds < 0:
        raise LintwinError("--folds must be 0 (no CV-ridge R²) or at least 2")
    for alpha in alphas:
        check_alpha(alpha)
    check_svcca_keep(svcca_keep)
    check_precision(precision)
    source = StoreSource(store, split, [a, b], block_rows=block_rows)
    if source.rows < 4:
        raise LintwinError(f"split {split!r} has {source.rows} rows; similarity needs at least 4")
    place = placement(device)
    t0 = time.perf_counter()
    parts: list[Moments] = []
    if dask_client is not None:
        m = accumulate_dask(dask_client, source, precision=precision,  # type: ignore[arg-type]
                            device=device if isinstance(device, str) else device.label, progress=progress)
    elif folds >= 2:
        parts = accumulate_folds(source, image_folds(store.ids(split), source.rows, folds), folds, placement=place,
                                 precision=precision, kernel=True, progress=progress,  # type: ignore[arg-type]
                                 desc=f"fold moments {split}")
        m = Moments.merged(parts)
    else:
        m = accumulate(source, placement=place, precision=precision, kernel=True, progress=progress,  # type: ignore[arg-type]
                       desc=f"moments {split}")
    seconds = time.perf_counter() - t0
    factors = SideFactors()  # each side factored once: the null re-pairs the same rows
    sim = similarity(m, svcca_keep=svcca_keep, alphas=alphas, folds=parts or None, factors=factors,
                     progress=progress)
    if dask_client is not None:
        sim.info["notes"].append("accumulated on Dask: no kernel sums (debiased CKA omitted) and no folds "
                                 "(CV-ridge R² omitted)")
    elif folds < 2:
        sim.info["notes"].append("--folds 0: CV-ridge R² omitted")
    sim.info["accumulate_seconds"] = seconds
    res = None
    if null:
        def measure(mm: Moments) -> dict[str, float | None]:
            return similarity(mm, svcca_keep=svcca_keep, alphas=alphas, factors=factors).values

        res = store_null(store, a, b, measure, split=split, repeats=null, seed=seed, precision=precision,
                         kernel=dask_client is None, block_rows=block_rows, device=place, progress=progress)
    return PairSimilarity(sim, m, res, seconds)
