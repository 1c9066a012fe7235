"""Result objects that behave like the results users know from pandas, xarray and scikit-learn.

:class:`NamedResult` gives a result item and attribute access to its named values
(``sim["cka"]``, ``sim.cka``), ``keys()``, ``to_dict()`` (JSON-ready), ``to_frame()`` (a
:class:`pandas.DataFrame`) and a one-line ``repr``; each result says what its named values are.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Mapping
from typing import Any

import pandas as pd

__all__ = ["NamedResult", "short_number"]


def short_number(v: Any) -> str:
    """A value for a one-line repr: 4 significant digits, None and NaN as such."""
    if v is None:
        return "None"
    if isinstance(v, float):
        return "nan" if math.isnan(v) else f"{v:.4g}"
    return str(v)


class NamedResult:
    """Item and attribute access to named values, ``to_dict``, ``to_frame`` and a one-line ``repr``.

    Subclasses (dataclasses with ``repr=False``) define :meth:`_named` (the values by name),
    :meth:`as_dict` (everything, JSON-ready), :meth:`to_frame` and :meth:`_summary` (the repr's body).
    """

    def _named(self) -> Mapping[str, Any]:
        raise NotImplementedError

    def _summary(self) -> str:
        raise NotImplementedError

    def as_dict(self) -> dict[str, Any]:
        raise NotImplementedError

    def to_frame(self) -> pd.DataFrame:
        raise NotImplementedError

    def to_dict(self) -> dict[str, Any]:
        """Everything the result holds, as plain Python (what its JSON file holds)."""
        return self.as_dict()

    def keys(self) -> list[str]:
        """The names item and attribute access take."""
        return list(self._named())

    def __getitem__(self, key: str) -> Any:
        named = self._named()
        if key not in named:
            raise KeyError(f"{key!r} is not a value of this {type(self).__name__} (it has {', '.join(named)})")
        return named[key]

    def __contains__(self, key: object) -> bool:
        return key in self._named()

    def __iter__(self) -> Iterator[str]:
        return iter(self._named())

    def __len__(self) -> int:
        return len(self._named())

    def __getattr__(self, name: str) -> Any:
        # Only reached when ordinary lookup fails: fields and methods always win over value names.
        if name.startswith("_") or name in getattr(type(self), "__dataclass_fields__", {}):
            raise AttributeError(name)
        named = self._named()
        if name in named:
            return named[name]
        raise AttributeError(f"{type(self).__name__!r} object has no attribute or value {name!r}")

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self._summary()})"
