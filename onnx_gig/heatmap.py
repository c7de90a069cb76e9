"""Pictures of attributions: saliency maps, perceptual colour maps, overlays and a figure, without matplotlib."""
from __future__ import annotations

import functools
import os
from typing import Sequence

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from .errors import GigError, InputError
from .fileio import atomic_path

PANEL_MIN = 224  # smallest panel side in render_figure
PANEL_MAX = 512  # panels of bigger photos are shrunk to this long side (but never below PANEL_MIN)
GUTTER = 8  # white space around and between panels
BAR_HEIGHT = 10  # colour bar under the map panel
INK = (34, 34, 34)

# 32 sRGB control points sampled evenly (0..1) from matplotlib's perceptually uniform maps.
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
}
CMAPS = tuple(_CONTROL_POINTS)


# --------------------------------------------------------------------------- maps


def saliency_map(attr: np.ndarray, layout: str = "NCHW") -> np.ndarray:
    """The authors' map: |sum of attribution over channels| / its max, [H, W] float32 in [0, 1]."""
    a = np.asarray(attr, dtype=np.float64)
    if a.ndim == 4 and a.shape[0] == 1:
        a = a[0]
    if a.ndim == 3:
        a = a.sum(axis=0 if layout.upper() == "NCHW" else -1)
    if a.ndim != 2:
        raise GigError(f"attribution must be [C,H,W], [H,W,C] or [H,W] (batch 1 optional), got shape {list(a.shape)}")
    if not np.isfinite(a).all():
        raise GigError("attribution contains NaN or infinite values; cannot draw a saliency map")
    return normalize_map(np.abs(a))


def normalize_map(m: np.ndarray) -> np.ndarray:
    """Scale a non-negative map by its max into [0, 1]; an all-zero map stays all zero."""
    m = np.asarray(m, dtype=np.float64)
    top = float(m.max(initial=0.0))
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


def _map_colors(m: np.ndarray, cmap: str) -> np.ndarray:
    """Look up HxWx3 uint8 colours for map values in [0, 1] (out-of-range clipped, NaN as 0)."""
    idx = np.rint(np.clip(np.nan_to_num(np.asarray(m, dtype=np.float64)), 0.0, 1.0) * 255).astype(np.intp)
    return colormap_lut(cmap)[idx]


def colorize(m: np.ndarray, cmap: str = "inferno") -> Image.Image:
    """Paint a [H, W] map with values in [0, 1] as an RGB image using a perceptual colour map."""
    m = np.asarray(m)
    if m.ndim != 2:
        raise GigError(f"a map to colour must be 2-D, got shape {list(m.shape)}")
    return Image.fromarray(_map_colors(m, cmap))


def resize_map(m: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Resize a [H, W] map to PIL ``size`` (W, H) bilinearly in value space, clipped to [0, 1]."""
    m = np.clip(np.nan_to_num(np.asarray(m, dtype=np.float32)), 0.0, 1.0)
    if (m.shape[1], m.shape[0]) == tuple(size):
        return m
    out = Image.fromarray(m).resize(tuple(size), Image.Resampling.BILINEAR)
    return np.clip(np.asarray(out, dtype=np.float32), 0.0, 1.0)


def overlay(photo: Image.Image, m: np.ndarray, cmap: str = "inferno", alpha: float = 0.6) -> Image.Image:
    """Blend the colour map onto the photo with per-pixel opacity alpha*m, so cold regions show the photo."""
    base = np.asarray(photo.convert("RGB"), dtype=np.float64)
    v = resize_map(m, photo.size).astype(np.float64)
    a = (float(np.clip(alpha, 0.0, 1.0)) * v)[..., None]
    out = base * (1.0 - a) + _map_colors(v, cmap).astype(np.float64) * a
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


def colorbar(width: int, height: int = BAR_HEIGHT, cmap: str = "inferno") -> Image.Image:
    """A horizontal 0 -> 1 colour bar of the given size."""
    ramp = np.linspace(0.0, 1.0, max(1, width), dtype=np.float64)[None, :].repeat(max(1, height), axis=0)
    return colorize(ramp, cmap)


def render_figure(photo: Image.Image | None, m: np.ndarray, title: str = "", cmap: str = "inferno") -> Image.Image:
    """Side-by-side panels (photo, map with a 0-1 colour bar, overlay) under a one-line caption.

    Without a photo the second panel shows the map over white, so low saliency fades out as in the overlay.
    """
    m = np.asarray(m, dtype=np.float32)
    if m.ndim != 2:
        raise GigError(f"a map to draw must be 2-D, got shape {list(m.shape)}")
    base = photo.size if photo is not None else (m.shape[1], m.shape[0])
    pw, ph = panel_size(base)
    mp = resize_map(m, (pw, ph))
    panels: list[tuple[Image.Image, str]] = []
    if photo is not None:
        shown = _fit_photo(photo, (pw, ph))
        panels += [(shown, "input"), (colorize(mp, cmap), "saliency")]
        panels.append((overlay(shown, mp, cmap), "overlay"))
    else:
        blank = Image.new("RGB", (pw, ph), (255, 255, 255))
        panels += [(colorize(mp, cmap), "saliency"), (overlay(blank, mp, cmap, alpha=1.0), "on white (no photo)")]
    return _compose(panels, title, cmap)


def _fit_photo(photo: Image.Image, size: tuple[int, int]) -> Image.Image:
    """The photo as RGB at panel ``size`` (W, H), resized bilinearly only when needed."""
    rgb = photo.convert("RGB")
    return rgb if rgb.size == size else rgb.resize(size, Image.Resampling.BILINEAR)


def _compose(panels: Sequence[tuple[Image.Image, str]], title: str, cmap: str) -> Image.Image:
    """Lay panels out in a row with caption, colour bar under the 'saliency' panel and labels under the rest."""
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
        _draw_under(fig, draw, label, label_font, left, top + ph, pw, cmap)
    return fig


def _draw_under(
    fig: Image.Image, draw: ImageDraw.ImageDraw, label: str, font, left: int, y: int, pw: int, cmap: str
) -> None:
    """Draw the colour bar with 0/1 ticks (for the map panel) and the panel's label beneath it."""
    text_y = y + 6 + BAR_HEIGHT + 4
    if label == "saliency":
        fig.paste(colorbar(pw, BAR_HEIGHT, cmap), (left, y + 6))
        draw.rectangle((left, y + 6, left + pw - 1, y + 6 + BAR_HEIGHT - 1), outline=(200, 200, 200))
        draw.text((left, text_y), "0", fill=INK, font=font)
        draw.text((left + pw, text_y), "1", fill=INK, font=font, anchor="ra" if _is_ft(font) else None)
    if label:
        draw.text((left + pw / 2, text_y), label, fill=INK, font=font, anchor="ma" if _is_ft(font) else None)


def _is_ft(font) -> bool:
    """Whether the font supports text anchors (FreeType fonts do, the bitmap fallback does not)."""
    return isinstance(font, ImageFont.FreeTypeFont)


# --------------------------------------------------------------------------- output


def save_png(img: Image.Image, path: str | os.PathLike, protect: Sequence[str | os.PathLike] = ()) -> None:
    """Write ``img`` as PNG atomically (complete or absent), never over a protected input file."""
    try:
        with atomic_path(path, protect=tuple(protect)) as tmp:
            img.save(tmp, format="PNG")
    except GigError:
        raise
    except (OSError, ValueError) as e:
        raise GigError(f"cannot write PNG {path}: {e}") from None
