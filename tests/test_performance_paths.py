"""The fast paths give the plain constructions' results, and the graphs and sessions stay valid for CUDA.

* Conv backward as a Conv with the flipped, channel-swapped kernel (stride 1, any group) equals the
  ConvTranspose construction; the ReLU/Clip masks built as scaled steps equal the comparison masks,
  bit for bit away from subnormals; end to end the attributions agree to 1e-5 relative.
* The backward graph stays in onnxruntime's NCHWc layout (few reorders) - the reason for the above.
* IO binding (the CUDA path, exercised here on the CPU device) and memory-bounded chunking give the same
  attributions as one plain run.
* CUDA: the session options and every op of the converted graphs (float32 and float16) are valid for
  the CUDA provider; where it cannot load, a session asked for CUDA falls back to CPU cleanly and
  onnx-gig says so in one line. No timing assertions: tools/benchmark.py measures speed.
"""
from __future__ import annotations

import zlib

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import helper as h
from onnx import numpy_helper

from onnx_gig import GigModel, convert
from onnx_gig.autodiff import common, get_rule_set, vjp_model
from onnx_gig.integrate import build_ig_model, to_float16
from onnx_gig.loader import load_model, normalise
from onnx_gig.runtime import CPU, CUDA, session_options

OPSET = 17


# -- helpers ------------------------------------------------------------------------------------
def one_node_model(op: str, x_shape, inits: dict, inputs: list[str], **attrs) -> onnx.ModelProto:
    node = h.make_node(op, inputs, ["y"], name=f"the_{op.lower()}", **attrs)
    graph = h.make_graph([node], "t", [h.make_tensor_value_info("x", onnx.TensorProto.FLOAT, ["N", *x_shape[1:]])],
                         [h.make_tensor_value_info("y", onnx.TensorProto.FLOAT, None)],
                         initializer=[numpy_helper.from_array(np.asarray(v), k) for k, v in inits.items()])
    m = h.make_model(graph, opset_imports=[h.make_opsetid("", OPSET)])
    m.ir_version = 8
    return m


def vjp_run(model: onnx.ModelProto, x: np.ndarray, cot: np.ndarray, method: str = "ig", fast: bool = True):
    """The gradient of sum(cot * y) wrt x, built with (fast) or without (fast=False) the fast paths."""
    old = common.FAST_PATHS
    common.FAST_PATHS = fast
    try:
        fg = normalise(model)
        vm = vjp_model(fg.model, get_rule_set(method))
    finally:
        common.FAST_PATHS = old
    sess = ort.InferenceSession(vm.SerializeToString(), session_options(), providers=[CPU])
    ops = {n.op_type for n in vm.graph.node}
    return sess.run(["gradient"], {"x": x, "cotangent": cot})[0], ops


def rel(a, b) -> float:
    return float(np.abs(a - b).max() / max(np.abs(b).max(), 1e-30))


# -- Conv: flipped-kernel Conv equals ConvTranspose ------------------------------------------------
CONV_CASES = [
    # (id, x shape, weight shape, attrs)
    ("dense_3x3", (2, 4, 9, 8), (5, 4, 3, 3), dict(pads=[1, 1, 1, 1])),
    ("dense_1x1", (2, 6, 7, 7), (3, 6, 1, 1), {}),
    ("grouped", (1, 6, 8, 8), (9, 2, 3, 3), dict(group=3, pads=[1, 1, 1, 1])),
    ("depthwise_m1", (2, 5, 9, 9), (5, 1, 3, 3), dict(group=5, pads=[1, 1, 1, 1])),
    ("depthwise_m2", (1, 3, 8, 8), (6, 1, 3, 3), dict(group=3, pads=[1, 1, 1, 1])),
    ("depthwise_5x5_same", (1, 4, 9, 7), (4, 1, 5, 5), dict(group=4, auto_pad="SAME_UPPER")),
    ("dilated_asym_pads", (1, 3, 11, 10), (4, 3, 3, 2), dict(dilations=[2, 3], pads=[2, 0, 1, 3])),
    ("valid_rect", (1, 2, 8, 9), (3, 2, 2, 4), dict(auto_pad="VALID")),
    ("conv1d", (2, 3, 12), (4, 3, 3), dict(pads=[1, 1])),
    ("conv3d", (1, 2, 5, 6, 4), (3, 2, 3, 3, 1), dict(pads=[1, 1, 0, 1, 1, 0])),
]


@pytest.mark.parametrize("case", CONV_CASES, ids=[c[0] for c in CONV_CASES])
def test_stride1_conv_backward_is_a_conv_and_matches_convtranspose(case):
    name, xs, ws, attrs = case
    rng = np.random.default_rng(zlib.crc32(name.encode()))
    w = rng.standard_normal(ws).astype(np.float32)
    m = one_node_model("Conv", xs, {"W": w}, ["x", "W"], kernel_shape=list(ws[2:]), **attrs)
    x = rng.standard_normal(xs).astype(np.float32)
    y = ort.InferenceSession(m.SerializeToString(), providers=[CPU]).run(None, {"x": x})[0]
    cot = rng.standard_normal(y.shape).astype(np.float32)
    fast, fast_ops = vjp_run(m, x, cot, fast=True)
    slow, slow_ops = vjp_run(m, x, cot, fast=False)
    assert "ConvTranspose" not in fast_ops and "ConvTranspose" in slow_ops
    assert rel(fast, slow) < 1e-5


def test_strided_conv_keeps_convtranspose():
    rng = np.random.default_rng(3)
    w = rng.standard_normal((4, 1, 3, 3)).astype(np.float32)
    m = one_node_model("Conv", (1, 4, 8, 8), {"W": w}, ["x", "W"], kernel_shape=[3, 3], group=4,
                       strides=[2, 2], pads=[1, 1, 1, 1])
    x = rng.standard_normal((1, 4, 8, 8)).astype(np.float32)
    grad, ops = vjp_run(m, x, rng.standard_normal((1, 4, 4, 4)).astype(np.float32))
    assert "ConvTranspose" in ops and np.isfinite(grad).all()


# -- masks: scaled steps equal comparisons -------------------------------------------------------
TINY = np.float32(2.0 ** -126)  # the smallest normal float32
SPECIAL = np.array([0.0, -0.0, TINY, -TINY, 1e-30, 1e-6, 0.5, 1.0, 5.999999, 6.0, 6.000001, 7.0, 1e30, 3e38,
                    -1e-30, -3e38, np.inf, -np.inf, 1.5, -1.0, -0.999999, 0.1, np.nextafter(np.float32(0.1), 1),
                    np.nextafter(np.float32(1.5), 0), np.nextafter(np.float32(-1), 0)], np.float32)


def values(rng, n=2000):
    v = np.concatenate([SPECIAL, (rng.standard_normal(n) * 4).astype(np.float32)])
    return v.reshape(1, 1, 1, -1)


MASK_CASES = [
    ("relu", "Relu", [], {}, {}),
    ("relu6", "Clip", ["lo", "hi"], {"lo": np.float32(0), "hi": np.float32(6)}, {}),
    ("clip_-1_1.5", "Clip", ["lo", "hi"], {"lo": np.float32(-1), "hi": np.float32(1.5)}, {}),
    ("clip_min_only", "Clip", ["lo"], {"lo": np.float32(0.1)}, {}),
    ("clip_max_only", "Clip", ["", "hi"], {"hi": np.float32(1.5)}, {}),
    ("leaky", "LeakyRelu", [], {}, {"alpha": 0.1}),
    ("leaky_negative_alpha", "LeakyRelu", [], {}, {"alpha": -0.2}),
]


@pytest.mark.parametrize("method", ["ig", "gnl-ig"])
@pytest.mark.parametrize("case", MASK_CASES, ids=[c[0] for c in MASK_CASES])
def test_masks_are_exact_and_comparison_free(case, method):
    name, op, extra, inits, attrs = case
    rng = np.random.default_rng(7)
    x = values(rng)
    inputs = ["x"] + extra
    m = one_node_model(op, x.shape, inits, inputs, **attrs)
    cot = rng.standard_normal(x.shape).astype(np.float32)
    cot[..., : SPECIAL.size] = np.where(np.arange(SPECIAL.size) % 2, 1.0, -1.0)
    fast, fast_ops = vjp_run(m, x, cot, method, fast=True)
    slow, _ = vjp_run(m, x, cot, method, fast=False)
    np.testing.assert_array_equal(fast, slow)  # bit for bit (no subnormal inputs here)
    if op != "LeakyRelu" or attrs.get("alpha", 0) >= 0:
        assert not fast_ops & {"Greater", "Less", "Cast", "Where"}, fast_ops


def test_mask_subnormal_edge_is_the_documented_one():
    """For 0 < x < 2^-126 the ReLU mask is x * 2^126 (not 1); everything else is exact."""
    sub = np.array([2.0 ** -130, 2.0 ** -140, 2.0 ** -149], np.float32).reshape(1, 1, 1, -1)
    m = one_node_model("Relu", sub.shape, {}, ["x"])
    grad, _ = vjp_run(m, sub, np.ones_like(sub), fast=True)
    expected = (sub.astype(np.float64) * 2.0 ** 126).astype(np.float32)
    assert (grad == expected).all() or (grad == 0).all()  # a runtime flushing subnormals gives 0


# -- end to end: fast and plain constructions agree; NCHWc layout kept ------------------------------
@pytest.fixture(scope="module")
def demo_forward(demo_model):
    return normalise(load_model(demo_model))


@pytest.mark.parametrize("method", ["gnl-ig", "ig"])
def test_fast_paths_leave_attributions_unchanged(demo_forward, tmp_path, method):
    x = np.random.default_rng(0).standard_normal((2, 3, 224, 224)).astype(np.float32)
    out = {}
    for fast in (True, False):
        old = common.FAST_PATHS
        common.FAST_PATHS = fast
        try:
            model = build_ig_model(demo_forward, get_rule_set(method))
        finally:
            common.FAST_PATHS = old
        path = tmp_path / f"m_{fast}.onnx"
        onnx.save(model, str(path))
        out[fast] = GigModel(path, device="cpu").explain(x, n_steps=8).attributions
    assert rel(out[True], out[False]) < 1e-5


def _optimised(path, tmp_path) -> onnx.ModelProto:
    so = session_options()
    so.optimized_model_filepath = str(tmp_path / "optimised.onnx")
    ort.InferenceSession(str(path), so, providers=[CPU])
    return onnx.load(so.optimized_model_filepath, load_external_data=False)


def test_backward_stays_in_nchwc_layout(demo_gig, tmp_path):
    """onnxruntime runs convolutions in its blocked NCHWc layout; a backward that leaves it pays a reorder
    per tensor. The MobileNetV2 GNL-IG graph has 52 backward convolutions and 35 guided masks."""
    opt = _optimised(demo_gig, tmp_path)
    nchwc = [n for n in opt.graph.node if n.domain == "com.microsoft.nchwc"]
    if not nchwc:
        pytest.skip("this CPU/onnxruntime build has no NCHWc kernels")
    blocks = int(GigModel(demo_gig, device="cpu").row_blocks)  # counts below are per copy (blocks.py)
    reorders = [n for n in nchwc if n.op_type in ("ReorderInput", "ReorderOutput")]
    assert len(reorders) <= 20 * blocks, f"{len(reorders)} layout reorders: the backward graph left the NCHWc layout"
    # the guided ReLU6's upper bound is a penalty that onnxruntime adds (with the Relu) inside the backward
    # Conv: one mask multiply per ReLU6 is left, not two plus the product of the two masks (74 before)
    muls = [n for n in opt.graph.node if n.op_type == "Mul"]
    assert len(muls) <= 45 * blocks, f"{len(muls)} stand-alone Mul nodes: the ReLU6 penalty did not fuse"


@pytest.mark.parametrize("lo,hi", [(0.0, 6.0), (-1.0, 1.5), (0.0, 4.0), (0.25, 3.0)])
def test_guided_clip_penalty_is_exact(lo, hi):
    """relu(g + P(y)) * [y > lo] equals relu(g) * [lo < y < hi] bit for bit, for gradients up to 2^99."""
    rng = np.random.default_rng(11)
    h32 = np.float32(hi)
    edge = [lo, hi, np.nextafter(h32, np.float32(-np.inf)), np.nextafter(h32, np.float32(np.inf)),
            np.nextafter(np.float32(lo), np.float32(np.inf)), hi + 10, lo - 10, (lo + hi) / 2, np.inf, -np.inf]
    x = np.concatenate([np.asarray(edge, np.float32), (rng.standard_normal(3000) * 4).astype(np.float32)])
    x = np.repeat(x, 2).reshape(1, 1, 1, -1)
    m = one_node_model("Clip", x.shape, {"lo": np.float32(lo), "hi": np.float32(hi)}, ["x", "lo", "hi"])
    cot = (rng.standard_normal(x.shape) * 10.0 ** rng.integers(-30, 30, x.shape)).astype(np.float32)
    cot[..., ::2] = np.where(rng.random(cot[..., ::2].shape) < 0.5, 2.0 ** 99, -(2.0 ** 99))
    fast, ops = vjp_run(m, x, cot, "gnl-ig", fast=True)
    slow, _ = vjp_run(m, x, cot, "gnl-ig", fast=False)
    np.testing.assert_array_equal(fast, slow)
    assert "Add" in ops and not ops & {"Greater", "Less", "Cast", "Where"}, ops  # the penalty form was built


# -- chunking, memory plan, IO binding ----------------------------------------------------------------
@pytest.fixture(scope="module")
def small_gig(tmp_path_factory):
    from torch_nets import export, seeded_small_cnn
    import torch

    folder = tmp_path_factory.mktemp("perf")
    src = folder / "net.onnx"
    src.write_bytes(export(seeded_small_cnn(), torch.zeros(1, 3, 20, 20)))
    return {m: convert(src, folder / f"net_{m}.onnx", method=m).path for m in ("gnl-ig", "ig", "gnl-ig-authors")}


def test_plan_covers_every_row_once(small_gig):
    gm = GigModel(small_gig["gnl-ig"], device="cpu")
    for n, steps, ibs in [(1, 50, 7), (3, 20, 7), (5, 8, 16), (2, 50, 200), (4, 3, 1)]:
        plan = gm.plan(n, steps, ibs)
        seen = np.zeros((n, steps), int)
        for i, j, s, e in plan.chunks:
            assert (j - i) * (e - s) <= ibs
            seen[i:j, s:e] += 1
        assert (seen == 1).all()
    assert gm.bytes_per_step > 0 and gm.rows_per_run() >= 1


@pytest.mark.parametrize("method", ["gnl-ig", "ig", "gnl-ig-authors"])
def test_io_binding_and_chunks_match_one_run(small_gig, method):
    gm = GigModel(small_gig[method], device="cpu")
    x = np.random.default_rng(2).standard_normal((3, 3, 20, 20)).astype(np.float32)
    ref = gm.explain(x, n_steps=12, internal_batch_size=36)
    assert len(gm.plan(3, 12, 36).chunks) == 1
    gm.io_binding = True  # the CUDA code path, on the CPU device
    for ibs in (36, 5, 1):
        got = gm.explain(x, n_steps=12, internal_batch_size=ibs, target=[1, 2, 3])
        ref_t = GigModel(small_gig[method], device="cpu").explain(x, n_steps=12, internal_batch_size=36,
                                                                   target=[1, 2, 3])
        assert rel(got.attributions, ref_t.attributions) < 1e-5
        np.testing.assert_array_equal(got.target, [1, 2, 3])
        np.testing.assert_allclose(got.scores, ref_t.scores, rtol=1e-6)
    got = gm.explain(x, n_steps=12, internal_batch_size=4)
    assert rel(got.attributions, ref.attributions) < 1e-5
    np.testing.assert_array_equal(got.target, ref.target)


# -- CUDA validity ----------------------------------------------------------------------------------
# Ops with CUDA kernels in onnxruntime (docs/OperatorKernels.md, CUDAExecutionProvider, ai.onnx domain),
# restricted to those whose registered versions cover opset 17 and whose types include float32 and float16
# (ArgMax, OneHot, Greater/Less, Cast, ScatterElements with reduction, MaxPool with Indices included).
CUDA_OPS = {
    "Abs", "Add", "And", "ArgMax", "AveragePool", "BatchNormalization", "Cast", "Ceil", "Clip", "Concat",
    "ConstantOfShape", "Conv", "ConvTranspose", "Div", "Dropout", "Equal", "Erf", "Exp", "Expand", "Flatten",
    "Floor", "Gather", "GatherElements", "GatherND", "Gemm", "GlobalAveragePool", "GlobalMaxPool", "Greater",
    "GreaterOrEqual", "HardSigmoid", "HardSwish", "Identity", "LRN", "LeakyRelu", "Less", "LessOrEqual", "Log",
    "LogSoftmax", "MatMul", "Max", "MaxPool", "Min", "Mul", "Neg", "Not", "OneHot", "Or", "PRelu", "Pad", "Pow",
    "Range", "Reciprocal", "ReduceMax", "ReduceMean", "ReduceSum", "Relu", "Reshape", "Resize", "ScatterElements",
    "ScatterND", "Shape", "Sigmoid", "Sign", "Size", "Slice", "Softmax", "Softplus", "Split", "Sqrt", "Squeeze",
    "Sub", "Sum", "Tanh", "Tile", "Transpose", "Unsqueeze", "Where",
}


def _ops(model: onnx.ModelProto) -> set[str]:
    return {n.op_type for n in model.graph.node if n.domain in ("", "ai.onnx")}


@pytest.mark.parametrize("method", ["gnl-ig", "ig", "gnl-ig-authors"])
def test_graph_ops_have_cuda_kernels(small_gig, demo_forward, method):
    models = [onnx.load(str(small_gig[method])), build_ig_model(demo_forward, get_rule_set(method))]
    models.append(to_float16(models[0]))
    models.append(build_ig_model(demo_forward, get_rule_set(method), fp16=True))
    for m in models:
        missing = _ops(m) - CUDA_OPS
        assert not missing, f"ops without a CUDA kernel: {sorted(missing)}"
        assert all(i.version <= 17 for i in m.opset_import if i.domain in ("", "ai.onnx"))


def test_float16_graph_is_valid_and_close(small_gig, demo_forward, tmp_path):
    half = to_float16(onnx.load(str(small_gig["gnl-ig"])))
    onnx.checker.check_model(half)
    assert all(i.type.tensor_type.elem_type != onnx.TensorProto.FLOAT16 for i in half.graph.input)
    assert all(o.type.tensor_type.elem_type != onnx.TensorProto.FLOAT16 for o in half.graph.output)
    # accuracy on MobileNetV2 (no max-pool: onnxruntime's CPU ScatterElements(add) has no float16 kernel)
    paths = {}
    for fp16 in (False, True):
        paths[fp16] = tmp_path / f"mb_{fp16}.onnx"
        onnx.save(build_ig_model(demo_forward, get_rule_set("gnl-ig"), fp16=fp16), str(paths[fp16]))
    onnx.checker.check_model(str(paths[True]))
    x = np.random.default_rng(5).standard_normal((1, 3, 224, 224)).astype(np.float32)
    ref = GigModel(paths[False], device="cpu").explain(x, n_steps=8)
    got = GigModel(paths[True], device="cpu").explain(x, n_steps=8, target=ref.target)
    assert rel(got.attributions, ref.attributions) < 5e-2
    assert np.corrcoef(got.attributions.ravel(), ref.attributions.ravel())[0, 1] > 0.999


def test_session_options_are_valid_for_cuda_and_fall_back_cleanly(small_gig):
    so = session_options(threads=1)
    sess = ort.InferenceSession(str(small_gig["gnl-ig"]), so, providers=[CUDA, CPU])
    x = np.random.default_rng(6).standard_normal((1, 3, 20, 20)).astype(np.float32)
    cpu = ort.InferenceSession(str(small_gig["gnl-ig"]), session_options(threads=1), providers=[CPU])
    got = sess.run(["attributions"], {"image": x})[0]
    ref = cpu.run(["attributions"], {"image": x})[0]
    assert sess.get_providers()[-1] == CPU
    tol = 1e-6 if sess.get_providers()[0] == CPU else 1e-3
    assert rel(got, ref) < tol


def test_cuda_that_does_not_load_is_reported_in_one_line(small_gig, capfd):
    gm = GigModel(small_gig["gnl-ig"], device="cuda")
    err = capfd.readouterr().err
    if gm.provider == CUDA:
        assert gm.io_binding
        x = np.random.default_rng(8).standard_normal((2, 3, 20, 20)).astype(np.float32)
        ref = GigModel(small_gig["gnl-ig"], device="cpu").explain(x, n_steps=10)
        got = gm.explain(x, n_steps=10, internal_batch_size=4, target=ref.target)
        assert rel(got.attributions, ref.attributions) < 1e-3
        return
    lines = [l for l in err.splitlines() if l.strip()]
    assert len(lines) == 1 and "CUDA" in lines[0] and "CPU" in lines[0], err
    assert gm.provider == CPU and not gm.io_binding
    x = np.random.default_rng(8).standard_normal((1, 3, 20, 20)).astype(np.float32)
    assert np.isfinite(gm.explain(x, n_steps=4).attributions).all()


# -- convert: one serialisation, the caller's model untouched, the 2 GB fallback ----------------------
def test_convert_leaves_the_input_proto_alone_and_saves_past_the_limit_as_external_data(tmp_path, monkeypatch):
    from torch_nets import export, seeded_small_cnn
    import torch

    from onnx_gig import api

    proto = onnx.load_from_string(export(seeded_small_cnn(), torch.zeros(1, 3, 20, 20)))
    before = proto.SerializeToString()
    fg = normalise(proto)
    assert proto.SerializeToString() == before
    model = build_ig_model(fg, get_rule_set("gnl-ig"))
    small = tmp_path / "inline.onnx"
    api.save_model(model, small)
    assert small.read_bytes() == model.SerializeToString() and not list(tmp_path.glob("*.data"))
    real_save = onnx.save_model

    def refuse_inline(proto, f, *a, **k):  # what onnx raises for a proto past protobuf's 2 GB limit
        if not k.get("save_as_external_data"):
            raise ValueError("The proto size is larger than the 2 GB limit.")
        return real_save(proto, f, *a, **k)

    monkeypatch.setattr(onnx, "save_model", refuse_inline)
    big = tmp_path / "external.onnx"
    api.save_model(model, big)
    assert (tmp_path / "external.onnx.data").is_file()
    x = np.random.default_rng(1).standard_normal((1, 3, 20, 20)).astype(np.float32)
    a = ort.InferenceSession(str(small), providers=[CPU]).run(["attributions"], {"image": x})[0]
    b = ort.InferenceSession(str(big), providers=[CPU]).run(["attributions"], {"image": x})[0]
    np.testing.assert_array_equal(a, b)
