"""Pictures of attributions: saliency maps, perceptual colour maps, overlays and a figure, without matplotlib."""
from __future__ import annotations

import functools
import io
import os
from typing import Iterable, Sequence

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from .errors import GigError, InputError
from .fileio import atomic_path

PANEL_MIN = 224  # smallest panel side in render_figure
PANEL_MAX = 512  # panels of bigger photos are shrunk to this long side (but never below PANEL_MIN)
GUTTER = 8  # white space around and between panels
BAR_HEIGHT = 10  # colour bar under the map panel
INK = (34, 34, 34)

# sRGB control points sampled evenly (0..1) from matplotlib's maps: 32 for the perceptually uniform ones, 33 for
# the diverging rdbu, so that its middle point (white) falls exactly on 0.
_CONTROL_POINTS: dict[str, tuple[tuple[int, int, int], ...]] = {
    "inferno": (
        (0, 0, 4), (4, 3, 18), (11, 7, 36), (21, 11, 55), (35, 12, 76), (49, 10, 92), (62, 9, 102),
        (76, 12, 107), (90, 17, 110), (103, 22, 110), (116, 26, 110), (128, 31, 108), (143, 36, 105),
        (155, 41, 100), (168, 46, 95), (180, 51, 89), (193, 58, 80), (204, 66, 72), (215, 75, 63),
        (224, 85, 54), (233, 97, 43), (239, 110, 33), (245, 123, 23), (248, 137, 12), (251, 153, 6),
        (252, 168, 13), (251, 184, 29), (249, 199, 47), (245, 217, 73), (242, 232, 101), (243, 245, 134),
        (252, 255, 164),
    ),
    "viridis": (
        (68, 1, 84), (71, 13, 96), (72, 24, 106), (72, 35, 116), (71, 46, 124), (69, 56, 130), (66, 65, 134),
        (62, 74, 137), (58, 84, 140), (54, 93, 141), (50, 101, 142), (46, 109, 142), (43, 117, 142),
        (40, 125, 142), (37, 132, 142), (34, 140, 141), (31, 148, 140), (30, 156, 137), (32, 163, 134),
        (37, 171, 130), (46, 179, 124), (58, 186, 118), (72, 193, 110), (88, 199, 101), (108, 205, 90),
        (127, 211, 78), (147, 215, 65), (168, 219, 52), (192, 223, 37), (213, 226, 26), (234, 229, 26),
        (253, 231, 37),
    ),
    # diverging, for signed maps (--sign all): matplotlib's RdBu_r (ColorBrewer), blue < 0 < red, white at 0
    "rdbu": (
        (5, 48, 97), (14, 65, 121), (23, 82, 144), (31, 99, 168), (42, 113, 178), (52, 128, 185), (63, 142, 192),
        (82, 157, 200), (107, 172, 209), (132, 188, 217), (155, 201, 224), (174, 211, 230), (194, 221, 236),
        (212, 230, 241), (224, 236, 243), (236, 242, 245), (247, 246, 246), (249, 238, 231), (251, 229, 216),
        (253, 220, 201), (251, 204, 180), (248, 187, 158), (245, 170, 137), (238, 150, 119), (228, 128, 102),
        (219, 107, 85), (208, 85, 72), (197, 62, 61), (186, 40, 50), (171, 22, 42), (147, 14, 38), (124, 7, 34),
        (103, 0, 31),
    ),
}
CMAPS = tuple(_CONTROL_POINTS)
SIGNS = ("absolute", "positive", "negative", "all")
# The figure clips the map at this percentile of the shown values: PAIR saliency's convention (Captum's
# visualize_image_attr clips the top 2 % of the attribution mass). A few pixels carry most of the raw
# range (on the demo cat the max is 12x the 99th percentile), so |sum|/max leaves the rest near black.
DEFAULT_CLIP = 99.0
DEFAULT_ALPHA = 0.6  # overlay opacity where the map is 1; it falls linearly to 0 where the map is 0


def default_cmap(sign: str = "absolute") -> str:
    """inferno for magnitudes, the diverging rdbu for signed maps."""
    return "rdbu" if sign == "all" else "inferno"


# --------------------------------------------------------------------------- maps


def saliency_map(attr: np.ndarray, layout: str = "NCHW", clip_percentile: float = DEFAULT_CLIP,
                 sign: str = "absolute") -> np.ndarray:
    """The map to draw, [H, W] float32: the channel sum's ``sign`` part scaled by its ``clip_percentile``.

    ``absolute`` |sum|, ``positive`` max(sum, 0), ``negative`` max(-sum, 0): divided by the value at
    ``clip_percentile`` of the pixels and clipped to [0, 1], so at most (100 - P) % of the pixels reach 1.
    ``all``: the signed sum over the percentile of |sum|, clipped to [-1, 1]. ``clip_percentile=100`` is
    the authors' map (|sum| / max). The attributions themselves are never changed.
    """
    check_map_options(clip_percentile, sign)
    a = np.asarray(attr, dtype=np.float64)
    if a.ndim == 4 and a.shape[0] == 1:
        a = a[0]
    if a.ndim == 3:
        a = a.sum(axis=0 if layout.upper() == "NCHW" else -1)
    if a.ndim != 2:
        raise GigError(f"attribution must be [C,H,W], [H,W,C] or [H,W] (batch 1 optional), got shape {list(a.shape)}")
    if not np.isfinite(a).all():
        raise GigError("attribution contains NaN or infinite values; cannot draw a saliency map")
    if sign == "all":
        scale = clip_scale(np.abs(a), clip_percentile)
        if scale <= 0.0:
            return np.zeros(a.shape, dtype=np.float32)
        return np.clip(a / scale, -1.0, 1.0).astype(np.float32)
    shown = {"absolute": np.abs(a), "positive": np.maximum(a, 0.0), "negative": np.maximum(-a, 0.0)}[sign]
    return normalize_map(shown, clip_percentile)


def clip_scale(m: np.ndarray, clip_percentile: float = 100.0) -> float:
    """The value a non-negative map is divided by: its ``clip_percentile`` (the max when that is 0)."""
    m = np.asarray(m, dtype=np.float64)
    top = float(m.max(initial=0.0))
    if clip_percentile >= 100.0 or top <= 0.0:
        return top
    p = float(np.percentile(m, clip_percentile))
    return p if p > 0.0 else top  # a map that is 0 on more than P % of its pixels: scale by its max


def check_map_options(clip_percentile: float, sign: str, alpha: float = DEFAULT_ALPHA,
                      cmap: str | None = None) -> None:
    """Refuse a percentile outside (0, 100], an unknown sign or colour map, an opacity outside [0, 1]: one line each."""
    if isinstance(clip_percentile, bool) or not isinstance(clip_percentile, (int, float, np.number)) \
            or not 0.0 < float(clip_percentile) <= 100.0:
        raise InputError(f"--clip-percentile must be a number in (0, 100] (100 = no clipping), got {clip_percentile!r}")
    if sign not in SIGNS:
        raise InputError(f"unknown --sign {sign!r}; choose one of: {', '.join(SIGNS)}")
    if isinstance(alpha, bool) or not isinstance(alpha, (int, float, np.number)) or not 0.0 <= float(alpha) <= 1.0:
        raise InputError(f"--alpha must be a number in [0, 1], got {alpha!r}")
    if cmap is not None:
        colormap_lut(cmap)


def normalize_map(m: np.ndarray, clip_percentile: float = 100.0) -> np.ndarray:
    """Scale a non-negative map by its max (or its ``clip_percentile``) into [0, 1]; all-zero stays zero."""
    m = np.asarray(m, dtype=np.float64)
    top = clip_scale(m, clip_percentile)
    if top <= 0.0:
        return np.zeros(m.shape, dtype=np.float32)
    return np.clip(m / top, 0.0, 1.0).astype(np.float32)


# --------------------------------------------------------------------------- colour


@functools.lru_cache(maxsize=None)
def colormap_lut(cmap: str = "inferno") -> np.ndarray:
    """Return a read-only 256x3 uint8 table interpolated linearly from the map's control points."""
    if cmap not in _CONTROL_POINTS:
        raise InputError(f"unknown colour map {cmap!r}; valid: {', '.join(CMAPS)}")
    pts = np.asarray(_CONTROL_POINTS[cmap], dtype=np.float64)
    xp, xs = np.linspace(0.0, 1.0, len(pts)), np.linspace(0.0, 1.0, 256)
    lut = np.stack([np.interp(xs, xp, pts[:, c]) for c in range(3)], axis=1)
    lut = np.rint(lut).astype(np.uint8)
    lut.setflags(write=False)
    return lut


def _map_colors(m: np.ndarray, cmap: str, signed: bool = False) -> np.ndarray:
    """HxWx3 uint8 colours for map values in [0, 1] ([-1, 1] when ``signed``; out of range clipped, NaN as 0)."""
    v = np.nan_to_num(np.asarray(m, dtype=np.float64))
    if signed:
        v = (np.clip(v, -1.0, 1.0) + 1.0) / 2.0
    idx = np.rint(np.clip(v, 0.0, 1.0) * 255).astype(np.intp)
    return colormap_lut(cmap)[idx]


def colorize(m: np.ndarray, cmap: str = "inferno", signed: bool = False) -> Image.Image:
    """Paint a [H, W] map with values in [0, 1] ([-1, 1] when ``signed``) as an RGB image."""
    m = np.asarray(m)
    if m.ndim != 2:
        raise GigError(f"a map to colour must be 2-D, got shape {list(m.shape)}")
    return Image.fromarray(_map_colors(m, cmap, signed))


def resize_map(m: np.ndarray, size: tuple[int, int], signed: bool = False) -> np.ndarray:
    """Resize a [H, W] map to PIL ``size`` (W, H) bilinearly in value space, clipped to [0, 1] ([-1, 1] if signed)."""
    lo = -1.0 if signed else 0.0
    m = np.clip(np.nan_to_num(np.asarray(m, dtype=np.float32)), lo, 1.0)
    if (m.shape[1], m.shape[0]) == tuple(size):
        return m
    out = Image.fromarray(m).resize(tuple(size), Image.Resampling.BILINEAR)
    return np.clip(np.asarray(out, dtype=np.float32), lo, 1.0)


def overlay(photo: Image.Image, m: np.ndarray, cmap: str = "inferno", alpha: float = DEFAULT_ALPHA,
            signed: bool = False) -> Image.Image:
    """Blend the colour map onto the photo with per-pixel opacity alpha*|m|, so where the map is low the photo shows."""
    base = np.asarray(photo.convert("RGB"), dtype=np.float64)
    v = resize_map(m, photo.size, signed).astype(np.float64)
    a = (float(np.clip(alpha, 0.0, 1.0)) * np.abs(v))[..., None]
    out = base * (1.0 - a) + _map_colors(v, cmap, signed).astype(np.float64) * a
    return Image.fromarray(np.clip(np.rint(out), 0, 255).astype(np.uint8))


# --------------------------------------------------------------------------- figure


@functools.lru_cache(maxsize=None)
def _font(size: int) -> ImageFont.ImageFont | ImageFont.FreeTypeFont:
    """PIL's built-in font at ``size`` where this Pillow supports it, else the fixed bitmap font."""
    try:
        return ImageFont.load_default(size=size)
    except (TypeError, OSError, AttributeError, ImportError):
        return ImageFont.load_default()


def _text_height(font: ImageFont.ImageFont | ImageFont.FreeTypeFont) -> int:
    """Height of a line of text (ascender to descender) in pixels."""
    box = font.getbbox("Ag")
    return int(box[3]) + 1


def panel_size(base: tuple[int, int]) -> tuple[int, int]:
    """Scale a (W, H) size so the short side is at least PANEL_MIN and, if possible, the long side at most PANEL_MAX."""
    w, h = max(1, base[0]), max(1, base[1])
    s = 1.0
    if max(w, h) > PANEL_MAX:
        s = PANEL_MAX / max(w, h)
    s = max(s, PANEL_MIN / min(w, h))
    return max(PANEL_MIN, round(w * s)), max(PANEL_MIN, round(h * s))


def _fit_text(draw: ImageDraw.ImageDraw, text: str, font, width: int) -> str:
    """Shorten ``text`` with an ellipsis so it fits in ``width`` pixels."""
    if draw.textlength(text, font=font) <= width:
        return text
    while text and draw.textlength(text + "...", font=font) > width:
        text = text[:-1]
    return text.rstrip() + "..."


def colorbar(width: int, height: int = BAR_HEIGHT, cmap: str = "inferno", signed: bool = False) -> Image.Image:
    """A horizontal 0 -> 1 colour bar (-1 -> 1 when ``signed``) of the given size."""
    ramp = np.linspace(-1.0 if signed else 0.0, 1.0, max(1, width), dtype=np.float64)[None, :]
    ramp = ramp.repeat(max(1, height), axis=0)
    return colorize(ramp, cmap, signed)


MAP_LABELS = {"absolute": "saliency", "positive": "positive attribution", "negative": "negative attribution",
              "all": "attribution"}
# how a signed map's colours run from -1 to 1, per colour map (inferno and viridis grow lighter throughout)
SIGNED_COLORS = {"rdbu": "blue < 0 < red", "inferno": "dark < 0 < bright", "viridis": "dark < 0 < bright"}


def map_label(sign: str, cmap: str) -> str:
    """The caption under the map panel; a signed map's names the colours of ``cmap`` on either side of 0."""
    if sign != "all":
        return MAP_LABELS[sign]
    return f"{MAP_LABELS[sign]} ({SIGNED_COLORS.get(cmap, '-1 .. 0 .. 1')})"


def render_figure(photo: Image.Image | None, m: np.ndarray, title: str = "", cmap: str | None = None,
                  sign: str = "absolute", alpha: float = DEFAULT_ALPHA) -> Image.Image:
    """Side-by-side panels (photo, map with its colour bar, overlay) under a one-line caption.

    ``m`` is a map from :func:`saliency_map` with the same ``sign``: [0, 1], or [-1, 1] for ``all`` (drawn
    with a diverging map, default rdbu, white at 0). The overlay's opacity is ``alpha`` times |m|, so the
    photo shows through where the map is low. Without a photo the second panel shows the map over white.
    """
    check_map_options(100.0, sign, alpha, cmap)
    cmap = cmap or default_cmap(sign)
    signed = sign == "all"
    m = np.asarray(m, dtype=np.float32)
    if m.ndim != 2:
        raise GigError(f"a map to draw must be 2-D, got shape {list(m.shape)}")
    base = photo.size if photo is not None else (m.shape[1], m.shape[0])
    pw, ph = panel_size(base)
    mp = resize_map(m, (pw, ph), signed)
    shown_map = (colorize(mp, cmap, signed), map_label(sign, cmap))
    panels: list[tuple[Image.Image, str]] = []
    if photo is not None:
        shown = _fit_photo(photo, (pw, ph))
        panels += [(shown, "input"), shown_map, (overlay(shown, mp, cmap, alpha, signed), "overlay")]
    else:
        blank = Image.new("RGB", (pw, ph), (255, 255, 255))
        panels += [shown_map, (overlay(blank, mp, cmap, 1.0, signed), "on white (no photo)")]
    return _compose(panels, title, cmap, signed, bar_panel=1 if photo is not None else 0)


def _fit_photo(photo: Image.Image, size: tuple[int, int]) -> Image.Image:
    """The photo as RGB at panel ``size`` (W, H), resized bilinearly only when needed."""
    rgb = photo.convert("RGB")
    return rgb if rgb.size == size else rgb.resize(size, Image.Resampling.BILINEAR)


def _compose(panels: Sequence[tuple[Image.Image, str]], title: str, cmap: str, signed: bool = False,
             bar_panel: int = 1) -> Image.Image:
    """Lay panels out in a row with caption, the colour bar under panel ``bar_panel`` and labels under all."""
    pw, ph = panels[0][0].size
    title_font, label_font = _font(16), _font(12)
    title_h = _text_height(title_font) + GUTTER if title else 0
    label_h = _text_height(label_font)
    below = 6 + BAR_HEIGHT + 4 + label_h
    width = len(panels) * pw + (len(panels) + 1) * GUTTER
    height = GUTTER + title_h + ph + below + GUTTER
    fig = Image.new("RGB", (width, height), (255, 255, 255))
    draw = ImageDraw.Draw(fig)
    if title:
        draw.text((GUTTER, GUTTER), _fit_text(draw, title, title_font, width - 2 * GUTTER), fill=INK, font=title_font)
    top = GUTTER + title_h
    for i, (img, label) in enumerate(panels):
        left = GUTTER + i * (pw + GUTTER)
        fig.paste(img, (left, top))
        _draw_under(fig, draw, label, label_font, left, top + ph, pw, cmap if i == bar_panel else None, signed)
    return fig


def _draw_under(fig: Image.Image, draw: ImageDraw.ImageDraw, label: str, font, left: int, y: int, pw: int,
                cmap: str | None, signed: bool = False) -> None:
    """Draw the colour bar with its ticks (when ``cmap`` is given) and the panel's label beneath it."""
    text_y = y + 6 + BAR_HEIGHT + 4
    ft = _is_ft(font)
    if cmap is not None:
        fig.paste(colorbar(pw, BAR_HEIGHT, cmap, signed), (left, y + 6))
        draw.rectangle((left, y + 6, left + pw - 1, y + 6 + BAR_HEIGHT - 1), outline=(200, 200, 200))
        draw.text((left, text_y), "-1" if signed else "0", fill=INK, font=font)
        draw.text((left + pw, text_y), "1", fill=INK, font=font, anchor="ra" if ft else None)
        if signed:
            draw.text((left + pw / 2, y + 6), "|", fill=INK, font=font, anchor="ma" if ft else None)
    if label:
        draw.text((left + pw / 2, text_y), label, fill=INK, font=font, anchor="ma" if ft else None)


def _is_ft(font) -> bool:
    """Whether the font supports text anchors (FreeType fonts do, the bitmap fallback does not)."""
    return isinstance(font, ImageFont.FreeTypeFont)


# --------------------------------------------------------------------------- output


# zlib level 1 for every figure written or served: a photo-and-heatmap figure compresses 6 % worse than at
# PIL's default 6, in a third of the time (12 against 32 ms for a 704x304 figure; 2-3 % of a folder run)
PNG_LEVEL = 1


def png_bytes(img: Image.Image) -> bytes:
    """``img`` encoded as PNG in memory, as ``save_png`` writes it (what Ray actors, the server and the viewer send)."""
    buf = io.BytesIO()
    img.save(buf, format="PNG", compress_level=PNG_LEVEL)
    return buf.getvalue()


def save_png(img: Image.Image, path: str | os.PathLike, protect: Iterable[str | os.PathLike] = ()) -> None:
    """Write ``img`` as PNG atomically (complete or absent), never over a protected input file."""
    try:
        with atomic_path(path, protect=protect) as tmp:
            img.save(tmp, format="PNG", compress_level=PNG_LEVEL)
    except GigError:
        raise
    except (OSError, ValueError) as e:
        raise GigError(f"cannot write PNG {path}: {e}") from None
