"""``robaug train``: train a classifier with a robustness recipe and evaluate it on clean and corrupted test data.

One flag per :class:`~robaug.recipes.config.TrainConfig` field (``--batch-size``, ``--no-resume``, ...), plus
``--preset`` for the papers' settings (:data:`~robaug.recipes.config.PRESETS`); explicit flags override the preset.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import typing
from typing import Any, Sequence

from ._common import UsageError, make_parser, run_main

__all__ = ["FIELD_HELP", "add_arguments", "build_parser", "config_from_args", "config_from_namespace", "run", "main"]

DESCRIPTION = ("Train an image classifier with a robustness augmentation recipe and evaluate it on clean and "
               "corrupted test data. Rerunning the same command resumes an interrupted run from its checkpoint.")
EPILOG = """defaults shown are those without --preset; a preset's values replace them and explicit flags override both.

examples:
  one process (Fashion-MNIST on a CPU, downloaded when missing):
    robaug train --preset fmnist-cpu --download --recipe ipmix_jsd --epochs 1 --out-dir runs/fmnist-ipmix
  CIFAR-10 with the IPMix paper's settings:
    robaug train --dataset cifar10 --data-root data --download --preset cifar-wrn40-4 --recipe ipmix_jsd
  several GPUs (torchrun starts one process per GPU; --batch-size is the global batch):
    torchrun --nproc_per_node 8 -m robaug train --dataset imagefolder --data-root /imagenet \\
        --preset imagenet-resnet50 --recipe diffaug --denoiser NAME_OR_PATH --amp fp16 --channels-last"""


#: the help text of each TrainConfig field
FIELD_HELP = {
    "dataset": "fashion_mnist, cifar10, cifar100 or imagefolder (ImageNet layout: root/train, root/val)",
    "data_root": "dataset folder (Fashion-MNIST: optional, the usual places are searched)",
    "download": "download Fashion-MNIST / CIFAR with torchvision when missing",
    "train_subset": "use only the first N training images",
    "test_subset": "use only the first N test images",
    "img_size": "image size for imagefolder data (default 224)",
    "model": "architecture from robaug.models.list_models() (small_cnn, preact_resnet18, wrn_40_4, wrn_28_10, "
             "vit_tiny, resnet50, vit_b_16, ...)",
    "model_kwargs": "JSON dict of extra architecture arguments, e.g. '{\"width\": 16}'",
    "jsd_weight": "weight of the Jensen-Shannon consistency term",
    "ipmix_on": "run IPMix batched on the training device ('device') or per sample in DataLoader workers ('workers')",
    "ipmix_kwargs": "JSON dict of robaug.IPMix arguments, e.g. '{\"preset\": \"imagenet\"}'",
    "augmix_severity": "severity of torchvision's AugMix",
    "denoiser": "DiffAug denoiser: a robaug.hub registry name (fmnist-ddpm, google/ddpm-cifar10-32, ...) "
                "or a local path",
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
    "synthetic_data": "generated training data mixed into every batch: a robaug generate folder "
                      "or a DM-Improves-AT .npz",
    "synthetic_fraction": "share of generated samples in each batch (0.7: 70%% generated + 30%% real)",
    "synthetic_subset": "use only the first N generated images (a robaug generate run's sample j has class j %% "
                        "num_classes, so the first N are class-balanced)",
    "eval_pgd": "PGD evaluation at the end: 'eps,steps' (e.g. 8/255,20)",
    "eval_autoattack": "AutoAttack evaluation at the end at this eps (needs pyautoattack)",
    "eval_adv_norm": "threat model of the adversarial evaluation: linf or l2",
    "eval_adv_images": "first N test images for the adversarial evaluation",
    "eval_autoattack_version": "AutoAttack version: standard or rand",
    "eval_autoattack_attacks": "comma-separated AutoAttack attacks (custom version), e.g. apgd-ce,apgd-t",
    "eval_autoattack_iters": "APGD/FAB iterations (default 100 = the standard evaluation)",
}


def _base_type(tp: Any) -> tuple[Any, bool]:
    """(underlying type, optional?) of a dataclass field annotation."""
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if origin in (typing.Union, getattr(__import__("types"), "UnionType", None)) and type(None) in args:
        rest = [a for a in args if a is not type(None)]
        return rest[0], True
    return tp, False


def _default(f: dataclasses.Field) -> Any:
    if f.default is not dataclasses.MISSING:
        return f.default
    return f.default_factory()  # type: ignore[misc]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """``--preset`` and one flag per TrainConfig field; every flag defaults to None (not given), so a preset's value
    is only replaced by an explicit flag. The help shows the TrainConfig default."""
    from robaug.recipes.config import (
        PRESETS,
        TrainConfig,
        parse_fraction,
        parse_int_list,
        parse_pgd,
    )
    from robaug.recipes.spec import RECIPES

    parser.add_argument("--preset", choices=sorted(PRESETS), default=None,
                        help="start from a paper's settings (flags override)")
    hints = typing.get_type_hints(TrainConfig)
    for f in dataclasses.fields(TrainConfig):
        flag = "--" + f.name.replace("_", "-")
        tp, _ = _base_type(hints[f.name])
        text = FIELD_HELP.get(f.name, "") if f.name != "recipe" else "augmentation recipe: " + ", ".join(
            f"{k} [{v.loss}]" for k, v in RECIPES.items())
        default = _default(f)
        if "default" not in text.lower():
            text += f" (default: {json.dumps(default) if isinstance(default, (dict, list)) else default})"
        kw: dict[str, Any] = {"dest": f.name, "default": None, "help": text.replace("%%", "%").replace("%", "%%")}
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
        parser.add_argument(flag, **kw)


class _NoAutoDefaults(argparse.RawDescriptionHelpFormatter):
    """The flags default to None (so presets apply); their help carries the TrainConfig default instead."""


def build_parser() -> argparse.ArgumentParser:
    p = make_parser("train", DESCRIPTION, EPILOG, formatter_class=_NoAutoDefaults)
    add_arguments(p)
    return p


def config_from_namespace(args: argparse.Namespace):
    """The TrainConfig of parsed arguments: the preset's values, then every flag that was given."""
    from robaug.recipes.config import PRESETS, TrainConfig

    values: dict[str, Any] = dict(PRESETS[args.preset]) if args.preset else {}
    for f in dataclasses.fields(TrainConfig):
        v = getattr(args, f.name)
        if v is not None:
            values[f.name] = v
    return TrainConfig(**values)


def config_from_args(argv: Sequence[str] | None = None):
    """The TrainConfig of a ``robaug train`` command line."""
    return config_from_namespace(build_parser().parse_args(argv))


def run(args: argparse.Namespace) -> int:
    cfg = config_from_namespace(args)
    if str(cfg.device).startswith("cuda"):
        import torch

        if not torch.cuda.is_available():
            raise UsageError(f"--device {cfg.device} was asked for but CUDA is not available on this machine; "
                             "use --device cpu (or auto)")
    from robaug.recipes.train import train

    train(cfg)
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    return run_main("train", build_parser(), run, argv)
