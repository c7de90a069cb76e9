"""Indexing family: ops that select elements by position (Slice, Gather), with constant indices.

The gradient scatters back: a Pad for unit-step slices, else a MatMul with a constant 0/1 matrix along
the selected axis, which adds where indices repeat (common.scatter_along).
"""
from __future__ import annotations

import numpy as np

from .common import constant_input, constant_params, one_hot, scatter_along, static, zeros_like
from .registry import GradContext, register


def _slice_indices(dim: int, start: int, end: int, step: int) -> np.ndarray:
    """The indices ONNX Slice takes along one axis (clamping as the operator spec says)."""
    start, end = int(start), int(end)
    if start < 0:
        start += dim
    if end < 0:
        end += dim
    if step > 0:
        start, end = min(max(start, 0), dim), min(max(end, 0), dim)
    else:
        start, end = min(max(start, 0), dim - 1), min(max(end, -1), dim - 1)
    return np.arange(start, end, step, dtype=np.int64)


@register("Slice")
def slice_(ctx: GradContext):
    constant_params(ctx, "slice bounds")
    x = ctx.I(0)
    sx = ctx.shape(x)
    rank = len(sx)
    if ctx.attr("starts") is not None:  # opset < 10: attributes
        starts, ends = ctx.attr("starts"), ctx.attr("ends")
        axes, steps = ctx.attr("axes", list(range(len(starts)))), [1] * len(starts)
    else:
        vals = [ctx.const_value(i) for i in range(1, 5)]
        if vals[0] is None or vals[1] is None or (ctx.has_input(3) and vals[2] is None) \
                or (ctx.has_input(4) and vals[3] is None):
            raise ctx.fail("needs constant starts, ends, axes and steps")
        starts, ends = vals[0].tolist(), vals[1].tolist()
        axes = vals[2].tolist() if vals[2] is not None else list(range(len(starts)))
        steps = vals[3].tolist() if vals[3] is not None else [1] * len(starts)
    g, pads = ctx.GO(0), [0] * (2 * rank)
    for a, s, en, st in zip(axes, starts, ends, steps):
        a = int(a) % rank
        if not static(sx[a]):
            raise ctx.fail(f"needs a static size along sliced axis {a}, got {sx}")
        dim = int(sx[a])
        idx = _slice_indices(dim, s, en, int(st))
        if len(idx) == 0:
            return [zeros_like(ctx, x)]
        if int(st) == 1:
            pads[a], pads[rank + a] = int(idx[0]), dim - int(idx[-1]) - 1
        else:
            g = scatter_along(ctx, g, a, rank, one_hot(idx, dim))
    if any(pads):
        g = ctx.e.op("Pad", [g, ctx.e.const(np.asarray(pads, np.int64))])
    return [g]


@register("Gather")
def gather(ctx: GradContext):
    """Gather with constant indices: scatter the gradient back (repeated indices add)."""
    idx = constant_input(ctx, 1, "index tensor (it routes the gradient back)")
    x, e = ctx.I(0), ctx.e
    sx = ctx.shape(x)
    rank = len(sx)
    axis = int(ctx.attr("axis", 0)) % rank
    if axis == 0 or not static(sx[axis]):
        raise ctx.fail(f"needs a static, non-batch gather axis, got axis {axis} of {sx}")
    dim = int(sx[axis])
    flat = (idx.astype(np.int64).reshape(-1) % dim)
    g = ctx.GO(0)
    if idx.ndim == 0:
        g = e.unsqueeze(g, [axis])
    elif idx.ndim > 1:
        so = ctx.shape(ctx.O(0))
        rest = so[axis + idx.ndim:]
        if not all(static(d) for d in list(so[1:axis]) + list(rest)):
            raise ctx.fail(f"needs static sizes around the gather axis, got {so}")
        g = e.reshape(g, [0] + [int(d) for d in so[1:axis]] + [flat.size] + [int(d) for d in rest])
    return [scatter_along(ctx, g, axis, rank, one_hot(flat, dim)), None]


# -- element-wise gathers and scatters (indices need not be constant: they are not differentiated) ------------
def _attr_str(ctx: GradContext, name: str, default: str) -> str:
    v = ctx.attr(name, default)
    return v.decode() if isinstance(v, bytes) else v


@register("GatherElements")
def gather_elements(ctx: GradContext):
    """y[.., i, ..] = x[.., idx[.., i, ..], ..] along ``axis``: scatter g back, adding where indices repeat."""
    if ctx.needs(1):
        raise ctx.fail("gather indices are not differentiable")
    e, x = ctx.e, ctx.I(0)
    zero = zeros_like(ctx, x)
    return [e.op("ScatterElements", [zero, ctx.I(1), ctx.GO(0)], {"axis": int(ctx.attr("axis", 0)),
                                                                  "reduction": "add"}), None]


@register("GatherND")
def gather_nd(ctx: GradContext):
    """y = x[idx[..., :]] (batch_dims 0): scatter g back with ScatterND, adding where indices repeat."""
    if ctx.needs(1):
        raise ctx.fail("gather indices are not differentiable")
    if int(ctx.attr("batch_dims", 0)):
        raise ctx.fail("only batch_dims=0 is supported")
    zero = zeros_like(ctx, ctx.I(0))
    return [ctx.e.op("ScatterND", [zero, ctx.I(1), ctx.GO(0)], {"reduction": "add"}), None]


@register("ScatterElements", "ScatterND")
def scatter(ctx: GradContext):
    """data's gradient is g with the overwritten positions zeroed (kept with reduction='add'); the updates'
    gradient is g gathered at the indices."""
    if ctx.needs(1):
        raise ctx.fail("scatter indices are not differentiable")
    reduction = _attr_str(ctx, "reduction", "none")
    if reduction not in ("none", "add"):
        raise ctx.fail(f"only reduction 'none' or 'add' is differentiable here, got '{reduction}'")
    e, g, idx = ctx.e, ctx.GO(0), ctx.I(1)
    elements = ctx.node.op == "ScatterElements"
    attrs = {"axis": int(ctx.attr("axis", 0))} if elements else {}
    gd = gu = None
    if ctx.needs(0):
        gd = g if reduction == "add" else e.op(ctx.node.op, [g, idx, zeros_like(ctx, ctx.I(2))], attrs)
    if ctx.needs(2):
        gu = e.op("GatherElements" if elements else "GatherND", [g, idx], attrs)
    return [gd, None, gu]


@register("Trilu")
def trilu(ctx: GradContext):
    """A fixed 0/1 mask on the last two axes: the gradient keeps the same triangle."""
    constant_params(ctx, "k")
    ins = [ctx.GO(0)] + ([ctx.I(1)] if ctx.has_input(1) else [])
    return [ctx.e.op("Trilu", ins, {"upper": int(ctx.attr("upper", 1))}), None][:len(ctx.node.inputs)]
