"""What a training run depends on: :class:`TrainConfig`, the papers' settings (:data:`PRESETS`, ``--preset``),
the text parsers of its command-line values, and the check that a resumed run has the same configuration."""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import os
from dataclasses import asdict, dataclass, field
from typing import Any, Sequence

from .spec import get_recipe

__all__ = ["TrainConfig", "PRESETS", "check_resume", "parse_int_list", "parse_fraction", "parse_pgd"]


@dataclass
class TrainConfig:
    """Everything a run depends on. Fields marked "(no effect on the result)" may change between resumes."""

    # data
    dataset: str = "fashion_mnist"
    data_root: str | None = None
    download: bool = False
    train_subset: int | None = None
    test_subset: int | None = None
    img_size: int | None = None
    # model
    model: str = "small_cnn"
    model_kwargs: dict[str, Any] = field(default_factory=dict)
    # recipe
    recipe: str = "baseline"
    jsd_weight: float = 12.0
    ipmix_on: str = "device"  #: "device" (batched) or "workers" (per sample)
    ipmix_kwargs: dict[str, Any] = field(default_factory=dict)
    augmix_severity: int = 3
    denoiser: str = "fmnist-ddpm"
    diffaug_t_range: tuple[int, int] = (0, 1000)
    diffaug_bf16: bool = False  #: run the denoiser (DiffAug view, DE evaluation) under bfloat16 autocast
    # TRADES (recipe "trades"; DM-Improves-AT's CIFAR-10 l_inf defaults)
    trades_eps: float = 8 / 255
    trades_step_size: float = 2 / 255
    trades_steps: int = 10
    trades_beta: float = 5.0
    trades_norm: str = "linf"  #: "linf" or "l2"
    trades_bn: str = "batch"  #: BN during the attack: "batch" (train mode, stats frozen) or "eval"
    # synthetic data mixed into every batch (DM-Improves-AT); any recipe
    synthetic_data: str | None = None  #: `robaug generate` folder or DM-Improves-AT .npz
    synthetic_fraction: float = 0.7  #: share of generated samples in each batch
    synthetic_subset: int | None = None  #: use only the first N generated images (None: all)
    # optimisation
    epochs: int = 1
    steps: int | None = None  #: total optimiser steps (overrides epochs)
    batch_size: int = 128  #: global batch size (all processes together)
    optimizer: str = "sgd"  #: "sgd" (Nesterov) or "adamw"
    lr: float = 0.1
    momentum: float = 0.9
    nesterov: bool = True
    weight_decay: float = 5e-4
    warmup_steps: int = 0
    label_smoothing: float = 0.0
    grad_clip: float | None = None
    ema_decay: float = 0.0  #: 0 disables the weight EMA
    seed: int = 0
    amp: str = "none"  #: "none", "bf16" or "fp16" (fp16 uses a GradScaler)
    channels_last: bool = False
    # system (no effect on the result)
    device: str = "auto"
    num_workers: int = 0
    out_dir: str = "runs/classifier"
    resume: bool = True
    ckpt_every: int = 500
    log_every: int = 50
    progress: bool = True
    # evaluation (no effect on the trained weights)
    eval_every_epoch: bool = True
    eval_corruptions: bool = True
    corruption_root: str | None = None
    corruption_images: int = 1000
    corruption_seed: int = 0
    corruptions: list[str] | None = None
    eval_de: bool = False
    de_timesteps: list[int] = field(default_factory=lambda: list(range(0, 500, 50)))
    de_images: int | None = 200
    de_clean_images: int | None = 1000
    eval_batch_size: int = 500
    cache_dir: str | None = None
    eval_pgd: tuple[float, int] | None = None  #: (eps, steps): PGD robust accuracy at the end
    eval_autoattack: float | None = None  #: eps: AutoAttack robust accuracy at the end (pyautoattack)
    eval_adv_norm: str = "linf"
    eval_adv_images: int = 500  #: first N test images for the adversarial evaluation
    eval_autoattack_version: str = "standard"
    eval_autoattack_attacks: list[str] | None = None  #: custom AutoAttack attacks (e.g. apgd-ce, apgd-t)
    eval_autoattack_iters: int | None = None  #: APGD/FAB iterations (default 100: the standard evaluation)

    def __post_init__(self) -> None:
        get_recipe(self.recipe)
        if isinstance(self.batch_size, bool) or not isinstance(self.batch_size, int) or self.batch_size < 1:
            raise ValueError(f"batch_size must be a positive integer (--batch-size), got {self.batch_size!r}")
        if not (isinstance(self.lr, (int, float)) and math.isfinite(self.lr) and self.lr >= 0):
            raise ValueError(f"lr must be a finite number >= 0 (--lr), got {self.lr!r}")
        if self.steps is not None and self.steps < 1 or self.epochs < 1:
            raise ValueError(f"steps and epochs must be >= 1 (--steps, --epochs), got {self.steps!r}, {self.epochs!r}")
        if self.ipmix_on not in ("device", "workers"):
            raise ValueError(f"ipmix_on must be 'device' or 'workers', got {self.ipmix_on!r}")
        if self.amp not in ("none", "bf16", "fp16"):
            raise ValueError(f"amp must be 'none', 'bf16' or 'fp16', got {self.amp!r}")
        if self.optimizer not in ("sgd", "adamw"):
            raise ValueError(f"optimizer must be 'sgd' or 'adamw', got {self.optimizer!r}")
        if not 0.0 <= self.ema_decay < 1.0:
            raise ValueError(f"ema_decay must lie in [0, 1), got {self.ema_decay}")
        self.diffaug_t_range = tuple(int(t) for t in self.diffaug_t_range)  # type: ignore[assignment]
        if self.trades_norm not in ("linf", "l2") or self.eval_adv_norm not in ("linf", "l2"):
            raise ValueError(f"trades_norm / eval_adv_norm must be 'linf' or 'l2', got {self.trades_norm!r}, "
                             f"{self.eval_adv_norm!r}")
        if self.trades_bn not in ("batch", "eval"):
            raise ValueError(f"trades_bn must be 'batch' or 'eval', got {self.trades_bn!r}")
        if self.trades_eps < 0 or self.trades_step_size < 0 or self.trades_steps < 0:
            raise ValueError("trades_eps, trades_step_size and trades_steps must be >= 0")
        if not 0.0 <= self.synthetic_fraction < 1.0:
            raise ValueError(f"synthetic_fraction must lie in [0, 1), got {self.synthetic_fraction}")
        if self.synthetic_subset is not None and self.synthetic_subset < 1:
            raise ValueError(f"synthetic_subset must be >= 1 (or None for all), got {self.synthetic_subset}")
        if self.eval_pgd is not None:
            if len(self.eval_pgd) != 2:
                raise ValueError(f"eval_pgd must be (eps, steps), got {self.eval_pgd!r}")
            self.eval_pgd = (float(self.eval_pgd[0]), int(self.eval_pgd[1]))  # type: ignore[assignment]

    #: fields that may differ between the interrupted run and its resumption
    RESUME_FREE = (
        "device", "num_workers", "out_dir", "resume", "ckpt_every", "log_every", "progress", "eval_every_epoch",
        "eval_corruptions", "corruption_root", "corruption_images", "corruption_seed", "corruptions", "eval_de",
        "de_timesteps", "de_images", "de_clean_images", "eval_batch_size", "cache_dir", "data_root", "download",
        "eval_pgd", "eval_autoattack", "eval_adv_norm", "eval_adv_images", "eval_autoattack_version",
        "eval_autoattack_attacks", "eval_autoattack_iters",
    )

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["diffaug_t_range"] = list(self.diffaug_t_range)
        d["eval_pgd"] = list(self.eval_pgd) if self.eval_pgd is not None else None
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "TrainConfig":
        names = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in names})


#: The papers' training settings (``--preset``); explicit flags override them.
PRESETS: dict[str, dict[str, Any]] = {
    # the Fashion-MNIST CPU table of docs/results.md
    "fmnist-cpu": dict(dataset="fashion_mnist", model="small_cnn", model_kwargs={"width": 16}, batch_size=128, lr=0.1,
                       weight_decay=5e-4,
                       warmup_steps=50, optimizer="sgd"),
    # IPMix (Wu et al. 2023) CIFAR recipe: SGD-Nesterov 0.9, lr 0.1, batch 128, wd 5e-4, cosine per iteration
    "cifar-wrn40-4": dict(model="wrn_40_4", epochs=100, batch_size=128, lr=0.1, weight_decay=5e-4, nesterov=True),
    "cifar-wrn28-10": dict(model="wrn_28_10", epochs=200, batch_size=128, lr=0.1, weight_decay=5e-4, nesterov=True),
    "cifar-preact-resnet18": dict(model="preact_resnet18", epochs=200, batch_size=128, lr=0.1, weight_decay=5e-4,
                                  nesterov=True),
    "cifar-vit-tiny": dict(model="vit_tiny", epochs=200, batch_size=128, optimizer="adamw", lr=1e-3,
                           weight_decay=0.05, warmup_steps=2000, label_smoothing=0.1),
    # DiffAug (Sastry et al. 2024) ImageNet ResNet-50: SGD 0.9, lr 0.1, wd 1e-4, 90 epochs, batch 256
    "imagenet-resnet50": dict(dataset="imagefolder", model="resnet50", epochs=90, batch_size=256, lr=0.1,
                              weight_decay=1e-4, nesterov=False, num_workers=8, ipmix_kwargs={"preset": "imagenet"}),
    # ViT-B/16: AdamW with warm-up and label smoothing (a plain DeiT-style setting, not the full DeiT-III recipe)
    # Wang et al. 2023 (DM-Improves-AT) CIFAR-10 l_inf: WRN-28-10-SiLU, TRADES beta 5 (PGD-10, 8/255, step 2/255),
    # batch 512 (70% generated), SGD-Nesterov lr 0.2, wd 5e-4, label smoothing 0.1, EMA 0.995; the paper trains
    # 400 of its epochs of ceil(50000 / 512) = 98 steps: --steps 39200 (robaug's --epochs counts passes over the real
    # data, 324 steps here), with --synthetic-data pointing at the generated set (1m.npz or a shard folder)
    "cifar10-trades-wrn28-10": dict(dataset="cifar10", model="wrn_28_10", model_kwargs={"activation": "silu"},
                                    recipe="trades", batch_size=512, lr=0.2, weight_decay=5e-4, nesterov=True,
                                    label_smoothing=0.1, ema_decay=0.995, trades_beta=5.0, trades_eps=8 / 255,
                                    trades_step_size=2 / 255, trades_steps=10, synthetic_fraction=0.7,
                                    eval_autoattack=8 / 255, eval_adv_images=10000),
    # a CPU-sized TRADES run on Fashion-MNIST (docs/adversarial.md): eps 0.1 l_inf, PGD-10 of 0.025
    "fmnist-trades-cpu": dict(dataset="fashion_mnist", model="small_cnn", model_kwargs={"width": 16}, batch_size=128,
                              lr=0.1, weight_decay=5e-4, warmup_steps=50, optimizer="sgd", recipe="trades",
                              label_smoothing=0.1, trades_eps=0.1, trades_step_size=0.025, trades_steps=10,
                              trades_beta=5.0, eval_pgd=(0.1, 20), eval_adv_images=500),
    "imagenet-vit-b16": dict(dataset="imagefolder", model="vit_b_16", epochs=300, batch_size=1024, optimizer="adamw",
                             lr=1e-3, weight_decay=0.05, warmup_steps=6250, label_smoothing=0.1, num_workers=8,
                             ipmix_kwargs={"preset": "imagenet"}),
}


def check_resume(saved: dict[str, Any], cfg: TrainConfig, path: str | os.PathLike) -> None:
    """``ValueError`` naming the fields where ``cfg`` differs from the ``saved`` configuration of a run (other than
    :attr:`TrainConfig.RESUME_FREE`)."""
    now = cfg.to_dict()
    default = TrainConfig().to_dict()  # fields added since the run was written count with their defaults
    diff = [k for k in now if k not in TrainConfig.RESUME_FREE
            and json.dumps(saved.get(k, default[k])) != json.dumps(now[k])]
    if diff:
        detail = ", ".join(f"{k}: {saved.get(k)!r} -> {now[k]!r}" for k in diff)
        raise ValueError(
            f"{path} was written by a run with a different configuration ({detail}); use another out_dir, "
            "or resume=False (--no-resume) to start over"
        )


def parse_int_list(text: str | Sequence[int] | None) -> list[int] | None:
    """``"0,50,100"`` or ``"0:500:50"`` -> list of ints."""
    if text is None or not isinstance(text, str):
        return None if text is None else [int(t) for t in text]
    if ":" in text:
        a, b, *c = (int(v) for v in text.split(":"))
        return list(range(a, b, c[0] if c else 1))
    return [int(t) for t in text.split(",") if t.strip()]


def parse_fraction(text: str) -> float:
    """``"0.1"`` or ``"8/255"`` -> float."""
    if "/" in text:
        a, b = text.split("/", 1)
        return float(a) / float(b)
    return float(text)


def parse_pgd(text: str) -> tuple[float, int]:
    """``"8/255,20"`` -> ``(eps, steps)``."""
    parts = [t.strip() for t in text.split(",")]
    if len(parts) != 2:
        raise argparse.ArgumentTypeError(f"expected 'eps,steps' (e.g. 8/255,20), got {text!r}")
    return parse_fraction(parts[0]), int(parts[1])
