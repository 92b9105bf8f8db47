"""The optimisation pieces of a training run: the optimiser, the learning-rate schedule and the weight EMA."""

from __future__ import annotations

import copy
import math
from typing import TYPE_CHECKING

import torch
from torch import nn

if TYPE_CHECKING:
    from .config import TrainConfig

__all__ = ["ModelEMA", "lr_at", "make_optimizer"]


class ModelEMA(nn.Module):
    """Exponential moving average of a model's weights, ``e <- d e + (1 - d) w`` after every step, with the
    warm-up ``d_t = min(decay, (1 + t) / (10 + t))``; integer buffers (BN counters) are copied."""

    def __init__(self, model: nn.Module, decay: float) -> None:
        super().__init__()
        self.module = copy.deepcopy(model).eval()
        for p in self.module.parameters():
            p.requires_grad_(False)
        self.decay = float(decay)
        self.register_buffer("num_updates", torch.zeros((), dtype=torch.long))

    @torch.no_grad()
    def update(self, model: nn.Module, step: int) -> None:
        d = min(self.decay, (1.0 + step) / (10.0 + step))
        ema_sd, sd = self.module.state_dict(), model.state_dict()
        floats_e, floats_m = [], []
        for k, e in ema_sd.items():
            m = sd[k]
            if e.dtype.is_floating_point:
                floats_e.append(e)
                floats_m.append(m.detach())
            else:
                e.copy_(m)
        if floats_e:
            torch._foreach_lerp_(floats_e, floats_m, 1.0 - d)
        self.num_updates += 1


def lr_at(step: int, total: int, base_lr: float, warmup: int) -> float:
    """Linear warm-up over ``warmup`` steps, then cosine decay to 0 at ``total`` (per iteration)."""
    if warmup > 0 and step < warmup:
        return base_lr * (step + 1) / warmup
    span = max(1, total - warmup)
    return 0.5 * base_lr * (1.0 + math.cos(math.pi * min(step - warmup, span) / span))


def make_optimizer(cfg: TrainConfig, model: nn.Module) -> torch.optim.Optimizer:
    """SGD (Nesterov as configured) or AdamW without weight decay on biases and norm weights."""
    if cfg.optimizer == "sgd":
        return torch.optim.SGD(model.parameters(), lr=cfg.lr, momentum=cfg.momentum, nesterov=cfg.nesterov,
                               weight_decay=cfg.weight_decay)
    decay = [p for p in model.parameters() if p.ndim > 1]
    no_decay = [p for p in model.parameters() if p.ndim <= 1]
    return torch.optim.AdamW([{"params": decay, "weight_decay": cfg.weight_decay},
                              {"params": no_decay, "weight_decay": 0.0}], lr=cfg.lr)
