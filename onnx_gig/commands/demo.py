"""onnx-gig demo: convert the shipped MobileNetV2 and explain the shipped cat photo."""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from ..autodiff import rule_set_names
from ..errors import InputError
from ._common import print_explanation

NAME = "demo"
HELP = "convert the shipped MobileNetV2 and explain the shipped photo"
DESCRIPTION = "Convert models/mobilenet_v2.onnx and explain models/images/chelsea.png (run from the repository root)."


def configure(d: argparse.ArgumentParser) -> None:
    d.add_argument("--models", default="models", help="folder holding mobilenet_v2.onnx and images/ (default: models)")
    d.add_argument("--image", help="photo to explain (default: MODELS/images/chelsea.png)")
    d.add_argument("--method", default="gnl-ig", choices=rule_set_names(), help="default gnl-ig")
    d.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"], help="default auto")


def run(a: argparse.Namespace) -> int:
    from ..api import convert, explain

    folder = Path(a.models)
    src = folder / "mobilenet_v2.onnx"
    if not src.is_file():
        raise InputError(f"{src} not found: run the demo from the repository root, or pass --models DIR")
    r = convert(src, method=a.method, overwrite=True)  # the demo's own outputs: rerunning it replaces them
    print(f"wrote {r.path}  ({r.method}, {r.seconds:.2f} s)")
    image = Path(a.image) if a.image else folder / "images" / "chelsea.png"
    res = explain(r.path, image, device=a.device, progress=sys.stderr.isatty(), overwrite=True)
    print_explanation(res, str(image))
    return 0
