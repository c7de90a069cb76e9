"""Activation family: ReLU, Clip/ReLU6, Softmax/LogSoftmax and every element-wise unit (``@unit``).

ReLU and Clip have plain rules (g * mask, masks.py) and the paper's guided rules relu(g) * mask. Every
other unit y = f(x) registers its local derivative f'(x) once (``@unit``), the way JAX's ``defjvp``
keeps one derivative per primitive. From it come

* the plain rule (``ig``):              grad_in = g * f'(x)
* the guided rule (``gnl-ig-all``):     grad_in = relu(g) * relu(f'(x))   (``guided_rule``)

"Only positive gradients pass": the arriving gradient passes only where it is positive (guided
backprop's [g > 0]) and only through the unit's increasing part. For a monotone unit (LeakyRelu,
Sigmoid, Tanh, Elu, Softplus, ...) relu(f') = f', so the rule is relu(g) * f'(x); for ReLU it is the
paper's g [x > 0] [g > 0]. Non-monotone units (SiLU, HardSwish, Mish, GELU, a PRelu/LeakyRelu with a
negative slope) also block their decreasing region, as ReLU blocks x < 0. Every guided unit's output
is therefore >= 0, the invariant of the paper's rule.

Two-input patterns that are one unit: ``Mul(x, Sigmoid(x))`` (SiLU / Swish) and ``Mul(x, HardSigmoid(x))``
(HardSwish as older exporters write it) are guided as the unit x * s(x), not as a product: the
product rule would route the gradient through x unguided. A Mul whose operands differ (a
squeeze-excitation gate ``features * Sigmoid(z)``) stays the bilinear Mul; its Sigmoid is the
non-linear unit and is guided on its own.

LeakyRelu, Sigmoid and Tanh keep the explicit plain rules registered first below (they read the unit's
output or a fast mask); their ``@unit`` derivative feeds only the guided rule. Which set uses which
guided rule is written in rulesets.py.
"""
from __future__ import annotations

import math
from typing import Callable, Optional, Union

import numpy as np
import onnx_graphsurgeon as gs

from .builder import build_gradient
from .elementwise import mul
from .masks import clip_mask, guided_clip_parts, relu_mask
from .registry import PLAIN, GradContext, register

Derivative = Callable[[GradContext, gs.Tensor], gs.Tensor]
Monotone = Union[bool, Callable[[GradContext], bool]]

DERIVATIVES: dict[str, tuple[Derivative, Monotone]] = {}
F = np.float32


@register("Relu")
def relu(ctx: GradContext):
    return [ctx.e.mul(ctx.GO(0), relu_mask(ctx))]


@register("Clip")
def clip(ctx: GradContext):
    m = clip_mask(ctx)
    return [ctx.GO(0) if m is None else ctx.e.mul(ctx.GO(0), m)]


@register("LeakyRelu")
def leaky_relu(ctx: GradContext):
    e, alpha = ctx.e, float(ctx.attr("alpha", 0.01))
    m = relu_mask(ctx)  # slope = alpha + (1 - alpha) * [x > 0]
    slope = e.add(e.mul(m, np.float32(1.0 - alpha)), np.float32(alpha))
    return [e.mul(ctx.GO(0), slope)]


@register("Sigmoid")
def sigmoid(ctx: GradContext):
    e, y = ctx.e, ctx.O(0)
    return [e.mul(ctx.GO(0), e.mul(y, e.sub(np.float32(1), y)))]


@register("Tanh")
def tanh(ctx: GradContext):
    e, y = ctx.e, ctx.O(0)
    return [e.mul(ctx.GO(0), e.sub(np.float32(1), e.mul(y, y)))]


@register("Softmax")
def softmax(ctx: GradContext):
    e, y, g = ctx.e, ctx.O(0), ctx.GO(0)
    axis = int(ctx.attr("axis", -1))
    return [e.mul(y, e.sub(g, e.reduce_sum(e.mul(g, y), [axis], keepdims=True)))]


@register("LogSoftmax")
def log_softmax(ctx: GradContext):
    e, y, g = ctx.e, ctx.O(0), ctx.GO(0)
    axis = int(ctx.attr("axis", -1))
    return [e.sub(g, e.mul(e.exp(y), e.reduce_sum(g, [axis], keepdims=True)))]


# -- the paper's guided ReLU and ReLU6/Clip ----------------------------------------------------------------
def guided_relu(ctx: GradContext):
    """GNL-IG's ReLU: g [x > 0] [g > 0] = relu(g) * [x > 0]."""
    return [ctx.e.mul(ctx.e.relu(ctx.GO(0)), relu_mask(ctx))]


def guided_clip(ctx: GradContext):
    """GNL-IG's ReLU6/Clip: relu(g) * [lo < x < hi] (the upper bound as a fused penalty, masks.py)."""
    parts = guided_clip_parts(ctx)
    if parts is not None:
        penalty, lower = parts
        return [ctx.e.mul(ctx.e.relu(ctx.e.add(ctx.GO(0), penalty)), lower)]
    m = clip_mask(ctx)
    g = ctx.e.relu(ctx.GO(0))
    return [g if m is None else ctx.e.mul(g, m)]


# -- @unit: one derivative, a plain and a guided rule --------------------------------------------------------
def unit(*op_types: str, monotone: Monotone = True):
    """Record ``fn(ctx, x) -> f'(x)`` for each op type and make it the plain rule (unless one is registered above).

    rulesets.py gives every op in DERIVATIVES the guided rule in ``gnl-ig-all``.
    """
    def deco(fn: Derivative) -> Derivative:
        for op in op_types:
            DERIVATIVES[op] = (fn, monotone)
            if PLAIN.lookup(op) is None:
                register(op)(plain_rule)
        return fn
    return deco


def _is_monotone(ctx: GradContext, op: str) -> bool:
    m = DERIVATIVES[op][1]
    return bool(m(ctx) if callable(m) else m)


def derivative(ctx: GradContext) -> gs.Tensor:
    """f'(x) of the node's unit, element-wise, shaped like its input."""
    return DERIVATIVES[ctx.node.op][0](ctx, ctx.I(0))


def _weights_are_constant(ctx: GradContext) -> None:
    for i in range(1, len(ctx.node.inputs)):
        if ctx.needs(i):
            raise ctx.fail(f"gradients with respect to input {i} ('{ctx.I(i).name}') are not supported "
                           "(activation parameters must be constants)")


def plain_rule(ctx: GradContext):
    _weights_are_constant(ctx)
    return [ctx.e.mul(ctx.GO(0), derivative(ctx))]


def guided_rule(ctx: GradContext):
    _weights_are_constant(ctx)
    d = derivative(ctx)
    if not _is_monotone(ctx, ctx.node.op):
        d = ctx.e.relu(d)
    return [ctx.e.mul(ctx.e.relu(ctx.GO(0)), d)]


# -- comparison masks -------------------------------------------------------------------------------------------
def _gt(e, x, v):
    return e.mask(e.greater(x, F(v)))


def _lt(e, x, v):
    return e.mask(e.less(x, F(v)))


def _ge(e, x, v):
    return e.mask(e.op("GreaterOrEqual", [x, F(v)]))


def _le(e, x, v):
    return e.mask(e.op("LessOrEqual", [x, F(v)]))


def _blend(e, m, a: float, b):
    """m * a + (1 - m) * b for a 0/1 mask m, a scalar a and a tensor b."""
    return e.add(e.mul(m, e.sub(F(a), b)), b)


def _alpha(ctx: GradContext, default: float) -> float:
    return float(ctx.attr("alpha", default))


# -- the piecewise-linear family ------------------------------------------------------------------------
@unit("LeakyRelu", monotone=lambda ctx: _alpha(ctx, 0.01) >= 0)
def d_leaky_relu(ctx, x):
    a = _alpha(ctx, 0.01)
    return ctx.e.add(ctx.e.mul(_gt(ctx.e, x, 0), F(1 - a)), F(a))  # 1 where x > 0, else alpha


def _prelu_slope_nonnegative(ctx) -> bool:
    s = ctx.const_value(1)
    return s is not None and bool(np.all(s >= 0))


@unit("PRelu", monotone=_prelu_slope_nonnegative)
def d_prelu(ctx, x):
    e = ctx.e
    m = _gt(e, x, 0)
    slope = ctx.I(1)  # broadcasts to x (unidirectionally)
    return e.add(m, e.mul(e.sub(F(1), m), slope))


@unit("ThresholdedRelu")
def d_thresholded_relu(ctx, x):
    return _gt(ctx.e, x, _alpha(ctx, 1.0))


@unit("HardSigmoid", monotone=lambda ctx: _alpha(ctx, 0.2) >= 0)  # a negative alpha makes it a falling ramp
def d_hard_sigmoid(ctx, x):
    e, a = ctx.e, _alpha(ctx, 0.2)
    y = ctx.O(0)  # [0 < a x + b < 1] read from y = clip(a x + b, 0, 1)
    return e.mul(e.mul(_gt(e, y, 0), _lt(e, y, 1)), F(a))


@unit("HardSwish", monotone=False)
def d_hard_swish(ctx, x):
    # torch's convention: 0 below -3, x/3 + 1/2 on [-3, 3], 1 above 3
    e = ctx.e
    inner = e.mul(_ge(e, x, -3.0), _le(e, x, 3.0))
    return e.add(e.mul(inner, e.add(e.mul(x, F(1 / 3)), F(0.5))), _gt(e, x, 3.0))


# -- smooth units -----------------------------------------------------------------------------------------
@unit("Sigmoid")
def d_sigmoid(ctx, x):
    y = ctx.O(0)
    return ctx.e.mul(y, ctx.e.sub(F(1), y))


@unit("Tanh")
def d_tanh(ctx, x):
    y = ctx.O(0)
    return ctx.e.sub(F(1), ctx.e.mul(y, y))


@unit("Elu", monotone=lambda ctx: _alpha(ctx, 1.0) >= 0)
def d_elu(ctx, x):
    e, a = ctx.e, _alpha(ctx, 1.0)
    return _blend(e, _gt(e, x, 0), 1.0, e.add(ctx.O(0), F(a)))  # x <= 0: a exp(x) = y + a


@unit("Selu")
def d_selu(ctx, x):
    e = ctx.e
    a, g = _alpha(ctx, 1.67326319217681884765625), float(ctx.attr("gamma", 1.05070102214813232421875))
    return _blend(e, _gt(e, x, 0), g, e.add(ctx.O(0), F(g * a)))  # x <= 0: g a exp(x) = y + g a


@unit("Celu", monotone=True)
def d_celu(ctx, x):
    e, a = ctx.e, _alpha(ctx, 1.0)
    return _blend(e, _gt(e, x, 0), 1.0, e.add(e.mul(ctx.O(0), F(1 / a)), F(1)))  # exp(x / a) = y / a + 1


@unit("Softplus")
def d_softplus(ctx, x):
    return ctx.e.op("Sigmoid", [x])


@unit("Softsign")
def d_softsign(ctx, x):
    e = ctx.e
    d = e.add(e.op("Abs", [x]), F(1))
    return e.op("Reciprocal", [e.mul(d, d)])


@unit("Mish", monotone=False)
def d_mish(ctx, x):
    # y = x tanh(sp(x)): y' = t + x sigmoid(x) (1 - t^2), t = tanh(softplus(x))
    e = ctx.e
    t = e.op("Tanh", [e.op("Softplus", [x])])
    return e.add(t, e.mul(e.mul(x, e.op("Sigmoid", [x])), e.sub(F(1), e.mul(t, t))))


@unit("Gelu", monotone=False)
def d_gelu(ctx, x):
    e = ctx.e
    approx = ctx.attr("approximate", "none")
    approx = approx.decode() if isinstance(approx, bytes) else approx
    if approx == "tanh":  # y = x/2 (1 + tanh(u)), u = c (x + 0.044715 x^3)
        c = math.sqrt(2 / math.pi)
        x2 = e.mul(x, x)
        t = e.op("Tanh", [e.mul(e.mul(x, e.add(e.mul(x2, F(0.044715)), F(1))), F(c))])
        du = e.add(e.mul(x2, F(3 * 0.044715 * c)), F(c))
        return e.add(e.mul(e.add(t, F(1)), F(0.5)), e.mul(e.mul(e.mul(x, F(0.5)), e.sub(F(1), e.mul(t, t))), du))
    # y = x Phi(x): y' = Phi(x) + x phi(x)
    cdf = e.mul(e.add(e.op("Erf", [e.mul(x, F(1 / math.sqrt(2)))]), F(1)), F(0.5))
    pdf = e.mul(e.exp(e.mul(e.mul(x, x), F(-0.5))), F(1 / math.sqrt(2 * math.pi)))
    return e.add(cdf, e.mul(x, pdf))


@unit("Erf")
def d_erf(ctx, x):
    e = ctx.e  # 2/sqrt(pi) exp(-x^2); the plain rule is elementwise.erf
    return e.mul(e.exp(e.neg(e.mul(x, x))), F(2 / math.sqrt(math.pi)))


# -- x * s(x): SiLU / Swish, HardSwish and GELU written as a product ------------------------------------------
# element-wise ops that may make up s(x) (their other inputs must be constants)
_POINTWISE = {"Add", "Sub", "Mul", "Div", "Pow", "Neg", "Exp", "Log", "Sqrt", "Reciprocal", "Abs", "Erf",
              "Identity", "Cast"} | set(DERIVATIVES)
_MAX_CHAIN = 16


def _function_of(x: gs.Tensor, s: gs.Tensor) -> Optional[list[gs.Node]]:
    """The nodes (topological order) computing ``s`` from ``x`` alone through element-wise ops, else None."""
    order: list[gs.Node] = []
    reached = [False]

    def visit(t: gs.Tensor) -> bool:
        if t is x:
            reached[0] = True
            return True
        if isinstance(t, gs.Constant):
            return True
        producers = getattr(t, "inputs", [])
        if len(producers) != 1 or producers[0].op not in _POINTWISE or len(order) >= _MAX_CHAIN:
            return False  # a graph input, or a non-element-wise op (a squeeze-excitation gate's pooling)
        n = producers[0]
        if n in order:
            return True
        if not all(visit(i) for i in n.inputs if i.name):
            return False
        order.append(n)
        return True

    if not visit(s) or not reached[0] or not order:
        return None
    return order


def _self_function(ctx: GradContext) -> Optional[tuple[int, list[gs.Node]]]:
    """(index of x, the nodes of s) when this Mul is x * s(x), s an element-wise function of x of x's shape."""
    if len(ctx.node.inputs) != 2:
        return None
    for i in (0, 1):
        x, s = ctx.I(i), ctx.I(1 - i)
        if x.shape is None or s.shape is None or tuple(x.shape) != tuple(s.shape) or isinstance(x, gs.Constant):
            continue
        nodes = _function_of(x, s)
        if nodes is not None:
            return i, nodes
    return None


def guided_mul(ctx: GradContext):
    """x * s(x) is one unit: relu(g) * relu(d/dx [x s(x)]); any other Mul keeps the plain product rule.

    s is any element-wise function of x alone: Sigmoid (SiLU), HardSigmoid (HardSwish), 1 + erf(x / sqrt 2)
    (exact GELU as torch exports it at opset 17), 1 + tanh(c (x + 0.044715 x^3)) (tanh GELU), tanh(softplus)
    (Mish). s'(x) is the plain backward pass of s's nodes seeded with ones (element-wise, so it is the
    derivative itself).
    """
    found = _self_function(ctx)
    if found is None:
        return mul(ctx)
    i, nodes = found
    e, x, s = ctx.e, ctx.I(i), ctx.I(1 - i)
    ones = e.op("ConstantOfShape", [e.shape(s)], {"value": gs.Constant(e.name("one"), np.ones(1, e.dtype))})
    ds = build_gradient(nodes, {"s": (s, ones)}, x, PLAIN, e)
    d = e.relu(e.add(s, e.mul(x, ds)))  # d/dx x s(x) = s + x s'(x); not monotone
    grads: list = [None, None]
    grads[i] = e.mul(e.relu(ctx.GO(0)), d)
    return grads
