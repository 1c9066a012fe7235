"""Layout check of a figure: every label inside the canvas, no two labels overlapping.

Draws the figure with its own renderer and compares the window extents of every text a reader
sees: titles, axis labels, drawn tick labels, legend entries, texts and annotations (which must
also stay inside their axes' frame when the axes has one).
"""

from __future__ import annotations

import itertools

from matplotlib.axes import Axes
from matplotlib.axis import Axis
from matplotlib.figure import Figure
from matplotlib.text import Text
from matplotlib.transforms import Bbox

__all__ = ["layout_problems"]

_SLACK = 0.5  # pixels: extents are rounded to the pixel grid


def _drawn_ticklabels(axis: Axis) -> list[Text]:
    """Tick labels of ticks inside the view (ticks outside it are not drawn)."""
    lo, hi = sorted(axis.get_view_interval())
    span = (hi - lo) * 1e-9
    out = []
    for locs, labels in ((axis.get_majorticklocs(), axis.get_majorticklabels()),
                         (axis.get_minorticklocs(), axis.get_minorticklabels())):
        out += [t for loc, t in zip(locs, labels) if lo - span <= loc <= hi + span]
    return out + [axis.get_offset_text()]


def _texts(fig: Figure) -> list[tuple[Text, Axes | None]]:
    """Every text a reader sees, with the axes whose frame it belongs inside (None: the figure's)."""
    out: list[tuple[Text, Axes | None]] = [(t, None) for t in fig.texts]
    if fig._suptitle is not None:  # noqa: SLF001  (no public accessor for the suptitle)
        out.append((fig._suptitle, None))  # noqa: SLF001
    for ax in fig.axes:
        out += [(t, None) for t in (ax.title, ax._left_title, ax._right_title)]  # noqa: SLF001
        for axis in (ax.xaxis, ax.yaxis) if ax.axison else ():  # axis("off") draws no ticks or axis labels
            out.append((axis.label, None))
            out += [(t, None) for t in _drawn_ticklabels(axis)]
        framed = ax.axison and ax.patch.get_visible()
        out += [(t, ax if framed else None) for t in ax.texts]
        legend = ax.get_legend()
        if legend is not None:
            out += [(t, None) for t in legend.get_texts()] + [(legend.get_title(), None)]
    seen: set[int] = set()  # the suptitle is also among fig.texts
    return [(t, ax) for t, ax in out if t.get_visible() and t.get_text().strip()
            and not (id(t) in seen or seen.add(id(t)))]


def _inside(inner: Bbox, outer: Bbox) -> bool:
    return (inner.x0 >= outer.x0 - _SLACK and inner.y0 >= outer.y0 - _SLACK and inner.x1 <= outer.x1 + _SLACK
            and inner.y1 <= outer.y1 + _SLACK)


def _overlap(a: Bbox, b: Bbox) -> bool:
    return min(a.x1, b.x1) - max(a.x0, b.x0) > _SLACK and min(a.y1, b.y1) - max(a.y0, b.y0) > _SLACK


def layout_problems(fig: Figure) -> list[str]:
    """What is wrong with ``fig``'s layout: labels outside the canvas or their axes' frame, labels overlapping."""
    fig.canvas.draw()
    renderer = fig.canvas.get_renderer()  # type: ignore[attr-defined]
    canvas = fig.bbox
    texts = [(t, ax, t.get_window_extent(renderer)) for t, ax in _texts(fig)]
    problems = []
    for t, ax, box in texts:
        if not _inside(box, canvas):
            problems.append(f"{t.get_text()!r} reaches outside the canvas ({box.bounds} vs {canvas.bounds})")
        elif ax is not None and not _inside(box, ax.get_window_extent(renderer)):
            problems.append(f"{t.get_text()!r} crosses the frame of its axes")
    for (t1, _, b1), (t2, _, b2) in itertools.combinations(texts, 2):
        if _overlap(b1, b2):
            problems.append(f"{t1.get_text()!r} overlaps {t2.get_text()!r}")
    return problems
