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
@register("Conv")
def conv(ctx: GradContext):
    if ctx.needs(1) or ctx.needs(2):
        raise ctx.fail("gradients with respect to convolution weights are not supported (weights must be constants)")
    x, w = ctx.I(0), ctx.I(1)
    kernel = [int(k) for k in ctx.shape(w)[2:]]
    strides, dil, pads, out = conv_geometry(ctx, x, kernel)
    pads, opad = transpose_padding(ctx.spatial(x), out, kernel, strides, dil, pads)
    return [ctx.e.op("ConvTranspose", [ctx.GO(0), w], {
        "strides": strides, "dilations": dil, "pads": pads, "output_padding": opad,
        "group": int(ctx.attr("group", 1)), "kernel_shape": kernel})]


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
def relu_mask(ctx: GradContext):
    return ctx.e.mask(ctx.e.greater(ctx.I(0), np.float32(0)))


def clip_mask(ctx: GradContext):
    """[min < x < max]: the ordinary clip (ReLU6) mask."""
    e, x = ctx.e, ctx.I(0)
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
