#!/usr/bin/env python
"""Send a photo to an attribution server and write the heatmap figure.

Works with both servers of docs/serving.md:

    # KServe (onnx-gig serve): the v1 explain call; the server prepares the photo and draws the figure
    python examples/client.py photo.jpg --url http://localhost:8080 --model mobilenet_v2_gig

    # Triton (onnx-gig triton), or onnx-gig serve too: the v2 infer call. The client reads the model's
    # preprocessing and labels from GET /v2/models/NAME/config, prepares the photo and draws the figure.
    python examples/client.py photo.jpg --url http://localhost:8000 --model mobilenet_v2_gig --protocol v2

Options: --target N (default: the predicted class), --steps K and --rule R (default: the model's own),
--out FILE.png (default PHOTO_served.png). Needs only this package (for preprocessing and drawing) and the
standard library's HTTP client.
"""
from __future__ import annotations

import argparse
import base64
import json
import sys
import urllib.error
import urllib.request
from pathlib import Path

import numpy as np

from onnx_gig.heatmap import render_figure, saliency_map, save_png
from onnx_gig.imageio import Preprocess, load_input
from onnx_gig.quadrature import DEFAULT_RULE, RULES, schedule


def http(method: str, url: str, body: dict | None = None, timeout: float = 600.0) -> dict:
    data = None if body is None else json.dumps(body).encode("utf-8")
    req = urllib.request.Request(url, data=data, method=method, headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            return json.loads(r.read())
    except urllib.error.HTTPError as exc:
        detail = exc.read().decode("utf-8", "replace")[:500]
        raise SystemExit(f"{method} {url}: HTTP {exc.code}: {detail}") from None
    except urllib.error.URLError as exc:
        raise SystemExit(f"{method} {url}: {exc.reason}") from None


def softmax(z: np.ndarray) -> np.ndarray:
    e = np.exp(z - z.max())
    return e / e.sum()


def explain_v1(a: argparse.Namespace) -> None:
    """KServe's v1 explain: the photo goes as base64; the figure comes back as a PNG."""
    instance = {"image_bytes": {"b64": base64.b64encode(Path(a.photo).read_bytes()).decode("ascii")}}
    if a.target is not None:
        instance["target"] = a.target
    params = {"heatmap": True, "attributions": "none"}
    if a.steps is not None:
        params["steps"] = a.steps
    if a.rule is not None:
        params["rule"] = a.rule
    r = http("POST", f"{a.url}/v1/models/{a.model}:explain", {"instances": [instance], "parameters": params},
             a.timeout)["explanations"][0]
    Path(a.out).write_bytes(base64.b64decode(r["heatmap_png"]["b64"]))
    print(f"{a.photo}: class {r['target']} '{r['label']}' ({r['probability']:.1%}); wrote {a.out}")


def explain_v2(a: argparse.Namespace) -> None:
    """The Open Inference Protocol: the prepared tensor goes out, the model's outputs come back."""
    config = http("GET", f"{a.url}/v2/models/{a.model}/config", timeout=a.timeout)
    params = {k: v.get("string_value", "") for k, v in (config.get("parameters") or {}).items()}
    if "onnx_gig.preprocess" not in params:
        raise SystemExit(f"model '{a.model}' carries no onnx_gig.preprocess parameter; write its config with "
                         "'onnx-gig triton'")
    pp = Preprocess.from_json(params["onnx_gig.preprocess"])
    labels = json.loads(params["onnx_gig.labels"]) if params.get("onnx_gig.labels") else None
    batched = int(config.get("max_batch_size", 0)) > 0
    declared = {i["name"]: i for i in config["input"]}
    name = params.get("onnx_gig.input") or config["input"][0]["name"]
    dims = [int(d) for d in declared[name]["dims"]]
    shape = ([-1] + dims) if batched else dims
    x, photo = load_input(a.photo, pp, shape)
    inputs = [{"name": name, "shape": [1, *x.shape], "datatype": "FP32", "data": x.ravel().tolist()}]
    wanted = {"target": a.target is not None, "alphas": a.steps is not None or a.rule is not None}
    if any(wanted.values()) and "target" not in declared:
        raise SystemExit("this deployment batches requests and takes only the image (predicted class, default "
                         "steps); drop --target/--steps/--rule, or use a --max-batch-size 0 deployment")
    if a.target is not None:
        inputs.append({"name": "target", "shape": [1], "datatype": "INT64", "data": [a.target]})
    if wanted["alphas"]:
        alphas, weights = schedule(a.steps or 50, a.rule or DEFAULT_RULE)
        inputs.append({"name": "alphas", "shape": [len(alphas)], "datatype": "FP32", "data": alphas.tolist()})
        inputs.append({"name": "step_weights", "shape": [len(weights)], "datatype": "FP32", "data": weights.tolist()})
    outputs = [{"name": n} for n in ("attributions", "target_class", "scores")]
    r = http("POST", f"{a.url}/v2/models/{a.model}/infer", {"inputs": inputs, "outputs": outputs}, a.timeout)
    out = {o["name"]: np.asarray(o["data"]).reshape([int(d) for d in o["shape"]]) for o in r["outputs"]}
    attr = out["attributions"].astype(np.float32)[0]
    t = int(out["target_class"].ravel()[0])
    p = float(softmax(out["scores"].astype(np.float64).reshape(-1))[t])
    label = labels[t] if labels and 0 <= t < len(labels) else f"class {t}"
    title = f"{label} ({p:.1%})  |  served by {a.url}"
    save_png(render_figure(photo, saliency_map(attr, pp.layout), title), a.out)
    print(f"{a.photo}: class {t} '{label}' ({p:.1%}); wrote {a.out}")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("photo", help="a PNG or JPEG")
    ap.add_argument("--url", default="http://localhost:8080", help="server address (default http://localhost:8080)")
    ap.add_argument("--model", required=True, help="model name on the server")
    ap.add_argument("--protocol", choices=["v1", "v2"], default="v1",
                    help="v1: KServe's explain call (onnx-gig serve); v2: infer (Triton or onnx-gig serve)")
    ap.add_argument("--target", type=int, help="class to explain (default: the predicted class)")
    ap.add_argument("--steps", type=int, help="integration steps (default: the model's own)")
    ap.add_argument("--rule", choices=RULES, help=f"quadrature rule (default {DEFAULT_RULE})")
    ap.add_argument("--out", help="figure to write (default PHOTO_served.png in the current folder)")
    ap.add_argument("--timeout", type=float, default=600.0, help="seconds to wait for the server (default 600)")
    a = ap.parse_args(argv)
    a.url = a.url.rstrip("/")
    a.out = a.out or f"{Path(a.photo).stem}_served.png"
    (explain_v1 if a.protocol == "v1" else explain_v2)(a)
    return 0


if __name__ == "__main__":
    sys.exit(main())
