"""The attribution methods compared by ``eval`` and ``sanity``, all computed by converted graphs.

There is no second code path: every method is one run of an IG model (``convert --method ig``)
or a GNL-IG model (``--method gnl-ig``) with the right schedule and baseline. With the model's
contract ``attributions = (x - b) * sum_k w_k grad(b + alpha_k (x - b))``:

============================  ========  ======================================  ==============
method                        graph     schedule                                baseline
============================  ========  ======================================  ==============
gradient (saliency)           ig        alphas [1], weights [1]                 x - 1 (x - b = 1)
input_x_gradient              ig        alphas [1], weights [1]                 zeros
guided_backprop               gnl-ig    alphas [1], weights [1]                 x - 1
ig                            ig        50 Gauss-Legendre steps                 zeros
gnl-ig                        gnl-ig    50 Gauss-Legendre steps                 zeros
random                        none      a seeded uniform map (the floor)
============================  ========  ======================================  ==============

With the baseline ``x - 1`` the one path point is ``x`` itself and ``x - b`` is 1, so the
output is the (guided) gradient at the image. Maps are the authors' ``|channel sum|``
(:func:`onnx_gig.heatmap.saliency_map`).
"""
from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Optional, Sequence

import numpy as np

from .errors import InputError
from .heatmap import saliency_map
from .quadrature import DEFAULT_RULE, DEFAULT_STEPS
from .runtime import GigModel


@dataclass(frozen=True)
class Method:
    """How one method runs a converted model: which graph, how many steps, from which baseline."""

    name: str
    graph: Optional[str]  # the rule set of the converted model it runs ("ig", "gnl-ig"), None for random
    integrated: bool  # the integration schedule (steps, rule, baseline) applies; else one step at alpha 1
    at_input: bool  # baseline x - 1: the output is the gradient at x (else x times it)
    description: str


METHODS: dict[str, Method] = {m.name: m for m in (
    Method("gradient", "ig", False, True, "the gradient of the score at the image (saliency)"),
    Method("input_x_gradient", "ig", False, False, "the image times the gradient (zero baseline, one step)"),
    Method("guided_backprop", "gnl-ig", False, True, "the guided gradient at the image"),
    Method("ig", "ig", True, False, "Integrated Gradients"),
    Method("gnl-ig", "gnl-ig", True, False, "IG with guided non-linearity"),
    Method("random", None, False, False, "a seeded random map (the floor)"),
)}
ALL = tuple(METHODS)


def parse_methods(methods: str | Iterable[str] | None) -> list[str]:
    """'gradient,ig' or a list -> validated method names in the given order (None: all six)."""
    if methods is None:
        return list(ALL)
    names = [m.strip() for m in (methods.split(",") if isinstance(methods, str) else methods)]
    names = [m for m in names if m]
    unknown = [m for m in names if m not in METHODS]
    if unknown or not names:
        raise InputError(f"unknown method(s) {', '.join(unknown) or '(none given)'}; choose from {', '.join(ALL)}")
    return list(dict.fromkeys(names))


def graphs_needed(methods: Sequence[str]) -> list[str]:
    """The converted models (rule-set names) the methods need, in a stable order."""
    return [g for g in ("ig", "gnl-ig") if any(METHODS[m].graph == g for m in methods)]


def random_map(shape: tuple[int, int], seed: int, index: int) -> np.ndarray:
    """The random method's map for image ``index``: uniform on [0, 1), reproducible from (seed, index)."""
    return np.random.default_rng([int(seed), int(index)]).random(shape).astype(np.float32)


def attribute(method: str, model: Optional[GigModel], x: np.ndarray, target: Sequence[int] | np.ndarray,
              steps: int = DEFAULT_STEPS, rule: str = DEFAULT_RULE, baseline: Optional[np.ndarray] = None,
              internal_batch_size: Optional[int] = None) -> np.ndarray:
    """Attributions of a batch ``x`` for ``target`` (one class per image) by ``method`` with ``model``.

    ``baseline`` (broadcastable to ``x``; default zeros) is used by the integrated methods only.
    """
    m = METHODS[method]
    if m.graph is None:
        raise InputError(f"'{method}' makes maps, not attributions; use saliency_maps()")
    if model is None or model.method != m.graph:
        raise InputError(f"'{method}' needs a model converted with --method {m.graph}")
    x = np.asarray(x, np.float32)
    t = np.asarray(target, np.int64)
    if m.integrated:
        return model.explain(x, baseline, t, steps, rule, internal_batch_size).attributions
    b = x - np.float32(1) if m.at_input else None
    return model.explain(x, b, t, 1, "riemann_right", internal_batch_size).attributions


def saliency_maps(method: str, model: Optional[GigModel], x: np.ndarray, target: Sequence[int] | np.ndarray,
                  layout: str = "NCHW", steps: int = DEFAULT_STEPS, rule: str = DEFAULT_RULE,
                  baseline: Optional[np.ndarray] = None, seed: int = 0, first_index: int = 0,
                  signed: bool = False) -> np.ndarray:
    """[N, H, W] maps of a batch: the authors' ``|channel sum| / max`` (``signed``: the channel sum / max |.|).

    The random method's map for image i depends only on (seed, first_index + i).
    """
    x = np.asarray(x, np.float32)
    if METHODS[method].graph is None:
        hw = x.shape[2:4] if layout.upper() == "NCHW" else x.shape[1:3]
        return np.stack([random_map(tuple(hw), seed, first_index + i) for i in range(x.shape[0])])
    return maps_of(attribute(method, model, x, target, steps, rule, baseline), layout, signed)


def maps_of(attr: np.ndarray, layout: str = "NCHW", signed: bool = False) -> np.ndarray:
    """[N, H, W] maps of a batch of attributions: ``|channel sum| / max``, or (``signed``) ``channel sum / max |.|``."""
    if not signed:
        return np.stack([saliency_map(a, layout, clip_percentile=100.0) for a in attr])  # the authors' map, unclipped
    s = np.asarray(attr, np.float64).sum(axis=1 if layout.upper() == "NCHW" else -1)
    top = np.abs(s).reshape(len(s), -1).max(1).reshape(-1, 1, 1)
    return (s / np.where(top > 0, top, 1.0)).astype(np.float32)


# --------------------------------------------------------------------------- converted models, cached


# with autodiff/*.py: the source a converted graph depends on (the cache key of converted models)
CONVERTER_SOURCES = ("api.py", "blocks.py", "contract.py", "errors.py", "image_input.py", "imageio.py", "integrate.py", "loader.py",
                     "modelfile.py", "modelhead.py", "precision.py", "quadrature.py", "__init__.py")


def _fingerprint() -> str:
    """A hash of the converter's own source, so a cache never outlives a change to the rules."""
    h = hashlib.sha256()
    root = Path(__file__).resolve().parent
    files = [*root.glob("autodiff/*.py"), *(root / n for n in CONVERTER_SOURCES)]
    for p in sorted(f for f in files if f.is_file()):
        h.update(p.relative_to(root).as_posix().encode())
        h.update(p.read_bytes())
    return h.hexdigest()


def converted(model: str | os.PathLike, graph: str, cache_dir: str | os.PathLike) -> Path:
    """``model`` converted with rule set ``graph``, reused from ``cache_dir`` when model and converter are unchanged."""
    from .api import convert

    src = Path(model)
    if not src.is_file():
        raise InputError(f"model file not found: {src}")
    key = hashlib.sha256(src.read_bytes() + graph.encode() + _fingerprint().encode()).hexdigest()[:12]
    out = Path(cache_dir) / f"{src.stem}_{graph}_{key}.onnx"
    if not out.is_file():
        convert(src, out, method=graph)
    return out


__all__ = ["ALL", "METHODS", "Method", "attribute", "converted", "graphs_needed", "maps_of", "parse_methods", "random_map",
           "saliency_maps"]
