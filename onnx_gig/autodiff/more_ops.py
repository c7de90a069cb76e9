"""More op types found in exported CNNs: LRN, slicing and selection, max-type reductions, math.

Plain rules go into ``ig`` (and so into every set); the max-type selections (GlobalMaxPool,
ReduceMax, ReduceMin, element-wise Max and Min) also get a guided rule in ``gnl-ig-all`` that
routes only relu(grad_out) to the selected element, as the paper's max-pool rule does. Ties
share the gradient equally (torch's amax/maximum convention). Selections along an axis with
constant indices (Slice with steps, Gather, nearest/linear Resize) are scattered back by a
MatMul with a constant 0/1 (or interpolation-weight) matrix, which adds where indices repeat.
"""
from __future__ import annotations

from typing import Optional

import numpy as np
import onnx_graphsurgeon as gs

from .guided import GUIDED_ALL
from .registry import GradContext
from .rules import PLAIN

F = np.float32
register = PLAIN.register


def _static(d) -> bool:
    return isinstance(d, (int, np.integer))


def _axes(ctx: GradContext, rank: int, input_index: int = 1) -> Optional[list[int]]:
    """Reduction axes from the attribute (opset < 18) or a constant input; [] = none given."""
    axes = ctx.attr("axes")
    if axes is None and ctx.has_input(input_index):
        axes = ctx.const_value(input_index)
        if axes is None:
            raise ctx.fail("needs constant axes")
    return sorted(int(a) % rank for a in axes) if axes is not None else []


def _only_input_zero(ctx: GradContext, what: str = "parameters") -> None:
    for i in range(1, len(ctx.node.inputs)):
        if ctx.needs(i):
            raise ctx.fail(f"gradients with respect to input {i} ('{ctx.I(i).name}') are not supported "
                           f"({what} must be constants)")


def _zeros_like(ctx: GradContext, t: gs.Tensor) -> gs.Tensor:
    e = ctx.e
    return e.op("ConstantOfShape", [e.shape(t)], {"value": gs.Constant(e.name("zero"), np.zeros(1, e.dtype))})


# -- LRN -------------------------------------------------------------------------------------------------
@register("LRN")
def lrn(ctx: GradContext):
    """y = x d^-b, d = bias + a/n S, S = sum of x^2 over the channel window.

    dx = g d^-b - (2 a b / n) x W^T(g x d^(-b-1)), the window sums W (and W^T) as a 1x1 Conv with a
    banded channel-mixing kernel.
    """
    e, x = ctx.e, ctx.I(0)
    shape = ctx.shape(x)
    c = shape[1]
    if not _static(c):
        raise ctx.fail(f"needs a static channel count, got {shape}")
    c, rank = int(c), len(shape)
    size = int(ctx.attr("size"))
    alpha, beta, bias = float(ctx.attr("alpha", 1e-4)), float(ctx.attr("beta", 0.75)), float(ctx.attr("bias", 1.0))
    lo, hi = (size - 1) // 2, size - 1 - (size - 1) // 2
    band = np.zeros((c, c), np.float32)  # band[out, in] = 1 where in lies in out's window
    for o in range(c):
        band[o, max(0, o - lo):min(c - 1, o + hi) + 1] = 1
    k = [1] * (rank - 2)

    def window(t, m):
        return e.op("Conv", [t, e.const(m.reshape([c, c] + k))], {"kernel_shape": k})

    d = e.add(e.mul(window(e.mul(x, x), band), F(alpha / size)), F(bias))
    p = e.op("Pow", [d, e.const(F(-beta))])  # d^-b
    g = ctx.GO(0)
    back = window(e.div(e.mul(e.mul(g, x), p), d), np.ascontiguousarray(band.T))
    return [e.sub(e.mul(g, p), e.mul(e.mul(x, back), F(2 * alpha * beta / size)))]


# -- splitting, slicing, gathering ---------------------------------------------------------------------------
@register("Split")
def split(ctx: GradContext):
    _only_input_zero(ctx, "split sizes")
    rank = len(ctx.shape(ctx.I(0)))
    axis = int(ctx.attr("axis", 0)) % rank
    parts = [ctx.GO(i) if ctx.GO(i) is not None else _zeros_like(ctx, o) for i, o in enumerate(ctx.node.outputs)]
    return [ctx.e.concat(parts, axis)]


def _scatter_along(ctx: GradContext, g, axis: int, rank: int, matrix: np.ndarray):
    """g with ``axis`` of size m -> size d: out[..., j, ...] = sum_i matrix[i, j] g[..., i, ...]."""
    e = ctx.e
    if axis == rank - 1:
        return e.op("MatMul", [g, e.const(matrix)])
    perm = list(range(rank))
    perm[axis], perm[-1] = perm[-1], perm[axis]
    return e.transpose(e.op("MatMul", [e.transpose(g, perm), e.const(matrix)]), perm)


def _one_hot(indices: np.ndarray, size: int) -> np.ndarray:
    m = np.zeros((len(indices), size), np.float32)
    np.add.at(m, (np.arange(len(indices)), indices), 1.0)
    return m


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
    _only_input_zero(ctx, "slice bounds")
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
        if not _static(sx[a]):
            raise ctx.fail(f"needs a static size along sliced axis {a}, got {sx}")
        dim = int(sx[a])
        idx = _slice_indices(dim, s, en, int(st))
        if len(idx) == 0:
            return [_zeros_like(ctx, x)]
        if int(st) == 1:
            pads[a], pads[rank + a] = int(idx[0]), dim - int(idx[-1]) - 1
        else:
            g = _scatter_along(ctx, g, a, rank, _one_hot(idx, dim))
    if any(pads):
        g = ctx.e.op("Pad", [g, ctx.e.const(np.asarray(pads, np.int64))])
    return [g]


@register("Gather")
def gather(ctx: GradContext):
    """Gather with constant indices: scatter the gradient back (repeated indices add)."""
    if ctx.needs(1):
        raise ctx.fail("gather indices are not differentiable")
    idx = ctx.const_value(1)
    if idx is None:
        raise ctx.fail("needs constant indices to route the gradient back")
    x, e = ctx.I(0), ctx.e
    sx = ctx.shape(x)
    rank = len(sx)
    axis = int(ctx.attr("axis", 0)) % rank
    if axis == 0 or not _static(sx[axis]):
        raise ctx.fail(f"needs a static, non-batch gather axis, got axis {axis} of {sx}")
    dim = int(sx[axis])
    flat = (idx.astype(np.int64).reshape(-1) % dim)
    g = ctx.GO(0)
    if idx.ndim == 0:
        g = e.unsqueeze(g, [axis])
    elif idx.ndim > 1:
        so = ctx.shape(ctx.O(0))
        rest = so[axis + idx.ndim:]
        if not all(_static(d) for d in list(so[1:axis]) + list(rest)):
            raise ctx.fail(f"needs static sizes around the gather axis, got {so}")
        g = e.reshape(g, [0] + [int(d) for d in so[1:axis]] + [flat.size] + [int(d) for d in rest])
    return [_scatter_along(ctx, g, axis, rank, _one_hot(flat, dim)), None]


@register("Expand")
def expand(ctx: GradContext):
    _only_input_zero(ctx, "the target shape")
    return [ctx.unbroadcast(ctx.GO(0), ctx.I(0), ctx.O(0)), None]


@register("Cast")
def cast(ctx: GradContext):
    """Float -> float casts pass the gradient (cast back); casts to integers are not differentiable paths."""
    x = ctx.I(0)
    src = np.dtype(x.dtype) if x.dtype is not None else ctx.e.dtype
    if src.kind != "f":
        return [None]
    g = ctx.GO(0)
    return [g if src == ctx.e.dtype else ctx.e.cast(g, src)]


@register("Where")
def where(ctx: GradContext):
    if ctx.needs(0):
        raise ctx.fail("the condition is not differentiable")
    e, g, y = ctx.e, ctx.GO(0), ctx.O(0)
    zero = e.const(np.zeros((), e.dtype))
    ga = ctx.unbroadcast(e.op("Where", [ctx.I(0), g, zero]), ctx.I(1), y) if ctx.needs(1) else None
    gb = ctx.unbroadcast(e.op("Where", [ctx.I(0), zero, g]), ctx.I(2), y) if ctx.needs(2) else None
    return [None, ga, gb]


# -- Resize (nearest and linear, static sizes) --------------------------------------------------------------
def _source_coordinate(mode: str, i: np.ndarray, scale: float, in_size: int, out_size: int) -> np.ndarray:
    if mode == "asymmetric":
        return i / scale
    if mode == "half_pixel":
        return (i + 0.5) / scale - 0.5
    if mode == "pytorch_half_pixel":
        return (i + 0.5) / scale - 0.5 if out_size > 1 else np.zeros_like(i, dtype=np.float64)
    if mode == "align_corners":
        return i * (in_size - 1) / (out_size - 1) if out_size > 1 else np.zeros_like(i, dtype=np.float64)
    if mode == "half_pixel_symmetric":
        adj = out_size / (scale * in_size)
        center = in_size / 2
        off = center * (1 - adj)
        return off + (i + 0.5) / scale - 0.5
    raise ValueError(mode)


def _nearest(x: np.ndarray, mode: str) -> np.ndarray:
    if mode == "round_prefer_ceil":
        return np.floor(x + 0.5)
    if mode == "floor":
        return np.floor(x)
    if mode == "ceil":
        return np.ceil(x)
    return np.ceil(x - 0.5)  # round_prefer_floor (the default)


def resize_matrix(in_size: int, out_size: int, scale: float, mode: str, ctm: str, nearest_mode: str) -> np.ndarray:
    """[out, in] weights with out = M @ in along one axis, as ONNX Resize computes it (no antialias)."""
    i = np.arange(out_size, dtype=np.float64)
    xs = _source_coordinate(ctm, i, scale, in_size, out_size)
    m = np.zeros((out_size, in_size), np.float64)
    rows = np.arange(out_size)
    if mode == "nearest":
        j = np.clip(_nearest(xs, nearest_mode).astype(np.int64), 0, in_size - 1)
        m[rows, j] = 1
    else:  # linear
        xs = np.clip(xs, 0, in_size - 1)
        j0 = np.floor(xs).astype(np.int64)
        j1 = np.minimum(j0 + 1, in_size - 1)
        w1 = xs - j0
        np.add.at(m, (rows, j0), 1 - w1)
        np.add.at(m, (rows, j1), w1)
    return m.astype(np.float32)


@register("Resize", "Upsample")
def resize(ctx: GradContext):
    _only_input_zero(ctx, "scales and sizes")
    x, y = ctx.I(0), ctx.O(0)
    sx, sy = ctx.shape(x), ctx.shape(y)
    rank = len(sx)
    mode = ctx.attr("mode", "nearest")
    mode = mode.decode() if isinstance(mode, bytes) else mode
    ctm = ctx.attr("coordinate_transformation_mode", "half_pixel" if ctx.node.op == "Resize" else "asymmetric")
    ctm = ctm.decode() if isinstance(ctm, bytes) else ctm
    nearest_mode = ctx.attr("nearest_mode", "round_prefer_floor" if ctx.node.op == "Resize" else "floor")
    nearest_mode = nearest_mode.decode() if isinstance(nearest_mode, bytes) else nearest_mode
    policy = ctx.attr("keep_aspect_ratio_policy", "stretch")
    policy = policy.decode() if isinstance(policy, bytes) else policy
    if mode not in ("nearest", "linear") or int(ctx.attr("antialias", 0)) or ctm == "tf_crop_and_resize" \
            or ctx.attr("axes") is not None or policy != "stretch":
        raise ctx.fail(f"only nearest/linear resizing without antialias, crop or axes is supported (mode '{mode}', "
                       f"coordinate_transformation_mode '{ctm}')")
    scales = None
    if ctx.node.op == "Resize" and ctx.has_input(2):
        scales = ctx.const_value(2)
    elif ctx.node.op == "Upsample":
        scales = ctx.const_value(1) if ctx.has_input(1) else np.asarray(ctx.attr("scales"), np.float32)
    if scales is not None and scales.size == 0:
        scales = None
    g = ctx.GO(0)
    for a in range(rank):
        if (scales is not None and float(scales[a]) == 1.0) or (scales is None and sx[a] == sy[a]) \
                or (scales is None and a == 0 and not _static(sx[a])):
            continue
        if a < 2 or not (_static(sx[a]) and _static(sy[a])):
            raise ctx.fail(f"needs static spatial sizes and no resizing of batch or channels, got {sx} -> {sy}")
        scale = float(scales[a]) if scales is not None else int(sy[a]) / int(sx[a])
        m = resize_matrix(int(sx[a]), int(sy[a]), scale, mode, ctm, nearest_mode)
        g = _scatter_along(ctx, g, a, rank, m)
    return [g] + [None] * (len(ctx.node.inputs) - 1)


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
    axes = _axes(ctx, rank)
    if not axes:
        if int(ctx.attr("noop_with_empty_axes", 0)):
            return [g, None]
        axes = list(range(rank))
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


def _plain(fn):
    def rule(ctx: GradContext):
        return fn(ctx, ctx.GO(0))
    rule.__name__ = fn.__name__.lstrip("_")
    return rule


def _guided(fn):
    def rule(ctx: GradContext):
        return fn(ctx, ctx.e.relu(ctx.GO(0)))
    rule.__name__ = "guided" + fn.__name__
    return rule


for _ops, _fn in ((("GlobalMaxPool",), _global_max_pool), (("ReduceMax", "ReduceMin"), _reduce_max),
                  (("Max", "Min"), _max_min)):
    PLAIN.register(*_ops)(_plain(_fn))
    GUIDED_ALL.register(*_ops)(_guided(_fn))


# -- normalisation layers ----------------------------------------------------------------------------------------
def _normalise_grad(ctx: GradContext, axes: list[int], scale):
    """y = (x - mean) / sqrt(var + eps) * scale + bias over ``axes``: the input gradient.

    dx = rstd (gs - mean(gs) - xhat mean(gs xhat)), gs = g * scale (means over ``axes``).
    """
    e, x = ctx.e, ctx.I(0)
    sx = ctx.shape(x)
    sizes = [sx[a] for a in axes]
    if not all(_static(d) for d in sizes):
        raise ctx.fail(f"needs static sizes on the normalised axes, got {sx}")
    inv_n = F(1.0 / float(np.prod([int(d) for d in sizes])))
    eps = F(float(ctx.attr("epsilon", 1e-5)))

    def mean(t):
        return e.mul(e.reduce_sum(t, axes, keepdims=True), inv_n)

    xc = e.sub(x, mean(x))
    rstd = e.op("Reciprocal", [e.sqrt(e.add(mean(e.mul(xc, xc)), eps))])
    xhat = e.mul(xc, rstd)
    gs_ = ctx.GO(0) if scale is None else e.mul(ctx.GO(0), scale)
    return e.mul(rstd, e.sub(e.sub(gs_, mean(gs_)), e.mul(xhat, mean(e.mul(gs_, xhat)))))


@register("LayerNormalization")
def layer_norm(ctx: GradContext):
    _only_input_zero(ctx, "scale and bias")
    rank = len(ctx.shape(ctx.I(0)))
    axis = int(ctx.attr("axis", -1)) % rank
    return [_normalise_grad(ctx, list(range(axis, rank)), ctx.I(1))] + [None] * (len(ctx.node.inputs) - 1)


@register("InstanceNormalization")
def instance_norm(ctx: GradContext):
    _only_input_zero(ctx, "scale and bias")
    rank = len(ctx.shape(ctx.I(0)))
    scale = ctx.e.unsqueeze(ctx.I(1), list(range(1, rank - 1)))  # [C] -> [C, 1, ...]
    return [_normalise_grad(ctx, list(range(2, rank)), scale), None, None]


# -- element-wise math (normalisation arithmetic; true gradients in every set) ------------------------------------
@register("Exp")
def exp(ctx: GradContext):
    return [ctx.e.mul(ctx.GO(0), ctx.O(0))]


@register("Log")
def log(ctx: GradContext):
    return [ctx.e.div(ctx.GO(0), ctx.I(0))]


@register("Sqrt")
def sqrt(ctx: GradContext):
    return [ctx.e.div(ctx.e.mul(ctx.GO(0), F(0.5)), ctx.O(0))]


@register("Reciprocal")
def reciprocal(ctx: GradContext):
    y = ctx.O(0)
    return [ctx.e.neg(ctx.e.mul(ctx.GO(0), ctx.e.mul(y, y)))]


@register("Abs")
def abs_(ctx: GradContext):
    return [ctx.e.mul(ctx.GO(0), ctx.e.op("Sign", [ctx.I(0)]))]


@register("Pow")
def pow_(ctx: GradContext):
    """x ** p with a constant exponent p."""
    if ctx.needs(1):
        raise ctx.fail("only a constant exponent is supported")
    p = ctx.const_value(1)
    if p is None:
        raise ctx.fail("needs a constant exponent")
    e, x, g = ctx.e, ctx.I(0), ctx.GO(0)
    p = p.astype(np.float64)
    if p.size == 1 and float(p.reshape(-1)[0]) == 2.0:
        d = e.mul(x, F(2))
    elif p.size == 1 and float(p.reshape(-1)[0]) == 1.0:
        return [g, None]
    else:
        d = e.mul(e.op("Pow", [x, e.const((p - 1).astype(np.float32))]), e.const(p.astype(np.float32)))
    return [ctx.unbroadcast(e.mul(g, d), x, ctx.O(0)), None]

