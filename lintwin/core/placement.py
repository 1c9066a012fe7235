"""Where arrays live: one placement object (array namespace + device), made once at the boundary.

Every pass moves host blocks with :meth:`Placement.put` and brings results home with
:meth:`Placement.to_host`; nothing below the boundary looks at a device string again
(himalaya's backend object, with the namespace still taken from ``array_api_compat``).
The spelling users give is ``"auto"`` (the GPU when CuPy sees one, else the CPU), ``"cpu"``,
``"gpu"`` (GPU 0) or ``"gpu:N"``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

import array_api_compat.numpy as np_compat
import numpy as np

from ..errors import LintwinError
from . import gpu
from .xp import device as array_device
from .xp import from_numpy, namespace, to_numpy

__all__ = ["DEFAULT_DEVICE", "Feed", "Placement", "check_device", "placement", "placement_of"]

DEFAULT_DEVICE = "auto"
_SPEC = re.compile(r"auto|cpu|gpu(?::(\d+))?")


@dataclass(frozen=True)
class Placement:
    """An array namespace and a device on it; ``label`` says which in reports (``cpu``, ``gpu:0``)."""

    xp: Any
    device: Any
    label: str
    note: str = ""  # why this placement, where "auto" chose it
    _like: Any = None  # a tiny array on the device, for namespaces that place by example

    @property
    def is_gpu(self) -> bool:
        return self.label.startswith("gpu")

    @property
    def is_host(self) -> bool:
        """True when arrays live in host memory as NumPy arrays (no copies to move them)."""
        return self._like is None and not self.is_gpu

    def put(self, a: Any) -> Any:
        """``a`` (a host array, or an array already here) in this namespace, on this device."""
        if self.is_host:
            return np.asarray(a)
        if self.is_gpu and isinstance(a, np.ndarray):
            return gpu.put_on_gpu(a, int(self.label.split(":")[1]))
        if namespace(a) is self.xp and str(array_device(a)) == str(self.device):
            return a
        return from_numpy(to_numpy(a), self._like)

    def to_host(self, x: Any) -> np.ndarray:
        """A NumPy copy of ``x`` (no copy for host arrays)."""
        return to_numpy(x)

    @property
    def spec(self) -> str:
        """The device spelling that makes this placement elsewhere (a Dask worker): ``cpu``, ``gpu:N`` or, for
        another library's device, ``auto``."""
        return self.label if self.label == "cpu" or self.is_gpu else DEFAULT_DEVICE

    @property
    def gpu_index(self) -> int:
        return int(self.label.split(":")[1])

    def feed(self) -> Feed:
        """What moves a pass's joined host blocks here: on a GPU a ring of device buffers filled on a copy
        stream (:class:`lintwin.core.gpu.DeviceFeed`), elsewhere :meth:`put` per block."""
        if self.is_gpu:
            return gpu.DeviceFeed(self.gpu_index)
        return Feed(self)

    def host_empty(self, shape: tuple[int, ...], dtype: Any) -> np.ndarray:
        """A host buffer for blocks bound here: page-locked (pinned) memory for a GPU, plain NumPy elsewhere."""
        if self.is_gpu:
            return gpu.pinned_empty(shape, dtype)
        return np.empty(shape, dtype)

    @property
    def spare_buffers(self) -> int:
        """Host block buffers a reader keeps beyond its read-ahead: one on a GPU, whose copy of a block
        may still be in flight when the next block is asked for (double/triple buffering)."""
        return 1 if self.is_gpu else 0

    def describe(self) -> str:
        """One phrase for reports: the device used and, where ``auto`` chose the CPU, why."""
        return f"{self.label} ({self.note})" if self.note else self.label


class Feed:
    """Moves one joined host block per :meth:`put` with :meth:`Placement.put`; nothing to fence."""

    def __init__(self, place: Placement):
        self.place = place

    def put(self, a: Any) -> tuple[Any, Any]:
        """``(a here, fence)``: the fence is what a reader waits on before reusing ``a`` (None: nothing)."""
        return self.place.put(a), None

    def done(self) -> None:
        """Every sink has been given the last block put."""


def check_device(spec: str) -> str:
    """Refuse a device spelling other than auto, cpu, gpu or gpu:N (before any work)."""
    if not isinstance(spec, str) or not _SPEC.fullmatch(spec):
        raise LintwinError(f"device must be auto, cpu, gpu or gpu:N, got {spec!r}")
    return spec


def placement(spec: str | Placement | None = DEFAULT_DEVICE) -> Placement:
    """The placement for a user's device spelling (``None`` = the default, ``auto``)."""
    if isinstance(spec, Placement):
        return spec
    spec = check_device(DEFAULT_DEVICE if spec is None else spec)
    if spec == "cpu":
        return Placement(np_compat, "cpu", "cpu")
    usable, why = gpu.gpu_status()
    if spec == "auto":
        if not usable:
            return Placement(np_compat, "cpu", "cpu", note=f"auto: {why}")
        index = 0
    else:
        index = int(spec.split(":")[1]) if ":" in spec else 0
        if not usable:
            raise LintwinError(f"--device {spec} cannot be used: {why}; install lintwin[gpu] or use --device cpu")
        if index >= gpu.gpu_count():
            raise LintwinError(f"--device {spec}: there are only {gpu.gpu_count()} GPU(s) (gpu:0 .. "
                               f"gpu:{gpu.gpu_count() - 1})")
    import cupy  # CuPy-only branch: the namespace of GPU arrays

    return Placement(namespace(cupy.zeros(0)), gpu.cupy_device(index), f"gpu:{index}")


def placement_of(x: Any) -> Placement:
    """The placement of an existing array (its namespace and device)."""
    xp = namespace(x)
    if isinstance(x, np.ndarray):
        return Placement(np_compat, "cpu", "cpu")
    dev = array_device(x)
    if type(x).__module__.startswith("cupy"):
        return Placement(xp, dev, f"gpu:{dev.id}")
    return Placement(xp, dev, str(dev), _like=xp.empty((0,), device=dev))
