"""Stored layers as one block source: layers of several splits, paired sample by sample, resampled to common grids.

``extract --layers`` stores one array per layer, and per-position rows of layers whose grids
differ in separate splits (rows of a split are paired row by row). Comparing or stitching such
layers pairs them by *sample* (one view of one image): :class:`LayerSource` reads the rows of
the same samples from every layer, whatever its split, in blocks of whole samples, and
:class:`GridSink` resamples the blocks of its layers to one grid
(:func:`lintwin.networks.resample.resample_rows`) before accumulating their joint moments. One
pass can feed several grid sinks, so every pair of layers is accumulated in the same pass.

Layers of different splits are paired only when their arrays were extracted from the same images
in the same order, with the same views and augmentation (their recorded provenance says so).
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..core.driver import MomentsSink, Sink
from ..core.moments import Moments, check_finite
from ..core.xp import namespace, row_spans
from ..errors import LintwinError, ShapeError, StoreError
from ..storage.reader import default_block_rows
from ..storage.store import FeatureStore
from .resample import Grid, grid_text, resample_rows

__all__ = ["GridSink", "LayerSource", "StoredLayer", "find_layer", "natural_key", "same_samples", "stored_layers"]

_BLOCK_BYTES = 256 * 2**20  # about this much float32 per block of all layers together (whole chunks)
_SAMPLE_KEYS = ("images_sha256", "images", "views", "augment", "preprocess")


def natural_key(text: str) -> list[Any]:
    """Sort key reading digit runs as numbers (``body.10`` after ``body.9``)."""
    return [int(t) if t.isdigit() else t for t in re.split(r"(\d+)", text)]


@dataclass(frozen=True)
class StoredLayer:
    """One stored layer array: where it is and what it holds (from its ``layer`` attribute)."""

    split: str
    array: str
    network: str
    tensor: str
    op: str
    kind: str
    shape: tuple[Any, ...]
    channels: int | None
    layer_grid: tuple[int, ...]
    pooling: str
    rows_per_sample: int
    dim: int
    samples: int
    model_sha256: str | None
    provenance: dict[str, Any]

    @property
    def key(self) -> str:
        """Unique across splits: ``SPLIT/ARRAY``."""
        return f"{self.split}/{self.array}"

    @property
    def grid(self) -> Grid:
        """The grid of the stored rows: the layer's grid under ``positions``, else () (one row per sample)."""
        return tuple(self.layer_grid) if self.pooling == "positions" else ()

    def describe(self) -> str:
        return f"{self.tensor} of {self.network} ({self.array} in split {self.split!r}, {grid_text(self.grid)})"

    @classmethod
    def from_info(cls, split: str, array: str, info: dict[str, Any]) -> StoredLayer | None:
        """The layer an array's attributes describe, or None for an array that is not a layer (a backbone's)."""
        layer = info.get("layer")
        if not isinstance(layer, dict) or not isinstance(layer.get("tensor"), str):
            return None
        try:
            rps = int(layer.get("rows_per_image") or 1)
            grid = tuple(int(g) for g in (layer.get("grid") or ()))
            rows, dim = int(info["rows"]), int(info["dim"])
        except (TypeError, ValueError, KeyError):
            raise StoreError(f"the layer attributes of {array!r} in split {split!r} are damaged") from None
        pooling = str(layer.get("pooling"))
        if rps < 1 or rows % rps or (pooling == "positions" and int(np.prod(grid)) != rps):
            raise StoreError(f"the layer attributes of {array!r} in split {split!r} disagree with its rows "
                             f"({rows} rows, {rps} per image, grid {list(grid)})")
        prov = info.get("provenance") if isinstance(info.get("provenance"), dict) else {}
        return cls(split, array, str(layer.get("network")), layer["tensor"], str(layer.get("op")),
                   str(layer.get("kind")), tuple(layer.get("shape") or ()), layer.get("channels"), grid, pooling, rps,
                   dim, rows // rps, info.get("model_sha256"), prov)


def stored_layers(store: FeatureStore, splits: Sequence[str], network: str | None = None) -> list[StoredLayer]:
    """Every complete layer array of ``splits`` (of ``network`` if given), in natural order of tensor names."""
    out = []
    for split in splits:
        if split not in store.splits():
            raise StoreError(f"split {split!r} not in store {store.path} (splits: {', '.join(store.splits()) or 'none'})")
        for array in store.networks(split):
            layer = StoredLayer.from_info(split, array, store.info(split, array))
            if layer is not None and (network is None or layer.network == network):
                out.append(layer)
    return sorted(out, key=lambda la: (natural_key(la.tensor), la.split))


def find_layer(store: FeatureStore, splits: Sequence[str], tensor: str, *, model_sha256: str, model: str,
               pooling: str) -> StoredLayer:
    """The one stored layer of ``tensor`` with ``pooling``, extracted with the model of hash ``model_sha256``."""
    every = stored_layers(store, splits)
    found = [la for la in every if la.tensor == tensor and la.model_sha256 == model_sha256]
    where = f"split(s) {', '.join(repr(s) for s in splits)} of {store.path}"
    fits = [la for la in found if la.pooling == pooling]
    if len(fits) == 1:
        return fits[0]
    if len(fits) > 1:
        raise StoreError(f"layer {tensor} of {model} is stored with {pooling} rows in more than one split of {where} "
                         f"({', '.join(la.split for la in fits)}); give one of them with --split")
    if found:
        raise StoreError(f"{found[0].describe()} holds {found[0].pooling}-pooled rows; the stitched map acts at every "
                         f"position, so it is fitted on {'one row per image' if pooling == 'none' else 'one row per image and position'}:"
                         f" extract {tensor} with --pool {'avg' if pooling == 'none' else pooling}")
    same_tensor = [la for la in every if la.tensor == tensor]
    hint = (f"; {', '.join(la.key for la in same_tensor)} hold(s) {tensor} of another model (SHA-256 differs)"
            if same_tensor else f"; extract it with `lintwin extract {model} IMAGES --layers {tensor} --pool "
                                f"{'avg' if pooling == 'none' else pooling}`")
    raise StoreError(f"no stored rows of layer {tensor} of {model} in {where}{hint}")


def same_samples(layers: Sequence[StoredLayer]) -> int:
    """The sample count the layers share; refuses layers extracted from other images, order, views or augmentation."""
    first = layers[0]
    for la in layers[1:]:
        if la.split == first.split:
            continue  # a split's arrays are paired row by row already (the store checks their ids)
        differ = [k for k in _SAMPLE_KEYS if k != "preprocess" and la.provenance.get(k) != first.provenance.get(k)]
        if not first.provenance or not la.provenance:
            differ = differ or ["provenance"]
        if differ or la.samples != first.samples:
            what = ", ".join(differ) or f"{first.samples} against {la.samples} samples"
            raise StoreError(f"{first.describe()} and {la.describe()} were not extracted from the same images "
                             f"({what} differ): layers of different splits are paired image by image, so extract "
                             "them from the same images, views and augmentation")
    return first.samples


class LayerSource:
    """The rows of ``layers`` (any splits) for samples ``start .. stop``, in blocks of whole samples.

    Each block is ``(sample_offset, [rows of those samples for each layer])``; a layer's block has
    ``rows_per_sample`` rows per sample. ``shift`` pairs the layers at indices ``shifted`` with
    other samples for a permutation null: their rows are read ``shift`` samples further on
    (cyclically within ``start .. stop``) and the samples shuffled within each block (the rows of
    one sample stay together, in their positions), seeded by ``seed`` so a second read gives the
    same pairing.

    By default a block holds whole chunks and about 256 MiB of float32 rows of all layers
    together; layers of one split with one row per sample are read in the blocks
    :class:`~lintwin.storage.source.StoreSource` reads, so their moments equal those of every
    other pass over that split bit for bit (a map stitched at the classifier inputs is the map
    ``compare`` fits).
    """

    def __init__(self, store: FeatureStore, layers: Sequence[StoredLayer], *, block_samples: int | None = None,
                 start: int = 0, stop: int | None = None, shifted: Sequence[int] = (), shift: int = 0,
                 seed: int = 0):
        if not layers:
            raise LintwinError("no layers to read")
        self.store, self.layers = store, list(layers)
        self.samples = same_samples(self.layers)
        self.names = tuple(la.key for la in self.layers)
        self.dims = tuple(la.dim for la in self.layers)
        by_split: dict[str, list[str]] = {}
        for la in self.layers:
            by_split.setdefault(la.split, []).append(la.array)
        for split, arrays in by_split.items():
            store.check_paired(split, arrays)
        self.arrays = [store.features(la.split, la.array) for la in self.layers]
        self.start, self.stop = int(start), self.samples if stop is None else min(int(stop), self.samples)
        if len(by_split) == 1 and all(la.rows_per_sample == 1 for la in self.layers):
            default = default_block_rows(self.arrays)  # a store split's own blocks: the moments of StoreSource
        else:
            width = sum(la.rows_per_sample * la.dim for la in self.layers)  # float32 values of a sample, all layers
            chunk = max(int(a.chunks[0]) // la.rows_per_sample for a, la in zip(self.arrays, self.layers))
            default = max(1, _BLOCK_BYTES // (4 * width) // chunk) * chunk
        self.block_samples = int(block_samples or default)
        if self.block_samples < 1:
            raise LintwinError(f"blocks must hold at least one sample, got {block_samples}")
        self.shifted, self.shift, self.seed = frozenset(shifted), int(shift), int(seed)

    @property
    def rows(self) -> int:
        """Rows of the first layer in the range (what the progress bar counts)."""
        return (self.stop - self.start) * self.layers[0].rows_per_sample

    def _read(self, k: int, s0: int, s1: int) -> np.ndarray:
        la, arr = self.layers[k], self.arrays[k]
        r = la.rows_per_sample
        try:
            return np.asarray(arr[s0 * r : s1 * r])
        except Exception as exc:  # noqa: BLE001  (zarr raises many types for damaged data)
            raise StoreError(f"features of {la.array!r} in split {la.split!r}, rows {s0 * r}..{s1 * r - 1}, cannot be "
                             f"read ({type(exc).__name__}: {exc}); `lintwin check` reports every chunk") from None

    def _shifted(self, k: int, s0: int, s1: int, rng: np.random.Generator) -> np.ndarray:
        lo, hi, count = self.start, self.stop, s1 - s0  # cyclic within the source's own samples
        a = lo + (s0 - lo + self.shift) % (hi - lo)
        b = a + count
        x = self._read(k, a, b) if b <= hi else np.concatenate([self._read(k, a, hi), self._read(k, lo, lo + b - hi)])
        r = self.layers[k].rows_per_sample
        return x.reshape(count, r, -1)[rng.permutation(count)].reshape(count * r, -1)

    def _block(self, s0: int, s1: int) -> list[np.ndarray]:
        # every shifted layer draws the same shuffle, so the shifted side stays paired within itself
        return [self._shifted(k, s0, s1, np.random.default_rng([self.seed, s0])) if k in self.shifted
                else self._read(k, s0, s1) for k in range(len(self.layers))]

    def blocks(self) -> Iterator[tuple[int, list[np.ndarray]]]:
        """``(sample_offset, [block of each layer])``, reading the next block while the caller computes."""
        spans = row_spans(self.stop, self.block_samples, self.start)
        with ThreadPoolExecutor(max_workers=1) as pool:
            pending = pool.submit(self._block, *spans[0]) if spans else None
            for k, (s0, _) in enumerate(spans):
                assert pending is not None
                blocks = pending.result()
                pending = pool.submit(self._block, *spans[k + 1]) if k + 1 < len(spans) else None
                yield s0, blocks

    def locate_nonfinite(self) -> None:
        """Read the rows again and raise naming the first layer and rows holding NaN/Inf (in their own split)."""
        for s0, blocks in self.blocks():
            for la, x in zip(self.layers, blocks):
                check_finite(x, f"{la.array} (split {la.split!r})", s0 * la.rows_per_sample)


class GridSink:
    """Feeds ``sink`` the blocks of some layers of a :class:`LayerSource`, each resampled to ``grid`` first.

    ``members`` are indices into the source's layers. The inner sink gets row offsets on the
    target grid (samples x positions), so a :class:`~lintwin.core.driver.FoldSink` indexes its
    rows as usual. Without ``sink`` the blocks go into one :class:`Moments` (:attr:`moments`)
    whose block names are the layers' keys. Resampling runs where the blocks are (NumPy or
    CuPy), in the moments' work precision.
    """

    def __init__(self, layers: Sequence[StoredLayer], members: Sequence[int], grid: Grid, *, precision: str,
                 kernel: bool = False, sink: Sink | None = None, names: Sequence[str] | None = None):
        self.members, self.grid = list(members), tuple(grid)
        self.sources = [layers[i].grid for i in self.members]
        for i in self.members:
            if len(layers[i].grid) != len(self.grid) or (len(self.grid) != 2 and layers[i].grid != self.grid):
                raise ShapeError(f"{layers[i].describe()} cannot be resampled to a {grid_text(self.grid)} grid")
        self.precision = precision
        self.positions = int(np.prod(self.grid)) if self.grid else 1
        self.moments: Moments | None = None
        if sink is None:
            self.moments = Moments(*(layers[i].dim for i in self.members),
                                   names=list(names or [layers[i].key for i in self.members]), precision=precision,  # type: ignore[arg-type]
                                   kernel=kernel)
            sink = MomentsSink(self.moments)
        self.sink = sink

    def update(self, lo: int, blocks: Sequence[Any]) -> None:
        xs = []
        for i, src in zip(self.members, self.sources):
            x = blocks[i]
            if src != self.grid:
                xp = namespace(x)
                work = xp.float32 if self.precision == "float32" else xp.float64
                x = resample_rows(x if x.dtype == work else xp.astype(x, work), src, self.grid)
            xs.append(x)
        self.sink.update(lo * self.positions, xs)

    def is_finite(self) -> bool:
        return self.sink.is_finite()

    def check_finite(self) -> None:
        self.sink.check_finite()
