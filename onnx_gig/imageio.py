"""Turning user files (photos or .npy tensors) into model inputs, and baselines to integrate from."""
from __future__ import annotations

import json
import math
import os
import re
import struct
import warnings
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any, Sequence

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from .contract import META_PREFIX, pixel_dtype
from .errors import InputError

LAYOUTS = ("NCHW", "NHWC")
COLORS = ("RGB", "BGR")
BASELINE_KINDS = ("zeros", "black", "white", "blur")
# the inputs a folder walk takes: what PIL reads here, and a preprocessed tensor
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".jpe", ".jfif", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".npy")
METADATA_KEY = META_PREFIX + "preprocess"


# --------------------------------------------------------------------------- preprocessing spec


@dataclass
class Preprocess:
    """How a photo becomes a model input: value = (uint8 * scale - mean) / std, per model channel."""

    layout: str = "NCHW"
    color: str = "RGB"
    resize: int | None = 256
    crop: tuple[int, int] | None = None
    scale: float = 1 / 255
    mean: tuple[float, ...] = (0.485, 0.456, 0.406)
    std: tuple[float, ...] = (0.229, 0.224, 0.225)

    def __post_init__(self) -> None:
        """Validate and normalise field types so a bad spec fails early with one readable line."""
        self.layout = _check_choice("layout", self.layout, LAYOUTS)
        self.color = _check_choice("color", self.color, COLORS)
        self.resize = None if self.resize is None else _check_pos_int("resize", self.resize)
        self.crop = _check_crop(self.crop)
        self.scale = _check_pos_float("scale", self.scale)
        self.mean = _check_floats("mean", self.mean, positive=False)
        self.std = _check_floats("std", self.std, positive=True)
        if len(self.mean) != len(self.std):
            raise InputError(f"preprocess: mean has {len(self.mean)} values but std has {len(self.std)}")

    def to_json(self) -> str:
        """Serialise for the ONNX metadata entry ``onnx_gig.preprocess``."""
        d = asdict(self)
        d["crop"] = None if self.crop is None else list(self.crop)
        d["mean"], d["std"] = list(self.mean), list(self.std)
        return json.dumps(d)

    @classmethod
    def from_json(cls, s: str) -> "Preprocess":
        """Parse and validate a JSON spec; missing keys take defaults, unknown keys are rejected."""
        try:
            d = json.loads(s)
        except (json.JSONDecodeError, TypeError) as e:
            raise InputError(f"preprocess: not valid JSON ({e})") from None
        if not isinstance(d, dict):
            raise InputError(f"preprocess: expected a JSON object, got {type(d).__name__}")
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise InputError(f"preprocess: unknown key(s) {', '.join(unknown)}; valid keys: {', '.join(sorted(known))}")
        return cls(**d)

    def normalize(self, arr_hwc_uint8: np.ndarray) -> np.ndarray:
        """Map an RGB uint8 HWC array to float32 HWC in model colour order and value range."""
        arr = np.asarray(arr_hwc_uint8)
        if arr.ndim != 3:
            raise InputError(f"expected an HWC image array, got shape {arr.shape}")
        if self.color == "BGR":
            arr = arr[..., ::-1]
        x = arr.astype(np.float64) * self.scale
        x = (x - np.asarray(self.mean)) / np.asarray(self.std)
        return x.astype(np.float32)

    def denormalize(self, tensor: np.ndarray) -> np.ndarray:
        """Invert preprocessing of a model-layout tensor (batch dim of 1 optional) to uint8 HWC RGB."""
        x = hwc_view(np.asarray(tensor, dtype=np.float64), self.layout)
        x = (x * np.asarray(self.std) + np.asarray(self.mean)) / self.scale
        if self.color == "BGR":
            x = x[..., ::-1]
        return np.clip(np.rint(np.nan_to_num(x)), 0, 255).astype(np.uint8)

    def to_layout(self, hwc: np.ndarray) -> np.ndarray:
        """Put an HWC array into this spec's layout (no batch dim)."""
        return np.ascontiguousarray(hwc.transpose(2, 0, 1) if self.layout == "NCHW" else hwc)


def _check_choice(name: str, value: Any, choices: Sequence[str]) -> str:
    """Return ``value`` upper-cased if it is one of ``choices``."""
    if not isinstance(value, str) or value.upper() not in choices:
        raise InputError(f"preprocess: {name} must be one of {', '.join(choices)}, got {value!r}")
    return value.upper()


def _check_pos_int(name: str, value: Any) -> int:
    """Return ``value`` if it is a positive whole number (bools rejected)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value != int(value) or value <= 0:
        raise InputError(f"preprocess: {name} must be a positive integer, got {value!r}")
    return int(value)


def _check_pos_float(name: str, value: Any) -> float:
    """Return ``value`` as float if it is finite and positive."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value <= 0:
        raise InputError(f"preprocess: {name} must be a positive number, got {value!r}")
    return float(value)


def _check_crop(value: Any) -> tuple[int, int] | None:
    """Return crop as an (H, W) tuple of positive ints, or None."""
    if value is None:
        return None
    if isinstance(value, (str, bytes)) or not isinstance(value, Sequence) or len(value) != 2:
        raise InputError(f"preprocess: crop must be [height, width] or null, got {value!r}")
    return (_check_pos_int("crop height", value[0]), _check_pos_int("crop width", value[1]))


def _check_floats(name: str, value: Any, positive: bool) -> tuple[float, ...]:
    """Return a non-empty tuple of finite floats (positive ones if asked)."""
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        value = (value,)
    if isinstance(value, (str, bytes)) or not isinstance(value, Sequence) or not value:
        raise InputError(f"preprocess: {name} must be a list of numbers, got {value!r}")
    out = []
    for v in value:
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v) or (positive and v <= 0):
            kind = "positive numbers" if positive else "finite numbers"
            raise InputError(f"preprocess: {name} must hold {kind}, got {list(value)!r}")
        out.append(float(v))
    return tuple(out)


def hwc_view(x: np.ndarray, layout: str) -> np.ndarray:
    """Return a model-layout tensor (batch dim of 1 optional) as an HWC array."""
    if x.ndim == 4 and x.shape[0] == 1:
        x = x[0]
    if x.ndim != 3:
        raise InputError(f"expected a 3-D image tensor (batch dim of 1 optional), got shape {x.shape}")
    return x.transpose(1, 2, 0) if layout == "NCHW" else x


# --------------------------------------------------------------------------- reading photos


# A JPEG over Pillow's MAX_IMAGE_PIXELS (its decompression-bomb limit, about 89 megapixels) is decoded at 1/2,
# 1/4 or 1/8 scale (Image.draft), its short side kept at DRAFT_SHORT_SIDE or more: every photo ends up at the
# model's input size (224 or so) anyway, and a 100-megapixel camera photo then needs a few megapixels of memory.
# Other formats decode at full size, so Pillow's limit stays theirs.
JPEG_MAX_PIXELS = 1_000_000_000  # a JPEG claiming more (a gigapixel) is refused before decoding
DRAFT_SHORT_SIDE = 2048
_JPEG_MAGIC = b"\xff\xd8\xff"


def load_image(path: str | os.PathLike) -> Image.Image:
    """Read any PIL-readable image as upright RGB, turning every failure into one InputError line.

    Large JPEGs are decoded at reduced scale; an image too large to decode safely is refused with its size.
    """
    p = Path(path)
    try:
        if not p.exists():
            raise InputError(f"{p}: file not found")
        if not p.is_file():
            raise InputError(f"{p}: not a regular file")
        with warnings.catch_warnings():
            # past MAX_IMAGE_PIXELS Pillow only warns (it raises at twice that): refuse both, before decoding
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with open(p, "rb") as fp:
                jpeg = fp.read(3) == _JPEG_MAGIC
                fp.seek(0)
                with (_open_jpeg(p, fp) if jpeg else Image.open(fp)) as im:
                    im.load()
                    img = _upright(im)
    except PermissionError:
        raise InputError(f"cannot read {p}: permission denied") from None
    except UnidentifiedImageError:
        raise InputError(f"{p}: not a readable image (unknown format, or a corrupt or zero-size header)") from None
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as e:
        n = re.search(r"\((\d+) pixels\)", str(e))  # Pillow's "Image size (N pixels) exceeds limit ..."
        raise InputError(_too_large(p, f"{int(n[1])} pixels" if n else _one_line(e))) from None
    except (OSError, SyntaxError, ValueError, EOFError) as e:
        raise InputError(f"{p}: truncated or corrupt image ({e})") from None
    if img.width == 0 or img.height == 0:
        raise InputError(f"{p}: image has zero size ({img.width}x{img.height})")
    return to_rgb(img)


def _open_jpeg(p: Path, fp: Any) -> Image.Image:
    """A JPEG opened lazily, set to decode at reduced scale when it is over Pillow's pixel limit.

    Opened by its plugin rather than ``Image.open``, whose bomb check would refuse it at full size first.
    """
    from PIL import JpegImagePlugin

    try:
        im = JpegImagePlugin.jpeg_factory(fp, str(p))
    except (SyntaxError, IndexError, TypeError, struct.error):  # a broken header: as Image.open reports it
        fp.seek(0)
        return Image.open(fp)
    limit = Image.MAX_IMAGE_PIXELS  # None: the caller switched Pillow's check off
    w, h = im.size
    if limit is None or w * h <= limit:
        return im
    if w * h > JPEG_MAX_PIXELS:
        im.close()
        raise InputError(_too_large(p, f"{w}x{h} pixels, over the {_mp(JPEG_MAX_PIXELS)} megapixels a JPEG may have"))
    s = next((s for s in (8, 4, 2) if min(w, h) // s >= DRAFT_SHORT_SIDE), 1)  # the most that keeps the short side
    while s < 8 and math.ceil(w / s) * math.ceil(h / s) > limit:  # a long thin panorama: less than that
        s *= 2
    im.draft(None, (w // s, h // s))
    if im.width * im.height > limit:
        dw, dh = im.size
        im.close()
        raise InputError(_too_large(p, f"{w}x{h} pixels, still {dw}x{dh} decoded at reduced scale"))
    return im


def _mp(pixels: int) -> int:
    """Pixels in whole megapixels, for messages."""
    return round(pixels / 1e6)


def _too_large(p: Path, why: str) -> str:
    """The one line for an image over the pixel limits, saying what the user can do."""
    limit = Image.MAX_IMAGE_PIXELS or 0
    return (f"{p}: image too large to open safely ({why}); downscale it first (JPEG photos up to "
            f"{_mp(JPEG_MAX_PIXELS)} megapixels are read at reduced scale, other formats up to "
            f"{_mp(limit)} megapixels)")


def _one_line(e: BaseException) -> str:
    return " ".join(str(e).split()) or type(e).__name__


def _upright(im: Image.Image) -> Image.Image:
    """Apply EXIF orientation; a broken EXIF block is ignored rather than fatal."""
    try:
        return ImageOps.exif_transpose(im)
    except Exception:  # noqa: BLE001 - malformed EXIF must not stop an otherwise readable photo
        return im.copy()


def to_rgb(img: Image.Image) -> Image.Image:
    """Convert any PIL mode to 8-bit RGB: high bit depths rescaled, alpha composited over white."""
    if img.mode == "RGB":
        return img
    if img.mode in ("I", "F") or img.mode.startswith("I;16"):
        return _wide_gray_to_rgb(img)
    has_alpha = img.mode in ("RGBA", "LA", "PA", "RGBa", "La") or "transparency" in img.info
    if has_alpha:
        rgba = img.convert("RGBA")
        white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(white, rgba).convert("RGB")
    return img.convert("RGB")


def _wide_gray_to_rgb(img: Image.Image) -> Image.Image:
    """Scale 16/32-bit integer or float grayscale down to 8 bits instead of clipping."""
    a = np.asarray(img, dtype=np.float64)
    if img.mode == "F":
        a = a * 255.0 if np.nanmax(a, initial=0.0) <= 1.0 else a
    elif img.mode.startswith("I;16") or np.max(a, initial=0) > 255:
        a = a / 257.0
    g = np.clip(np.rint(np.nan_to_num(a)), 0, 255).astype(np.uint8)
    return Image.fromarray(g).convert("RGB")


# --------------------------------------------------------------------------- photo -> tensor


DYNAMIC_SHORT_SIDE = 224  # a model with dynamic height/width and no resize in its spec sees photos at most this small


def prepare_image(img: Image.Image, pp: Preprocess, size: tuple[int, int] | None) -> tuple[np.ndarray, Image.Image]:
    """Resize, centre-crop and normalise a photo; return (tensor without batch dim, cropped RGB photo).

    ``size`` None (a model with dynamic height and width, no crop in its spec): the photo keeps its aspect,
    its short side resized to ``pp.resize``, or kept but at most ``DYNAMIC_SHORT_SIDE`` when that is unset.
    """
    img = to_rgb(img)
    if size is None and pp.crop is None:
        seen = _fit_short_side(img, pp.resize)
        return pp.to_layout(pp.normalize(np.asarray(seen, dtype=np.uint8))), seen
    crop = pp.crop or (int(size[0]), int(size[1]))
    resized = _resize_for_crop(img, pp.resize, crop)
    seen = center_crop(resized, crop)
    x = pp.to_layout(pp.normalize(np.asarray(seen, dtype=np.uint8)))
    return x, seen


def _resize_for_crop(img: Image.Image, resize: int | None, crop: tuple[int, int]) -> Image.Image:
    """Resize the short side to ``resize`` (torchvision rule), enlarging further if the crop would not fit."""
    ch, cw = crop
    w, h = img.size
    if resize is None:
        new_w, new_h = cw, ch
    else:
        new_w, new_h = (resize, int(resize * h / w)) if w <= h else (int(resize * w / h), resize)
        if new_w < cw or new_h < ch:
            r = max(cw / w, ch / h)
            new_w, new_h = max(cw, math.ceil(w * r)), max(ch, math.ceil(h * r))
    if (new_w, new_h) == (w, h):
        return img
    return img.resize((new_w, new_h), Image.Resampling.BILINEAR)


def _fit_short_side(img: Image.Image, resize: int | None) -> Image.Image:
    """The photo with its short side at ``resize`` (or, unset, at most ``DYNAMIC_SHORT_SIDE``), aspect kept."""
    w, h = img.size
    side = resize if resize is not None else min(DYNAMIC_SHORT_SIDE, w, h)
    r = side / min(w, h)
    new = (max(1, int(round(w * r))), max(1, int(round(h * r))))
    return img if new == (w, h) else img.resize(new, Image.Resampling.BILINEAR)


def center_crop(img: Image.Image, crop: tuple[int, int]) -> Image.Image:
    """Cut the central (H, W) window, placed as torchvision's CenterCrop does."""
    ch, cw = crop
    w, h = img.size
    top, left = int(round((h - ch) / 2.0)), int(round((w - cw) / 2.0))
    return img.crop((left, top, left + cw, top + ch))


# --------------------------------------------------------------------------- user file -> model input


def load_input(
    path: str | os.PathLike, pp: Preprocess, input_shape: Sequence[Any], pixels: str | None = None
) -> tuple[np.ndarray, Image.Image | None]:
    """Load a photo or a preprocessed .npy as a model input without batch dim, plus a drawable photo.

    ``pixels`` names the integer dtype of a model whose graph casts and normalises its pixels itself: a .npy
    in that dtype (or float pixel values) is then accepted as is.
    """
    if str(path).lower().endswith(".npy"):
        x = load_npy_tensor(path, input_shape, what="input", int_ok=pixels is not None)
        return x, _drawable(x, pp)
    size = _image_size(pp, input_shape)
    img = load_image(path)
    if size is None:
        return prepare_image(img, pp, None)
    h, w = size
    if img.width * 4 < w or img.height * 4 < h:
        warnings.warn(f"{path} is only {img.width}x{img.height} pixels; it is enlarged to the model's {w}x{h}, "
                      "so the map shows little detail", stacklevel=2)
    x, seen = prepare_image(img, pp, (h, w))
    return x, seen


def _static(d: Any) -> int | None:
    """Return a dimension as an int if static (positive int), else None."""
    if isinstance(d, (int, np.integer)) and not isinstance(d, bool) and d > 0:
        return int(d)
    return None


def _image_size(pp: Preprocess, input_shape: Sequence[Any]) -> tuple[int, int] | None:
    """Work out the (H, W) an image must be cropped to, from the model's static dims or pp.crop; None when
    both height and width are dynamic and the spec has no crop (the photo keeps its aspect)."""
    shape = list(input_shape)
    if len(shape) != 4:
        raise InputError(f"model input has rank {len(shape)} (shape {shape}); images need a 4-D input, pass a .npy tensor instead")
    c, h, w = (shape[1], shape[2], shape[3]) if pp.layout == "NCHW" else (shape[3], shape[1], shape[2])
    c, h, w = _static(c), _static(h), _static(w)
    if c is not None and c != 3:
        raise InputError(f"model input {shape} in {pp.layout} has {c} channels; photos give 3 (check the layout, or pass a .npy tensor)")
    if pp.crop is not None:
        if (h is not None and h != pp.crop[0]) or (w is not None and w != pp.crop[1]):
            raise InputError(f"preprocess crop {list(pp.crop)} does not match the model input {shape} ({pp.layout})")
        return pp.crop
    if h is None and w is None:
        return None
    if h is None or w is None:
        raise InputError(f"model input {shape} has one dynamic and one static side; set crop [H, W] in the "
                         "preprocess spec (convert --input-shape can pin the other)")
    return h, w


def load_npy_tensor(path: str | os.PathLike, shape: Sequence[Any], what: str, int_ok: bool = False) -> np.ndarray:
    """Load a float .npy (integer too when ``int_ok``), check it against ``shape`` (batch dim first), and
    return it as float32 without batch dim."""
    arr = _read_npy(path, what, int_ok)
    want = list(shape)
    if arr.ndim == len(want):
        if arr.shape[0] != 1:
            raise InputError(f"{what} {path}: batch dim is {arr.shape[0]}; exactly one example (batch 1) is explained at a time")
        arr = arr[0]
    elif arr.ndim != len(want) - 1:
        raise InputError(f"{what} {path}: shape {list(arr.shape)} does not fit the model input {want} (rank {len(want)}, batch dim optional)")
    for i, (got, exp) in enumerate(zip(arr.shape, want[1:]), start=1):
        if _static(exp) is not None and got != exp:
            raise InputError(f"{what} {path}: shape {list(arr.shape)} does not match the model input {want} at dim {i}")
    return _finite_float32(arr, path, what)


def _read_npy(path: str | os.PathLike, what: str, int_ok: bool = False) -> np.ndarray:
    """Read a .npy file without pickles, turning failures into one InputError line."""
    p = Path(path)
    kinds = "fiu" if int_ok else "f"
    try:
        if not p.is_file():
            raise InputError(f"{what} {p}: file not found")
        _check_npy_header(p, what, kinds)
        arr = np.load(p, allow_pickle=False)
    except PermissionError:
        raise InputError(f"cannot read {what} {p}: permission denied") from None
    except (ValueError, OSError, EOFError) as e:
        raise InputError(f"{what} {p}: not a readable .npy array ({e})") from None
    if not isinstance(arr, np.ndarray):
        raise InputError(f"{what} {p}: expected one array in .npy format")
    if arr.dtype.kind not in kinds:
        raise InputError(f"{what} {p}: expected a float array of a preprocessed tensor, got {arr.dtype} (save raw photos as PNG instead)")
    return arr


def _check_npy_header(p: Path, what: str, kinds: str = "f") -> None:
    """Read only the header: a shape the file cannot hold (a memory bomb) or a non-float dtype stops here."""
    try:
        with open(p, "rb") as f:
            version = np.lib.format.read_magic(f)
            if version == (1, 0):
                shape, _, dtype = np.lib.format.read_array_header_1_0(f)
            elif version == (2, 0):
                shape, _, dtype = np.lib.format.read_array_header_2_0(f)
            else:
                return  # np.load checks the rest
            offset = f.tell()
    except PermissionError:
        raise  # _read_npy's one line
    except (ValueError, OSError, EOFError, SyntaxError) as e:
        raise InputError(f"{what} {p}: not a readable .npy array ({_one_line(e)})") from None
    if dtype.kind not in kinds:
        raise InputError(f"{what} {p}: expected a float array of a preprocessed tensor, got {dtype} "
                         "(save raw photos as PNG instead)")
    need = int(np.prod(shape, dtype=np.float64)) * dtype.itemsize
    have = p.stat().st_size - offset
    if need > have:
        raise InputError(f"{what} {p}: the header claims shape {list(shape)} ({need} bytes) but the file holds "
                         f"{have} bytes; the file is truncated")


def _finite_float32(arr: np.ndarray, path: str | os.PathLike, what: str) -> np.ndarray:
    """Cast to float32, refusing NaN/inf (also values that overflow float32)."""
    with np.errstate(over="ignore", invalid="ignore"):
        out = np.ascontiguousarray(arr, dtype=np.float32)
    if not np.isfinite(out).all():
        raise InputError(f"{what} {path}: array contains NaN or infinite values")
    return out


def _drawable(x: np.ndarray, pp: Preprocess) -> Image.Image | None:
    """Reconstruct a photo from a preprocessed tensor when it looks like a 3-channel image."""
    if x.ndim != 3:
        return None
    c = x.shape[0] if pp.layout == "NCHW" else x.shape[-1]
    if c != 3 or len(pp.mean) not in (1, 3):
        return None
    return Image.fromarray(pp.denormalize(x))


# --------------------------------------------------------------------------- baselines


def make_baseline(kind: str, x: np.ndarray, photo: Image.Image | None, pp: Preprocess) -> np.ndarray:
    """Build the IG baseline for input ``x`` (no batch dim): zeros, black, white, blur, or a .npy path.

    ``photo`` is accepted for callers that have it; the current kinds work in tensor space and ignore it.
    """
    x = np.asarray(x, dtype=np.float32)
    key = str(kind).strip().lower()
    if key == "zeros":
        return np.zeros_like(x)
    if key in ("black", "white"):
        return constant_input(0 if key == "black" else 255, x.shape, pp)
    if key == "blur":
        return gaussian_blur(x, pp.layout)
    if str(kind).lower().endswith(".npy") or Path(str(kind)).is_file():
        return _npy_baseline(kind, x)
    raise InputError(f"unknown baseline {kind!r}; valid: {', '.join(BASELINE_KINDS)}, or a path to a .npy file")


def constant_input(value: int, shape: tuple[int, ...], pp: Preprocess) -> np.ndarray:
    """Preprocess a constant-colour image of pixel ``value`` into a tensor of ``shape`` (no batch dim)."""
    if len(shape) != 3:
        raise InputError(f"a {value}-valued image baseline needs a 3-D image input, got shape {list(shape)}")
    h, w, c = (shape[1], shape[2], shape[0]) if pp.layout == "NCHW" else shape
    if len(pp.mean) not in (1, c):
        raise InputError(f"preprocess has {len(pp.mean)} mean values but the input has {c} channels")
    return pp.to_layout(pp.normalize(np.full((h, w, c), value, dtype=np.uint8)))


def _npy_baseline(path: str, x: np.ndarray) -> np.ndarray:
    """Load a baseline .npy whose shape equals x's, with or without a batch dim of 1."""
    arr = _read_npy(path, "baseline")
    if arr.ndim == x.ndim + 1 and arr.shape[0] == 1:
        arr = arr[0]
    if arr.shape != x.shape:
        raise InputError(f"baseline {path}: shape {list(arr.shape)} does not match the input shape {list(x.shape)} (batch dim of 1 optional)")
    return _finite_float32(arr, path, "baseline")


def gaussian_kernel(ksize: int = 11, sigma: float = 5.0) -> np.ndarray:
    """Return a normalised 1-D Gaussian kernel of odd length ``ksize``."""
    if isinstance(ksize, bool) or int(ksize) != ksize or ksize < 1 or ksize % 2 == 0:
        raise InputError(f"blur kernel size must be a positive odd integer, got {ksize!r}")
    if not (math.isfinite(sigma) and sigma > 0):
        raise InputError(f"blur sigma must be a positive number, got {sigma!r}")
    r = np.arange(int(ksize), dtype=np.float64) - (int(ksize) - 1) / 2
    k = np.exp(-(r**2) / (2.0 * sigma**2))
    return k / k.sum()


def gaussian_blur(x: np.ndarray, layout: str, ksize: int = 11, sigma: float = 5.0) -> np.ndarray:
    """Separable Gaussian blur over H and W with reflect padding (RISE insertion: k=11, sigma=5).

    Accepts CHW/HWC, or NCHW/NHWC with any batch size; returns float32 of the same shape.
    """
    arr = np.asarray(x, dtype=np.float64)
    if arr.ndim not in (3, 4):
        raise InputError(f"blur needs a 3-D or 4-D image tensor, got shape {list(arr.shape)}")
    axes = (-2, -1) if layout.upper() == "NCHW" else (-3, -2)
    k = gaussian_kernel(ksize, sigma)
    for ax in axes:
        arr = _convolve_axis(arr, k, ax)
    return arr.astype(np.float32)


def _convolve_axis(a: np.ndarray, k: np.ndarray, axis: int) -> np.ndarray:
    """Correlate ``a`` with symmetric kernel ``k`` along ``axis``, same size, reflect-padded."""
    r = len(k) // 2
    a = np.moveaxis(a, axis, -1)
    n = a.shape[-1]
    pad = [(0, 0)] * (a.ndim - 1) + [(r, r)]
    p = np.pad(a, pad, mode="reflect") if n > 1 else np.pad(a, pad, mode="edge")
    out = np.zeros_like(a)
    for i, w in enumerate(k):
        out += w * p[..., i : i + n]
    return np.moveaxis(out, -1, axis)


def guess_preprocess(input_shape: Sequence, pixels: bool = False) -> Preprocess:
    """ImageNet normalisation in the layout the input shape suggests (used when the model carries none).

    Dynamic height and width: no resize or crop (explain keeps the photo's aspect, its short side at most
    224). ``pixels``: the graph normalises its own pixels, so the spec only maps photos to 0-255 values, and
    resizes them to the model's size without ImageNet's 256/224 zoom.
    """
    dims = list(input_shape)
    nhwc = len(dims) == 4 and dims[-1] in (1, 3) and dims[1] not in (1, 3)
    hw = dims[1:3] if nhwc else dims[2:4]
    static = len(hw) == 2 and all(isinstance(d, int) for d in hw)
    dynamic = len(hw) == 2 and not any(isinstance(d, int) for d in hw)
    crop = tuple(int(d) for d in hw) if static else (None if dynamic else (224, 224))
    if pixels:  # resized to the model's size: short side to fit, centre crop
        return as_pixels(Preprocess(layout="NHWC" if nhwc else "NCHW", crop=crop, resize=min(crop) if crop else None))
    resize = int(round(crop[0] * 256 / 224)) if crop else None
    return Preprocess(layout="NHWC" if nhwc else "NCHW", crop=crop, resize=resize)


def as_pixels(pp: Preprocess) -> Preprocess:
    """``pp`` feeding raw 0-255 pixel values (for a graph that casts and normalises them itself)."""
    return Preprocess(layout=pp.layout, color=pp.color, resize=pp.resize, crop=pp.crop, scale=1.0, mean=(0.0,),
                      std=(1.0,))


def preprocess_from(metadata: dict, input_shape: Sequence) -> Preprocess:
    """The preprocessing a converted model carries in its metadata, else a guess from its input shape."""
    raw = metadata.get(METADATA_KEY)
    return Preprocess.from_json(raw) if raw else guess_preprocess(input_shape, pixel_dtype(metadata) is not None)
