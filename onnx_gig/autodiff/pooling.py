"""Pooling and selection family: max/average pooling, global pools, max-type reductions, element-wise Max/Min.

Plain rules route g to each window's arg-max (or spread it over the window); the guided rules that the
rule sets use (rulesets.py) route relu(g) instead: the paper's max-pool rule (exact, or the authors'
upsampled-mask variant) and, in ``gnl-ig-all``, every other max-type selection. Ties share the gradient
equally (torch's amax/maximum convention).
"""
from __future__ import annotations

import numpy as np
import onnx_graphsurgeon as gs

from .common import (conv_geometry, reduce_axes, reshape_like, runtime_count, transpose_padding, transposed_to_input,
                     window_valid_counts, zeros_like)
from .registry import GradContext, register


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


@register("MaxPool")
def maxpool(ctx: GradContext):
    return [maxpool_input_grad(ctx, ctx.GO(0))]


@register("AveragePool")
def averagepool(ctx: GradContext):
    e, x = ctx.e, ctx.I(0)
    kernel = [int(k) for k in ctx.attr("kernel_shape")]
    if ctx.static_spatial(x) is None:
        return [_dynamic_averagepool(ctx, kernel)]
    strides, dil, pads, out = conv_geometry(ctx, x, kernel)
    spatial = ctx.spatial(x)
    pads_t, opad = transpose_padding(spatial, out, kernel, strides, dil, pads)
    # 1/divisor per output position, exactly as the runtime divides: AvgPool(ones) = valid / divisor
    ones = np.ones([1, 1] + spatial, dtype=e.dtype)
    attrs = dict(ctx.node.attrs)
    r = e.op("AveragePool", [e.const(ones)], attrs)
    valid = window_valid_counts(spatial, out, kernel, strides, dil, pads_t)
    scale = e.div(r, e.const(valid.reshape([1, 1] + out)))
    c = int(ctx.shape(x)[1])
    ones_k = e.const(np.ones([c, 1] + kernel, dtype=e.dtype))
    return [e.op("ConvTranspose", [e.mul(ctx.GO(0), scale), ones_k], {
        "strides": strides, "dilations": dil, "pads": pads_t, "output_padding": opad, "group": c,
        "kernel_shape": kernel})]


def _dynamic_averagepool(ctx: GradContext, kernel: list[int]):
    """AveragePool's gradient at a run-time size: g / divisor, spread back over each window.

    The divisor per window is valid / AvgPool(ones) with valid = the windows' sums of ones (a Conv with the
    pool's padding); a Conv has no ceil_mode, so ceil_mode pools need static sizes.
    """
    e, x = ctx.e, ctx.I(0)
    if int(ctx.attr("ceil_mode", 0)):
        raise ctx.fail("needs static spatial sizes for a ceil_mode pool")
    c = ctx.shape(x)[1]
    if not isinstance(c, (int, np.integer)):
        raise ctx.fail(f"needs a static channel count, got {ctx.shape(x)}")
    ones = e.op("ConstantOfShape", [e.concat([e.const(np.ones(2, np.int64)), e.shape(x, start=2)], axis=0)],
                {"value": gs.Constant(e.name("one"), np.ones(1, e.dtype))})
    window = {k: v for k, v in ctx.node.attrs.items() if k in ("strides", "pads", "auto_pad", "dilations")}
    valid = e.op("Conv", [ones, e.const(np.ones([1, 1] + kernel, dtype=e.dtype))], {**window, "kernel_shape": kernel})
    scale = e.div(e.op("AveragePool", [ones], dict(ctx.node.attrs)), valid)
    ones_k = e.const(np.ones([int(c), 1] + kernel, dtype=e.dtype))
    return transposed_to_input(ctx, e.mul(ctx.GO(0), scale), ones_k, kernel, int(c))


@register("GlobalAveragePool")
def global_average_pool(ctx: GradContext):
    x = ctx.I(0)
    if ctx.static_spatial(x) is None:  # 1 / (H W) read at run time
        g = ctx.e.div(ctx.GO(0), runtime_count(ctx, x, list(range(2, len(ctx.shape(x))))))
        return [ctx.e.expand(g, ctx.e.shape(x))]
    spatial = ctx.spatial(x)
    g = ctx.e.mul(ctx.GO(0), np.float32(1.0 / float(np.prod(spatial))))
    return [ctx.e.expand(g, [1, 1] + spatial)]


def guided_maxpool(ctx: GradContext):
    """GNL-IG's max-pool: only relu(g) goes to each window's arg-max."""
    return [maxpool_input_grad(ctx, ctx.e.relu(ctx.GO(0)))]


def authors_maxpool(ctx: GradContext):
    """The authors' variant: the ordinary max-pool gradient times [g > 0] upsampled (nearest) to the input."""
    e = ctx.e
    positive = e.mask(e.greater(ctx.GO(0), np.float32(0)))
    up = e.op("Resize", [positive, None, None, e.shape(ctx.I(0))], {
        "mode": "nearest", "coordinate_transformation_mode": "asymmetric", "nearest_mode": "floor"})
    return [e.mul(maxpool_input_grad(ctx, ctx.GO(0)), up)]


# -- max-type selections: plain and guided --------------------------------------------------------------------
def _selected(ctx: GradContext, x, y_like):
    """[x == y] as a 0/1 float mask (y broadcast to x)."""
    return ctx.e.mask(ctx.e.op("Equal", [x, y_like]))


def _reduce_max_grad(ctx: GradContext, g, axes: list[int], keepdims: bool):
    e, x = ctx.e, ctx.I(0)
    y = ctx.O(0)
    if not keepdims:
        g, y = e.unsqueeze(g, axes), e.unsqueeze(y, axes)
    m = _selected(ctx, x, y)
    share = e.div(m, e.reduce_sum(m, axes, keepdims=True))  # ties share equally
    return e.mul(share, g)


def _global_max_pool(ctx: GradContext, g):
    rank = len(ctx.shape(ctx.I(0)))
    return [_reduce_max_grad(ctx, g, list(range(2, rank)), True)]


def _reduce_max(ctx: GradContext, g):
    rank = len(ctx.shape(ctx.I(0)))
    axes = reduce_axes(ctx, rank)
    if not axes:  # noop_with_empty_axes: the input passes unchanged
        return [g] + [None] * (len(ctx.node.inputs) - 1)
    return [_reduce_max_grad(ctx, g, axes, bool(int(ctx.attr("keepdims", 1))))] + [None] * (len(ctx.node.inputs) - 1)


def _max_min(ctx: GradContext, g):
    """Element-wise Max/Min over any number of broadcast inputs: the gradient goes to the selected input."""
    e, y = ctx.e, ctx.O(0)
    ins = list(ctx.node.inputs)
    if len(ins) == 1:
        return [g]
    masks = [_selected(ctx, t, y) for t in ins]
    count = e.sum(masks)  # Add / Sum broadcast the masks to y's shape
    return [ctx.unbroadcast(e.mul(g, e.div(m, count)), t, y) if ctx.needs(i) else None
            for i, (t, m) in enumerate(zip(ins, masks))]


@register("GlobalMaxPool")
def global_max_pool(ctx: GradContext):
    return _global_max_pool(ctx, ctx.GO(0))


@register("ReduceMax", "ReduceMin")
def reduce_max(ctx: GradContext):
    return _reduce_max(ctx, ctx.GO(0))


@register("Max", "Min")
def max_min(ctx: GradContext):
    return _max_min(ctx, ctx.GO(0))


def guided_global_max_pool(ctx: GradContext):
    return _global_max_pool(ctx, ctx.e.relu(ctx.GO(0)))


def guided_reduce_max(ctx: GradContext):
    return _reduce_max(ctx, ctx.e.relu(ctx.GO(0)))


def is_spatial_pooling(ctx: GradContext) -> bool:
    """Whether this ReduceMax is a global max-pool: over every spatial axis of an image-like (rank >= 4) tensor,
    channels first (axes 2..r-1, torch's ``x.amax((2, 3))``) or last (axes 1..r-2, NHWC graphs)."""
    shape = ctx.shape(ctx.I(0))
    rank = len(shape) if shape is not None else 0
    if rank < 4:
        return False
    axes = reduce_axes(ctx, rank)
    return axes in (list(range(2, rank)), list(range(1, rank - 1)))


def guided_max_pooling(ctx: GradContext):
    """The paper's max-pool rule for a max-pool written as ReduceMax; any other ReduceMax keeps its true gradient."""
    return guided_reduce_max(ctx) if is_spatial_pooling(ctx) else reduce_max(ctx)


def guided_max_min(ctx: GradContext):
    return _max_min(ctx, ctx.e.relu(ctx.GO(0)))


# -- Lp pooling and TopK ------------------------------------------------------------------------------------------
def _lp_scale(ctx: GradContext):
    """x |x|^(p-2) and y^(1-p) for y = (sum |x|^p)^(1/p): dy/dx = x |x|^(p-2) y^(1-p) within each window."""
    e, x, y = ctx.e, ctx.I(0), ctx.O(0)
    p = float(ctx.attr("p", 2))
    y_safe = e.add(y, e.mask(e.op("Equal", [y, np.float32(0)])))  # y = 0: every |x| in the window is 0
    inv = e.op("Pow", [y_safe, e.const(np.float32(1 - p))]) if p != 2 else e.op("Reciprocal", [y_safe])
    if p == 2:
        xs = x
    elif p == 1:
        xs = e.op("Sign", [x])
    else:
        xs = e.mul(x, e.op("Pow", [e.op("Abs", [x]), e.const(np.float32(p - 2))]))
    return xs, inv


@register("LpPool")
def lp_pool(ctx: GradContext):
    """dx = x |x|^(p-2) * sum over the windows holding x of g y^(1-p): the window sum as a ones ConvTranspose."""
    e, x = ctx.e, ctx.I(0)
    kernel = [int(k) for k in ctx.attr("kernel_shape")]
    strides, dil, pads, out = conv_geometry(ctx, x, kernel)
    pads_t, opad = transpose_padding(ctx.spatial(x), out, kernel, strides, dil, pads)
    xs, inv = _lp_scale(ctx)
    c = int(ctx.shape(x)[1])
    ones_k = e.const(np.ones([c, 1] + kernel, dtype=e.dtype))
    back = e.op("ConvTranspose", [e.mul(ctx.GO(0), inv), ones_k], {
        "strides": strides, "dilations": dil, "pads": pads_t, "output_padding": opad, "group": c,
        "kernel_shape": kernel})
    return [e.mul(xs, back)]


@register("GlobalLpPool")
def global_lp_pool(ctx: GradContext):
    xs, inv = _lp_scale(ctx)
    return [ctx.e.mul(xs, ctx.e.mul(ctx.GO(0), inv))]  # g, y: [N, C, 1, 1] broadcast over x


def _topk(ctx: GradContext, g):
    """The values output's gradient goes to the selected elements (TopK's indices along ``axis``)."""
    if g is None:
        return [None, None]
    attrs = {"axis": int(ctx.attr("axis", -1)), "reduction": "add"}
    return [ctx.e.op("ScatterElements", [zeros_like(ctx, ctx.I(0)), ctx.O(1), g], attrs), None]


@register("TopK")
def topk(ctx: GradContext):
    return _topk(ctx, ctx.GO(0))


def guided_topk(ctx: GradContext):
    return _topk(ctx, None if ctx.GO(0) is None else ctx.e.relu(ctx.GO(0)))
