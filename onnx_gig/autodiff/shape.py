"""Shape family: ops that move elements without changing them (reshape, transpose, concat/split, pad, expand).

Each gradient moves the arriving gradient back: Reshape(g, shape(x)), the inverse permutation, Split for
Concat and Concat for Split, a Slice for Pad, a broadcast-sum for Expand.
"""
from __future__ import annotations

import numpy as np

from .common import constant_params, zeros_like
from .registry import GradContext, register


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


@register("Split")
def split(ctx: GradContext):
    constant_params(ctx, "split sizes")
    rank = len(ctx.shape(ctx.I(0)))
    axis = int(ctx.attr("axis", 0)) % rank
    parts = [ctx.GO(i) if ctx.GO(i) is not None else zeros_like(ctx, o) for i, o in enumerate(ctx.node.outputs)]
    return [ctx.e.concat(parts, axis)]


@register("Expand")
def expand(ctx: GradContext):
    constant_params(ctx, "the target shape")
    return [ctx.unbroadcast(ctx.GO(0), ctx.I(0), ctx.O(0)), None]
