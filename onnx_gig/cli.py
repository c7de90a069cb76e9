"""The ``onnx-gig`` command line: convert, explain, demo. Errors print one line, never a traceback."""
from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Optional, Sequence

from . import __version__
from .errors import GigError, InputError
from .quadrature import DEFAULT_RULE, DEFAULT_STEPS, RULES

EPILOG = """examples:
  onnx-gig convert models/mobilenet_v2.onnx              # -> models/mobilenet_v2_gig.onnx
  onnx-gig explain models/mobilenet_v2_gig.onnx models/images/chelsea.png
  onnx-gig demo                                          # both, on the shipped model and photos
"""


def _parser() -> argparse.ArgumentParser:
    from .autodiff import rule_set_names

    p = argparse.ArgumentParser(
        prog="onnx-gig", epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Explain what a CNN classifier looks at with Integrated Gradients with Guided "
                    "Non-Linearity (GNL-IG), computed by an ONNX graph that onnxruntime runs.")
    p.add_argument("--version", action="version", version=f"onnx-gig {__version__}")
    sub = p.add_subparsers(dest="command", metavar="COMMAND")

    c = sub.add_parser("convert", help="turn a classifier .onnx into an attribution model (*_gig.onnx)",
                       description="Add the backward graph and the batched integration to a classifier. "
                                   "The result is a plain ONNX model: image in, attributions out.")
    c.add_argument("model", help="classifier exported to ONNX (any opset 7-21; external data beside it is read)")
    c.add_argument("-o", "--output", help="where to write (default: MODEL_gig.onnx beside the model)")
    c.add_argument("--method", default="gnl-ig", choices=rule_set_names(),
                   help="gnl-ig: guided ReLU/ReLU6/max-pool (default); ig: plain Integrated Gradients; "
                        "gnl-ig-authors: the authors' max-pool mask variant")
    c.add_argument("--input", dest="input_name", help="image input name (default: the model's only image input)")
    c.add_argument("--output-name", help="output to explain (default: the first float output; the scores "
                                         "before a final Softmax/LogSoftmax are explained)")
    g = c.add_argument_group("preprocessing stored in the model (default: what the model carries, else ImageNet)")
    g.add_argument("--mean", type=_floats, help="per-channel mean, e.g. 0.485,0.456,0.406")
    g.add_argument("--std", type=_floats, help="per-channel std, e.g. 0.229,0.224,0.225")
    g.add_argument("--scale", type=float, help="multiply 8-bit pixels by this before mean/std (default 1/255)")
    g.add_argument("--resize", type=int, help="resize the short side to this before cropping (default 256)")
    g.add_argument("--layout", choices=["NCHW", "NHWC"], help="input layout")
    g.add_argument("--bgr", action="store_true", help="the model expects BGR channel order")
    c.add_argument("--labels", help="class names: a text file with one per line, or a JSON list")

    e = sub.add_parser("explain", help="attribute an image with a converted model and draw the heatmap",
                       description="Run the attribution model on one image and write a figure "
                                   "(photo | map | overlay); print the top-5 classes.")
    e.add_argument("model", help="a model written by 'onnx-gig convert'")
    e.add_argument("image", help="PNG/JPEG of any size and mode, or a .npy holding one preprocessed tensor")
    _explain_options(e)

    d = sub.add_parser("demo", help="convert the shipped MobileNetV2 and explain the shipped photos",
                       description="Convert models/mobilenet_v2.onnx and explain models/images/chelsea.png.")
    d.add_argument("--models", default="models", help="folder holding mobilenet_v2.onnx and images/ (default: models)")
    d.add_argument("--method", default="gnl-ig", choices=rule_set_names())
    d.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    return p


def _explain_options(e: argparse.ArgumentParser) -> None:
    e.add_argument("--target", type=int, help="class index to explain (default: the predicted class)")
    e.add_argument("--steps", type=int, default=DEFAULT_STEPS, help=f"integration steps (default {DEFAULT_STEPS})")
    e.add_argument("--rule", default=DEFAULT_RULE, choices=RULES, help=f"quadrature rule, Captum's names "
                                                                        f"(default {DEFAULT_RULE})")
    e.add_argument("--baseline", default="zeros", metavar="zeros|black|white|blur|FILE.npy",
                   help="zeros (model-input space: the mean image for ImageNet models, default), black, "
                        "white, blur, or a .npy tensor")
    e.add_argument("--out", help="figure to write (default: IMAGE_gig.png in the current folder)")
    e.add_argument("--save-npy", help="also write the raw attributions (float32, model layout, no batch dim)")
    e.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"],
                   help="auto: CUDA when it loads, else CPU")
    e.add_argument("--max-memory", help="memory budget for one run, e.g. 2G (default: 40%% of free RAM, at most 4G); "
                                        "steps run in chunks that fit")
    e.add_argument("--cmap", default="inferno", choices=["inferno", "viridis"], help="colour map")


def _floats(text: str) -> tuple[float, ...]:
    try:
        return tuple(float(v) for v in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated numbers, got '{text}'") from None


def cmd_convert(a: argparse.Namespace) -> int:
    from .api import convert, guess_preprocess, load_labels
    from .imageio import Preprocess

    pp = None
    if any(v is not None for v in (a.mean, a.std, a.scale, a.resize, a.layout)) or a.bgr:
        base = Preprocess()
        pp = Preprocess(layout=a.layout or base.layout, color="BGR" if a.bgr else "RGB",
                        resize=a.resize if a.resize is not None else base.resize, crop=None,
                        scale=a.scale if a.scale is not None else base.scale,
                        mean=a.mean or base.mean, std=a.std or base.std)
    labels = load_labels(a.labels) if a.labels else None
    r = convert(a.model, a.output, a.method, a.input_name, a.output_name, pp, labels)
    for n in r.notes:
        print(f"note: {n}", file=sys.stderr)
    print(f"wrote {r.path}  ({r.method}; input '{r.input_name}', explaining '{r.score_name}'"
          f"{f', {r.num_classes} classes' if r.num_classes else ''}; {r.seconds:.2f} s)")
    return 0


def _print_explanation(r, image: str) -> None:
    device = "CUDA" if r.provider.startswith("CUDA") else "CPU"
    print(f"{image}: explained class {r.target} '{r.target_label}' with {r.method} on {device} in {r.seconds:.2f} s")
    for k, name, p in r.top:
        mark = "*" if k == r.target else " "
        print(f"  {mark} {p:7.2%}  {k:5d}  {name}")
    if r.figure:
        print(f"wrote {r.figure}" + (f" and {r.npy}" if r.npy else ""))
    elif r.npy:
        print(f"wrote {r.npy}")


def cmd_explain(a: argparse.Namespace) -> int:
    from .api import explain

    r = explain(a.model, a.image, target=a.target, steps=a.steps, rule=a.rule, baseline=a.baseline, out=a.out,
                save_npy=a.save_npy, device=a.device, max_memory=a.max_memory, progress=sys.stderr.isatty(),
                cmap=a.cmap)
    _print_explanation(r, a.image)
    return 0


def cmd_demo(a: argparse.Namespace) -> int:
    from .api import convert, explain

    folder = Path(a.models)
    src = folder / "mobilenet_v2.onnx"
    if not src.is_file():
        raise InputError(f"{src} not found: run the demo from the repository root, or pass --models DIR")
    r = convert(src, method=a.method)
    print(f"wrote {r.path}  ({r.method}, {r.seconds:.2f} s)")
    image = folder / "images" / "chelsea.png"
    res = explain(r.path, image, device=a.device, progress=sys.stderr.isatty())
    _print_explanation(res, str(image))
    return 0


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = _parser()
    a = parser.parse_args(argv)
    if not a.command:
        parser.print_help()
        return 2
    try:
        return {"convert": cmd_convert, "explain": cmd_explain, "demo": cmd_demo}[a.command](a)
    except GigError as exc:
        print(f"onnx-gig: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("onnx-gig: interrupted", file=sys.stderr)
        return 130
    except MemoryError:
        print("onnx-gig: error: out of memory; lower --max-memory or --steps", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
