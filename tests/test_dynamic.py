"""Any input: dynamic image sizes kept, sizes pinned with --input-shape, uint8 pixels normalised in the graph.

Oracles: float64 torch autograd (one alpha) and Captum's IntegratedGradients in float64 (full attributions)
on the very modules that were exported; finite differences of onnxruntime forward passes for single ops.
"""
from __future__ import annotations

import io
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
from captum.attr import IntegratedGradients
from onnx import TensorProto
from onnx import helper as h
from PIL import Image

from oracles import X, check_against_fd, distinct, f32, single_op
from onnx_gig import ExplainOptions, GigModel, convert, explain, explain_many
from onnx_gig.errors import GigError
from onnx_gig.quadrature import schedule
from torch_nets import export_dynamic, seeded_mobilenet_v3, seeded_pixel_classifier

SIZES = [(64, 64), (80, 96), (97, 113)]  # odd sizes exercise every stride-2 output_padding


def run_cli(*args):
    return subprocess.run([sys.executable, "-m", "onnx_gig.cli", *map(str, args)], capture_output=True, text=True,
                          timeout=300)


def rel_err(a, b) -> float:
    return float(np.abs(a - b).max() / np.abs(b).max())


# -- single ops at run-time sizes: finite differences at two sizes from one backward graph --------------------
def one_alpha_matches_autograd(gm: GigModel, net: torch.nn.Module, x: np.ndarray, same_target: bool = False) -> None:
    """One step at alpha 1 (weight 1, baseline 0) gives x * grad: compare with float64 autograd of ``net``."""
    attr, target = gm.session.run(["attributions", "target_class"], {
        "image": x, "alphas": np.ones(1, np.float32), "step_weights": np.ones(1, np.float32)})
    xt = torch.tensor(x, dtype=torch.float64, requires_grad=True)
    y = net.double()(xt)
    if same_target:
        np.testing.assert_array_equal(target, y.argmax(1).numpy())
    y.gather(1, torch.as_tensor(target)[:, None]).sum().backward()
    assert rel_err(attr, (xt.grad * xt).detach().numpy()) < 1e-5


def dynamic_hw(model: onnx.ModelProto) -> onnx.ModelProto:
    """The model with its input's height and width symbolic."""
    dims = model.graph.input[0].type.tensor_type.shape.dim
    for k, name in ((2, "H"), (3, "W")):
        dims[k].Clear()
        dims[k].dim_param = name
    return model


def conv_case(k: int, c: int = 2, group: int = 1, **attrs):
    w = np.random.default_rng(k + c).normal(size=(c, c // group, k, k)).astype(np.float32)
    return single_op("Conv", [1, c, 8, 8], inputs=(X, "w"), inits={"w": w}, group=group, **attrs)


OP_CASES = {
    "conv-s2-p1": lambda: conv_case(3, strides=[2, 2], pads=[1, 1, 1, 1]),
    "conv-s2-same-upper": lambda: conv_case(3, strides=[2, 2], auto_pad="SAME_UPPER"),
    "conv-s2-same-lower-k4": lambda: conv_case(4, strides=[2, 2], auto_pad="SAME_LOWER"),
    "conv-s3-dilated-asym": lambda: conv_case(3, strides=[3, 2], dilations=[2, 1], pads=[2, 0, 1, 1]),
    "conv-s1-big-pads": lambda: conv_case(3, pads=[3, 1, 2, 3]),
    "conv-s1-same": lambda: conv_case(3, auto_pad="SAME_UPPER"),
    "depthwise-s2-k5": lambda: conv_case(5, c=3, group=3, strides=[2, 2], pads=[2, 2, 2, 2]),
    "avgpool-s2-p1": lambda: single_op("AveragePool", [1, 2, 8, 8], kernel_shape=[3, 3], strides=[2, 2],
                                       pads=[1, 1, 1, 1]),
    "avgpool-count-pad": lambda: single_op("AveragePool", [1, 2, 8, 8], kernel_shape=[3, 2], strides=[2, 2],
                                           pads=[1, 0, 1, 1], count_include_pad=1),
    "avgpool-same": lambda: single_op("AveragePool", [1, 2, 8, 8], kernel_shape=[3, 3], strides=[2, 2],
                                      auto_pad="SAME_UPPER"),
    "global-average-pool": lambda: single_op("GlobalAveragePool", [1, 2, 8, 8]),
    "reduce-mean-hw": lambda: single_op("ReduceMean", [1, 2, 8, 8], axes=[2, 3], keepdims=0),
    "maxpool-ceil": lambda: single_op("MaxPool", [1, 2, 8, 8], kernel_shape=[3, 3], strides=[2, 2], ceil_mode=1),
    "instance-norm": lambda: single_op("InstanceNormalization", [1, 2, 8, 8], inputs=(X, "s", "b"),
                                       inits={"s": f32([1.5, -0.7]), "b": f32([0.1, 0.2])}),
    "group-norm-per-channel-scale": lambda: single_op("GroupNormalization", [1, 2, 8, 8], inputs=(X, "s", "b"),
                                                      inits={"s": f32([1.5, -0.7]), "b": f32([0.1, 0.2])}, opset=21,
                                                      num_groups=1, epsilon=1e-3),
    "resize-nearest-x2": lambda: resize_case("nearest", "asymmetric", scales=[1, 1, 2, 2], nearest_mode="floor"),
    "resize-nearest-half-pixel": lambda: resize_case("nearest", "half_pixel", scales=[1, 1, 1.5, 0.5]),
    "resize-linear-half-pixel": lambda: resize_case("linear", "half_pixel", scales=[1, 1, 2, 0.75]),
    "resize-linear-pytorch": lambda: resize_case("linear", "pytorch_half_pixel", scales=[1, 1, 0.5, 2]),
    "resize-linear-to-fixed-size": lambda: resize_case("linear", "align_corners", sizes=[1, 2, 6, 7]),
    "resize-nearest-to-fixed-size": lambda: resize_case("nearest", "half_pixel", sizes=[1, 2, 9, 4]),
}


def resize_case(mode: str, ctm: str, scales=None, sizes=None, **attrs):
    """Resize by constant scales, or to constant sizes (an in-graph resize of any image to a fixed size)."""
    inits = {"roi": np.zeros(0, np.float32), "scales": f32(scales if scales is not None else [])}
    if sizes is not None:
        inits["sizes"] = np.asarray(sizes, np.int64)
    model = single_op("Resize", [1, 2, 8, 8], inputs=(X, "roi", "scales") + (("sizes",) if sizes else ()),
                      inits=inits, mode=mode, coordinate_transformation_mode=ctm, **attrs)
    if sizes is not None:  # sizes replace scales (and fix the batch at 1: finite differences run unbatched)
        model.graph.node[0].input[2] = ""
    return model


@pytest.mark.parametrize("case", sorted(OP_CASES))
def test_rule_at_run_time_sizes_matches_finite_differences(case):
    model = dynamic_hw(OP_CASES[case]())
    rng = np.random.default_rng(3)
    for hw in [(7, 9), (8, 5), (11, 10)]:
        shape = (1, 3 if "depthwise" in case else 2) + hw
        x = distinct(rng, shape) if "maxpool" in case else rng.uniform(-1.5, 1.5, size=shape).astype(np.float32)
        check_against_fd(model, x, eps=1e-2, batched="fixed-size" not in case)


def test_static_strided_conv_keeps_its_static_graph():
    """The run-time size path is taken only where a size is unknown: a static model gets no Shape or Slice."""
    from oracles import build_vjp

    ops = [n.op_type for n in build_vjp(conv_case(3, strides=[2, 2], pads=[1, 1, 1, 1])).graph.node]
    assert "ConvTranspose" in ops and "Shape" not in ops and "Slice" not in ops


def ceil_avgpool_net() -> onnx.ModelProto:
    """x[N,3,H,W] -> Conv -> ceil_mode AveragePool (no run-time rule) -> GlobalAveragePool -> Flatten -> logits."""
    rng = np.random.default_rng(0)
    w = onnx.numpy_helper.from_array(f32(rng.normal(size=(4, 3, 3, 3))), "w")
    g = onnx.numpy_helper.from_array(f32(rng.normal(size=(5, 4))), "g")
    nodes = [h.make_node("Conv", ["x", "w"], ["c"], name="stem", pads=[1, 1, 1, 1]),
             h.make_node("AveragePool", ["c"], ["p"], name="pool_ceil", kernel_shape=[2, 2], strides=[2, 2],
                         ceil_mode=1),
             h.make_node("GlobalAveragePool", ["p"], ["q"], name="gap"),
             h.make_node("Flatten", ["q"], ["f"], name="flat"),
             h.make_node("Gemm", ["f", "g"], ["logits"], name="head", transB=1)]
    graph = h.make_graph(nodes, "t", [h.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 3, "H", "W"])],
                         [h.make_tensor_value_info("logits", TensorProto.FLOAT, ["N", 5])], [w, g])
    m = h.make_model(graph, opset_imports=[h.make_opsetid("", 17)])
    m.ir_version = 8
    return m


def test_rule_without_run_time_sizes_names_the_users_node_and_the_way_out(tmp_path):
    src = tmp_path / "ceil.onnx"
    onnx.save(ceil_avgpool_net(), str(src))
    p = run_cli("convert", src, "-o", tmp_path / "ceil_gig.onnx")
    assert p.returncode != 0 and "Traceback" not in p.stderr and len(p.stderr.strip().splitlines()) == 1, p.stderr
    line = p.stderr.strip()
    assert "AveragePool node 'pool_ceil'" in line and "gig/" not in line, line
    assert "static spatial sizes" in line and "--input-shape 1,3,224,224" in line, line
    p = run_cli("convert", src, "-o", tmp_path / "ceil_gig.onnx", "--input-shape", "-1,3,20,22")
    assert p.returncode == 0, p.stderr
    gm = GigModel(tmp_path / "ceil_gig.onnx", device="cpu")
    assert gm.input_shape[1:] == [3, 20, 22]


# -- a MobileNetV3 with dynamic batch, height and width -----------------------------------------------------------
@pytest.fixture(scope="module")
def mobilenet(tmp_path_factory):
    net = seeded_mobilenet_v3()
    folder = tmp_path_factory.mktemp("mnv3")
    src = folder / "mnv3.onnx"
    src.write_bytes(export_dynamic(net, torch.zeros(1, 3, 64, 64), {0: "batch", 2: "height", 3: "width"}))
    return net, src, convert(src, folder / "mnv3_gig.onnx", method="ig").path


def test_mobilenet_v3_keeps_dynamic_sizes(mobilenet):
    _, _, path = mobilenet
    gm = GigModel(path, device="cpu")
    assert gm.input_shape[1] == 3 and not any(isinstance(d, int) for d in gm.input_shape[2:]), gm.input_shape
    assert gm.nominal_pixels == 3 * 224 * 224  # the memory estimate's nominal size, scaled by the image's area
    assert gm.step_bytes(3 * 112 * 112) == pytest.approx(gm.bytes_per_step / 4, rel=1e-6)


@pytest.mark.parametrize("hw", SIZES)
def test_mobilenet_v3_gradient_at_one_alpha_matches_float64_autograd(mobilenet, hw):
    net, _, path = mobilenet
    gm = GigModel(path, device="cpu")
    x = np.random.default_rng(hw[0]).normal(size=(2, 3) + hw).astype(np.float32)
    one_alpha_matches_autograd(gm, net, x, same_target=True)


@pytest.mark.parametrize("hw", SIZES)
def test_mobilenet_v3_attributions_match_captum(mobilenet, hw):
    net, _, path = mobilenet
    x = np.random.default_rng(hw[1]).normal(size=(1, 3) + hw).astype(np.float32)
    ex = GigModel(path, device="cpu").explain(x, n_steps=12)
    xt = torch.tensor(x, dtype=torch.float64)
    ref = IntegratedGradients(net.double()).attribute(xt, baselines=xt * 0, target=torch.as_tensor(ex.target),
                                                      n_steps=12, method="gausslegendre")
    assert rel_err(ex.attributions, ref.numpy()) < 1e-4


def test_mobilenet_v3_guided_gradient_at_an_odd_size(mobilenet, tmp_path):
    """gnl-ig at a run-time size: guided ReLUs (zoo_models.guided_module) under float64 autograd."""
    from zoo_models import guided_module

    net, src, _ = mobilenet
    gm = GigModel(convert(src, tmp_path / "g.onnx", method="gnl-ig").path, device="cpu")
    x = np.random.default_rng(11).normal(size=(2, 3, 97, 113)).astype(np.float32)
    attr, target = gm.session.run(["attributions", "target_class"], {
        "image": x, "alphas": np.full(1, 0.5, np.float32), "step_weights": np.ones(1, np.float32)})
    xt = torch.tensor(x, dtype=torch.float64)
    xs = (0.5 * xt).requires_grad_()  # baseline 0, alpha 0.5
    guided_module(net).double()(xs).gather(1, torch.as_tensor(target)[:, None]).sum().backward()
    assert rel_err(attr, (xs.grad * xt).numpy()) < 1e-5


def test_mobilenet_v3_from_the_dynamo_exporter(mobilenet, tmp_path):
    """The dynamo exporter (opset 18+, adaptive pooling as ReduceMean with an axes input) with Dims for H, W."""
    net, _, _ = mobilenet
    dim = torch.export.Dim
    src = tmp_path / "dynamo.onnx"
    torch.onnx.export(net.float(), (torch.zeros(1, 3, 64, 64),), str(src), dynamo=True, input_names=["image"],
                      output_names=["logits"], dynamic_shapes=[{0: dim("batch"), 2: dim("h", min=32, max=1024),
                                                                3: dim("w", min=32, max=1024)}])
    gm = GigModel(convert(src, tmp_path / "dynamo_gig.onnx", method="ig").path, device="cpu")
    x = np.random.default_rng(13).normal(size=(1, 3, 97, 113)).astype(np.float32)
    one_alpha_matches_autograd(gm, net, x)


def test_dims_written_as_minus_one_or_blank_are_dynamic(mobilenet, tmp_path):
    """Paddle-style exports write dynamic dims as -1 (and some leave them blank): [-1, 3, -1, ?]."""
    net, src, _ = mobilenet
    m = onnx.load(str(src))
    dims = m.graph.input[0].type.tensor_type.shape.dim
    for k in (0, 2, 3):
        dims[k].Clear()
    dims[0].dim_value = dims[2].dim_value = -1
    onnx.save(m, str(tmp_path / "paddle_style.onnx"))
    gm = GigModel(convert(tmp_path / "paddle_style.onnx", method="ig").path, device="cpu")
    x = np.random.default_rng(9).normal(size=(1, 3, 45, 71)).astype(np.float32)
    one_alpha_matches_autograd(gm, net, x)


def test_pinned_mobilenet_is_static_and_agrees(mobilenet, tmp_path):
    net, src, dynamic_path = mobilenet
    pinned = convert(src, tmp_path / "pinned.onnx", method="ig", input_shape="-1,3,80,96").path
    gm = GigModel(pinned, device="cpu")
    assert gm.input_shape[1:] == [3, 80, 96] and "bytes_per_step_pixels" not in json.dumps(gm.metadata)
    x = np.random.default_rng(5).normal(size=(1, 3, 80, 96)).astype(np.float32)
    a = gm.explain(x, n_steps=6).attributions
    b = GigModel(dynamic_path, device="cpu").explain(x, n_steps=6).attributions
    assert rel_err(a, b) < 1e-5
    with pytest.raises(GigError, match="expects"):
        gm.explain(x[..., :64], n_steps=2)
    with pytest.raises(GigError, match="only dynamic dims can be pinned") as bad:
        convert(src, tmp_path / "bad.onnx", input_shape="1,4,80,96")
    assert "--input-shape -1,4,80,96 disagrees" in str(bad.value), bad.value  # -1, not None: a dynamic dim
    with pytest.raises(GigError, match="has 3 dims but input 'image' has rank 4"):
        convert(src, tmp_path / "bad.onnx", input_shape="3,80,96")


def test_explain_photo_with_a_dynamic_model_keeps_its_aspect(mobilenet, tmp_path):
    _, _, path = mobilenet
    photo = tmp_path / "wide.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (300, 450, 3), dtype=np.uint8)).save(photo)
    r = explain(path, photo, steps=4, out=tmp_path / "fig.png", save_npy=tmp_path / "a.npy")
    assert np.load(tmp_path / "a.npy").shape == (3, 224, 336)  # short side 224, aspect kept
    assert r.figure.is_file()


def test_inspect_shows_dynamic_dims(mobilenet):
    _, src, _ = mobilenet
    p = run_cli("inspect", src)
    assert p.returncode == 0, p.stderr
    assert "dynamic dims of 'image' [N, 3, height, width]: 2 (height), 3 (width)" in p.stdout, p.stdout
    rep = json.loads(run_cli("inspect", src, "--json").stdout)
    assert rep["dynamic_dims"] == [2, 3] and rep["input_shape"] == ["N", 3, "height", "width"]


# -- uint8 NHWC pixels with the preprocessing inside the graph ------------------------------------------------------
@pytest.fixture(scope="module")
def pixel_model(tmp_path_factory):
    net = seeded_pixel_classifier()
    folder = tmp_path_factory.mktemp("pix")
    src = folder / "pix.onnx"
    buf = io.BytesIO()
    torch.onnx.export(net, torch.zeros(1, 24, 20, 3, dtype=torch.uint8), buf, dynamo=False, opset_version=17,
                      input_names=["pixels"], output_names=["logits"],
                      dynamic_axes={"pixels": {0: "batch"}, "logits": {0: "batch"}})
    src.write_bytes(buf.getvalue())
    assert onnx.load(str(src)).graph.input[0].type.tensor_type.elem_type == TensorProto.UINT8
    return net, src, convert(src, folder / "pix_gig.onnx", method="ig").path


def captum_pixels(net, x: np.ndarray, target, steps: int) -> np.ndarray:
    xt = torch.tensor(x, dtype=torch.float64)
    return IntegratedGradients(net.double().pixels).attribute(
        xt, baselines=xt * 0, target=torch.as_tensor(target), n_steps=steps, method="gausslegendre").numpy()


def test_uint8_model_is_explained_in_pixel_units(pixel_model):
    net, _, path = pixel_model
    gm = GigModel(path, device="cpu")
    assert gm.input_name == "pixels_float" and gm.input_shape == ["N", 24, 20, 3]
    assert json.loads(gm.metadata["onnx_gig.pixel_input"]) == {"name": "pixels", "dtype": "uint8"}
    pp = json.loads(gm.metadata["onnx_gig.preprocess"])
    assert (pp["layout"], pp["scale"], pp["mean"], pp["std"]) == ("NHWC", 1.0, [0.0], [1.0])
    x = np.random.default_rng(0).integers(0, 256, (2, 24, 20, 3)).astype(np.uint8)
    ex = gm.explain(x, n_steps=16)  # the model's own dtype is accepted
    assert rel_err(ex.attributions, captum_pixels(net, x.astype(np.float64), ex.target, 16)) < 1e-5


def test_uint8_model_explain_photo_and_npy(pixel_model, tmp_path):
    net, _, path = pixel_model
    pixels = np.random.default_rng(1).integers(0, 256, (24, 20, 3), dtype=np.uint8)
    Image.fromarray(pixels).save(tmp_path / "p.png")
    np.save(tmp_path / "p.npy", pixels)
    for name in ("p.png", "p.npy"):
        r = explain(path, tmp_path / name, steps=8, draw=False, save_npy=tmp_path / f"{name}_a.npy")
        saved = np.load(tmp_path / f"{name}_a.npy")
        assert saved.shape == (24, 20, 3)  # the image input's layout
        ref = captum_pixels(net, pixels[None].astype(np.float64), [r.target], 8)[0]
        assert rel_err(saved, ref) < 1e-5, name


def test_uint8_model_inspect_and_convert_say_so(pixel_model, tmp_path):
    _, src, _ = pixel_model
    p = run_cli("inspect", src)
    assert "'pixels_float' [N, 24, 20, 3] are the float32 pixels the graph casts from its uint8 input 'pixels'" \
        in p.stdout, p.stdout
    p = run_cli("convert", src, "-o", tmp_path / "p_gig.onnx")
    assert p.returncode == 0 and "graph normalises them itself" in p.stderr, p.stderr


def test_folder_of_photos_of_several_sizes_with_a_dynamic_model(mobilenet, tmp_path):
    """explain_many keeps each photo's aspect: images of different sizes run in one call per size, each
    the same as explaining it alone."""
    _, _, path = mobilenet
    rng = np.random.default_rng(2)
    d = tmp_path / "photos"
    d.mkdir()
    for name, hw in (("a_wide.png", (150, 225)), ("b_tall.png", (225, 150)), ("c_wide.png", (100, 150))):
        Image.fromarray(rng.integers(0, 256, hw + (3,), dtype=np.uint8)).save(d / name)
    res = list(explain_many(path, [d], ExplainOptions(steps=4)))
    assert [r.ok for r in res] == [True, True, True], [r.error for r in res]
    assert [r.attributions.shape for r in res] == [(3, 150, 225), (3, 225, 150), (3, 100, 150)]  # small photos kept
    for r in res:
        alone = explain(path, r.path, steps=4, draw=False)
        np.testing.assert_allclose(r.attributions, alone.attributions, rtol=1e-5, atol=1e-7)


def test_folder_run_with_a_uint8_model_takes_pixels(pixel_model, tmp_path):
    net, _, path = pixel_model
    pixels = np.random.default_rng(3).integers(0, 256, (24, 20, 3), dtype=np.uint8)
    d = tmp_path / "in"
    d.mkdir()
    Image.fromarray(pixels).save(d / "p.png")
    np.save(d / "q.npy", pixels)
    res = list(explain_many(path, [d], ExplainOptions(steps=8)))
    assert [r.ok for r in res] == [True, True], [r.error for r in res]
    for r in res:
        ref = captum_pixels(net, pixels[None].astype(np.float64), [r.target], 8)[0]
        assert rel_err(r.attributions, ref) < 1e-5, r.path


# -- a model that accepts only some sizes ----------------------------------------------------------------------
class StrideBound(torch.nn.Module):
    """Features at 1/4 plus 2x-upsampled features at 1/8 (an FPN merge): only sizes divisible by 8 add up."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.c1, self.c2, self.c3 = (torch.nn.Conv2d(3, 4, 3, 2, 1), torch.nn.Conv2d(4, 8, 3, 2, 1),
                                     torch.nn.Conv2d(8, 8, 3, 2, 1))
        self.fc = torch.nn.Linear(8, 5)

    def forward(self, x):
        f2 = torch.relu(self.c2(torch.relu(self.c1(x))))
        merged = f2 + torch.nn.functional.interpolate(torch.relu(self.c3(f2)), scale_factor=2.0, mode="nearest")
        return self.fc(torch.relu(merged).mean((2, 3)))


def test_a_size_the_model_rejects_is_one_line_naming_its_node_and_the_way_out(tmp_path):
    src = tmp_path / "fpn.onnx"
    src.write_bytes(export_dynamic(StrideBound().eval(), torch.zeros(1, 3, 64, 64), {0: "n", 2: "h", 3: "w"}))
    gig = convert(src, tmp_path / "fpn_gig.onnx").path
    good, bad = tmp_path / "good.npy", tmp_path / "bad.npy"
    np.save(good, f32(np.random.default_rng(0).standard_normal((3, 64, 64))))
    np.save(bad, f32(np.random.default_rng(1).standard_normal((3, 64, 66))))  # 66 -> 33 -> 17 -> 9; 9 * 2 != 17
    one = run_cli("explain", gig, bad, "--out", tmp_path / "bad.png")
    assert one.returncode == 2 and len(one.stderr.strip().splitlines()) == 1, one.stderr  # no runtime log before
    assert "Name:'/Add'" in one.stderr and "the input was 3x64x66" in one.stderr and "--input-shape" in one.stderr
    # in a folder run the rejected size fails alone; the other image is explained
    many = run_cli("explain", gig, bad, good, "--out-dir", tmp_path / "out", "--steps", 4)
    assert many.returncode == 3, many.stderr
    rows = [json.loads(line) for line in (tmp_path / "out" / "results.jsonl").read_text().splitlines()]
    assert [bool(r["error"]) for r in rows] == [True, False] and "the input was 3x64x66" in rows[0]["error"]
    assert (tmp_path / "out" / "good_gig.png").is_file() and not (tmp_path / "out" / "bad_gig.png").exists()


def test_eval_scores_a_dynamic_size_model_at_one_size(tmp_path):
    """Photos of different aspects through eval on a model with dynamic sizes: scored at 224 x 224 (the
    protocol's size, and one the stride-bound net accepts), not stacked at their own sizes."""
    src = tmp_path / "fpn.onnx"
    src.write_bytes(export_dynamic(StrideBound().eval(), torch.zeros(1, 3, 64, 64), {0: "n", 2: "h", 3: "w"}))
    photos = tmp_path / "photos"
    photos.mkdir()
    for name, size in (("wide.png", (300, 200)), ("tall.png", (180, 260))):
        Image.fromarray(np.random.default_rng(len(name)).integers(0, 255, (size[1], size[0], 3), np.uint8)).save(
            photos / name)
    r = run_cli("eval", src, photos, "--methods", "gradient,random", "--out-dir", tmp_path / "ev")
    assert r.returncode == 0, r.stderr
    import csv

    per_image = list(csv.DictReader((tmp_path / "ev" / "per_image.csv").open()))
    assert sorted({Path(row["image"]).name for row in per_image}) == ["tall.png", "wide.png"]
