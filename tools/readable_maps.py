#!/usr/bin/env python3
"""The README's before/after of the map scaling, and how much of the map each scaling leaves near black.

    python tools/readable_maps.py    # writes docs/readable_maps.png and docs/chelsea_gig.png, prints the fractions

Explains the shipped cat photo with the shipped MobileNetV2 (GNL-IG, 50 Gauss-Legendre steps, zero
baseline) once, then draws the same attributions three ways: the authors' |sum|/max (--clip-percentile 100),
the default (clipped at the 99th percentile), and --sign all (signed, diverging colours). The README's hero
figure is the default figure ``onnx-gig explain`` draws. Both are saved with a 256-colour palette (docs only).
"""
from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import numpy as np
from PIL import Image

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from onnx_gig import ExplainOptions, GigModel, convert  # noqa: E402
from onnx_gig.batch import explain_arrays  # noqa: E402
from onnx_gig.api import figure_title  # noqa: E402
from onnx_gig.heatmap import render_figure, save_png, saliency_map  # noqa: E402


def below(m: np.ndarray, level: float = 0.1) -> float:
    """Fraction of pixels whose |map| is below ``level`` of the colour scale."""
    return float((np.abs(m) < level).mean())


def _small(img: Image.Image) -> Image.Image:
    """A 256-colour palette version: a third of the bytes, no visible change at README size."""
    return img.quantize(256, method=Image.Quantize.FASTOCTREE)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--image", default=str(ROOT / "models/images/chelsea.png"))
    ap.add_argument("--out", default=str(ROOT / "docs/readable_maps.png"))
    ap.add_argument("--hero", default=str(ROOT / "docs/chelsea_gig.png"))
    ap.add_argument("--steps", type=int, default=50)
    a = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        gm = GigModel(convert(ROOT / "models/mobilenet_v2.onnx", Path(tmp) / "m_gig.onnx").path)
        (r,) = explain_arrays(gm, [(0, a.image)], ExplainOptions(steps=a.steps))
    if r.error:
        raise SystemExit(f"{a.image}: {r.error}")
    rows = []
    for clip, sign, what in ((100.0, "absolute", "before: |sum| / max (--clip-percentile 100)"),
                             (99.0, "absolute", "after: clipped at the 99th percentile (default)"),
                             (99.0, "all", "--sign all: signed, blue < 0 < red")):
        m = saliency_map(r.attributions, r.layout, clip, sign)
        frac = below(m)
        print(f"clip {clip:g}, sign {sign}: {frac:.1%} of pixels below 0.1 of the scale")
        title = f"{what}; {frac:.1%} of pixels < 0.1"
        rows.append(render_figure(r.photo, m, title, None, sign))
    hero = render_figure(r.photo, saliency_map(r.attributions, r.layout),
                         figure_title(r.label, r.probability, r.method, a.steps, "gausslegendre", "zeros"))
    save_png(_small(hero), a.hero)
    print(f"wrote {a.hero}")
    fig = Image.new("RGB", (max(f.width for f in rows), sum(f.height for f in rows)), (255, 255, 255))
    y = 0
    for f in rows:
        fig.paste(f, (0, y))
        y += f.height
    save_png(_small(fig), a.out)
    print(f"wrote {a.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
