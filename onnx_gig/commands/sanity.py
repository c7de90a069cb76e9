"""onnx-gig sanity: the model-randomisation sanity check (Adebayo et al. 2018) for several methods."""
from __future__ import annotations

import argparse
import sys

from ..sanity import DEFAULT_METHODS
from ._common import add_run_options
from .eval import add_method_options

NAME = "sanity"
HELP = "sanity check: how maps change as the model's layers are randomised from the top"
DESCRIPTION = ("Cascading randomisation (Adebayo et al. 2018): re-initialise the parameterised layers (Conv, Gemm, "
               "MatMul, BatchNormalization) from the logits layer down, convert each randomised model, explain the "
               "original prediction, and report the Spearman rank correlation between the original and randomised "
               "maps per method and depth (|map| and signed map). A method that explains the model loses the "
               "correlation as the layers it depends on become random. Writes sanity.md, sanity.csv, sanity.png.")


def configure(p: argparse.ArgumentParser) -> None:
    p.add_argument("model", help="the classifier .onnx (not a converted model)")
    p.add_argument("images", nargs="+", help="photos, .npy tensors, or folders of them")
    add_method_options(p, ",".join(DEFAULT_METHODS))
    p.add_argument("--out-dir", default="sanity", help="where the table, plot and converted models go (default sanity)")
    p.add_argument("--depths", help="layers to randomise, e.g. 0,1,2,5,all (default: 0, 1, 2, 4, 8, ... all)")
    p.add_argument("--max-depths", type=int, default=8, help="at most this many depths by default (default 8)")
    p.add_argument("--title", help="title for the table and figure")
    add_run_options(p)


def run(a: argparse.Namespace) -> int:
    from ..sanity import sanity_check

    r = sanity_check(a.model, a.images, a.methods, a.out_dir, depths=a.depths, max_depths=a.max_depths,
                     steps=a.steps, rule=a.rule, seed=a.seed, device=a.device, max_memory=a.max_memory,
                     threads=a.threads, progress=sys.stderr.isatty(), title=a.title)
    print(r.table("abs"))
    for note in r.notes():
        print(f"note: {note}")
    print(f"{len(r.images)} images, {len(r.layers)} parameterised layers; wrote {a.out_dir}/sanity.md, sanity.csv, "
          "sanity.png")
    return 0
