"""onnx-gig inspect and onnx-gig export, run through the CLI, plus convert's one-line refusal."""
from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from onnx import helper as h

from onnx_gig.cli import main

from oracles import f32, make_model

ort.set_default_logger_severity(3)


def round_model(tmp_path):
    nodes = [h.make_node("Conv", ["x", "w"], ["c"], kernel_shape=[1, 1], name="conv_a"),
             h.make_node("Round", ["c"], ["e"], name="my_round"),
             h.make_node("GlobalAveragePool", ["e"], ["p"]),
             h.make_node("Flatten", ["p"], ["y"])]
    m = make_model(nodes, (1, 3, 8, 8), {"w": f32(np.ones((4, 3, 1, 1)))})
    path = tmp_path / "round.onnx"
    onnx.save(m, str(path))
    return path


def test_inspect_demo_model(demo_model, capsys):
    assert main(["inspect", str(demo_model)]) == 0
    out = capsys.readouterr().out
    assert "opset ai.onnx 17" in out and "input" in out and "[" in out
    lines = {ln.split()[0]: ln.split() for ln in out.splitlines() if ln.startswith("  ") and len(ln.split()) >= 6}
    conv, clip = lines["Conv"], lines["Clip"]
    assert int(conv[1]) > 10 and conv[2:6] == ["plain", "plain", "plain", "yes"]
    assert clip[2:6] == ["plain", "guided", "guided", "yes"]  # ReLU6: guided in both guided sets
    assert "convert would explain" in out and "with respect to input" in out
    assert "--method gnl-ig: ok" in out


def test_inspect_json_and_refusal(tmp_path, capsys):
    path = round_model(tmp_path)
    assert main(["inspect", str(path), "--json"]) == 0
    rep = json.loads(capsys.readouterr().out)
    assert rep["opsets"] == {"ai.onnx": 17} and rep["input_name"] == "x" and rep["score_name"] == "y"
    ops = {r["op"]: r for r in rep["ops"]}
    assert ops["Round"]["rules"] == {"ig": "-", "gnl-ig": "-", "gnl-ig-all": "-"} and ops["Round"]["on_path"]
    assert ops["Conv"]["count"] == 1
    assert rep["refusals"]["ig"] == "unsupported op 'Round' in node 'my_round'"
    assert main(["inspect", str(path)]) == 0
    assert "--method ig: refused: unsupported op 'Round' in node 'my_round'" in capsys.readouterr().out


def test_inspect_names_a_model_it_cannot_use(tmp_path, capsys):
    m = make_model([h.make_node("Relu", ["x"], ["y"])], (1, 3, 4, 4))
    m.graph.input[0].type.tensor_type.elem_type = onnx.TensorProto.INT64
    path = tmp_path / "int.onnx"
    onnx.save(m, str(path))
    assert main(["inspect", str(path)]) == 0
    assert "convert would refuse this model:" in capsys.readouterr().out


def test_convert_refuses_an_unsupported_op_in_one_line(tmp_path):
    path = round_model(tmp_path)
    p = subprocess.run([sys.executable, "-m", "onnx_gig.cli", "convert", str(path), "-o", str(tmp_path / "o.onnx")],
                       capture_output=True, text=True, timeout=120)
    assert p.returncode == 2
    err = [ln for ln in p.stderr.splitlines() if ln.strip()]
    assert len(err) == 1 and "'Round'" in err[0] and "my_round" in err[0], p.stderr
    assert not (tmp_path / "o.onnx").exists()


MODULE = textwrap.dedent('''
    import torch
    import torch.nn as nn

    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = nn.Conv2d(3, 4, 3, padding=1)
            self.fc = nn.Linear(4, 5)

        def forward(self, x):
            y = torch.relu(self.conv(x))
            y = torch.nn.functional.max_pool2d(y, 2)
            return self.fc(y.mean((2, 3)))

    def build():
        return Net()
''')


@pytest.fixture
def module_dir(tmp_path, monkeypatch):
    (tmp_path / "mynets_for_export.py").write_text(MODULE)
    monkeypatch.chdir(tmp_path)
    monkeypatch.syspath_prepend(str(tmp_path))
    yield tmp_path
    sys.modules.pop("mynets_for_export", None)


def test_export_then_convert(module_dir, capsys):
    torch.manual_seed(3)
    import mynets_for_export

    ref = mynets_for_export.build().eval()
    torch.save(ref.state_dict(), module_dir / "w.pt")
    assert main(["export", "mynets_for_export:build", "--weights", "w.pt", "-o", "m.onnx",
                 "--input-size", "3,16,16"]) == 0
    assert "wrote m.onnx" in capsys.readouterr().out
    m = onnx.load(str(module_dir / "m.onnx"))
    dim0 = m.graph.input[0].type.tensor_type.shape.dim[0]
    assert dim0.dim_param and not dim0.dim_value  # a dynamic batch axis
    x = f32(np.random.default_rng(0).standard_normal((3, 3, 16, 16)))
    sess = ort.InferenceSession(str(module_dir / "m.onnx"), providers=["CPUExecutionProvider"])
    got = sess.run(None, {"image": x})[0]
    with torch.no_grad():
        np.testing.assert_allclose(got, ref(torch.from_numpy(x)).numpy(), rtol=1e-4, atol=1e-5)
    assert main(["convert", "m.onnx"]) == 0
    assert (module_dir / "m_gig.onnx").is_file()


def test_export_checkpoint_dict_and_bad_weights(module_dir, capsys):
    import mynets_for_export

    torch.save({"state_dict": mynets_for_export.build().state_dict(), "epoch": 3}, module_dir / "ckpt.pt")
    assert main(["export", "mynets_for_export:build", "--weights", "ckpt.pt", "-o", "a.onnx",
                 "--input-size", "3,8,8"]) == 0
    torch.save({"conv.weight": torch.zeros(1)}, module_dir / "bad.pt")
    assert main(["export", "mynets_for_export:build", "--weights", "bad.pt", "-o", "b.onnx"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "do not fit the module" in err[0] and "missing keys" in err[0]
    assert not (module_dir / "b.onnx").exists()


@pytest.mark.parametrize("spec,needle", [("no_colon", "package.module:factory"),
                                         ("no_such_module_xyz:build", "cannot import module"),
                                         ("mynets_for_export:nothing", "has no attribute")])
def test_export_bad_factory(module_dir, capsys, spec, needle):
    assert main(["export", spec, "-o", "x.onnx"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and needle in err[0]


def test_export_without_torch_says_so_in_one_line(tmp_path):
    code = ("import sys; sys.modules['torch'] = None\n"
            "from onnx_gig.cli import main\n"
            "sys.exit(main(['export', 'pkg.mod:build', '-o', 'x.onnx']))")
    p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=tmp_path, timeout=120)
    assert p.returncode == 2
    err = [ln for ln in p.stderr.splitlines() if ln.strip()]
    assert len(err) == 1 and "needs PyTorch" in err[0] and "pip install" in err[0], p.stderr
