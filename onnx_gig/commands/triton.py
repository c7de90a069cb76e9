"""onnx-gig triton: a Triton Inference Server model repository entry for a converted model."""
from __future__ import annotations

import argparse

from ..serving.triton import DEVICES

NAME = "triton"
HELP = "write a Triton model repository entry (NAME/1/model.onnx + config.pbtxt) for a converted model"
DESCRIPTION = ("Copy a converted model into a Triton model repository as DIR/NAME/VERSION/model.onnx, unchanged, "
               "and write DIR/NAME/config.pbtxt for Triton's ONNX Runtime backend. With --max-batch-size 0 (the "
               "default) every input of the contract is declared and the defaulted ones are optional: a request "
               "sends a batch of images with a target each. With --max-batch-size B Triton merges requests "
               "(dynamic batching) and only the image is declared: the model explains the predicted class with "
               "its default steps and baseline (Triton's ONNX backend refuses optional inputs in batching models). "
               "See docs/serving.md.")


def configure(t: argparse.ArgumentParser) -> None:
    t.add_argument("model", help="a model written by 'onnx-gig convert'")
    t.add_argument("--repository", required=True, metavar="DIR", help="the Triton model repository folder")
    t.add_argument("--name", help="model name (default: the file name without .onnx)")
    t.add_argument("--max-batch-size", type=int, default=0, metavar="B",
                   help="0: no batching, full contract (default); B > 0: dynamic batching of up to B images, "
                        "image input only")
    t.add_argument("--device", default="auto", choices=DEVICES,
                   help="instance group: gpu, cpu, or auto (Triton's choice: GPU when there is one; default)")
    t.add_argument("--version", type=int, default=1, help="model version folder (default 1)")
    t.add_argument("--max-queue-delay-us", type=int, default=10_000,
                   help="dynamic batching: how long Triton waits to fill a batch, in microseconds (default 10000)")
    t.add_argument("--force", action="store_true", help="replace an existing version folder")


def _size(n: int) -> str:
    for unit, k in (("G", 1 << 30), ("M", 1 << 20), ("K", 1 << 10)):
        if n >= k:
            return f"{n / k:.3g} {unit}B"
    return f"{n} bytes"


def run(a: argparse.Namespace) -> int:
    from ..serving.triton import write_repository

    r = write_repository(a.model, a.repository, a.name, a.max_batch_size, a.device, a.version,
                         a.max_queue_delay_us, overwrite=a.force)
    print(f"wrote {r.model} and {r.config}")
    if r.max_batch_size:
        print(f"  dynamic batching up to {r.max_batch_size} images; input {r.inputs[0]} only (predicted class, "
              f"default steps and baseline); a full batch needs up to about {_size(r.bytes_per_image * r.max_batch_size)} (the converter's estimate)")
    else:
        print(f"  no batching in Triton; inputs {', '.join(r.inputs)} (all but the first optional); "
              f"one image with the default steps needs up to about {_size(r.bytes_per_image)} (the converter's estimate; "
              "send fewer alphas per request to use less)")
    return 0
