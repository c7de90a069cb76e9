"""Reverse-mode autodiff over an ONNX graph: walk the nodes backwards and apply each op's rule.

The walker knows nothing about any op: it prunes the graph to the nodes between the input
and the seeded outputs, asks the rule set for each node's vector-Jacobian rule, and sums
gradients where a tensor fans out (residual blocks).
"""
from __future__ import annotations

from typing import Mapping, Optional, Sequence

import numpy as np
import onnx_graphsurgeon as gs

from ..errors import UnsupportedOpError
from .emit import Emitter
from .registry import GradContext, RuleSet


def _differentiable(t: gs.Tensor) -> bool:
    dtype = getattr(t, "dtype", None)
    if dtype is None:
        return True  # unknown: treat as float so a missing rule is reported rather than skipped
    try:
        return np.dtype(dtype).kind == "f"
    except TypeError:
        return False


def path_nodes(nodes: Sequence[gs.Node], wrt: gs.Tensor, targets: Sequence[gs.Tensor]) -> tuple[list[gs.Node], set[str]]:
    """Nodes (topological order) lying between ``wrt`` and ``targets``, and the tensor names on that path."""
    active = {wrt.name}
    for node in nodes:
        if any(i.name in active for i in node.inputs):
            active.update(o.name for o in node.outputs if _differentiable(o))
    needed = {t.name for t in targets}
    on_path_nodes = []
    for node in reversed(nodes):
        if any(o.name in needed for o in node.outputs):
            needed.update(i.name for i in node.inputs if i.name)
            if any(i.name in active for i in node.inputs):
                on_path_nodes.append(node)
    on_path = active & needed
    return [n for n in reversed(on_path_nodes)], on_path


def unsupported_ops(nodes: Sequence[gs.Node], wrt: gs.Tensor, targets: Sequence[gs.Tensor],
                    rules: RuleSet) -> list[gs.Node]:
    """The nodes on the differentiable path for which ``rules`` has no entry."""
    path, on_path = path_nodes(nodes, wrt, targets)
    return [n for n in path if (n.op not in rules or not _standard(n))
            and any(o.name in on_path for o in n.outputs)]


STANDARD_DOMAINS = ("", "ai.onnx")  # rules cover ONNX's own ops only: a com.example.Relu is not Relu


def _standard(n: gs.Node) -> bool:
    return (n.domain or "") in STANDARD_DOMAINS


def op_label(domain: str, op: str) -> str:
    """An op as a user would look it up: 'Relu', or 'com.example.Relu' for another domain's."""
    return op if (domain or "") in STANDARD_DOMAINS else f"{domain}.{op}"


def op_name(n: gs.Node) -> str:
    return op_label(n.domain, n.op)


def unsupported_error(missing: Sequence[gs.Node], rules: RuleSet, where: str = "", hint: str = "") -> UnsupportedOpError:
    """One line naming the first op without a rule, its node, the others missing and the supported list."""
    n = missing[0]
    others = sorted({op_name(m) for m in missing} - {op_name(n)})
    also = f" (also unsupported here: {', '.join(others)})" if others else ""
    return UnsupportedOpError(f"unsupported op '{op_name(n)}' in node '{n.name or n.op}'{where} for method '{rules.name}'"
                              f"{also}; supported ops: {', '.join(rules.ops())}{hint}")


def build_gradient(nodes: Sequence[gs.Node], seeds: Mapping[str, tuple[gs.Tensor, gs.Tensor]], wrt: gs.Tensor,
                   rules: RuleSet, emitter: Emitter) -> gs.Tensor:
    """Emit the gradient of sum(seed * target) over ``seeds`` with respect to ``wrt``.

    ``nodes`` are the forward nodes in topological order; ``seeds`` maps a name to
    (target tensor, cotangent tensor of the same shape). Returns the tensor holding d/d(wrt).
    """
    targets = [t for t, _ in seeds.values()]
    path, on_path = path_nodes(nodes, wrt, targets)
    missing = unsupported_ops(nodes, wrt, targets, rules)
    if missing:
        raise unsupported_error(missing, rules)
    grads: dict[str, list[gs.Tensor]] = {}
    for target, cot in seeds.values():
        grads.setdefault(target.name, []).append(cot)
    for node in reversed(path):
        if not any(o.name in grads for o in node.outputs):
            continue
        needed = [i.name in on_path for i in node.inputs]
        go: list[Optional[gs.Tensor]] = []
        for o in node.outputs:
            if o.name in grads:
                total = emitter.sum(grads[o.name])
                grads[o.name] = [total]
                go.append(total)
            else:
                go.append(None)
        gi = list(rules.lookup(node.op)(GradContext(node, go, needed, emitter)))
        for t, g, need in zip(node.inputs, gi, needed):
            if need and g is not None:
                grads.setdefault(t.name, []).append(g)
    if wrt.name not in grads:
        raise UnsupportedOpError("the explained output does not depend on the input: there is no gradient to build")
    return emitter.sum(grads[wrt.name])
