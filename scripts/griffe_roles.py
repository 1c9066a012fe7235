"""A griffe extension for the API reference: Sphinx roles in docstrings become inline code.

lintwin's docstrings name other objects as ``:class:`Moments``` or ``:meth:`~Moments.merge```;
mkdocstrings renders Markdown, where such a role would show as literal text. The role becomes
the code span it stands for (``~`` keeps the last dotted part, as Sphinx does).
"""

from __future__ import annotations

import re
from typing import Any

import griffe

_ROLE = re.compile(r":(?:class|meth|func|attr|mod|data|exc|obj):`(~?)([^`]+)`")


def _code(match: re.Match[str]) -> str:
    name = match.group(2)
    return f"`{name.rsplit('.', 1)[-1] if match.group(1) else name}`"


class SphinxRolesAsCode(griffe.Extension):
    """Rewrite ``:role:`target``` to ```target``` in every docstring as griffe loads it."""

    def on_instance(self, *, obj: griffe.Object, **kwargs: Any) -> None:
        if obj.docstring is not None:
            obj.docstring.value = _ROLE.sub(_code, obj.docstring.value)
