"""The ``lintwin`` command line: thin Typer commands over the library API, one module per area."""

from __future__ import annotations

# Each module registers its commands on ``app``.
from . import (  # noqa: F401
    fit_cmds,
    layer_cmds,
    layer_similarity_cmd,
    neighbours_cmd,
    pipeline_cmds,
    similarity_cmd,
    stitch_cmds,
    store_cmds,
    study_cmds,
)
from ._common import app

__all__ = ["app", "main"]


def main() -> None:
    app()
