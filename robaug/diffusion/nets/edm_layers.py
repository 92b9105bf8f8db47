"""Building blocks of NVIDIA EDM's networks (Karras et al. 2022, ``training/networks.py`` of NVlabs/edm).

Written from a reading of the reference; parameter and buffer names follow it so that EDM's own state dicts load
with ``strict=True``. Weights are cast to the activation dtype inside each layer (as in EDM), so a float32 network
can run on half-precision activations. Initialisation is a plain fan-in scaling: these modules exist to run
trained EDM weights, not to reproduce EDM's training initialisation.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["Conv2d", "FourierEmbedding", "GroupNorm", "Linear", "PositionalEmbedding", "UNetBlock"]


def _uniform(shape: Sequence[int], fan_in: int) -> torch.Tensor:
    bound = 1.0 / math.sqrt(max(fan_in, 1))
    return (torch.rand(*shape) * 2 - 1) * bound


class Linear(nn.Module):
    """``y = x W^T + b`` with EDM's parameter names (``weight`` ``(out, in)``, optional ``bias``)."""

    def __init__(self, in_features: int, out_features: int, bias: bool = True) -> None:
        super().__init__()
        self.in_features, self.out_features = int(in_features), int(out_features)
        self.weight = nn.Parameter(_uniform((out_features, in_features), in_features))
        self.bias = nn.Parameter(torch.zeros(out_features)) if bias else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.linear(x, self.weight.to(x.dtype), None if self.bias is None else self.bias.to(x.dtype))


def _resample_kernel(taps: Sequence[float]) -> torch.Tensor:
    """Separable 2-D FIR filter ``f f^T / (sum f)^2`` as a ``(1, 1, k, k)`` tensor."""
    taps = [float(t) for t in taps]
    if not taps or sum(taps) == 0.0:
        raise ValueError(f"resample_filter must be a non-empty list of taps with a non-zero sum, got {taps}")
    f = torch.tensor(taps, dtype=torch.float32)
    return (torch.outer(f, f) / sum(taps) ** 2)[None, None]


class Conv2d(nn.Module):
    """Convolution with optional 2x FIR up- or downsampling before it (EDM's ``Conv2d``).

    ``kernel=0`` means no convolution (a pure resampling layer). Upsampling is a stride-2 transposed depthwise
    convolution with ``4 * filter``; downsampling a stride-2 depthwise convolution with the filter.
    ``fused_resample`` applies the (down) filter after the convolution / the (up) filter before it with the
    paddings merged, as EDM does for its NCSN++ residual encoder path.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel: int,
        bias: bool = True,
        up: bool = False,
        down: bool = False,
        resample_filter: Sequence[float] = (1, 1),
        fused_resample: bool = False,
    ) -> None:
        if up and down:
            raise ValueError("Conv2d: up and down cannot both be set")
        super().__init__()
        self.in_channels, self.out_channels = int(in_channels), int(out_channels)
        self.up, self.down, self.fused_resample = bool(up), bool(down), bool(fused_resample)
        fan_in = in_channels * kernel * kernel
        self.weight = nn.Parameter(_uniform((out_channels, in_channels, kernel, kernel), fan_in)) if kernel else None
        self.bias = nn.Parameter(torch.zeros(out_channels)) if kernel and bias else None
        self.register_buffer("resample_filter", _resample_kernel(resample_filter) if up or down else None)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        w = None if self.weight is None else self.weight.to(x.dtype)
        f = None if self.resample_filter is None else self.resample_filter.to(x.dtype)
        w_pad = 0 if w is None else w.shape[-1] // 2
        f_pad = 0 if f is None else (f.shape[-1] - 1) // 2
        if self.fused_resample and w is not None and (self.up or self.down):
            if self.up:
                fu = (f * 4).expand(self.in_channels, 1, -1, -1)
                x = F.conv_transpose2d(x, fu, groups=self.in_channels, stride=2, padding=max(f_pad - w_pad, 0))
                x = F.conv2d(x, w, padding=max(w_pad - f_pad, 0))
            else:
                x = F.conv2d(x, w, padding=w_pad + f_pad)
                x = F.conv2d(x, f.expand(self.out_channels, 1, -1, -1), groups=self.out_channels, stride=2)
        else:
            if self.up:
                fu = (f * 4).expand(self.in_channels, 1, -1, -1)
                x = F.conv_transpose2d(x, fu, groups=self.in_channels, stride=2, padding=f_pad)
            if self.down:
                x = F.conv2d(x, f.expand(self.in_channels, 1, -1, -1), groups=self.in_channels, stride=2, padding=f_pad)
            if w is not None:
                x = F.conv2d(x, w, padding=w_pad)
        if self.bias is not None:
            x = x + self.bias.to(x.dtype).view(1, -1, 1, 1)
        return x


class GroupNorm(nn.Module):
    """Group normalisation with ``min(num_groups, C // min_channels_per_group)`` groups (EDM's rule)."""

    def __init__(self, num_channels: int, num_groups: int = 32, min_channels_per_group: int = 4, eps: float = 1e-5):
        super().__init__()
        self.num_groups = max(1, min(num_groups, num_channels // min_channels_per_group))
        self.eps = float(eps)
        self.weight = nn.Parameter(torch.ones(num_channels))
        self.bias = nn.Parameter(torch.zeros(num_channels))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.group_norm(x, self.num_groups, self.weight.to(x.dtype), self.bias.to(x.dtype), self.eps)


class UNetBlock(nn.Module):
    """EDM's residual block (the union of the DDPM++, NCSN++ and ADM blocks), optionally resampling and with
    multi-head self-attention after the residual part:

        h = conv0(silu(norm0(x)));  h = silu(norm1(h) * (1 + scale) + shift)   [adaptive_scale]
                                    h = silu(norm1(h + affine(emb)))            [otherwise]
        x' = skip_scale * (conv1(dropout(h)) + skip(x));  x'' = skip_scale * (proj(attn(norm2(x'))) + x')
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        emb_channels: int,
        up: bool = False,
        down: bool = False,
        attention: bool = False,
        num_heads: int | None = None,
        channels_per_head: int = 64,
        dropout: float = 0.0,
        skip_scale: float = 1.0,
        eps: float = 1e-5,
        resample_filter: Sequence[float] = (1, 1),
        resample_proj: bool = False,
        adaptive_scale: bool = True,
    ) -> None:
        super().__init__()
        self.in_channels, self.out_channels = int(in_channels), int(out_channels)
        self.num_heads = 0 if not attention else int(
            num_heads if num_heads is not None else out_channels // channels_per_head)
        if attention and (self.num_heads < 1 or out_channels % self.num_heads):
            raise ValueError(f"UNetBlock: {out_channels} channels cannot be split into "
                             f"{self.num_heads} attention heads")
        self.dropout, self.skip_scale, self.adaptive_scale = float(dropout), float(skip_scale), bool(adaptive_scale)
        self.norm0 = GroupNorm(in_channels, eps=eps)
        self.conv0 = Conv2d(in_channels, out_channels, 3, up=up, down=down, resample_filter=resample_filter)
        self.affine = Linear(emb_channels, out_channels * (2 if adaptive_scale else 1))
        self.norm1 = GroupNorm(out_channels, eps=eps)
        self.conv1 = Conv2d(out_channels, out_channels, 3)
        self.skip = None
        if out_channels != in_channels or up or down:
            kernel = 1 if resample_proj or out_channels != in_channels else 0
            self.skip = Conv2d(in_channels, out_channels, kernel, up=up, down=down, resample_filter=resample_filter)
        if self.num_heads:
            self.norm2 = GroupNorm(out_channels, eps=eps)
            self.qkv = Conv2d(out_channels, out_channels * 3, 1)
            self.proj = Conv2d(out_channels, out_channels, 1)

    def forward(self, x: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:
        orig = x
        x = self.conv0(F.silu(self.norm0(x)))
        params = self.affine(emb).to(x.dtype)[:, :, None, None]
        if self.adaptive_scale:
            scale, shift = params.chunk(2, dim=1)
            x = F.silu(torch.addcmul(shift, self.norm1(x), scale + 1))
        else:
            x = F.silu(self.norm1(x + params))
        x = self.conv1(F.dropout(x, p=self.dropout, training=self.training))
        x = (x + (orig if self.skip is None else self.skip(orig))) * self.skip_scale
        if self.num_heads:
            b, c, h, w = x.shape
            # qkv channels are laid out (head, channel, {q,k,v}); attention over the h*w positions.
            q, k, v = self.qkv(self.norm2(x)).reshape(b * self.num_heads, c // self.num_heads, 3, h * w).unbind(2)
            a = F.scaled_dot_product_attention(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2))
            x = (self.proj(a.transpose(1, 2).reshape(b, c, h, w)) + x) * self.skip_scale
        return x


class PositionalEmbedding(nn.Module):
    """Sinusoidal embedding ``[cos(x w_i), sin(x w_i)]``, ``w_i = max_positions^(-i / (n/2 - endpoint))``."""

    def __init__(self, num_channels: int, max_positions: int = 10000, endpoint: bool = False) -> None:
        super().__init__()
        self.num_channels, self.max_positions, self.endpoint = int(num_channels), int(max_positions), bool(endpoint)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        half = self.num_channels // 2
        freqs = torch.arange(half, dtype=torch.float32, device=x.device) / (half - (1 if self.endpoint else 0))
        freqs = (1.0 / self.max_positions) ** freqs
        x = torch.outer(x, freqs.to(x.dtype))
        return torch.cat([x.cos(), x.sin()], dim=1)


class FourierEmbedding(nn.Module):
    """Random Fourier features ``[cos(2 pi x f_i), sin(2 pi x f_i)]`` with a stored buffer ``freqs``."""

    def __init__(self, num_channels: int, scale: float = 16.0) -> None:
        super().__init__()
        self.register_buffer("freqs", torch.randn(num_channels // 2) * scale)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.outer(x, (2 * math.pi * self.freqs).to(x.dtype))
        return torch.cat([x.cos(), x.sin()], dim=1)
