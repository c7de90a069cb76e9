"""Reference CNNs in PyTorch with switchable guided non-linearities (the tests' independent oracle).

The guided functions are written directly from the paper's definitions, with torch autograd
doing everything else, so they share no code with onnx-gig's ONNX rules.
"""
from __future__ import annotations

import io

import torch
import torch.nn as nn
import torch.nn.functional as F


def route_positive(idx, g, in_shape):
    """relu(g) scattered, adding where windows overlap, to the arg-max positions ``idx`` of a 2-D max-pool."""
    n, c, h, w = in_shape
    out = torch.zeros(n, c, h * w, dtype=g.dtype)
    out.scatter_add_(2, idx.reshape(n, c, -1), g.clamp(min=0).reshape(n, c, -1))
    return out.reshape(in_shape)


class ScatterGuidedMaxPool(torch.autograd.Function):
    """Exact guided 2-D max-pool (x, k, s, p, ceil): backward scatters relu(g) to each window's arg-max."""

    @staticmethod
    def forward(ctx, x, k, s, p, ceil):
        y, idx = F.max_pool2d(x, k, s, p, ceil_mode=ceil, return_indices=True)
        ctx.save_for_backward(idx)
        ctx.in_shape = x.shape
        return y

    @staticmethod
    def backward(ctx, g):
        (idx,) = ctx.saved_tensors
        return route_positive(idx, g, ctx.in_shape), None, None, None, None


class GuidedReLU(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x):
        ctx.save_for_backward(x)
        return x.clamp(min=0)

    @staticmethod
    def backward(ctx, g):
        (x,) = ctx.saved_tensors
        return g.clamp(min=0) * (x > 0).to(g.dtype)


class GuidedReLU6(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x):
        ctx.save_for_backward(x)
        return x.clamp(0, 6)

    @staticmethod
    def backward(ctx, g):
        (x,) = ctx.saved_tensors
        return g.clamp(min=0) * ((x > 0) & (x < 6)).to(g.dtype)


class GuidedMaxPool(torch.autograd.Function):
    """Exact rule: route relu(grad_out) to each window's arg-max (adding where windows overlap)."""

    @staticmethod
    def forward(ctx, x, k, s, p, authors):
        ctx.save_for_backward(x)
        ctx.cfg = (k, s, p, authors)
        return F.max_pool2d(x, k, s, p)

    @staticmethod
    def backward(ctx, g):
        (x,) = ctx.saved_tensors
        k, s, p, authors = ctx.cfg
        with torch.enable_grad():
            xx = x.detach().requires_grad_()
            y = F.max_pool2d(xx, k, s, p)
            if authors:  # the authors' code: ordinary gradient times upsampled [g > 0]
                (gx,) = torch.autograd.grad(y, xx, g)
                return gx * F.interpolate((g > 0).to(g.dtype), size=x.shape[2:], mode="nearest"), None, None, None, None
            (gx,) = torch.autograd.grad(y, xx, g.clamp(min=0))
        return gx, None, None, None, None


class SmallCNN(nn.Module):
    """ReLU, overlapping 3x3/s2 max-pool, BatchNorm, residual add, ReLU6, depthwise conv, global pool, Linear."""

    def __init__(self, classes: int = 6) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 8, 3, stride=1, padding=1)
        self.dw = nn.Conv2d(8, 8, 3, padding=1, groups=8)
        self.pw = nn.Conv2d(8, 8, 1)
        self.bn = nn.BatchNorm2d(8)  # after the residual add: the exporter cannot fold it into a conv
        self.conv2 = nn.Conv2d(8, 12, 3, stride=2, padding=1)
        self.fc1 = nn.Linear(12, 16)
        self.fc2 = nn.Linear(16, classes)
        self.mode = "plain"  # plain | guided | authors

    def relu(self, x):
        return GuidedReLU.apply(x) if self.mode != "plain" else F.relu(x)

    def relu6(self, x):
        return GuidedReLU6.apply(x) if self.mode != "plain" else F.relu6(x)

    def pool(self, x):
        if self.mode == "plain":
            return F.max_pool2d(x, 3, 2, 1)
        return GuidedMaxPool.apply(x, 3, 2, 1, self.mode == "authors")

    def forward(self, x):
        y = self.pool(self.relu(self.conv1(x)))
        y = self.bn(y + self.relu6(self.pw(self.dw(y))))
        y = self.relu(self.conv2(y))
        y = y.mean(dim=(2, 3))
        return self.fc2(self.relu(self.fc1(y)))


def seeded_small_cnn(seed: int = 0) -> SmallCNN:
    torch.manual_seed(seed)
    m = SmallCNN()
    with torch.no_grad():
        m.bn.running_mean.uniform_(-0.3, 0.3)
        m.bn.running_var.uniform_(0.5, 2.0)
        m.bn.weight.uniform_(0.5, 1.5)
        m.bn.bias.uniform_(-0.2, 0.2)
        for p in m.parameters():
            p.mul_(2.0)  # bigger weights push activations past the ReLU6 bound too
    return m.eval()


def export(model: nn.Module, example: torch.Tensor) -> bytes:
    """Legacy exporter, opset 17, dynamic batch: what most deployed CNN .onnx files look like."""
    buf = io.BytesIO()
    torch.onnx.export(model, example, buf, dynamo=False, opset_version=17, input_names=["image"],
                      output_names=["logits"], dynamic_axes={"image": {0: "batch"}, "logits": {0: "batch"}})
    return buf.getvalue()
