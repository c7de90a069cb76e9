"""The command line and the demo, run for real: real .onnx files, real PNGs, onnxruntime sessions."""
from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from onnx_gig import GigModel, explain
from onnx_gig.cli import main

CAT_CLASSES = {281, 282, 283, 284, 285}  # tabby, tiger cat, Persian, Siamese, Egyptian cat


def run_cli(*args, cwd=None):
    return subprocess.run([sys.executable, "-m", "onnx_gig.cli", *map(str, args)], capture_output=True, text=True,
                          cwd=cwd, timeout=300)


def test_demo_photo_is_a_cat_and_the_figure_is_written(demo_gig, tmp_path, demo_model):
    from conftest import MODELS

    r = explain(demo_gig, MODELS / "images" / "chelsea.png", out=tmp_path / "fig.png", save_npy=tmp_path / "a.npy")
    assert r.top[0][0] in CAT_CLASSES, r.top
    assert {281, 282} <= {k for k, _, _ in r.top[:3]}  # tabby and tiger cat right behind
    assert r.target == r.top[0][0]
    assert "cat" in r.target_label
    fig = Image.open(r.figure)
    assert fig.mode == "RGB" and fig.width > 3 * 224
    raw = np.load(tmp_path / "a.npy")
    assert raw.dtype == np.float32 and raw.shape == (3, 224, 224)
    np.testing.assert_array_equal(raw, r.attributions)
    assert r.saliency.shape == (224, 224) and r.saliency.max() == pytest.approx(1.0)
    s = np.abs(raw.sum(0))  # the drawn map: |channel sum| over its 99th percentile, clipped (the .npy is raw)
    np.testing.assert_allclose(r.saliency, np.minimum(s / np.percentile(s, 99), 1.0), rtol=1e-4, atol=1e-7)


def test_other_demo_photo(demo_gig, tmp_path):
    from conftest import MODELS

    r = explain(demo_gig, MODELS / "images" / "coffee.png", out=tmp_path / "c.png", steps=8)
    assert r.top[0][0] == 967  # espresso


def test_cli_convert_and_explain(tmp_path, demo_model):
    from conftest import MODELS

    out = tmp_path / "m_gig.onnx"
    p = run_cli("convert", demo_model, "-o", out, "--method", "ig")
    assert p.returncode == 0, p.stderr
    assert "wrote" in p.stdout and out.is_file()
    p = run_cli("explain", out, MODELS / "images" / "chelsea.png", "--steps", "4", "--rule", "riemann_middle",
                "--baseline", "black", "--target", "281", "--save-npy", tmp_path / "a.npy", cwd=tmp_path)
    assert p.returncode == 0, p.stderr
    assert "explained class 281 'tabby, tabby cat'" in p.stdout
    assert (tmp_path / "chelsea_gig.png").is_file() and (tmp_path / "a.npy").is_file()
    assert p.stdout.count("%") == 5  # the top-5 table


def test_explain_accepts_a_preprocessed_npy(demo_gig, tmp_path, rng):
    x = rng.normal(size=(1, 3, 224, 224)).astype(np.float32)
    np.save(tmp_path / "x.npy", x)
    r = explain(demo_gig, tmp_path / "x.npy", steps=2, out=tmp_path / "x.png")
    direct = GigModel(demo_gig).attribute(x, target=r.target, n_steps=2)
    np.testing.assert_allclose(r.attributions, direct[0], rtol=1e-6)


# Bad input (one readable line, inputs untouched, --force, faults): tests/test_bad_inputs.py.


def test_help_reads_well():
    for cmd in ([], ["convert"], ["explain"], ["demo"]):
        p = run_cli(*cmd, "--help")
        assert p.returncode == 0 and "usage: onnx-gig" in p.stdout
    p = run_cli("explain", "--help")
    for opt in ("--target", "--steps", "--rule", "--baseline", "--out", "--save-npy", "--max-memory"):
        assert opt in p.stdout
    helped = " ".join(run_cli("convert", "--help").stdout.split()).replace("- ", "-")  # argparse wraps at hyphens
    from onnx_gig.autodiff import rule_set_names
    for method in rule_set_names():  # each method says what it does (gnl-ig-all was listed but not described)
        assert f"{method}: " in helped, method


def test_main_without_command_prints_help(capsys):
    assert main([]) == 2
    assert "convert" in capsys.readouterr().out


def test_usage_errors_are_one_line_naming_the_program_once(capsys):
    """An unknown option (argparse reports it from the top parser) and a subcommand's bad value: one line each,
    the program named once ('onnx-gig: error: onnx-gig: ...' before)."""
    for argv, where in ((["explain", "m.onnx", "x.png", "-o", "y.png"], "onnx-gig: error: unrecognized arguments"),
                        (["explain", "m.onnx", "x.png", "--steps", "many"], "onnx-gig: error: onnx-gig explain: ")):
        with pytest.raises(SystemExit) as done:
            main(argv)
        err = capsys.readouterr().err
        assert done.value.code == 2 and err.startswith(where) and err.count("\n") == 1, err
        assert "error: onnx-gig:" not in err, err
