"""Tests for onnx_gig.imageio: real image files on disk, hand-computed expectations."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from onnx_gig.errors import InputError
from onnx_gig.imageio import (
    Preprocess,
    gaussian_blur,
    gaussian_kernel,
    load_image,
    load_input,
    make_baseline,
    prepare_image,
)

MEAN = np.array([0.485, 0.456, 0.406])
STD = np.array([0.229, 0.224, 0.225])
PLAIN = dict(mean=(0.0, 0.0, 0.0), std=(1.0, 1.0, 1.0), scale=1.0)  # tensor values == pixel values


def save(tmp_path: Path, name: str, img: Image.Image, **kw) -> Path:
    """Write ``img`` to tmp_path/name with PIL and return the path."""
    p = tmp_path / name
    img.save(p, **kw)
    return p


def solid(color: tuple[int, int, int], size: tuple[int, int] = (8, 8)) -> Image.Image:
    """A constant-colour RGB image of PIL size (W, H)."""
    return Image.new("RGB", size, color)


def expected(color: tuple[int, int, int]) -> np.ndarray:
    """Hand computation of ImageNet normalisation for one RGB pixel."""
    return ((np.array(color) / 255.0 - MEAN) / STD).astype(np.float32)


def single_line(e: pytest.ExceptionInfo) -> str:
    """Return the message, asserting it is one readable line."""
    msg = str(e.value)
    assert msg and "\n" not in msg
    return msg


# --------------------------------------------------------------------------- Preprocess


def test_preprocess_json_round_trip() -> None:
    pp = Preprocess(layout="NHWC", color="BGR", resize=None, crop=(100, 120), scale=1.0, mean=(1.0, 2.0, 3.0), std=(4.0, 5.0, 6.0))
    assert Preprocess.from_json(pp.to_json()) == pp
    assert Preprocess.from_json(Preprocess().to_json()) == Preprocess()


def test_preprocess_json_example_from_metadata() -> None:
    s = '{"layout": "NCHW", "color": "RGB", "resize": 256, "crop": [224, 224], "scale": 0.00392156862745098, "mean": [0.485, 0.456, 0.406], "std": [0.229, 0.224, 0.225]}'
    pp = Preprocess.from_json(s)
    assert pp.crop == (224, 224) and pp.resize == 256 and pp.scale == pytest.approx(1 / 255)
    assert json.loads(pp.to_json()) == json.loads(s)


def test_preprocess_json_missing_keys_take_defaults() -> None:
    assert Preprocess.from_json('{"crop": [32, 48]}') == Preprocess(crop=(32, 48))


@pytest.mark.parametrize(
    "text",
    [
        "{not json",
        "[1, 2]",
        '{"layout": "NCWH"}',
        '{"color": "HSV"}',
        '{"resize": -1}',
        '{"resize": 2.5}',
        '{"resize": true}',
        '{"crop": [224]}',
        '{"crop": "224x224"}',
        '{"scale": 0}',
        '{"std": [0.2, 0.0, 0.2]}',
        '{"mean": [0.1, "x", 0.2]}',
        '{"mean": [0.1, 0.2], "std": [1, 1, 1]}',
        '{"layuot": "NCHW"}',
    ],
)
def test_preprocess_bad_json_raises_input_error(text: str) -> None:
    with pytest.raises(InputError) as e:
        Preprocess.from_json(text)
    assert single_line(e).startswith("preprocess")


def test_normalize_denormalize_inverse() -> None:
    pp = Preprocess(color="BGR")
    arr = np.random.default_rng(0).integers(0, 256, size=(5, 7, 3), dtype=np.uint8)
    hwc = pp.normalize(arr)
    assert hwc.dtype == np.float32 and hwc.shape == (5, 7, 3)
    assert np.array_equal(pp.denormalize(pp.to_layout(hwc)), arr)
    assert np.array_equal(pp.denormalize(pp.to_layout(hwc)[None]), arr)  # batch dim of 1 allowed


def test_denormalize_clips() -> None:
    pp = Preprocess(layout="NHWC")
    x = np.full((2, 2, 3), 100.0, dtype=np.float32)
    assert (pp.denormalize(x) == 255).all() and (pp.denormalize(-x) == 0).all()


# --------------------------------------------------------------------------- prepare_image


def test_constant_image_exact_values(tmp_path: Path) -> None:
    color = (200, 100, 50)
    img = load_image(save(tmp_path, "c.png", solid(color, (12, 10))))
    x, seen = prepare_image(img, Preprocess(resize=None), (6, 4))
    assert x.dtype == np.float32 and x.shape == (3, 6, 4)
    assert seen.size == (4, 6) and seen.mode == "RGB"
    for c in range(3):
        np.testing.assert_allclose(x[c], expected(color)[c], rtol=0, atol=1e-6)


def test_constant_image_exact_values_after_short_side_resize() -> None:
    color = (10, 250, 128)
    x, _ = prepare_image(solid(color, (300, 200)), Preprocess(resize=64), (56, 56))
    np.testing.assert_allclose(x, np.broadcast_to(expected(color)[:, None, None], (3, 56, 56)), atol=1e-6)


def test_crop_placement_two_colour(tmp_path: Path) -> None:
    a = np.zeros((6, 10, 3), dtype=np.uint8)  # H=6, W=10, background black
    a[1, 3] = (0, 255, 0)  # first row/col of the centre 4x4 crop (top=1, left=3)
    a[4, 6] = (0, 0, 255)  # last row/col of the crop
    a[0, 3] = (255, 0, 0)  # just outside the crop
    img = load_image(save(tmp_path, "two.png", Image.fromarray(a)))
    x, seen = prepare_image(img, Preprocess(resize=6, **PLAIN), (4, 4))  # short side already 6: no resampling
    assert np.array_equal(np.asarray(seen), a[1:5, 3:7])
    assert x[:, 0, 0].tolist() == [0, 255, 0]
    assert x[:, 3, 3].tolist() == [0, 0, 255]
    assert x[0].max() == 0  # the red pixel outside the crop is gone


def test_nchw_vs_nhwc(tmp_path: Path) -> None:
    a = np.random.default_rng(1).integers(0, 256, size=(16, 20, 3), dtype=np.uint8)
    img = load_image(save(tmp_path, "n.png", Image.fromarray(a)))
    x_chw, _ = prepare_image(img, Preprocess(layout="NCHW"), (16, 16))
    x_hwc, _ = prepare_image(img, Preprocess(layout="NHWC"), (16, 16))
    assert x_chw.shape == (3, 16, 16) and x_hwc.shape == (16, 16, 3)
    np.testing.assert_array_equal(x_chw.transpose(1, 2, 0), x_hwc)
    assert x_chw.flags["C_CONTIGUOUS"]


def test_bgr_swaps_channels() -> None:
    img = solid((10, 20, 30))
    x_rgb, _ = prepare_image(img, Preprocess(color="RGB", **PLAIN), (4, 4))
    x_bgr, seen = prepare_image(img, Preprocess(color="BGR", **PLAIN), (4, 4))
    assert x_bgr[:, 0, 0].tolist() == [30, 20, 10]
    np.testing.assert_array_equal(x_bgr, x_rgb[::-1])
    assert seen.getpixel((0, 0)) == (10, 20, 30)  # the drawable photo stays RGB


def test_non_square_short_side_then_centre_crop() -> None:
    a = np.zeros((200, 300, 3), dtype=np.uint8)  # W=300: red | green | blue thirds
    a[:, :100, 0] = a[:, 100:200, 1] = a[:, 200:, 2] = 255
    x, seen = prepare_image(Image.fromarray(a), Preprocess(resize=100, **PLAIN), (80, 80))
    # resized to 150x100; crop left = round((150 - 80) / 2) = 35: cols 35..49 red, 50..99 green, 100..114 blue
    assert seen.size == (80, 80)
    assert x[:, 40, 3].round().tolist() == [255, 0, 0]
    assert x[:, 40, 40].round().tolist() == [0, 255, 0]
    assert x[:, 40, 76].round().tolist() == [0, 0, 255]


def test_crop_larger_than_resized_image_enlarges() -> None:
    x, seen = prepare_image(solid((1, 2, 3), (100, 100)), Preprocess(resize=50), (64, 64))
    assert seen.size == (64, 64) and x.shape == (3, 64, 64)
    x, seen = prepare_image(solid((1, 2, 3), (100, 40)), Preprocess(resize=32, crop=(48, 96)), (1, 1))
    assert seen.size == (96, 48) and x.shape == (3, 48, 96)


def test_resize_none_goes_straight_to_crop_size() -> None:
    a = np.zeros((200, 300, 3), dtype=np.uint8)
    a[:, :150] = 255  # left half white: survives only if the whole image is squeezed, not cropped
    x, seen = prepare_image(Image.fromarray(a), Preprocess(resize=None, **PLAIN), (32, 32))
    assert seen.size == (32, 32)
    assert x[:, :, 0].min() == 255 and x[:, :, -1].max() == 0


# --------------------------------------------------------------------------- load_image: modes and errors


def test_grayscale_loads_as_rgb(tmp_path: Path) -> None:
    img = load_image(save(tmp_path, "g.png", Image.new("L", (5, 4), 77)))
    assert img.mode == "RGB" and img.size == (5, 4) and img.getpixel((2, 2)) == (77, 77, 77)


def test_rgba_composited_over_white(tmp_path: Path) -> None:
    a = np.zeros((2, 2, 4), dtype=np.uint8)
    a[0, 0] = (10, 20, 30, 255)  # opaque
    a[0, 1] = (10, 20, 30, 0)  # fully transparent -> white
    img = load_image(save(tmp_path, "a.png", Image.fromarray(a)))
    assert img.mode == "RGB"
    assert img.getpixel((0, 0)) == (10, 20, 30) and img.getpixel((1, 0)) == (255, 255, 255)


def test_la_loads(tmp_path: Path) -> None:
    img = load_image(save(tmp_path, "la.png", Image.new("LA", (3, 3), (40, 255))))
    assert img.getpixel((1, 1)) == (40, 40, 40)


def test_palette_loads(tmp_path: Path) -> None:
    p = solid((200, 30, 60), (6, 6)).convert("P", palette=Image.Palette.ADAPTIVE, colors=4)
    path = save(tmp_path, "p.png", p)
    with Image.open(path) as raw:
        assert raw.mode == "P"
    img = load_image(path)
    assert img.mode == "RGB" and img.getpixel((3, 3)) == (200, 30, 60)


def test_palette_gif_with_transparency_loads(tmp_path: Path) -> None:
    p = Image.new("P", (4, 4), 1)
    p.putpalette([0, 0, 0, 9, 99, 199] + [0] * 762)
    p.putpixel((0, 0), 0)
    img = load_image(save(tmp_path, "t.gif", p, transparency=0))
    assert img.getpixel((0, 0)) == (255, 255, 255) and img.getpixel((2, 2)) == (9, 99, 199)


def test_16bit_gray_is_rescaled_not_clipped(tmp_path: Path) -> None:
    a = np.array([[0, 128 * 257, 65535]], dtype=np.uint16)
    path = save(tmp_path, "d.png", Image.fromarray(a))
    with Image.open(path) as raw:
        assert raw.mode.startswith("I")
    img = load_image(path)
    assert [img.getpixel((i, 0)) for i in range(3)] == [(0, 0, 0), (128, 128, 128), (255, 255, 255)]


def test_bilevel_and_cmyk_load(tmp_path: Path) -> None:
    assert load_image(save(tmp_path, "b.png", Image.new("1", (4, 4), 1))).getpixel((0, 0)) == (255, 255, 255)
    img = load_image(save(tmp_path, "k.jpg", Image.new("CMYK", (8, 8), (0, 0, 0, 0)), quality=95))
    assert img.mode == "RGB" and all(v >= 250 for v in img.getpixel((4, 4)))


def test_jpeg_loads_close_to_original(tmp_path: Path) -> None:
    img = load_image(save(tmp_path, "j.jpg", solid((120, 60, 200), (16, 16)), quality=95))
    assert np.abs(np.asarray(img, dtype=int) - [120, 60, 200]).max() <= 3


def test_exif_orientation_applied(tmp_path: Path) -> None:
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise to display
    path = save(tmp_path, "o.jpg", solid((0, 0, 0), (20, 10)), exif=exif)
    with Image.open(path) as raw:
        assert raw.size == (20, 10)
    assert load_image(path).size == (10, 20)


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(InputError) as e:
        load_image(tmp_path / "nope.png")
    assert "nope.png" in single_line(e) and "not found" in str(e.value)


def test_not_an_image(tmp_path: Path) -> None:
    path = tmp_path / "text.png"
    path.write_text("hello, I am not a PNG\n")
    with pytest.raises(InputError) as e:
        load_image(path)
    assert "text.png" in single_line(e)


def test_directory_is_not_an_image(tmp_path: Path) -> None:
    with pytest.raises(InputError) as e:
        load_image(tmp_path)
    single_line(e)


@pytest.mark.parametrize("name,kw", [("cut.png", {}), ("cut.jpg", {"quality": 90})])
def test_truncated_image(tmp_path: Path, name: str, kw: dict) -> None:
    a = np.random.default_rng(2).integers(0, 256, size=(64, 64, 3), dtype=np.uint8)
    path = save(tmp_path, name, Image.fromarray(a), **kw)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(InputError) as e:
        load_image(path)
    assert name in single_line(e)


def test_zero_size_image(tmp_path: Path) -> None:
    import struct
    import zlib

    def chunk(tag: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + tag + data + struct.pack(">I", zlib.crc32(tag + data) & 0xFFFFFFFF)

    path = tmp_path / "zero.png"
    header = struct.pack(">IIBBBBB", 0, 0, 8, 2, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b"")) + chunk(b"IEND", b""))
    with pytest.raises(InputError) as e:
        load_image(path)
    assert "zero.png" in single_line(e)


# --------------------------------------------------------------------------- load_input


def test_load_input_image(tmp_path: Path) -> None:
    path = save(tmp_path, "i.png", solid((200, 100, 50), (40, 30)))
    x, photo = load_input(path, Preprocess(resize=None), [1, 3, 8, 8])
    assert x.shape == (3, 8, 8) and photo is not None and photo.size == (8, 8)
    np.testing.assert_allclose(x[:, 4, 4], expected((200, 100, 50)), atol=1e-6)
    x, photo = load_input(path, Preprocess(layout="NHWC", resize=None), ["batch", 8, 6, 3])
    assert x.shape == (8, 6, 3) and photo.size == (6, 8)


def test_load_input_dynamic_dims_keep_the_photos_aspect(tmp_path: Path) -> None:
    path = save(tmp_path, "i.png", solid((1, 2, 3), (400, 300)))  # 400 wide, 300 high
    x, photo = load_input(path, Preprocess(resize=None), ["N", 3, None, None])
    assert x.shape == (3, 224, 299) and photo.size == (299, 224)  # short side at most 224
    x, _ = load_input(path, Preprocess(resize=64), ["N", 3, None, None])
    assert x.shape == (3, 64, 85)  # the spec's resize, no crop
    small = save(tmp_path, "s.png", solid((1, 2, 3), (40, 30)))
    x, _ = load_input(small, Preprocess(resize=None), ["N", 3, None, None])
    assert x.shape == (3, 30, 40)  # small photos keep their size
    x, _ = load_input(path, Preprocess(crop=(16, 24)), ["N", 3, None, None])
    assert x.shape == (3, 16, 24)
    with pytest.raises(InputError) as e:
        load_input(path, Preprocess(), ["N", 3, 32, None])  # one side static, one dynamic: a crop decides
    assert "crop" in single_line(e)


def test_load_input_crop_conflicting_with_model(tmp_path: Path) -> None:
    path = save(tmp_path, "i.png", solid((1, 2, 3), (40, 30)))
    with pytest.raises(InputError) as e:
        load_input(path, Preprocess(crop=(16, 16)), [1, 3, 8, 8])
    single_line(e)


def test_load_input_wrong_channel_count_for_photo(tmp_path: Path) -> None:
    path = save(tmp_path, "i.png", solid((1, 2, 3)))
    with pytest.raises(InputError) as e:
        load_input(path, Preprocess(layout="NHWC"), [1, 3, 8, 8])  # NCHW model declared as NHWC
    single_line(e)


@pytest.mark.parametrize("batch", [False, True])
def test_load_input_npy(tmp_path: Path, batch: bool) -> None:
    pp = Preprocess()
    a = np.random.default_rng(3).integers(0, 256, size=(8, 8, 3), dtype=np.uint8)
    x0, seen = prepare_image(Image.fromarray(a), pp, (8, 8))
    path = tmp_path / "x.npy"
    np.save(path, (x0[None] if batch else x0).astype(np.float64))
    x, photo = load_input(path, pp, [1, 3, 8, 8])
    assert x.dtype == np.float32 and x.shape == (3, 8, 8)
    np.testing.assert_array_equal(x, x0)
    assert photo is not None and np.array_equal(np.asarray(photo), np.asarray(seen))


def test_load_input_npy_dynamic_dims_accept_any_size(tmp_path: Path) -> None:
    path = tmp_path / "x.npy"
    np.save(path, np.zeros((3, 5, 7), np.float32))
    x, photo = load_input(path, Preprocess(), ["N", 3, "H", None])
    assert x.shape == (3, 5, 7) and photo.size == (7, 5)


def test_load_input_npy_non_image_has_no_photo(tmp_path: Path) -> None:
    path = tmp_path / "x.npy"
    np.save(path, np.zeros((1, 8, 8), np.float32))
    x, photo = load_input(path, Preprocess(), [1, 1, 8, 8])
    assert x.shape == (1, 8, 8) and photo is None


@pytest.mark.parametrize("shape", [(3, 8, 9), (1, 3, 8, 9), (2, 3, 8, 8), (8, 8), (1, 1, 3, 8, 8), (8, 8, 3)])
def test_load_input_npy_wrong_shape(tmp_path: Path, shape: tuple[int, ...]) -> None:
    path = tmp_path / "bad.npy"
    np.save(path, np.zeros(shape, np.float32))
    with pytest.raises(InputError) as e:
        load_input(path, Preprocess(), [1, 3, 8, 8])
    assert "bad.npy" in single_line(e)


@pytest.mark.parametrize("value", [np.nan, np.inf, -np.inf, 1e300])
def test_load_input_npy_non_finite(tmp_path: Path, value: float) -> None:
    a = np.zeros((3, 8, 8), np.float64)
    a[1, 2, 3] = value
    path = tmp_path / "nan.npy"
    np.save(path, a)
    with pytest.raises(InputError) as e:
        load_input(path, Preprocess(), [1, 3, 8, 8])
    assert "nan.npy" in single_line(e)


def test_load_input_npy_integer_rejected(tmp_path: Path) -> None:
    path = tmp_path / "int.npy"
    np.save(path, np.zeros((3, 8, 8), np.uint8))
    with pytest.raises(InputError) as e:
        load_input(path, Preprocess(), [1, 3, 8, 8])
    assert "uint8" in single_line(e)


def test_load_input_npy_corrupt_and_missing(tmp_path: Path) -> None:
    path = tmp_path / "junk.npy"
    path.write_bytes(b"not numpy at all")
    with pytest.raises(InputError) as e:
        load_input(path, Preprocess(), [1, 3, 8, 8])
    assert "junk.npy" in single_line(e)
    with pytest.raises(InputError) as e:
        load_input(tmp_path / "gone.npy", Preprocess(), [1, 3, 8, 8])
    assert "gone.npy" in single_line(e)


def test_load_input_corrupt_and_missing_image(tmp_path: Path) -> None:
    path = tmp_path / "broken.jpg"
    path.write_bytes(b"\xff\xd8\xff\xe0garbage")
    with pytest.raises(InputError) as e:
        load_input(path, Preprocess(), [1, 3, 8, 8])
    assert "broken.jpg" in single_line(e)
    with pytest.raises(InputError) as e:
        load_input(tmp_path / "missing.png", Preprocess(), [1, 3, 8, 8])
    assert "missing.png" in single_line(e)


# --------------------------------------------------------------------------- baselines


def _input(layout: str = "NCHW") -> tuple[np.ndarray, Image.Image, Preprocess]:
    """A preprocessed random 12x10 input, its photo and its spec."""
    pp = Preprocess(layout=layout, resize=None)
    a = np.random.default_rng(4).integers(0, 256, size=(12, 10, 3), dtype=np.uint8)
    x, seen = prepare_image(Image.fromarray(a), pp, (12, 10))
    return x, seen, pp


def test_baseline_zeros() -> None:
    x, photo, pp = _input()
    b = make_baseline("zeros", x, photo, pp)
    assert b.shape == x.shape and b.dtype == np.float32 and not b.any()


@pytest.mark.parametrize("layout", ["NCHW", "NHWC"])
@pytest.mark.parametrize("kind,value", [("black", 0), ("white", 255)])
def test_baseline_black_white_equal_preprocessed_images(layout: str, kind: str, value: int) -> None:
    x, photo, pp = _input(layout)
    b = make_baseline(kind, x, photo, pp)
    ref, _ = prepare_image(solid((value,) * 3, (10, 12)), pp, (12, 10))
    assert b.shape == x.shape and b.dtype == np.float32
    np.testing.assert_array_equal(b, ref)


def test_baseline_black_hand_value() -> None:
    x, photo, pp = _input()
    b = make_baseline("black", x, None, pp)
    np.testing.assert_allclose(b[:, 0, 0], (-MEAN / STD).astype(np.float32), atol=1e-6)


@pytest.mark.parametrize("layout", ["NCHW", "NHWC"])
def test_blur_of_constant_is_constant(layout: str) -> None:
    pp = Preprocess(layout=layout, resize=None)
    x, _ = prepare_image(solid((90, 180, 30), (9, 7)), pp, (7, 9))
    b = make_baseline("blur", x, None, pp)
    assert b.shape == x.shape and b.dtype == np.float32
    np.testing.assert_allclose(b, x, atol=1e-5)


def test_blur_reduces_noise_variance() -> None:
    x = np.random.default_rng(5).normal(size=(3, 32, 32)).astype(np.float32)
    b = make_baseline("blur", x, None, Preprocess())
    assert b.var() < 0.1 * x.var()
    np.testing.assert_allclose(b.mean(), x.mean(), atol=0.05)


def test_gaussian_blur_layouts_and_batches_agree() -> None:
    x = np.random.default_rng(6).normal(size=(2, 3, 9, 13)).astype(np.float32)
    nchw = gaussian_blur(x, "NCHW")
    nhwc = gaussian_blur(x.transpose(0, 2, 3, 1), "NHWC")
    np.testing.assert_allclose(nhwc.transpose(0, 3, 1, 2), nchw, atol=1e-6)
    np.testing.assert_allclose(gaussian_blur(x[1], "NCHW"), nchw[1], atol=1e-6)
    # channels are blurred independently
    y = x.copy()
    y[:, 1] = 0
    np.testing.assert_allclose(gaussian_blur(y, "NCHW")[:, 0], nchw[:, 0], atol=1e-6)


def test_gaussian_blur_tiny_images() -> None:
    for shape in [(3, 1, 1), (3, 2, 5), (3, 4, 1)]:
        x = np.full(shape, 2.5, np.float32)
        np.testing.assert_allclose(gaussian_blur(x, "NCHW"), x, atol=1e-6)


def test_gaussian_kernel() -> None:
    k = gaussian_kernel(11, 5.0)
    assert k.shape == (11,) and k.sum() == pytest.approx(1.0) and np.array_equal(k, k[::-1])
    assert k.argmax() == 5
    for bad in [(10, 5.0), (0, 5.0), (11, 0.0), (11, float("nan"))]:
        with pytest.raises(InputError):
            gaussian_kernel(*bad)


@pytest.mark.parametrize("batch", [False, True])
def test_baseline_npy(tmp_path: Path, batch: bool) -> None:
    x, photo, pp = _input()
    ref = np.random.default_rng(7).normal(size=x.shape)
    path = tmp_path / "base.npy"
    np.save(path, ref[None] if batch else ref)
    b = make_baseline(str(path), x, photo, pp)
    assert b.dtype == np.float32 and b.shape == x.shape
    np.testing.assert_allclose(b, ref.astype(np.float32))


def test_baseline_npy_shape_mismatch(tmp_path: Path) -> None:
    x, photo, pp = _input()
    path = tmp_path / "small.npy"
    np.save(path, np.zeros((3, 4, 4), np.float32))
    with pytest.raises(InputError) as e:
        make_baseline(str(path), x, photo, pp)
    assert "small.npy" in single_line(e)


def test_baseline_npy_missing_or_nan(tmp_path: Path) -> None:
    x, photo, pp = _input()
    with pytest.raises(InputError) as e:
        make_baseline(str(tmp_path / "absent.npy"), x, photo, pp)
    assert "absent.npy" in single_line(e)
    bad = np.zeros(x.shape, np.float32)
    bad[0, 0, 0] = np.nan
    np.save(tmp_path / "nan.npy", bad)
    with pytest.raises(InputError):
        make_baseline(str(tmp_path / "nan.npy"), x, photo, pp)


def test_baseline_unknown_kind_lists_valid() -> None:
    x, photo, pp = _input()
    with pytest.raises(InputError) as e:
        make_baseline("grey", x, photo, pp)
    msg = single_line(e)
    for kind in ("zeros", "black", "white", "blur", ".npy"):
        assert kind in msg
