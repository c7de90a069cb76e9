"""Reduction family: ReduceSum and ReduceMean (max-type reductions are selections: pooling.py).

The gradient of a sum broadcasts g back over the reduced axes (divided by the count for a mean).
"""
from __future__ import annotations

import numpy as np

from .common import runtime_count
from .registry import GradContext, register


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
        if all(isinstance(d, (int, np.integer)) for d in sizes):
            g = e.mul(g, np.float32(1.0 / float(np.prod(sizes))))
        else:  # sizes left dynamic (adaptive pooling over an image of any size): counted at run time
            g = e.div(g, runtime_count(ctx, x, axes))
    target = [int(d) if (i in axes) else 1 for i, d in enumerate(sx)] \
        if all(isinstance(sx[a], (int, np.integer)) for a in axes) else None
    return [e.expand(g, target if target is not None else e.shape(x))]
