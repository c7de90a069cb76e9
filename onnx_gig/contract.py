"""Names of the IG model's contract (inputs, outputs, metadata prefix), importable without the graph builders.

``integrate`` builds models to this contract; ``runtime``, ``api`` and the serving code read it. Kept
in its own small module so that running a converted model does not import onnx-graphsurgeon and the
rule sets (cold-start time of ``onnx-gig explain``).
"""
from __future__ import annotations

import json
from typing import Optional

import numpy as np

INPUTS = ("baseline", "alphas", "step_weights", "target")
OUTPUTS = ("attributions", "target_class", "target_score", "baseline_score", "scores")
META_PREFIX = "onnx_gig."


def pixel_dtype(metadata: dict) -> Optional[str]:
    """The integer dtype of the model's pixel input ('uint8') when its graph casts and normalises pixels."""
    raw = metadata.get(META_PREFIX + "pixel_input")
    return json.loads(raw)["dtype"] if raw else None


PROBABILITIES = ("softmax", "sigmoid")


def probability_kind(metadata: dict) -> str:
    """How a converted model's scores become class probabilities: 'softmax' (logits of one class among all: the
    default, and models converted before the key existed) or 'sigmoid' (per-class logits of a multi-label or
    binary head, looked through by convert)."""
    kind = metadata.get(META_PREFIX + "probability", "softmax")
    return kind if kind in PROBABILITIES else "softmax"


def softmax(z: np.ndarray) -> np.ndarray:
    z = z - z.max(-1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(-1, keepdims=True)


def probabilities(scores: np.ndarray, kind: str = "softmax") -> np.ndarray:
    """Class probabilities of ``scores`` ([..., classes], float64 math) as the model's head makes them."""
    z = np.asarray(scores, np.float64)
    if kind == "sigmoid":
        return 0.5 * (1.0 + np.tanh(0.5 * z))  # the logistic function without overflow in exp
    return softmax(z)
