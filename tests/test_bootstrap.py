"""Bootstrap intervals for Table 1: paired, covering the estimate, as wide as binomial theory says."""

from __future__ import annotations

import numpy as np
import pytest

from lintwin.errors import LintwinError, ShapeError
from lintwin.measures.bootstrap import bootstrap_table, default_losses


def hits(n: int, seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    a = rng.random(n) < 0.9
    b = rng.random(n) < 0.88
    ab = np.where(rng.random(n) < 0.95, b, ~b)  # mostly agrees with B, per image
    ba = np.where(rng.random(n) < 0.95, a, ~a)
    return {"A": a, "B": b, "A→B": ab, "B→A": ba}


def test_intervals_cover_the_estimate_and_default_losses():
    h = hits(2000)
    t = bootstrap_table(h, n_boot=500, seed=1)
    assert default_losses(list(h)) == {"A→B": ("B", "A→B"), "B→A": ("A", "B→A")}
    for k, v in h.items():
        r = t["accuracy"][k]
        assert r["estimate"] == pytest.approx(100 * v.mean())
        assert r["low"] <= r["estimate"] <= r["high"]
    loss = t["loss"]["A→B"]
    assert loss["estimate"] == pytest.approx(100 * (h["B"].mean() - h["A→B"].mean()))
    assert loss["low"] <= loss["estimate"] <= loss["high"]


def test_width_matches_binomial_and_shrinks_with_n():
    widths = {}
    for n in (1000, 16000):
        t = bootstrap_table(hits(n, seed=2), n_boot=1000, seed=3)
        r = t["accuracy"]["A"]
        p = r["estimate"] / 100
        expected = 2 * 1.96 * np.sqrt(p * (1 - p) / n) * 100
        assert r["high"] - r["low"] == pytest.approx(expected, rel=0.15)
        widths[n] = r["high"] - r["low"]
    assert widths[16000] < widths[1000] / 3


def test_paired_resampling():
    """Identical configurations give a zero-width loss interval; unpaired draws would not."""
    h = hits(500)
    t = bootstrap_table({"B": h["B"], "A→B": h["B"].copy()}, n_boot=200)
    assert t["loss"]["A→B"] == {"estimate": 0.0, "low": 0.0, "high": 0.0}


def test_refusals():
    with pytest.raises(ShapeError):
        bootstrap_table({"A": np.ones(5, bool), "B": np.ones(6, bool)})
    with pytest.raises(LintwinError, match="booleans"):
        bootstrap_table({"A": np.array([0.5, 1.0])})
    with pytest.raises(LintwinError, match="unknown"):
        bootstrap_table({"A": np.ones(5, bool)}, losses={"x": ("A", "C")})
    with pytest.raises(LintwinError, match="level"):
        bootstrap_table({"A": np.ones(5, bool)}, level=1.5)
