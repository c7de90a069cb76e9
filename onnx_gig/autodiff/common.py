"""Helpers shared by the rule families: window geometry, constant-parameter checks, scatter matrices.

Nothing here registers a rule. ``FAST_PATHS`` switches the faster graph constructions (flipped-kernel
Conv for stride-1 convolutions, arithmetic step masks for ReLU/Clip) that give the same attributions as
the plain ones (ConvTranspose, Greater/Less/Cast) to float rounding; tests build both and compare.
"""
from __future__ import annotations

import math

import numpy as np
import onnx_graphsurgeon as gs

from .registry import GradContext

F = np.float32
FAST_PATHS = True


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


def static(d) -> bool:
    """Whether a shape entry is a known integer."""
    return isinstance(d, (int, np.integer))


def reduce_axes(ctx: GradContext, rank: int) -> list[int]:
    """A reduction's axes, sorted and non-negative, from the attribute (older opsets) or a constant input.

    None given: every axis, or [] (the input passes unchanged) with ``noop_with_empty_axes``.
    """
    axes = ctx.attr("axes")
    if axes is None and ctx.has_input(1):
        axes = ctx.const_value(1)
        if axes is None:
            raise ctx.fail("needs constant reduction axes")
    if axes is None or len(axes) == 0:
        return [] if int(ctx.attr("noop_with_empty_axes", 0)) else list(range(rank))
    return sorted(int(a) % rank for a in axes)


def constant_params(ctx: GradContext, what: str = "parameters") -> None:
    """Refuse by name when a gradient is asked for any input but the first (weights are constants)."""
    for i in range(1, len(ctx.node.inputs)):
        if ctx.needs(i):
            raise ctx.fail(f"gradients with respect to input {i} ('{ctx.I(i).name}') are not supported "
                           f"({what} must be constants)")


def constant_input(ctx: GradContext, i: int, what: str) -> np.ndarray:
    """The value of input ``i`` (``what`` it is, for errors); refused by name when it is not a constant
    or when a gradient is asked for it."""
    if ctx.needs(i):
        raise ctx.fail(f"gradients with respect to input {i} ('{ctx.I(i).name}') are not supported "
                       f"({what} must be a constant)")
    v = ctx.const_value(i)
    if v is None:
        raise ctx.fail(f"needs a constant {what} (input {i})")
    return v


def zeros_like(ctx: GradContext, t: gs.Tensor) -> gs.Tensor:
    """A zero tensor shaped like forward tensor ``t`` (the gradient of an unused output)."""
    e = ctx.e
    return e.op("ConstantOfShape", [e.shape(t)], {"value": gs.Constant(e.name("zero"), np.zeros(1, e.dtype))})


def scatter_along(ctx: GradContext, g, axis: int, rank: int, matrix: np.ndarray):
    """g with ``axis`` of size m -> size d: out[..., j, ...] = sum_i matrix[i, j] g[..., i, ...]."""
    e = ctx.e

    def m():  # a tensor matrix was built at run time (resize.py); a numpy one becomes a constant here
        return matrix if isinstance(matrix, gs.Tensor) else e.const(matrix)

    if axis == rank - 1:
        return e.op("MatMul", [g, m()])
    perm = list(range(rank))
    perm[axis], perm[-1] = perm[-1], perm[axis]
    return e.transpose(e.op("MatMul", [e.transpose(g, perm), m()]), perm)


def one_hot(indices: np.ndarray, size: int) -> np.ndarray:
    """[len(indices), size] 0/1 rows selecting ``indices``; repeated indices add under scatter_along."""
    m = np.zeros((len(indices), size), np.float32)
    np.add.at(m, (np.arange(len(indices)), indices), 1.0)
    return m


def reshape_like(ctx: GradContext, t, like):
    """Reshape ``t`` to the shape of forward tensor ``like``, keeping the batch symbolic when possible."""
    s = ctx.shape(like)
    if all(isinstance(d, (int, np.integer)) for d in s[1:]):
        return ctx.e.reshape(t, [-1] + [int(d) for d in s[1:]])
    return ctx.e.reshape(t, ctx.e.shape(like))


def window_valid_counts(spatial, out, kernel, strides, dil, pads) -> np.ndarray:
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


# -- sizes read at run time (image sizes left dynamic) ---------------------------------------------------------
# Used only when a rule's static spatial sizes are unknown, so a static model's graph stays as it was.
def _auto_pad(ctx: GradContext) -> str:
    auto = ctx.attr("auto_pad", "NOTSET")
    return auto.decode() if isinstance(auto, bytes) else auto


def runtime_begin_pads(ctx: GradContext, x, kernel: list[int], strides: list[int], dil: list[int]):
    """A window op's begin pads: a list when they do not depend on the input size, else an int64 tensor
    computed from Shape(x) (SAME auto-padding with stride > 1)."""
    n, auto = len(kernel), _auto_pad(ctx)
    if auto == "VALID":
        return [0] * n
    if auto not in ("SAME_UPPER", "SAME_LOWER"):
        return _ints(ctx, "pads", 2 * n, 0)[:n]
    if all(s == 1 for s in strides):  # total pad (k - 1) d at any size
        totals = [(k - 1) * d for k, d in zip(kernel, dil)]
        return [t // 2 if auto == "SAME_UPPER" else t - t // 2 for t in totals]
    e = ctx.e
    h = e.shape(x, start=2)
    s = np.asarray(strides, np.int64)
    span = np.asarray([(k - 1) * d + 1 for k, d in zip(kernel, dil)], np.int64)
    o = e.div(e.add(h, s - 1), s)  # ceil(h / s)
    total = e.op("Max", [e.sub(e.add(e.mul(e.sub(o, np.int64(1)), s), span), h), e.const(np.zeros(n, np.int64))])
    half = e.div(total, np.int64(2))
    return half if auto == "SAME_UPPER" else e.sub(total, half)


def unshared_weight(ctx: GradContext, w, group: int, hint: str):
    """A square constant weight ([C, C/G, ...]) as its own copy when a Conv and a ConvTranspose would both read
    it: OpenVINO computes such a shared-weight ConvTranspose wrongly. Any other weight is returned as is."""
    if isinstance(w, gs.Constant) and int(w.shape[0]) == int(w.shape[1]) * group:
        return ctx.e.const(np.array(w.values, copy=True), hint=hint)
    return w


def transposed_to_input(ctx: GradContext, g, w, kernel: list[int], group: int):
    """The transposed window map of ``g`` (a Conv's input gradient) onto the input's run-time size.

    output_padding must be an attribute, and for a strided window it depends on the input size; so the
    ConvTranspose writes the full map (begin pads as the forward op; output_padding s - 1, which always
    reaches the input's end) and a Slice crops it to Shape(x). Inputs no window reads get 0, as they should.
    """
    e, x, n = ctx.e, ctx.I(0), len(kernel)
    strides, dil = _ints(ctx, "strides", n, 1), _ints(ctx, "dilations", n, 1)
    begin = runtime_begin_pads(ctx, x, kernel, strides, dil)
    static_begin = isinstance(begin, list)
    w = unshared_weight(ctx, w, group, "convT_w")
    full = e.op("ConvTranspose", [g, w], {
        "strides": strides, "dilations": dil, "pads": (begin if static_begin else [0] * n) + [0] * n,
        "output_padding": [s - 1 for s in strides], "group": group, "kernel_shape": kernel})
    starts = e.const(np.zeros(n, np.int64)) if static_begin else begin
    ends = e.shape(x, start=2) if static_begin else e.add(begin, e.shape(x, start=2))
    return e.op("Slice", [full, starts, ends, e.const(np.arange(2, 2 + n, dtype=np.int64))])


def runtime_count(ctx: GradContext, x, axes: list[int]):
    """The number of elements over ``axes`` of ``x`` at run time, as a float scalar tensor."""
    e = ctx.e
    sizes = e.cast(e.shape(x))
    count = None
    for a in axes:  # a product of Gathers (ReduceProd lacks kernels on some providers)
        size = e.op("Gather", [sizes, e.const(np.asarray(a, np.int64))], {"axis": 0})
        count = size if count is None else e.mul(count, size)
    return count
