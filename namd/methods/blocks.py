"""Small building blocks shared by the from-scratch baselines of Table 1.

Every baseline that needs a conv net builds it here, so the methods differ in what defines them
(losses, paths, samplers) and not in incidental layer choices. All nets work on any square input
whose side is divisible by 2**(len(mults) - 1): the 16/32/64-pixel crops and small latent maps.

- `ResBlock`: pre-activation residual block with an optional additive embedding (time, class).
- `ConvUNet`: a compact U-Net (skip connections at every scale) with an optional embedding.
- `ConvEncoder` / `ConvDecoder`: a residual down- / up-sampling stack, e.g. an autoencoder.
- `StridedEncoder`: the DCGAN-style trunk of a GAN critic / discriminator (cheap to double-backprop).
- `sinusoidal_embedding`, `TimeEmbedding`: the DDPM sinusoidal embedding of a scalar time (+ MLP).
- `ssim`: the standard Gaussian-window SSIM (Wang et al. 2004), differentiable, for losses.

Normalisation is a choice, not a default buried in a layer: "group" (GroupNorm, batch-independent,
so samples never depend on their batch), "layer" (one group: per-sample layer norm, what WGAN-GP
asks of a critic) or "none".
"""

from __future__ import annotations

import math
from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from namd.training import TRAINER_KEYS

NORMS = ("group", "layer", "none")


def make_norm(kind: str, channels: int) -> nn.Module:
    """A batch-independent normalisation of `channels` feature maps (never batch norm)."""
    if kind == "group":
        groups = math.gcd(channels, 8)
        return nn.GroupNorm(groups, channels)
    if kind == "layer":
        return nn.GroupNorm(1, channels)
    if kind == "none":
        return nn.Identity()
    raise ValueError(f"unknown norm {kind!r}; choose one of {NORMS}")


def sinusoidal_embedding(t: torch.Tensor, dim: int, scale: float = 1000.0, max_period: float = 10000.0) -> torch.Tensor:
    """(B,) scalars -> (B, dim) sin/cos features at geometric frequencies (DDPM / transformer style).

    Times are multiplied by `scale` first: 1000 spreads t in [0, 1] over the range of step indices
    the frequencies were designed for; pass 1 for integer steps.
    """
    if dim % 2:
        raise ValueError(f"sinusoidal_embedding: dim must be even, got {dim}")
    half = dim // 2
    freqs = torch.exp(-math.log(max_period) * torch.arange(half, device=t.device, dtype=torch.float32) / half)
    angles = (t.float().reshape(-1) * scale)[:, None] * freqs[None]
    return torch.cat([angles.sin(), angles.cos()], dim=1)


class TimeEmbedding(nn.Module):
    """Sinusoidal features of t followed by a two-layer MLP, the usual diffusion/flow time input."""

    def __init__(self, dim: int):
        super().__init__()
        self.dim = dim
        self.mlp = nn.Sequential(nn.Linear(dim, dim), nn.SiLU(), nn.Linear(dim, dim))

    def forward(self, t: torch.Tensor) -> torch.Tensor:
        return self.mlp(sinusoidal_embedding(t, self.dim))


class ResBlock(nn.Module):
    """norm-SiLU-conv twice with a residual path; `emb` (B, emb_dim) is added between the convs."""

    def __init__(self, in_channels: int, out_channels: int, emb_dim: int = 0, norm: str = "group"):
        super().__init__()
        self.norm1 = make_norm(norm, in_channels)
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, padding=1)
        self.emb = nn.Linear(emb_dim, out_channels) if emb_dim else None
        self.norm2 = make_norm(norm, out_channels)
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, padding=1)
        self.skip = nn.Conv2d(in_channels, out_channels, 1) if in_channels != out_channels else nn.Identity()

    def forward(self, x: torch.Tensor, emb: torch.Tensor | None = None) -> torch.Tensor:
        h = self.conv1(F.silu(self.norm1(x)))
        if self.emb is not None:
            if emb is None:
                raise ValueError("ResBlock was built with an embedding but none was given")
            h = h + self.emb(F.silu(emb))[:, :, None, None]
        h = self.conv2(F.silu(self.norm2(h)))
        return self.skip(x) + h


def _downsample(channels: int) -> nn.Module:
    return nn.Conv2d(channels, channels, 3, stride=2, padding=1)


def _upsample(channels: int) -> nn.Module:
    return nn.Sequential(nn.Upsample(scale_factor=2, mode="nearest"), nn.Conv2d(channels, channels, 3, padding=1))


def check_size(net: str, x: torch.Tensor, levels: int) -> None:
    """Clear error when the input cannot be halved `levels` times."""
    factor = 2**levels
    if x.shape[-1] % factor or x.shape[-2] % factor:
        raise ValueError(
            f"{net}: input of size {tuple(x.shape[-2:])} is not divisible by {factor} "
            f"({levels} downsamplings); use fewer `mults` or another image size"
        )


class ConvUNet(nn.Module):
    """U-Net: one ResBlock per scale on the way down and up, a skip at each scale.

    `mults` gives the channels per scale as multiples of `base`; there are len(mults) - 1
    halvings. With `emb_dim` > 0 every block takes an embedding (B, emb_dim).
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        base: int = 32,
        mults: Sequence[int] = (1, 2, 2),
        emb_dim: int = 0,
        norm: str = "group",
    ):
        super().__init__()
        widths = [base * m for m in mults]
        self.levels = len(widths) - 1
        self.conv_in = nn.Conv2d(in_channels, widths[0], 3, padding=1)
        self.down = nn.ModuleList()
        self.pool = nn.ModuleList()
        channels = widths[0]
        for i, width in enumerate(widths):
            self.down.append(ResBlock(channels, width, emb_dim, norm))
            channels = width
            if i < self.levels:
                self.pool.append(_downsample(channels))
        self.mid = ResBlock(channels, channels, emb_dim, norm)
        self.up = nn.ModuleList()
        self.unpool = nn.ModuleList()
        for i, width in reversed(list(enumerate(widths))):
            self.up.append(ResBlock(channels + width, width, emb_dim, norm))
            channels = width
            if i > 0:
                self.unpool.append(_upsample(channels))
        self.out = nn.Sequential(make_norm(norm, channels), nn.SiLU(), nn.Conv2d(channels, out_channels, 3, padding=1))

    def forward(self, x: torch.Tensor, emb: torch.Tensor | None = None) -> torch.Tensor:
        check_size("ConvUNet", x, self.levels)
        h = self.conv_in(x)
        skips = []
        for i, block in enumerate(self.down):
            h = block(h, emb)
            skips.append(h)
            if i < self.levels:
                h = self.pool[i](h)
        h = self.mid(h, emb)
        for i, block in enumerate(self.up):
            h = block(torch.cat([h, skips.pop()], dim=1), emb)
            if i < self.levels:
                h = self.unpool[i](h)
        return self.out(h)


class ConvEncoder(nn.Module):
    """ResBlock then a stride-2 conv per scale: (B, C, S, S) -> (B, out, S / 2**(len(mults)-1), ...)."""

    def __init__(self, in_channels: int, out_channels: int, base: int = 32, mults: Sequence[int] = (1, 2, 2),
                 norm: str = "group"):
        super().__init__()
        widths = [base * m for m in mults]
        self.levels = len(widths) - 1
        layers: list[nn.Module] = [nn.Conv2d(in_channels, widths[0], 3, padding=1)]
        channels = widths[0]
        for i, width in enumerate(widths):
            layers.append(ResBlock(channels, width, norm=norm))
            channels = width
            if i < self.levels:
                layers.append(_downsample(channels))
        layers += [make_norm(norm, channels), nn.SiLU(), nn.Conv2d(channels, out_channels, 3, padding=1)]
        self.net = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        check_size("ConvEncoder", x, self.levels)
        return self.net(x)


class ConvDecoder(nn.Module):
    """Mirror of `ConvEncoder`: upsample then ResBlock per scale, back to the image size."""

    def __init__(self, in_channels: int, out_channels: int, base: int = 32, mults: Sequence[int] = (1, 2, 2),
                 norm: str = "group"):
        super().__init__()
        widths = [base * m for m in reversed(mults)]
        layers: list[nn.Module] = [nn.Conv2d(in_channels, widths[0], 3, padding=1)]
        channels = widths[0]
        for i, width in enumerate(widths):
            if i > 0:
                layers.append(_upsample(channels))
            layers.append(ResBlock(channels, width, norm=norm))
            channels = width
        layers += [make_norm(norm, channels), nn.SiLU(), nn.Conv2d(channels, out_channels, 3, padding=1)]
        self.net = nn.Sequential(*layers)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.net(z)


class StridedEncoder(nn.Module):
    """4x4 stride-2 conv, norm, LeakyReLU(0.2) per width: (B, C, S, S) -> (B, widths[-1], S / 2**len, ...).

    The plain trunk of DCGAN / WGAN-GP critics; the first layer has no norm, as in those nets.
    """

    def __init__(self, in_channels: int, widths: Sequence[int], norm: str = "layer"):
        super().__init__()
        layers: list[nn.Module] = []
        channels = in_channels
        for i, width in enumerate(widths):
            layers += [nn.Conv2d(channels, width, 4, stride=2, padding=1),
                       make_norm(norm if i else "none", width), nn.LeakyReLU(0.2)]
            channels = width
        self.levels = len(widths)
        self.net = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        check_size("StridedEncoder", x, self.levels)
        return self.net(x)


def ssim(x: torch.Tensor, y: torch.Tensor, data_range: float = 2.0, window: int = 11,
         sigma: float = 1.5) -> torch.Tensor:
    """Mean SSIM of (B, C, H, W) images (Wang et al. 2004: Gaussian window 11 / 1.5, K1 0.01, K2 0.03).

    Local statistics use the separable Gaussian over valid window positions only (no padding), as
    the reference implementation does; `data_range` is 2 for images in [-1, 1].
    """
    if x.shape != y.shape:
        raise ValueError(f"ssim: shapes differ, {tuple(x.shape)} vs {tuple(y.shape)}")
    if min(x.shape[-2:]) < window:
        raise ValueError(f"ssim: images of size {tuple(x.shape[-2:])} are smaller than the {window}-pixel window")
    channels = x.shape[1]
    coords = torch.arange(window, device=x.device, dtype=x.dtype) - (window - 1) / 2
    g = torch.exp(-coords.square() / (2 * sigma**2))
    g = (g / g.sum()).expand(channels, 1, 1, window)

    def blur(v: torch.Tensor) -> torch.Tensor:
        return F.conv2d(F.conv2d(v, g, groups=channels), g.transpose(-1, -2), groups=channels)

    c1, c2 = (0.01 * data_range) ** 2, (0.03 * data_range) ** 2
    mu_x, mu_y = blur(x), blur(y)
    var_x = blur(x * x) - mu_x.square()
    var_y = blur(y * y) - mu_y.square()
    cov = blur(x * y) - mu_x * mu_y
    ssim_map = ((2 * mu_x * mu_y + c1) * (2 * cov + c2)) / ((mu_x.square() + mu_y.square() + c1) * (var_x + var_y + c2))
    return ssim_map.mean()


def merge_params(method: str, defaults: dict, params: dict) -> dict:
    """The method's defaults overridden by `params`; an unknown key (a typo in config) is an error."""
    unknown = sorted(set(params) - set(defaults) - set(TRAINER_KEYS))
    if unknown:
        raise ValueError(f"{method}: unknown params {unknown}; known: {sorted(defaults)}")
    return {**defaults, **params}
