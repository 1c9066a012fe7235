"""CuPy-only code, kept here: whether a GPU can be used (and why not), CuPy arrays on a chosen GPU, and the
GPU side of the block pipeline.

- :class:`DeviceFeed`: a ring of device block buffers filled from pinned host buffers on a copy
  stream; the compute stream waits on an event, so block k+1 travels while block k is multiplied,
  and the host never waits on the device inside a pass (a reader waits, in its own thread, on the
  copy's event before it reuses a host buffer).
- :func:`block_sums`: one block's share of the moments (:mod:`lintwin.core.block_moments` gives the
  math and its NumPy reference): one fused kernel for the float64 column sums and the shift by the
  block's mean, then cuBLAS SYRK of the shifted block (TF32: a GEMM with TF32 tensor-core math);
  :func:`add_gram` merges it into the float64 co-moment on the device.
- :func:`ort_predict`: a head's top-1 predictions from device features through onnxruntime's CUDA
  provider, input and output bound to device memory (IO binding).
- :func:`device_memory`: free and total bytes of a GPU, for budgets.

None of this has run on a GPU yet: tests that need one skip without it, and ``bench/bench_gpu.py``
measures it where a GPU exists.
"""

from __future__ import annotations

from typing import Any

import numpy as np

__all__ = ["DeviceFeed", "add_gram", "block_sums", "device_memory", "gpu_available", "gpu_count", "gpu_status",
           "is_cupy", "ort_predict", "pinned_empty", "put_on_gpu"]

# Column sums in float64 and the shift, fused: a thread block owns 32 columns and walks every row
# with 8 row lanes (coalesced reads of consecutive columns), reduces its lanes' sums in shared
# memory, rounds the mean to the work type and writes the shifted block (in place when w is z).
_SHIFT_SOURCE = r"""
extern "C" __global__ void lintwin_shift_colsum(const T* z, T* w, double* colsum, T* shift,
                                                const long long n, const long long d) {
    __shared__ double part[8][33];
    __shared__ T mean[32];
    const int tx = threadIdx.x, ty = threadIdx.y;
    const long long c = (long long)blockIdx.x * 32 + tx;
    double acc = 0.0;
    if (c < d) {
        for (long long r = ty; r < n; r += 8) acc += (double)z[r * d + c];
    }
    part[ty][tx] = acc;
    __syncthreads();
    if (ty == 0) {
        double total = 0.0;
        for (int k = 0; k < 8; ++k) total += part[k][tx];
        T m = (T)(total / (double)n);
        mean[tx] = m;
        if (c < d) { colsum[c] = total; shift[c] = m; }
    }
    __syncthreads();
    if (c < d) {
        const T m = mean[tx];
        for (long long r = ty; r < n; r += 8) w[r * d + c] = z[r * d + c] - m;
    }
}
"""

# acc (float64, d x d) += G, reading G's upper triangle for both halves (what SYRK computed).
_ADD_UPPER = ("raw T g, int64 d", "float64 acc",
              "long long r = i / d, c = i % d; acc += (double)(r <= c ? g[r * d + c] : g[c * d + r]);",
              "lintwin_add_upper")


def is_cupy(x: Any) -> bool:
    """Whether ``x`` is a CuPy array (without importing CuPy)."""
    return type(x).__module__.startswith("cupy")


def pinned_empty(shape: tuple[int, ...], dtype: Any) -> np.ndarray:
    """A NumPy array in page-locked host memory (asynchronous host→device copies need it)."""
    import cupyx

    return cupyx.empty_pinned(shape, dtype=dtype)


def device_memory(index: int) -> tuple[int, int]:
    """``(free, total)`` bytes of GPU ``index``."""
    import cupy

    free, total = cupy.cuda.Device(index).mem_info
    return int(free), int(total)


class DeviceFeed:
    """Moves joined host blocks to GPU ``index`` on a copy stream, into a ring of ``slots`` device buffers.

    :meth:`put` queues the copy of a (pinned) host block and makes the compute stream wait for it;
    :meth:`done` marks the slot free once the work queued on it so far has run. A slot is filled
    again only after that (the copy stream waits, not the host).
    """

    def __init__(self, index: int, slots: int = 3):
        import cupy

        self.cupy, self.index, self.slots = cupy, index, slots
        with cupy.cuda.Device(index):
            self.copy_stream = cupy.cuda.Stream(non_blocking=True)
        self.ring: list[Any] = [None] * slots
        self.free_at: list[Any] = [None] * slots
        self.k, self.current = 0, 0

    def put(self, a: np.ndarray) -> tuple[Any, Any]:
        """``(device view of a, copy event)``; the event is the host buffer's fence."""
        cp = self.cupy
        with cp.cuda.Device(self.index):
            slot = self.k % self.slots
            buf = self.ring[slot]
            if buf is None or buf.shape[0] < a.shape[0] or buf.shape[1:] != a.shape[1:] or buf.dtype != a.dtype:
                buf = self.ring[slot] = cp.empty(a.shape, dtype=a.dtype)
            dst = buf[: a.shape[0]]
            if self.free_at[slot] is not None:
                self.copy_stream.wait_event(self.free_at[slot])
            dst.set(a, stream=self.copy_stream)
            copied = self.copy_stream.record()
            cp.cuda.get_current_stream().wait_event(copied)
            self.current, self.k = slot, self.k + 1
            return dst, copied

    def done(self) -> None:
        with self.cupy.cuda.Device(self.index):
            self.free_at[self.current] = self.cupy.cuda.get_current_stream().record()


def _buffer(store: dict[str, Any], name: str, shape: tuple[int, ...], dtype: Any) -> Any:
    import cupy

    have = store.get(name)
    if have is None or have.shape[0] < shape[0] or have.shape[1:] != shape[1:] or have.dtype != dtype:
        have = store[name] = cupy.empty(shape, dtype=dtype)
    return have[: shape[0]]


def block_sums(z: Any, precision: str, own: bool, buffers: dict[str, Any]) -> tuple[int, Any, Any, Any, bool]:
    """``(n, float64 column sums, shift, G, upper_only)`` of a CuPy block (see :mod:`lintwin.core.block_moments`).

    ``own``: ``z`` may be shifted in place. ``buffers`` keeps the work buffers and compiled kernels
    of one accumulator from block to block.
    """
    import cupy
    from cupy_backends.cuda.libs import cublas

    work = cupy.float64 if precision == "float64" else cupy.float32
    n, d = (int(v) for v in z.shape)
    if z.dtype != work or not z.flags.c_contiguous:
        z, own = cupy.ascontiguousarray(z, dtype=work), True
    w = z if own else _buffer(buffers, "work", (n, d), work)
    key = f"kernel_{np.dtype(work).name}"
    if key not in buffers:
        ctype = "double" if work == cupy.float64 else "float"
        buffers[key] = cupy.RawKernel(f"typedef {ctype} T;\n" + _SHIFT_SOURCE, "lintwin_shift_colsum")
    colsum, shift = cupy.empty(d, dtype=cupy.float64), cupy.empty(d, dtype=work)
    buffers[key](((d + 31) // 32,), (32, 8), (z, w, colsum, shift, np.int64(n), np.int64(d)))
    g = _buffer(buffers, "gram", (d, d), work)
    if precision == "tf32":
        handle = cupy.cuda.device.get_cublas_handle()
        mode = cublas.getMathMode(handle)
        cublas.setMathMode(handle, getattr(cublas, "CUBLAS_TF32_TENSOR_OP_MATH", 3))  # cuBLAS's value
        try:
            cupy.cublas.gemm("T", "N", w, w, out=g)
        finally:
            cublas.setMathMode(handle, mode)
        return n, colsum, shift, g, False
    cupy.cublas.syrk("T", w, out=g, alpha=1.0, beta=0.0, lower=False)
    return n, colsum, shift, g, True


def add_gram(acc: Any, g: Any, upper_only: bool) -> None:
    """``acc += G`` in float64 on the device; with ``upper_only`` G's lower half is read from its upper one."""
    import cupy

    if not upper_only:
        acc += g
        return
    kernel = cupy.ElementwiseKernel(*_ADD_UPPER)  # CuPy caches the compiled kernel by its source
    kernel(g, np.int64(g.shape[0]), acc)


def ort_predict(session: Any, input_name: str, x: Any) -> Any:
    """Top-1 classes of CuPy features ``x`` by an onnxruntime session on the CUDA provider, kept on the GPU.

    Input and output are bound to device memory (no device→host→device); onnxruntime runs on its
    own stream, so the current stream is synchronised first (a wait, not a copy). A session
    without the CUDA provider gets the features through the host.
    """
    import cupy

    if "CUDAExecutionProvider" not in session.get_providers():
        out = session.run(None, {input_name: cupy.asnumpy(x).astype(np.float32)})[0]
        return cupy.asarray(np.asarray(out).argmax(axis=1))
    x = cupy.ascontiguousarray(x, dtype=cupy.float32)
    meta = session.get_outputs()[0]
    logits = cupy.empty((int(x.shape[0]), int(meta.shape[-1])), dtype=cupy.float32)
    cupy.cuda.get_current_stream().synchronize()
    io = session.io_binding()
    io.bind_input(input_name, "cuda", x.device.id, np.float32, list(x.shape), x.data.ptr)
    io.bind_output(meta.name, "cuda", x.device.id, np.float32, list(logits.shape), logits.data.ptr)
    session.run_with_iobinding(io)
    return cupy.argmax(logits, axis=1)


def gpu_status() -> tuple[bool, str]:
    """``(usable, why)``: whether CuPy imports and sees a CUDA device, and the reason when it does not."""
    try:
        import cupy
    except ImportError as exc:
        return False, (f"CuPy is not installed ({exc.name or exc}): pip install 'lintwin[gpu]' "
                       "(docs/guide/scaling-out.md)")
    except Exception as exc:  # a broken CUDA installation can fail at import with many types
        return False, f"CuPy does not import ({type(exc).__name__}: {exc})"
    try:
        count = cupy.cuda.runtime.getDeviceCount()
    except Exception as exc:  # CUDARuntimeError, missing driver libraries, ...
        return False, f"CuPy cannot reach a CUDA device ({type(exc).__name__}: {exc})"
    if count == 0:
        return False, "CuPy sees no CUDA device"
    return True, f"{count} CUDA device(s)"


def gpu_available() -> bool:
    """True when CuPy imports and sees at least one CUDA device."""
    return gpu_status()[0]


def gpu_count() -> int:
    """Number of CUDA devices CuPy sees (0 when it cannot be used)."""
    if not gpu_available():
        return 0
    import cupy

    return int(cupy.cuda.runtime.getDeviceCount())


def cupy_device(index: int) -> Any:
    """The ``cupy.cuda.Device`` of GPU ``index``."""
    import cupy

    return cupy.cuda.Device(index)


def put_on_gpu(a: np.ndarray, index: int) -> Any:
    """Copy a host array onto GPU ``index``."""
    import cupy

    with cupy.cuda.Device(index):
        return cupy.asarray(a)
