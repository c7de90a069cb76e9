"""Reduction family: ReduceSum/Mean, the smooth reductions (L1, L2, SumSquare, LogSumExp, Prod) and CumSum.

The gradient of a sum broadcasts g back over the reduced axes (divided by the count for a mean); the others
multiply the broadcast g by their element-wise derivative. Max-type reductions are selections (pooling.py).
"""
from __future__ import annotations

import numpy as np

from .common import constant_params, reduce_axes, runtime_count
from .registry import GradContext, register

F = np.float32


@register("ReduceMean", "ReduceSum")
def reduce_mean_sum(ctx: GradContext):
    x, e = ctx.I(0), ctx.e
    sx = ctx.shape(x)
    axes = reduce_axes(ctx, len(sx))
    g = ctx.GO(0)
    if not axes:
        return [g]
    if not int(ctx.attr("keepdims", 1)):
        g = e.unsqueeze(g, axes)
    if ctx.node.op == "ReduceMean":
        sizes = [sx[a] for a in axes]
        if all(isinstance(d, (int, np.integer)) for d in sizes):
            g = e.mul(g, np.float32(1.0 / float(np.prod(sizes))))
        else:  # sizes left dynamic (adaptive pooling over an image of any size): counted at run time
            g = e.div(g, runtime_count(ctx, x, axes))
    target = [int(d) if (i in axes) else 1 for i, d in enumerate(sx)] \
        if all(isinstance(sx[a], (int, np.integer)) for a in axes) else None
    return [e.expand(g, target if target is not None else e.shape(x))]


def _broadcast_back(ctx: GradContext, t):
    """A reduced tensor (g or y) with its reduced axes restored as size 1, so it broadcasts against x."""
    rank = len(ctx.shape(ctx.I(0)))
    axes = reduce_axes(ctx, rank)
    return ctx.e.unsqueeze(t, axes) if axes and not int(ctx.attr("keepdims", 1)) else t


@register("ReduceL1", "ReduceL2", "ReduceSumSquare", "ReduceLogSumExp", "ReduceLogSum", "ReduceProd")
def reduce_smooth(ctx: GradContext):
    """dx = g * dy/dx: sign(x) (L1), x / y (L2), 2x (SumSquare), exp(x - y) (LogSumExp), exp(-y) (LogSum),
    y / x (Prod).

    L2 where y = 0 (an all-zero slice) and Prod at x = 0 have no finite formula here: those slices get 0
    (L2) or are undefined (Prod with a zero factor).
    """
    e, x, op = ctx.e, ctx.I(0), ctx.node.op
    if not reduce_axes(ctx, len(ctx.shape(x))):
        return [ctx.GO(0)]  # noop_with_empty_axes: the input passes unchanged
    g, y = _broadcast_back(ctx, ctx.GO(0)), _broadcast_back(ctx, ctx.O(0))
    if op == "ReduceL1":
        d = e.op("Sign", [x])
    elif op == "ReduceL2":
        d = e.div(x, e.add(y, e.mask(e.op("Equal", [y, F(0)]))))  # y = 0 only where every x is 0: 0 / 1
    elif op == "ReduceSumSquare":
        d = e.mul(x, F(2))
    elif op == "ReduceLogSumExp":
        d = e.exp(e.sub(x, y))
    elif op == "ReduceLogSum":  # 1 / sum(x), the same for every x of the slice
        return [e.expand(e.mul(g, e.exp(e.neg(y))), e.shape(x))]
    else:
        d = e.div(y, x)
    return [e.mul(g, d)]


@register("CumSum")
def cumsum(ctx: GradContext):
    """The adjoint of a running sum is the running sum in the other direction (same ``exclusive``)."""
    constant_params(ctx, "the axis")
    return [ctx.e.op("CumSum", [ctx.GO(0), ctx.I(1)], {"exclusive": int(ctx.attr("exclusive", 0)),
                                                       "reverse": 1 - int(ctx.attr("reverse", 0))}), None]
