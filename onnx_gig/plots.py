"""Small line charts drawn with Pillow (no matplotlib): axes, ticks, grid, labels and a legend.

Drawn at twice the size and downsampled, so lines and text are anti-aliased.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Optional, Sequence

from PIL import Image, ImageDraw

from .heatmap import INK, _font

# matplotlib's 'tab10' colours: distinct, and readable by most colour-blind viewers
PALETTE = ((31, 119, 180), (255, 127, 14), (44, 160, 44), (214, 39, 40), (148, 103, 189), (140, 86, 75),
           (227, 119, 194), (127, 127, 127), (188, 189, 34), (23, 190, 207))
GRID = (228, 228, 228)
FRAME = (110, 110, 110)
SS = 2  # supersampling factor


@dataclass
class Series:
    """One line: ``y`` against ``x``, named ``label`` in the legend."""

    label: str
    x: Sequence[float]
    y: Sequence[float]
    color: Optional[tuple[int, int, int]] = None
    markers: bool = False


def nice_ticks(lo: float, hi: float, n: int = 5) -> list[float]:
    """About ``n`` round tick values (1, 2, 2.5 or 5 times a power of ten) covering [lo, hi]."""
    if not (math.isfinite(lo) and math.isfinite(hi)):
        return [0.0, 1.0]
    if hi <= lo:
        hi = lo + 1.0
    raw = (hi - lo) / max(1, n)
    mag = 10 ** math.floor(math.log10(raw))
    step = next(m * mag for m in (1, 2, 2.5, 5, 10) if m * mag >= raw)
    first = math.ceil(lo / step - 1e-9) * step
    ticks = [first + i * step for i in range(int((hi - first) / step + 1e-9) + 1)]
    return [round(t, 12) for t in ticks]


def _fmt(v: float) -> str:
    return f"{v:.3g}" if abs(v) >= 1e-12 else "0"


def _text_size(draw: ImageDraw.ImageDraw, text: str, font) -> tuple[int, int]:
    box = draw.textbbox((0, 0), text, font=font)
    return int(box[2] - box[0]), int(box[3] - box[1])


def line_chart(series: Sequence[Series], *, title: str = "", xlabel: str = "", ylabel: str = "",
               xlim: Optional[tuple[float, float]] = None, ylim: Optional[tuple[float, float]] = None,
               xticks: Optional[Sequence[tuple[float, str]]] = None, legend: str = "upper right",
               size: tuple[int, int] = (560, 400)) -> Image.Image:
    """A line chart of ``series``; ``legend`` is 'upper right', 'lower right', 'upper left', 'lower left',
    'right' (outside the axes) or 'none'."""
    w, h = size[0] * SS, size[1] * SS
    f_title, f_label, f_tick = _font(15 * SS), _font(13 * SS), _font(11 * SS)
    probe = ImageDraw.Draw(Image.new("RGB", (1, 1)))
    xs = [float(v) for s in series for v in s.x if math.isfinite(float(v))]
    ys = [float(v) for s in series for v in s.y if math.isfinite(float(v))]
    x0, x1 = xlim if xlim else ((min(xs), max(xs)) if xs else (0.0, 1.0))
    y0, y1 = ylim if ylim else ((min(ys), max(ys)) if ys else (0.0, 1.0))
    if x1 <= x0:
        x0, x1 = x0 - 0.5, x1 + 0.5
    if y1 <= y0:
        y0, y1 = y0 - 0.5, y1 + 0.5
    yt = [t for t in nice_ticks(y0, y1) if y0 - 1e-9 <= t <= y1 + 1e-9]
    xt = list(xticks) if xticks is not None else [(t, _fmt(t)) for t in nice_ticks(x0, x1)
                                                     if x0 - 1e-9 <= t <= x1 + 1e-9]

    legend_w = 0
    colors = [s.color or PALETTE[i % len(PALETTE)] for i, s in enumerate(series)]
    if legend == "right" and series:
        legend_w = max(_text_size(probe, s.label, f_label)[0] for s in series) + 48 * SS
    tick_w = max((_text_size(probe, _fmt(t), f_tick)[0] for t in yt), default=0)
    left = 14 * SS + (_text_size(probe, ylabel, f_label)[1] + 10 * SS if ylabel else 0) + tick_w + 8 * SS
    top = 12 * SS + (_text_size(probe, title, f_title)[1] + 12 * SS if title else 0)
    bottom = 12 * SS + _text_size(probe, "0", f_tick)[1] + 8 * SS + (_text_size(probe, xlabel, f_label)[1] + 10 * SS
                                                                    if xlabel else 0)
    right = 16 * SS + legend_w
    img = Image.new("RGB", (w + legend_w, h), (255, 255, 255))
    d = ImageDraw.Draw(img)
    ax = (left, top, w + legend_w - right, h - bottom)

    def px(x: float) -> float:
        return ax[0] + (x - x0) / (x1 - x0) * (ax[2] - ax[0])

    def py(y: float) -> float:
        return ax[3] - (y - y0) / (y1 - y0) * (ax[3] - ax[1])

    for t in yt:
        d.line([(ax[0], py(t)), (ax[2], py(t))], fill=GRID, width=SS)
        tw, th = _text_size(d, _fmt(t), f_tick)
        d.text((ax[0] - 6 * SS - tw, py(t) - th / 2 - 2 * SS), _fmt(t), fill=INK, font=f_tick)
    for t, label in xt:
        d.line([(px(t), ax[1]), (px(t), ax[3])], fill=GRID, width=SS)
        tw, _ = _text_size(d, label, f_tick)
        d.text((px(t) - tw / 2, ax[3] + 6 * SS), label, fill=INK, font=f_tick)
    d.rectangle(ax, outline=FRAME, width=SS)

    for s, c in zip(series, colors):
        pts = [(px(float(a)), py(float(b))) for a, b in zip(s.x, s.y) if math.isfinite(float(b))]
        if len(pts) > 1:
            d.line(pts, fill=c, width=3 * SS, joint="curve")
        if s.markers or len(pts) == 1:
            r = 4 * SS
            for x, y in pts:
                d.ellipse((x - r, y - r, x + r, y + r), fill=c)

    if title:
        tw, _ = _text_size(d, title, f_title)
        d.text(((ax[0] + ax[2]) / 2 - tw / 2, 10 * SS), title, fill=INK, font=f_title)
    if xlabel:
        tw, th = _text_size(d, xlabel, f_label)
        d.text(((ax[0] + ax[2]) / 2 - tw / 2, h - 10 * SS - th - 2 * SS), xlabel, fill=INK, font=f_label)
    if ylabel:
        tw, th = _text_size(d, ylabel, f_label)
        lab = Image.new("RGB", (tw + 4 * SS, th + 8 * SS), (255, 255, 255))
        ImageDraw.Draw(lab).text((2 * SS, 0), ylabel, fill=INK, font=f_label)
        lab = lab.rotate(90, expand=True)
        img.paste(lab, (10 * SS, int((ax[1] + ax[3]) / 2 - lab.height / 2)))
    if legend != "none" and series:
        _legend(d, series, colors, f_label, ax, legend)
    return img.resize((img.width // SS, img.height // SS), Image.Resampling.LANCZOS)


def _legend(d: ImageDraw.ImageDraw, series: Sequence[Series], colors, font, ax, where: str) -> None:
    line_h = _text_size(d, "Ag", font)[1] + 8 * SS
    text_w = max(_text_size(d, s.label, font)[0] for s in series)
    bw, bh = text_w + 40 * SS, line_h * len(series) + 8 * SS
    pad = 8 * SS
    if where == "right":
        bx, by = ax[2] + 12 * SS, ax[1]
    else:
        bx = ax[0] + pad if "left" in where else ax[2] - pad - bw
        by = ax[1] + pad if "upper" in where else ax[3] - pad - bh
        d.rectangle((bx, by, bx + bw, by + bh), fill=(255, 255, 255), outline=(200, 200, 200), width=SS)
    for i, (s, c) in enumerate(zip(series, colors)):
        y = by + 4 * SS + i * line_h + line_h / 2
        d.line([(bx + 8 * SS, y), (bx + 28 * SS, y)], fill=c, width=3 * SS)
        th = _text_size(d, s.label, font)[1]
        d.text((bx + 34 * SS, y - th / 2 - 3 * SS), s.label, fill=INK, font=font)


def hstack(images: Sequence[Image.Image], gap: int = 8) -> Image.Image:
    """Images side by side on white, top-aligned."""
    width = sum(i.width for i in images) + gap * (len(images) - 1)
    out = Image.new("RGB", (width, max(i.height for i in images)), (255, 255, 255))
    x = 0
    for im in images:
        out.paste(im, (x, 0))
        x += im.width + gap
    return out


__all__ = ["PALETTE", "Series", "hstack", "line_chart", "nice_ticks"]
