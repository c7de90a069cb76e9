"""The bad-input matrix, run through the real command line.

Every refused case must: exit 2, print exactly one line on stderr that starts ``onnx-gig: error:``, name
the problem and say what to do, show no traceback (unless --debug), and leave every input file
byte-for-byte unchanged, with no output or temporary file left behind. Images that are odd but valid
(16-bit, greyscale, RGBA, CMYK, palette, EXIF-rotated, 1x1) must be explained instead.

Model cases use tiny onnx.helper models; image and option cases use the shipped MobileNetV2, converted
once per session (``demo_gig``). Runs that must succeed use --steps 2. The CLI runs of the matrix are
started together (a few at a time) by one fixture, since each costs about a second of interpreter start-up;
each case is still its own test, with inputs hashed before and after.
"""
from __future__ import annotations

import errno
import hashlib
import io
import os
import stat
import struct
import subprocess
import sys
import time
import zlib
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace
from typing import Callable, Optional

import numpy as np
import onnx
import pytest
from onnx import TensorProto as T
from onnx import helper as oh
from onnx import numpy_helper as nh
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
CAT = ROOT / "models" / "images" / "chelsea.png"
TALLY_KEY = "bad inputs tried through the CLI (each refused in one line or handled; inputs unchanged)"
FAULTS_KEY = "faults injected in process (failed or interrupted writes and runs; nothing partial left)"
WORKERS = 4  # concurrent CLI runs: start-up is mostly waiting, so this beats the core count


# --------------------------------------------------------------------------- running the CLI


def run_cli(*args, cwd: Path) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    return subprocess.run([sys.executable, "-m", "onnx_gig.cli", *map(str, args)], capture_output=True, text=True,
                          cwd=cwd, timeout=300, env=env)


def digest(paths) -> dict:
    """sha256 of each file, the listing of each folder, None for what does not exist."""
    out = {}
    for p in map(Path, paths):
        if p.is_file():
            out[str(p)] = hashlib.sha256(p.read_bytes()).hexdigest()
        elif p.is_dir():
            out[str(p)] = sorted(os.listdir(p))
        else:
            out[str(p)] = None
    return out


def stderr_lines(p: subprocess.CompletedProcess) -> list[str]:
    return [ln for ln in p.stderr.splitlines() if ln.strip()]


def assert_refused(p: subprocess.CompletedProcess, needles) -> str:
    lines = stderr_lines(p)
    assert p.returncode == 2, (p.returncode, p.stderr)
    assert len(lines) == 1, p.stderr
    assert lines[0].startswith("onnx-gig: error: "), p.stderr
    assert "Traceback" not in p.stderr
    for needle in needles:
        assert needle in lines[0], (needle, lines[0])
    return lines[0]


def refused(args, *, cwd: Path, inputs, needles, tally, folders=()) -> str:
    """Run one bad input now (outside the matrix); check the line, untouched inputs and no leftovers."""
    watched = [*inputs, cwd, *folders, *(Path(p).parent for p in inputs)]
    before = digest(watched)
    line = assert_refused(run_cli(*args, cwd=cwd), needles)
    assert digest(watched) == before, "an input file or folder changed"
    tally[TALLY_KEY] += 1
    return line


@pytest.fixture
def tally(pytestconfig):
    from conftest import robustness_tally

    return robustness_tally(pytestconfig)


# --------------------------------------------------------------------------- tiny models


def _model(nodes, inputs, outputs, inits, opset: int = 17) -> onnx.ModelProto:
    m = oh.make_model(oh.make_graph(nodes, "tiny", inputs, outputs, inits), opset_imports=[oh.make_opsetid("", opset)])
    m.ir_version = 8
    return m


def tiny_classifier(act: str = "Relu", scale: float = 1.0, two_outputs: bool = False, two_inputs: bool = False,
                    in_type: int = T.FLOAT, rank2: bool = False, cast_to: int = T.FLOAT) -> onnx.ModelProto:
    """x[N,3,8,8] -> Conv -> act -> GlobalAveragePool -> Flatten -> Gemm -> logits[N,5] (variants for bad cases)."""
    rng = np.random.default_rng(0)
    f32 = lambda a: np.asarray(a, np.float32)  # noqa: E731
    inits = [nh.from_array(f32(rng.normal(size=(4, 3, 3, 3)) * 0.3 * scale), "W"), nh.from_array(f32(np.zeros(4)), "B"),
             nh.from_array(f32(rng.normal(size=(5, 4)) * scale), "G"), nh.from_array(f32(np.zeros(5)), "GB")]
    nodes, x = [], "x"
    inputs = [oh.make_tensor_value_info("x", in_type, ["N", 3, 8, 8])]
    if rank2:
        inputs = [oh.make_tensor_value_info("x", T.FLOAT, ["N", 192])]
        inits.append(nh.from_array(np.asarray([-1, 3, 8, 8], np.int64), "shape"))
        nodes.append(oh.make_node("Reshape", ["x", "shape"], ["x4"]))
        x = "x4"
    if in_type != T.FLOAT:
        nodes.append(oh.make_node("Cast", [x], ["xf"], to=cast_to))
        x = "xf"
    if two_inputs:
        inputs.append(oh.make_tensor_value_info("y", T.FLOAT, ["N", 3, 8, 8]))
        nodes.append(oh.make_node("Add", [x, "y"], ["xy"]))
        x = "xy"
    nodes += [oh.make_node("Conv", [x, "W", "B"], ["c"], pads=[1, 1, 1, 1]),
              oh.make_node(act, ["c"], ["r"]),
              oh.make_node("GlobalAveragePool", ["r"], ["p"]),
              oh.make_node("Flatten", ["p"], ["f"]),
              oh.make_node("Gemm", ["f", "G", "GB"], ["logits"], transB=1)]
    outputs = [oh.make_tensor_value_info("logits", T.FLOAT, ["N", 5])]
    if two_outputs:
        nodes.append(oh.make_node("Gemm", ["f", "G", "GB"], ["logits2"], transB=1, alpha=2.0))
        outputs.append(oh.make_tensor_value_info("logits2", T.FLOAT, ["N", 5]))
    return _model(nodes, inputs, outputs, inits)


def _with_external_data(folder: Path, name: str, location: str | None = None, drop: bool = False,
                        truncate: bool = False) -> Path:
    """Save the tiny model with its weights in NAME.data, then break the reference as asked."""
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{name}.onnx"
    onnx.save_model(tiny_classifier(), str(path), save_as_external_data=True, all_tensors_to_one_file=True,
                    location=f"{name}.onnx.data", size_threshold=0)
    data = folder / f"{name}.onnx.data"
    if drop:
        data.unlink()
    if truncate:
        data.write_bytes(data.read_bytes()[:100])
    if location is not None:
        m = onnx.load(str(path), load_external_data=False)
        for t in m.graph.initializer:
            for e in t.external_data:
                if e.key == "location":
                    e.value = location
        path.write_bytes(m.SerializeToString())
    return path


@pytest.fixture(scope="module")
def models(tmp_path_factory) -> dict[str, Path]:
    """Every bad (and one good) model of the matrix, on disk."""
    d = tmp_path_factory.mktemp("models")
    out: dict[str, Path] = {}

    def save(name: str, model: onnx.ModelProto) -> None:
        out[name] = d / f"{name}.onnx"
        onnx.save(model, str(out[name]))

    save("good", tiny_classifier())
    save("round", tiny_classifier(act="Round"))  # Round: piecewise constant, no rule
    save("two_outputs", tiny_classifier(two_outputs=True))
    save("two_inputs", tiny_classifier(two_inputs=True))
    save("uint8_input", tiny_classifier(in_type=T.UINT8, cast_to=T.DOUBLE))  # uint8 cast to float32 is explained
    save("tabular_input", tiny_classifier(rank2=True))
    save("overflow", tiny_classifier(scale=1e25))
    good = out["good"].read_bytes()
    (d / "empty.onnx").write_bytes(b"")
    (d / "truncated.onnx").write_bytes(good[: len(good) // 2])
    (d / "random.onnx").write_bytes(np.random.default_rng(7).integers(0, 256, 4096, dtype=np.uint8).tobytes())
    (d / "photo.onnx").write_bytes(CAT.read_bytes())  # a PNG named .onnx
    (d / "folder.onnx").mkdir()
    for name in ("empty", "truncated", "random", "photo", "folder"):
        out[name] = d / f"{name}.onnx"
    out["missing"] = d / "missing.onnx"
    ext = d / "ext"
    out["ext_missing"] = _with_external_data(ext, "m1", drop=True)
    out["ext_truncated"] = _with_external_data(ext, "m2", truncate=True)
    (d / "secret.bin").write_bytes(b"S" * 4096)
    out["ext_dotdot"] = _with_external_data(ext, "m3", location="../secret.bin")
    out["ext_absolute"] = _with_external_data(ext, "m4", location=str(d / "secret.bin"))
    (ext / "link.bin").symlink_to(d / "secret.bin")
    out["ext_symlink"] = _with_external_data(ext, "m5", location="link.bin")
    out["ext_ok"] = _with_external_data(ext, "m6")
    # an already converted model
    from onnx_gig import convert

    out["converted"] = convert(out["good"], d / "good_gig.onnx").path
    out["overflow_gig"] = convert(out["overflow"], d / "overflow_gig.onnx").path
    return out


# --------------------------------------------------------------------------- images


# --------------------------------------------------------------------------- images


def _png_claiming(width: int, height: int) -> bytes:
    """A PNG whose header claims a huge size, with one tiny compressed row: a decompression bomb's shape."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 64)) + chunk(b"IEND", b"")


@pytest.fixture(scope="module")
def images(tmp_path_factory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("images")
    cat = Image.open(CAT).convert("RGB")
    out: dict[str, Path] = {}

    def save(name: str, img: Image.Image | None = None, raw: bytes | None = None, **kw) -> None:
        out[name] = d / name
        if raw is not None:
            out[name].write_bytes(raw)
        else:
            img.save(out[name], **kw)

    buf = io.BytesIO()
    cat.save(buf, format="JPEG", quality=90)
    jpeg = buf.getvalue()
    save("cat.jpg", raw=jpeg)
    save("truncated.jpg", raw=jpeg[: len(jpeg) // 3])
    save("text.jpg", raw=b"this is not a photo\n" * 20)
    save("empty.png", raw=b"")
    save("bomb.png", raw=_png_claiming(30000, 30000))
    save("bomb_warn.png", raw=_png_claiming(10000, 10000))  # past the limit, below twice it: Pillow only warns
    gray16 = (np.asarray(cat.convert("L"), np.uint16) * 257).astype(np.uint16)
    save("gray16.png", Image.fromarray(gray16))
    save("gray.png", cat.convert("L"))
    rgba = cat.convert("RGBA")
    rgba.putalpha(128)
    save("rgba.png", rgba)
    save("cmyk.jpg", cat.convert("CMYK"), quality=90)
    save("palette.png", cat.convert("P", palette=Image.Palette.ADAPTIVE, colors=16))
    save("onepixel.png", Image.new("RGB", (1, 1), (200, 30, 60)))
    exif = Image.Exif()
    exif[0x0112] = 6  # orientation: rotate 90 degrees clockwise to display
    save("rotated.jpg", cat.transpose(Image.Transpose.ROTATE_90), quality=95, exif=exif.tobytes())
    x = np.random.default_rng(0).normal(size=(1, 3, 224, 224)).astype(np.float32)
    np.save(d / "ok.npy", x)
    np.save(d / "shape.npy", x[:, :, :100])
    np.save(d / "rank.npy", x[0, 0])
    np.save(d / "batch.npy", np.concatenate([x, x]))
    np.save(d / "int.npy", (x * 100).astype(np.int32))
    np.save(d / "complex.npy", x.astype(np.complex64))
    nan, inf = x.copy(), x.copy()
    nan[0, 1, 2, 3] = np.nan
    inf[0, 0, 0, 0] = -np.inf
    np.save(d / "nan.npy", nan)
    np.save(d / "inf.npy", inf)
    np.save(d / "big.npy", x.astype(np.float64) * 1e300)  # finite in float64, infinite in float32
    hdr = io.BytesIO()
    np.lib.format.write_array_header_1_0(hdr, {"descr": "<f4", "fortran_order": False, "shape": (1, 3, 100000, 100000)})
    (d / "bomb.npy").write_bytes(hdr.getvalue() + b"\0" * 64)
    (d / "pickle.npy").write_bytes(np.lib.format.MAGIC_PREFIX + b"\x01\x00" + b"garbage")
    for n in ("ok", "shape", "rank", "batch", "int", "complex", "nan", "inf", "big", "bomb", "pickle"):
        out[f"{n}.npy"] = d / f"{n}.npy"
    return out


# --------------------------------------------------------------------------- the matrix


@dataclass
class Case:
    """One CLI run. ``args``/``inputs``/``setup`` take a context: m (models), im (images), gig (the converted
    demo model), plain (the demo classifier), cwd (this case's own empty folder, the run's working folder)."""

    id: str
    args: Callable[[SimpleNamespace], list]
    inputs: Callable[[SimpleNamespace], list]
    needles: tuple = ()
    ok: bool = False  # odd but valid: exit 0, ``outputs`` written in cwd, no stderr but ``warning``
    outputs: tuple = ()
    warning: Optional[str] = None
    setup: Optional[Callable[[SimpleNamespace], None]] = None
    check: Optional[Callable[[SimpleNamespace, subprocess.CompletedProcess], None]] = None


def _data_files(path: Path) -> list[Path]:
    return sorted(path.parent.glob(path.stem + "*.data")) if path.parent.name == "ext" else []


def convert_case(id: str, model: str, *extra, needles=()) -> Case:
    return Case(id, lambda c: ["convert", c.m[model], "-o", c.cwd / "out" / "m_gig.onnx", *extra],
                lambda c: [c.m[model], *_data_files(c.m[model])], tuple(needles))


def explain_case(id: str, image: Callable[[SimpleNamespace], Path], *extra, needles=(), **kw) -> Case:
    return Case(id, lambda c: ["explain", c.gig, image(c), "--steps", "2", *[_fill(a, c) for a in extra]],
                lambda c: [c.gig, image(c)], tuple(needles), **kw)


def _fill(arg: str, c: SimpleNamespace):
    return c.im[arg[1:]] if isinstance(arg, str) and arg.startswith("@") else arg


def _write(name: str, data: bytes = b"precious") -> Callable[[SimpleNamespace], None]:
    return lambda c: (c.cwd / name).write_bytes(data)


def _copy_cat(c: SimpleNamespace) -> None:
    (c.cwd / "cat.png").write_bytes(CAT.read_bytes())


def _is_real_model(c, p) -> None:
    assert onnx.load(str(c.cwd / "good_gig.onnx")).graph.node


def _is_real_figure(c, p) -> None:
    assert Image.open(c.cwd / "chelsea_gig.png").size[0] > 224


def _cuda_line(c, p) -> None:
    """--device cuda where the provider cannot load: one line saying so, then the run finishes on CPU."""
    lines = stderr_lines(p)
    if " on CUDA " in p.stdout:
        assert not lines, p.stderr
    else:
        assert " on CPU " in p.stdout
        assert len(lines) == 1 and lines[0].startswith("onnx-gig: ") and "CUDA" in lines[0] \
            and "running on CPU" in lines[0], p.stderr


def _quick(c, p) -> None:
    assert c.seconds < 30, c.seconds  # refused up front, nothing huge allocated


def _only_input_left(c, p) -> None:
    assert sorted(os.listdir(c.cwd)) == ["x.npy"]


CAT_ = lambda c: CAT  # noqa: E731
IMG = lambda name: (lambda c: c.im.get(name, c.cwd / name))  # noqa: E731

CASES = [
    # -- models: read, identify input and scores, rules, external data, already converted
    convert_case("model-missing", "missing", needles=["model file not found"]),
    convert_case("model-is-a-folder", "folder", needles=["not a file", "path of an .onnx model"]),
    convert_case("model-empty", "empty", needles=["is empty (0 bytes)", "export the model again"]),
    convert_case("model-truncated", "truncated", needles=["truncated or not in ONNX format", "export the model again"]),
    convert_case("model-random-bytes", "random", needles=["truncated or not in ONNX format"]),
    convert_case("model-png-named-onnx", "photo", needles=["truncated or not in ONNX format"]),
    convert_case("model-uint8-input", "uint8_input",
                 needles=["no float32 image input", "uint8", "export the model with one"]),
    convert_case("model-tabular-input", "tabular_input", needles=["no float32 image input", "x['N', 192]"]),
    convert_case("model-two-inputs", "two_inputs", needles=["several inputs", "x[", "y[", "--input NAME"]),
    convert_case("model-unknown-input", "two_inputs", "--input", "z", needles=["no input 'z'", "x, y"]),
    convert_case("model-two-outputs", "two_outputs",
                 needles=["several float outputs", "logits2", "--output-name NAME"]),
    convert_case("model-unknown-output", "two_outputs", "--output-name", "probs",
                 needles=["no output 'probs'", "logits, logits2"]),
    convert_case("model-unsupported-op", "round", needles=["unsupported op 'Round'", "supported ops: ", "--output-name",
                                                         "Adding an op"]),
    convert_case("model-external-data-missing", "ext_missing", needles=["m1.onnx.data", "missing",
                                                                        "copy it next to the model"]),
    convert_case("model-external-data-truncated", "ext_truncated", needles=["m2.onnx.data", "shorter", "truncated"]),
    convert_case("model-external-data-dotdot", "ext_dotdot", needles=["../secret.bin", "outside the model's folder",
                                                                      "refusing"]),
    convert_case("model-external-data-absolute", "ext_absolute", needles=["secret.bin", "not a relative path",
                                                                          "refusing"]),
    convert_case("model-external-data-symlink-out", "ext_symlink", needles=["link.bin", "outside the model's folder"]),
    convert_case("model-already-converted", "converted", needles=["already an onnx-gig attribution model",
                                                                  "onnx-gig explain", "original classifier"]),
    Case("model-plain-given-to-explain", lambda c: ["explain", c.plain, CAT], lambda c: [c.plain, CAT],
         ("not an onnx-gig model", "onnx-gig convert")),
    *[Case(f"model-{n}-given-to-explain", (lambda n: lambda c: ["explain", c.m[n], CAT])(n),
           (lambda n: lambda c: [c.m[n], CAT])(n), (f"{n}.onnx",)) for n in ("missing", "truncated", "empty")],

    # -- outputs: never over an input, never over an existing file without --force, writable folders only
    Case("output-is-the-input", lambda c: ["convert", c.m["good"], "-o", c.m["good"], "--force"],
         lambda c: [c.m["good"]], ("refusing to overwrite the input", "choose another output path")),
    Case("output-is-the-input-spelled-differently",
         lambda c: ["convert", c.m["good"], "-o", c.m["good"].parent / ".." / c.m["good"].parent.name / "good.onnx"],
         lambda c: [c.m["good"]], ("refusing to overwrite the input",)),
    Case("figure-is-the-image", lambda c: ["explain", c.gig, "cat.png", "--out", "cat.png", "--force"],
         lambda c: [c.gig, c.cwd / "cat.png"], ("refusing to overwrite the input",), setup=_copy_cat),
    Case("npy-is-the-model", lambda c: ["explain", c.gig, CAT, "--save-npy", c.gig, "--force"],
         lambda c: [c.gig, CAT], ("refusing to overwrite the input",)),
    Case("figure-and-npy-same-path", lambda c: ["explain", c.gig, CAT, "--out", "x.png", "--save-npy", "x.png"],
         lambda c: [c.gig, CAT], ("different paths",)),
    Case("existing-output", lambda c: ["convert", c.m["good"], "-o", "good_gig.onnx"], lambda c: [c.m["good"]],
         ("already exists", "--force"), setup=_write("good_gig.onnx")),
    Case("existing-output-with-force",  # (--std: preprocessing given, so convert prints no note)
         lambda c: ["convert", c.m["good"], "-o", "good_gig.onnx", "--force", "--std", "1,1,1"],
         lambda c: [c.m["good"]], ok=True, outputs=("good_gig.onnx",), setup=_write("good_gig.onnx"),
         check=_is_real_model),
    Case("existing-figure", lambda c: ["explain", c.gig, CAT, "--steps", "2"], lambda c: [c.gig, CAT],
         ("already exists", "--force"), setup=_write("chelsea_gig.png")),
    Case("existing-figure-with-force", lambda c: ["explain", c.gig, CAT, "--steps", "2", "--force"],
         lambda c: [c.gig, CAT], ok=True, outputs=("chelsea_gig.png",), setup=_write("chelsea_gig.png"),
         check=_is_real_figure),
    Case("output-under-a-file", lambda c: ["convert", c.m["good"], "-o", "afile/sub/m.onnx"], lambda c: [c.m["good"]],
         ("cannot write", "is not a folder"), setup=_write("afile")),
    Case("output-is-a-folder", lambda c: ["convert", c.m["good"], "-o", "adir"], lambda c: [c.m["good"]],
         ("is a folder", "give a file name"), setup=lambda c: (c.cwd / "adir").mkdir()),

    # -- images
    explain_case("image-missing", IMG("missing.png"), needles=["not found"]),
    explain_case("image-text-named-jpg", IMG("text.jpg"), needles=["not a readable image"]),
    explain_case("image-empty", IMG("empty.png"), needles=["not a readable image"]),
    explain_case("image-truncated-jpeg", IMG("truncated.jpg"), needles=["truncated or corrupt image"]),
    explain_case("image-decompression-bomb", IMG("bomb.png"),
                 needles=["too large to open safely", "downscale it first"]),
    explain_case("image-decompression-bomb-warning-size", IMG("bomb_warn.png"),
                 needles=["too large to open safely", "downscale it first"]),
    explain_case("npy-wrong-shape", IMG("shape.npy"), needles=["does not match the model input"]),
    explain_case("npy-wrong-rank", IMG("rank.npy"), needles=["does not fit the model input"]),
    explain_case("npy-batch-of-two", IMG("batch.npy"), needles=["batch dim is 2", "batch 1"]),
    explain_case("npy-int-dtype", IMG("int.npy"),
                 needles=["expected a float array", "int32", "save raw photos as PNG"]),
    explain_case("npy-complex-dtype", IMG("complex.npy"), needles=["expected a float array", "complex64"]),
    explain_case("npy-nan", IMG("nan.npy"), needles=["NaN or infinite"]),
    explain_case("npy-inf", IMG("inf.npy"), needles=["NaN or infinite"]),
    explain_case("npy-overflows-float32", IMG("big.npy"), needles=["NaN or infinite"]),
    explain_case("npy-header-bomb", IMG("bomb.npy"),
                 needles=["header claims shape [1, 3, 100000, 100000]", "truncated"]),
    explain_case("npy-garbage", IMG("pickle.npy"), needles=["not a readable .npy"]),
    *[explain_case(f"image-{n}", IMG(n), "--out", "fig.png", ok=True, outputs=("fig.png",), warning=w)
      for n, w in [("gray16.png", None), ("gray.png", None), ("rgba.png", None), ("cmyk.jpg", None),
                   ("palette.png", None), ("rotated.jpg", None), ("onepixel.png", "only 1x1 pixels")]],

    # -- options
    explain_case("target-out-of-range", CAT_, "--target", "1000", needles=["--target 1000 is out of range", "0..999"]),
    explain_case("target-negative", CAT_, "--target", "-1", needles=["--target -1 is negative", "leave --target out"]),
    explain_case("steps-zero", CAT_, "--steps", "0", needles=["--steps must be a positive whole number"]),
    explain_case("steps-negative", CAT_, "--steps", "-3", needles=["--steps must be a positive whole number"]),
    explain_case("steps-absurd", CAT_, "--steps", "10000000", needles=["--steps 10000000 is too many", "at most 1000"],
                 check=_quick),
    explain_case("steps-not-a-number", CAT_, "--steps", "many", needles=["invalid int value: 'many'", "--help"]),
    explain_case("steps-below-rule-minimum", CAT_, "--steps", "1", "--rule", "riemann_left",
                 needles=["at least 2 steps", "riemann_right"]),
    explain_case("rule-unknown", CAT_, "--rule", "simpson", needles=["invalid choice: 'simpson'", "gausslegendre"]),
    explain_case("device-unknown", CAT_, "--device", "tpu", needles=["invalid choice: 'tpu'"]),
    explain_case("max-memory-zero", CAT_, "--max-memory", "0", needles=["--max-memory must be a positive size"]),
    explain_case("max-memory-negative", CAT_, "--max-memory=-2G", needles=["--max-memory must be a positive size"]),
    explain_case("max-memory-unreadable", CAT_, "--max-memory", "lots",
                 needles=["cannot read memory size 'lots'", "2G"]),
    explain_case("threads-zero", CAT_, "--threads", "0", needles=["--threads must be a positive whole number"]),
    explain_case("baseline-unknown", CAT_, "--baseline", "purple", needles=["unknown baseline 'purple'", "zeros"]),
    explain_case("baseline-wrong-shape", CAT_, "--baseline", "@shape.npy", needles=["does not match the input shape"]),
    explain_case("max-memory-below-one-step", CAT_, "--max-memory", "1K", "--out", "f.png", ok=True,
                 outputs=("f.png",), warning="smaller than one integration step"),
    explain_case("device-cuda-that-does-not-load", CAT_, "--device", "cuda", "--out", "f.png", ok=True,
                 outputs=("f.png",), check=_cuda_line),

    # -- runtime faults
    Case("attributions-not-finite",
         lambda c: ["explain", c.m["overflow_gig"], "x.npy", "--steps", "2", "--save-npy", "a.npy", "--out", "f.png"],
         lambda c: [c.m["overflow_gig"], c.cwd / "x.npy"], ("NaN or infinite values appeared", "nothing was written"),
         setup=lambda c: np.save(c.cwd / "x.npy", np.ones((1, 3, 8, 8), np.float32)), check=_only_input_left),
]


@pytest.fixture(scope="module")
def matrix(request, models, images, demo_gig, demo_model, tmp_path_factory) -> dict[str, SimpleNamespace]:
    """Run the selected cases of the matrix, WORKERS at a time, with every watched path hashed before and after."""
    selected = {item.callspec.params["case"].id for item in request.session.items
                if getattr(item, "originalname", "") == "test_bad_input" and hasattr(item, "callspec")}
    base = tmp_path_factory.mktemp("matrix")
    runs = []
    for i, case in enumerate(CASES):
        if case.id not in selected:
            continue
        cwd = base / f"c{i:02d}"
        cwd.mkdir()
        ctx = SimpleNamespace(m=models, im=images, gig=demo_gig, plain=demo_model, cwd=cwd, seconds=None)
        if case.setup:
            case.setup(ctx)
        inputs = [Path(p) for p in case.inputs(ctx)]
        watched = [*inputs, *(p.parent for p in inputs)] + ([] if case.ok else [cwd])
        runs.append(SimpleNamespace(case=case, ctx=ctx, args=case.args(ctx), watched=[str(p) for p in watched]))
    everything = sorted({p for r in runs for p in r.watched})
    before = digest(everything)

    def one(r):
        t0 = time.perf_counter()
        r.proc = run_cli(*r.args, cwd=r.ctx.cwd)
        r.ctx.seconds = time.perf_counter() - t0
        return r

    with ThreadPoolExecutor(WORKERS) as pool:
        list(pool.map(one, runs))
    after = digest(everything)
    for r in runs:
        r.changed = [p for p in r.watched if before[p] != after[p]]
    return {r.case.id: r for r in runs}


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_bad_input(matrix, case, tally):
    r = matrix[case.id]
    p = r.proc
    if case.ok:
        assert p.returncode == 0, p.stderr
        assert "Traceback" not in p.stderr
        if case.check is not _cuda_line:
            lines = stderr_lines(p)
            if case.warning is None:
                assert not lines, p.stderr
            else:
                assert len(lines) == 1 and lines[0].startswith("onnx-gig: warning: ") and case.warning in lines[0], \
                    p.stderr
        for o in case.outputs:
            assert (r.ctx.cwd / o).is_file(), o
    else:
        assert_refused(p, case.needles)
    assert not r.changed, f"changed: {r.changed}"
    if case.check:
        case.check(r.ctx, p)
    tally[TALLY_KEY] += 1


def test_the_matrix_covers_the_issue():
    """Every kind of bad input the issue lists has at least one case (a guard against silently dropping one)."""
    ids = " ".join(c.id for c in CASES)
    for kind in ("model-missing", "model-empty", "model-truncated", "model-random-bytes", "model-png-named-onnx",
                 "model-uint8-input", "model-two-inputs", "model-two-outputs", "model-unsupported-op",
                 "external-data-missing", "external-data-dotdot", "model-already-converted", "output-is-the-input",
                 "existing-output", "output-under-a-file", "image-truncated-jpeg", "image-gray16", "image-gray.png",
                 "image-rgba", "image-cmyk", "image-palette", "image-rotated", "image-onepixel",
                 "image-decompression-bomb", "npy-wrong-shape", "npy-int-dtype", "npy-nan", "npy-inf",
                 "target-out-of-range", "target-negative", "steps-zero", "steps-absurd", "max-memory-below-one-step",
                 "attributions-not-finite", "device-cuda"):
        assert kind in ids, kind


def test_external_data_inside_the_folder_is_read(models, tmp_path):
    out = tmp_path / "ext_gig.onnx"
    files = [models["ext_ok"], *_data_files(models["ext_ok"])]
    before = digest(files)
    p = run_cli("convert", models["ext_ok"], "-o", out, cwd=tmp_path)
    assert p.returncode == 0 and out.is_file(), p.stderr
    assert digest(files) == before


# ------------------------------------------------------------ in process: external data, failed writes, Ctrl-C


def test_external_data_is_checked_before_onnx_reads_it(models, monkeypatch, tally):
    """The folder check is ours, not onnx's: it runs before onnx.load could follow the reference."""
    from onnx_gig.errors import ModelError
    from onnx_gig.loader import load_model

    calls = []
    monkeypatch.setattr(onnx, "load_external_data_for_model", lambda *a, **k: calls.append(a))
    with pytest.raises(ModelError, match="outside the model's folder"):
        load_model(models["ext_dotdot"])
    assert not calls
    tally[FAULTS_KEY] += 1


@pytest.mark.skipif(os.name != "posix" or os.geteuid() == 0, reason="root can write into read-only folders")
def test_unwritable_folder(models, tmp_path, tally):
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o555)
    try:
        refused(["convert", models["good"], "-o", ro / "m.onnx"], cwd=tmp_path, inputs=[models["good"]],
                needles=["cannot write", "writable folder"], tally=tally, folders=[ro])
    finally:
        ro.chmod(0o755)


def test_unwritable_folder_in_process(models, tmp_path, monkeypatch, tally):
    """Creating the temporary file fails (EACCES, as for a read-only folder even when running as root)."""
    import tempfile

    from onnx_gig import convert
    from onnx_gig.errors import InputError

    def denied(*a, **k):
        raise PermissionError(errno.EACCES, "Permission denied")

    monkeypatch.setattr(tempfile, "mkstemp", denied)
    with pytest.raises(InputError, match="cannot write .*Permission denied; choose a writable folder"):
        convert(models["good"], tmp_path / "m.onnx")
    assert list(tmp_path.iterdir()) == []
    tally[FAULTS_KEY] += 1


@pytest.mark.parametrize("existing", [False, True])
@pytest.mark.parametrize("fault", [OSError(errno.ENOSPC, "No space left on device"), KeyboardInterrupt()],
                         ids=["disk-full", "ctrl-c"])
def test_failure_mid_write_leaves_no_partial_file(models, tmp_path, monkeypatch, fault, existing, tally):
    """The writer dies half-way: the destination keeps its old bytes (or stays absent); no temp file remains."""
    from onnx_gig import convert
    from onnx_gig.errors import InputError

    out = tmp_path / "m_gig.onnx"
    if existing:
        out.write_bytes(b"old model")

    def half_then_fail(model, path, *a, **k):
        data = model.SerializeToString()
        with open(path, "wb") as f:
            f.write(data[: len(data) // 2])
        raise fault

    monkeypatch.setattr(onnx, "save_model", half_then_fail)
    expected = KeyboardInterrupt if isinstance(fault, KeyboardInterrupt) else InputError
    with pytest.raises(expected) as e:
        convert(models["good"], out)
    if expected is InputError:
        assert "No space left on device" in str(e.value) and "nothing was written" in str(e.value)
        assert "\n" not in str(e.value)
    assert sorted(os.listdir(tmp_path)) == (["m_gig.onnx"] if existing else [])
    if existing:
        assert out.read_bytes() == b"old model"
    tally[FAULTS_KEY] += 1


def test_protected_inputs_are_known_by_identity_once(tmp_path):
    """A folder run's outputs are checked against every input: by (device, inode), read once; a link or a hard
    link to an input is refused, another file is not, and an input missing is no error."""
    from onnx_gig.errors import InputError
    from onnx_gig.fileio import Protected, check_output

    inputs = [tmp_path / f"in{i}.png" for i in range(3)]
    for f in inputs:
        f.write_bytes(b"photo")
    (tmp_path / "soft.png").symlink_to(inputs[1])
    os.link(inputs[2], tmp_path / "hard.png")
    (tmp_path / "other.png").write_bytes(b"photo")
    guard = Protected([*inputs, tmp_path / "gone.png", None])
    for dest, refused in (("soft.png", True), ("hard.png", True), ("in0.png", True), ("other.png", False),
                          ("new.png", False)):
        if refused:
            with pytest.raises(InputError, match="refusing to overwrite the input file"):
                check_output(tmp_path / dest, guard)
        else:
            check_output(tmp_path / dest, guard)
    assert guard._ids is not None and len(guard._ids) == 3  # read once, kept for the next output


def test_atomic_path_cleans_up_on_keyboard_interrupt(tmp_path, tally):
    from onnx_gig.fileio import atomic_path

    dest = tmp_path / "a.bin"
    with pytest.raises(KeyboardInterrupt):
        with atomic_path(dest) as tmp:
            tmp.write_bytes(b"half")
            raise KeyboardInterrupt
    assert list(tmp_path.iterdir()) == []
    tally[FAULTS_KEY] += 1


def test_ctrl_c_during_explain_leaves_no_output(demo_gig, tmp_path, monkeypatch, capsys, tally):
    """Ctrl-C while the attribution runs: exit 130, one line, and neither the figure nor the .npy exists."""
    from onnx_gig.cli import main
    from onnx_gig.runtime import GigModel

    def interrupted(self, *a, **k):
        raise KeyboardInterrupt

    monkeypatch.setattr(GigModel, "explain", interrupted)
    monkeypatch.chdir(tmp_path)
    rc = main(["explain", str(demo_gig), str(CAT), "--steps", "2", "--save-npy", "a.npy"])
    err = [ln for ln in capsys.readouterr().err.splitlines() if ln.strip()]
    assert rc == 130 and len(err) == 1 and "interrupted" in err[0]
    assert list(tmp_path.iterdir()) == []
    tally[FAULTS_KEY] += 1


def test_ctrl_c_while_writing_the_figure(demo_gig, tmp_path, monkeypatch, capsys, tally):
    from onnx_gig.cli import main

    real_save = Image.Image.save

    def half_save(self, fp, *a, **k):
        real_save(self, fp, *a, **k)
        with open(fp, "r+b") as f:
            f.truncate(100)
        raise KeyboardInterrupt

    monkeypatch.setattr(Image.Image, "save", half_save)
    monkeypatch.chdir(tmp_path)
    rc = main(["explain", str(demo_gig), str(CAT), "--steps", "2", "--save-npy", "a.npy"])
    assert rc == 130
    assert sorted(os.listdir(tmp_path)) == ["a.npy"]  # written complete before the figure; no half figure
    tally[FAULTS_KEY] += 1


# ------------------------------------------------------------ in process: images, budget, debug, internal errors


def test_exif_orientation_is_honoured(images, tmp_path):
    """The rotated JPEG gives the tensor of the upright photo (JPEG noise aside), not of the stored pixels."""
    from onnx_gig.imageio import Preprocess, load_input

    pp = Preprocess()
    upright = Image.open(CAT).convert("RGB")
    upright.save(tmp_path / "upright.jpg", quality=95)
    shape = ["N", 3, 224, 224]
    x_rot, _ = load_input(images["rotated.jpg"], pp, shape)
    x_up, _ = load_input(tmp_path / "upright.jpg", pp, shape)
    stored = Image.open(images["rotated.jpg"]).convert("RGB")
    assert stored.size == upright.size[::-1]  # the stored pixels lie on their side
    x_stored, _ = load_input(_save(stored, tmp_path / "stored.png"), pp, shape)
    err_up, err_stored = np.abs(x_rot - x_up).mean(), np.abs(x_rot - x_stored).mean()
    assert err_up < 0.05 < err_stored, (err_up, err_stored)


def _save(img: Image.Image, path: Path) -> Path:
    img.save(path)
    return path


def test_decompression_bomb_limit_in_process(tmp_path, monkeypatch, tally):
    """Pillow's MAX_IMAGE_PIXELS guards every image we open: with a small limit, a normal photo is refused."""
    from onnx_gig.errors import InputError
    from onnx_gig.imageio import load_image

    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)
    for size in ((40, 40), (100, 100)):  # 1.6x the limit (Pillow warns) and 10x (Pillow raises)
        p = _save(Image.new("RGB", size), tmp_path / f"{size[0]}.png")
        with pytest.raises(InputError, match="too large to open safely") as e:
            load_image(p)
        assert "\n" not in str(e.value)
    tally[FAULTS_KEY] += 2


def test_budget_smaller_than_one_step_gives_the_same_attributions(demo_gig, recwarn):
    from onnx_gig import GigModel, explain

    small = explain(GigModel(demo_gig, max_memory="1K"), CAT, steps=3, draw=False)
    assert any("smaller than one integration step" in str(w.message) for w in recwarn.list)
    full = explain(demo_gig, CAT, steps=3, draw=False)
    np.testing.assert_allclose(small.attributions, full.attributions, rtol=1e-4, atol=1e-6)


def test_debug_shows_the_traceback(models, tmp_path, tally):
    p = run_cli("--debug", "convert", models["truncated"], "-o", tmp_path / "o.onnx", cwd=tmp_path)
    assert p.returncode == 2
    assert "Traceback" in p.stderr
    assert p.stderr.strip().splitlines()[-1].startswith("onnx-gig: error: cannot read")
    tally[TALLY_KEY] += 1


def test_an_internal_error_is_still_one_line(models, tmp_path, monkeypatch, capsys, tally):
    import onnx_gig.integrate as integrate  # convert imports the graph builder when it runs
    from onnx_gig.cli import main

    def bug(*a, **k):
        raise ZeroDivisionError("division by zero\nsecond line")

    monkeypatch.setattr(integrate, "build_ig_model", bug)
    rc = main(["convert", str(models["good"]), "-o", str(tmp_path / "o.onnx")])
    err = [ln for ln in capsys.readouterr().err.splitlines() if ln.strip()]
    assert rc == 1 and len(err) == 1
    assert err[0].startswith("onnx-gig: error: internal error (ZeroDivisionError") and "--debug" in err[0]
    assert list(tmp_path.iterdir()) == []
    tally[FAULTS_KEY] += 1


def test_outputs_get_the_umask_mode_not_mkstemps_0600(tmp_path):
    """A converted model or figure is readable by others (a server user, Triton's container) as open() would make it."""
    from onnx_gig.fileio import atomic_path

    old = os.umask(0o022)
    try:
        dest = tmp_path / "out.bin"
        with atomic_path(dest) as tmp:
            tmp.write_bytes(b"x")
        assert stat.S_IMODE(dest.stat().st_mode) == 0o644
    finally:
        os.umask(old)
