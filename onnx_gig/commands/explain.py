"""onnx-gig explain: attribute one image with a converted model and draw the heatmap."""
from __future__ import annotations

import argparse
import sys

from ._common import add_attribution_options, add_run_options, print_explanation

NAME = "explain"
HELP = "attribute an image with a converted model and draw the heatmap"
DESCRIPTION = ("Run the attribution model on one image and write a figure (photo | map | overlay); "
               "print the top-5 classes. Preprocessing and labels come from the model file.")


def configure(e: argparse.ArgumentParser) -> None:
    e.add_argument("model", help="a model written by 'onnx-gig convert'")
    e.add_argument("image", help="PNG/JPEG of any size and mode, or a .npy holding one preprocessed tensor")
    add_attribution_options(e)
    e.add_argument("--out", help="figure to write (default: IMAGE_gig.png in the current folder)")
    e.add_argument("--save-npy", help="also write the raw attributions (float32, model layout, no batch dim)")
    e.add_argument("--cmap", default="inferno", choices=["inferno", "viridis"], help="colour map (default inferno)")
    e.add_argument("-f", "--force", action="store_true", help="overwrite the figure and the .npy if they exist")
    add_run_options(e)


def run(a: argparse.Namespace) -> int:
    from ..api import explain

    r = explain(a.model, a.image, target=a.target, steps=a.steps, rule=a.rule, baseline=a.baseline, out=a.out,
                save_npy=a.save_npy, device=a.device, max_memory=a.max_memory, threads=a.threads,
                progress=sys.stderr.isatty(), cmap=a.cmap, overwrite=a.force)
    print_explanation(r, a.image)
    return 0
