"""ADM, the UNet of Dhariwal & Nichol 2021 (guided-diffusion / improved-diffusion), and its noisy classifier.

:class:`UNetModel` and :class:`EncoderUNetModel` take the reference's own keyword arguments (the arguments of
guided-diffusion's ``UNetModel(...)`` / ``EncoderUNetModel(...)``) and have its parameter names, so an official
checkpoint's state dict loads with ``strict=True``; ``tests/diffusion/test_adm_nets.py`` checks the outputs
against ``guided_diffusion.unet`` (PyPI ``guided-diffusion-sdk``) to 1e-5. Forward signatures are the
reference's: ``UNetModel(x, timesteps, y=None)`` returns ``out_channels`` maps (``2C`` for learned-variance
models: noise prediction, then the variance interpolation ``v``), ``EncoderUNetModel(x, timesteps)`` logits.

Why not diffusers' ``UNet2DModel``: it has the same kinds of blocks (scale-shift ``ResnetBlock2D``, resnet
up/down-sampling, mid attention) and a remapped state dict could reproduce *some* ADM configurations, but not
all of them: a fixed ``num_heads`` with widths changing across levels (the 128x128 model, improved-diffusion's
models) gives a per-level head width that ``UNet2DModel``'s single ``attention_head_dim`` cannot express;
``channel_mult[0] != 1`` (the 512x512 model) changes the timestep-embedding width (diffusers embeds ``t`` in
``block_out_channels[0]`` dimensions, ADM in ``model_channels``); the legacy attention order interleaves q/k/v
per head in one ``qkv`` convolution (a weight permutation would be needed); and the classifier's attention
pooling has no diffusers counterpart. This was judged by reading both codes (diffusers' ``unet_2d.py``,
``ResnetBlock2D``, ``Attention``), not checked numerically. A module with the
reference's names loads every checkpoint strictly and without key remapping, so robaug uses its own.

``use_fp16`` is accepted and recorded; robaug runs the trunk in the dtype of its parameters (call
:meth:`UNetModel.convert_to_fp16` or ``.half()`` for half precision, as the reference's scripts do);
GroupNorm always computes in float32. ``dims`` must be 2.
"""

from __future__ import annotations

from typing import Sequence

import torch
from torch import nn

from .adm_layers import (
    AttentionBlock,
    AttentionPool2d,
    Downsample,
    ResBlock,
    TimestepEmbedSequential,
    Upsample,
    _zero,
    normalization,
    timestep_embedding,
)

__all__ = ["UNetModel", "EncoderUNetModel", "POOLS"]

POOLS = ("adaptive", "attention", "spatial", "spatial_v2")


def _check_common(dims: int, channel_mult: Sequence[float], num_res_blocks: int, model_channels: int) -> None:
    if dims != 2:
        raise ValueError(f"robaug's ADM supports 2-D images only (dims=2), got dims={dims}")
    if not channel_mult or any(float(m) <= 0 for m in channel_mult):
        raise ValueError(f"channel_mult must be a non-empty sequence of positive multipliers, got {channel_mult!r}")
    if int(num_res_blocks) < 1 or int(model_channels) < 1:
        raise ValueError(f"num_res_blocks and model_channels must be >= 1, got {num_res_blocks}, {model_channels}")


def _to_fp16(m: nn.Module) -> None:
    # like the reference: only convolutions go to half; linear layers and norms stay float32
    if isinstance(m, (nn.Conv1d, nn.Conv2d)):
        m.half()


def _to_fp32(m: nn.Module) -> None:
    if isinstance(m, (nn.Conv1d, nn.Conv2d)):
        m.float()


class _Trunk(nn.Module):
    """Timestep embedding, encoder (``input_blocks``) and ``middle_block`` shared by both networks."""

    def _build_trunk(
        self, in_channels, model_channels, num_res_blocks, attention_resolutions, dropout, channel_mult,
        conv_resample, use_checkpoint, num_heads, num_head_channels, use_scale_shift_norm, resblock_updown,
        use_new_attention_order,
    ) -> tuple[int, int, list[int]]:
        emb_dim = model_channels * 4
        self.time_embed = nn.Sequential(nn.Linear(model_channels, emb_dim), nn.SiLU(), nn.Linear(emb_dim, emb_dim))
        res = dict(dropout=dropout, use_checkpoint=use_checkpoint, use_scale_shift_norm=use_scale_shift_norm)
        attn = dict(use_checkpoint=use_checkpoint, num_heads=num_heads, num_head_channels=num_head_channels,
                    use_new_attention_order=use_new_attention_order)
        ch = int(channel_mult[0] * model_channels)
        self.input_blocks = nn.ModuleList([TimestepEmbedSequential(nn.Conv2d(in_channels, ch, 3, padding=1))])
        self._feature_size = ch
        chans, ds = [ch], 1
        for level, mult in enumerate(channel_mult):
            for _ in range(num_res_blocks):
                layers: list[nn.Module] = [ResBlock(ch, emb_dim, out_channels=int(mult * model_channels), **res)]
                ch = int(mult * model_channels)
                if ds in attention_resolutions:
                    layers.append(AttentionBlock(ch, **attn))
                self.input_blocks.append(TimestepEmbedSequential(*layers))
                self._feature_size += ch
                chans.append(ch)
            if level != len(channel_mult) - 1:
                down = ResBlock(ch, emb_dim, out_channels=ch, down=True, **res) if resblock_updown \
                    else Downsample(ch, conv_resample, out_channels=ch)
                self.input_blocks.append(TimestepEmbedSequential(down))
                chans.append(ch)
                ds *= 2
                self._feature_size += ch
        self.middle_block = TimestepEmbedSequential(
            ResBlock(ch, emb_dim, **res), AttentionBlock(ch, **attn), ResBlock(ch, emb_dim, **res)
        )
        self._feature_size += ch
        return ch, ds, chans

    @property
    def trunk_dtype(self) -> torch.dtype:
        """dtype the trunk computes in (that of the first convolution; half after :meth:`convert_to_fp16`)."""
        return self.input_blocks[0][0].weight.dtype

    def _embed(self, timesteps: torch.Tensor, batch: int) -> torch.Tensor:
        t = torch.as_tensor(timesteps, device=self.time_embed[0].weight.device)
        if t.ndim == 0:
            t = t.reshape(1).expand(batch)
        if t.shape != (batch,):
            raise ValueError(f"timesteps must be a scalar or a ({batch},) tensor, got shape {tuple(t.shape)}")
        return self.time_embed(timestep_embedding(t, self.model_channels).to(self.time_embed[0].weight.dtype))

    def convert_to_fp16(self) -> None:
        """Trunk convolutions to float16 (as the reference's ``convert_to_fp16``)."""
        for name in ("input_blocks", "middle_block", "output_blocks"):
            if hasattr(self, name):
                getattr(self, name).apply(_to_fp16)

    def convert_to_fp32(self) -> None:
        """Undo :meth:`convert_to_fp16`."""
        for name in ("input_blocks", "middle_block", "output_blocks"):
            if hasattr(self, name):
                getattr(self, name).apply(_to_fp32)


class UNetModel(_Trunk):
    """ADM's denoising UNet. Arguments as guided-diffusion's ``UNetModel``; ``attention_resolutions`` holds
    *downsampling rates* (``image_size // r`` for each resolution ``r`` of the ``--attention_resolutions`` flag);
    ``num_heads_upsample=-1`` means ``num_heads``."""

    def __init__(
        self,
        image_size: int,
        in_channels: int,
        model_channels: int,
        out_channels: int,
        num_res_blocks: int,
        attention_resolutions: Sequence[int],
        dropout: float = 0.0,
        channel_mult: Sequence[float] = (1, 2, 4, 8),
        conv_resample: bool = True,
        dims: int = 2,
        num_classes: int | None = None,
        use_checkpoint: bool = False,
        use_fp16: bool = False,
        num_heads: int = 1,
        num_head_channels: int = -1,
        num_heads_upsample: int = -1,
        use_scale_shift_norm: bool = False,
        resblock_updown: bool = False,
        use_new_attention_order: bool = False,
    ) -> None:
        super().__init__()
        _check_common(dims, channel_mult, num_res_blocks, model_channels)
        if num_heads_upsample == -1:
            num_heads_upsample = num_heads
        self.image_size = image_size
        self.in_channels = in_channels
        self.model_channels = model_channels
        self.out_channels = out_channels
        self.num_res_blocks = num_res_blocks
        self.attention_resolutions = tuple(attention_resolutions)
        self.channel_mult = tuple(channel_mult)
        self.num_classes = num_classes
        self.use_fp16 = bool(use_fp16)
        ch, ds, chans = self._build_trunk(
            in_channels, model_channels, num_res_blocks, self.attention_resolutions, dropout, channel_mult,
            conv_resample, use_checkpoint, num_heads, num_head_channels, use_scale_shift_norm, resblock_updown,
            use_new_attention_order,
        )
        emb_dim = model_channels * 4
        if num_classes is not None:
            self.label_emb = nn.Embedding(num_classes, emb_dim)
        res = dict(dropout=dropout, use_checkpoint=use_checkpoint, use_scale_shift_norm=use_scale_shift_norm)
        self.output_blocks = nn.ModuleList([])
        for level, mult in list(enumerate(channel_mult))[::-1]:
            for i in range(num_res_blocks + 1):
                layers: list[nn.Module] = [
                    ResBlock(ch + chans.pop(), emb_dim, out_channels=int(model_channels * mult), **res)]
                ch = int(model_channels * mult)
                if ds in self.attention_resolutions:
                    layers.append(AttentionBlock(ch, num_heads=num_heads_upsample, num_head_channels=num_head_channels,
                                                 use_checkpoint=use_checkpoint,
                                                 use_new_attention_order=use_new_attention_order))
                if level and i == num_res_blocks:
                    layers.append(ResBlock(ch, emb_dim, out_channels=ch, up=True, **res) if resblock_updown
                                  else Upsample(ch, conv_resample, out_channels=ch))
                    ds //= 2
                self.output_blocks.append(TimestepEmbedSequential(*layers))
        self.out = nn.Sequential(
            normalization(ch), nn.SiLU(),
            _zero(nn.Conv2d(int(channel_mult[0] * model_channels), out_channels, 3, padding=1)),
        )

    @property
    def size_multiple(self) -> int:
        """H and W must be multiples of this (one factor 2 per downsampling)."""
        return 2 ** (len(self.channel_mult) - 1)

    def forward(self, x: torch.Tensor, timesteps: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        if (y is None) != (self.num_classes is None):
            raise ValueError("pass class labels y if and only if the model is class-conditional "
                             f"(num_classes={self.num_classes})")
        emb = self._embed(timesteps, x.shape[0])
        if y is not None:
            if y.shape != (x.shape[0],):
                raise ValueError(f"y must be a ({x.shape[0]},) tensor of class indices, got shape {tuple(y.shape)}")
            emb = emb + self.label_emb(y)
        hs = []
        h = x.to(self.trunk_dtype)
        for module in self.input_blocks:
            h = module(h, emb)
            hs.append(h)
        h = self.middle_block(h, emb)
        for module in self.output_blocks:
            h = module(torch.cat([h, hs.pop()], dim=1), emb)
        return self.out(h.to(x.dtype))


class EncoderUNetModel(_Trunk):
    """ADM's noisy classifier: the UNet's encoder and middle block, then a head chosen by ``pool``:
    ``"adaptive"`` (GN, SiLU, global average, 1x1 conv), ``"attention"`` (GN, SiLU, attention pooling; the
    published classifiers), ``"spatial"`` / ``"spatial_v2"`` (MLP on the per-block spatial means).
    ``forward(x_t, timesteps)`` returns ``(B, out_channels)`` logits."""

    def __init__(
        self,
        image_size: int,
        in_channels: int,
        model_channels: int,
        out_channels: int,
        num_res_blocks: int,
        attention_resolutions: Sequence[int],
        dropout: float = 0.0,
        channel_mult: Sequence[float] = (1, 2, 4, 8),
        conv_resample: bool = True,
        dims: int = 2,
        use_checkpoint: bool = False,
        use_fp16: bool = False,
        num_heads: int = 1,
        num_head_channels: int = -1,
        num_heads_upsample: int = -1,
        use_scale_shift_norm: bool = False,
        resblock_updown: bool = False,
        use_new_attention_order: bool = False,
        pool: str = "adaptive",
    ) -> None:
        super().__init__()
        _check_common(dims, channel_mult, num_res_blocks, model_channels)
        if pool not in POOLS:
            raise ValueError(f"pool must be one of {POOLS}, got {pool!r}")
        if pool == "attention" and num_head_channels == -1:
            raise ValueError("pool='attention' needs num_head_channels (the published classifiers use 64)")
        self.image_size = image_size
        self.in_channels = in_channels
        self.model_channels = model_channels
        self.out_channels = out_channels
        self.num_res_blocks = num_res_blocks
        self.attention_resolutions = tuple(attention_resolutions)
        self.channel_mult = tuple(channel_mult)
        self.use_fp16 = bool(use_fp16)
        self.pool = pool
        ch, ds, _ = self._build_trunk(
            in_channels, model_channels, num_res_blocks, self.attention_resolutions, dropout, channel_mult,
            conv_resample, use_checkpoint, num_heads, num_head_channels, use_scale_shift_norm, resblock_updown,
            use_new_attention_order,
        )
        if pool == "adaptive":
            self.out = nn.Sequential(normalization(ch), nn.SiLU(), nn.AdaptiveAvgPool2d((1, 1)),
                                     _zero(nn.Conv2d(ch, out_channels, 1)), nn.Flatten())
        elif pool == "attention":
            self.out = nn.Sequential(normalization(ch), nn.SiLU(),
                                     AttentionPool2d(image_size // ds, ch, num_head_channels, out_channels))
        elif pool == "spatial":
            self.out = nn.Sequential(nn.Linear(self._feature_size, 2048), nn.ReLU(), nn.Linear(2048, out_channels))
        else:
            self.out = nn.Sequential(nn.Linear(self._feature_size, 2048), normalization(2048), nn.SiLU(),
                                     nn.Linear(2048, out_channels))

    def forward(self, x: torch.Tensor, timesteps: torch.Tensor) -> torch.Tensor:
        emb = self._embed(timesteps, x.shape[0])
        spatial = self.pool.startswith("spatial")
        means = []
        h = x.to(self.trunk_dtype)
        for module in self.input_blocks:
            h = module(h, emb)
            if spatial:
                means.append(h.to(x.dtype).mean(dim=(2, 3)))
        h = self.middle_block(h, emb)
        if spatial:
            means.append(h.to(x.dtype).mean(dim=(2, 3)))
            return self.out(torch.cat(means, dim=-1))
        return self.out(h.to(x.dtype))
