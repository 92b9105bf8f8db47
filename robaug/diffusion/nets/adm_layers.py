"""Building blocks of ADM (Dhariwal & Nichol 2021, "Diffusion Models Beat GANs", Sec. 3 and App. C).

Written from the paper and a reading of guided-diffusion's ``unet.py``; the module and parameter names are the
reference's so that its state dicts load with ``strict=True`` (``in_layers.0``, ``emb_layers.1``,
``out_layers.3``, ``skip_connection``, ``qkv``, ``proj_out``, ``op``, ``conv``, ...). Only 2-D images.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.checkpoint import checkpoint as _checkpoint

__all__ = [
    "timestep_embedding",
    "GroupNorm32",
    "normalization",
    "TimestepEmbedSequential",
    "Upsample",
    "Downsample",
    "ResBlock",
    "AttentionBlock",
    "AttentionPool2d",
    "qkv_attention",
]


def timestep_embedding(timesteps: torch.Tensor, dim: int, max_period: float = 10000.0) -> torch.Tensor:
    """Sinusoidal embedding ``[cos(t w_i), sin(t w_i)]`` with ``w_i = max_period^(-i / (dim // 2))`` (float32;
    fractional ``t`` allowed); odd ``dim`` gets a trailing zero."""
    half = dim // 2
    freqs = torch.exp(-math.log(max_period) * torch.arange(half, dtype=torch.float32, device=timesteps.device) / half)
    args = timesteps.reshape(-1, 1).float() * freqs[None]
    emb = torch.cat([torch.cos(args), torch.sin(args)], dim=-1)
    if dim % 2:
        emb = torch.cat([emb, torch.zeros_like(emb[:, :1])], dim=-1)
    return emb


class GroupNorm32(nn.GroupNorm):
    """GroupNorm computed in float32 whatever the input / weight dtype; the result has the input's dtype."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        w = None if self.weight is None else self.weight.float()
        b = None if self.bias is None else self.bias.float()
        return F.group_norm(x.float(), self.num_groups, w, b, self.eps).to(x.dtype)


def normalization(channels: int) -> GroupNorm32:
    """ADM's normalisation: 32 groups, eps 1e-5."""
    return GroupNorm32(32, channels)


def _zero(module: nn.Module) -> nn.Module:
    for p in module.parameters():
        nn.init.zeros_(p)
    return module


class TimestepEmbedSequential(nn.Sequential):
    """A sequence whose :class:`ResBlock` members also receive the timestep embedding."""

    def forward(self, x: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        for layer in self:
            x = layer(x, emb) if isinstance(layer, ResBlock) else layer(x)
        return x


class Upsample(nn.Module):
    """Nearest-neighbour 2x upsampling, optionally followed by a 3x3 convolution (``conv``)."""

    def __init__(self, channels: int, use_conv: bool, out_channels: int | None = None) -> None:
        super().__init__()
        self.channels = channels
        self.out_channels = out_channels or channels
        self.use_conv = use_conv
        if use_conv:
            self.conv = nn.Conv2d(channels, self.out_channels, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.interpolate(x, scale_factor=2, mode="nearest")
        return self.conv(x) if self.use_conv else x


class Downsample(nn.Module):
    """2x downsampling: a stride-2 3x3 convolution (``op``), or 2x2 average pooling."""

    def __init__(self, channels: int, use_conv: bool, out_channels: int | None = None) -> None:
        super().__init__()
        self.channels = channels
        self.out_channels = out_channels or channels
        if use_conv:
            self.op: nn.Module = nn.Conv2d(channels, self.out_channels, 3, stride=2, padding=1)
        else:
            if self.out_channels != channels:
                raise ValueError("Downsample without a convolution cannot change the number of channels")
            self.op = nn.AvgPool2d(kernel_size=2, stride=2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.op(x)


class ResBlock(nn.Module):
    """``skip(x) + out(h)``, ``h = conv(SiLU(GN(x)))`` conditioned on the embedding ``e``:

    - additive: ``h = out_layers(h + W e)``;
    - scale-shift (AdaGN, the paper's Sec. 3): ``[s, b] = W e``, ``h = rest(GN(h) * (1 + s) + b)``.

    ``up`` / ``down`` resample both paths between the input normalisation and the first convolution (BigGAN
    style residual up/down-sampling, the paper's Sec. 3).
    """

    def __init__(
        self,
        channels: int,
        emb_channels: int,
        dropout: float,
        out_channels: int | None = None,
        use_conv: bool = False,
        use_scale_shift_norm: bool = False,
        use_checkpoint: bool = False,
        up: bool = False,
        down: bool = False,
    ) -> None:
        super().__init__()
        self.channels = channels
        self.out_channels = out_channels or channels
        self.use_checkpoint = use_checkpoint
        self.use_scale_shift_norm = use_scale_shift_norm
        self.in_layers = nn.Sequential(
            normalization(channels), nn.SiLU(), nn.Conv2d(channels, self.out_channels, 3, padding=1)
        )
        self.updown = up or down
        if up:
            self.h_upd: nn.Module = Upsample(channels, False)
            self.x_upd: nn.Module = Upsample(channels, False)
        elif down:
            self.h_upd = Downsample(channels, False)
            self.x_upd = Downsample(channels, False)
        else:
            self.h_upd = self.x_upd = nn.Identity()
        self.emb_layers = nn.Sequential(
            nn.SiLU(), nn.Linear(emb_channels, 2 * self.out_channels if use_scale_shift_norm else self.out_channels)
        )
        self.out_layers = nn.Sequential(
            normalization(self.out_channels),
            nn.SiLU(),
            nn.Dropout(p=dropout),
            _zero(nn.Conv2d(self.out_channels, self.out_channels, 3, padding=1)),
        )
        if self.out_channels == channels:
            self.skip_connection: nn.Module = nn.Identity()
        elif use_conv:
            self.skip_connection = nn.Conv2d(channels, self.out_channels, 3, padding=1)
        else:
            self.skip_connection = nn.Conv2d(channels, self.out_channels, 1)

    def forward(self, x: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:
        if self.use_checkpoint and self.training and torch.is_grad_enabled():
            return _checkpoint(self._forward, x, emb, use_reentrant=False)
        return self._forward(x, emb)

    def _forward(self, x: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:
        if self.updown:
            h = self.in_layers[1](self.in_layers[0](x))
            h = self.in_layers[2](self.h_upd(h))
            x = self.x_upd(x)
        else:
            h = self.in_layers(x)
        e = self.emb_layers(emb.to(self.emb_layers[1].weight.dtype)).to(h.dtype)[..., None, None]
        if self.use_scale_shift_norm:
            scale, shift = e.chunk(2, dim=1)
            h = self.out_layers[0](h) * (1 + scale) + shift
            for layer in self.out_layers[1:]:
                h = layer(h)
        else:
            h = self.out_layers(h + e)
        return self.skip_connection(x) + h


def qkv_attention(qkv: torch.Tensor, num_heads: int, legacy: bool) -> torch.Tensor:
    """Multi-head softmax attention ``softmax(q^T k / sqrt(d)) v`` over the last axis of ``qkv`` ``(B, 3*H*d, T)``.

    ``legacy=True`` (ADM's default order): channels are grouped per head, ``[q_h, k_h, v_h]`` for h = 1..H;
    ``legacy=False`` (``use_new_attention_order``): ``[q, k, v]`` first, each split into heads.
    """
    b, width, length = qkv.shape
    if width % (3 * num_heads):
        raise ValueError(f"attention width {width} is not divisible by 3 * num_heads = {3 * num_heads}")
    d = width // (3 * num_heads)
    if legacy:
        q, k, v = qkv.reshape(b * num_heads, 3 * d, length).split(d, dim=1)
    else:
        q, k, v = (t.reshape(b * num_heads, d, length) for t in qkv.chunk(3, dim=1))
    a = F.scaled_dot_product_attention(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2))
    return a.transpose(1, 2).reshape(b, num_heads * d, length)


class AttentionBlock(nn.Module):
    """Self-attention over all spatial positions, ``x + proj_out(attn(qkv(GN(x))))`` (1x1 convolutions as
    ``Conv1d`` over the flattened positions, as in the reference). Heads: ``num_heads``, or
    ``channels // num_head_channels`` when ``num_head_channels != -1``."""

    def __init__(
        self,
        channels: int,
        num_heads: int = 1,
        num_head_channels: int = -1,
        use_checkpoint: bool = False,
        use_new_attention_order: bool = False,
    ) -> None:
        super().__init__()
        self.channels = channels
        if num_head_channels == -1:
            self.num_heads = num_heads
        else:
            if channels % num_head_channels:
                raise ValueError(f"attention channels {channels} not divisible by "
                                 f"num_head_channels={num_head_channels}")
            self.num_heads = channels // num_head_channels
        self.use_checkpoint = use_checkpoint
        self.legacy = not use_new_attention_order
        self.norm = normalization(channels)
        self.qkv = nn.Conv1d(channels, 3 * channels, 1)
        self.proj_out = _zero(nn.Conv1d(channels, channels, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.use_checkpoint and self.training and torch.is_grad_enabled():
            return _checkpoint(self._forward, x, use_reentrant=False)
        return self._forward(x)

    def _forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c, *spatial = x.shape
        x = x.reshape(b, c, -1)
        h = self.proj_out(qkv_attention(self.qkv(self.norm(x)), self.num_heads, self.legacy))
        return (x + h).reshape(b, c, *spatial)


class AttentionPool2d(nn.Module):
    """CLIP-style attention pooling (the ADM classifier's head): the mean feature, prepended to the positions
    and given a learned positional embedding, attends to all positions; its output row is returned."""

    def __init__(self, spacial_dim: int, embed_dim: int, num_heads_channels: int,
                 output_dim: int | None = None) -> None:
        super().__init__()
        self.positional_embedding = nn.Parameter(torch.randn(embed_dim, spacial_dim**2 + 1) / embed_dim**0.5)
        self.qkv_proj = nn.Conv1d(embed_dim, 3 * embed_dim, 1)
        self.c_proj = nn.Conv1d(embed_dim, output_dim or embed_dim, 1)
        self.num_heads = embed_dim // num_heads_channels
        self.spacial_dim = spacial_dim

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c, *spatial = x.shape
        x = x.reshape(b, c, -1)
        if x.shape[-1] + 1 != self.positional_embedding.shape[1]:
            raise ValueError(
                f"the attention-pool classifier was built for {self.spacial_dim}x{self.spacial_dim} features; got "
                f"{'x'.join(map(str, spatial))} (feed images at the classifier's image_size)"
            )
        x = torch.cat([x.mean(dim=-1, keepdim=True), x], dim=-1)
        x = x + self.positional_embedding[None].to(x.dtype)
        x = self.c_proj(qkv_attention(self.qkv_proj(x), self.num_heads, legacy=False))
        return x[:, :, 0]
