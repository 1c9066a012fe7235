"""The paper's solver: Adam on the normalised-feature loss, with the gradient written out.

Loss per row: E = ||u - v||² with u = p/||p||, v = y/||y||, p = W x + b (a zero row has no
direction: its unit vector is read as 0, see :mod:`lintwin.metrics`). For non-zero rows
E = 2 - 2 u·v, whose gradient is dE/dp = -2 (v - (u·v) u) / ||p||; at p = 0 the gradient is
taken as 0. The batch loss is the mean over rows, so dL/dW = G^T X / B and dL/db = sum(G) / B.

Two Adam variants: ``"tensorflow"`` (the default, as the paper ran it: TensorFlow 1's
``AdamOptimizer`` folds the bias correction into the step size, lr_t = lr·√(1−β2^t)/(1−β1^t),
and adds ε to √v) and ``"kingma"`` (Kingma & Ba's Algorithm 1: m̂ = m/(1−β1^t),
v̂ = v/(1−β2^t), step lr·m̂/(√v̂ + ε)). They differ only in where ε enters.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import numpy as np
from tqdm.auto import tqdm

from ..core.fit_metrics import paper_loss_rows
from ..core.params import ADAM_VARIANTS as VARIANTS
from ..core.params import AdamOptions
from ..core.xp import device, from_numpy, namespace, to_numpy

__all__ = ["AdamOptions", "VARIANTS", "adam_step", "fit_adam", "paper_loss_grad"]


def paper_loss_grad(p: Any, y: Any) -> tuple[Any, Any]:
    """Mean paper loss over rows of ``p`` against ``y`` and its gradient with respect to ``p``."""
    xp = namespace(p, y)
    pn = xp.sqrt(xp.sum(p * p, axis=1, keepdims=True))
    yn = xp.sqrt(xp.sum(y * y, axis=1, keepdims=True))
    pn_safe = xp.where(pn > 0, pn, xp.ones_like(pn))
    u, v = p / pn_safe, y / xp.where(yn > 0, yn, xp.ones_like(yn))
    uv = xp.sum(u * v, axis=1, keepdims=True)
    rows = p.shape[0]
    loss = xp.mean(paper_loss_rows(p, y))
    grad = xp.where(pn > 0, (-2.0 / rows) * (v - uv * u) / pn_safe, xp.zeros_like(p))
    return loss, grad


BatchFn = Callable[[], tuple[Any, Any]]


def fit_adam(
    next_batch: BatchFn,
    *,
    src_dim: int,
    dst_dim: int,
    options: AdamOptions,
    like: Any,
    init: tuple[Any, Any] | None = None,
    progress: bool = True,
    desc: str = "adam",
    monitor: Callable[[int, Any, Any], bool | None] | None = None,
    monitor_every: int = 1000,
) -> tuple[Any, Any, np.ndarray]:
    """Run Adam for ``options.iterations`` steps on batches from ``next_batch()``.

    ``like`` is an array whose namespace, device and floating dtype the parameters take.
    Starts from ``init = (weight, bias)`` or, without it, from a seeded Gaussian weight
    with variance 1/src_dim and a zero bias. Returns ``(weight, bias, loss_curve)``, the
    curve holding the batch loss before each step.

    ``monitor(t, weight, bias)``, if given, is called after every ``monitor_every`` steps
    (t = steps done); returning True stops early and truncates the curve.
    """
    options.validate()
    xp = namespace(like)
    dtype = like.dtype
    if init is None:
        rng = np.random.default_rng(options.seed)
        w0 = rng.standard_normal((dst_dim, src_dim)) / np.sqrt(src_dim)
        W, b = from_numpy(w0, like), from_numpy(np.zeros(dst_dim), like)
    else:
        W, b = init
        W, b = from_numpy(to_numpy(W), like), from_numpy(to_numpy(b), like)
    W, b = xp.astype(W, dtype), xp.astype(b, dtype)
    mW, vW = xp.zeros_like(W), xp.zeros_like(W)
    mb, vb = xp.zeros_like(b), xp.zeros_like(b)
    curve = xp.zeros((options.iterations,), dtype=xp.float64, device=device(like))
    bar = tqdm(range(options.iterations), desc=desc, disable=not progress, unit="it", mininterval=0.5)
    for t in bar:
        x, y = next_batch()
        x, y = xp.astype(x, dtype), xp.astype(y, dtype)
        p = x @ xp.matrix_transpose(W) + b
        loss, g = paper_loss_grad(p, y)
        curve[t] = xp.astype(loss, xp.float64)
        gW = xp.matrix_transpose(g) @ x
        gb = xp.sum(g, axis=0)
        step = t + 1
        lr = options.lr * (1.0 - options.decay) ** t
        c1, c2 = 1.0 - options.beta1**step, 1.0 - options.beta2**step
        W, mW, vW = adam_step(W, gW, mW, vW, lr, c1, c2, options, xp)
        b, mb, vb = adam_step(b, gb, mb, vb, lr, c1, c2, options, xp)
        if progress and t % 200 == 0:
            bar.set_postfix(loss=f"{float(loss):.4f}", refresh=False)
        if monitor is not None and (t + 1) % monitor_every == 0 and monitor(t + 1, W, b):
            curve = curve[: t + 1]
            break
    bar.close()
    return W, b, to_numpy(curve)


def adam_step(P: Any, G: Any, M: Any, V: Any, lr: float, c1: float, c2: float, o: AdamOptions, xp: Any):
    """One Adam update of parameter ``P`` with gradient ``G``; ``c1, c2 = 1 − β^t``.

    ``"tensorflow"``: P − lr·√c2/c1 · M/(√V + ε); ``"kingma"``: P − lr · (M/c1)/(√(V/c2) + ε).
    """
    M = o.beta1 * M + (1.0 - o.beta1) * G
    V = o.beta2 * V + (1.0 - o.beta2) * (G * G)
    if o.variant == "tensorflow":
        return P - (lr * math.sqrt(c2) / c1) * M / (xp.sqrt(V) + o.eps), M, V
    return P - lr * (M / c1) / (xp.sqrt(V / c2) + o.eps), M, V
