"""Guided rule sets: GNL-IG lets only positive gradients through the non-linear units.

``gnl-ig`` overrides three entries of the plain set (Relu, Clip/ReLU6, MaxPool) with the
guided-backprop rule grad_in = grad_out * mask(x) * [grad_out > 0]; max-pool routes only the
positive part of grad_out to each window's arg-max. ``gnl-ig-authors`` differs in MaxPool
only: the authors' code multiplies the ordinary max-pool gradient by [grad_out > 0]
upsampled (nearest) to the input size, which equals the exact rule for non-overlapping
pools and approximates it for overlapping ones.
"""
from __future__ import annotations

import numpy as np

from .registry import GradContext
from .rules import PLAIN, clip_mask, maxpool_input_grad, relu_mask


def guided_relu(ctx: GradContext):
    return [ctx.e.mul(ctx.e.relu(ctx.GO(0)), relu_mask(ctx))]


def guided_clip(ctx: GradContext):
    m = clip_mask(ctx)
    g = ctx.e.relu(ctx.GO(0))
    return [g if m is None else ctx.e.mul(g, m)]


def guided_maxpool(ctx: GradContext):
    return [maxpool_input_grad(ctx, ctx.e.relu(ctx.GO(0)))]


def authors_maxpool(ctx: GradContext):
    e = ctx.e
    positive = e.mask(e.greater(ctx.GO(0), np.float32(0)))
    up = e.op("Resize", [positive, None, None, e.shape(ctx.I(0))], {
        "mode": "nearest", "coordinate_transformation_mode": "asymmetric", "nearest_mode": "floor"})
    return [e.mul(maxpool_input_grad(ctx, ctx.GO(0)), up)]


GUIDED = PLAIN.derive(
    "gnl-ig", "GNL-IG: guided ReLU, ReLU6/Clip and max-pool (positive gradients only; exact max-pool rule)",
    {"Relu": guided_relu, "Clip": guided_clip, "MaxPool": guided_maxpool})

GUIDED_AUTHORS = GUIDED.derive(
    "gnl-ig-authors", "GNL-IG with the authors' max-pool variant (ordinary gradient times upsampled [g > 0])",
    {"MaxPool": authors_maxpool})
