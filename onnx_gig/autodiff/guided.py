"""Guided rule sets: GNL-IG lets only positive gradients through the non-linear units.

``gnl-ig`` overrides three entries of the plain set (Relu, Clip/ReLU6, MaxPool) with the
guided-backprop rule grad_in = grad_out * mask(x) * [grad_out > 0]; max-pool routes only the
positive part of grad_out to each window's arg-max. ``gnl-ig-authors`` differs in MaxPool
only: the authors' code multiplies the ordinary max-pool gradient by [grad_out > 0]
upsampled (nearest) to the input size, which equals the exact rule for non-overlapping
pools and approximates it for overlapping ones.

``gnl-ig-all`` extends ``gnl-ig`` to every non-linear unit of real CNNs: each element-wise
activation passes relu(grad_out) * relu(f'(x)) (activations.py: for monotone units that is
relu(grad_out) * f'(x), for ReLU/ReLU6 exactly the rule above), x * Sigmoid(x) and
x * HardSigmoid(x) are guided as one unit (SiLU, HardSwish), and every max-type selection
(GlobalMaxPool, ReduceMax/ReduceMin, element-wise Max/Min) routes relu(grad_out) to its
arg-max (more_ops.py). Linear maps and normalisations (Conv, Gemm, BatchNorm, LRN, Softmax,
average pooling, Mul gates between different tensors) keep their true gradients in every set.
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

GUIDED_ALL = GUIDED.derive(
    "gnl-ig-all", "GNL-IG on every non-linear unit: relu(g) * relu(f'(x)) for each activation, "
    "relu(g) to the arg-max of each max-type op (the paper's three rules included)")

PAPER_SET = ("Relu", "Clip", "MaxPool")  # what the paper guides; gnl-ig overrides exactly these

from . import activations, more_ops  # noqa: E402,F401  (their guided rules join GUIDED_ALL)
