"""Reverse-mode autodiff over ONNX graphs with per-op rules kept in rule-set registries.

builder.py walks the graph; registry.py holds RuleSet/GradContext and the plain set; one module per op
family registers its rules (elementwise, activations, linear, pooling, normalization, shape, indexing,
resize, reductions); rulesets.py imports the families and defines the guided sets.
"""
from .builder import build_gradient, path_nodes, unsupported_ops
from .vjp import vjp_model
from .registry import RULE_SETS, GradContext, RuleSet
from .rulesets import get_rule_set, rule_set_names

__all__ = ["build_gradient", "path_nodes", "unsupported_ops", "RULE_SETS", "GradContext", "RuleSet",
           "get_rule_set", "rule_set_names", "vjp_model"]
