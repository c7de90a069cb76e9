"""onnx-gig convert: classifier .onnx -> attribution model *_gig.onnx."""
from __future__ import annotations

import argparse
import sys

from ..autodiff import rule_set_names
from ._common import floats

NAME = "convert"
HELP = "turn a classifier .onnx into an attribution model (*_gig.onnx)"
DESCRIPTION = ("Add the backward graph and the batched integration to a classifier. The result is a plain "
               "ONNX model: image in, attributions out; preprocessing and labels travel in its metadata.")


def configure(c: argparse.ArgumentParser) -> None:
    c.add_argument("model", help="classifier exported to ONNX (opsets 7-21; external data beside it is read)")
    c.add_argument("-o", "--output", help="where to write (default: MODEL_gig.onnx beside the model)")
    c.add_argument("--method", default="gnl-ig", choices=rule_set_names(),
                   help="gnl-ig: guided ReLU/ReLU6/max-pool (default); ig: plain Integrated Gradients; "
                        "gnl-ig-all: every non-linear unit guided (GELU, SiLU, sigmoid, ...: transformers, "
                        "ConvNeXt); gnl-ig-authors: the authors' max-pool mask variant")
    c.add_argument("--input", dest="input_name", help="image input name (default: the model's only image input)")
    c.add_argument("--output-name", help="output to explain (default: the first float output; the scores "
                                         "before a final Softmax/LogSoftmax are explained)")
    g = c.add_argument_group("preprocessing stored in the model (default: what the model carries, else ImageNet)")
    g.add_argument("--mean", type=floats, help="per-channel mean, e.g. 0.485,0.456,0.406")
    g.add_argument("--std", type=floats, help="per-channel std, e.g. 0.229,0.224,0.225")
    g.add_argument("--scale", type=float, help="multiply 8-bit pixels by this before mean/std (default 1/255)")
    g.add_argument("--resize", type=int, help="resize the short side to this before the centre crop (default 256)")
    g.add_argument("--layout", choices=["NCHW", "NHWC"], help="input layout")
    g.add_argument("--bgr", action="store_true", help="the model expects BGR channel order")
    c.add_argument("--input-shape", metavar="N,C,H,W",
                   help="pin the image input's dynamic sizes, in the input's own layout (e.g. -1,3,224,224 or "
                        "1,224,224,3): a static graph, faster to optimise. The batch stays dynamic (-1, N or any "
                        "number); -1 keeps another dim dynamic too. Default: dynamic sizes stay dynamic")
    c.add_argument("--labels", help="class names: a text file with one per line, or a JSON list")
    c.add_argument("--fp16", action="store_true",
                   help="build the attribution graph in float16 (for the CUDA provider; onnxruntime's CPU provider "
                        "lacks float16 kernels). Default: float32, also for float16 models")
    c.add_argument("--blocks", type=int, metavar="B",
                   help="run the integration rows (images x steps) as B copies of the graph one after another: "
                        "on CPU faster and B times less activation memory, at a slower session start; on a GPU one large "
                        "batch is faster (--blocks 1). Default: by the model's activation size (10 for "
                        "ImageNet CNNs, 1 for small ones and with --fp16)")
    c.add_argument("-f", "--force", action="store_true", help="overwrite the output if it exists")


def run(a: argparse.Namespace) -> int:
    from ..api import convert, load_labels

    pp = None
    if any(v is not None for v in (a.mean, a.std, a.scale, a.resize, a.layout)) or a.bgr:
        pp = {"layout": a.layout, "color": "BGR" if a.bgr else None, "resize": a.resize, "scale": a.scale,
              "mean": a.mean, "std": a.std}  # laid over the defaults for this model (api._preprocess_for)
    labels = load_labels(a.labels) if a.labels else None
    r = convert(a.model, a.output, a.method, a.input_name, a.output_name, pp, labels, overwrite=a.force,
                input_shape=a.input_shape, fp16=a.fp16, blocks=a.blocks)
    for n in r.notes:
        print(f"note: {n}", file=sys.stderr)
    classes = f", {r.num_classes} classes" if r.num_classes else ""
    print(f"wrote {r.path}  ({r.method}; input '{r.input_name}', explaining '{r.score_name}'{classes}; "
          f"{r.seconds:.2f} s)")
    return 0
