"""Tiny modern image classifiers in plain PyTorch, switchable to guided backward passes (the zoo's oracle).

Each net is shaped like a family the issue names (ConvNeXt, RegNet, DenseNet, Inception, ViT/DeiT) at a
size that converts and runs in a second, and between them they hold the ops of modern classifiers: exact
GELU, LayerNorm and GroupNorm, depthwise 7x7 convolutions, layer scale, grouped convolutions with
squeeze-excitation, dense concatenation, parallel branches, ConvTranspose, PixelShuffle/PixelUnshuffle,
patch embedding, a class token, positional embeddings and multi-head self-attention.

``mode``: "plain"; "paper" (ReLU and max-pool guided, the paper's set); "all" (every element-wise
non-linear unit guided: relu(g) * relu(f'(x)), max-pool routing relu(g) to its arg-max). Linear maps,
normalisations, softmax and the attention products keep their true gradients in every mode, as in
onnx-gig's rule sets. The guided pieces are written from their definitions (zoo_models.guided_unit,
torch_nets.ScatterGuidedMaxPool) and share no code with onnx-gig.
"""
from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from zoo_models import guided_maxpool, guided_unit

NETS = ["convnext", "regnet", "densenet", "inception", "vit"]
PAPER_UNITS = {"convnext": False, "regnet": True, "densenet": True, "inception": True, "vit": False}


class Guidable(nn.Module):
    """Base: ``act(name, x)`` and ``maxpool(x, k, s, p)`` follow ``self.mode``."""

    FNS = {"relu": F.relu, "gelu": F.gelu, "sigmoid": torch.sigmoid}

    def __init__(self) -> None:
        super().__init__()
        self.mode = "plain"

    @property
    def mode(self) -> str:
        return self._mode

    @mode.setter
    def mode(self, value: str) -> None:
        """Set the mode here and in every Guidable part (blocks)."""
        self._mode = value
        for m in self.modules():
            if isinstance(m, Guidable) and m is not self:
                m._mode = value

    def act(self, name: str, x):
        guided = self.mode == "all" or (self.mode == "paper" and name == "relu")
        return guided_unit(self.FNS[name])(x) if guided else self.FNS[name](x)

    def maxpool(self, x, k: int, s: int, p: int):
        return guided_maxpool(x, k, s, p) if self.mode != "plain" else F.max_pool2d(x, k, s, p)


class LayerNorm2d(nn.LayerNorm):
    """LayerNorm over channels of an NCHW tensor (ConvNeXt's), via NHWC."""

    def forward(self, x):
        return super().forward(x.permute(0, 2, 3, 1)).permute(0, 3, 1, 2)


class ConvNeXtBlock(Guidable):
    """Depthwise 7x7, then (NHWC) LayerNorm, Linear 4x, GELU, Linear, layer scale; a residual."""

    def __init__(self, width: int) -> None:
        super().__init__()
        self.dw = nn.Conv2d(width, width, 7, padding=3, groups=width)
        self.norm, self.fc1, self.fc2 = nn.LayerNorm(width), nn.Linear(width, 4 * width), nn.Linear(4 * width, width)
        self.gamma = nn.Parameter(torch.full((width,), 0.5))

    def forward(self, x):
        y = self.norm(self.dw(x).permute(0, 2, 3, 1))
        y = self.fc2(self.act("gelu", self.fc1(y)))
        return x + (self.gamma * y).permute(0, 3, 1, 2)


class ConvNeXt(Guidable):
    def __init__(self, c: int = 16) -> None:
        super().__init__()
        self.stem = nn.Conv2d(3, c, 4, stride=4)
        self.stem_norm = LayerNorm2d(c)
        self.block1, self.block2 = ConvNeXtBlock(c), ConvNeXtBlock(2 * c)
        self.down_norm = nn.GroupNorm(1, c)  # LayerNorm over (C, H, W): GroupNorm's export
        self.down = nn.Conv2d(c, 2 * c, 2, stride=2)
        self.head_norm = nn.LayerNorm(2 * c)
        self.head = nn.Linear(2 * c, 10)

    def forward(self, x):
        x = self.block1(self.stem_norm(self.stem(x)))
        x = self.block2(self.down(self.down_norm(x)))
        return self.head(self.head_norm(x.mean((2, 3))))


class RegNet(Guidable):
    """PixelUnshuffle stem, then an X-block: 1x1, grouped 3x3 stride 2, squeeze-excitation, 1x1, shortcut."""

    def __init__(self, c: int = 16) -> None:
        super().__init__()
        self.unshuffle = nn.PixelUnshuffle(2)
        self.stem = nn.Conv2d(12, c, 3, padding=1)
        self.stem_bn = nn.BatchNorm2d(c)
        self.a, self.a_bn = nn.Conv2d(c, 2 * c, 1), nn.BatchNorm2d(2 * c)
        self.b, self.b_bn = nn.Conv2d(2 * c, 2 * c, 3, stride=2, padding=1, groups=4), nn.BatchNorm2d(2 * c)
        self.se1, self.se2 = nn.Conv2d(2 * c, 8, 1), nn.Conv2d(8, 2 * c, 1)
        self.c, self.c_bn = nn.Conv2d(2 * c, 2 * c, 1), nn.BatchNorm2d(2 * c)
        self.short, self.short_bn = nn.Conv2d(c, 2 * c, 1, stride=2), nn.BatchNorm2d(2 * c)
        self.head = nn.Linear(2 * c, 10)

    def forward(self, x):
        x = self.act("relu", self.stem_bn(self.stem(self.unshuffle(x))))
        y = self.act("relu", self.a_bn(self.a(x)))
        y = self.act("relu", self.b_bn(self.b(y)))
        y = y * self.act("sigmoid", self.se2(self.act("relu", self.se1(y.mean((2, 3), keepdim=True)))))
        y = self.act("relu", self.c_bn(self.c(y)) + self.short_bn(self.short(x)))
        return self.head(torch.flatten(F.adaptive_avg_pool2d(y, 1), 1))


class DenseNet(Guidable):
    """Stem, max-pool, a dense block (BN-ReLU-1x1-BN-ReLU-3x3, concatenated), a transition, a second block."""

    def __init__(self, c: int = 16, growth: int = 8) -> None:
        super().__init__()
        self.stem, self.stem_bn = nn.Conv2d(3, c, 3, padding=1), nn.BatchNorm2d(c)
        self.layers = nn.ModuleList()
        widths = []
        for block in range(2):
            for i in range(2):
                cin = c + i * growth
                widths.append(cin)
                self.layers.append(nn.ModuleList([nn.BatchNorm2d(cin), nn.Conv2d(cin, 2 * growth, 1),
                                                  nn.BatchNorm2d(2 * growth), nn.Conv2d(2 * growth, growth, 3,
                                                                                        padding=1)]))
            if block == 0:
                self.trans_bn, self.trans = nn.BatchNorm2d(c + 2 * growth), nn.Conv2d(c + 2 * growth, c, 1)
        self.final_bn = nn.BatchNorm2d(c + 2 * growth)
        self.head = nn.Linear(c + 2 * growth, 10)

    def dense(self, x, layers):
        for bn1, conv1, bn2, conv2 in layers:
            y = conv2(self.act("relu", bn2(conv1(self.act("relu", bn1(x))))))
            x = torch.cat([x, y], 1)
        return x

    def forward(self, x):
        x = self.maxpool(self.act("relu", self.stem_bn(self.stem(x))), 3, 2, 1)
        x = self.dense(x, self.layers[:2])
        x = F.avg_pool2d(self.trans(self.act("relu", self.trans_bn(x))), 2)
        x = self.act("relu", self.final_bn(self.dense(x, self.layers[2:])))
        return self.head(x.mean((2, 3)))


class Inception(Guidable):
    """Two inception modules: 1x1 | 1x1-3x3 | 1x1-3x3-3x3 | max-pool-1x1, plus an upsampling branch
    (stride-2 conv, then ConvTranspose back) and a PixelShuffle branch in the second."""

    def __init__(self, c: int = 12) -> None:
        super().__init__()
        self.stem, self.stem_bn = nn.Conv2d(3, c, 3, stride=2, padding=1), nn.BatchNorm2d(c)

        def branches(cin: int, b: int) -> nn.ModuleDict:
            return nn.ModuleDict(dict(
                b1=nn.Conv2d(cin, b, 1), b2a=nn.Conv2d(cin, b, 1), b2b=nn.Conv2d(b, b, 3, padding=1),
                b3a=nn.Conv2d(cin, b, 1), b3b=nn.Conv2d(b, b, 3, padding=1), b3c=nn.Conv2d(b, b, 3, padding=1),
                b4=nn.Conv2d(cin, b, 1)))
        self.m1 = branches(c, 6)
        self.m2 = branches(24, 8)
        self.up_a, self.up_b = nn.Conv2d(24, 8, 3, stride=2, padding=1), nn.ConvTranspose2d(8, 8, 2, stride=2)
        self.shuffle_conv, self.shuffle = nn.Conv2d(24, 32, 1), nn.PixelShuffle(2)
        self.head = nn.Linear(48, 10)

    def module(self, m, x):
        r = lambda t: self.act("relu", t)  # noqa: E731
        return [r(m["b1"](x)), r(m["b2b"](r(m["b2a"](x)))), r(m["b3c"](r(m["b3b"](r(m["b3a"](x)))))),
                r(m["b4"](self.maxpool(x, 3, 1, 1)))]

    def forward(self, x):
        x = self.act("relu", self.stem_bn(self.stem(x)))
        x = self.maxpool(torch.cat(self.module(self.m1, x), 1), 3, 2, 1)
        up = self.up_b(self.act("relu", self.up_a(x)))
        shuffled = self.shuffle(self.shuffle_conv(F.avg_pool2d(x, 2)))
        x = torch.cat(self.module(self.m2, x) + [up, shuffled], 1)
        return self.head(torch.flatten(F.adaptive_avg_pool2d(x, 1), 1))


class ViT(Guidable):
    """DeiT-style: 4x4 patch convolution, class token, positional embedding, two pre-norm blocks of
    multi-head self-attention and a GELU MLP, the class token's final LayerNorm, a linear head."""

    def __init__(self, dim: int = 32, heads: int = 2, tokens: int = 64) -> None:
        super().__init__()
        self.heads = heads
        self.patch = nn.Conv2d(3, dim, 4, stride=4)
        self.cls = nn.Parameter(torch.randn(1, 1, dim) * 0.5)
        self.pos = nn.Parameter(torch.randn(1, tokens + 1, dim) * 0.5)
        self.blocks = nn.ModuleList([nn.ModuleDict(dict(
            n1=nn.LayerNorm(dim), qkv=nn.Linear(dim, 3 * dim), proj=nn.Linear(dim, dim),
            n2=nn.LayerNorm(dim), fc1=nn.Linear(dim, 2 * dim), fc2=nn.Linear(2 * dim, dim))) for _ in range(2)])
        self.norm = nn.LayerNorm(dim)
        self.head = nn.Linear(dim, 10)

    def attention(self, b, x):
        n, t, d = x.shape
        q, k, v = b["qkv"](x).reshape(n, t, 3, self.heads, d // self.heads).permute(2, 0, 3, 1, 4)
        a = torch.softmax(q @ k.transpose(-2, -1) * (d // self.heads) ** -0.5, dim=-1)
        return b["proj"]((a @ v).transpose(1, 2).reshape(n, t, d))

    def forward(self, x):
        x = self.patch(x).flatten(2).transpose(1, 2)
        x = torch.cat([self.cls.expand(x.shape[0], -1, -1), x], 1) + self.pos
        for b in self.blocks:
            x = x + self.attention(b, b["n1"](x))
            x = x + b["fc2"](self.act("gelu", b["fc1"](b["n2"](x))))
        return self.head(self.norm(x)[:, 0])


def make(name: str, seed: int = 0) -> Guidable:
    """The net called ``name`` with seeded weights (BatchNorm statistics and affine parameters not trivial)."""
    torch.manual_seed(seed)
    net = {"convnext": ConvNeXt, "regnet": RegNet, "densenet": DenseNet, "inception": Inception, "vit": ViT}[name]()
    with torch.no_grad():
        for m in net.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.uniform_(-0.3, 0.3)
                m.running_var.uniform_(0.5, 2.0)
            if isinstance(m, (nn.BatchNorm2d, nn.LayerNorm, nn.GroupNorm)):
                m.weight.uniform_(0.5, 1.5)
                m.bias.uniform_(-0.3, 0.3)
    return net.eval()
