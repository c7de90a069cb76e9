"""Reverse-mode autodiff over ONNX graphs with per-op rules kept in rule-set registries."""
from .builder import build_gradient, path_nodes, unsupported_ops
from .vjp import vjp_model
from .registry import RULE_SETS, GradContext, RuleSet, get_rule_set, rule_set_names
from . import rules, guided, activations, more_ops  # noqa: F401,E402  (register the built-in rule sets)

__all__ = ["build_gradient", "path_nodes", "unsupported_ops", "RULE_SETS", "GradContext", "RuleSet",
           "get_rule_set", "rule_set_names", "vjp_model"]
