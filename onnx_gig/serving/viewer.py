"""The browser viewer's logic, independent of the web framework (web.py routes HTTP to it).

The page (``static/``) sends one photo's bytes per request with the options in the query string and gets
back JSON: the class explained, the top classes, the figure (photo, map, overlay) as PNG and the raw
attributions as a ``.npy`` file, both base64. The attributions of the last few requests are kept (keyed by
model, the photo's SHA-256 and the integration options), so moving the clip or opacity slider redraws the
figure without integrating again.
"""
from __future__ import annotations

import base64
import hashlib
import io
import re
import threading
import time
import warnings
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any, Mapping, Optional, Sequence

import numpy as np
from PIL import Image

from ..api import figure_title, label_of
from ..contract import probabilities
from ..errors import GigError, InputError
from ..heatmap import (CMAPS, DEFAULT_ALPHA, DEFAULT_CLIP, SIGNS, default_cmap, png_bytes, render_figure,
                       saliency_map)
from ..imageio import BASELINE_KINDS, make_baseline
from ..quadrature import DEFAULT_RULE, RULES
from .service import MAX_STEPS, GigService, top_json

MAX_UPLOAD = 20 << 20  # bytes of one uploaded photo, unless the server is told otherwise
CACHE_SIZE = 16  # attributions kept for redrawing
CLIP_RANGE = (50.0, 100.0)  # percentiles the clip option takes (the page's slider spans the same)
VIEW_PARAMETERS = ("steps", "rule", "baseline", "target", "clip", "sign", "alpha", "cmap", "top")


@dataclass(frozen=True)
class ViewRequest:
    """The options of one viewer request, checked."""

    steps: int
    rule: str
    baseline: str
    target: Optional[int]
    clip: float
    sign: str
    alpha: float
    cmap: str
    top: int


def _number(query: Mapping[str, str], key: str, default: float, low: float, high: float, whole: bool) -> Any:
    """One numeric query parameter in [low, high], or its default when absent or empty."""
    text = query.get(key)
    if text is None or text == "":
        return default
    try:
        value = int(text) if whole else float(text)
    except ValueError:
        value = None
    if value is None or not low <= value <= high:
        kind = "a whole number" if whole else "a number"
        raise InputError(f"{key} must be {kind} from {low:g} to {high:g}, got {text!r}")
    return value


def parse_request(query: Mapping[str, str], service: GigService) -> ViewRequest:
    """The query string of an explain request as a ViewRequest; InputError names the first bad option."""
    unknown = sorted(set(query) - set(VIEW_PARAMETERS))
    if unknown:
        raise InputError(f"unknown option(s) {', '.join(unknown)}; known: {', '.join(VIEW_PARAMETERS)}")
    rule = query.get("rule") or DEFAULT_RULE
    if rule not in RULES:
        raise InputError(f"unknown rule {rule!r}; choose one of {', '.join(RULES)}")
    baseline = query.get("baseline") or "zeros"
    if baseline not in BASELINE_KINDS:  # never a file on the server
        raise InputError(f"unknown baseline {baseline!r}; choose one of {', '.join(BASELINE_KINDS)}")
    sign = query.get("sign") or "absolute"
    if sign not in SIGNS:
        raise InputError(f"unknown sign {sign!r}; choose one of {', '.join(SIGNS)}")
    cmap = query.get("cmap") or default_cmap(sign)
    if cmap not in CMAPS:
        raise InputError(f"unknown cmap {cmap!r}; choose one of {', '.join(CMAPS)}")
    classes = service.num_classes or 10 ** 9
    target = _number(query, "target", -1, -1, classes - 1, whole=True)
    return ViewRequest(
        steps=_number(query, "steps", service.default_steps, 1, MAX_STEPS, whole=True), rule=rule,
        baseline=baseline, target=None if target < 0 else target,
        clip=_number(query, "clip", DEFAULT_CLIP, *CLIP_RANGE, whole=False), sign=sign,
        alpha=_number(query, "alpha", DEFAULT_ALPHA, 0.0, 1.0, whole=False), cmap=cmap,
        top=_number(query, "top", 5, 1, min(classes, 100), whole=True))


def draw_figure(photo: Optional[Image.Image], attr: np.ndarray, layout: str, title: str, req: ViewRequest) -> Image.Image:
    """The figure (photo, map, overlay) drawn with the request's clip percentile, sign, colours and opacity."""
    m = saliency_map(attr, layout, req.clip, req.sign)
    return render_figure(photo, m, title, req.cmap, req.sign, req.alpha)


@dataclass
class _Run:
    """What one integration produced, kept for redrawing."""

    attributions: np.ndarray
    photo: Optional[Image.Image]
    target: int
    probs: np.ndarray
    target_score: float
    baseline_score: float
    seconds: float
    notes: list


class Viewer:
    """The page's API over one or more served models: describe them, explain an uploaded photo."""

    def __init__(self, services: Sequence[GigService], max_upload: int = MAX_UPLOAD, cache_size: int = CACHE_SIZE):
        self.services = {s.name: s for s in services}
        self.max_upload = int(max_upload)
        self._cache: OrderedDict[tuple, _Run] = OrderedDict()
        self._cache_size = cache_size
        self._lock = threading.Lock()

    def models(self) -> dict:
        """The served models and the choices the page offers."""
        return {"models": [{"name": s.name, "method": s.gm.method, "device": "CUDA" if s.gm.provider.startswith("CUDA")
                            else "CPU", "classes": s.num_classes, "default_steps": s.default_steps,
                            "input_shape": [d if isinstance(d, int) else str(d) for d in s.gm.input_shape]}
                           for s in self.services.values()],
                "baselines": list(BASELINE_KINDS), "signs": list(SIGNS), "rules": list(RULES), "max_steps": MAX_STEPS,
                "max_upload": self.max_upload, "clip_range": list(CLIP_RANGE), "default_clip": DEFAULT_CLIP,
                "default_alpha": DEFAULT_ALPHA}

    def explain(self, name: str, data: bytes, query: Mapping[str, str]) -> dict:
        """Explain one uploaded photo with model ``name``; the answer the page draws (JSON-ready)."""
        service = self.services[name]
        if not data:
            raise InputError("the upload is empty; choose a photo (PNG, JPEG, ...)")
        if len(data) > self.max_upload:
            raise InputError(f"the photo is {len(data)} bytes; this server takes at most {self.max_upload}")
        req = parse_request(query, service)
        key = (name, hashlib.sha256(data).hexdigest(), req.steps, req.rule, req.baseline, req.target)
        with self._lock:
            run = self._cache.get(key)
            if run is not None:
                self._cache.move_to_end(key)
        cached = run is not None
        if run is None:
            run = self._integrate(service, data, req)
            with self._lock:
                self._cache[key] = run
                while len(self._cache) > self._cache_size:
                    self._cache.popitem(last=False)
        return self._answer(service, run, req, cached)

    def _integrate(self, service: GigService, data: bytes, req: ViewRequest) -> _Run:
        t0 = time.perf_counter()
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            x, photo = service.photo_input(data, "")
        b = make_baseline(req.baseline, x, photo, service.preprocess).astype(np.float32)
        alphas, weights = service._schedule(req.steps, req.rule)
        target = np.asarray([-1 if req.target is None else req.target], np.int64)
        out = service.run_contract(x[None], b[None], alphas, weights, target)
        attr = out["attributions"][0]
        if not np.isfinite(attr).all():
            raise GigError("the model produced NaN or infinite attributions for this photo")
        notes = [re.sub(r"\S+\.img\b", "the photo", " ".join(str(w.message).split())) for w in caught]
        return _Run(attr, photo, int(out["target_class"][0]), probabilities(out["scores"][0], service.gm.probability),
                    float(out["target_score"][0]), float(out["baseline_score"][0]), time.perf_counter() - t0,
                    [n for n in notes if n])

    def _answer(self, service: GigService, run: _Run, req: ViewRequest, cached: bool) -> dict:
        t = run.target
        label = label_of(service.labels, t)
        title = figure_title(label, float(run.probs[t]), service.gm.method, req.steps, req.rule, req.baseline, req.clip)
        fig = draw_figure(run.photo, run.attributions, service.preprocess.layout, title, req)
        npy = io.BytesIO()
        np.save(npy, run.attributions.astype(np.float32))
        return {
            "model": service.name, "method": service.gm.method, "steps": req.steps, "rule": req.rule,
            "baseline": req.baseline, "clip": req.clip, "sign": req.sign, "alpha": req.alpha,
            "target": t, "label": label, "probability": float(run.probs[t]),
            "target_score": run.target_score, "baseline_score": run.baseline_score,
            "convergence_delta": float(run.attributions.sum(dtype=np.float64) - (run.target_score - run.baseline_score)),
            "top": top_json(run.probs, service.labels, req.top),
            "seconds": round(run.seconds, 3), "cached": cached, "notes": run.notes,
            "shape": list(run.attributions.shape),
            "figure_png": base64.b64encode(png_bytes(fig)).decode("ascii"),
            "attributions_npy": base64.b64encode(npy.getvalue()).decode("ascii"),
        }


__all__ = ["Viewer", "ViewRequest", "parse_request", "draw_figure", "MAX_UPLOAD"]
