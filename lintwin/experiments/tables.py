"""Tables in the formats the commands print: aligned text (at most 100 columns), Markdown, CSV.

A :class:`Table` holds headers and rows; :func:`fit_width` rebuilds a table with short aliases
for network names (and a legend saying what each stands for) when its text would be wider than
:data:`TEXT_WIDTH`.
"""

from __future__ import annotations

import csv
import io
import string
import textwrap
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from enum import StrEnum

from .report import format_table

__all__ = ["TEXT_WIDTH", "OutputFormat", "Table", "aliases", "fit_width"]

TEXT_WIDTH = 100


class OutputFormat(StrEnum):
    """What ``--format`` takes."""

    text = "text"
    json = "json"
    csv = "csv"
    markdown = "markdown"


@dataclass
class Table:
    """A titled table; ``legend`` lines say what aliases and symbols in it stand for."""

    headers: list[str]
    rows: list[list[object]]
    title: str = ""
    legend: list[str] = field(default_factory=list)

    def text(self) -> str:
        """Aligned text; the title and legend lines are wrapped at :data:`TEXT_WIDTH`."""
        def wrap(line: str) -> str:
            return textwrap.fill(line, TEXT_WIDTH, break_on_hyphens=False)

        parts = ([wrap(self.title)] if self.title else []) + [format_table(self.headers, self.rows)]
        return "\n".join(parts + [wrap(line) for line in self.legend])

    def width(self) -> int:
        """Columns the aligned text table needs (title and legend lines wrap; they are not counted)."""
        return max(len(line) for line in format_table(self.headers, self.rows).splitlines())

    def markdown(self) -> str:
        def cell(v: object) -> str:
            return _plain(v).replace("|", "\\|")

        numeric = [bool(self.rows) and all(isinstance(r[i], (int, float)) for r in self.rows)
                   for i in range(len(self.headers))]
        lines = ([f"**{self.title}**", ""] if self.title else []) + [
            "| " + " | ".join(cell(h) for h in self.headers) + " |",
            "|" + "|".join("---:" if n else "---" for n in numeric) + "|",
            *("| " + " | ".join(cell(v) for v in r) + " |" for r in self.rows)]
        if self.legend:
            lines += [""] + self.legend
        return "\n".join(lines)

    def csv(self) -> str:
        buf = io.StringIO()
        w = csv.writer(buf, lineterminator="\n")
        w.writerow(self.headers)
        for r in self.rows:
            w.writerow(["" if v is None else v for v in r])
        return buf.getvalue().rstrip("\n")


def _plain(v: object) -> str:
    if v is None:
        return ""
    if isinstance(v, float):
        return f"{v:.4f}" if abs(v) >= 1e-3 or v == 0 else f"{v:.3e}"
    return str(v)


def aliases(names: Sequence[str]) -> dict[str, str]:
    """Short names for networks: A, B, C, ... (then N27, N28, ...)."""
    letters = string.ascii_uppercase
    return {n: letters[i] if i < len(letters) else f"N{i + 1}" for i, n in enumerate(names)}


def fit_width(build: Callable[[Callable[[str], str]], Table], names: Sequence[str],
              width: int = TEXT_WIDTH) -> Table:
    """``build(name_of)`` with full names, or with aliases and a legend when that is wider than ``width``."""
    full = build(lambda n: n)
    if full.width() <= width:
        return full
    short = aliases(names)
    table = build(lambda n: short.get(n, n))
    table.legend = ["where " + ", ".join(f"{a} = {n}" for n, a in short.items())] + table.legend
    return table
