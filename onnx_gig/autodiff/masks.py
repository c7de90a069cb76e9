"""Step masks of the piecewise-linear units: [x > 0] for ReLU, [lo < x < hi] for Clip/ReLU6.

Shared by the plain and guided ReLU/Clip rules (activations.py). Built without comparisons where that
is exact, because comparisons force onnxruntime out of its fast blocked layout (see below).
"""
from __future__ import annotations

from typing import Optional

import numpy as np

from . import common
from .registry import GradContext


# Masks are built as Clip(k * (t - bound), 0, 1) with k a power of two (one HardSigmoid node): a scaled
# step that onnxruntime keeps in its blocked NCHWc layout (Greater/Less/Cast/Where force layout reorders
# and are several times slower). k is large enough that every float on the open side of
# the bound maps to >= 1, and k * t is exact, so the mask is exactly 0/1 with ONE documented edge: for the
# bound 0 (ReLU, ReLU6's lower bound) k = 2^126, so a positive subnormal t (0 < t < 2^-126) gets the
# fractional mask t * 2^126 instead of 1. Masks read the unit's output where that is equivalent
# ([x > 0] = [Relu(x) > 0], [lo < x < hi] = [lo < Clip(x) < hi]), so the forward pre-activation keeps a
# single consumer and onnxruntime can still fuse Conv + Relu/Clip in the forward graph.
_STEP_K_ZERO = 2.0 ** 126


def _step_scale(bound: float) -> Optional[float]:
    """The power of two k for Clip(k (t - bound), 0, 1), or None where the arithmetic form is not exact."""
    if bound == 0.0:
        return _STEP_K_ZERO
    b = abs(float(np.float32(bound)))
    if not (2.0 ** -100 <= b <= 2.0 ** 20):
        return None
    # below a power of two the float spacing halves: 4 / spacing(b) maps the nearest float to >= 2
    return 4.0 / float(np.spacing(np.float32(b)))


def _const_scalar(ctx: GradContext, i: int, attr: str) -> tuple[bool, Optional[float]]:
    """(known, value) of a Clip bound: input ``i`` (opset >= 11) or attribute ``attr``; (True, None) = absent."""
    if ctx.has_input(i):
        v = ctx.const_value(i)
        return (False, None) if v is None or v.size != 1 else (True, float(v.reshape(-1)[0]))
    a = ctx.attr(attr)
    return True, (None if a is None else float(a))


def step_mask(ctx: GradContext, t, bound: float, above: bool = True):
    """[t > bound] (``above``) or [t < bound] as a float 0/1 mask, without comparisons; None if not exact."""
    k = _step_scale(bound)
    if k is None or not common.FAST_PATHS or not getattr(ctx.e, "arith_masks", True) or ctx.e.dtype != np.float32:
        return None  # comparisons instead: exact in any dtype (the float16 graph sets arith_masks=False)
    e = ctx.e
    w, b = (k, -k * float(np.float32(bound))) if above else (-k, k * float(np.float32(bound)))
    # one HardSigmoid: max(0, min(1, k t + b)), element-wise in any layout; onnxruntime keeps it in the
    # blocked NCHWc layout, and it costs half the 1x1 depthwise Conv + Clip it replaces (MobileNetV2
    # GNL-IG -4.8 % 1-thread CPU); k t is exact, so the result is the same float as Clip(k t + b, 0, 1)
    # beta 0 becomes -2^-126 (same floats: k t is 0 or >= 1 outside the subnormal edge): OpenVINO reads a
    # HardSigmoid beta of 0 as its default 0.5
    m = e.op("HardSigmoid", [t], {"alpha": float(w), "beta": float(b) if b != 0.0 else -(2.0 ** -126)})
    shape = t.shape
    if shape is not None and len(shape) == 4 and isinstance(shape[1], (int, np.integer)):
        m.blocked_mask_channels = int(shape[1])  # see integrate.keep_blocked_layout
    return m


def relu_mask(ctx: GradContext):
    """[x > 0] for Relu (read from its output) and LeakyRelu."""
    alpha = float(ctx.attr("alpha", 0.01)) if ctx.node.op == "LeakyRelu" else 0.0
    t = ctx.O(0) if ctx.node.op == "Relu" or (ctx.node.op == "LeakyRelu" and alpha >= 0) else ctx.I(0)
    m = step_mask(ctx, t, 0.0)
    return m if m is not None else ctx.e.mask(ctx.e.greater(ctx.I(0), np.float32(0)))


def clip_mask(ctx: GradContext):
    """[min < x < max]: the ordinary clip (ReLU6) mask."""
    e, x = ctx.e, ctx.I(0)
    (lo_known, lo_v), (hi_known, hi_v) = _const_scalar(ctx, 1, "min"), _const_scalar(ctx, 2, "max")
    if lo_known and hi_known:
        y = ctx.O(0)  # [lo < x < hi] = [lo < y < hi] for y = Clip(x, lo, hi)
        parts = [step_mask(ctx, y, lo_v, above=True) if lo_v is not None else 1,
                 step_mask(ctx, y, hi_v, above=False) if hi_v is not None else 1]
        if all(p_ is not None for p_ in parts):
            ms = [p_ for p_ in parts if not isinstance(p_, int)]
            if len(ms) < 2:
                return ms[0] if ms else None
            m = e.mul(ms[0], ms[1])
            if hasattr(ms[0], "blocked_mask_channels"):
                m.blocked_mask_channels = ms[0].blocked_mask_channels
            return m
    lo = ctx.I(1) if ctx.has_input(1) else ctx.attr("min")
    hi = ctx.I(2) if ctx.has_input(2) else ctx.attr("max")
    m = None
    if lo is not None:
        m = e.mask(e.greater(x, lo if not isinstance(lo, float) else np.float32(lo)))
    if hi is not None:
        mh = e.mask(e.less(x, hi if not isinstance(hi, float) else np.float32(hi)))
        m = mh if m is None else e.mul(m, mh)
    return m



# The guided Clip's upper bound as an additive penalty instead of a mask: relu(g + P) with P = 0 where
# y < hi and P = -2^100 where y == hi equals relu(g) * [y < hi] for every |g| < 2^100. P is one 1x1
# depthwise Conv + Clip of y, like a mask, but the Add and the Relu then fuse into the backward Conv that
# produces g (onnxruntime's NCHWc Conv takes a summand and an activation): the mask multiply and the
# product of the two ReLU6 masks disappear, two full passes over the tensor per ReLU6 (MobileNetV2).
# Exact: with s the float spacing just below hi and a = 2^100 / s (a power of two), the Conv computes
# -a*y + (a*hi - 2^100) with one rounding of an exact value that is >= 0 for y <= hi - s and exactly
# -2^100 for y = hi (a*hi - 2^100 is representable: hi / s < 2^24).
PENALTY = 2.0 ** 100


def upper_penalty(ctx: GradContext, y, lo: Optional[float], hi: float):
    """P(y) = 0 for y < hi, -2^100 for y = hi (y = Clip(x, lo, hi)), or None where that is not exact."""
    e = ctx.e
    if not common.FAST_PATHS or not getattr(e, "arith_masks", True) or e.dtype != np.float32 or lo is None:
        return None
    shape = y.shape
    if shape is None or len(shape) < 3 or not isinstance(shape[1], (int, np.integer)):
        return None
    h32 = np.float32(hi)
    spacing = float(h32) - float(np.nextafter(h32, np.float32(-np.inf)))
    if not (2.0 ** -100 <= spacing) or not np.isfinite(h32):
        return None
    a = PENALTY / spacing
    bias = a * float(h32) - PENALTY
    if a * max(abs(float(lo)), abs(float(h32))) >= 2.0 ** 126 or float(np.float32(bias)) != bias \
            or float(np.float32(a)) != a:
        return None
    c, rank = int(shape[1]), len(shape)
    v = e.op("Conv", [y, e.const(np.full([c, 1] + [1] * (rank - 2), -a, np.float32)),
                      e.const(np.full([c], bias, np.float32))], {"group": c, "kernel_shape": [1] * (rank - 2)})
    p = e.op("Clip", [v, e.const(np.float32(-PENALTY)), e.const(np.float32(0))])
    if len(shape) == 4:
        p.blocked_mask_channels = c  # see integrate.keep_blocked_layout
    return p


def guided_clip_parts(ctx: GradContext):
    """(penalty, lower mask or None) for relu(g + penalty) * mask = relu(g) [lo < x < hi], or None."""
    (lo_known, lo_v), (hi_known, hi_v) = _const_scalar(ctx, 1, "min"), _const_scalar(ctx, 2, "max")
    if not (lo_known and hi_known) or hi_v is None or lo_v is None:
        return None
    y = ctx.O(0)
    penalty = upper_penalty(ctx, y, lo_v, hi_v)
    if penalty is None:
        return None
    m = step_mask(ctx, y, lo_v, above=True)
    return None if m is None else (penalty, m)
