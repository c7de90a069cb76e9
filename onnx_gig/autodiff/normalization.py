"""Normalisation family: BatchNormalization (inference), LRN, LayerNormalization, InstanceNormalization.

True gradients in every rule set: normalisations are not the non-linear units GNL-IG guides.
"""
from __future__ import annotations

import numpy as np

from .common import constant_params, runtime_count, static
from .registry import GradContext, register

F = np.float32


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
    if not static(c):
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


# -- layer and instance normalisation ---------------------------------------------------------------------
def _normalise_grad(ctx: GradContext, axes: list[int], scale, x=None, g=None, count=None, eps: float | None = None):
    """y = (x - mean) / sqrt(var + eps) * scale + bias over ``axes``: the input gradient.

    dx = rstd (gs - mean(gs) - xhat mean(gs xhat)), gs = g * scale (means over ``axes``). ``x``, ``g`` default to
    the node's input and arriving gradient; ``count`` (the number of elements normalised together: an int, or a
    scalar tensor read at run time) to the product of x's sizes on ``axes``.
    """
    e = ctx.e
    x = ctx.I(0) if x is None else x
    g = ctx.GO(0) if g is None else g
    runtime_n = None
    if count is not None and not isinstance(count, int):  # a count read at run time (a scalar tensor)
        runtime_n, count = count, None
    elif count is None:
        sx = ctx.shape(x)
        sizes = [sx[a] for a in axes]
        if all(static(d) for d in sizes):
            count = int(np.prod([int(d) for d in sizes]))
        else:  # sizes left dynamic (instance norm over an image of any size): counted at run time
            runtime_n = runtime_count(ctx, x, axes)
    inv_n = F(1.0 / float(count)) if runtime_n is None else None
    eps = F(float(ctx.attr("epsilon", 1e-5)) if eps is None else eps)

    def mean(t):
        total = e.reduce_sum(t, axes, keepdims=True)
        return e.mul(total, inv_n) if runtime_n is None else e.div(total, runtime_n)

    xc = e.sub(x, mean(x))
    rstd = e.op("Reciprocal", [e.sqrt(e.add(mean(e.mul(xc, xc)), eps))])
    xhat = e.mul(xc, rstd)
    gs_ = g if scale is None else e.mul(g, scale)
    return e.mul(rstd, e.sub(e.sub(gs_, mean(gs_)), e.mul(xhat, mean(e.mul(gs_, xhat)))))


@register("LayerNormalization")
def layer_norm(ctx: GradContext):
    constant_params(ctx, "scale and bias")
    rank = len(ctx.shape(ctx.I(0)))
    axis = int(ctx.attr("axis", -1)) % rank
    return [_normalise_grad(ctx, list(range(axis, rank)), ctx.I(1))] + [None] * (len(ctx.node.inputs) - 1)


@register("InstanceNormalization")
def instance_norm(ctx: GradContext):
    constant_params(ctx, "scale and bias")
    rank = len(ctx.shape(ctx.I(0)))
    scale = ctx.e.unsqueeze(ctx.I(1), list(range(1, rank - 1)))  # [C] -> [C, 1, ...]
    return [_normalise_grad(ctx, list(range(2, rank)), scale), None, None]


@register("GroupNormalization")
def group_norm(ctx: GradContext):
    """Normalise over (C/G channels x spatial) per group: x viewed as [N, G, C/G, *spatial].

    The scale is per group ([G], opset 18) or per channel ([C], opset 21); told apart by its length.
    """
    constant_params(ctx, "scale and bias")
    e, x = ctx.e, ctx.I(0)
    sx = ctx.shape(x)
    if not static(sx[1]):
        raise ctx.fail(f"needs a static channel count, got {sx}")
    c, groups = int(sx[1]), int(ctx.attr("num_groups"))
    sv = ctx.const_value(1)
    n_scale = int(sv.size) if sv is not None else (int(ctx.shape(ctx.I(1))[0]) if ctx.shape(ctx.I(1)) else c)
    per_channel = n_scale == c and groups != c
    if not all(static(d) for d in sx[2:]):  # image sizes read at run time: spatial axes flattened into one
        scale = e.reshape(ctx.I(1), [groups, c // groups if per_channel else 1, 1])
        count = e.mul(runtime_count(ctx, x, list(range(2, len(sx)))), F(c // groups))
        view = [0, groups, c // groups, -1]
        dx = _normalise_grad(ctx, [2, 3], scale, e.reshape(x, view), e.reshape(ctx.GO(0), view), count=count)
        return [e.reshape(dx, e.shape(x)), None, None]
    rest = [int(d) for d in sx[2:]]
    view = [-1, groups, c // groups] + rest
    ones = [1] * len(rest)
    scale = e.reshape(ctx.I(1), [groups, c // groups if per_channel else 1] + ones)
    axes = list(range(2, 3 + len(rest)))
    dx = _normalise_grad(ctx, axes, scale, e.reshape(x, view), e.reshape(ctx.GO(0), view),
                         count=(c // groups) * int(np.prod(rest or [1])))
    return [e.reshape(dx, [-1, c] + rest), None, None]


@register("LpNormalization")
def lp_norm(ctx: GradContext):
    """y = x / ||x||_p along ``axis`` (p = 1 or 2): dx = (g - s(x) sum(g y)) / ||x||_p, s(x) = y for p = 2 and
    sign(x) for p = 1."""
    e, x, y, g = ctx.e, ctx.I(0), ctx.O(0), ctx.GO(0)
    p = int(ctx.attr("p", 2))
    if p not in (1, 2):
        raise ctx.fail(f"p must be 1 or 2, got {p}")
    axis = int(ctx.attr("axis", -1))
    norm = e.reduce_sum(e.mul(x, x) if p == 2 else e.op("Abs", [x]), [axis], keepdims=True)
    norm = e.sqrt(norm) if p == 2 else norm
    s = y if p == 2 else e.op("Sign", [x])
    return [e.div(e.sub(g, e.mul(s, e.reduce_sum(e.mul(g, y), [axis], keepdims=True))), norm)]


@register("MeanVarianceNormalization")
def mean_variance_norm(ctx: GradContext):
    """(x - mean) / sqrt(var) over ``axes`` (default N, H, W): the layer-norm gradient with onnxruntime's 1e-9."""
    rank = len(ctx.shape(ctx.I(0)))
    axes = sorted(int(a) % rank for a in ctx.attr("axes", [0, 2, 3]))
    if 0 in axes:
        raise ctx.fail("normalising over the batch axis mixes images; only axes without 0 are supported")
    return [_normalise_grad(ctx, axes, None, eps=1e-9)]
