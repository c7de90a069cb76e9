"""Shape family: ops that move elements without changing them (reshape, transpose, concat/split, pad, expand).

Each gradient moves the arriving gradient back: Reshape(g, shape(x)), the inverse permutation, Split for
Concat and Concat for Split, a Slice for Pad, a broadcast-sum for Expand.
"""
from __future__ import annotations

import numpy as np

from .common import constant_input, constant_params, zeros_like
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
    """Slice g back into the parts. Sizes along the axis that shape inference left unknown (a class token
    expanded to a symbolic batch by the legacy exporter) are read at run time with Shape."""
    e = ctx.e
    rank = len(ctx.shape(ctx.O(0)))
    axis = int(ctx.attr("axis")) % rank
    sizes = [ctx.shape(t)[axis] for t in ctx.node.inputs]
    if all(isinstance(s, (int, np.integer)) for s in sizes):
        offsets = [int(sum(sizes[:i])) for i in range(len(sizes) + 1)]
        return [e.slice(ctx.GO(0), [offsets[i]], [offsets[i + 1]], [axis]) if ctx.needs(i) else None
                for i in range(len(sizes))]
    start = e.const(np.zeros(1, np.int64))
    grads = []
    for i, (t, s) in enumerate(zip(ctx.node.inputs, sizes)):
        size = e.const(np.asarray([s], np.int64)) if isinstance(s, (int, np.integer)) else \
            e.shape(t, axis, axis + 1)
        end = e.add(start, size)
        grads.append(e.op("Slice", [ctx.GO(0), start, end, e.const(np.asarray([axis], np.int64))])
                     if ctx.needs(i) else None)
        start = end
    return grads


@register("Pad")
def pad(ctx: GradContext):
    mode = ctx.attr("mode", "constant")
    mode = mode.decode() if isinstance(mode, bytes) else mode
    if mode != "constant":
        raise ctx.fail(f"only mode='constant' is differentiable here, got mode='{mode}'")
    pads = constant_input(ctx, 1, "pads tensor")
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


# -- pixel shuffles and tiling ---------------------------------------------------------------------------------
def _static_chw(ctx: GradContext, t) -> list[int]:
    s = ctx.shape(t)
    if len(s) != 4 or not all(isinstance(d, (int, np.integer)) for d in s[1:]):
        raise ctx.fail(f"needs a 4-D tensor with static C, H, W, got {s}")
    return [int(d) for d in s[1:]]


def _space_to_depth(ctx: GradContext, g, b: int, c: int, h: int, w: int, crd: bool = False):
    """[N, c, h b, w b] -> [N, c b^2, h, w], the inverse of DepthToSpace (``crd``: CRD channel order, else DCR)."""
    e = ctx.e
    t = e.reshape(g, [-1, c, h, b, w, b])
    t = e.transpose(t, [0, 1, 3, 5, 2, 4] if crd else [0, 3, 5, 1, 2, 4])
    return e.reshape(t, [-1, c * b * b, h, w])


@register("DepthToSpace")
def depth_to_space(ctx: GradContext):
    """A fixed permutation of elements: the gradient is the inverse permutation (SpaceToDepth for DCR)."""
    b = int(ctx.attr("blocksize"))
    mode = ctx.attr("mode", "DCR")
    mode = mode.decode() if isinstance(mode, bytes) else mode
    c, h, w = _static_chw(ctx, ctx.I(0))
    return [_space_to_depth(ctx, ctx.GO(0), b, c // (b * b), h, w, crd=mode == "CRD")]


@register("SpaceToDepth")
def space_to_depth(ctx: GradContext):
    """The inverse permutation: DepthToSpace (DCR) of the gradient."""
    return [ctx.e.op("DepthToSpace", [ctx.GO(0)], {"blocksize": int(ctx.attr("blocksize")), "mode": "DCR"})]


@register("Tile")
def tile(ctx: GradContext):
    """y = x repeated r_a times along each axis a: view g as [r_0, d_0, r_1, d_1, ...] and sum the r axes."""
    reps = constant_input(ctx, 1, "repeats tensor")
    sx = ctx.shape(ctx.I(0))
    reps = [int(r) for r in reps]
    if all(r == 1 for r in reps):
        return [ctx.GO(0), None]
    if sum(not isinstance(d, (int, np.integer)) for d in sx) > 1:
        raise ctx.fail(f"needs static sizes on all axes but one, got {sx}")
    view = []
    for d, r in zip(sx, reps):
        view += [r, -1 if not isinstance(d, (int, np.integer)) else int(d)]
    summed = ctx.e.reduce_sum(ctx.e.reshape(ctx.GO(0), view), [2 * a for a in range(len(sx))], keepdims=False)
    return [summed, None]
