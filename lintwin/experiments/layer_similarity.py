"""Every layer of A against every layer of B (and each network against itself), exactly, from one pass.

The stored layers of networks A and B (``extract --layers``; one row per image, or one row per
image and position) are streamed once: one :class:`~lintwin.networks.layer_source.GridSink` per
grid accumulates the joint moments of every layer that is compared on that grid (a layer whose
grid is finer than its partner's is resampled to the coarser one with the stitched model's
bilinear resampling, :mod:`lintwin.networks.resample`), so each pair's moments are sub-blocks
(:meth:`~lintwin.core.moments.Moments.pair`) of what one pass summed, exact at any row count. Each
cell of a matrix is the measure that ``lintwin similarity`` documents, applied to that pair; a
layer against itself is measured from its moments paired with a copy of themselves (1 for CKA).

When the joint moments do not fit ``max_memory``, the layers are cut into groups and one pass runs
over each pair of groups (as the study falls back to pairs of networks). The permutation null
(``null`` repetitions) pairs A's samples with B's samples of other images (all positions and
views of a sample move together), one pass over all layers per repetition.
"""

from __future__ import annotations

import itertools
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..core.driver import run_pass
from ..core.memory import available_memory, human_bytes, moments_bytes
from ..core.moments import Moments
from ..core.params import check_null_repeats, check_precision
from ..core.placement import DEFAULT_DEVICE, Placement, placement
from ..errors import LintwinError
from ..measures.null import NullResult, draw_shift
from ..measures.similarity import linear_cka, similarity
from ..networks.layer_source import GridSink, LayerSource, StoredLayer, stored_layers
from ..networks.resample import RESAMPLING, Grid, common_grid, grid_text
from ..storage.store import FeatureStore

__all__ = ["MEASURES", "LayerSimilarity", "layer_similarity"]

MEASURES = ("cka", "cka_debiased", "cca_rho1", "cca_mean_rho", "cca_mean_rho2", "svcca", "pwcca", "procrustes",
            "shape_angle[0]", "shape_angle[0.5]", "shape_angle[1]", "r2_ab", "r2_ba")
NULL_SCHEME = ("B's samples read at a random cyclic offset from A's and shuffled within each block; the positions "
               "and views of a sample move together, so position is kept and only the images are mismatched")
Matrix = list[list[float | None]]


@dataclass
class LayerSimilarity:
    """The matrices of each measure (A × B, A × A, B × B), what they were computed from, and the null."""

    store: str
    splits: list[str]
    a: str
    b: str
    layers_a: list[StoredLayer]
    layers_b: list[StoredLayer]
    measures: dict[str, Matrix]
    self_a: dict[str, Matrix]
    self_b: dict[str, Matrix]
    grids: list[list[Grid]]
    rows: list[list[int]]
    samples: int
    precision: str
    moments: dict[str, Any]
    seconds: dict[str, float]
    null: dict[str, Any] | None = None
    notes: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready: ``layers_a``/``layers_b`` are tensor names; rows of a matrix are A's layers, columns B's."""
        def layer(la: StoredLayer) -> dict[str, Any]:
            return {"tensor": la.tensor, "array": la.array, "split": la.split, "op": la.op, "shape": list(la.shape),
                    "kind": la.kind, "grid": list(la.grid), "pooling": la.pooling, "dim": la.dim}

        return {"store": self.store, "splits": self.splits, "a": self.a, "b": self.b,
                "layers_a": [la.tensor for la in self.layers_a], "layers_b": [la.tensor for la in self.layers_b],
                "arrays_a": [layer(la) for la in self.layers_a], "arrays_b": [layer(la) for la in self.layers_b],
                "measures": self.measures, "self_similarity": {"a": self.self_a, "b": self.self_b},
                "common_grid": [[list(g) for g in row] for row in self.grids], "rows": self.rows,
                "samples": self.samples, "resampling": RESAMPLING, "precision": self.precision,
                "moments": self.moments, "seconds": self.seconds, "null": self.null, "notes": self.notes}


# -- the plan: which pairs, on which grid, in which pass ---------------------------------------------
@dataclass
class _Plan:
    """Passes over groups of layers (indices into all layers); the pairs each pass measures, with their grid."""

    passes: list[tuple[list[int], dict[tuple[int, int], Grid]]]
    groups: list[list[int]]
    peak_bytes: int


def _sinks(pairs: dict[tuple[int, int], Grid]) -> dict[Grid, list[int]]:
    """For each grid, the layers accumulated on it (sorted)."""
    out: dict[Grid, set[int]] = {}
    for (i, j), g in pairs.items():
        out.setdefault(g, set()).update((i, j))
    return {g: sorted(members) for g, members in out.items()}


def _bytes(pairs: dict[tuple[int, int], Grid], dims: Sequence[int]) -> int:
    return sum(moments_bytes([dims[i] for i in members]) for members in _sinks(pairs).values())


def _balanced(order: Sequence[int], dims: Sequence[int], k: int) -> list[list[int]]:
    """``order`` cut into ``k`` consecutive groups of about equal total width."""
    total = sum(dims[i] for i in order)
    groups: list[list[int]] = [[]]
    acc = 0.0
    for i in order:
        if groups[-1] and acc >= total * len(groups) / k and len(groups) < k:
            groups.append([])
        groups[-1].append(i)
        acc += dims[i]
    return groups


def _plan(pairs: dict[tuple[int, int], Grid], dims: Sequence[int], budget: int) -> _Plan:
    """One pass when every pair's sinks fit ``budget``; else the fewest groups whose pairs of groups fit."""
    layers = sorted({i for p in pairs for i in p})
    need = _bytes(pairs, dims)
    if need <= budget:
        return _Plan([(layers, dict(pairs))], [layers], need)
    for k in range(2, len(layers) + 1):
        groups = _balanced(layers, dims, k)
        where = {i: g for g, members in enumerate(groups) for i in members}
        passes = []
        for gi, gj in itertools.combinations(range(len(groups)), 2):
            # a pair inside one group is measured in the first pass that holds its group
            home = {g: (g, g + 1) if g + 1 < len(groups) else (g - 1, g) for g in range(len(groups))}
            chosen = {p: grid for p, grid in pairs.items()
                      if {where[p[0]], where[p[1]]} == {gi, gj}
                      or (where[p[0]] == where[p[1]] and home[where[p[0]]] == (gi, gj))}
            if chosen:
                passes.append((sorted({i for p in chosen for i in p}), chosen))
        peak = max(_bytes(chosen, dims) for _, chosen in passes)
        if peak <= budget:
            return _Plan(passes, groups, peak)
    largest = max(_bytes({p: g}, dims) for p, g in pairs.items())
    raise LintwinError(f"even one pair of layers needs about {human_bytes(largest)} of moments, more than --max-memory "
                       f"{human_bytes(budget)}")


# -- measuring ----------------------------------------------------------------------------------------
def _values(m: Moments, measures: Sequence[str], notes: list[str]) -> dict[str, float | None]:
    """The requested measures of one pair's moments (``None`` where a measure is undefined, with a note)."""
    try:
        if list(measures) == ["cka"]:
            return {"cka": linear_cka(m)}
        values = similarity(m, predictivity=any(k.startswith("r2") for k in measures)).values
    except LintwinError as exc:
        notes.append(f"{m.names[0]} vs {m.names[1]}: {exc}")
        return dict.fromkeys(measures)
    return {k: None if values.get(k) is None or not math.isfinite(values[k]) else float(values[k]) for k in measures}


def _run(store: FeatureStore, layers: list[StoredLayer], plan: _Plan, measures: Sequence[str], *, precision: str,
         place: Placement, block_samples: int | None, stop: int | None, progress: bool, notes: list[str],
         shifted: frozenset[int] = frozenset(), shift: int = 0, seed: int = 0,
         desc: str = "layer moments") -> dict[tuple[int, int], tuple[dict, int]]:
    """Run the plan's passes; ``(values, rows)`` of every pair."""
    kernel = "cka_debiased" in measures
    out: dict[tuple[int, int], tuple[dict, int]] = {}
    for n_pass, (members, pairs) in enumerate(plan.passes, 1):
        local = {i: k for k, i in enumerate(members)}
        source = LayerSource(store, [layers[i] for i in members], block_samples=block_samples, stop=stop,
                             shifted=[local[i] for i in members if i in shifted], shift=shift, seed=seed)
        sinks = {g: GridSink(source.layers, [local[i] for i in grid_members], g, precision=precision, kernel=kernel)
                 for g, grid_members in _sinks(pairs).items()}
        label = desc if len(plan.passes) == 1 else f"{desc} (pass {n_pass}/{len(plan.passes)})"
        run_pass(source, list(sinks.values()), placement=place, progress=progress, desc=label)
        for (i, j), g in pairs.items():
            jm = sinks[g].moments
            m = jm.twin(layers[i].key) if i == j else jm.pair(layers[i].key, layers[j].key)
            out[(i, j)] = (_values(m, measures, notes), m.n)
    return out


def _swap(values: dict[str, float | None]) -> dict[str, float | None]:
    """The values of the pair read the other way round (only the R² directions change)."""
    out = dict(values)
    if "r2_ab" in values or "r2_ba" in values:
        out["r2_ab"], out["r2_ba"] = values.get("r2_ba"), values.get("r2_ab")
    return {k: v for k, v in out.items() if k in values}


def _cell(got: dict[tuple[int, int], tuple[dict, int]], i: int, j: int) -> tuple[dict, int]:
    if (i, j) in got:
        return got[(i, j)]
    values, rows = got[(j, i)]
    return _swap(values), rows


def _matrix(got: dict, rows_of: Sequence[int], cols_of: Sequence[int], key: str) -> Matrix:
    return [[_cell(got, i, j)[0].get(key) for j in cols_of] for i in rows_of]


def _check_measures(measures: Sequence[str]) -> list[str]:
    unknown = [m for m in measures if m not in MEASURES]
    if unknown or not measures:
        raise LintwinError(f"unknown measure(s) {', '.join(unknown) or '(none given)'}; choose from {', '.join(MEASURES)}")
    return list(dict.fromkeys(measures))


def _chosen(found: list[StoredLayer], wanted: Sequence[str] | None, network: str, splits: Sequence[str]) -> list[StoredLayer]:
    """The layers of ``network`` in the order asked for (default: every stored one)."""
    if not found:
        raise LintwinError(f"no stored layers of network {network!r} in split(s) {', '.join(splits)} "
                           "(`lintwin info STORE` lists each array's network and layer; `lintwin extract MODEL IMAGES "
                           "--layers ...` stores them)")
    if not wanted:
        tensors = [la.tensor for la in found]
        twice = sorted({t for t in tensors if tensors.count(t) > 1})
        if twice:
            raise LintwinError(f"layer {twice[0]} of {network} is stored in several of the splits "
                               f"({', '.join(la.split for la in found if la.tensor == twice[0])}); give the splits "
                               "so that each layer is in one")
        return found
    out = []
    for t in wanted:
        hits = [la for la in found if la.tensor == t or la.array == t]
        if not hits:
            raise LintwinError(f"layer {t!r} of {network} is not stored in split(s) {', '.join(splits)} (stored: "
                               f"{', '.join(la.tensor for la in found[:8])}{' ...' if len(found) > 8 else ''})")
        if len(hits) > 1:
            raise LintwinError(f"layer {t} of {network} is stored in several splits ({', '.join(la.split for la in hits)});"
                               " give the splits so that each layer is in one")
        out.append(hits[0])
    return out


def layer_similarity(store: FeatureStore, a: str, b: str, *, splits: Sequence[str] = ("train",),
                     layers_a: Sequence[str] | None = None, layers_b: Sequence[str] | None = None,
                     measures: Sequence[str] = ("cka",), null: int = 0, seed: int = 0, precision: str = "float64",
                     device: str | Placement = DEFAULT_DEVICE, max_memory: int | None = None,
                     block_samples: int | None = None, samples: int | None = None, progress: bool = True,
                     echo: Callable[[str], None] = print) -> LayerSimilarity:
    """Each measure between every stored layer of ``a`` and of ``b`` in ``splits`` (and A × A, B × B).

    ``layers_a``/``layers_b`` choose layers (tensor or array names, in that order); by default
    every layer of the network in ``splits``, in natural order of tensor names. ``a == b`` gives
    the network's self-similarity. ``max_memory`` bounds the moments of one pass (default: half
    the memory available). ``null`` repetitions of the permutation null (A ≠ B) give each A × B
    cell its null mean, sd and p-value. ``samples`` uses only the first that many samples (images x
    views) of every layer.
    """
    measures = _check_measures(measures)
    check_precision(precision)
    if null:
        check_null_repeats(null)
        if a == b:
            raise LintwinError("--null compares A's layers with B's other images; with --a equal to --b there is no "
                               "second network to shift")
    splits = list(dict.fromkeys(splits))
    place = placement(device)
    la = _chosen(stored_layers(store, splits, a), layers_a, a, splits)
    lb = la if a == b and not layers_b else _chosen(stored_layers(store, splits, b), layers_b, b, splits)
    layers = la if a == b and lb is la else la + lb
    ia = list(range(len(la)))
    ib = ia if layers is la else list(range(len(la), len(layers)))
    notes: list[str] = []
    pairs: dict[tuple[int, int], Grid] = {}
    for i, j in [*itertools.product(ia, ib), *itertools.combinations_with_replacement(ia, 2),
                 *itertools.combinations_with_replacement(ib, 2)]:
        i, j = min(i, j), max(i, j)
        if (i, j) not in pairs:
            pairs[(i, j)] = common_grid(layers[i].grid, layers[j].grid,
                                        f"{layers[i].describe()} and {layers[j].describe()}")
    stored = LayerSource(store, layers).samples  # refuses unpaired splits, incomplete or damaged arrays, before any pass
    if samples is not None and not 2 <= samples:
        raise LintwinError(f"samples must be at least 2, got {samples}")
    samples = stored if samples is None else min(samples, stored)
    dims = [x.dim for x in layers]
    budget = max_memory if max_memory is not None else available_memory() // 2
    plan = _plan(pairs, dims, budget)
    resampled = sorted({(layers[k].grid, g) for p, g in pairs.items() for k in p if layers[k].grid != g})
    if resampled:
        notes.append("compared on the coarser grid, resampling with " + RESAMPLING + ": "
                     + ", ".join(f"{grid_text(s)} → {grid_text(d)}" for s, d in resampled))
    if len(plan.passes) == 1:
        echo(f"{len(layers)} layers ({len(la)} of {a}, {len(lb)} of {b}), {len(pairs)} pairs on "
             f"{len(_sinks(pairs))} grid(s): one pass, moments about {human_bytes(plan.peak_bytes)} "
             f"(within the budget of {human_bytes(budget)}, --max-memory)")
    else:
        echo(f"the joint moments of {len(layers)} layers need about {human_bytes(_bytes(pairs, dims))}, more than "
             f"--max-memory {human_bytes(budget)}: {len(plan.groups)} groups of layers, one pass over each pair of "
             f"groups ({len(plan.passes)} passes, at most {human_bytes(plan.peak_bytes)} each)")
    t0 = time.perf_counter()
    got = _run(store, layers, plan, measures, precision=precision, place=place, block_samples=block_samples,
               stop=samples, progress=progress, notes=notes)
    seconds = {"moments_and_measures": time.perf_counter() - t0}
    result = LayerSimilarity(
        str(store.path), splits, a, b, la, lb,
        measures={k: _matrix(got, ia, ib, k) for k in measures},
        self_a={k: _matrix(got, ia, ia, k) for k in measures},
        self_b={k: _matrix(got, ib, ib, k) for k in measures},
        grids=[[pairs[(min(i, j), max(i, j))] for j in ib] for i in ia],
        rows=[[_cell(got, i, j)[1] for j in ib] for i in ia],
        samples=samples, precision=precision,
        moments={"mode": "joint" if len(plan.passes) == 1 else "groups", "passes": len(plan.passes),
                 "groups": [[layers[i].key for i in g] for g in plan.groups], "peak_bytes": plan.peak_bytes,
                 "joint_bytes": _bytes(pairs, dims), "max_memory": budget},
        seconds=seconds, notes=notes)
    if null:
        t0 = time.perf_counter()
        result.null = _null(store, layers, ia, ib, pairs, dims, budget, measures, repeats=null, seed=seed,
                            samples=samples, precision=precision, place=place, block_samples=block_samples,
                            progress=progress, observed=result.measures)
        seconds["null"] = time.perf_counter() - t0
    return result


def _null(store: FeatureStore, layers: list[StoredLayer], ia: list[int], ib: list[int],
          pairs: dict[tuple[int, int], Grid], dims: list[int], budget: int, measures: Sequence[str], *, repeats: int,
          seed: int, samples: int, precision: str, place: Placement, block_samples: int | None, progress: bool,
          observed: dict[str, Matrix]) -> dict[str, Any]:
    """``repeats`` null samples of every A × B cell: passes with B's layers read at shifted samples."""
    cross = {(i, j): pairs[(i, j)] for i in ia for j in ib}
    plan = _plan(cross, dims, budget)
    rng = np.random.default_rng(seed)
    cells = {p: NullResult(repeats, seed) for p in cross}
    shifts = []
    for r in range(repeats):
        shift = draw_shift(samples, rng)
        shifts.append(shift)
        got = _run(store, layers, plan, measures, precision=precision, place=place, block_samples=block_samples,
                   stop=samples, progress=progress, notes=[], shifted=frozenset(ib), shift=shift,
                   seed=int(rng.integers(2**63)),
                   desc=f"null {r + 1}/{repeats}")
        for p, (values, _) in got.items():
            for k, v in values.items():
                cells[p].samples.setdefault(k, []).append(v)
    out: dict[str, Any] = {"repeats": repeats, "seed": seed, "shifts": shifts, "scheme": NULL_SCHEME,
                           "p_value": "(1 + #null samples at least as alike as observed) / (K + 1)"}
    for k in measures:
        summ = {(r, c): cells[(i, j)].summary({k: observed[k][r][c]}).get(k, {})
                for r, i in enumerate(ia) for c, j in enumerate(ib)}
        out[k] = {field_: [[summ[(r, c)].get(field_) for c in range(len(ib))] for r in range(len(ia))]
                  for field_ in ("mean", "sd", "p", "status")}
        out[k]["samples"] = [[cells[(i, j)].samples.get(k) for j in ib] for i in ia]
    return out
