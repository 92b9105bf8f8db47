"""The classifier training loop behind ``examples/train_classifier.py``.

One function, :func:`train`, runs a :class:`TrainConfig` on one process or under ``torchrun`` (DDP, NCCL on
GPUs, gloo on CPUs) and writes into ``out_dir``:

* ``config.json``; ``checkpoint.pt`` (every ``ckpt_every`` steps and at every epoch end, atomically replaced);
* ``metrics.jsonl`` and ``metrics.csv`` (training loss terms, learning rate, throughput, test accuracy);
* ``model.safetensors`` (the final weights; the EMA weights when ``ema_decay > 0``) and ``results.json``
  (clean accuracy, corruption accuracy, optionally the DiffAug Ensemble's).

Determinism and resuming: every random draw is a function of ``(seed, step)`` (see :mod:`.seeding` and
:mod:`.loader`), and the checkpoint holds the model, optimiser, grad scaler, EMA and metric history. Rerunning
the same command after the process was killed continues from the last checkpoint and reaches the same final
weights as an uninterrupted run (bit for bit on the same machine and thread count). ``batch_size`` is the
global batch: a DDP run with W processes uses ``batch_size / W`` per process and sees the same samples and
the same base-augmentation draws as a single-process run. Rerunning a finished run returns its results;
with other evaluation settings (e.g. ``eval_de``) its final weights are evaluated again, without retraining.
"""

from __future__ import annotations

import copy
import csv
import dataclasses
import json
import math
import os
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Sequence

import torch
import torch.distributed as dist
from torch import nn

from robaug.losses.trades import trades_attack

from .augment import DeviceAugment, SampleAugment, get_recipe, recipe_loss
from .datasets import DatasetInfo, TensorImages, load_dataset
from .loader import MixedBatchSampler, ShardedBatchSampler, make_loader, stack_views, synthetic_count, tensor_batches
from .seeding import derive_seed, make_generator

__all__ = ["TrainConfig", "train", "ModelEMA", "lr_at", "build_model"]


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


# --------------------------------------------------------------------------------------------------------
# pieces
# --------------------------------------------------------------------------------------------------------


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


def build_model(cfg: TrainConfig, info: DatasetInfo) -> nn.Module:
    """``create_model(cfg.model)`` wrapped so that it takes [0, 1] images (normalises inside)."""
    from robaug.models import Normalized, create_model

    kwargs = dict(cfg.model_kwargs)
    kwargs.setdefault("img_size", info.img_size)
    net = create_model(cfg.model, info.num_classes, in_channels=info.in_channels, **kwargs)
    return Normalized(net, info.mean, info.std)


def _make_optimizer(cfg: TrainConfig, model: nn.Module) -> torch.optim.Optimizer:
    if cfg.optimizer == "sgd":
        return torch.optim.SGD(model.parameters(), lr=cfg.lr, momentum=cfg.momentum, nesterov=cfg.nesterov,
                               weight_decay=cfg.weight_decay)
    decay = [p for p in model.parameters() if p.ndim > 1]
    no_decay = [p for p in model.parameters() if p.ndim <= 1]
    return torch.optim.AdamW([{"params": decay, "weight_decay": cfg.weight_decay},
                              {"params": no_decay, "weight_decay": 0.0}], lr=cfg.lr)


@dataclass
class _Dist:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    device: torch.device = torch.device("cpu")
    initialised_here: bool = False

    @property
    def main(self) -> bool:
        return self.rank == 0


def _setup_distributed(device: str) -> _Dist:
    world = int(os.environ.get("WORLD_SIZE", "1"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    use_cuda = torch.cuda.is_available() and device in ("auto", "cuda")
    if device not in ("auto", "cuda", "cpu"):
        dev = torch.device(device)
        use_cuda = dev.type == "cuda"
    elif use_cuda:
        dev = torch.device("cuda", local_rank if world > 1 else torch.cuda.current_device())
    else:
        dev = torch.device("cpu")
    if use_cuda:
        torch.cuda.set_device(dev)
    here = False
    if world > 1 and not dist.is_initialized():
        dist.init_process_group("nccl" if use_cuda else "gloo")
        here = True
    rank = dist.get_rank() if world > 1 else 0
    return _Dist(rank, world, local_rank, dev, here)


def _atomic_save(obj: Any, path: Path) -> None:
    tmp = path.with_name(path.name + ".tmp")
    torch.save(obj, tmp)
    os.replace(tmp, path)


def _atomic_write_text(text: str, path: Path) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


_CSV_FIELDS = ["step", "epoch", "lr", "loss", "ce", "ce_diffaug", "jsd", "trades_kl", "train_acc", "test_acc",
               "img_per_s", "elapsed_s"]


def _write_metrics(out: Path, history: list[dict[str, Any]]) -> None:
    _atomic_write_text("".join(json.dumps(h) + "\n" for h in history), out / "metrics.jsonl")
    tmp = out / "metrics.csv.tmp"
    with open(tmp, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=_CSV_FIELDS, extrasaction="ignore", restval="")
        w.writeheader()
        for h in history:
            w.writerow(h)
    os.replace(tmp, out / "metrics.csv")


def _append_metrics(out: Path, rec: dict[str, Any]) -> None:
    """Append one record to metrics.jsonl / metrics.csv (rewritten from the checkpoint's history on resume)."""
    with open(out / "metrics.jsonl", "a") as f:
        f.write(json.dumps(rec) + "\n")
    with open(out / "metrics.csv", "a", newline="") as f:
        csv.DictWriter(f, fieldnames=_CSV_FIELDS, extrasaction="ignore", restval="").writerow(rec)


def _check_resume(saved: dict[str, Any], cfg: TrainConfig, path: Path) -> None:
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


@torch.no_grad()
def _test_accuracy(model: nn.Module, test: Any, info: DatasetInfo, d: _Dist, batch_size: int,
                   amp_dtype: torch.dtype | None, channels_last: bool) -> float:
    """Clean test accuracy, the test set sharded over the processes."""
    was = model.training
    model.eval()
    correct = torch.zeros((), dtype=torch.long, device=d.device)
    total = torch.zeros((), dtype=torch.long, device=d.device)
    if isinstance(test, TensorImages):
        idx = torch.arange(d.rank, len(test), d.world_size)
        batches = ((test.images[idx[i:i + batch_size]], test.labels[idx[i:i + batch_size]])
                   for i in range(0, len(idx), batch_size))
    else:
        from torch.utils.data import DataLoader, Subset

        from .loader import SampleDataset

        ds = Subset(SampleDataset(test, SampleAugment(info, None, train=False)), range(d.rank, len(test), d.world_size))
        batches = DataLoader(ds, batch_size=batch_size)
    for x, y in batches:
        x = x.to(d.device, non_blocking=True).float().div_(255.0)
        if channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        with torch.autocast(d.device.type, dtype=amp_dtype, enabled=amp_dtype is not None):
            pred = model(x).argmax(1)
        correct += (pred == y.to(d.device)).sum()
        total += y.numel()
    if d.world_size > 1:
        both = torch.stack([correct, total])
        dist.all_reduce(both)
        correct, total = both[0], both[1]
    model.train(was)
    return float(correct) / max(1, int(total))


# --------------------------------------------------------------------------------------------------------
# the loop
# --------------------------------------------------------------------------------------------------------


def train(cfg: TrainConfig) -> dict[str, Any]:
    """Train (or resume) ``cfg`` and evaluate; returns the results (also written to ``results.json``)."""
    d = _setup_distributed(cfg.device)
    try:
        return _train(cfg, d)
    finally:
        if d.initialised_here and dist.is_initialized():
            dist.destroy_process_group()


def _log(msg: str, d: _Dist) -> None:
    if d.main:
        print(msg, file=sys.stderr, flush=True)


def _train(cfg: TrainConfig, d: _Dist) -> dict[str, Any]:
    out = Path(cfg.out_dir)
    spec = get_recipe(cfg.recipe)
    results_path = out / "results.json"
    ckpt_path = out / "checkpoint.pt"
    if d.main:
        out.mkdir(parents=True, exist_ok=True)
    reevaluate: dict[str, Any] | None = None
    if cfg.resume and results_path.is_file():
        done = json.loads(results_path.read_text())
        _check_resume(done["config"], cfg, results_path)
        if _eval_signature(done["config"], _evaluated_corruptions(done)) == _eval_signature(cfg.to_dict()) or not d.main:
            _log(f"{results_path} exists: the run is complete", d)
            return done if d.main else {}
        _log(f"{results_path} exists but the evaluation settings changed: evaluating the final weights again", d)
        reevaluate = done

    # ---- data -----------------------------------------------------------------------------------------
    train_ds, info = load_dataset(cfg.dataset, cfg.data_root, train=True, subset=cfg.train_subset,
                                  download=cfg.download, img_size=cfg.img_size)
    test_ds, _ = load_dataset(cfg.dataset, cfg.data_root, train=False, subset=cfg.test_subset,
                              download=cfg.download, img_size=cfg.img_size)
    num_real = len(train_ds)
    num_synthetic = 0
    if cfg.synthetic_data is not None and reevaluate is None:  # a re-evaluation needs neither the file nor the copy
        if not isinstance(train_ds, TensorImages):
            raise ValueError("synthetic_data: mixing generated images is implemented for in-memory datasets "
                             "(Fashion-MNIST, CIFAR), not for ImageFolder trees")
        from .datasets import load_synthetic

        syn = load_synthetic(cfg.synthetic_data, info)
        num_synthetic = len(syn)
        train_ds = TensorImages(torch.cat([train_ds.images, syn.images]), torch.cat([train_ds.labels, syn.labels]))
        del syn
        _log(f"synthetic data: {num_synthetic} images from {cfg.synthetic_data}, "
             f"{synthetic_count(cfg.batch_size, cfg.synthetic_fraction)} of every {cfg.batch_size} per batch", d)
    in_memory = isinstance(train_ds, TensorImages)
    mixer_in_workers = spec.mixer == "augmix" or (spec.mixer == "ipmix" and cfg.ipmix_on == "workers")
    base_on_device = in_memory and not mixer_in_workers
    use_loader = not in_memory or mixer_in_workers
    sample_tf = SampleAugment(info, spec, train=True, base=not base_on_device, mixer_in_worker=mixer_in_workers,
                              ipmix_kwargs=cfg.ipmix_kwargs, augmix_severity=cfg.augmix_severity) if use_loader else None

    if in_memory and not use_loader and d.device.type == "cuda" and reevaluate is None:
        # CIFAR-size uint8 sets fit on the GPU: batches are then gathered there, no host-device copies. Large sets
        # (millions of generated images) stay on the host and each batch is gathered there and copied.
        budget = torch.cuda.get_device_properties(d.device).total_memory // 4
        if train_ds.images.numel() <= budget:  # type: ignore[union-attr]
            train_ds = TensorImages(train_ds.images.to(d.device), train_ds.labels.to(d.device))  # type: ignore[union-attr]
        else:
            _log(f"training set of {train_ds.images.numel() / 2**30:.1f} GiB kept in host memory "  # type: ignore[union-attr]
                 "(more than a quarter of the GPU's)", d)
    if num_synthetic:
        # an epoch is one pass over the real data at its share of every batch
        steps_per_epoch = num_real // (cfg.batch_size - synthetic_count(cfg.batch_size, cfg.synthetic_fraction))
    else:
        steps_per_epoch = len(train_ds) // cfg.batch_size
    if steps_per_epoch < 1:
        raise ValueError(f"batch_size {cfg.batch_size} is larger than the training set ({num_real} real samples)")
    total_steps = cfg.steps if cfg.steps is not None else cfg.epochs * steps_per_epoch
    if cfg.batch_size % d.world_size:
        raise ValueError(f"batch_size {cfg.batch_size} (global) must be divisible by the {d.world_size} processes")
    local_batch = cfg.batch_size // d.world_size

    # ---- model, optimiser, EMA, AMP -------------------------------------------------------------------
    torch.manual_seed(derive_seed(cfg.seed, "init"))
    model = build_model(cfg, info).to(d.device)
    if cfg.channels_last:
        model = model.to(memory_format=torch.channels_last)
    optimizer = _make_optimizer(cfg, model)
    ema = ModelEMA(model, cfg.ema_decay) if cfg.ema_decay > 0 else None
    amp_dtype = {"none": None, "bf16": torch.bfloat16, "fp16": torch.float16}[cfg.amp]
    scaler = torch.amp.GradScaler(d.device.type, enabled=cfg.amp == "fp16")

    denoiser = None
    if spec.diffaug or cfg.eval_de:
        from robaug.hub import load_denoiser

        denoiser = load_denoiser(cfg.denoiser).to(d.device).eval()
    augment = DeviceAugment(
        info, spec, base_on_device=base_on_device, mixer_on_device=not mixer_in_workers,
        denoiser=denoiser if spec.diffaug else None,
        diffaug_kwargs=dict(t_range=cfg.diffaug_t_range, autocast_dtype=torch.bfloat16 if cfg.diffaug_bf16 else None),
        ipmix_kwargs=cfg.ipmix_kwargs,
    ).to(d.device)

    if reevaluate is not None:
        return _reevaluate(cfg, reevaluate, model, ema, info, test_ds, d, denoiser, amp_dtype, out)

    # ---- resume -------------------------------------------------------------------------------------------
    step, history, train_seconds = 0, [], 0.0
    if cfg.resume and ckpt_path.is_file():
        ck = torch.load(ckpt_path, map_location=d.device, weights_only=True)
        _check_resume(ck["config"], cfg, ckpt_path)
        model.load_state_dict(ck["model"])
        optimizer.load_state_dict(ck["optimizer"])
        scaler.load_state_dict(ck["scaler"])
        if ema is not None:
            ema.load_state_dict(ck["ema"])
        step, history, train_seconds = int(ck["step"]), list(ck["history"]), float(ck["train_seconds"])
        _log(f"resumed from {ckpt_path} at step {step}/{total_steps}", d)
    if d.main:
        _atomic_write_text(json.dumps(cfg.to_dict(), indent=2), out / "config.json")
        _write_metrics(out, history)

    def save_checkpoint() -> None:
        if not d.main:
            return
        state = {
            "config": cfg.to_dict(), "step": step, "history": history, "train_seconds": train_seconds,
            "model": model.state_dict(), "optimizer": optimizer.state_dict(), "scaler": scaler.state_dict(),
            "ema": ema.state_dict() if ema is not None else {},
        }
        _atomic_save(state, ckpt_path)

    net: nn.Module = model
    if d.world_size > 1:
        net = nn.parallel.DistributedDataParallel(model, device_ids=[d.device.index] if d.device.type == "cuda" else None)

    # ---- loop ---------------------------------------------------------------------------------------------
    from tqdm.auto import tqdm

    bar = tqdm(total=total_steps, initial=step, disable=not (cfg.progress and d.main), desc=spec.name,
               unit="step", dynamic_ncols=True)
    sums: dict[str, torch.Tensor] = {}
    n_sum, seen_since = 0, 0
    t_log = time.perf_counter()
    model.train()
    while step < total_steps:
        epoch, first = divmod(step, steps_per_epoch)
        stop = min(steps_per_epoch, first + (total_steps - step))
        sampler: ShardedBatchSampler
        if num_synthetic:
            sampler = MixedBatchSampler(num_real, num_synthetic, cfg.batch_size, cfg.synthetic_fraction, seed=cfg.seed,
                                        epoch=epoch, rank=d.rank, world_size=d.world_size, start=first, stop=stop,
                                        with_seeds=use_loader)
        else:
            sampler = ShardedBatchSampler(len(train_ds), cfg.batch_size, seed=cfg.seed, epoch=epoch, rank=d.rank,
                                          world_size=d.world_size, start=first, stop=stop, with_seeds=use_loader)
        if use_loader:
            batches = make_loader(train_ds, sampler, sample_tf, num_workers=cfg.num_workers,
                                  pin_memory=d.device.type == "cuda")
        else:
            batches = tensor_batches(train_ds.images, train_ds.labels, sampler)  # type: ignore[union-attr]
        t_epoch = time.perf_counter()
        for images, labels in batches:
            t_step = time.perf_counter()
            for g in optimizer.param_groups:
                g["lr"] = lr_at(step, total_steps, cfg.lr, cfg.warmup_steps)
            torch.manual_seed(derive_seed(cfg.seed, "global", step, d.rank))
            if isinstance(images, (list, tuple)):
                images = [v.to(d.device, non_blocking=True) for v in images]
            else:
                images = images.to(d.device, non_blocking=True)
            labels = labels.to(d.device, non_blocking=True)
            views = augment(images, derive_seed(cfg.seed, step), rank_seed=derive_seed(cfg.seed, step, d.rank),
                            total=cfg.batch_size, offset=d.rank * local_batch)
            x = stack_views(views)
            if cfg.channels_last:
                x = x.contiguous(memory_format=torch.channels_last)
            with torch.autocast(d.device.type, dtype=amp_dtype, enabled=amp_dtype is not None):
                if spec.adversarial:
                    # TRADES: attack the bare module (BN statistics frozen), then clean and adversarial forwards
                    # through the (DDP) model, each batch normalised with its own statistics as in the reference
                    g_adv = make_generator(d.device, derive_seed(cfg.seed, step, d.rank), "device", 3)
                    x_adv = trades_attack(model, x, eps=cfg.trades_eps, step_size=cfg.trades_step_size,
                                          steps=cfg.trades_steps, norm=cfg.trades_norm, generator=g_adv,
                                          bn_mode=cfg.trades_bn)
                    logits = torch.cat([net(x), net(x_adv)])
                else:
                    logits = net(x)
            loss, terms = recipe_loss(logits, labels, spec, jsd_weight=cfg.jsd_weight,
                                      label_smoothing=cfg.label_smoothing, trades_beta=cfg.trades_beta)
            optimizer.zero_grad(set_to_none=True)
            scaler.scale(loss).backward()
            if cfg.grad_clip is not None:
                scaler.unscale_(optimizer)
                nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
            scaler.step(optimizer)
            scaler.update()
            if ema is not None:
                ema.update(model, step)
            step += 1
            train_seconds += time.perf_counter() - t_step

            terms["loss"] = loss.detach()
            terms["train_acc"] = (logits[: labels.shape[0]].argmax(1) == labels).float().mean()
            for k, v in terms.items():
                sums[k] = sums.get(k, 0) + v.float()
            n_sum += 1
            seen_since += cfg.batch_size
            bar.update(1)
            end_of_epoch = step % steps_per_epoch == 0 or step == total_steps
            if step % cfg.log_every == 0 or end_of_epoch:
                keys = sorted(sums)
                vals = torch.stack([sums[k] / n_sum for k in keys])
                if d.world_size > 1:
                    dist.all_reduce(vals)
                    vals /= d.world_size
                now = time.perf_counter()
                rec = {"step": step, "epoch": step / steps_per_epoch, "lr": optimizer.param_groups[0]["lr"],
                       **{k: float(v) for k, v in zip(keys, vals.tolist())},
                       "img_per_s": seen_since / max(1e-9, now - t_log), "elapsed_s": train_seconds}
                if end_of_epoch and cfg.eval_every_epoch:
                    eval_model = ema.module if ema is not None else model
                    rec["test_acc"] = _test_accuracy(eval_model, test_ds, info, d, cfg.eval_batch_size, amp_dtype,
                                                     cfg.channels_last)
                history.append(rec)
                if d.main:
                    _append_metrics(out, rec)
                bar.set_postfix({k: f"{rec[k]:.3f}" for k in ("loss", "train_acc", "test_acc") if k in rec})
                sums, n_sum, seen_since, t_log = {}, 0, 0, time.perf_counter()
            if (cfg.ckpt_every and step % cfg.ckpt_every == 0) or end_of_epoch:
                save_checkpoint()
        del batches
        _ = t_epoch
    bar.close()

    if not d.main:
        return {}
    # ---- final weights and evaluation (main process) --------------------------------------------------------
    final = ema.module if ema is not None else model
    from safetensors.torch import save_file

    save_file({k: v.detach().contiguous().cpu() for k, v in final.state_dict().items()}, str(out / "model.safetensors"))
    torch.manual_seed(derive_seed(cfg.seed, "eval"))
    evaluation = _evaluate(cfg, final, info, test_ds, d.device, denoiser, amp_dtype is not None)
    if ema is not None:
        evaluation["raw_model_clean_accuracy"] = _test_accuracy(
            model, test_ds, info, _Dist(device=d.device), cfg.eval_batch_size, amp_dtype, cfg.channels_last)
    results = {
        "config": cfg.to_dict(),
        "recipe_loss": spec.loss,
        "steps": total_steps,
        "epochs": total_steps / steps_per_epoch,
        "train_images": num_real,
        "synthetic_images": num_synthetic,
        "train_seconds": train_seconds,
        "train_images_per_s": total_steps * cfg.batch_size / max(1e-9, train_seconds),
        "world_size": d.world_size,
        **evaluation,
    }
    _atomic_write_text(json.dumps(results, indent=2), results_path)
    _log(_summary_line(results), d)
    return results


_EVAL_FIELDS = ("eval_corruptions", "corruption_root", "corruption_images", "corruption_seed", "corruptions")
_DE_FIELDS = ("de_timesteps", "de_images", "de_clean_images", "denoiser", "diffaug_bf16")
_ADV_FIELDS = ("eval_pgd", "eval_autoattack", "eval_adv_norm", "eval_adv_images", "eval_autoattack_version",
               "eval_autoattack_attacks", "eval_autoattack_iters")


def _evaluated_corruptions(results: dict[str, Any]) -> list[str] | None:
    """The corruptions a finished run was actually evaluated on (``None`` when it has no corruption results)."""
    per = (results.get("corruption") or {}).get("per_corruption_accuracy")
    return list(per) if per else None


def _eval_signature(c: dict[str, Any], evaluated: Sequence[str] | None = None) -> str:
    """The settings the final evaluation depends on (the DE ones only when the DE is evaluated).

    With the built-in -C set and no explicit list, the corruption list is the default one: ``evaluated`` (read
    from a finished run's results) or, for a new evaluation, :data:`~robaug.eval.corruptions.DEFAULT_CORRUPTIONS`,
    so a run evaluated before the default list grew is evaluated again.
    """
    sig = {k: c.get(k) for k in _EVAL_FIELDS}
    if sig["eval_corruptions"] and sig["corruptions"] is None and not sig["corruption_root"]:
        from robaug.eval.corruptions import DEFAULT_CORRUPTIONS

        sig["corruptions"] = sorted(evaluated if evaluated is not None else DEFAULT_CORRUPTIONS)
    sig["eval_de"] = bool(c.get("eval_de"))
    if sig["eval_de"]:
        sig.update({k: c.get(k) for k in _DE_FIELDS})
    if c.get("eval_pgd") is not None or c.get("eval_autoattack") is not None:  # adversarial evaluation requested
        sig.update({k: c.get(k) for k in _ADV_FIELDS})
    return json.dumps(sig, sort_keys=True)


def _reevaluate(cfg: TrainConfig, done: dict[str, Any], model: nn.Module, ema: ModelEMA | None, info: DatasetInfo,
                test_ds: Any, d: _Dist, denoiser: nn.Module | None, amp_dtype: torch.dtype | None,
                out: Path) -> dict[str, Any]:
    """Evaluate the exported final weights of a finished run with the current evaluation settings."""
    from safetensors.torch import load_file

    final = ema.module if ema is not None else model
    final.load_state_dict(load_file(str(out / "model.safetensors"), device=str(d.device)))
    torch.manual_seed(derive_seed(cfg.seed, "eval"))
    evaluation = _evaluate(cfg, final, info, test_ds, d.device, denoiser, amp_dtype is not None)
    keep = {k: v for k, v in done.items() if k in _TRAINING_KEYS or k == "raw_model_clean_accuracy"}
    results = {**keep, "config": cfg.to_dict(), **evaluation}
    _atomic_write_text(json.dumps(results, indent=2), out / "results.json")
    _log(_summary_line(results), d)
    return results


_TRAINING_KEYS = ("recipe_loss", "steps", "epochs", "train_images", "synthetic_images", "train_seconds",
                  "train_images_per_s", "world_size")


def _evaluate(cfg: TrainConfig, model: nn.Module, info: DatasetInfo, test_ds: Any, device: torch.device,
              denoiser: nn.Module | None, amp: bool) -> dict[str, Any]:
    from .evaluate import adversarial_evaluation, final_evaluation

    out = final_evaluation(
        model, info, test_ds, device=device, batch_size=cfg.eval_batch_size, num_workers=cfg.num_workers,
        corruptions=cfg.eval_corruptions, corruption_root=cfg.corruption_root,
        corruption_images=cfg.corruption_images, corruption_seed=cfg.corruption_seed,
        corruption_names=cfg.corruptions, cache_dir=cfg.cache_dir,
        denoiser=denoiser if cfg.eval_de else None, de_timesteps=cfg.de_timesteps, de_images=cfg.de_images,
        de_clean_images=cfg.de_clean_images,
        de_kwargs={"autocast_dtype": torch.bfloat16} if cfg.diffaug_bf16 else None, amp=amp, progress=cfg.progress,
    )
    if cfg.eval_pgd is not None or cfg.eval_autoattack is not None:
        t0 = time.perf_counter()
        out["adversarial"] = adversarial_evaluation(
            model, info, test_ds, device=device, images=cfg.eval_adv_images, norm=cfg.eval_adv_norm,
            pgd=cfg.eval_pgd, autoattack_eps=cfg.eval_autoattack, autoattack_version=cfg.eval_autoattack_version,
            autoattack_attacks=cfg.eval_autoattack_attacks, autoattack_iters=cfg.eval_autoattack_iters,
            batch_size=cfg.eval_batch_size, num_workers=cfg.num_workers, seed=derive_seed(cfg.seed, "eval", 1),
        )
        out["eval_seconds"] = out.get("eval_seconds", 0.0) + time.perf_counter() - t0
    return out


def _summary_line(r: dict[str, Any]) -> str:
    parts = [f"clean acc {100 * r['clean_accuracy']:.2f}%"]
    if "corruption_accuracy" in r:
        parts.append(f"corruption acc {100 * r['corruption_accuracy']:.2f}%")
    adv = r.get("adversarial") or {}
    if "pgd" in adv:
        parts.append(f"{adv['pgd']['attack']} acc {100 * adv['pgd']['robust_accuracy']:.2f}%")
    if "autoattack" in adv:
        parts.append(f"AutoAttack acc {100 * adv['autoattack']['robust_accuracy']:.2f}%")
    de = r.get("diffaug_ensemble")
    if de and "corruption_accuracy" in de:
        parts.append(f"DE: clean {100 * de['clean_accuracy']:.2f}% / corruption {100 * de['corruption_accuracy']:.2f}%"
                     f" (plain on the same {de['images']} images: {100 * de['plain_corruption_accuracy']:.2f}%)")
    return f"{r['config']['recipe']}: " + ", ".join(parts) + f"; trained {r['train_seconds']:.0f}s"


def parse_int_list(text: str | Sequence[int] | None) -> list[int] | None:
    """``"0,50,100"`` or ``"0:500:50"`` -> list of ints."""
    if text is None or not isinstance(text, str):
        return None if text is None else [int(t) for t in text]
    if ":" in text:
        a, b, *c = (int(v) for v in text.split(":"))
        return list(range(a, b, c[0] if c else 1))
    return [int(t) for t in text.split(",") if t.strip()]
