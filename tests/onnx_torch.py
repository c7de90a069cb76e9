"""A small, independent ONNX interpreter in PyTorch: the reference gradients for the zoo tests.

It runs an ONNX CNN graph (the ops of the onnx light zoo and of small exported CNNs) with torch
ops (float32 by default) and lets torch autograd differentiate it. ``guided=True`` swaps ReLU, Clip (ReLU6)
and MaxPool for autograd Functions written from the paper's definitions (only positive gradients
pass; max-pool routes relu(g) to each window's arg-max). It shares no code with onnx-gig's rules.
"""
from __future__ import annotations

import numpy as np
import onnx
import torch
import torch.nn.functional as F
from onnx import numpy_helper

from torch_nets import GuidedReLU, ScatterGuidedMaxPool


class GuidedClip(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, lo, hi):
        ctx.save_for_backward(x)
        ctx.bounds = (lo, hi)
        return x.clamp(lo, hi)

    @staticmethod
    def backward(ctx, g):
        (x,) = ctx.saved_tensors
        lo, hi = ctx.bounds
        m = torch.ones_like(x, dtype=torch.bool)
        if lo is not None:
            m &= x > lo
        if hi is not None:
            m &= x < hi
        return g.clamp(min=0) * m.to(g.dtype), None, None


def _attrs(node: onnx.NodeProto) -> dict:
    out = {}
    for a in node.attribute:
        v = onnx.helper.get_attribute_value(a)
        out[a.name] = v.decode() if isinstance(v, bytes) else v
    return out


def _torch_pads(pads: list[int]) -> list[int]:
    """ONNX [t, l, b, r] -> F.pad's (l, r, t, b)."""
    t, l, b, r = pads
    return [l, r, t, b]


class TorchNet:
    """Evaluate an ONNX graph with torch; ``forward(x)`` returns the tensor named ``output``."""

    def __init__(self, model: onnx.ModelProto, output: str, guided: bool = False,
                 dtype: torch.dtype = torch.float32, calibrate: bool = False) -> None:
        self.model, self.output, self.guided, self.dtype = model, output, guided, dtype
        self.calibrate = calibrate
        self.consts = {}
        for t in model.graph.initializer:
            a = numpy_helper.to_array(t)
            v = torch.from_numpy(a.copy())
            self.consts[t.name] = v.to(dtype) if a.dtype.kind == "f" else v
        self.opset = next(o.version for o in model.opset_import if o.domain in ("", "ai.onnx"))

    def value(self, env: dict, name: str):
        if name == "":
            return None
        if name in env:
            return env[name]
        return self.consts[name]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        inits = {t.name for t in self.model.graph.initializer}
        env = {next(i.name for i in self.model.graph.input if i.name not in inits): x}
        for node in self.model.graph.node:
            ins = [self.value(env, i) for i in node.input]
            outs = self.run(node, ins)
            for name, v in zip(node.output, outs):
                env[name] = v
            if self.output in env:
                return env[self.output]
        raise KeyError(self.output)

    def run(self, node, ins) -> list:  # one branch per op, like an interpreter
        op, a, x = node.op_type, _attrs(node), ins[0] if ins else None
        if op == "Constant":
            v = numpy_helper.to_array(node.attribute[0].t) if node.attribute[0].HasField("t") else None
            if v is None:
                raise NotImplementedError("Constant without a tensor value")
            t = torch.from_numpy(v.copy())
            return [t.to(self.dtype) if t.is_floating_point() else t]
        if op == "Conv":
            pads = a.get("pads", [0, 0, 0, 0])
            if a.get("auto_pad", "NOTSET") not in ("NOTSET", ""):
                raise NotImplementedError("auto_pad")
            t, l, b, r = pads
            pad = (t, l)  # symmetric: conv2d pads itself, no copy
            if (t, l) != (b, r):
                x, pad = F.pad(x, _torch_pads(pads)), 0
            return [F.conv2d(x, ins[1], ins[2] if len(ins) > 2 else None, a.get("strides", [1, 1]), pad,
                             a.get("dilations", [1, 1]), a.get("group", 1))]
        if op == "Relu":
            return [GuidedReLU.apply(x) if self.guided else F.relu(x)]
        if op == "Clip":
            lo = a.get("min") if self.opset < 11 else (float(ins[1]) if len(ins) > 1 and ins[1] is not None else None)
            hi = a.get("max") if self.opset < 11 else (float(ins[2]) if len(ins) > 2 and ins[2] is not None else None)
            return [GuidedClip.apply(x, lo, hi) if self.guided else x.clamp(lo, hi)]
        if op == "MaxPool":
            k, s = a["kernel_shape"], a.get("strides", [1, 1])
            xp = F.pad(x, _torch_pads(a.get("pads", [0, 0, 0, 0])), value=-np.inf)
            if a.get("ceil_mode", 0):
                raise NotImplementedError("ceil_mode")
            return [ScatterGuidedMaxPool.apply(xp, k, s, 0, False) if self.guided else F.max_pool2d(xp, k, s)]
        if op == "AveragePool":
            k, s = a["kernel_shape"], a.get("strides", [1, 1])
            pads = _torch_pads(a.get("pads", [0, 0, 0, 0]))
            summed = F.avg_pool2d(F.pad(x, pads), k, s, divisor_override=1)
            ones = torch.ones_like(x[:1, :1])
            count = F.avg_pool2d(F.pad(ones, pads, value=float(a.get("count_include_pad", 0))), k, s,
                                 divisor_override=1)
            return [summed / count]
        if op == "GlobalAveragePool":
            return [x.mean(dim=tuple(range(2, x.dim())), keepdim=True)]
        if op == "LRN":
            return [F.local_response_norm(x, a["size"], a.get("alpha", 1e-4), a.get("beta", 0.75), a.get("bias", 1.0))]
        if op == "BatchNormalization":
            shape = [1, -1] + [1] * (x.dim() - 2)
            if self.calibrate:  # running statistics of this very batch, as a trained net would have
                axes = [0] + list(range(2, x.dim()))
                for name, v in ((node.input[3], x.mean(axes)), (node.input[4], x.var(axes) + 0.01)):
                    self.consts[name] = v.detach()
                ins = ins[:3] + [self.consts[node.input[3]], self.consts[node.input[4]]]
            scale, bias, mean, var = (t.reshape(shape) for t in ins[1:5])
            return [(x - mean) / torch.sqrt(var + a.get("epsilon", 1e-5)) * scale + bias]
        if op == "Gemm":
            A = x.t() if a.get("transA", 0) else x
            B = ins[1].t() if a.get("transB", 0) else ins[1]
            y = a.get("alpha", 1.0) * (A @ B)
            return [y + a.get("beta", 1.0) * ins[2] if len(ins) > 2 and ins[2] is not None else y]
        if op == "MatMul":
            return [x @ ins[1]]
        if op in ("Dropout", "Identity"):
            return [x] + [None] * (len(node.output) - 1)
        if op == "Reshape":
            shape = [int(d) for d in ins[1]]
            shape = [x.shape[i] if d == 0 else d for i, d in enumerate(shape)]
            return [x.reshape(shape)]
        if op == "Flatten":
            axis = a.get("axis", 1)
            return [x.reshape(int(np.prod(x.shape[:axis])), -1)]
        if op == "Transpose":
            return [x.permute(*a["perm"])]
        if op == "Concat":
            return [torch.cat(ins, dim=a["axis"])]
        if op in ("Sum", "Add"):
            y = ins[0]
            for t in ins[1:]:
                y = y + t
            return [y]
        if op == "Sub":
            return [ins[0] - ins[1]]
        if op == "Mul":
            return [ins[0] * ins[1]]
        if op == "Div":
            return [ins[0] / ins[1]]
        if op == "Unsqueeze":
            axes = a["axes"] if "axes" in a else [int(v) for v in ins[1]]
            for ax in sorted(axes):
                x = x.unsqueeze(ax)
            return [x]
        if op == "Softmax":
            axis = a.get("axis", 1 if self.opset < 13 else -1)
            if self.opset < 13:
                return [F.softmax(x.reshape(int(np.prod(x.shape[:axis])), -1), -1).reshape(x.shape)]
            return [F.softmax(x, axis)]
        raise NotImplementedError(f"onnx_torch: no {op}")


def gradient(net: TorchNet, x: np.ndarray, target: int) -> np.ndarray:
    """d output.flatten()[target] / dx at ``x`` (batch 1) with ``net``'s guided setting."""
    xt = torch.from_numpy(np.asarray(x)).to(net.dtype).requires_grad_()
    y = net.forward(xt)
    score = y.reshape(y.shape[0], -1)[0, target]
    (g,) = torch.autograd.grad(score, xt)
    return g.to(torch.float64).numpy()


def calibrate_batchnorm(model: onnx.ModelProto, output: str, x: np.ndarray) -> onnx.ModelProto:
    """Set every BatchNormalization's running mean/var to the statistics its input has for ``x``."""
    net = TorchNet(model, output, calibrate=True)
    with torch.no_grad():
        net.forward(torch.from_numpy(np.asarray(x, np.float32)))
    for t in model.graph.initializer:
        if t.name in net.consts and any(n.op_type == "BatchNormalization" and t.name in n.input[3:5]
                                        for n in model.graph.node):
            t.CopyFrom(numpy_helper.from_array(net.consts[t.name].numpy().astype(np.float32), t.name))
    return model
