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


class _SqueezeExcite(nn.Module):
    def __init__(self, c: int, r: int) -> None:
        super().__init__()
        self.fc1, self.fc2, self.relu = nn.Conv2d(c, r, 1), nn.Conv2d(r, c, 1), nn.ReLU()

    def forward(self, x):
        s = F.adaptive_avg_pool2d(x, 1)
        return x * F.hardsigmoid(self.fc2(self.relu(self.fc1(s))))


class _InvertedResidual(nn.Module):
    """1x1 expand, depthwise kxk (stride 1 or 2), optional squeeze-excite, 1x1 project; residual at stride 1."""

    def __init__(self, cin: int, exp: int, cout: int, k: int, stride: int, se: bool, act) -> None:
        super().__init__()
        self.expand = nn.Sequential(nn.Conv2d(cin, exp, 1, bias=False), nn.BatchNorm2d(exp))
        self.dw = nn.Sequential(nn.Conv2d(exp, exp, k, stride, k // 2, groups=exp, bias=False), nn.BatchNorm2d(exp))
        self.se = _SqueezeExcite(exp, max(4, exp // 4)) if se else nn.Identity()
        self.project = nn.Sequential(nn.Conv2d(exp, cout, 1, bias=False), nn.BatchNorm2d(cout))
        self.act, self.residual = act, stride == 1 and cin == cout

    def forward(self, x):
        y = self.project(self.se(self.act(self.dw(self.act(self.expand(x))))))
        return x + y if self.residual else y


class MobileNetV3Style(nn.Module):
    """A small MobileNetV3: hardswish stem, inverted residuals with SE (hardsigmoid gates), depthwise
    stride-2 convolutions (3x3 and 5x5), global average pooling and a hardswish Linear head. Fully
    convolutional up to the pooling, so it takes any image size of 16 pixels or more."""

    def __init__(self, classes: int = 7) -> None:
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, 8, 3, 2, 1, bias=False), nn.BatchNorm2d(8), nn.Hardswish())
        self.blocks = nn.Sequential(
            _InvertedResidual(8, 8, 8, 3, 2, True, nn.ReLU()),
            _InvertedResidual(8, 24, 12, 3, 2, False, nn.ReLU()),
            _InvertedResidual(12, 32, 12, 3, 1, False, nn.ReLU()),
            _InvertedResidual(12, 48, 16, 5, 2, True, nn.Hardswish()),
            _InvertedResidual(16, 48, 16, 5, 1, True, nn.Hardswish()))
        self.last = nn.Sequential(nn.Conv2d(16, 48, 1, bias=False), nn.BatchNorm2d(48), nn.Hardswish())
        self.head = nn.Sequential(nn.Linear(48, 32), nn.Hardswish(), nn.Linear(32, classes))

    def forward(self, x):
        y = self.last(self.blocks(self.stem(x)))
        return self.head(torch.flatten(F.adaptive_avg_pool2d(y, 1), 1))


def seeded_mobilenet_v3(seed: int = 0) -> MobileNetV3Style:
    """Random weights (scaled up: default init leaves this deep a net with gradients near 1e-8) and
    non-trivial batch-norm statistics, in eval mode."""
    torch.manual_seed(seed)
    m = MobileNetV3Style()
    with torch.no_grad():
        for p in m.parameters():
            if p.ndim > 1:
                p.mul_(2.5)
        for mod in m.modules():
            if isinstance(mod, nn.BatchNorm2d):
                mod.running_mean.uniform_(-0.2, 0.2)
                mod.running_var.uniform_(0.5, 1.5)
                mod.weight.uniform_(0.7, 1.3)
                mod.bias.uniform_(-0.2, 0.2)
    return m.eval()


def export_dynamic(model: nn.Module, example: torch.Tensor, dims: dict[int, str]) -> bytes:
    """Legacy exporter, opset 17, with the input's (and batch of the output's) ``dims`` dynamic."""
    buf = io.BytesIO()
    torch.onnx.export(model, example, buf, dynamo=False, opset_version=17, input_names=["image"],
                      output_names=["logits"], dynamic_axes={"image": dims, "logits": {0: dims.get(0, "batch")}})
    return buf.getvalue()


class PixelClassifier(nn.Module):
    """uint8 NHWC pixels in; Cast, /255, ImageNet mean/std and the NHWC -> NCHW transpose inside the graph
    (the shape of TensorFlow, Keras and mobile exports), then a small CNN. ``pixels`` runs the part after
    the Cast, on float pixels: the function onnx-gig explains."""

    def __init__(self, classes: int = 5) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 8, 3, 2, 1)
        self.conv2 = nn.Conv2d(8, 12, 3, 1, 1)
        self.fc = nn.Linear(12, classes)
        self.register_buffer("mean", torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1))
        self.register_buffer("std", torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1))

    def pixels(self, x):
        x = (x.permute(0, 3, 1, 2) / 255.0 - self.mean) / self.std
        y = F.max_pool2d(F.relu(self.conv1(x)), 2)
        y = F.relu6(self.conv2(y))
        return self.fc(y.mean(dim=(2, 3)))

    def forward(self, x):
        return self.pixels(x.to(torch.float32))


def seeded_pixel_classifier(seed: int = 0) -> PixelClassifier:
    torch.manual_seed(seed)
    m = PixelClassifier()
    with torch.no_grad():
        for p in m.parameters():
            p.mul_(2.0)
    return m.eval()
