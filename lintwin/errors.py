"""The one exception family of lintwin: the CLI catches it and prints its message."""

from __future__ import annotations


class LintwinError(Exception):
    """Base class of every error lintwin raises on purpose (bad input, bad files)."""


class StoreError(LintwinError):
    """A feature store is missing, not a lintwin store, incomplete, or lacks a network/split."""


class ShapeError(LintwinError):
    """Arrays disagree in rows or columns, or a dimension does not match what a map/head expects."""


class NonFiniteError(LintwinError):
    """Features contain NaN or Inf."""


class MapFileError(LintwinError):
    """A map file cannot be read, or belongs to another pair of networks."""


class ModelError(LintwinError):
    """An ONNX model cannot be loaded or does not have the expected inputs/outputs."""


class UnsafePathError(LintwinError):
    """A path leads where the user did not point: a symbolic link (or a FIFO, device or socket) inside a
    store or output folder, or an output that would replace one of the command's inputs."""
