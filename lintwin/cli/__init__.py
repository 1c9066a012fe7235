"""The ``lintwin`` command line: thin Typer commands over the library API, one module per area."""

from __future__ import annotations

# Each module registers its commands on ``app``.
from . import fit_cmds, layer_cmds, neighbours_cmd, pipeline_cmds, similarity_cmd, store_cmds, study_cmds  # noqa: F401
from ._common import app

__all__ = ["app", "main"]


def main() -> None:
    app()
