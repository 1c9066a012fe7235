"""Scoring with frozen heads in one pass: each configuration's top-1 predictions, and the maps' feature metrics.

A configuration is a head applied to a network's features, either as they are (the network itself)
or mapped by an affine map into the head's network's space. Every configuration of a pass is scored
from the same placed block; the heads run on the host (onnxruntime).
"""

from __future__ import annotations

from collections.abc import Hashable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..affine import AffineMap
from ..core.driver import run_pass
from ..core.fit_metrics import FitMetrics
from ..core.placement import Placement
from ..core.xp import to_numpy
from ..networks.onnx_models import Head
from ..storage.source import StoreSource
from ..storage.store import FeatureStore

__all__ = ["Config", "ScoreSink", "score_pass"]


@dataclass
class Config:
    """``head`` on the features of block ``src`` (mapped by ``amap`` if given; metrics against block ``dst``)."""

    key: Hashable
    src: int
    head: Head
    amap: AffineMap | None = None
    dst: int | None = None
    predictions: list[np.ndarray] = field(default_factory=list)
    metrics: FitMetrics = field(default_factory=FitMetrics)

    def result(self) -> np.ndarray:
        return np.concatenate(self.predictions) if self.predictions else np.empty(0, np.int64)


class ScoreSink:
    """Feeds each placed block to every configuration."""

    def __init__(self, configs: Sequence[Config]):
        self.configs = list(configs)

    def update(self, lo: int, blocks: Sequence[Any]) -> None:
        for c in self.configs:
            x = blocks[c.src]
            if c.amap is not None:
                x = c.amap.apply(x)
                if c.dst is not None:
                    c.metrics.update(x, blocks[c.dst])
            c.predictions.append(c.head.predict(np.asarray(to_numpy(x), np.float32)))

    def is_finite(self) -> bool:
        return all(c.metrics.is_finite() for c in self.configs)

    def check_finite(self) -> None:
        pass  # the rows were named by the driver's second read


def score_pass(store: FeatureStore, split: str, names: Sequence[str], configs: Sequence[Config], *,
               placement: Placement, progress: bool = False, desc: str | None = None) -> dict[Hashable, Config]:
    """One pass over ``names`` of ``split`` scoring every configuration; returns them by key."""
    run_pass(StoreSource(store, split, names), [ScoreSink(configs)], placement=placement, progress=progress,
             desc=desc or f"score {split} ({len(configs)} configurations)")
    return {c.key: c for c in configs}
