"""Normalisation family: BatchNormalization (inference), LRN, LayerNormalization, InstanceNormalization.

True gradients in every rule set: normalisations are not the non-linear units GNL-IG guides.
"""
from __future__ import annotations

import numpy as np

from .common import constant_params, static
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
def _normalise_grad(ctx: GradContext, axes: list[int], scale):
    """y = (x - mean) / sqrt(var + eps) * scale + bias over ``axes``: the input gradient.

    dx = rstd (gs - mean(gs) - xhat mean(gs xhat)), gs = g * scale (means over ``axes``).
    """
    e, x = ctx.e, ctx.I(0)
    sx = ctx.shape(x)
    sizes = [sx[a] for a in axes]
    if not all(static(d) for d in sizes):
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
