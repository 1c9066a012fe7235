"""A permutation null for similarity measures, in streaming passes over a store (or arrays).

Each repetition pairs A's rows with B's rows of another position: B is read at a random cyclic
row offset ``s`` (1 ≤ s < n) from A, and the rows of each B block are shuffled, so no image is
paired with itself except by chance, while each side's own moments are unchanged. The same
measures computed on these moments give K null samples; a measure is then reported with its
permutation p-value ``(1 + #null samples at least as alike) / (K + 1)`` (:meth:`NullResult.summary`).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from tqdm.auto import tqdm

from ..core.driver import accumulate
from ..core.moments import Moments
from ..core.params import check_null_repeats
from ..core.placement import DEFAULT_DEVICE, Placement, placement, placement_of
from ..core.xp import row_spans
from ..errors import LintwinError
from ..storage.source import StoreSource
from ..storage.store import FeatureStore

__all__ = ["NullResult", "arrays_null", "permutation_null", "shifted_block", "shuffled_moments", "store_null"]

Measure = Callable[[Moments], dict[str, float | None]]


# Distances: a smaller value means more alike, so the null is "as extreme" at or below the observed value.
LOWER_IS_MORE_ALIKE = ("procrustes", "shape_angle[")
MIN_REPEATS_FOR_5_PERCENT = 19  # the smallest p-value K samples can give is 1 / (K + 1)
DEGENERATE_SPREAD = 1e-6        # null sd at or below this share of its mean (or 1e-12): rounding, not spread


@dataclass
class NullResult:
    """Null samples per measure (``None`` where a repetition left a measure undefined)."""

    repeats: int
    seed: int
    samples: dict[str, list[float | None]] = field(default_factory=dict)
    shifts: list[int] = field(default_factory=list)

    def summary(self, observed: dict[str, float | None]) -> dict[str, dict[str, Any]]:
        """Per measure: the permutation p-value of ``observed``, the null's mean and sd, and what limits them.

        ``p = (1 + #{null samples at least as alike as observed}) / (K + 1)`` over the K defined
        samples (at least as large; at most as large for distances), one-sided in the direction
        of "more alike" (Phipson & Smyth 2010: never 0, exact for exchangeable samples); values equal
        up to rounding (relative 1e-6) count as ties.
        ``status`` is ``ok``, ``few samples`` (K < 19: p cannot go below 0.05), ``degenerate``
        (the null's sd is at the rounding level of its values: it has no spread to measure a z
        against) or ``undefined``. ``z`` is given only when the status is ``ok``.
        """
        out = {}
        for name, vals in self.samples.items():
            v = np.asarray([x for x in vals if x is not None], dtype=float)
            k = int(v.size)
            mean = float(v.mean()) if k else None
            sd = float(v.std(ddof=1)) if k > 1 else None
            obs = observed.get(name)
            entry: dict[str, Any] = {"mean": mean, "sd": sd, "samples": k, "p": None, "p_min": None,
                                     "as_alike": None, "z": None, "status": "undefined"}
            if obs is not None and math.isfinite(obs) and k:
                lower = name.startswith(LOWER_IS_MORE_ALIKE)
                tie = DEGENERATE_SPREAD * max(abs(obs), 1e-6)  # equal up to rounding counts as a tie
                alike = int(np.sum(v <= obs + tie)) if lower else int(np.sum(v >= obs - tie))
                entry.update(p=(1 + alike) / (k + 1), p_min=1 / (k + 1), as_alike=alike,
                             direction="smaller is more alike" if lower else "larger is more alike")
                if sd is None or sd <= DEGENERATE_SPREAD * max(abs(mean or 0.0), 1e-6):
                    entry["status"] = "degenerate"
                elif k < MIN_REPEATS_FOR_5_PERCENT:
                    entry["status"] = "few samples"
                else:
                    entry.update(status="ok", z=(obs - mean) / sd)
            out[name] = entry
        return out

    def notes(self, summary: dict[str, dict[str, Any]], label: Callable[[str], str] = str) -> list[str]:
        """What a reader must know before trusting the p-values: too few samples, degenerate nulls."""
        notes = []
        k = max((e["samples"] for e in summary.values()), default=0)
        if 0 < k < MIN_REPEATS_FOR_5_PERCENT:
            notes.append(f"{k} null samples: the smallest p-value they can give is 1/(K+1) = {1 / (k + 1):.2g}, "
                         f"and a null sd from {k} samples is too rough for a z-score; use --null "
                         f"{MIN_REPEATS_FOR_5_PERCENT} or more for p < 0.05 (99 or more for p < 0.01)")
        degenerate = [name for name, e in summary.items() if e["status"] == "degenerate"]
        if degenerate:
            notes.append("degenerate null (its samples do not vary beyond rounding, so no z-score) for "
                         + ", ".join(label(name) for name in degenerate)
                         + ": the measure takes the same value whatever the pairing (e.g. every canonical "
                         "correlation is 1 when there are fewer rows than units)")
        return notes

    def as_dict(self, observed: dict[str, float | None]) -> dict[str, Any]:
        return {"repeats": self.repeats, "seed": self.seed, "shifts": self.shifts, "summary": self.summary(observed),
                "samples": self.samples, "p_value": "(1 + #null samples at least as alike as observed) / (K + 1)"}


def shifted_block(read_b: Callable[[int, int], np.ndarray], lo: int, hi: int, n: int, shift: int,
                  rng: np.random.Generator) -> np.ndarray:
    """B's rows for A's block ``[lo, hi)``: rows ``lo+shift .. hi+shift`` (cyclic), shuffled."""
    start = (lo + shift) % n
    stop = start + (hi - lo)
    b = read_b(start, stop) if stop <= n else np.concatenate([read_b(start, n), read_b(0, stop - n)])
    return b[rng.permutation(hi - lo)]


class ShiftedPairSource:
    """A block source pairing A's blocks with B's rows at a cyclic offset, shuffled within each block.

    A's side is untouched, B's side is a permutation of B's rows, so each side's own moments are those
    of the real data and only the pairing is broken. ``seed`` fixes the shuffles, so reading the
    source again gives the same pairing.
    """

    def __init__(self, a_blocks: Callable[[], Iterator[tuple[int, np.ndarray]]],
                 read_b: Callable[[int, int], np.ndarray], n: int, dims: tuple[int, int], names: tuple[str, str],
                 shift: int, seed: int):
        self.a_blocks, self.read_b, self.rows, self.shift, self.seed = a_blocks, read_b, int(n), int(shift), seed
        self.dims, self.names = tuple(dims), tuple(names)

    def blocks(self) -> Iterator[tuple[int, list[np.ndarray]]]:
        rng = np.random.default_rng(self.seed)
        for lo, a in self.a_blocks():
            yield lo, [a, shifted_block(self.read_b, lo, lo + int(a.shape[0]), self.rows, self.shift, rng)]


def shuffled_moments(a_blocks: Iterator[tuple[int, np.ndarray]] | Callable[[], Iterator[tuple[int, np.ndarray]]],
                     read_b: Callable[[int, int], np.ndarray], n: int, dims: tuple[int, int], names: tuple[str, str],
                     shift: int, rng: np.random.Generator, *, precision: str = "float32", kernel: bool = True,
                     device: str | Placement = DEFAULT_DEVICE) -> Moments:
    """Moments of A's blocks paired with B's at a cyclic row offset, rows shuffled within blocks."""
    blocks = a_blocks if callable(a_blocks) else (lambda it=a_blocks: it)
    source = ShiftedPairSource(blocks, read_b, n, dims, names, shift, int(rng.integers(2**63)))
    return accumulate(source, placement=placement(device), precision=precision, kernel=kernel)  # type: ignore[arg-type]


def draw_shift(n: int, rng: np.random.Generator) -> int:
    """A cyclic offset in [1, n-1]."""
    if n < 2:
        raise LintwinError("a permutation null needs at least 2 rows")
    return int(rng.integers(1, n))


def permutation_null(measure: Measure, *, repeats: int, seed: int, n: int, dims: tuple[int, int],
                     names: tuple[str, str], a_blocks: Callable[[], Iterator[tuple[int, np.ndarray]]],
                     read_b: Callable[[int, int], np.ndarray], precision: str = "float32", kernel: bool = True,
                     device: str | Placement = DEFAULT_DEVICE, progress: bool = True) -> NullResult:
    """``repeats`` streaming passes, each giving one null sample of every measure ``measure`` returns."""
    check_null_repeats(repeats)
    place = placement(device)
    rng = np.random.default_rng(seed)
    out = NullResult(repeats, seed)
    for _ in tqdm(range(repeats), desc="permutation null", unit="pass", disable=not progress):
        shift = draw_shift(n, rng)
        m = shuffled_moments(a_blocks, read_b, n, dims, names, shift, rng, precision=precision, kernel=kernel,
                             device=place)
        out.shifts.append(shift)
        for name, v in measure(m).items():
            out.samples.setdefault(name, []).append(None if v is None or not math.isfinite(v) else float(v))
    return out


def store_null(store: FeatureStore, a: str, b: str, measure: Measure, *, split: str, repeats: int, seed: int,
               precision: str = "float32", kernel: bool = True, block_rows: int | None = None,
               device: str | Placement = DEFAULT_DEVICE, progress: bool = True) -> NullResult:
    """:func:`permutation_null` over a store split: A streamed in blocks, B read at the shifted rows."""
    fb = store.features(split, b)
    dims = (int(store.info(split, a)["dim"]), int(store.info(split, b)["dim"]))

    side_a = StoreSource(store, split, [a], block_rows=block_rows)

    def a_blocks() -> Iterator[tuple[int, np.ndarray]]:
        for lo, (x,) in side_a.blocks():
            yield lo, x

    return permutation_null(measure, repeats=repeats, seed=seed, n=store.rows(split), dims=dims, names=(a, b),
                            a_blocks=a_blocks, read_b=lambda lo, hi: np.asarray(fb[lo:hi]), precision=precision,
                            kernel=kernel, device=device, progress=progress)


def arrays_null(a: np.ndarray, b: np.ndarray, measure: Measure, *, repeats: int, seed: int, block_rows: int = 8192,
                precision: str = "float64", kernel: bool = True, names: tuple[str, str] = ("A", "B"),
                progress: bool = False) -> NullResult:
    """:func:`permutation_null` over paired in-memory arrays (same pairing scheme as the store version)."""
    n = int(a.shape[0])

    def a_blocks() -> Iterator[tuple[int, np.ndarray]]:
        for lo, hi in row_spans(n, block_rows):
            yield lo, a[lo:hi]

    return permutation_null(measure, repeats=repeats, seed=seed, n=n, dims=(int(a.shape[1]), int(b.shape[1])),
                            names=names, a_blocks=a_blocks, read_b=lambda lo, hi: b[lo:hi], precision=precision,
                            kernel=kernel, device=placement_of(a), progress=progress)
