"""Integration step schedules, with Captum's names and exactly Captum's alphas and weights.

Users of attribution know these names (captum.attr._utils.approximation_methods), and using
the same numbers makes results comparable with Captum's to float precision.
"""
from __future__ import annotations

import numpy as np

from .errors import InputError, whole_number

RULES = ("riemann_left", "riemann_right", "riemann_middle", "riemann_trapezoid", "gausslegendre")
DEFAULT_RULE = "gausslegendre"
DEFAULT_STEPS = 50


MAX_STEPS = 1000  # IG settles long before; Gauss-Legendre nodes for more take seconds to compute


def schedule(n_steps: int = DEFAULT_STEPS, method: str = DEFAULT_RULE) -> tuple[np.ndarray, np.ndarray]:
    """Return (alphas, weights) as float32 arrays: IG ~ (x - b) * sum_k w_k grad(b + alpha_k (x - b))."""
    whole_number(n_steps, "the number of steps")
    if n_steps > MAX_STEPS:
        raise InputError(f"{n_steps} steps is too many: at most {MAX_STEPS} (the default {DEFAULT_STEPS} is usually "
                         "enough; IG changes little past a few hundred)")
    n = int(n_steps)
    if method == "gausslegendre":
        x, w = np.polynomial.legendre.leggauss(n)
        return (0.5 * (x + 1)).astype(np.float32), (0.5 * w).astype(np.float32)
    if method not in RULES:
        raise InputError(f"unknown integration rule '{method}'; choose one of: {', '.join(RULES)}")
    if n < 2 and method != "riemann_right":
        raise InputError(f"{method} needs at least 2 steps (1 step is allowed with riemann_right: the gradient at the input)")
    weights = np.full(n, 1.0 / n)
    if method == "riemann_trapezoid":  # Captum halves the end steps (the weights then sum to 1 - 1/n)
        weights[0] /= 2
        weights[-1] /= 2
    start, end = {
        "riemann_trapezoid": (0.0, 1.0),
        "riemann_left": (0.0, 1 - 1 / n),
        "riemann_middle": (1 / (2 * n), 1 - 1 / (2 * n)),
        "riemann_right": (1 / n, 1.0),
    }[method]
    # Captum takes these from float32 torch.linspace; they agree to 1 ulp
    return np.linspace(start, end, n).astype(np.float32), weights.astype(np.float32)
