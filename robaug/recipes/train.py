"""The classifier training loop behind ``robaug train``.

One function, :func:`train`, runs a :class:`TrainConfig` on one process or under ``torchrun`` (DDP, NCCL on
GPUs, gloo on CPUs) and writes into ``out_dir`` (see :mod:`.run_files`):

* ``config.json``; ``checkpoint.pt`` (every ``ckpt_every`` steps and at every epoch end, atomically replaced);
* ``metrics.jsonl`` and ``metrics.csv`` (training loss terms, learning rate, throughput, test accuracy);
* ``model.safetensors`` (the final weights; the EMA weights when ``ema_decay > 0``) and ``results.json``
  (clean accuracy, corruption accuracy, optionally the DiffAug Ensemble's).

Determinism and resuming: every random draw is a function of ``(seed, step)`` (see :mod:`robaug.data.seeding` and
:mod:`robaug.data.samplers`), and the checkpoint holds the model, optimiser, grad scaler, EMA and metric history.
Rerunning the same command after the process was killed continues from the last checkpoint and reaches the same
final weights as an uninterrupted run (bit for bit on the same machine and thread count). ``batch_size`` is the
global batch: a DDP run with W processes uses ``batch_size / W`` per process and sees the same samples and
the same base-augmentation draws as a single-process run. Rerunning a finished run returns its results;
with other evaluation settings (e.g. ``eval_de``) its final weights are evaluated again, without retraining.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
from torch import nn

from robaug._core.dist import DistInfo, setup_distributed, teardown_distributed
from robaug.data.datasets import DatasetInfo
from robaug.data.seeding import derive_seed, make_generator
from robaug.losses.trades import trades_attack

from .augment import DeviceAugment
from .config import TrainConfig, check_resume, parse_int_list
from .loader import stack_views
from .optim import ModelEMA, lr_at, make_optimizer
from .results import (
    TRAINING_KEYS,
    clean_test_accuracy,
    eval_signature,
    evaluate_final,
    evaluated_corruptions,
    summary_line,
)
from .run_files import (
    append_metrics,
    load_checkpoint,
    save_checkpoint,
    save_weights,
    write_json,
    write_metrics,
)
from .spec import RecipeSpec, get_recipe, recipe_loss
from .training_data import TrainingData, load_training_data, log

__all__ = ["TrainConfig", "train", "ModelEMA", "lr_at", "build_model"]

# names this module had before the split (tests and scripts import them from here)
_check_resume, _eval_signature, parse_int_list = check_resume, eval_signature, parse_int_list


def build_model(cfg: TrainConfig, info: DatasetInfo) -> nn.Module:
    """``create_model(cfg.model)`` wrapped so that it takes [0, 1] images (normalises inside)."""
    from robaug.models import Normalized, create_model

    kwargs = dict(cfg.model_kwargs)
    kwargs.setdefault("img_size", info.img_size)
    net = create_model(cfg.model, info.num_classes, in_channels=info.in_channels, **kwargs)
    return Normalized(net, info.mean, info.std)


def train(cfg: TrainConfig) -> dict[str, Any]:
    """Train (or resume) ``cfg`` and evaluate; returns the results (also written to ``results.json``)."""
    d = setup_distributed(cfg.device)
    try:
        return _train(cfg, d)
    finally:
        teardown_distributed(d)




# --------------------------------------------------------------------------------------------------------
# set-up
# --------------------------------------------------------------------------------------------------------


@dataclass
class _State:
    """What the loop updates and the checkpoint holds."""

    model: nn.Module
    optimizer: torch.optim.Optimizer
    scaler: torch.amp.GradScaler
    ema: ModelEMA | None
    step: int = 0
    history: list[dict[str, Any]] = field(default_factory=list)
    train_seconds: float = 0.0

    @property
    def final_model(self) -> nn.Module:
        return self.ema.module if self.ema is not None else self.model

    def state_dict(self, cfg: TrainConfig) -> dict[str, Any]:
        return {
            "config": cfg.to_dict(), "step": self.step, "history": self.history, "train_seconds": self.train_seconds,
            "model": self.model.state_dict(), "optimizer": self.optimizer.state_dict(),
            "scaler": self.scaler.state_dict(), "ema": self.ema.state_dict() if self.ema is not None else {},
        }

    def load(self, ck: dict[str, Any]) -> None:
        self.model.load_state_dict(ck["model"])
        self.optimizer.load_state_dict(ck["optimizer"])
        self.scaler.load_state_dict(ck["scaler"])
        if self.ema is not None:
            self.ema.load_state_dict(ck["ema"])
        self.step, self.history, self.train_seconds = int(ck["step"]), list(ck["history"]), float(ck["train_seconds"])


def _build_state(cfg: TrainConfig, info: DatasetInfo, device: torch.device) -> _State:
    torch.manual_seed(derive_seed(cfg.seed, "init"))
    model = build_model(cfg, info).to(device)
    if cfg.channels_last:
        model = model.to(memory_format=torch.channels_last)
    optimizer = make_optimizer(cfg, model)
    ema = ModelEMA(model, cfg.ema_decay) if cfg.ema_decay > 0 else None
    scaler = torch.amp.GradScaler(device.type, enabled=cfg.amp == "fp16")
    return _State(model, optimizer, scaler, ema)


def _amp_dtype(cfg: TrainConfig) -> torch.dtype | None:
    return {"none": None, "bf16": torch.bfloat16, "fp16": torch.float16}[cfg.amp]


def _make_out_dir(out: Path) -> None:
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise ValueError(f"out_dir {str(out)!r} cannot be created ({err.strerror or err}); pass a writable folder "
                         "with --out-dir") from err


def _finished_run(cfg: TrainConfig, d: DistInfo, results_path: Path) -> tuple[dict[str, Any] | None, bool]:
    """``(results, complete)`` of a run already finished in ``out_dir`` (``(None, False)`` when there is none)."""
    if not (cfg.resume and results_path.is_file()):
        return None, False
    done = json.loads(results_path.read_text())
    check_resume(done["config"], cfg, results_path)
    if eval_signature(done["config"], evaluated_corruptions(done)) == eval_signature(cfg.to_dict()) or not d.main:
        log(f"{results_path} exists: the run is complete", d)
        return done, True
    log(f"{results_path} exists but the evaluation settings changed: evaluating the final weights again", d)
    return done, False


# --------------------------------------------------------------------------------------------------------
# the run
# --------------------------------------------------------------------------------------------------------


def _train(cfg: TrainConfig, d: DistInfo) -> dict[str, Any]:
    out = Path(cfg.out_dir)
    spec = get_recipe(cfg.recipe)
    if d.main:
        _make_out_dir(out)
    done, complete = _finished_run(cfg, d, out / "results.json")
    if complete:
        return done if d.main else {}  # type: ignore[return-value]

    data = load_training_data(cfg, spec, d, training=done is None)
    steps_per_epoch = data.steps_per_epoch(cfg.batch_size)
    total_steps = cfg.steps if cfg.steps is not None else cfg.epochs * steps_per_epoch
    if cfg.batch_size % d.world_size:
        raise ValueError(f"batch_size {cfg.batch_size} (global) must be divisible by the {d.world_size} processes")

    state = _build_state(cfg, data.info, d.device)
    denoiser = None
    if spec.diffaug or cfg.eval_de:
        from robaug.hub import load_denoiser

        denoiser = load_denoiser(cfg.denoiser).to(d.device).eval()
    augment = DeviceAugment(
        data.info, data.plan, denoiser=denoiser if spec.diffaug else None,
        diffaug_kwargs=dict(t_range=cfg.diffaug_t_range, autocast_dtype=torch.bfloat16 if cfg.diffaug_bf16 else None),
        ipmix_kwargs=cfg.ipmix_kwargs,
    ).to(d.device)

    if done is not None:
        return _reevaluate(cfg, done, state, data, d, denoiser, out)

    ckpt_path = out / "checkpoint.pt"
    if cfg.resume and ckpt_path.is_file():
        ck = load_checkpoint(ckpt_path, d.device)
        check_resume(ck["config"], cfg, ckpt_path)
        state.load(ck)
        log(f"resumed from {ckpt_path} at step {state.step}/{total_steps}", d)
    if d.main:
        write_json(out / "config.json", cfg.to_dict())
        write_metrics(out, state.history)

    _loop(cfg, d, spec, data, state, augment, steps_per_epoch, total_steps, out)
    if not d.main:
        return {}
    return _finish(cfg, d, spec, data, state, denoiser, steps_per_epoch, total_steps, out)


def _loop(cfg: TrainConfig, d: DistInfo, spec: RecipeSpec, data: TrainingData, state: _State, augment: DeviceAugment,
          steps_per_epoch: int, total_steps: int, out: Path) -> None:
    """Steps ``state.step .. total_steps``, one epoch's sampler at a time; logs, evaluates and checkpoints."""
    from .._core.progress import progress_bar as tqdm  # whole lines in log files

    net: nn.Module = state.model
    if d.world_size > 1:
        net = nn.parallel.DistributedDataParallel(
            state.model, device_ids=[d.device.index] if d.device.type == "cuda" else None)
    bar = tqdm(total=total_steps, initial=state.step, disable=not (cfg.progress and d.main), desc=spec.name,
               unit="step", dynamic_ncols=True)
    log = _MetricLog(cfg, d, data, out, steps_per_epoch)
    state.model.train()
    while state.step < total_steps:
        epoch, first = divmod(state.step, steps_per_epoch)
        sampler = data.sampler(cfg.batch_size, seed=cfg.seed, epoch=epoch, rank=d.rank, world_size=d.world_size,
                               start=first, stop=min(steps_per_epoch, first + (total_steps - state.step)),
                               with_seeds=data.plan.use_loader)
        batches = data.batches(sampler, pin_memory=d.device.type == "cuda", num_workers=cfg.num_workers)
        for images, labels in batches:
            t_step = time.perf_counter()
            terms = _train_step(cfg, d, spec, state, net, augment, images, labels, total_steps)
            state.step += 1
            state.train_seconds += time.perf_counter() - t_step
            bar.update(1)
            end_of_epoch = state.step % steps_per_epoch == 0 or state.step == total_steps
            rec = log.add(terms, state, end_of_epoch)
            if rec is not None:
                bar.set_postfix({k: f"{rec[k]:.3f}" for k in ("loss", "train_acc", "test_acc") if k in rec})
            if (cfg.ckpt_every and state.step % cfg.ckpt_every == 0) or end_of_epoch:
                if d.main:
                    save_checkpoint(out / "checkpoint.pt", state.state_dict(cfg))
        del batches
    bar.close()


def _train_step(cfg: TrainConfig, d: DistInfo, spec: RecipeSpec, state: _State, net: nn.Module,
                augment: DeviceAugment, images: Any, labels: torch.Tensor, total_steps: int) -> dict[str, torch.Tensor]:
    """One optimiser step on one batch; returns the detached loss terms (``loss``, ``train_acc`` included)."""
    step, model, optimizer, scaler = state.step, state.model, state.optimizer, state.scaler
    for g in optimizer.param_groups:
        g["lr"] = lr_at(step, total_steps, cfg.lr, cfg.warmup_steps)
    torch.manual_seed(derive_seed(cfg.seed, "global", step, d.rank))
    if isinstance(images, (list, tuple)):
        images = [v.to(d.device, non_blocking=True) for v in images]
    else:
        images = images.to(d.device, non_blocking=True)
    labels = labels.to(d.device, non_blocking=True)
    views = augment(images, derive_seed(cfg.seed, step), rank_seed=derive_seed(cfg.seed, step, d.rank),
                    total=cfg.batch_size, offset=d.rank * (cfg.batch_size // d.world_size))
    x = stack_views(views)
    if cfg.channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    amp_dtype = _amp_dtype(cfg)
    with torch.autocast(d.device.type, dtype=amp_dtype, enabled=amp_dtype is not None):
        if spec.adversarial:
            # TRADES: attack the bare module (BN statistics frozen), then clean and adversarial forwards
            # through the (DDP) model, each batch normalised with its own statistics as in the reference
            g_adv = make_generator(d.device, derive_seed(cfg.seed, step, d.rank), "device", 3)
            x_adv = trades_attack(model, x, eps=cfg.trades_eps, step_size=cfg.trades_step_size,
                                  steps=cfg.trades_steps, norm=cfg.trades_norm, generator=g_adv, bn_mode=cfg.trades_bn)
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
    if state.ema is not None:
        state.ema.update(model, step)
    terms["loss"] = loss.detach()
    terms["train_acc"] = (logits[: labels.shape[0]].argmax(1) == labels).float().mean()
    return terms


class _MetricLog:
    """Averages the loss terms between log points (over the processes), adds the test accuracy at epoch ends and
    appends the record to the history and the metrics files."""

    def __init__(self, cfg: TrainConfig, d: DistInfo, data: TrainingData, out: Path, steps_per_epoch: int) -> None:
        self.cfg, self.d, self.data, self.out, self.steps_per_epoch = cfg, d, data, out, steps_per_epoch
        self._reset()

    def _reset(self) -> None:
        self.sums: dict[str, torch.Tensor] = {}
        self.n, self.seen, self.t0 = 0, 0, time.perf_counter()

    def add(self, terms: dict[str, torch.Tensor], state: _State, end_of_epoch: bool) -> dict[str, Any] | None:
        cfg, d = self.cfg, self.d
        for k, v in terms.items():
            self.sums[k] = self.sums.get(k, 0) + v.float()
        self.n += 1
        self.seen += cfg.batch_size
        if not (state.step % cfg.log_every == 0 or end_of_epoch):
            return None
        keys = sorted(self.sums)
        vals = torch.stack([self.sums[k] / self.n for k in keys])
        if d.world_size > 1:
            dist.all_reduce(vals)
            vals /= d.world_size
        now = time.perf_counter()
        rec = {"step": state.step, "epoch": state.step / self.steps_per_epoch,
               "lr": state.optimizer.param_groups[0]["lr"], **{k: float(v) for k, v in zip(keys, vals.tolist())},
               "img_per_s": self.seen / max(1e-9, now - self.t0), "elapsed_s": state.train_seconds}
        if end_of_epoch and cfg.eval_every_epoch:
            rec["test_acc"] = clean_test_accuracy(state.final_model, self.data.test, self.data.info, d,
                                                  cfg.eval_batch_size, _amp_dtype(cfg), cfg.channels_last)
        state.history.append(rec)
        if d.main:
            append_metrics(self.out, rec)
        self._reset()
        return rec


# --------------------------------------------------------------------------------------------------------
# the end: final weights and evaluation (main process)
# --------------------------------------------------------------------------------------------------------


def _finish(cfg: TrainConfig, d: DistInfo, spec: RecipeSpec, data: TrainingData, state: _State,
            denoiser: nn.Module | None, steps_per_epoch: int, total_steps: int, out: Path) -> dict[str, Any]:
    final = state.final_model
    save_weights(out / "model.safetensors", final)
    amp_dtype = _amp_dtype(cfg)
    torch.manual_seed(derive_seed(cfg.seed, "eval"))
    evaluation = evaluate_final(cfg, final, data.info, data.test, d.device, denoiser, amp_dtype is not None)
    if state.ema is not None:
        evaluation["raw_model_clean_accuracy"] = clean_test_accuracy(
            state.model, data.test, data.info, DistInfo(device=d.device), cfg.eval_batch_size, amp_dtype,
            cfg.channels_last)
    results = {
        "config": cfg.to_dict(),
        "recipe_loss": spec.loss,
        "steps": total_steps,
        "epochs": total_steps / steps_per_epoch,
        "train_images": data.num_real,
        "synthetic_images": data.num_synthetic,
        "train_seconds": state.train_seconds,
        "train_images_per_s": total_steps * cfg.batch_size / max(1e-9, state.train_seconds),
        "world_size": d.world_size,
        **evaluation,
    }
    write_json(out / "results.json", results)
    log(summary_line(results), d)
    return results


def _reevaluate(cfg: TrainConfig, done: dict[str, Any], state: _State, data: TrainingData, d: DistInfo,
                denoiser: nn.Module | None, out: Path) -> dict[str, Any]:
    """Evaluate the exported final weights of a finished run with the current evaluation settings."""
    from safetensors.torch import load_file

    final = state.final_model
    final.load_state_dict(load_file(str(out / "model.safetensors"), device=str(d.device)))
    torch.manual_seed(derive_seed(cfg.seed, "eval"))
    evaluation = evaluate_final(cfg, final, data.info, data.test, d.device, denoiser, _amp_dtype(cfg) is not None)
    keep = {k: v for k, v in done.items() if k in TRAINING_KEYS or k == "raw_model_clean_accuracy"}
    results = {**keep, "config": cfg.to_dict(), **evaluation}
    write_json(out / "results.json", results)
    log(summary_line(results), d)
    return results
