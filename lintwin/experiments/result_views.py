"""pandas and xarray views of a comparison (Table 1) and of a study (N×N matrices).

``CompareView`` names Table 1's values ``accuracy_a``, ``accuracy_b``, ``accuracy_ab``,
``accuracy_ba`` (percent), ``loss_ab``, ``loss_ba`` (percentage points) and ``agreement_ab``,
``agreement_ba`` (share of images); ``to_frame()`` is Table 1 itself. ``StudyView`` names each
N×N matrix (``accuracy``, ``loss``, ``agreement``, ``r2`` and the similarity measures) as a
labelled :class:`xarray.DataArray` with ``source`` and ``target`` network coordinates;
``to_xarray()`` gives them all as one :class:`xarray.Dataset`, ``to_frame()`` one row per
ordered pair.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
import xarray as xr

from ..results import NamedResult, short_number

__all__ = ["CompareView", "StudyView"]

_ROWS = ("a", "b", "ab", "ba")  # Table 1's rows, in order: A, B, A→B, B→A


class CompareView(NamedResult):
    """Item/attribute access, pandas and a one-line repr for :class:`~lintwin.experiments.compare.CompareResult`."""

    a: str
    b: str
    method: str
    eval_split: str
    images: int
    table: list[dict[str, Any]]

    def _named(self) -> dict[str, float | None]:
        out: dict[str, float | None] = {}
        for key, r in zip(_ROWS, self.table):
            out[f"accuracy_{key}"] = r["percent"]
        for key, r in zip(_ROWS[2:], self.table[2:]):
            out[f"loss_{key}"] = r["loss"]
            out[f"agreement_{key}"] = r.get("agreement")
        return out

    def _summary(self) -> str:
        v = self._named()
        return (f"{self.a} vs {self.b}, {self.images} {self.eval_split} images, {self.method}: accuracy "
                f"{v['accuracy_a']:.2f}% / {v['accuracy_b']:.2f}%, mapped {v['accuracy_ab']:.2f}% / "
                f"{v['accuracy_ba']:.2f}%, loss_ab {v['loss_ab']:+.2f} pp, loss_ba {v['loss_ba']:+.2f} pp")

    def to_frame(self) -> pd.DataFrame:
        """Table 1: one row per configuration (index ``description``), intervals as low/high columns."""
        rows = []
        for r in self.table:
            lo, hi = r.get("percent_ci", (None, None))
            llo, lhi = r.get("loss_ci", (None, None))
            rows.append({"description": r["description"], "mapping": r["mapping"], "correct": r["correct"],
                         "percent": r["percent"], "percent_low": lo, "percent_high": hi, "loss": r["loss"],
                         "loss_low": llo, "loss_high": lhi, "agreement": r.get("agreement")})
        frame = pd.DataFrame(rows).set_index("description")
        frame.attrs.update(networks=[self.a, self.b], images=self.images, eval_split=self.eval_split)
        return frame


class StudyView(NamedResult):
    """Labelled matrices, pandas and a one-line repr for :class:`~lintwin.experiments.study.StudyResult`."""

    networks: list[str]
    method: str
    eval_split: str
    images: int
    matrices: dict[str, dict[str, list[list[float | None]]]]
    pairs: dict[str, list[dict[str, Any]]]
    similarity: dict[str, list[list[float | None]]]

    @property
    def kind(self) -> str:
        """The maps the study is about: ``fitted`` (features) or ``heads`` (with ``--method heads``)."""
        return "heads" if self.method == "heads" else "fitted"

    def _matrix(self, values: list[list[float | None]], name: str, **attrs: Any) -> xr.DataArray:
        arr = np.array([[np.nan if v is None else float(v) for v in row] for row in values], dtype=float)
        return xr.DataArray(arr, dims=("source", "target"), name=name,
                            coords={"source": list(self.networks), "target": list(self.networks)}, attrs=attrs)

    def _named(self) -> dict[str, xr.DataArray]:
        out = {key: self._matrix(m, key, maps=self.kind) for key, m in self.matrices.get(self.kind, {}).items()}
        out.update({key: self._matrix(m, key, symmetric=1) for key, m in self.similarity.items()})
        return out

    def to_xarray(self, kind: str | None = None) -> xr.Dataset:
        """Every N×N matrix of ``kind`` (default: the study's maps) and the similarity matrices, as one Dataset."""
        kind = kind or self.kind
        if kind not in self.matrices:
            raise KeyError(f"no {kind!r} maps in this study (it has {', '.join(self.matrices)})")
        data = {key: self._matrix(m, key) for key, m in self.matrices[kind].items()}
        data.update({key: self._matrix(m, key) for key, m in self.similarity.items()})
        ds = xr.Dataset(data)
        ds.attrs.update(maps=kind, method=self.method, eval_split=self.eval_split, images=self.images)
        return ds

    def to_frame(self, kind: str | None = None) -> pd.DataFrame:
        """One row per ordered pair (index ``source``, ``target``): accuracy, loss, agreement, R², Fig. 5 counts."""
        kind = kind or self.kind
        rows = [{"source": r["src"], "target": r["dst"], "accuracy": r["accuracy"], "loss": r["loss"],
                 "agreement": r["agreement"], "r2": r["feature_metrics"].get("r2"),
                 "target_errors": r["target_errors"], "fixed": r["fixed"], "broken": r["broken"]}
                for r in self.pairs.get(kind, [])]
        frame = pd.DataFrame(rows).set_index(["source", "target"])
        frame.attrs.update(maps=kind, eval_split=self.eval_split, images=self.images)
        return frame

    def _summary(self) -> str:
        rows = self.pairs.get(self.kind, [])
        losses = [r["loss"] for r in rows]
        med = short_number(float(np.median(losses))) if losses else "None"
        return (f"{len(self.networks)} networks, {self.method}, {self.images} {self.eval_split} images, "
                f"median loss {med} pp over {len(rows)} ordered pairs")
