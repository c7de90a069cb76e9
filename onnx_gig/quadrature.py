"""Integration step schedules, with Captum's names and exactly Captum's alphas and weights.

Users of attribution know these names (captum.attr._utils.approximation_methods), and using
the same numbers makes results comparable with Captum's to float precision.
"""
from __future__ import annotations

import numpy as np

from .errors import InputError

RULES = ("riemann_left", "riemann_right", "riemann_middle", "riemann_trapezoid", "gausslegendre")
DEFAULT_RULE = "gausslegendre"
DEFAULT_STEPS = 50


def schedule(n_steps: int = DEFAULT_STEPS, method: str = DEFAULT_RULE) -> tuple[np.ndarray, np.ndarray]:
    """Return (alphas, weights) as float32 arrays: IG ~ (x - b) * sum_k w_k grad(b + alpha_k (x - b))."""
    if isinstance(n_steps, bool) or not isinstance(n_steps, (int, np.integer)) or n_steps < 1:
        raise InputError(f"the number of steps must be a positive integer, got {n_steps!r}")
    n = int(n_steps)
    if method == "gausslegendre":
        x, w = np.polynomial.legendre.leggauss(n)
        return (0.5 * (x + 1)).astype(np.float32), (0.5 * w).astype(np.float32)
    if method not in RULES:
        raise InputError(f"unknown integration rule '{method}'; choose one of: {', '.join(RULES)}")
    if method == "riemann_trapezoid":
        if n < 2:
            raise InputError("riemann_trapezoid needs at least 2 steps")
        weights = [1 / (2 * (n - 1))] + [1 / (n - 1)] * (n - 2) + [1 / (2 * (n - 1))]
        alphas = np.linspace(0, 1, n)
    else:
        weights = [1 / n] * n
        alphas = {
            "riemann_left": np.linspace(0, 1 - 1 / n, n),
            "riemann_right": np.linspace(1 / n, 1, n),
            "riemann_middle": np.linspace(1 / (2 * n), 1 - 1 / (2 * n), n),
        }[method]
    return np.asarray(alphas, np.float32), np.asarray(weights, np.float32)
