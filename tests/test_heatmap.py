"""Tests for onnx_gig.heatmap: maps, colour, figures and atomic PNG output."""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from onnx_gig.errors import GigError, InputError
from onnx_gig.heatmap import (
    CMAPS,
    GUTTER,
    PANEL_MIN,
    colorize,
    colormap_lut,
    overlay,
    render_figure,
    saliency_map,
    save_png,
)


def relative_luminance(rgb: np.ndarray) -> np.ndarray:
    """WCAG/sRGB relative luminance of uint8 colours."""
    c = rgb.astype(np.float64) / 255.0
    lin = np.where(c <= 0.04045, c / 12.92, ((c + 0.055) / 1.055) ** 2.4)
    return lin @ np.array([0.2126, 0.7152, 0.0722])


def photo(size: tuple[int, int] = (224, 224)) -> Image.Image:
    """A synthetic RGB gradient photo of PIL size (W, H)."""
    w, h = size
    yy, xx = np.mgrid[0:h, 0:w]
    a = np.stack([xx * 255 // max(1, w - 1), yy * 255 // max(1, h - 1), np.full_like(xx, 128)], axis=-1)
    return Image.fromarray(a.astype(np.uint8))


def blob(h: int = 224, w: int = 224) -> np.ndarray:
    """A Gaussian blob map in [0, 1]."""
    yy, xx = np.mgrid[0:h, 0:w]
    return np.exp(-((yy - h / 3) ** 2 + (xx - w / 2) ** 2) / (2 * (h / 8) ** 2)).astype(np.float32)


# --------------------------------------------------------------------------- saliency_map


def test_saliency_map_hand_computation() -> None:
    attr = np.array([[[1.0, -2.0], [3.0, 0.0]], [[1.0, 1.0], [-5.0, 0.0]]])  # [C=2, H=2, W=2]
    # channel sum [[2, -1], [-2, 0]] -> abs [[2, 1], [2, 0]] -> / 2
    want = np.array([[1.0, 0.5], [1.0, 0.0]], dtype=np.float32)
    m = saliency_map(attr, "NCHW")
    assert m.dtype == np.float32 and m.shape == (2, 2)
    np.testing.assert_array_equal(m, want)
    np.testing.assert_array_equal(saliency_map(attr.transpose(1, 2, 0), "NHWC"), want)
    np.testing.assert_array_equal(saliency_map(attr[None], "NCHW"), want)


def test_saliency_map_range_on_random() -> None:
    m = saliency_map(np.random.default_rng(0).normal(size=(3, 16, 16)))
    assert m.min() >= 0.0 and m.max() == pytest.approx(1.0)


def test_saliency_map_all_zero_is_safe() -> None:
    m = saliency_map(np.zeros((3, 5, 4)))
    assert m.shape == (5, 4) and not m.any() and np.isfinite(m).all()


def test_saliency_map_rejects_nan_and_bad_rank() -> None:
    a = np.zeros((3, 4, 4))
    a[0, 0, 0] = np.nan
    with pytest.raises(GigError):
        saliency_map(a)
    with pytest.raises(GigError):
        saliency_map(np.zeros((2, 3, 4, 4)))


# --------------------------------------------------------------------------- colour maps


@pytest.mark.parametrize("cmap", ["inferno", "viridis"])
def test_colorize_endpoints(cmap: str) -> None:
    img = colorize(np.array([[0.0, 1.0]], dtype=np.float32), cmap)
    assert img.mode == "RGB" and img.size == (2, 1)
    lut = colormap_lut(cmap)
    assert img.getpixel((0, 0)) == tuple(lut[0]) and img.getpixel((1, 0)) == tuple(lut[-1])


def test_known_endpoint_colours() -> None:
    assert tuple(colormap_lut("inferno")[0]) == (0, 0, 4) and tuple(colormap_lut("inferno")[-1]) == (252, 255, 164)
    assert tuple(colormap_lut("viridis")[0]) == (68, 1, 84) and tuple(colormap_lut("viridis")[-1]) == (253, 231, 37)


@pytest.mark.parametrize("cmap", ["inferno", "viridis"])
def test_colormap_monotone_in_luminance(cmap: str) -> None:
    lut = colormap_lut(cmap)
    assert lut.shape == (256, 3) and lut.dtype == np.uint8
    y = relative_luminance(lut)
    # 8-bit rounding may wobble by far less than one code value (matplotlib's own 256-entry viridis does too)
    assert np.diff(y).min() > -1e-3
    coarse = relative_luminance(np.asarray(colorize(np.linspace(0, 1, 17)[None], cmap))[0])
    assert (np.diff(coarse) > 0).all()


def test_colorize_clips_and_handles_nan() -> None:
    img = colorize(np.array([[-1.0, 2.0, np.nan]]))
    lut = colormap_lut("inferno")
    assert [img.getpixel((i, 0)) for i in range(3)] == [tuple(lut[0]), tuple(lut[-1]), tuple(lut[0])]


def test_unknown_cmap() -> None:
    with pytest.raises(InputError) as e:
        colorize(np.zeros((2, 2)), "jet")
    for name in CMAPS:
        assert name in str(e.value)


# --------------------------------------------------------------------------- overlay and figure


def test_overlay_zero_map_shows_photo_and_full_map_shows_colour() -> None:
    p = photo((40, 30))
    assert np.array_equal(np.asarray(overlay(p, np.zeros((30, 40)))), np.asarray(p))
    top = np.asarray(overlay(p, np.ones((30, 40)), alpha=1.0))
    assert (top == colormap_lut("inferno")[-1]).all()


def test_overlay_resizes_map_to_photo() -> None:
    p = photo((64, 48))
    m = np.zeros((8, 8), np.float32)
    m[:, 4:] = 1.0  # right half hot
    out = np.asarray(overlay(p, m, alpha=1.0)).astype(int)
    assert out.shape == (48, 64, 3)
    assert np.array_equal(out[:, :20], np.asarray(p)[:, :20])
    assert (out[:, 48:] == colormap_lut("inferno")[-1]).all()


def test_render_figure_three_panels() -> None:
    fig = render_figure(photo(), blob(), title="class 207: golden retriever (p=0.87)")
    assert fig.mode == "RGB"
    assert fig.width == 3 * PANEL_MIN + 4 * GUTTER
    assert fig.height > PANEL_MIN
    a = np.asarray(fig)
    assert (a[:, :GUTTER] == 255).all() and (a[:, -GUTTER:] == 255).all()  # white outer gutters


def test_render_figure_without_photo_has_two_panels() -> None:
    fig = render_figure(None, blob(), title="")
    assert fig.mode == "RGB" and fig.width == 2 * PANEL_MIN + 3 * GUTTER


def test_render_figure_small_and_non_square_inputs() -> None:
    fig = render_figure(photo((32, 32)), blob(32, 32), title="tiny")
    assert fig.width == 3 * PANEL_MIN + 4 * GUTTER  # panels are enlarged to at least PANEL_MIN
    fig = render_figure(photo((300, 200)), blob(224, 224), title="wide " * 100)  # long title is shortened
    pw = (fig.width - 4 * GUTTER) // 3
    assert pw >= PANEL_MIN and fig.height >= PANEL_MIN


# --------------------------------------------------------------------------- save_png


def test_save_png_writes_valid_png_atomically(tmp_path: Path) -> None:
    img = render_figure(photo((32, 32)), blob(32, 32), title="t")
    dest = tmp_path / "out" / "fig.png"
    save_png(img, dest)
    with Image.open(dest) as back:
        assert back.format == "PNG" and back.size == img.size
        assert np.array_equal(np.asarray(back.convert("RGB")), np.asarray(img))
    assert os.listdir(dest.parent) == ["fig.png"]  # no temp file left behind


def test_save_png_failure_leaves_old_file(tmp_path: Path) -> None:
    dest = tmp_path / "fig.png"
    dest.write_bytes(b"old")
    unsavable = Image.fromarray(np.zeros((4, 4), np.float32))  # mode F cannot be written as PNG
    with pytest.raises(GigError) as e:
        save_png(unsavable, dest)
    assert "fig.png" in str(e.value)
    assert dest.read_bytes() == b"old" and os.listdir(tmp_path) == ["fig.png"]


def test_save_png_refuses_protected_input(tmp_path: Path) -> None:
    src = tmp_path / "photo.png"
    photo((8, 8)).save(src)
    before = src.read_bytes()
    with pytest.raises(InputError) as e:
        save_png(photo((16, 16)), src, protect=(src,))
    assert "photo.png" in str(e.value)
    assert src.read_bytes() == before and os.listdir(tmp_path) == ["photo.png"]


# --------------------------------------------------------------------------- clipping and sign


def test_clip_percentile_scales_by_the_percentile_of_the_shown_values() -> None:
    from onnx_gig.heatmap import DEFAULT_CLIP

    r = np.random.default_rng(1)
    s = r.uniform(-1.0, 1.0, size=(20, 30))
    s[3, 4] = 40.0  # one outlier carries the raw range, as on real photos
    attr = np.stack([s / 3] * 3)  # channel sum = s
    before = saliency_map(attr, clip_percentile=100)
    np.testing.assert_allclose(before, np.abs(s) / 40.0, rtol=1e-6)
    assert (before < 0.1).mean() > 0.99  # the unreadable map: all but the outlier near black
    after = saliency_map(attr)  # the default
    assert DEFAULT_CLIP == 99
    p99 = np.sort(np.abs(s).ravel())  # numpy's linear-interpolation percentile, by hand
    k = 0.99 * (p99.size - 1)
    scale = p99[int(k)] + (k - int(k)) * (p99[int(k) + 1] - p99[int(k)])
    np.testing.assert_allclose(after, np.minimum(np.abs(s) / scale, 1.0), rtol=1e-5)
    assert (after == 1.0).mean() <= 0.01 + 1 / s.size and (after < 0.1).mean() < 0.2


def test_sign_parts_and_signed_map() -> None:
    s = np.array([[-4.0, -1.0, 0.0], [1.0, 2.0, 8.0]])
    attr = s[None]  # one channel
    np.testing.assert_allclose(saliency_map(attr, clip_percentile=100, sign="positive"), np.maximum(s, 0) / 8)
    np.testing.assert_allclose(saliency_map(attr, clip_percentile=100, sign="negative"), np.maximum(-s, 0) / 4)
    signed = saliency_map(attr, clip_percentile=100, sign="all")
    np.testing.assert_allclose(signed, s / 8)
    np.testing.assert_array_equal(saliency_map(-attr, sign="all"), -saliency_map(attr, sign="all"))
    assert saliency_map(attr, sign="all").min() >= -1 and saliency_map(attr, sign="all").max() <= 1
    # a part that is zero on more than (100 - P) % of the pixels is scaled by its max, not divided by 0
    rare = np.ones((10, 20))
    rare[2, 3] = -3.0
    neg = saliency_map(rare[None], sign="negative")
    assert neg[2, 3] == 1.0 and np.count_nonzero(neg) == 1
    for bad in (0, -1, 101, float("nan"), True):
        with pytest.raises(InputError):
            saliency_map(attr, clip_percentile=bad)
    with pytest.raises(InputError):
        saliency_map(attr, sign="both")


def test_signed_figure_uses_a_diverging_map_with_white_at_zero() -> None:
    from onnx_gig.heatmap import default_cmap

    assert default_cmap("all") == "rdbu" and default_cmap("absolute") == "inferno"
    lut = colormap_lut("rdbu")
    assert lut[0, 2] > lut[0, 0] and lut[-1, 0] > lut[-1, 2]  # blue end, red end
    assert min(lut[127]) > 235 and min(lut[128]) > 235  # near white in the middle
    m = np.zeros((224, 224), np.float32)
    m[:, :74] = -1.0
    m[:, 150:] = 1.0
    fig = np.asarray(render_figure(photo(), m, title="", sign="all"))
    top = GUTTER
    left = GUTTER + PANEL_MIN + GUTTER  # the map panel
    panel = fig[top:top + PANEL_MIN, left:left + PANEL_MIN].astype(int)
    np.testing.assert_array_equal(panel[100, 10], lut[0])
    np.testing.assert_array_equal(panel[100, 112], lut[128])  # 0 -> the middle of the table
    np.testing.assert_array_equal(panel[100, 200], lut[-1])
    over = fig[top:top + PANEL_MIN, left + PANEL_MIN + GUTTER:left + 2 * PANEL_MIN + GUTTER]
    np.testing.assert_array_equal(over[:, 80:140], np.asarray(photo())[:, 80:140])  # 0: the photo shows


def test_overlay_alpha_sets_the_opacity_where_the_map_is_high() -> None:
    p = photo((10, 10))
    full = np.ones((10, 10))
    half = np.asarray(overlay(p, full, alpha=0.5)).astype(float)
    want = 0.5 * np.asarray(p).astype(float) + 0.5 * colormap_lut("inferno")[-1]
    assert np.abs(half - want).max() <= 0.5 + 1e-9
    assert np.array_equal(np.asarray(overlay(p, full, alpha=0.0)), np.asarray(p))
    with pytest.raises(InputError):
        render_figure(p, full, alpha=1.5)
