"""Names of the IG model's contract (inputs, outputs, metadata prefix), importable without the graph builders.

``integrate`` builds models to this contract; ``runtime``, ``api`` and the serving code read it. Kept
in its own small module so that running a converted model does not import onnx-graphsurgeon and the
rule sets (cold-start time of ``onnx-gig explain``).
"""
from __future__ import annotations

import json
from typing import Optional

INPUTS = ("baseline", "alphas", "step_weights", "target")
OUTPUTS = ("attributions", "target_class", "target_score", "baseline_score", "scores")
META_PREFIX = "onnx_gig."


def pixel_dtype(metadata: dict) -> Optional[str]:
    """The integer dtype of the model's pixel input ('uint8') when its graph casts and normalises pixels."""
    raw = metadata.get(META_PREFIX + "pixel_input")
    return json.loads(raw)["dtype"] if raw else None
