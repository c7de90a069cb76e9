"""The four rule sets, defined together: ``ig`` and the guided sets that override a few of its entries.

``ig`` (registry.PLAIN) holds the true vector-Jacobian product of every op; each family module
registers its own plain rules when imported here. The guided sets only override entries:

* ``gnl-ig``          the paper: ReLU, ReLU6/Clip and max-pool pass only positive gradients
                      (relu(g) * mask; relu(g) to each window's arg-max, the exact rule). Max-pooling in each
                      spelling exporters write: MaxPool, GlobalMaxPool, and ReduceMax over the spatial axes
                      (torch's ``amax``), so one function gets one attribution however it was exported.
* ``gnl-ig-authors``  as ``gnl-ig`` but with the authors' max-pool: the ordinary gradient times
                      [g > 0] upsampled (nearest) to the input size.
* ``gnl-ig-all``      as ``gnl-ig`` plus every other non-linear unit: relu(g) * relu(f'(x)) for each
                      element-wise activation (activations.DERIVATIVES, Gelu and Erf included), x * s(x) with
                      s an element-wise function of x as one unit (Mul: SiLU, HardSwish, GELU as exported at
                      opset 17), relu(g) to the selected elements of each max-type selection and TopK.

Linear maps and normalisations (Conv, Gemm, MatMul, BatchNorm, LayerNorm, LRN, Softmax, average pooling,
a Mul gate between different tensors) keep their true gradients in every set.
"""
from __future__ import annotations

from ..errors import GigError
from . import activations, elementwise, indexing, linear, normalization, pooling, reductions, resize, shape  # noqa: F401
from .registry import PLAIN, RULE_SETS, RuleSet

PAPER_SET = ("Relu", "Clip", "MaxPool", "GlobalMaxPool", "ReduceMax")  # what gnl-ig overrides: the paper's units

GUIDED = PLAIN.derive(
    "gnl-ig", "GNL-IG: guided ReLU, ReLU6/Clip and max-pool (positive gradients only; exact max-pool rule)", {
        "Relu": activations.guided_relu,
        "Clip": activations.guided_clip,
        "MaxPool": pooling.guided_maxpool,
        "GlobalMaxPool": pooling.guided_global_max_pool,
        "ReduceMax": pooling.guided_max_pooling,  # guided where it pools the spatial axes, else plain
    })

GUIDED_AUTHORS = GUIDED.derive(
    "gnl-ig-authors", "GNL-IG with the authors' max-pool variant (ordinary gradient times upsampled [g > 0])", {
        "MaxPool": pooling.authors_maxpool,
    })

GUIDED_ALL = GUIDED.derive(
    "gnl-ig-all", "GNL-IG on every non-linear unit: relu(g) * relu(f'(x)) for each activation, "
    "relu(g) to the arg-max of each max-type op (the paper's rules included)", {
        **{op: activations.guided_rule for op in activations.DERIVATIVES},
        "Mul": activations.guided_mul,
        "GlobalMaxPool": pooling.guided_global_max_pool,
        "ReduceMax": pooling.guided_reduce_max,
        "ReduceMin": pooling.guided_reduce_max,
        "Max": pooling.guided_max_min,
        "Min": pooling.guided_max_min,
        "TopK": pooling.guided_topk,
    })


def get_rule_set(name: str) -> RuleSet:
    """The rule set called ``name``; an unknown name lists the known ones."""
    try:
        return RULE_SETS[name]
    except KeyError:
        raise GigError(f"unknown method '{name}'; choose one of: {', '.join(sorted(RULE_SETS))}") from None


def rule_set_names() -> list[str]:
    """The names of every rule set (the methods ``convert --method`` accepts)."""
    return sorted(RULE_SETS)
