"""Edges of what users give: an unreachable --ray address, a signed map drawn in any colour map, files they may
not read, 100-megapixel JPEGs and .jfif/.jpe photos. Real files, real subprocesses."""
from __future__ import annotations

import io
import os
import shutil
import socket
import struct
import subprocess
import sys
import time
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from onnx_gig.batch import collect_inputs
from onnx_gig.errors import InputError
from onnx_gig.heatmap import CMAPS, colormap_lut, map_label, render_figure
from onnx_gig.imageio import Preprocess, load_image, load_input

ROOT = Path(__file__).resolve().parents[1]
CAT = ROOT / "models" / "images" / "chelsea.png"


def run_cli(*args, prefix=(), timeout=120) -> subprocess.CompletedProcess:
    return subprocess.run([*prefix, sys.executable, "-m", "onnx_gig.cli", *map(str, args)], capture_output=True,
                          text=True, timeout=timeout, cwd=ROOT)


def one_error_line(p: subprocess.CompletedProcess) -> str:
    """The run's stderr, asserted to be exactly one onnx-gig error line with exit status 2."""
    lines = [ln for ln in p.stderr.splitlines() if ln.strip()]
    assert p.returncode == 2, p.stderr
    assert len(lines) == 1 and lines[0].startswith("onnx-gig: error: "), p.stderr
    return lines[0]


# --------------------------------------------------------------------------- --ray ADDRESS unreachable


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.parametrize("kind", ["closed-port", "unknown-host"])
def test_unreachable_ray_address_fails_fast_in_one_line(demo_gig, tmp_path, kind):
    address = f"127.0.0.1:{_free_port()}" if kind == "closed-port" else "no-such-host.invalid:6379"
    t0 = time.monotonic()
    p = run_cli("explain", demo_gig, CAT, "--ray", address, "--out-dir", tmp_path / "out", "--steps", 2)
    took = time.monotonic() - t0
    line = one_error_line(p)
    assert f"cannot connect to the Ray cluster at {address} (" in line
    assert ("nothing accepts connections" if kind == "closed-port" else "not found") in line
    assert took < 30, took
    assert not (tmp_path / "out").exists()


# --------------------------------------------------------------------------- the signed colour bar's label


def _luma(rgb) -> float:
    r, g, b = (float(c) for c in rgb)
    return 0.299 * r + 0.587 * g + 0.114 * b


@pytest.mark.parametrize("cmap", CMAPS)
def test_signed_label_describes_the_colour_maps_own_colours(cmap):
    """The words under a --sign all bar are checked against the colour table it is drawn with."""
    label = map_label("all", cmap)
    lut = colormap_lut(cmap)
    low, mid, high = lut[0], lut[128], lut[255]
    if "blue < 0 < red" in label:
        assert low[2] > low[0] and high[0] > high[2], (low, high)
    elif "dark < 0 < bright" in label:
        assert _luma(low) < _luma(mid) < _luma(high), (low, mid, high)
    else:
        assert "(-1 .. 0 .. 1)" in label and "blue" not in label and "red" not in label
    assert label.startswith("attribution (")


def test_inferno_signed_figure_says_no_blue_or_red():
    assert "blue" not in map_label("all", "inferno") and "red" not in map_label("all", "inferno")
    assert map_label("all", "rdbu") == "attribution (blue < 0 < red)"
    assert map_label("absolute", "inferno") == "saliency"
    m = np.linspace(-1, 1, 64 * 64, dtype=np.float32).reshape(64, 64)
    fig = render_figure(Image.open(CAT), m, "signed", cmap="inferno", sign="all")  # the figure that shows it
    assert fig.width > 3 * 64


# --------------------------------------------------------------------------- permission denied


def _unprivileged() -> tuple[str, ...]:
    """A command prefix under which root, too, is refused files it has no permission for (or skip)."""
    if os.geteuid() != 0:
        return ()
    prefix = ("setpriv", "--bounding-set=-dac_override,-dac_read_search", "--inh-caps=-dac_override,-dac_read_search")
    if shutil.which("setpriv") is None:
        pytest.skip("running as root without setpriv: cannot drop the capability that lets root read any file")
    probe = subprocess.run([*prefix, "true"], capture_output=True, text=True)
    if probe.returncode != 0:
        pytest.skip(f"setpriv cannot drop capabilities here: {probe.stderr.strip()}")
    return prefix


@pytest.mark.parametrize("name", ["cat.png", "x.npy"])
def test_permission_denied_is_its_own_line(demo_gig, tmp_path, name):
    prefix = _unprivileged()
    f = tmp_path / name
    if name.endswith(".npy"):
        np.save(f, np.zeros((1, 3, 224, 224), np.float32))
    else:
        shutil.copy(CAT, f)
    f.chmod(0)
    try:
        p = run_cli("explain", demo_gig, f, "--out", tmp_path / "o.png", "--steps", 2, prefix=prefix)
    finally:
        f.chmod(0o644)
    line = one_error_line(p)
    assert line.endswith(f"{f}: permission denied"), line
    assert "cannot read" in line and "corrupt" not in line and "Errno" not in line


# --------------------------------------------------------------------------- very large photos


def test_100_megapixel_jpeg_is_read_at_reduced_scale(tmp_path):
    p = tmp_path / "huge.jpg"
    Image.new("RGB", (10000, 10000), (200, 100, 50)).save(p, quality=90)
    img = load_image(p)
    assert img.mode == "RGB" and img.size == (2500, 2500)  # decoded at 1/4 scale: the short side stays >= 2048
    assert all(abs(a - b) <= 3 for a, b in zip(img.getpixel((img.width // 2, img.height // 2)), (200, 100, 50)))
    x, seen = load_input(p, Preprocess(crop=(224, 224)), [1, 3, 224, 224])
    assert x.shape == (3, 224, 224) and seen.size == (224, 224)


def _jpeg_claiming(width: int, height: int) -> bytes:
    """A small real JPEG whose frame header is rewritten to claim ``width`` x ``height``."""
    buf = io.BytesIO()
    Image.new("RGB", (16, 16), (10, 20, 30)).save(buf, format="JPEG")
    data = bytearray(buf.getvalue())
    sof = data.index(b"\xff\xc0")
    data[sof + 5:sof + 9] = struct.pack(">HH", height, width)
    return bytes(data)


def test_jpeg_over_a_gigapixel_is_refused_with_its_size(tmp_path):
    p = tmp_path / "giga.jpg"
    p.write_bytes(_jpeg_claiming(40000, 40000))
    with pytest.raises(InputError) as e:
        load_image(p)
    msg = str(e.value)
    assert "too large to open safely" in msg and "40000x40000 pixels" in msg and "downscale it first" in msg
    assert "MAX_IMAGE_PIXELS" not in msg and "\n" not in msg


def test_huge_png_still_refused_without_pillow_advice(tmp_path):
    """Non-JPEG formats decode at full size, so Pillow's limit still applies to them; the line says what to do."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    ihdr = struct.pack(">IIBBBBB", 10000, 10000, 8, 2, 0, 0, 0)
    p = tmp_path / "bomb.png"
    p.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 64))
                  + chunk(b"IEND", b""))
    with pytest.raises(InputError) as e:
        load_image(p)
    msg = str(e.value)
    assert "too large to open safely (100000000 pixels)" in msg and "downscale it first" in msg
    assert "MAX_IMAGE_PIXELS" not in msg


# --------------------------------------------------------------------------- .jfif and .jpe in folders


def test_folder_runs_take_jfif_and_jpe(tmp_path):
    d = tmp_path / "photos"
    d.mkdir()
    for name in ("a.jfif", "b.jpe", "c.JFIF"):
        Image.open(CAT).convert("RGB").save(d / name, format="JPEG")
    files, missing = collect_inputs([d])
    assert [f.name for f in files] == ["a.jfif", "b.jpe", "c.JFIF"] and not missing
    assert load_image(files[0]).size == Image.open(CAT).size
