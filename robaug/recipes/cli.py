"""Command line of ``examples/train_classifier.py``: one flag per :class:`~robaug.recipes.train.TrainConfig`
field (``--batch-size``, ``--no-resume``, ...), plus ``--preset`` for the papers' settings.

Single process:   python examples/train_classifier.py --dataset cifar10 --data-root data --preset cifar-wrn40-4 --recipe ipmix_jsd
Several GPUs:     torchrun --nproc_per_node 8 examples/train_classifier.py --dataset imagefolder --data-root /imagenet \\
                      --preset imagenet-resnet50 --recipe diffaug --denoiser <name or path> --amp fp16 --channels-last
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import typing
from typing import Any, Sequence

from .augment import RECIPES
from .train import TrainConfig, parse_int_list, train

__all__ = ["PRESETS", "build_parser", "config_from_args", "main"]

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

_HELP = {
    "dataset": "fashion_mnist, cifar10, cifar100 or imagefolder (ImageNet layout: root/train, root/val)",
    "data_root": "dataset folder (Fashion-MNIST: optional, the usual places are searched)",
    "download": "download Fashion-MNIST / CIFAR with torchvision when missing",
    "train_subset": "use only the first N training images",
    "test_subset": "use only the first N test images",
    "img_size": "image size for imagefolder data (default 224)",
    "model": "architecture from robaug.models.list_models() (small_cnn, preact_resnet18, wrn_40_4, wrn_28_10, "
             "vit_tiny, resnet50, vit_b_16, ...)",
    "model_kwargs": "JSON dict of extra architecture arguments, e.g. '{\"width\": 16}'",
    "recipe": "augmentation recipe: " + ", ".join(f"{k} [{v.loss}]" for k, v in RECIPES.items()),
    "jsd_weight": "weight of the Jensen-Shannon consistency term",
    "ipmix_on": "run IPMix batched on the training device ('device') or per sample in DataLoader workers ('workers')",
    "ipmix_kwargs": "JSON dict of robaug.IPMix arguments, e.g. '{\"preset\": \"imagenet\"}'",
    "augmix_severity": "severity of torchvision's AugMix",
    "denoiser": "DiffAug denoiser: a robaug.hub registry name (fmnist-ddpm, google/ddpm-cifar10-32, ...) or a local path",
    "diffaug_t_range": "DiffAug timestep range 'low,high' (half-open; the paper uses the full 0,1000)",
    "diffaug_bf16": "run the denoiser (DiffAug training view and DE evaluation) under bfloat16 autocast",
    "epochs": "training epochs (ignored when --steps is given)",
    "steps": "total optimiser steps",
    "batch_size": "global batch size (split over the DDP processes)",
    "optimizer": "sgd (Nesterov momentum) or adamw",
    "lr": "peak learning rate (cosine decay per iteration after the warm-up)",
    "warmup_steps": "linear learning-rate warm-up steps",
    "grad_clip": "clip the gradient norm to this value",
    "ema_decay": "weight EMA decay (e.g. 0.999); 0 disables it. The EMA weights are evaluated and exported",
    "seed": "seed of every random draw of the run",
    "amp": "mixed precision: none, bf16 or fp16 (fp16 uses a gradient scaler)",
    "channels_last": "channels_last memory format for model and inputs",
    "device": "auto (CUDA if available), cpu, cuda or cuda:N",
    "num_workers": "DataLoader worker processes (per-sample augmentation, image decoding)",
    "out_dir": "run folder: checkpoint, metrics.jsonl/csv, model.safetensors, results.json",
    "resume": "continue from out_dir/checkpoint.pt when it exists (--no-resume starts over)",
    "ckpt_every": "checkpoint every N steps (and at every epoch end)",
    "log_every": "log the training metrics every N steps",
    "progress": "tqdm progress bars",
    "eval_every_epoch": "clean test accuracy after every epoch",
    "eval_corruptions": "corruption accuracy at the end",
    "corruption_root": "CIFAR-10-C / CIFAR-100-C / ImageNet-C folder (default for in-memory datasets: a re-implemented "
                       "-C set built from the test images)",
    "corruption_images": "test images in a generated -C set",
    "corruption_seed": "seed of a generated -C set",
    "corruptions": "comma-separated corruption names (default: all implemented)",
    "eval_de": "also evaluate the DiffAug Ensemble (needs --denoiser)",
    "de_timesteps": "DE timesteps, 'start:stop:step' or a comma list (paper: 0:500:50)",
    "de_images": "evaluate DE on the first N images of each corrupted set (it costs |S|-1 denoiser passes per image)",
    "de_clean_images": "evaluate DE on the first N clean test images",
    "eval_batch_size": "evaluation batch size",
    "cache_dir": "where generated -C sets are cached (default ~/.cache/robaug/corrupted)",
    "trades_eps": "TRADES attack radius (fractions allowed: 8/255)",
    "trades_step_size": "TRADES attack step (2/255)",
    "trades_steps": "TRADES attack steps",
    "trades_beta": "weight of the TRADES KL term (5 in DM-Improves-AT, 6 in TRADES / Contrastive-DP)",
    "trades_norm": "TRADES threat model: linf or l2",
    "trades_bn": "BatchNorm during the TRADES attack: batch (train mode, running stats frozen; DM-Improves-AT) or eval "
                 "(running stats; original TRADES)",
    "synthetic_data": "generated training data mixed into every batch: a `robaug generate` folder or a DM-Improves-AT .npz",
    "synthetic_fraction": "share of generated samples in each batch (0.7: 70%% generated + 30%% real)",
    "eval_pgd": "PGD evaluation at the end: 'eps,steps' (e.g. 8/255,20)",
    "eval_autoattack": "AutoAttack evaluation at the end at this eps (needs pyautoattack)",
    "eval_adv_norm": "threat model of the adversarial evaluation: linf or l2",
    "eval_adv_images": "first N test images for the adversarial evaluation",
    "eval_autoattack_version": "AutoAttack version: standard or rand",
    "eval_autoattack_attacks": "comma-separated AutoAttack attacks (custom version), e.g. apgd-ce,apgd-t",
    "eval_autoattack_iters": "APGD/FAB iterations (default 100 = the standard evaluation)",
}


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


def _base_type(tp: Any) -> tuple[Any, bool]:
    """(underlying type, optional?) of a dataclass field annotation."""
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if origin in (typing.Union, getattr(__import__("types"), "UnionType", None)) and type(None) in args:
        rest = [a for a in args if a is not type(None)]
        return rest[0], True
    return tp, False


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="train_classifier.py",
        description="Train an image classifier with a robustness augmentation recipe and evaluate it on clean and "
                    "corrupted test data.",
        epilog=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--preset", choices=sorted(PRESETS), help="start from a paper's settings (flags override)")
    hints = typing.get_type_hints(TrainConfig)
    for f in dataclasses.fields(TrainConfig):
        flag = "--" + f.name.replace("_", "-")
        tp, _ = _base_type(hints[f.name])
        kw: dict[str, Any] = {"dest": f.name, "default": None, "help": _HELP.get(f.name, "")}
        if tp is bool:
            kw["action"] = argparse.BooleanOptionalAction
        elif typing.get_origin(tp) is dict or tp is dict:
            kw["type"] = json.loads
        elif f.name in ("de_timesteps",):
            kw["type"] = parse_int_list
        elif f.name == "diffaug_t_range":
            kw["type"] = lambda s: tuple(int(v) for v in s.split(","))
        elif f.name in ("corruptions", "eval_autoattack_attacks"):
            kw["type"] = lambda s: [c.strip() for c in s.split(",") if c.strip()]
        elif f.name in ("trades_eps", "trades_step_size", "eval_autoattack"):
            kw["type"] = parse_fraction
        elif f.name == "eval_pgd":
            kw["type"] = parse_pgd
        elif f.name == "recipe":
            kw["choices"] = list(RECIPES)
        else:
            kw["type"] = tp
        p.add_argument(flag, **kw)
    return p


def config_from_args(argv: Sequence[str] | None = None) -> TrainConfig:
    args = build_parser().parse_args(argv)
    values: dict[str, Any] = dict(PRESETS[args.preset]) if args.preset else {}
    for f in dataclasses.fields(TrainConfig):
        v = getattr(args, f.name)
        if v is not None:
            values[f.name] = v
    return TrainConfig(**values)


def main(argv: Sequence[str] | None = None) -> int:
    cfg = config_from_args(argv)
    train(cfg)
    return 0


if __name__ == "__main__":
    sys.exit(main())
