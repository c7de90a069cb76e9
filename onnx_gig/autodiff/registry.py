"""Rule sets: registries mapping an ONNX op type to its vector-Jacobian rule.

A rule receives a :class:`GradContext` for one forward node and returns one gradient per
node input (``None`` where no gradient flows). A rule set derived from another overrides a
few entries and falls back to its parent for the rest, the way JAX keeps one transpose
rule per primitive. The family modules (elementwise, activations, linear, pooling, normalization,
shape, indexing, resize, reductions) register into ``PLAIN``; rulesets.py derives the guided sets.
This module imports none of them, so nothing here can form an import cycle.
"""
from __future__ import annotations

from typing import Any, Callable, Mapping, Optional, Sequence

import numpy as np
import onnx_graphsurgeon as gs

from ..errors import GigError
from .emit import Emitter

Dim = "int | str | None"


class GradContext:
    """One node's view for its rule: ``I(i)``, ``O(i)``, ``GO(i)``, attributes, static shapes, and the emitter."""

    def __init__(self, node: gs.Node, grads_out: Sequence[Optional[gs.Tensor]], needed: Sequence[bool],
                 emitter: Emitter) -> None:
        self.node = node
        self._grads_out = list(grads_out)
        self._needed = list(needed)
        self.e = emitter

    def I(self, i: int) -> gs.Tensor:  # noqa: E743 - the onnxruntime-training helper names
        """The node's i-th input tensor."""
        return self.node.inputs[i]

    def O(self, i: int) -> gs.Tensor:  # noqa: E743
        """The node's i-th output tensor."""
        return self.node.outputs[i]

    def GO(self, i: int) -> Optional[gs.Tensor]:
        """The gradient arriving at output i (``None`` when nothing downstream needs it)."""
        return self._grads_out[i] if i < len(self._grads_out) else None

    def needs(self, i: int) -> bool:
        """Whether the gradient of input i lies on the path to the differentiated input."""
        return i < len(self._needed) and self._needed[i]

    def has_input(self, i: int) -> bool:
        return i < len(self.node.inputs) and not _is_empty(self.node.inputs[i])

    def attr(self, name: str, default: Any = None) -> Any:
        return self.node.attrs.get(name, default)

    def const_value(self, i: int) -> Optional[np.ndarray]:
        """The value of input i when it is a constant (initializer), else ``None``."""
        if not self.has_input(i):
            return None
        t = self.node.inputs[i]
        return np.asarray(t.values) if isinstance(t, gs.Constant) else None

    def shape(self, t: gs.Tensor) -> tuple:
        """Static shape of a forward tensor (symbolic dims as strings/None); raises if unknown."""
        if t.shape is None:
            raise GigError(f"{self.node.op} node '{self.node.name}': the shape of tensor '{t.name}' is unknown "
                           f"after shape inference; this rule needs it")
        return tuple(t.shape)

    def spatial(self, t: gs.Tensor) -> list[int]:
        """The static spatial dims (everything after N, C) of an NC... tensor."""
        dims = self.static_spatial(t)
        if dims is None:
            shown = ", ".join(str(int(d)) if isinstance(d, (int, np.integer)) else ("N" if i == 0 else "?")
                              for i, d in enumerate(self.shape(t)))
            raise GigError(f"{self.node.op} node '{self.node.name}': needs static spatial sizes, got [{shown}]")
        return dims

    def static_spatial(self, t: gs.Tensor) -> Optional[list[int]]:
        """The spatial dims of an NC... tensor when all are static, else ``None`` (read them at run time)."""
        dims = self.shape(t)[2:]
        if not all(isinstance(d, (int, np.integer)) and d > 0 for d in dims):
            return None
        return [int(d) for d in dims]

    def fail(self, why: str) -> GigError:
        """An error naming this node, for rules that meet a case they do not handle."""
        from ..errors import UnsupportedOpError
        return UnsupportedOpError(f"{self.node.op} node '{self.node.name}': {why}")

    def unbroadcast(self, g: gs.Tensor, like: gs.Tensor, out: gs.Tensor) -> gs.Tensor:
        """Sum ``g`` (shaped like ``out``) back to the shape of the broadcast operand ``like``."""
        so, sl = self.shape(out), self.shape(like)
        lead = len(so) - len(sl)
        axes = list(range(lead)) + [lead + i for i, d in enumerate(sl) if d == 1 and so[lead + i] != 1]
        if not axes:
            return g
        if lead == 0:
            return self.e.reduce_sum(g, axes, keepdims=True)
        r = self.e.reduce_sum(g, axes, keepdims=False)
        if len(sl) == len(so) - len(axes):
            return r
        return self.e.reshape(r, [d if isinstance(d, (int, np.integer)) else 0 for d in sl]) \
            if all(isinstance(d, (int, np.integer)) for d in sl) else self.e.reshape(r, self.e.shape(like))


def _is_empty(t: gs.Tensor) -> bool:
    return isinstance(t, gs.Variable) and t.name == ""


Rule = Callable[[GradContext], Sequence[Optional[gs.Tensor]]]


class RuleSet:
    """A registry of vector-Jacobian rules; ``derive`` makes a child that overrides some entries."""

    def __init__(self, name: str, description: str, parent: Optional["RuleSet"] = None) -> None:
        self.name = name
        self.description = description
        self.parent = parent
        self._rules: dict[str, Rule] = {}
        RULE_SETS[name] = self

    def register(self, *op_types: str) -> Callable[[Rule], Rule]:
        """Decorator: make ``fn`` the rule for each of ``op_types`` in this set."""
        def deco(fn: Rule) -> Rule:
            for op in op_types:
                self._rules[op] = fn
            return fn
        return deco

    def derive(self, name: str, description: str, overrides: Mapping[str, Rule] | None = None) -> "RuleSet":
        """A new rule set equal to this one except for ``overrides``."""
        child = RuleSet(name, description, parent=self)
        child._rules.update(overrides or {})
        return child

    def lookup(self, op_type: str) -> Optional[Rule]:
        if op_type in self._rules:
            return self._rules[op_type]
        return self.parent.lookup(op_type) if self.parent else None

    def overridden(self) -> list[str]:
        """Op types whose rule differs from the parent's."""
        return sorted(self._rules) if self.parent else []

    def ops(self) -> list[str]:
        """Every op type this set has a rule for."""
        names = set(self._rules)
        if self.parent:
            names |= set(self.parent.ops())
        return sorted(names)

    def __contains__(self, op_type: str) -> bool:
        return self.lookup(op_type) is not None

    def __repr__(self) -> str:
        return f"RuleSet({self.name!r}, {len(self.ops())} ops)"


RULE_SETS: dict[str, RuleSet] = {}

# The plain set: every family module registers its true vector-Jacobian rules here (``@register("Op")``);
# rulesets.py derives the guided sets from it. This module imports no rule module.
PLAIN = RuleSet("ig", "Integrated Gradients: true gradients through every op")
register = PLAIN.register
