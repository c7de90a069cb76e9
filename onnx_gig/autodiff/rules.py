"""The plain rule set ``ig``: the true vector-Jacobian product of every supported op.

Each rule is a few lines from the op's inputs/outputs (``I``, ``O``) and the arriving
gradient (``GO``) to one gradient per input. Only input gradients are built: weights are
constants at attribution time, so a rule asked for a weight gradient refuses by name.
Constructions follow what runs correctly on stock onnxruntime (no com.microsoft *Grad ops).
"""
from __future__ import annotations

import math
from typing import Optional

import numpy as np
import onnx_graphsurgeon as gs

from .registry import GradContext, RuleSet

PLAIN = RuleSet("ig", "Integrated Gradients: true gradients through every op")
register = PLAIN.register


# -- helpers shared by rules ---------------------------------------------------
def _ints(ctx: GradContext, name: str, n: int, default: int) -> list[int]:
    v = ctx.attr(name)
    return [int(a) for a in v] if v is not None else [default] * n


def conv_geometry(ctx: GradContext, x, kernel: list[int]) -> tuple[list[int], list[int], list[int], list[int]]:
    """Strides, dilations, explicit (begin, end) pads and output spatial size of a Conv/Pool node."""
    spatial = ctx.spatial(x)
    n = len(spatial)
    strides = _ints(ctx, "strides", n, 1)
    dil = _ints(ctx, "dilations", n, 1)
    auto = ctx.attr("auto_pad", "NOTSET")
    auto = auto.decode() if isinstance(auto, bytes) else auto
    ceil = bool(ctx.attr("ceil_mode", 0))
    if auto in ("SAME_UPPER", "SAME_LOWER"):
        pads_b, pads_e = [], []
        for h, k, s, d in zip(spatial, kernel, strides, dil):
            total = max(0, (math.ceil(h / s) - 1) * s + (k - 1) * d + 1 - h)
            small, big = total // 2, total - total // 2
            pads_b.append(small if auto == "SAME_UPPER" else big)
            pads_e.append(big if auto == "SAME_UPPER" else small)
    elif auto == "VALID":
        pads_b, pads_e = [0] * n, [0] * n
    else:
        pads = _ints(ctx, "pads", 2 * n, 0)
        pads_b, pads_e = pads[:n], pads[n:]
    out = []
    for h, k, s, d, pb, pe in zip(spatial, kernel, strides, dil, pads_b, pads_e):
        span = h + pb + pe - ((k - 1) * d + 1)
        o = (math.ceil(span / s) if ceil else span // s) + 1
        if ceil and (o - 1) * s >= h + pb:  # the last window must start inside the input or left pad
            o -= 1
        out.append(o)
    return strides, dil, pads_b + pads_e, out


def transpose_padding(spatial, out, kernel, strides, dil, pads) -> tuple[list[int], list[int]]:
    """Explicit pads and output_padding that make a ConvTranspose of ``out`` land exactly on ``spatial``.

    Windows that reach past the end (ceil_mode) grow the end pad instead of a negative output_padding.
    """
    n = len(spatial)
    pads = list(pads)
    opad = []
    for i in range(n):
        full = strides[i] * (out[i] - 1) + (kernel[i] - 1) * dil[i] + 1
        extra = spatial[i] - (full - pads[i] - pads[n + i])
        if extra < 0:
            pads[n + i] += -extra
            extra = 0
        opad.append(extra)
    return pads, opad


# -- identity-like and shape ops -------------------------------------------------
@register("Identity", "Dropout")
def identity(ctx: GradContext):
    return [ctx.GO(0)]


@register("Flatten", "Reshape", "Squeeze", "Unsqueeze")
def reshape_back(ctx: GradContext):
    x, y = ctx.I(0), ctx.O(0)
    sx, sy = ctx.shape(x), ctx.shape(y)
    rest = sx[1:]
    if len(sx) and len(sy) and sx[0] == sy[0] and isinstance(sx[0], str) \
            and all(isinstance(d, (int, np.integer)) for d in rest):
        # batch kept symbolic and visible: onnxruntime keeps its fast layout around such Reshapes
        return [ctx.e.reshape(ctx.GO(0), [0] + [int(d) for d in rest])]
    if all(isinstance(d, (int, np.integer)) for d in sx):
        return [ctx.e.reshape(ctx.GO(0), [int(d) for d in sx])]
    return [ctx.e.reshape(ctx.GO(0), ctx.e.shape(x))]


@register("Transpose")
def transpose(ctx: GradContext):
    rank = len(ctx.shape(ctx.I(0)))
    perm = ctx.attr("perm") or list(reversed(range(rank)))
    inv = [0] * rank
    for i, p in enumerate(perm):
        inv[int(p)] = i
    return [ctx.e.transpose(ctx.GO(0), inv)]


@register("Concat")
def concat(ctx: GradContext):
    rank = len(ctx.shape(ctx.O(0)))
    axis = int(ctx.attr("axis")) % rank
    grads, start = [], 0
    for i, t in enumerate(ctx.node.inputs):
        size = ctx.shape(t)[axis]
        if not isinstance(size, (int, np.integer)):
            raise ctx.fail(f"needs static sizes along the concat axis, input '{t.name}' has {ctx.shape(t)}")
        grads.append(ctx.e.slice(ctx.GO(0), [start], [start + int(size)], [axis]) if ctx.needs(i) else None)
        start += int(size)
    return grads


@register("Pad")
def pad(ctx: GradContext):
    mode = ctx.attr("mode", "constant")
    mode = mode.decode() if isinstance(mode, bytes) else mode
    if mode != "constant":
        raise ctx.fail(f"only mode='constant' is differentiable here, got mode='{mode}'")
    pads = ctx.const_value(1)
    if pads is None:
        raise ctx.fail("needs constant pads")
    rank = len(ctx.shape(ctx.I(0)))
    axes = ctx.const_value(3)
    axes = [int(a) % rank for a in axes] if axes is not None else list(range(rank))
    k = len(axes)
    begin, end = [int(p) for p in pads[:k]], [int(p) for p in pads[k:]]
    g = ctx.GO(0)
    if any(p < 0 for p in begin + end):
        # pads over every axis: Pad's axes input exists only from opset 18
        full = [0] * (2 * rank)
        for a, b, e_ in zip(axes, begin, end):
            full[a], full[rank + a] = -b, -e_
        return [ctx.e.op("Pad", [g, ctx.e.const(np.asarray(full, np.int64))])]
    sizes = ctx.shape(ctx.O(0))
    starts, ends = begin, []
    for a, b, e_ in zip(axes, begin, end):
        size = sizes[a]
        ends.append(int(size) - e_ if isinstance(size, (int, np.integer)) else (-e_ if e_ else np.iinfo(np.int64).max))
    return [ctx.e.slice(g, starts, ends, axes)]


# -- element-wise arithmetic with broadcasting -------------------------------------
@register("Add")
def add(ctx: GradContext):
    g, y = ctx.GO(0), ctx.O(0)
    return [ctx.unbroadcast(g, ctx.I(i), y) if ctx.needs(i) else None for i in range(2)]


@register("Sum")
def sum_(ctx: GradContext):
    g, y = ctx.GO(0), ctx.O(0)
    return [ctx.unbroadcast(g, t, y) if ctx.needs(i) else None for i, t in enumerate(ctx.node.inputs)]


@register("Sub")
def sub(ctx: GradContext):
    g, y = ctx.GO(0), ctx.O(0)
    return [ctx.unbroadcast(g, ctx.I(0), y) if ctx.needs(0) else None,
            ctx.unbroadcast(ctx.e.neg(g), ctx.I(1), y) if ctx.needs(1) else None]


@register("Mul")
def mul(ctx: GradContext):
    g, y, a, b = ctx.GO(0), ctx.O(0), ctx.I(0), ctx.I(1)
    return [ctx.unbroadcast(ctx.e.mul(g, b), a, y) if ctx.needs(0) else None,
            ctx.unbroadcast(ctx.e.mul(g, a), b, y) if ctx.needs(1) else None]


@register("Div")
def div(ctx: GradContext):
    g, y, a, b = ctx.GO(0), ctx.O(0), ctx.I(0), ctx.I(1)
    e = ctx.e
    return [ctx.unbroadcast(e.div(g, b), a, y) if ctx.needs(0) else None,
            ctx.unbroadcast(e.neg(e.div(e.mul(g, y), b)), b, y) if ctx.needs(1) else None]


@register("Neg")
def neg(ctx: GradContext):
    return [ctx.e.neg(ctx.GO(0))]


# -- linear layers ---------------------------------------------------------------
# The speed-ups of the Conv rule (flipped-kernel Conv for stride 1) and of the ReLU/Clip masks (scaled
# steps instead of comparisons) give the same attributions as the plain constructions (ConvTranspose,
# Greater/Less/Cast) to float rounding; tests build both (set False) and compare.
FAST_PATHS = True


@register("Conv")
def conv(ctx: GradContext):
    if ctx.needs(1) or ctx.needs(2):
        raise ctx.fail("gradients with respect to convolution weights are not supported (weights must be constants)")
    x, w = ctx.I(0), ctx.I(1)
    kernel = [int(k) for k in ctx.shape(w)[2:]]
    strides, dil, pads, out = conv_geometry(ctx, x, kernel)
    pads, opad = transpose_padding(ctx.spatial(x), out, kernel, strides, dil, pads)
    group = int(ctx.attr("group", 1))
    n = len(kernel)
    # the transposed convolution as a stride-1 Conv over g with the flipped, channel-swapped kernel:
    # pads (k-1)d - p (begin) and (k-1)d - p + output_padding (end); ~3x faster than ConvTranspose on
    # CPU for depthwise kernels, 1.4x for dense ones, and it keeps onnxruntime's blocked (NCHWc) layout
    back_pads = [(k - 1) * d - p for k, d, p in zip(kernel, dil, pads[:n])] + \
                [(k - 1) * d - p + o for k, d, p, o in zip(kernel, dil, pads[n:], opad)]
    # (strided convolutions keep ConvTranspose: zero insertion + Conv measured no faster, even depthwise)
    if FAST_PATHS and min(back_pads) >= 0 and all(s == 1 for s in strides):
        return [ctx.e.op("Conv", [ctx.GO(0), _backward_kernel(ctx, w, group, kernel)], {
            "strides": [1] * n, "dilations": dil, "pads": back_pads, "group": group, "kernel_shape": kernel})]
    if isinstance(w, gs.Constant) and ctx.shape(w)[0] == ctx.shape(w)[1] * group:
        # OpenVINO computes a ConvTranspose wrongly when it shares a square weight with a Conv: own copy
        w = ctx.e.const(np.array(w.values, copy=True), hint="convT_w")
    return [ctx.e.op("ConvTranspose", [ctx.GO(0), w], {
        "strides": strides, "dilations": dil, "pads": pads, "output_padding": opad,
        "group": group, "kernel_shape": kernel})]


def _backward_kernel(ctx: GradContext, w, group: int, kernel: list[int]):
    """W [Cout, Cin/G, k...] -> [Cin, Cout/G, k...]: per group in/out channels swapped, spatial axes reversed.

    Built with graph ops on W, which onnxruntime folds into one initializer when the session is made,
    so the file keeps a single copy of the weights.
    """
    e = ctx.e
    cout, cin_g = (int(d) for d in ctx.shape(w)[:2])
    cout_g, n = cout // group, len(kernel)
    if cin_g == 1 and cout_g == 1:  # depthwise with multiplier 1: the layout is already right
        wt = w
    elif group == 1:
        wt = e.transpose(w, [1, 0] + list(range(2, 2 + n)))
    else:
        wt = e.reshape(w, [group, cout_g, cin_g] + kernel)
        wt = e.transpose(wt, [0, 2, 1] + list(range(3, 3 + n)))
        wt = e.reshape(wt, [group * cin_g, cout_g] + kernel)
    axes = [2 + i for i, k in enumerate(kernel) if k > 1]
    if axes:
        wt = e.slice(wt, [-1] * len(axes), [np.iinfo(np.int64).min] * len(axes), axes, [-1] * len(axes))
    return wt


@register("Gemm")
def gemm(ctx: GradContext):
    e, g = ctx.e, ctx.GO(0)
    alpha, beta = float(ctx.attr("alpha", 1.0)), float(ctx.attr("beta", 1.0))
    ta, tb = int(ctx.attr("transA", 0)), int(ctx.attr("transB", 0))
    ga = gb = gc = None
    if ctx.needs(0):  # dA' = alpha * g @ B'^T
        ga = e.op("Gemm", [g, ctx.I(1)], {"alpha": alpha, "transB": 1 - tb})
        ga = e.transpose(ga, [1, 0]) if ta else ga
    if ctx.needs(1):  # dB' = alpha * A'^T @ g
        gb = e.op("Gemm", [ctx.I(0), g], {"alpha": alpha, "transA": 1 - ta})
        gb = e.transpose(gb, [1, 0]) if tb else gb
    if ctx.needs(2):
        gc = ctx.unbroadcast(e.mul(g, np.float32(beta)) if beta != 1.0 else g, ctx.I(2), ctx.O(0))
    return [ga, gb, gc]


def _swap_last(e, t, rank: int):
    perm = list(range(rank))
    perm[-1], perm[-2] = perm[-2], perm[-1]
    return e.transpose(t, perm)


@register("MatMul")
def matmul(ctx: GradContext):
    a, b, y, g, e = ctx.I(0), ctx.I(1), ctx.O(0), ctx.GO(0), ctx.e
    ra, rb = len(ctx.shape(a)), len(ctx.shape(b))
    if ra < 2 or rb < 2:
        raise ctx.fail("MatMul with a 1-D operand is not supported")
    ga = ctx.unbroadcast(e.op("MatMul", [g, _swap_last(e, b, rb)]), a, y) if ctx.needs(0) else None
    gb = ctx.unbroadcast(e.op("MatMul", [_swap_last(e, a, ra), g]), b, y) if ctx.needs(1) else None
    return [ga, gb]


@register("BatchNormalization")
def batchnorm(ctx: GradContext):
    if int(ctx.attr("training_mode", 0)):
        raise ctx.fail("training_mode=1 is not supported; export the model in eval mode")
    if any(ctx.needs(i) for i in range(1, 5)):
        raise ctx.fail("gradients with respect to batch-norm parameters are not supported")
    rank = len(ctx.shape(ctx.I(0)))
    eps = float(ctx.attr("epsilon", 1e-5))
    scale, var = ctx.const_value(1), ctx.const_value(4)
    axes = list(range(1, rank - 1))
    if scale is not None and var is not None:
        k = (scale / np.sqrt(var.astype(np.float64) + eps)).reshape([-1] + [1] * (rank - 2))
        return [ctx.e.mul(ctx.GO(0), ctx.e.const(k))]
    e = ctx.e
    k = e.div(ctx.I(1), e.sqrt(e.add(ctx.I(4), np.float32(eps))))
    return [e.mul(ctx.GO(0), e.unsqueeze(k, axes) if axes else k)]


# -- pooling -------------------------------------------------------------------------
def maxpool_input_grad(ctx: GradContext, g) -> object:
    """Route ``g`` to each window's arg-max, adding where windows overlap (ScatterElements add)."""
    e, x = ctx.e, ctx.I(0)
    attrs = {k: v for k, v in ctx.node.attrs.items() if k != "storage_order"}
    _, idx = e.op("MaxPool", [x], attrs, n_out=2)
    flat_zero = e.op("ConstantOfShape", [e.unsqueeze(e.op("Size", [x]), [0])],
                     {"value": gs.Constant(e.name("zero"), np.zeros(1, e.dtype))})
    scat = e.op("ScatterElements", [flat_zero, e.reshape(idx, [-1]), e.reshape(g, [-1])],
                {"axis": 0, "reduction": "add"})
    return reshape_like(ctx, scat, x)


def reshape_like(ctx: GradContext, t, like):
    """Reshape ``t`` to the shape of forward tensor ``like``, keeping the batch symbolic when possible."""
    s = ctx.shape(like)
    if all(isinstance(d, (int, np.integer)) for d in s[1:]):
        return ctx.e.reshape(t, [-1] + [int(d) for d in s[1:]])
    return ctx.e.reshape(t, ctx.e.shape(like))


@register("MaxPool")
def maxpool(ctx: GradContext):
    return [maxpool_input_grad(ctx, ctx.GO(0))]


@register("AveragePool")
def averagepool(ctx: GradContext):
    e, x = ctx.e, ctx.I(0)
    kernel = [int(k) for k in ctx.attr("kernel_shape")]
    strides, dil, pads, out = conv_geometry(ctx, x, kernel)
    spatial = ctx.spatial(x)
    n = len(spatial)
    pads_t, opad = transpose_padding(spatial, out, kernel, strides, dil, pads)
    # 1/divisor per output position, exactly as the runtime divides: AvgPool(ones) = valid / divisor
    ones = np.ones([1, 1] + spatial, dtype=e.dtype)
    attrs = dict(ctx.node.attrs)
    r = e.op("AveragePool", [e.const(ones)], attrs)
    valid = _window_valid_counts(spatial, out, kernel, strides, dil, pads_t)
    scale = e.div(r, e.const(valid.reshape([1, 1] + out)))
    c = int(ctx.shape(x)[1])
    ones_k = e.const(np.ones([c, 1] + kernel, dtype=e.dtype))
    return [e.op("ConvTranspose", [e.mul(ctx.GO(0), scale), ones_k], {
        "strides": strides, "dilations": dil, "pads": pads_t, "output_padding": opad, "group": c,
        "kernel_shape": kernel})]


def _window_valid_counts(spatial, out, kernel, strides, dil, pads) -> np.ndarray:
    """How many real (non-padding) input elements each pooling window covers."""
    n = len(spatial)
    per_axis = []
    for i in range(n):
        starts = np.arange(out[i]) * strides[i] - pads[i]
        taps = starts[:, None] + np.arange(kernel[i])[None, :] * dil[i]
        per_axis.append(((taps >= 0) & (taps < spatial[i])).sum(1))
    counts = per_axis[0]
    for c in per_axis[1:]:
        counts = np.multiply.outer(counts, c)
    return np.maximum(counts, 1).astype(np.float32)


@register("GlobalAveragePool")
def global_average_pool(ctx: GradContext):
    spatial = ctx.spatial(ctx.I(0))
    g = ctx.e.mul(ctx.GO(0), np.float32(1.0 / float(np.prod(spatial))))
    return [ctx.e.expand(g, [1, 1] + spatial)]


def _reduce_axes(ctx: GradContext, rank: int) -> list[int]:
    axes = ctx.attr("axes")
    if axes is None:
        axes = ctx.const_value(1)
    if axes is None or len(axes) == 0:
        if ctx.has_input(1) and ctx.const_value(1) is None:
            raise ctx.fail("needs constant reduction axes")
        return [] if int(ctx.attr("noop_with_empty_axes", 0)) else list(range(rank))
    return sorted(int(a) % rank for a in axes)


@register("ReduceMean", "ReduceSum")
def reduce_mean_sum(ctx: GradContext):
    x, e = ctx.I(0), ctx.e
    sx = ctx.shape(x)
    axes = _reduce_axes(ctx, len(sx))
    g = ctx.GO(0)
    if not axes:
        return [g]
    if not int(ctx.attr("keepdims", 1)):
        g = e.unsqueeze(g, axes)
    if ctx.node.op == "ReduceMean":
        sizes = [sx[a] for a in axes]
        if not all(isinstance(d, (int, np.integer)) for d in sizes):
            raise ctx.fail(f"needs static sizes on the reduced axes, got {sx}")
        g = e.mul(g, np.float32(1.0 / float(np.prod(sizes))))
    target = [int(d) if (i in axes) else 1 for i, d in enumerate(sx)] \
        if all(isinstance(sx[a], (int, np.integer)) for a in axes) else None
    return [e.expand(g, target if target is not None else e.shape(x))]


# -- activations -----------------------------------------------------------------------
# Masks are built as Clip(k * (t - bound), 0, 1) with k a power of two: a scaled step that onnxruntime
# keeps in its blocked NCHWc layout and fuses into a 1x1 depthwise Conv (Greater/Less/Cast/Where force
# layout reorders and are several times slower). k is large enough that every float on the open side of
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
    if k is None or not FAST_PATHS or not getattr(ctx.e, "arith_masks", True) or ctx.e.dtype != np.float32:
        return None  # comparisons instead: exact in any dtype (the float16 graph sets arith_masks=False)
    e = ctx.e
    w, b = (k, -k * float(np.float32(bound))) if above else (-k, k * float(np.float32(bound)))
    shape = t.shape
    if shape is not None and len(shape) >= 3 and isinstance(shape[1], (int, np.integer)):
        c = int(shape[1])  # a 1x1 depthwise Conv: onnxruntime fuses the Clip into it, in NCHWc layout
        rank = len(shape)
        ins = [t, e.const(np.full([c, 1] + [1] * (rank - 2), w, np.float32))]
        if b != 0.0:
            ins.append(e.const(np.full([c], b, np.float32)))
        v = e.op("Conv", ins, {"group": c, "kernel_shape": [1] * (rank - 2)})
    else:
        v = e.mul(t, np.float32(w))
        if b != 0.0:
            v = e.add(v, np.float32(b))
    m = e.op("Clip", [v, e.const(np.float32(0)), e.const(np.float32(1))])
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


@register("Relu")
def relu(ctx: GradContext):
    return [ctx.e.mul(ctx.GO(0), relu_mask(ctx))]


@register("Clip")
def clip(ctx: GradContext):
    m = clip_mask(ctx)
    return [ctx.GO(0) if m is None else ctx.e.mul(ctx.GO(0), m)]


@register("LeakyRelu")
def leaky_relu(ctx: GradContext):
    e, alpha = ctx.e, float(ctx.attr("alpha", 0.01))
    m = relu_mask(ctx)  # slope = alpha + (1 - alpha) * [x > 0]
    slope = e.add(e.mul(m, np.float32(1.0 - alpha)), np.float32(alpha))
    return [e.mul(ctx.GO(0), slope)]


@register("Sigmoid")
def sigmoid(ctx: GradContext):
    e, y = ctx.e, ctx.O(0)
    return [e.mul(ctx.GO(0), e.mul(y, e.sub(np.float32(1), y)))]


@register("Tanh")
def tanh(ctx: GradContext):
    e, y = ctx.e, ctx.O(0)
    return [e.mul(ctx.GO(0), e.sub(np.float32(1), e.mul(y, y)))]


@register("Softmax")
def softmax(ctx: GradContext):
    e, y, g = ctx.e, ctx.O(0), ctx.GO(0)
    axis = int(ctx.attr("axis", -1))
    return [e.mul(y, e.sub(g, e.reduce_sum(e.mul(g, y), [axis], keepdims=True)))]


@register("LogSoftmax")
def log_softmax(ctx: GradContext):
    e, y, g = ctx.e, ctx.O(0), ctx.GO(0)
    axis = int(ctx.attr("axis", -1))
    return [e.sub(g, e.mul(e.exp(y), e.reduce_sum(g, [axis], keepdims=True)))]
