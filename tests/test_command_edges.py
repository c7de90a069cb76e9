"""Edges of export, inspect, triton, eval and sanity a user sweep found, run through the real CLI on real files."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from onnx_gig import convert
from test_eval import tiny_cnn, write_photos
from test_inspect_export import MODULE  # Net and build(); the classes below add the ways exports go wrong

TINYNETS = MODULE + textwrap.dedent('''

    class Noisy(Net):
        def forward(self, x):
            return super().forward(x) + torch.rand(x.shape[0], 5)


    class TupleOut(Net):
        def forward(self, x):
            y = super().forward(x)
            return y, y * 2


    def raises():
        raise RuntimeError("boom in factory")
''')


def run_cli(*args, cwd=None):
    return subprocess.run([sys.executable, "-m", "onnx_gig.cli", *map(str, args)], capture_output=True, text=True,
                          cwd=cwd, timeout=300)


def one_error(p, code: int = 2) -> str:
    """The single stderr line of a refused command (exit ``code``), for the test to read."""
    lines = [ln for ln in p.stderr.splitlines() if ln.strip()]
    assert p.returncode == code and len(lines) == 1, (p.returncode, p.stderr)
    assert "internal error" not in lines[0]
    return lines[0]


@pytest.fixture
def mods(tmp_path):
    (tmp_path / "tinynets.py").write_text(TINYNETS)
    return tmp_path


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    d = tmp_path_factory.mktemp("edges")
    return tiny_cnn(d / "tiny.onnx"), write_photos(d / "photos", 2)


def leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name.endswith(".tmp"))


# 1. export: --force, and a failed check leaves nothing (and an existing file untouched)

def test_export_refuses_an_existing_output_without_force_and_a_failed_check_keeps_the_old_file(mods):
    out = mods / "t.onnx"
    assert run_cli("export", "tinynets:build", "-o", out, "--input-size", "3,16,16", cwd=mods).returncode == 0
    good = out.read_bytes()
    err = one_error(run_cli("export", "tinynets:build", "-o", out, "--input-size", "3,16,16", cwd=mods))
    assert "already exists" in err and "--force" in err
    err = one_error(run_cli("export", "tinynets:Noisy", "-o", out, "--input-size", "3,16,16", "--force", cwd=mods))
    assert "disagrees with the module" in err and "nothing was written" in err
    assert out.read_bytes() == good and not leftovers(mods)
    err = one_error(run_cli("export", "tinynets:Noisy", "-o", mods / "n.onnx", "--input-size", "3,16,16", cwd=mods))
    assert not (mods / "n.onnx").exists() and not leftovers(mods)
    p = run_cli("export", "tinynets:build", "-o", out, "--input-size", "3,16,16", "-f", cwd=mods)
    assert p.returncode == 0 and "wrote" in p.stdout, p.stderr


# 2. export: the factory's own error, a tuple output, sizes, opsets, unreadable weights

@pytest.mark.parametrize("args,needles", [
    (["tinynets:raises"], ["calling 'tinynets:raises' failed: boom in factory"]),
    (["tinynets:TupleOut", "--input-size", "3,16,16"], ["returns a tuple of 2", "wrap it"]),
    (["tinynets:build", "--input-size", "3,100000,100000"], ["--input-size 3,100000,100000", "3,224,224"]),
    (["tinynets:build", "--input-size", "3,16,16", "--opset", "5"], ["--opset 5", "7 to 20"]),
    (["tinynets:build", "--input-size", "3,16,16", "--opset", "99"], ["--opset 99", "7 to 20"]),
])
def test_export_refusals_are_one_line(mods, args, needles):
    err = one_error(run_cli("export", *args, "-o", mods / "x.onnx", cwd=mods))
    for n in needles:
        assert n in err, err
    assert not (mods / "x.onnx").exists() and not leftovers(mods)


def test_export_at_opset_7_keeps_its_weights_as_inputs_and_still_counts_one_image_input(mods):
    p = run_cli("export", "tinynets:build", "-o", mods / "o7.onnx", "--input-size", "3,16,16", "--opset", "7", cwd=mods)
    assert p.returncode == 0, p.stderr
    assert onnx.load(str(mods / "o7.onnx")).opset_import[0].version == 7


@pytest.mark.parametrize("content,needle", [(b"garbage\n", "not a file torch.load reads safely"),
                                            (b"", "empty or cut short")])
def test_export_unreadable_weights_is_one_complete_line(mods, content, needle):
    (mods / "w.pt").write_bytes(content)
    err = one_error(run_cli("export", "tinynets:build", "-o", mods / "w.onnx", "--weights", mods / "w.pt", cwd=mods))
    assert needle in err and err.endswith("torch.save(module.state_dict(), PATH)"), err


# 3. inspect on a converted model: what it is, its method and contract

def test_inspect_a_converted_model_shows_its_contract_not_a_conversion_check(tiny, tmp_path):
    model, _ = tiny
    gig = tmp_path / "tiny_gig.onnx"
    convert(model, gig, method="ig")
    p = run_cli("inspect", gig)
    assert p.returncode == 0, p.stderr
    assert "onnx-gig attribution model (method ig" in p.stdout and "convert refuses it" in p.stdout
    assert "--method" not in p.stdout and "convert would explain" not in p.stdout
    for key in ("method: ig", "score: logits", "num_classes: 3", "probability: softmax", "row_blocks:"):
        assert key in p.stdout, p.stdout
    assert "alphas" in p.stdout and "optional" in p.stdout  # the contract's defaulted inputs are listed
    rep = json.loads(run_cli("inspect", gig, "--json").stdout)
    assert rep["converted"]["method"] == "ig" and rep["converted"]["num_classes"] == 3 and rep["refusals"] == {}


# 4. a node in a non-standard domain has no rule

def custom_domain_model(path: Path) -> Path:
    r = np.random.default_rng(0)
    nodes = [helper.make_node("Conv", ["x", "w"], ["c"], name="conv", kernel_shape=[3, 3], pads=[1, 1, 1, 1]),
             helper.make_node("Relu", ["c"], ["r"], name="odd_relu", domain="com.example"),
             helper.make_node("GlobalAveragePool", ["r"], ["g"], name="gap"),
             helper.make_node("Flatten", ["g"], ["f"], name="flat"),
             helper.make_node("MatMul", ["f", "wf"], ["y"], name="fc")]
    g = helper.make_graph(nodes, "dom", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 3, 8, 8])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 5])],
                          [numpy_helper.from_array(r.normal(0, 1, (4, 3, 3, 3)).astype(np.float32), "w"),
                           numpy_helper.from_array(r.normal(0, 1, (4, 5)).astype(np.float32), "wf")])
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid("com.example", 1)])
    m.ir_version = 8
    onnx.save(m, str(path))
    return path


def test_inspect_gives_a_custom_domain_op_no_rule_and_names_it_as_the_blocker(tmp_path):
    path = custom_domain_model(tmp_path / "dom.onnx")
    rep = json.loads(run_cli("inspect", path, "--json").stdout)
    ops = {r["op"]: r for r in rep["ops"]}
    assert "Relu" not in ops  # no standard Relu row with count 0 "on path"
    odd = ops["com.example.Relu"]
    assert odd["count"] == 1 and odd["on_path"] and set(odd["rules"].values()) == {"-"}
    for name in ("ig", "gnl-ig", "gnl-ig-all"):
        assert rep["refusals"][name].startswith("unsupported op 'com.example.Relu' in node 'odd_relu'"), rep
    out = run_cli("inspect", path).stdout
    assert "--method gnl-ig: refused: unsupported op 'com.example.Relu'" in out and ": ok" not in out


def test_convert_refuses_a_custom_domain_op_by_name(tmp_path):
    path = custom_domain_model(tmp_path / "dom.onnx")
    err = one_error(run_cli("convert", path, "-o", tmp_path / "dom_gig.onnx"))
    assert "com.example" in err and "odd_relu" in err, err


# 5, 6. eval's and sanity's numbers, the 1000-step cap included, refused before any work

@pytest.mark.parametrize("opt,needle", [(["--batch-size", "0"], "--batch-size"), (["--batch-size=-1"], "--batch-size"),
                                        (["--step", "0"], "--step "), (["--steps", "0"], "--steps"),
                                        (["--steps", "1001"], "at most 1000"), (["--seed=-1"], "--seed"),
                                        (["--threads", "0"], "--threads")])
def test_eval_refuses_bad_numbers_in_one_line(tiny, tmp_path, opt, needle):
    model, photos = tiny
    err = one_error(run_cli("eval", model, *photos, "--methods", "ig", "--out-dir", tmp_path / "ev", *opt))
    assert needle in err, err
    assert not (tmp_path / "ev").exists()  # nothing was converted


@pytest.mark.parametrize("opt,needle", [(["--max-depths", "0"], "--max-depths"), (["--max-depths=-2"], "--max-depths"),
                                        (["--steps", "1001"], "at most 1000"), (["--seed=-3"], "--seed"),
                                        (["--depths="], "--depths is empty"), (["--depths", " , "], "--depths is empty")])
def test_sanity_refuses_bad_numbers_and_an_empty_depth_list_in_one_line(tiny, tmp_path, opt, needle):
    model, photos = tiny
    err = one_error(run_cli("sanity", model, *photos, "--out-dir", tmp_path / "sa", *opt))
    assert needle in err, err
    assert not (tmp_path / "sa").exists()


# 7. triton refuses a negative queue delay

def test_triton_refuses_a_negative_queue_delay(tiny, tmp_path):
    model, _ = tiny
    gig = tmp_path / "tiny_gig.onnx"
    convert(model, gig)
    err = one_error(run_cli("triton", gig, "--repository", tmp_path / "repo", "--max-batch-size", "4",
                            "--max-queue-delay-us=-5"))
    assert "--max-queue-delay-us" in err and not (tmp_path / "repo").exists()
    p = run_cli("triton", gig, "--repository", tmp_path / "repo", "--max-batch-size", "4", "--max-queue-delay-us", "0")
    assert p.returncode == 0, p.stderr


# 8. a closed stdout pipe ends the program quietly

def test_a_closed_stdout_pipe_ends_quietly(tiny):
    model, _ = tiny
    read, write = os.pipe()
    os.close(read)  # the reader is gone before the first line: `onnx-gig inspect M | head -0`
    try:
        p = subprocess.run([sys.executable, "-m", "onnx_gig.cli", "inspect", str(model)], stdout=write,
                           stderr=subprocess.PIPE, text=True, timeout=120)
    finally:
        os.close(write)
    assert p.returncode == 141 and p.stderr == "", (p.returncode, p.stderr)


# 9. sanity: the random map's 1.000 comes with a note

def test_sanity_random_map_carries_a_note(tiny, tmp_path):
    model, photos = tiny
    p = run_cli("sanity", model, photos[0], "--methods", "random", "--depths", "all", "--out-dir", tmp_path / "sa")
    assert p.returncode == 0, p.stderr
    assert "note: random:" in p.stdout and "by construction" in p.stdout
    assert "by construction" in (tmp_path / "sa" / "sanity.md").read_text()


# 10. eval into a folder holding an earlier eval's results: replaced, with a note on stderr

def test_eval_notes_that_it_replaces_an_earlier_evals_results(tiny, tmp_path):
    model, photos = tiny
    args = ("eval", model, *photos, "--methods", "random", "--step", "16", "--out-dir", tmp_path / "ev")
    first = run_cli(*args)
    assert first.returncode == 0 and "replacing" not in first.stderr, first.stderr
    second = run_cli(*args)
    assert second.returncode == 0, second.stderr
    notes = [ln for ln in second.stderr.splitlines() if "replacing the results of an earlier eval" in ln]
    assert len(notes) == 1 and str(tmp_path / "ev") in notes[0]
    assert (tmp_path / "ev" / "results.csv").is_file()
