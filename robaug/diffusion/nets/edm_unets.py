"""NVIDIA EDM's U-Nets: ``SongUNet`` (DDPM++ / NCSN++, the CIFAR-10 models) and ``DhariwalUNet`` (ADM, ImageNet-64).

Both are built from EDM's own keyword arguments (the ``init_kwargs`` a ``.pkl`` records) and name their modules as
EDM does (``enc.16x16_conv``, ``dec.8x8_in0``, ...), so EDM state dicts load strictly. Both are called as
``net(x, noise_labels, class_labels=None, augment_labels=None)``: ``noise_labels`` is the ``(B,)`` c_noise of the
preconditioning, ``class_labels`` a ``(B, label_dim)`` float (one-hot) tensor, ``None`` meaning all zeros.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from .edm_layers import Conv2d, FourierEmbedding, GroupNorm, Linear, PositionalEmbedding, UNetBlock

__all__ = ["DhariwalUNet", "SongUNet"]


def _check(name: str, value: str, allowed: Sequence[str]) -> None:
    if value not in allowed:
        raise ValueError(f"{name} must be one of {list(allowed)}, got {value!r}")


def _emb_dtype(x: torch.Tensor) -> torch.dtype:
    """The embedding path runs in at least float32 (a VP c_noise of ~999 needs it); blocks cast back to x's."""
    return torch.promote_types(x.dtype, torch.float32)


class _EDMUNet(nn.Module):
    """Shared parts: label handling (with training-time label dropout) and the skip-connected decoder walk."""

    label_dim: int
    label_dropout: float

    def _labels(self, class_labels: torch.Tensor | None, x: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
        if class_labels is None:
            return x.new_zeros(x.shape[0], self.label_dim, dtype=dtype)
        labels = class_labels.to(dtype).reshape(-1, self.label_dim)
        if self.training and self.label_dropout:
            keep = torch.rand(x.shape[0], 1, device=x.device) >= self.label_dropout
            labels = labels * keep.to(labels.dtype)
        return labels

    def _decode(self, x: torch.Tensor, emb: torch.Tensor, skips: list[torch.Tensor]) -> torch.Tensor:
        aux = tmp = None
        for name, block in self.dec.items():
            if name.endswith("_aux_up"):
                aux = block(aux)
            elif name.endswith("_aux_norm"):
                tmp = block(x)
            elif name.endswith("_aux_conv"):
                tmp = block(F.silu(tmp))
                aux = tmp if aux is None else tmp + aux
            else:
                if x.shape[1] != block.in_channels:  # a block fed by the skip connection
                    x = torch.cat([x, skips.pop()], dim=1)
                x = block(x, emb)
        return x if aux is None else aux


class SongUNet(_EDMUNet):
    """DDPM++ (``embedding_type='positional'``, ``encoder_type='standard'``, filter ``[1,1]``) and NCSN++
    (``'fourier'``, ``'residual'``, ``[1,3,3,1]``) of Song et al. 2021 as re-implemented in EDM."""

    def __init__(
        self,
        img_resolution: int,
        in_channels: int,
        out_channels: int,
        label_dim: int = 0,
        augment_dim: int = 0,
        model_channels: int = 128,
        channel_mult: Sequence[int] = (1, 2, 2, 2),
        channel_mult_emb: int = 4,
        num_blocks: int = 4,
        attn_resolutions: Sequence[int] = (16,),
        dropout: float = 0.10,
        label_dropout: float = 0.0,
        embedding_type: str = "positional",
        channel_mult_noise: int = 1,
        encoder_type: str = "standard",
        decoder_type: str = "standard",
        resample_filter: Sequence[int] = (1, 1),
    ) -> None:
        _check("embedding_type", embedding_type, ("positional", "fourier"))
        _check("encoder_type", encoder_type, ("standard", "skip", "residual"))
        _check("decoder_type", decoder_type, ("standard", "skip"))
        super().__init__()
        self.img_resolution, self.label_dim = int(img_resolution), int(label_dim)
        self.label_dropout = float(label_dropout)
        self.downsample_factor = 2 ** (len(channel_mult) - 1)  # H and W must be multiples of it
        emb_ch, noise_ch = model_channels * channel_mult_emb, model_channels * channel_mult_noise
        blk = dict(emb_channels=emb_ch, num_heads=1, dropout=dropout, skip_scale=math.sqrt(0.5), eps=1e-6,
                   resample_filter=resample_filter, resample_proj=True, adaptive_scale=False)

        if embedding_type == "positional":
            self.map_noise = PositionalEmbedding(noise_ch, endpoint=True)
        else:
            self.map_noise = FourierEmbedding(noise_ch)
        self.map_label = Linear(label_dim, noise_ch) if label_dim else None
        self.map_augment = Linear(augment_dim, noise_ch, bias=False) if augment_dim else None
        self.map_layer0 = Linear(noise_ch, emb_ch)
        self.map_layer1 = Linear(emb_ch, emb_ch)

        self.enc = nn.ModuleDict()
        cout = caux = in_channels
        for level, mult in enumerate(channel_mult):
            res = img_resolution >> level
            if level == 0:
                self.enc[f"{res}x{res}_conv"] = Conv2d(cout, model_channels, 3)
                cout = model_channels
            else:
                self.enc[f"{res}x{res}_down"] = UNetBlock(cout, cout, down=True, **blk)
                if encoder_type == "skip":
                    self.enc[f"{res}x{res}_aux_down"] = Conv2d(caux, caux, 0, down=True,
                                                               resample_filter=resample_filter)
                    self.enc[f"{res}x{res}_aux_skip"] = Conv2d(caux, cout, 1)
                if encoder_type == "residual":
                    self.enc[f"{res}x{res}_aux_residual"] = Conv2d(
                        caux, cout, 3, down=True, resample_filter=resample_filter, fused_resample=True)
                    caux = cout
            for idx in range(num_blocks):
                cin, cout = cout, model_channels * mult
                self.enc[f"{res}x{res}_block{idx}"] = UNetBlock(cin, cout, attention=res in attn_resolutions, **blk)
        skips = [m.out_channels for name, m in self.enc.items() if "_aux_" not in name]

        self.dec = nn.ModuleDict()
        last = len(channel_mult) - 1
        for level, mult in reversed(list(enumerate(channel_mult))):
            res = img_resolution >> level
            if level == last:
                self.dec[f"{res}x{res}_in0"] = UNetBlock(cout, cout, attention=True, **blk)
                self.dec[f"{res}x{res}_in1"] = UNetBlock(cout, cout, **blk)
            else:
                self.dec[f"{res}x{res}_up"] = UNetBlock(cout, cout, up=True, **blk)
            for idx in range(num_blocks + 1):
                cin, cout = cout + skips.pop(), model_channels * mult
                attn = idx == num_blocks and res in attn_resolutions
                self.dec[f"{res}x{res}_block{idx}"] = UNetBlock(cin, cout, attention=attn, **blk)
            if decoder_type == "skip" or level == 0:
                if decoder_type == "skip" and level < last:
                    self.dec[f"{res}x{res}_aux_up"] = Conv2d(
                        out_channels, out_channels, 0, up=True, resample_filter=resample_filter)
                self.dec[f"{res}x{res}_aux_norm"] = GroupNorm(cout, eps=1e-6)
                self.dec[f"{res}x{res}_aux_conv"] = Conv2d(cout, out_channels, 3)

    def forward(
        self,
        x: torch.Tensor,
        noise_labels: torch.Tensor,
        class_labels: torch.Tensor | None = None,
        augment_labels: torch.Tensor | None = None,
    ) -> torch.Tensor:
        emb = self.map_noise(noise_labels.to(_emb_dtype(x)))
        half = emb.shape[1] // 2
        emb = torch.cat([emb[:, half:], emb[:, :half]], dim=1)  # DDPM++/NCSN++ order: sin first, then cos
        if self.map_label is not None:
            emb = emb + self.map_label(self._labels(class_labels, x, emb.dtype) * math.sqrt(self.label_dim))
        if self.map_augment is not None and augment_labels is not None:
            emb = emb + self.map_augment(augment_labels.to(emb.dtype))
        emb = F.silu(self.map_layer1(F.silu(self.map_layer0(emb))))

        skips: list[torch.Tensor] = []
        aux = x
        for name, block in self.enc.items():
            if name.endswith("_aux_down"):
                aux = block(aux)
            elif name.endswith("_aux_skip"):
                x = skips[-1] = x + block(aux)
            elif name.endswith("_aux_residual"):
                x = skips[-1] = aux = (x + block(aux)) / math.sqrt(2)
            else:
                x = block(x, emb) if isinstance(block, UNetBlock) else block(x)
                skips.append(x)
        return self._decode(x, emb, skips)


class DhariwalUNet(_EDMUNet):
    """ADM (Dhariwal & Nichol 2021) as re-implemented in EDM: adaptive group-norm scale/shift, 64-channel heads."""

    def __init__(
        self,
        img_resolution: int,
        in_channels: int,
        out_channels: int,
        label_dim: int = 0,
        augment_dim: int = 0,
        model_channels: int = 192,
        channel_mult: Sequence[int] = (1, 2, 3, 4),
        channel_mult_emb: int = 4,
        num_blocks: int = 3,
        attn_resolutions: Sequence[int] = (32, 16, 8),
        dropout: float = 0.10,
        label_dropout: float = 0.0,
    ) -> None:
        super().__init__()
        self.img_resolution, self.label_dim = int(img_resolution), int(label_dim)
        self.label_dropout = float(label_dropout)
        self.downsample_factor = 2 ** (len(channel_mult) - 1)  # H and W must be multiples of it
        emb_ch = model_channels * channel_mult_emb
        blk = dict(emb_channels=emb_ch, channels_per_head=64, dropout=dropout)

        self.map_noise = PositionalEmbedding(model_channels)
        self.map_augment = Linear(augment_dim, model_channels, bias=False) if augment_dim else None
        self.map_layer0 = Linear(model_channels, emb_ch)
        self.map_layer1 = Linear(emb_ch, emb_ch)
        self.map_label = Linear(label_dim, emb_ch, bias=False) if label_dim else None

        self.enc = nn.ModuleDict()
        cout = in_channels
        for level, mult in enumerate(channel_mult):
            res = img_resolution >> level
            if level == 0:
                self.enc[f"{res}x{res}_conv"] = Conv2d(cout, model_channels * mult, 3)
                cout = model_channels * mult
            else:
                self.enc[f"{res}x{res}_down"] = UNetBlock(cout, cout, down=True, **blk)
            for idx in range(num_blocks):
                cin, cout = cout, model_channels * mult
                self.enc[f"{res}x{res}_block{idx}"] = UNetBlock(cin, cout, attention=res in attn_resolutions, **blk)
        skips = [m.out_channels for m in self.enc.values()]

        self.dec = nn.ModuleDict()
        for level, mult in reversed(list(enumerate(channel_mult))):
            res = img_resolution >> level
            if level == len(channel_mult) - 1:
                self.dec[f"{res}x{res}_in0"] = UNetBlock(cout, cout, attention=True, **blk)
                self.dec[f"{res}x{res}_in1"] = UNetBlock(cout, cout, **blk)
            else:
                self.dec[f"{res}x{res}_up"] = UNetBlock(cout, cout, up=True, **blk)
            for idx in range(num_blocks + 1):
                cin, cout = cout + skips.pop(), model_channels * mult
                self.dec[f"{res}x{res}_block{idx}"] = UNetBlock(cin, cout, attention=res in attn_resolutions, **blk)
        self.out_norm = GroupNorm(cout)
        self.out_conv = Conv2d(cout, out_channels, 3)

    def forward(
        self,
        x: torch.Tensor,
        noise_labels: torch.Tensor,
        class_labels: torch.Tensor | None = None,
        augment_labels: torch.Tensor | None = None,
    ) -> torch.Tensor:
        emb = self.map_noise(noise_labels.to(_emb_dtype(x)))
        if self.map_augment is not None and augment_labels is not None:
            emb = emb + self.map_augment(augment_labels.to(emb.dtype))
        emb = self.map_layer1(F.silu(self.map_layer0(emb)))
        if self.map_label is not None:
            emb = emb + self.map_label(self._labels(class_labels, x, emb.dtype))
        emb = F.silu(emb)

        skips: list[torch.Tensor] = []
        for block in self.enc.values():
            x = block(x, emb) if isinstance(block, UNetBlock) else block(x)
            skips.append(x)
        x = self._decode(x, emb, skips)
        return self.out_conv(F.silu(self.out_norm(x)))
