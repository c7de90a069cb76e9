"""Option groups and printing shared by several commands."""
from __future__ import annotations

import argparse

from ..quadrature import DEFAULT_RULE, DEFAULT_STEPS, RULES


def add_run_options(p: argparse.ArgumentParser, threads_default: str = "all cores") -> None:
    """Where and how onnxruntime runs."""
    p.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"],
                   help="auto: CUDA when it really loads, else CPU (default auto)")
    p.add_argument("--max-memory", help="memory budget of the process, e.g. 2G (default: 40%% of free RAM, at most "
                                        "4G); integration steps run in chunks that fit")
    p.add_argument("--threads", type=int, help=f"onnxruntime intra-op threads (default: {threads_default})")


def add_ray_options(p: argparse.ArgumentParser, what: str) -> None:
    """--ray [ADDRESS] and --actors N: the same job on a Ray cluster (the optional extra onnx-gig[ray])."""
    p.add_argument("--ray", nargs="?", const="local", metavar="ADDRESS",
                   help=f"run on Ray: {what}. Without ADDRESS a local Ray starts (a laptop); with one, e.g. "
                        "ray://head:10001 or auto, the job joins that cluster (needs pip install 'onnx-gig[ray]')")
    p.add_argument("--actors", type=int, metavar="N",
                   help="with --ray: the number of actors, each holding one onnxruntime session (default: one per "
                        "GPU with CUDA, else one per 4 cores); each runs --threads threads (default: cores / actors)")


def check_ray_options(a: argparse.Namespace) -> None:
    """--actors only means something with --ray."""
    from ..errors import InputError

    if a.actors is not None and a.ray is None:
        raise InputError("--actors sets the number of Ray actors; add --ray (a local Ray) or --ray ADDRESS")


def add_attribution_options(p: argparse.ArgumentParser) -> None:
    """The integration: steps, rule, baseline, target."""
    p.add_argument("--target", help="class to explain: an index, one of the model's labels such as 'tabby cat', "
                                    "or an ImageNet WordNet ID (default: the predicted class)")
    p.add_argument("--steps", type=int, default=DEFAULT_STEPS, help=f"integration steps (default {DEFAULT_STEPS})")
    p.add_argument("--rule", default=DEFAULT_RULE, choices=RULES,
                   help=f"quadrature rule, with Captum's names (default {DEFAULT_RULE})")
    p.add_argument("--baseline", default="zeros", metavar="zeros|black|white|blur|FILE.npy",
                   help="zeros (model-input space: the mean image for ImageNet models; default), black, white, "
                        "blur, or a .npy tensor in the model's input layout")


def floats(text: str) -> tuple[float, ...]:
    """argparse type: '0.485,0.456,0.406' -> a tuple of floats."""
    try:
        return tuple(float(v) for v in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated numbers, got '{text}'") from None


def print_explanation(r, image: str) -> None:
    """The class explained, the top-5 table, and what was written."""
    device = "CUDA" if r.provider.startswith("CUDA") else "CPU"
    print(f"{image}: explained class {r.target} '{r.target_label}' with {r.method} on {device} in {r.seconds:.2f} s")
    for k, name, p in r.top:
        mark = "*" if k == r.target else " "
        print(f"  {mark} {p:7.2%}  {k:5d}  {name}")
    written = [str(p) for p in (r.figure, r.npy) if p]
    if written:
        print("wrote " + " and ".join(written))
