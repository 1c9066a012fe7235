"""Every figure lintwin writes, rendered with matplotlib's own renderer: no text outside the canvas, none overlapping.

The figures come from the same builders the commands save (study heatmaps, similarity, Fig. 5,
ridge-CV curves, Adam loss curves), fed with long network names and wide numbers, which is
where labels get clipped or collide.
"""

from __future__ import annotations

import numpy as np
import pytest
from figure_layout import layout_problems

from lintwin.core.moments import Moments
from lintwin.experiments.compare import Regions
from lintwin.experiments.report import loss_curve_figure, new_figure, regions_figure, ridge_cv_figure
from lintwin.experiments.similarity_report import similarity_figure
from lintwin.experiments.study import StudyResult
from lintwin.experiments.study_report import study_figures
from lintwin.measures.similarity import similarity

LONG = ["fmnist-resnet", "fmnist-inception", "fmnist-vgg", "fmnist-mobilenet", "fmnist-mlp", "fmnist-resnet-s1"]


def _study(names: list[str], seed: int = 0) -> StudyResult:
    rng = np.random.default_rng(seed)
    n = len(names)

    def mat(lo: float, hi: float, diag: float | None) -> list[list[float | None]]:
        m = rng.uniform(lo, hi, (n, n)).tolist()
        for i in range(n):
            m[i][i] = diag
        return m

    kinds = {kind: {"accuracy": mat(85, 92, 91.0), "loss": mat(-4, 5.3, 0.0), "agreement": mat(80, 99, 100.0),
                    "r2": mat(0.3, 0.97, 1.0)} for kind in ("fitted", "heads")}
    sim = {key: mat(0.4, 0.99, None) for key in ("cka", "cca_mean_rho", "svcca", "pwcca", "procrustes")}
    return StudyResult(names, [128] * n, "lstsq", "train", "val", 10000, 60000, [91.0] * n, kinds,
                       {"fitted": [], "heads": []}, {"mode": "joint"}, {}, similarity=sim)


@pytest.mark.parametrize("names", [LONG, LONG[:2], ["a", "b", "c"],
                                   ["mobilenet_v2", "efficientnet_lite0", "a-very-long-network-name-v2-imagenet1k"]])
def test_study_heatmaps_lay_out(names):
    figs = study_figures(_study(names))
    assert set(figs) == {"loss", "accuracy", "r2", "heads_loss", "heads_accuracy", "heads_r2", "similarity_cka",
                         "similarity_svcca", "similarity_pwcca"}
    for stem, fig in figs.items():
        assert layout_problems(fig) == [], stem


def test_similarity_heatmap_is_symmetric_with_its_diagonal_and_range():
    fig = study_figures(_study(LONG[:3]))["similarity_cka"]
    ax = fig.axes[0]
    assert ax.get_xlabel() == ax.get_ylabel() == "network"
    img = ax.get_images()[0]
    assert img.get_clim() == (0.0, 1.0)
    assert np.all(np.diag(img.get_array()) == 1.0)  # CKA of a network with itself, drawn


def _sim(n_rows: int, da: int = 12, db: int = 9):
    rng = np.random.default_rng(1)
    a = rng.standard_normal((n_rows, da))
    b = a[:, :db] + 0.5 * rng.standard_normal((n_rows, db))
    m = Moments(da, db, names=("fmnist-inception", "fmnist-resnet-s1"), precision="float64", kernel=True).update(a, b)
    return similarity(m)


def test_similarity_figure_lays_out_and_marks_a_degenerate_cca():
    plain = similarity_figure(_sim(500))
    assert layout_problems(plain) == []
    assert not any("degenerate" in t.get_text() for t in plain.axes[0].texts)
    degenerate = similarity_figure(_sim(8))  # 8 rows, 12 + 9 units: every canonical correlation is 1
    assert layout_problems(degenerate) == []
    assert any("degenerate" in t.get_text() for t in degenerate.axes[0].texts)


def test_fig5_regions_lay_out():
    rng = np.random.default_rng(2)
    hits = [rng.random(70000) < p for p in (0.92, 0.91, 0.9)]
    regs = [Regions.from_hits("fmnist-inception", "fmnist-resnet-s1", *hits),
            Regions.from_hits("fmnist-resnet-s1", "fmnist-inception", hits[1], hits[0], hits[2])]
    assert layout_problems(regions_figure(regs, "Fashion-MNIST: residual vs Inception-style network")) == []


@pytest.mark.parametrize("scored_by", ["feature error", "top-1 agreement"])
def test_ridge_cv_curves_lay_out(scored_by):
    lambdas = np.logspace(-3, 5, 33).tolist()
    err = (0.2 + 0.05 * (np.log10(lambdas) - 2.5) ** 2 / 10).tolist()
    cv = {"lambdas": lambdas, "cv_error": err, "agreement": (0.9 - np.asarray(err) / 10).tolist(),
          "chosen": lambdas[-3], "folds": 5, "scored_by": scored_by,
          "direction": "efficientnet_lite0→mobilenet_v2"}
    assert layout_problems(ridge_cv_figure(cv)) == []


def test_adam_loss_curve_lays_out():
    curve = 0.5 * np.exp(-np.arange(100_000) / 20_000) + 0.1
    fig = loss_curve_figure({"fmnist-inception→fmnist-resnet-s1": curve}, reference={"closed form": 0.11})
    assert layout_problems(fig) == []


def test_the_check_finds_clipped_and_overlapping_text():
    """The check itself: a title wider than its figure and two labels on one spot are reported."""
    fig, ax = new_figure(figsize=(2, 2))
    ax[0, 0].set_title("a title far too long for a figure two inches wide")
    ax[0, 0].text(0.5, 0.5, "here", transform=ax[0, 0].transAxes)
    ax[0, 0].text(0.5, 0.5, "there", transform=ax[0, 0].transAxes)
    problems = layout_problems(fig)
    assert any("outside the canvas" in p for p in problems)
    assert any("'here' overlaps 'there'" in p for p in problems)
    fig2, ax2 = new_figure(figsize=(3, 2))
    ax2[0, 0].text(0.9, 0.5, "crossing the frame")
    assert any("crosses the frame" in p for p in layout_problems(fig2))
